//! What a run ends with: one entry per peer and the run's summary, as `up` and `peer` print
//! them and write them with `--summary-json` (the lab reads them back); and consensus distance
//! over saved checkpoints (`rumor compare`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model;
use crate::node::PeerOutcome;
use crate::ui::format::human_bytes;
use crate::workload::Metrics;

use super::RunError;

/// One peer's entry in a summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Peer id.
    pub peer_id: String,
    /// Display name.
    pub name: String,
    /// Test accuracy of the final base, in [0, 1] (0 for a workload without accuracy, such as
    /// a language model: see `metrics`).
    pub test_accuracy: f32,
    /// Every held-out metric of the final base, by name, headline first.
    #[serde(default)]
    pub metrics: Metrics,
    /// Deltas this peer published.
    pub version: u64,
    /// Deltas folded into its base.
    pub applied: u64,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples processed.
    pub samples: u64,
    /// Whether its drain ended consistent before the deadline.
    pub drained: bool,
    /// Seconds its drain took (from its last delta to the end of the drain); null for the
    /// baselines, which have no drain, and for a peer stopped before its drain ended.
    #[serde(default)]
    pub drain_seconds: Option<f64>,
    /// When its drain ended (Unix seconds); null like `drain_seconds` and in summaries written
    /// before it was recorded.
    #[serde(default)]
    pub drain_ended_unix: Option<f64>,
    /// Parameters of its final model (fp32 values); 0 in summaries written before it was
    /// recorded.
    #[serde(default)]
    pub parameters: u64,
}

/// The summary `up` prints and writes with `--summary-json` (and, for one peer, `rumor peer
/// --summary-json`, which the lab reads back).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// `gossip`, `sync` or `centralized`.
    pub mode: String,
    /// Which dataset was used.
    pub dataset: String,
    /// One entry per peer.
    pub peers: Vec<PeerSummary>,
    /// Mean of the peers' test accuracies.
    pub mean_test_accuracy: f32,
    /// Lowest test accuracy.
    pub min_test_accuracy: f32,
    /// Each held-out metric's mean over the peers, by name, headline first.
    #[serde(default)]
    pub metrics: Metrics,
    /// `mean_i ‖base_i − mean‖ / ‖mean‖` over the final bases.
    pub consensus_distance: f64,
    /// Wall time of the whole run (s).
    pub wall_seconds: f64,
    /// Samples processed by all peers together.
    pub samples_total: u64,
    /// Effective learning rate of each peer.
    pub lr: f64,
    /// Epochs of the budget.
    pub epochs: u32,
    /// Parameters of the model (fp32 values; the largest of the peers' counts, which agree); 0
    /// in summaries written before it was recorded.
    #[serde(default)]
    pub parameters: u64,
}

/// What `rumor peer --summary-json` writes: the run summary of one peer plus the members it
/// knew at exit.
#[derive(Clone, Debug, Serialize)]
pub struct SinglePeerSummary {
    /// The same fields as `up`'s summary, for this peer alone (consensus distance 0).
    #[serde(flatten)]
    pub run: RunSummary,
    /// The members it knew at exit.
    pub members: Vec<crate::node::MemberSummary>,
}

/// The summary `peer` writes: `up`'s fields for this one peer (consensus distance 0), with the
/// learning rate of a cluster of `peers`, and the members it knew (`wall_seconds` in s).
pub(super) fn single_peer_summary(
    config: &Config,
    mode: &str,
    dataset: &str,
    peer: PeerSummary,
    wall_seconds: f64,
    peers: usize,
    members: Vec<crate::node::MemberSummary>,
) -> SinglePeerSummary {
    let t = &config.train;
    SinglePeerSummary {
        run: summarize(
            mode,
            dataset,
            vec![peer],
            0.0,
            Duration::from_secs_f64(wall_seconds),
            t.lr * t.lr_scaling.factor(peers),
            t.epochs,
        ),
        members,
    }
}

/// The `accuracy` metric as a summary records it (0 when the workload has none).
pub(super) fn accuracy_of(metrics: &Metrics) -> f32 {
    metrics.accuracy().unwrap_or(0.0)
}

/// Each metric's mean over `peers`, in the first peer's order (a peer lacking one is skipped
/// for it).
fn mean_metrics(peers: &[PeerSummary]) -> Metrics {
    let Some(first) = peers.first() else {
        return Metrics::default();
    };
    Metrics(
        first
            .metrics
            .0
            .iter()
            .map(|(name, _)| {
                let values: Vec<f64> = peers.iter().filter_map(|p| p.metrics.get(name)).collect();
                (
                    name.clone(),
                    values.iter().sum::<f64>() / values.len().max(1) as f64,
                )
            })
            .collect(),
    )
}

pub(super) fn peer_summary(o: &PeerOutcome) -> PeerSummary {
    PeerSummary {
        peer_id: o.peer_id.to_string(),
        name: o.name.clone(),
        test_accuracy: accuracy_of(&o.metrics),
        metrics: o.metrics.clone(),
        version: o.version,
        applied: o.applied.len(),
        bytes_sent: o.bytes_sent,
        bytes_received: o.bytes_received,
        steps: o.steps,
        samples: o.samples,
        drained: o.drained,
        drain_seconds: o.drain_seconds,
        drain_ended_unix: o.drain_ended_unix,
        parameters: o.base.len() as u64,
    }
}

/// A sync peer's entry in a summary (rounds stand in for versions and applied deltas).
pub(super) fn sync_peer_summary(o: &crate::sync::SyncOutcome) -> PeerSummary {
    PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: o.name.clone(),
        test_accuracy: accuracy_of(&o.metrics),
        metrics: o.metrics.clone(),
        version: o.rounds,
        applied: o.rounds,
        bytes_sent: o.transport.bytes_sent,
        bytes_received: o.transport.bytes_received,
        steps: o.steps,
        samples: o.samples,
        drained: o.complete,
        drain_seconds: None,
        drain_ended_unix: None,
        parameters: o.base.len() as u64,
    }
}

/// One summary of a cluster from the summaries its peers wrote one by one (`rumor peer
/// --summary-json`, each with one peer): the peers' entries in the given order, accuracies and
/// sample totals recomputed over all of them, `consensus_distance` as measured by the caller
/// (e.g. [`compare`] on the peers' checkpoints), wall time the longest peer's (s), mode,
/// dataset, learning rate and epochs from the first part. `None` when `parts` is empty.
pub fn combine_summaries(parts: Vec<RunSummary>, consensus_distance: f64) -> Option<RunSummary> {
    let first = parts.first()?.clone();
    let wall = parts.iter().map(|p| p.wall_seconds).fold(0.0f64, f64::max);
    let peers = parts.into_iter().flat_map(|p| p.peers).collect();
    Some(summarize(
        &first.mode,
        &first.dataset,
        peers,
        consensus_distance,
        Duration::try_from_secs_f64(wall).unwrap_or_default(),
        first.lr,
        first.epochs,
    ))
}

pub(super) fn summarize(
    mode: &str,
    dataset: &str,
    peers: Vec<PeerSummary>,
    consensus_distance: f64,
    wall: Duration,
    lr: f64,
    epochs: u32,
) -> RunSummary {
    let accs: Vec<f32> = peers.iter().map(|p| p.test_accuracy).collect();
    let mean = accs.iter().sum::<f32>() / accs.len().max(1) as f32;
    let min = accs.iter().copied().fold(f32::INFINITY, f32::min);
    RunSummary {
        mode: mode.into(),
        dataset: dataset.into(),
        samples_total: peers.iter().map(|p| p.samples).sum(),
        parameters: peers.iter().map(|p| p.parameters).max().unwrap_or(0),
        metrics: mean_metrics(&peers),
        peers,
        mean_test_accuracy: mean,
        min_test_accuracy: if min.is_finite() { min } else { 0.0 },
        consensus_distance,
        wall_seconds: wall.as_secs_f64(),
        lr,
        epochs,
    }
}

/// Prints the summary table of a run.
pub(super) fn print_summary(s: &RunSummary) {
    println!(
        "\nsummary: mode {} dataset {} epochs {} lr {}",
        s.mode, s.dataset, s.epochs, s.lr
    );
    let headline = s.metrics.primary().map_or("accuracy", |(name, _)| name);
    let shown = |p: &PeerSummary| match p.metrics.get(headline) {
        Some(v) if headline == "accuracy" => format!("{:.2}%", v * 100.0),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    };
    println!(
        "{:<12} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "peer", headline, "version", "applied", "sent", "received", "drained"
    );
    for p in &s.peers {
        println!(
            "{:<12} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8}",
            p.name,
            shown(p),
            p.version,
            p.applied,
            human_bytes(p.bytes_sent),
            human_bytes(p.bytes_received),
            p.drained
        );
    }
    println!(
        "mean {}  consensus distance {:.3e}  wall {:.1}s  samples {}",
        s.metrics, s.consensus_distance, s.wall_seconds, s.samples_total
    );
}

/// Consensus distance (`mean_i ‖base_i − mean‖ / ‖mean‖`) of the bases checkpointed in
/// `dirs` (peers' data dirs).
///
/// # Errors
/// [`RunError::Model`] if a checkpoint cannot be loaded or the bases differ in length.
pub fn checkpoint_consensus(dirs: &[PathBuf]) -> Result<f64, RunError> {
    let mut bases = Vec::with_capacity(dirs.len());
    for dir in dirs {
        bases.push(model::load_checkpoint(dir)?.params);
    }
    let refs: Vec<&[f32]> = bases.iter().map(Vec::as_slice).collect();
    Ok(model::consensus_distance(&refs)?)
}

/// `rumor compare`: consensus distance between saved checkpoints.
pub fn compare(dirs: &[PathBuf], json: bool) -> Result<f64, RunError> {
    let d = checkpoint_consensus(dirs)?;
    if json {
        println!("{}", serde_json::json!({ "consensus_distance": d }));
    } else {
        println!(
            "consensus distance over {} checkpoints: {d:.6e}",
            dirs.len()
        );
    }
    Ok(d)
}
