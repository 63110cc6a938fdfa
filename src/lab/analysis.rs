//! What the lab makes of a run: the rows of `runs.csv` read back from the peers'
//! `metrics.jsonl`, each cell's summary (times to target, spread, bytes), the series the plots
//! draw, and the Markdown report (definitions in the [`super`] module docs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run::RunSummary;

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
    lines.sort_by(|a, b| a.time.total_cmp(&b.time));
    let names: Vec<String> = summary.peers.iter().map(|p| p.name.clone()).collect();
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut ser = Series {
        cell: *cell,
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
        });
    }
    let bytes_sent_per_peer = summary.peers.iter().map(|p| p.bytes_sent).sum::<u64>() as f64
        / summary.peers.len().max(1) as f64;
    let s = CellSummary {
        cell: cell.id(),
        mode: cell.mode.as_str().into(),
        loss: cell.loss,
        slowdown: cell.slowdown,
        non_iid_alpha: cell.non_iid_alpha,
        peers: cell.peers,
        seed: cell.seed,
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
fn fmt_drain(t: Option<f64>) -> String {
    t.map_or("-".into(), |t| format!("{t:.1}"))
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
    out.push_str(&format!("| mode | loss | slowdown | non-IID α | peers | seeds | reached | time to target (s) | every peer (s) | others (s) | final mean {metric} | final worst {metric} | consensus dist | MiB sent/peer | drained | drain (s) |\n"));
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut groups: BTreeMap<String, Vec<&CellSummary>> = BTreeMap::new();
    let mut order = Vec::new();
    for c in &s.cells {
        let key = format!(
            "{}|{}|{}|{}|{}",
            c.mode, c.loss, c.slowdown, c.non_iid_alpha, c.peers
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
            "| {} | {:.0}% | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {:.1e} | {:.1} | {}/{} | {} |\n",
            c0.mode,
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
        ));
    }
    out.push_str("\nMeans of time to target are over the seeds that reached it (see `reached`).\n\n## Every run\n\n");
    out.push_str(&format!("| run | runner | time to target (s) | every peer (s) | final mean {metric} | final worst {metric} | consensus dist | MiB sent/peer | wall (s) | drained | drain (s) |\n|---|---|---|---|---|---|---|---|---|---|---|\n"));
    for c in &s.cells {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1e} | {:.1} | {:.1} | {}/{} | {} |\n",
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
mod tests {
    use super::*;

    fn line(peer: &str, t: f64, acc: Option<f32>) -> String {
        serde_json::json!({
            "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": 1, "samples": 64,
            "test_accuracy": acc, "bytes_sent": 10, "bytes_received": 10
        })
        .to_string()
    }

    #[test]
    fn time_to_target_uses_every_peers_latest_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        for (peer, lines) in [
            (
                "peer-0",
                vec![
                    line("peer-0", 1.0, Some(0.5)),
                    line("peer-0", 3.0, Some(0.9)),
                ],
            ),
            (
                "peer-1",
                vec![
                    line("peer-1", 2.0, Some(0.7)),
                    line("peer-1", 5.0, Some(0.85)),
                ],
            ),
        ] {
            std::fs::create_dir_all(dir.path().join(peer)).unwrap();
            std::fs::write(
                dir.path().join(peer).join("metrics.jsonl"),
                lines.join("\n"),
            )
            .unwrap();
        }
        let peer = |name: &str| crate::run::PeerSummary {
            peer_id: String::new(),
            name: name.into(),
            test_accuracy: 0.9,
            metrics: crate::workload::Metrics(vec![("accuracy".into(), 0.9)]),
            version: 1,
            applied: 1,
            bytes_sent: 10,
            bytes_received: 10,
            steps: 1,
            samples: 64,
            drained: true,
            drain_seconds: Some(if name == "peer-0" { 0.5 } else { 1.5 }),
            parameters: 1000,
        };
        let summary = RunSummary {
            mode: "gossip".into(),
            dataset: "synthetic".into(),
            peers: vec![peer("peer-0"), peer("peer-1")],
            mean_test_accuracy: 0.9,
            min_test_accuracy: 0.9,
            metrics: crate::workload::Metrics(vec![("accuracy".into(), 0.9)]),
            consensus_distance: 0.0,
            wall_seconds: 6.0,
            samples_total: 128,
            lr: 0.001,
            epochs: 1,
            parameters: 1000,
        };
        let lab: LabFile = toml::from_str("name = \"t\"\ntarget_accuracy = 0.75\n").unwrap();
        let cell = lab.cells()[0];
        let (rows, s, series) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
        assert_eq!(rows.len(), 4);
        // Mean: t=2 → 0.6, t=3 → 0.8 (reached), t=5 → 0.875; every peer ≥ 0.75 only at t=5.
        assert_eq!(s.time_to_target_seconds, Some(3.0));
        assert_eq!(s.time_to_target_all_seconds, Some(5.0));
        assert_eq!(series.mean_value.len(), 3);
        assert!((s.final_mean - 0.9).abs() < 1e-12 && (s.final_worst - 0.9).abs() < 1e-12);
        // The longest drain of the run, and how many of the cell's 4 peers drained (2 ran).
        assert_eq!(s.drain_seconds, Some(1.5));
        assert_eq!(s.peers_drained, 2);
        let text = report(&LabSummary {
            name: "t".into(),
            target: lab.target().unwrap(),
            time_to_target_definition: String::new(),
            cells: vec![s],
            failed: vec![FailedRun {
                cell: "gossip-x".into(),
                error: "it broke".into(),
            }],
            plots: vec![],
        });
        assert!(
            text.contains("## Failed runs\n\n- `gossip-x`: it broke"),
            "{text}"
        );
        assert!(text.contains("| gossip |"), "{text}");
        assert!(text.contains("| 2/4 | 1.5 |"), "{text}");
        assert!(text.contains("Target: accuracy ≥ 0.75"), "{text}");
    }

    /// A loss target is reached from above, read from the `metrics` of each line; the worst
    /// peer is the one with the highest loss.
    #[test]
    fn a_loss_target_is_reached_from_above() {
        let dir = tempfile::tempdir().unwrap();
        let loss_line = |peer: &str, t: f64, loss: f64| {
            serde_json::json!({
                "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": 1,
                "samples": 64, "test_accuracy": null,
                "metrics": {"val_loss": loss, "perplexity": loss.exp()},
                "bytes_sent": 10, "bytes_received": 10
            })
            .to_string()
        };
        for (peer, lines) in [
            (
                "peer-0",
                [loss_line("peer-0", 1.0, 3.0), loss_line("peer-0", 3.0, 1.5)],
            ),
            (
                "peer-1",
                [loss_line("peer-1", 2.0, 2.5), loss_line("peer-1", 5.0, 1.9)],
            ),
        ] {
            std::fs::create_dir_all(dir.path().join(peer)).unwrap();
            std::fs::write(
                dir.path().join(peer).join("metrics.jsonl"),
                lines.join("\n"),
            )
            .unwrap();
        }
        let metrics = |v: f64| crate::workload::Metrics(vec![("val_loss".into(), v)]);
        let peer = |name: &str, v: f64| crate::run::PeerSummary {
            peer_id: String::new(),
            name: name.into(),
            test_accuracy: 0.0,
            metrics: metrics(v),
            version: 1,
            applied: 1,
            bytes_sent: 10,
            bytes_received: 10,
            steps: 1,
            samples: 64,
            drained: true,
            drain_seconds: None,
            parameters: 1000,
        };
        let summary = RunSummary {
            mode: "gossip".into(),
            dataset: "austen".into(),
            peers: vec![peer("peer-0", 1.5), peer("peer-1", 1.9)],
            mean_test_accuracy: 0.0,
            min_test_accuracy: 0.0,
            metrics: metrics(1.7),
            consensus_distance: 0.0,
            wall_seconds: 6.0,
            samples_total: 128,
            lr: 0.001,
            epochs: 1,
            parameters: 1000,
        };
        let lab: LabFile =
            toml::from_str("name = \"t\"\n[target]\nmetric = \"val_loss\"\nvalue = 2.0\n").unwrap();
        let cell = lab.cells()[0];
        let (rows, s, _) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
        assert_eq!(rows[0].metric, "val_loss");
        // Mean: t=2 → 2.75, t=3 → 2.0 (reached); every peer ≤ 2.0 only at t=5.
        assert_eq!(s.time_to_target_seconds, Some(3.0));
        assert_eq!(s.time_to_target_all_seconds, Some(5.0));
        assert!((s.final_worst - 1.9).abs() < 1e-12, "{}", s.final_worst);
    }

    #[test]
    fn a_target_needs_one_form_and_a_direction() {
        let parse = |text: &str| toml::from_str::<LabFile>(text).unwrap().target();
        assert!(parse("name = \"t\"\n").is_err());
        assert!(parse("name = \"t\"\ntarget_accuracy = 1.5\n").is_err());
        let both =
            "name = \"t\"\ntarget_accuracy = 0.5\n[target]\nmetric = \"val_loss\"\nvalue = 2.0\n";
        assert!(parse(both).is_err());
        let unknown = "name = \"t\"\n[target]\nmetric = \"bleu\"\nvalue = 30.0\n";
        assert!(parse(unknown).unwrap_err().contains("direction"));
        let given =
            "name = \"t\"\n[target]\nmetric = \"bleu\"\nvalue = 30.0\ndirection = \"higher\"\n";
        assert_eq!(
            parse(given).unwrap().direction,
            crate::workload::Direction::Higher
        );
    }
}
