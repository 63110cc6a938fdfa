//! `metrics.jsonl` in a peer's data dir: one JSON line per training progress report (time,
//! step, loss, accuracy, versions, bytes), for plots and the lab. Written so a crash never
//! leaves a line that runs into the next.
//!
//! One writer ([`MetricsFile`]) serves every mode: the gossip peer writes its line (with the
//! core's and the transport's counters), the baselines — a barrier peer and the centralized
//! run — write a [`BaselineLine`], which carries the fields the lab reads under the same names.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tracing::warn;

use super::trainer::TrainProgress;
use super::warn_limiter::WarnLimiter;
use crate::net::Transport;
use rumor_proto::core::Core;

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct MetricsLine<'a> {
    time: f64,
    elapsed_seconds: f64,
    peer: &'a str,
    lifecycle: &'static str,
    step: u64,
    samples: u64,
    epoch: u32,
    train_loss: Option<f32>,
    test_accuracy: Option<f32>,
    /// Every held-out metric of this evaluation point, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<&'a crate::workload::Metrics>,
    flow_control_wait_seconds: f64,
    runtime_wait_seconds: f64,
    staleness_wait_seconds: f64,
    unseen_deltas: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_snapshot: Option<&'a Path>,
    version: u64,
    applied: u64,
    live_members: usize,
    bytes_sent: u64,
    bytes_received: u64,
    duplicates_dropped: u64,
    deltas_applied: u64,
    anti_entropy_deltas_sent: u64,
    inexact_merges: u64,
    deltas_received: u64,
    deltas_already_applied: u64,
    duplicate_deltas_received: u64,
    delta_payload_bytes_received: u64,
    announces_sent: u64,
    pulls_sent: u64,
    pull_timeouts: u64,
    signatures_verified: u64,
}

/// One line of a baseline's `metrics.jsonl`: a peer of the barrier baseline ([`crate::sync`])
/// or the centralized run ([`crate::run::centralized`]). The fields the lab reads (`time`,
/// `elapsed_seconds`, `peer`, `step`, `samples`, `test_accuracy`, `metrics`, `bytes_sent`,
/// `bytes_received`) mean what they mean in a gossip peer's line.
#[derive(Serialize)]
pub(crate) struct BaselineLine<'a> {
    /// Unix time of the line (s).
    pub(crate) time: f64,
    /// Seconds since the run (or peer) started.
    pub(crate) elapsed_seconds: f64,
    /// The peer's name (`centralized` for the centralized run).
    pub(crate) peer: &'a str,
    /// `sync` or `centralized`.
    pub(crate) mode: &'static str,
    /// `training`, or `left` on the last line (the final model's metrics).
    pub(crate) lifecycle: &'static str,
    /// Optimizer steps so far.
    pub(crate) step: u64,
    /// Budget units (samples or tokens) so far.
    pub(crate) samples: u64,
    /// Epoch, 0-based.
    pub(crate) epoch: u32,
    /// Mean training loss since the last report.
    pub(crate) train_loss: Option<f32>,
    /// Test accuracy of the evaluated model, when evaluated here and the workload has one.
    pub(crate) test_accuracy: Option<f32>,
    /// Every held-out metric of this evaluation point, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metrics: Option<&'a crate::workload::Metrics>,
    /// The file of a deferred evaluation point ([`crate::lab::evaluate_deferred`] fills it in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) eval_snapshot: Option<&'a Path>,
    /// Barrier rounds completed (the barrier baseline only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) round: Option<u64>,
    /// UDP bytes sent so far (0 for the centralized run, which has no network).
    pub(crate) bytes_sent: u64,
    /// UDP bytes received so far.
    pub(crate) bytes_received: u64,
}

impl<'a> BaselineLine<'a> {
    /// The line of `peer` in `mode` at `progress`, now, `started` being when it started; no
    /// round and no bytes (set them where there are some).
    pub(crate) fn new(
        peer: &'a str,
        mode: &'static str,
        lifecycle: &'static str,
        started: Instant,
        progress: &'a TrainProgress,
    ) -> Self {
        Self {
            time: crate::clock::unix_now(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            peer,
            mode,
            lifecycle,
            step: progress.step,
            samples: progress.samples,
            epoch: progress.epoch,
            train_loss: progress.train_loss,
            test_accuracy: progress.metrics.as_ref().and_then(|m| m.accuracy()),
            metrics: progress.metrics.as_ref(),
            eval_snapshot: progress.eval_snapshot.as_deref(),
            round: None,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }
}

/// `metrics.jsonl`, appended one whole line per `write_all` (`O_APPEND`): a crash leaves at most
/// a partial last line, which readers skip and the next open terminates. Write errors are
/// logged through a [`WarnLimiter`], never fatal.
pub(crate) struct MetricsFile {
    file: Option<std::fs::File>,
    started: Instant,
    warnings: WarnLimiter,
}

impl MetricsFile {
    /// Opens (or creates) the file at `path` for appending; one that cannot be opened is
    /// logged and nothing is written.
    pub(crate) fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| {
                warn!(
                    "cannot open {}: {e}; metrics are not written",
                    path.display()
                )
            })
            .ok();
        let mut me = Self {
            file,
            started: Instant::now(),
            warnings: WarnLimiter::default(),
        };
        if let Some(f) = me.file.as_mut() {
            if let Err(e) = terminate_torn_line(f) {
                me.warnings.failed("metrics", &e);
            }
        }
        me
    }

    /// Appends the gossip peer `name`'s line at `progress`, with its core's and transport's
    /// counters.
    pub(super) fn write(
        &mut self,
        name: &str,
        core: &Core,
        transport: &Transport,
        progress: &TrainProgress,
    ) {
        if self.file.is_none() {
            return;
        }
        let stats = core.stats();
        let net = transport.stats();
        let line = MetricsLine {
            time: crate::clock::unix_now(),
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            peer: name,
            lifecycle: core.lifecycle().as_str(),
            step: progress.step,
            samples: progress.samples,
            epoch: progress.epoch,
            train_loss: progress.train_loss,
            test_accuracy: progress.metrics.as_ref().and_then(|m| m.accuracy()),
            metrics: progress.metrics.as_ref(),
            flow_control_wait_seconds: progress.flow_control_wait_seconds,
            runtime_wait_seconds: progress.runtime_wait_seconds,
            staleness_wait_seconds: progress.staleness_wait_seconds,
            unseen_deltas: core.unseen_deltas(),
            eval_snapshot: progress.eval_snapshot.as_deref(),
            version: core.published(),
            applied: core.applied().len(),
            live_members: core.live_count(),
            bytes_sent: net.bytes_sent,
            bytes_received: net.bytes_received,
            duplicates_dropped: stats.duplicates_dropped,
            deltas_applied: stats.deltas_applied,
            anti_entropy_deltas_sent: stats.anti_entropy_deltas_sent,
            inexact_merges: stats.inexact_merges,
            deltas_received: stats.received.get("delta").copied().unwrap_or(0),
            deltas_already_applied: stats.deltas_already_applied,
            duplicate_deltas_received: stats.duplicate_deltas_received,
            delta_payload_bytes_received: stats.delta_payload_bytes_received,
            announces_sent: stats.announces_sent,
            pulls_sent: stats.pulls_sent,
            pull_timeouts: stats.pull_timeouts,
            signatures_verified: stats.signatures_verified,
        };
        self.append(&line);
    }

    /// Appends `line` as one JSON line.
    pub(crate) fn append<T: Serialize>(&mut self, line: &T) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Ok(mut text) = serde_json::to_string(line) {
            text.push('\n');
            // One write per line, appended: a crash leaves at most a partial last line.
            match file.write_all(text.as_bytes()) {
                Ok(()) => self.warnings.recovered("metrics"),
                Err(e) => {
                    self.warnings.failed("metrics", &e);
                    // A partial line may have gone out (disk full): end it, so the next line
                    // starts clean; if even that fails, the next open does it.
                    let _ = file.write_all(b"\n");
                }
            }
        }
    }
}

/// If `file` is non-empty and its last byte is not a newline (a line torn by a crash), appends
/// one, so the next line does not run into the fragment.
pub(super) fn terminate_torn_line(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_metrics_line_is_terminated_on_open() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, b"{\"step\": 1}\n{\"step\": 2, \"tra")?;
        let _ = MetricsFile::open(&path);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.ends_with('\n'), "{text:?}");
        // Opening again adds nothing; the whole lines still parse, the torn one is skipped.
        let _ = MetricsFile::open(&path);
        assert_eq!(std::fs::read_to_string(&path)?, text);
        let parsed = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .count();
        assert_eq!(parsed, 1);
        Ok(())
    }
}
