//! What the lab makes of a run: the rows of `runs.csv` read back from the peers'
//! `metrics.jsonl`, each cell's summary (times to target, spread, bytes and what all-reduce
//! would have sent: [`super::communication`]), the series the plots draw, and the Markdown
//! report (definitions in the [`super`] module docs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run::RunSummary;

use super::communication::{
    allreduce_bytes_per_step, communication, Communication, Counters, RunCounters,
};
use super::{io_err, Cell, LabError, LabFile};

/// One line of a peer's `metrics.jsonl` (the fields the lab reads; both modes write them).
#[derive(Clone, Debug, Deserialize)]
struct MetricsLine {
    time: f64,
    elapsed_seconds: f64,
    peer: String,
    step: u64,
    samples: u64,
    test_accuracy: Option<f32>,
    #[serde(default)]
    metrics: Option<crate::workload::Metrics>,
    bytes_sent: u64,
    bytes_received: u64,
}

impl MetricsLine {
    /// The value of `metric` at this line, if it was evaluated (`accuracy` also from the
    /// `test_accuracy` field older lines carry alone).
    fn value(&self, metric: &str) -> Option<f64> {
        self.metrics
            .as_ref()
            .and_then(|m| m.get(metric))
            .or_else(|| match metric {
                "accuracy" => self.test_accuracy.map(f64::from),
                _ => None,
            })
    }
}

/// One row of `runs.csv`: one peer's evaluation at one time of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// Cell id.
    pub cell: String,
    /// Mode.
    pub mode: String,
    /// Loss rate.
    pub loss: f64,
    /// Straggler factor.
    pub slowdown: f64,
    /// Dirichlet α (0: IID).
    pub non_iid_alpha: f64,
    /// Peers.
    pub peers: usize,
    /// Seed.
    pub seed: u64,
    /// Peer name.
    pub peer: String,
    /// Seconds since the run's first peer started.
    pub t_seconds: f64,
    /// Optimizer steps of this peer.
    pub step: u64,
    /// Samples of this peer.
    pub samples: u64,
    /// The target metric's name.
    pub metric: String,
    /// The target metric of this peer's base.
    pub value: f64,
    /// Mean of every peer's latest value at this time (empty until all evaluated).
    pub mean_value: Option<f64>,
    /// max − min of the peers' latest values at this time.
    pub spread: Option<f64>,
    /// UDP bytes sent by this peer so far.
    pub bytes_sent: u64,
    /// UDP bytes received by this peer so far.
    pub bytes_received: u64,
    /// What a per-step fp32 ring all-reduce would have sent per peer by this peer's `step`
    /// (bytes; 0 for the centralized baseline; empty when the parameter count is unknown).
    pub allreduce_bytes: Option<f64>,
    /// The run's mean UDP bytes sent per peer by the target ([`Communication`]); empty when
    /// not reached.
    pub bytes_to_target_per_peer: Option<f64>,
    /// The run's all-reduce bytes per peer over all its steps ([`Communication`]).
    pub allreduce_bytes_per_peer: Option<f64>,
    /// The run's all-reduce bytes to target over its bytes to target ([`Communication`]).
    pub allreduce_ratio_to_target: Option<f64>,
    /// The run's all-reduce bytes over its bytes sent, whole run ([`Communication`]).
    pub allreduce_ratio_total: Option<f64>,
}

/// One cell of `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CellSummary {
    /// Cell id (also the run's folder under `runs/`).
    pub cell: String,
    /// Mode.
    pub mode: String,
    /// Loss rate.
    pub loss: f64,
    /// Straggler factor.
    pub slowdown: f64,
    /// Dirichlet α (0: IID).
    pub non_iid_alpha: f64,
    /// Peers.
    pub peers: usize,
    /// Seed.
    pub seed: u64,
    /// The cell's `[sweep]` values, `key=value, ...` (empty without a sweep).
    pub setting: String,
    /// Where it ran: `in-process` or `netns`.
    pub runner: String,
    /// First time the mean of the target metric reached the target (s); null: never.
    pub time_to_target_seconds: Option<f64>,
    /// First time every peer's value reached the target (s); null: never.
    pub time_to_target_all_seconds: Option<f64>,
    /// Straggler cells: first time the mean over the other peers reached the target (s).
    pub time_to_target_others_seconds: Option<f64>,
    /// Mean over the peers of the target metric of the final models.
    pub final_mean: f64,
    /// The worst peer's final value of the target metric (lowest accuracy, highest loss).
    pub final_worst: f64,
    /// Consensus distance of the final models.
    pub final_consensus_distance: f64,
    /// Mean UDP bytes sent per peer (quinn statistics).
    pub bytes_sent_per_peer: f64,
    /// Wall time of the run (s).
    pub wall_seconds: f64,
    /// Peers that ended their drain consistent (of `peers`; a baseline's peers all count).
    pub peers_drained: usize,
    /// The longest drain of the run's peers (s): from a peer's last delta to the end of its
    /// drain. Null for the baselines (no drain) and when no peer's drain ended.
    pub drain_seconds: Option<f64>,
    /// The cluster's drain (s): from the moment the last peer began its drain (its last delta
    /// published: every delta of the run exists from then on) until the last peer ended its
    /// drain. Unlike `drain_seconds` it does not count a peer's wait for slower peers to finish
    /// training. Null for the baselines and when some peer's drain did not end.
    pub cluster_drain_seconds: Option<f64>,
    /// Training time of the run (s): from the first peer's start until the last peer began its
    /// drain. Null like `cluster_drain_seconds`.
    pub training_seconds: Option<f64>,
    /// Bytes to target and against a per-step ring all-reduce (its fields sit beside these in
    /// `summary.json`).
    #[serde(flatten)]
    pub communication: Communication,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct LabSummary {
    /// The experiment's name.
    pub name: String,
    /// The target: metric, value and direction.
    pub target: super::file::LabTarget,
    /// How `time_to_target_seconds` is defined.
    pub time_to_target_definition: String,
    /// One entry per run that finished.
    pub cells: Vec<CellSummary>,
    /// The runs that failed, with why.
    pub failed: Vec<FailedRun>,
    /// Files written next to this one.
    pub plots: Vec<String>,
}

/// A run of the grid that failed.
#[derive(Clone, Debug, Serialize)]
pub struct FailedRun {
    /// Cell id.
    pub cell: String,
    /// The error and its causes.
    pub error: String,
}

/// A run's series, for plots: `(t, value)` points per run.
#[derive(Clone, Debug)]
pub struct Series {
    /// The run.
    pub cell: Cell,
    /// `(t, mean of the target metric)`.
    pub mean_value: Vec<(f64, f64)>,
    /// `(t, spread of the target metric)`.
    pub spread: Vec<(f64, f64)>,
    /// `(t, mean bytes sent per peer)`.
    pub bytes_per_peer: Vec<(f64, f64)>,
}

/// Reads a run's metrics files and derives its rows, summary and series.
pub(super) fn analyse(
    lab: &LabFile,
    cell: &Cell,
    dir: &Path,
    summary: &RunSummary,
) -> Result<(Vec<RunRow>, CellSummary, Series), LabError> {
    let mut lines: Vec<MetricsLine> = Vec::new();
    for p in &summary.peers {
        let path = dir.join(&p.name).join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        lines.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<MetricsLine>(l).ok()),
        );
    }
    let t0 = lines
        .iter()
        .map(|l| l.time - l.elapsed_seconds)
        .fold(f64::INFINITY, f64::min);
    let cluster_drain = cluster_drain(&summary.peers, t0);
    lines.sort_by(|a, b| a.time.total_cmp(&b.time));
    let names: Vec<String> = summary.peers.iter().map(|p| p.name.clone()).collect();
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut counters: BTreeMap<String, Vec<Counters>> = BTreeMap::new();
    // The centralized baseline is one process: an all-reduce among one sends nothing.
    let allreduce_peers = if cell.mode == crate::config::Mode::Centralized {
        1
    } else {
        cell.peers
    };
    let parameters = (summary.parameters > 0).then_some(summary.parameters);
    let per_step = parameters.map(|p| allreduce_bytes_per_step(allreduce_peers, p));
    let mut rows = Vec::new();
    let mut ser = Series {
        cell: cell.clone(),
        mean_value: Vec::new(),
        spread: Vec::new(),
        bytes_per_peer: Vec::new(),
    };
    let (mut ttt, mut ttt_all, mut ttt_others) = (None, None, None);
    let straggler_name = cell.straggler(lab)?;
    let straggler = (cell.slowdown > 1.0).then_some(straggler_name.as_str());
    let target = lab.target().map_err(|message| LabError::File {
        path: dir.to_path_buf(),
        message,
    })?;
    for l in &lines {
        let t = l.time - t0;
        sent.insert(l.peer.clone(), l.bytes_sent);
        counters.entry(l.peer.clone()).or_default().push(Counters {
            t,
            step: l.step,
            bytes_sent: l.bytes_sent,
        });
        let bytes = sent.values().sum::<u64>() as f64 / names.len().max(1) as f64;
        ser.bytes_per_peer.push((t, bytes));
        let Some(value) = l.value(&target.metric) else {
            continue;
        };
        latest.insert(l.peer.clone(), value);
        let all = names.iter().all(|n| latest.contains_key(n));
        let (mean, spread) = if all {
            let v: Vec<f64> = latest.values().copied().collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            ser.mean_value.push((t, mean));
            ser.spread.push((t, max - min));
            if ttt.is_none() && target.reached(mean) {
                ttt = Some(t);
            }
            if ttt_all.is_none() && target.reached(target.worse(min, max)) {
                ttt_all = Some(t);
            }
            if let Some(s) = straggler {
                let others: Vec<f64> = latest
                    .iter()
                    .filter(|(n, _)| n.as_str() != s)
                    .map(|(_, a)| *a)
                    .collect();
                if !others.is_empty()
                    && ttt_others.is_none()
                    && target.reached(others.iter().sum::<f64>() / others.len() as f64)
                {
                    ttt_others = Some(t);
                }
            }
            (Some(mean), Some(max - min))
        } else {
            (None, None)
        };
        rows.push(RunRow {
            cell: cell.id(),
            mode: cell.mode.as_str().into(),
            loss: cell.loss,
            slowdown: cell.slowdown,
            non_iid_alpha: cell.non_iid_alpha,
            peers: cell.peers,
            seed: cell.seed,
            peer: l.peer.clone(),
            t_seconds: t,
            step: l.step,
            samples: l.samples,
            metric: target.metric.clone(),
            value,
            mean_value: mean,
            spread,
            bytes_sent: l.bytes_sent,
            bytes_received: l.bytes_received,
            allreduce_bytes: per_step.map(|b| b * l.step as f64),
            bytes_to_target_per_peer: None,
            allreduce_bytes_per_peer: None,
            allreduce_ratio_to_target: None,
            allreduce_ratio_total: None,
        });
    }
    let ran = summary.peers.len().max(1) as f64;
    let bytes_sent_per_peer = summary.peers.iter().map(|p| p.bytes_sent).sum::<u64>() as f64 / ran;
    let comm = communication(&RunCounters {
        peers: allreduce_peers,
        parameters,
        lines: counters.into_values().collect(),
        time_to_target: ttt,
        steps_per_peer: summary.peers.iter().map(|p| p.steps).sum::<u64>() as f64 / ran,
        bytes_sent_per_peer,
    });
    for r in &mut rows {
        r.bytes_to_target_per_peer = comm.bytes_to_target_per_peer;
        r.allreduce_bytes_per_peer = comm.allreduce_bytes_per_peer;
        r.allreduce_ratio_to_target = comm.allreduce_ratio_to_target;
        r.allreduce_ratio_total = comm.allreduce_ratio_total;
    }
    let s = CellSummary {
        cell: cell.id(),
        mode: cell.mode.as_str().into(),
        loss: cell.loss,
        slowdown: cell.slowdown,
        non_iid_alpha: cell.non_iid_alpha,
        peers: cell.peers,
        seed: cell.seed,
        setting: super::file::describe_settings(&cell.settings),
        runner: cell.runner(lab).as_str().into(),
        time_to_target_seconds: ttt,
        time_to_target_all_seconds: ttt_all,
        time_to_target_others_seconds: ttt_others,
        final_mean: summary.metrics.get(&target.metric).unwrap_or(f64::NAN),
        final_worst: summary
            .peers
            .iter()
            .filter_map(|p| p.metrics.get(&target.metric))
            .reduce(|a, b| target.worse(a, b))
            .unwrap_or(f64::NAN),
        final_consensus_distance: summary.consensus_distance,
        bytes_sent_per_peer,
        wall_seconds: summary.wall_seconds,
        // The centralized baseline is one process standing for the cell's peers.
        peers_drained: if cell.mode == crate::config::Mode::Centralized {
            if summary.peers.iter().all(|p| p.drained) {
                cell.peers
            } else {
                0
            }
        } else {
            summary.peers.iter().filter(|p| p.drained).count()
        },
        drain_seconds: summary
            .peers
            .iter()
            .filter_map(|p| p.drain_seconds)
            .reduce(f64::max),
        cluster_drain_seconds: cluster_drain.map(|(drain, _)| drain),
        training_seconds: cluster_drain.map(|(_, training)| training),
        communication: comm,
    };
    Ok((rows, s, ser))
}

pub(super) fn write_csv(path: &Path, rows: &[RunRow]) -> Result<(), LabError> {
    let csv_err = |e: csv::Error| LabError::Io {
        what: format!("writing {}", path.display()),
        source: std::io::Error::other(e),
    };
    let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
    for r in rows {
        w.serialize(r).map_err(csv_err)?;
    }
    w.flush()
        .map_err(io_err(format!("writing {}", path.display())))
}

fn fmt_secs(t: Option<f64>) -> String {
    t.map_or("never".into(), |t| format!("{t:.1}"))
}

/// A drain time, or `-` where there is none (the baselines).
/// `(cluster drain, training time)` in seconds, from each peer's drain end (Unix seconds) and
/// length and the run's start `t0` (Unix seconds); None unless every peer's drain ended.
fn cluster_drain(peers: &[crate::run::PeerSummary], t0: f64) -> Option<(f64, f64)> {
    let spans: Vec<(f64, f64)> = peers
        .iter()
        .map(|p| Some((p.drain_ended_unix? - p.drain_seconds?, p.drain_ended_unix?)))
        .collect::<Option<_>>()?;
    let last_start = spans.iter().map(|s| s.0).reduce(f64::max)?;
    let last_end = spans.iter().map(|s| s.1).reduce(f64::max)?;
    t0.is_finite()
        .then(|| ((last_end - last_start).max(0.0), (last_start - t0).max(0.0)))
}

/// Cluster drain and its share of training, e.g. `1.2 (8%)`, or `-`.
fn fmt_cluster_drain(drain: Option<f64>, training: Option<f64>) -> String {
    match (drain, training) {
        (Some(d), Some(t)) if t > 0.0 => format!("{d:.1} ({:.0}%)", 100.0 * d / t),
        (Some(d), _) => format!("{d:.1}"),
        _ => "-".into(),
    }
}

fn fmt_drain(t: Option<f64>) -> String {
    t.map_or("-".into(), |t| format!("{t:.1}"))
}

/// Bytes as MiB, or `-` where there are none (target not reached).
fn fmt_mib(bytes: Option<f64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.2}", b / (1024.0 * 1024.0)))
}

/// How many times less than all-reduce, or `-` (no ratio: one peer, or not reached).
fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.1}"))
}

/// The Markdown report: per-setting means over seeds, then every run.
pub fn report(s: &LabSummary) -> String {
    let metric = &s.target.metric;
    let mut out = format!(
        "# Lab report: {}\n\nTarget: {}. Time to target: {}.\n\n",
        s.name,
        s.target.describe(),
        s.time_to_target_definition
    );
    // Accuracy as a percentage, anything else as it is.
    let show = |v: f64| {
        if metric == "accuracy" {
            format!("{:.2}%", v * 100.0)
        } else {
            format!("{v:.4}")
        }
    };
    out.push_str("## Per setting (mean over seeds)\n\n");
    out.push_str(&format!("| mode | setting | loss | slowdown | non-IID α | peers | seeds | reached | time to target (s) | every peer (s) | others (s) | final mean {metric} | final worst {metric} | consensus dist | MiB sent/peer | drained | drain (s) | MiB to target/peer | × less than all-reduce to target | × less than all-reduce total | cluster drain (s, % of training) |\n"));
    out.push_str(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut groups: BTreeMap<String, Vec<&CellSummary>> = BTreeMap::new();
    let mut order = Vec::new();
    for c in &s.cells {
        let key = format!(
            "{}|{}|{}|{}|{}|{}",
            c.mode, c.setting, c.loss, c.slowdown, c.non_iid_alpha, c.peers
        );
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(c);
    }
    let mean_opt = |v: Vec<Option<f64>>| -> (usize, Option<f64>) {
        let got: Vec<f64> = v.into_iter().flatten().collect();
        let n = got.len();
        (n, (n > 0).then(|| got.iter().sum::<f64>() / n as f64))
    };
    for key in order {
        let cs = &groups[&key];
        let c0 = cs[0];
        let n = cs.len();
        let (reached, ttt) = mean_opt(cs.iter().map(|c| c.time_to_target_seconds).collect());
        let (all_n, all) = mean_opt(cs.iter().map(|c| c.time_to_target_all_seconds).collect());
        let (others_n, others) =
            mean_opt(cs.iter().map(|c| c.time_to_target_others_seconds).collect());
        // Say how many seeds a mean is over when some never reached the target.
        let with_count = |t: Option<f64>, k: usize| {
            if k < n && t.is_some() {
                format!("{} ({k}/{n})", fmt_secs(t))
            } else {
                fmt_secs(t)
            }
        };
        let mean =
            |f: &dyn Fn(&CellSummary) -> f64| cs.iter().map(|c| f(c)).sum::<f64>() / n as f64;
        out.push_str(&format!(
            "| {} | {} | {:.0}% | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {:.1e} | {:.1} | {}/{} | {} | {} | {} | {} | {} |\n",
            c0.mode,
            if c0.setting.is_empty() { "-" } else { &c0.setting },
            c0.loss * 100.0,
            c0.slowdown,
            if c0.non_iid_alpha > 0.0 { c0.non_iid_alpha.to_string() } else { "IID".into() },
            c0.peers,
            n,
            reached,
            n,
            fmt_secs(ttt),
            with_count(all, all_n),
            if c0.slowdown > 1.0 {
                with_count(others, others_n)
            } else {
                "-".into()
            },
            show(mean(&|c| c.final_mean)),
            show(mean(&|c| c.final_worst)),
            mean(&|c| c.final_consensus_distance),
            mean(&|c| c.bytes_sent_per_peer) / (1024.0 * 1024.0),
            cs.iter().map(|c| c.peers_drained).sum::<usize>(),
            cs.iter().map(|c| c.peers).sum::<usize>(),
            fmt_drain(mean_opt(cs.iter().map(|c| c.drain_seconds).collect()).1),
            fmt_mib(mean_opt(cs.iter().map(|c| c.communication.bytes_to_target_per_peer).collect()).1),
            fmt_ratio(mean_opt(cs.iter().map(|c| c.communication.allreduce_ratio_to_target).collect()).1),
            fmt_ratio(mean_opt(cs.iter().map(|c| c.communication.allreduce_ratio_total).collect()).1),
            fmt_cluster_drain(
                mean_opt(cs.iter().map(|c| c.cluster_drain_seconds).collect()).1,
                mean_opt(cs.iter().map(|c| c.training_seconds).collect()).1,
            ),
        ));
    }
    out.push_str("\nMeans of time to target and of MiB to target are over the seeds that reached it (see `reached`). \
        × less than all-reduce: what a per-step fp32 ring all-reduce of the same model would send per peer \
        (2·(N−1)/N · 4 bytes · parameters, each step) over what the run sent per peer, to the target and over the whole run; \
        `-` for one peer (centralized: all-reduce sends nothing) or a target not reached.\n\n## Every run\n\n");
    out.push_str(&format!("| run | runner | time to target (s) | every peer (s) | final mean {metric} | final worst {metric} | consensus dist | MiB sent/peer | wall (s) | drained | drain (s) | MiB to target/peer | × less than all-reduce to target | × less than all-reduce total | cluster drain (s, % of training) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"));
    for c in &s.cells {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1e} | {:.1} | {:.1} | {}/{} | {} | {} | {} | {} | {} |\n",
            c.cell,
            c.runner,
            fmt_secs(c.time_to_target_seconds),
            fmt_secs(c.time_to_target_all_seconds),
            show(c.final_mean),
            show(c.final_worst),
            c.final_consensus_distance,
            c.bytes_sent_per_peer / (1024.0 * 1024.0),
            c.wall_seconds,
            c.peers_drained,
            c.peers,
            fmt_drain(c.drain_seconds),
            fmt_mib(c.communication.bytes_to_target_per_peer),
            fmt_ratio(c.communication.allreduce_ratio_to_target),
            fmt_ratio(c.communication.allreduce_ratio_total),
            fmt_cluster_drain(c.cluster_drain_seconds, c.training_seconds),
        ));
    }
    if !s.failed.is_empty() {
        out.push_str("\n## Failed runs\n\n");
        for f in &s.failed {
            out.push_str(&format!("- `{}`: {}\n", f.cell, f.error));
        }
    }
    out.push_str("\n## Plots\n\n");
    if s.plots.is_empty() {
        out.push_str("No plots: no TrueType font was found (set RUMOR_FONT to a .ttf file).\n");
    }
    for p in &s.plots {
        if p.ends_with(".png") {
            out.push_str(&format!("![{p}]({p})\n\n"));
        }
    }
    out.push_str(&format!("The spread of {metric} (max − min of the peers' latest values) is plotted as the per-time stand-in for consensus distance, which is measured on the final models only.\n"));
    out
}

#[cfg(test)]
mod tests;
