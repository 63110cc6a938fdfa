//! What a run cost in communication: UDP bytes sent per peer by the time the target was reached
//! and over the whole run, set against what a per-step fp32 ring all-reduce of the same model
//! (the data-parallel default) would have sent for as many optimizer steps.
//!
//! A ring all-reduce of P fp32 parameters among N peers is a reduce-scatter then an all-gather,
//! each N − 1 transfers of P/N values per peer, so every peer sends
//! `2·(N−1)/N · 4·P` bytes per step ([`allreduce_bytes_per_step`]). One peer (the centralized
//! baseline) sends nothing, so its ratios are None, never infinite.

use serde::Serialize;

/// Bytes one peer sends in one fp32 ring all-reduce of `parameters` values among `peers` peers:
/// `2·(N−1)/N · 4·P` (0 for one peer, or none).
pub fn allreduce_bytes_per_step(peers: usize, parameters: u64) -> f64 {
    if peers < 2 {
        return 0.0;
    }
    let n = peers as f64;
    2.0 * (n - 1.0) / n * 4.0 * parameters as f64
}

/// One line of one peer's `metrics.jsonl`, as far as communication goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Counters {
    /// Seconds on the run's time axis (since its first peer started).
    pub t: f64,
    /// Optimizer steps of the peer so far.
    pub step: u64,
    /// UDP bytes the peer sent so far.
    pub bytes_sent: u64,
}

/// What a run needs for its communication numbers.
#[derive(Clone, Debug)]
pub(super) struct RunCounters {
    /// N of the all-reduce: the cell's peers, 1 for the centralized baseline.
    pub peers: usize,
    /// The model's parameter count; None when the run's summary did not record it.
    pub parameters: Option<u64>,
    /// Each peer's lines, in time order (one `Vec` per peer that wrote any).
    pub lines: Vec<Vec<Counters>>,
    /// When the cell reached its target (`time_to_target_seconds`), if it did.
    pub time_to_target: Option<f64>,
    /// Mean over the peers of their optimizer steps over the whole run (the run summary's).
    pub steps_per_peer: f64,
    /// Mean over the peers of the UDP bytes they sent over the whole run (the run summary's).
    pub bytes_sent_per_peer: f64,
}

/// A run's communication, in `summary.json` (beside the cell's other numbers) and the report.
///
/// "To target" numbers read, for each peer, its first `metrics.jsonl` line at or after the
/// cell's time to target (its last line if it wrote none that late; nothing is interpolated)
/// and average that over the peers; they are None when the target was not reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Communication {
    /// The model's parameter count (P); null when the run's summary did not record it.
    pub parameters: Option<u64>,
    /// Mean over the peers of their optimizer steps over the whole run.
    pub steps_per_peer: f64,
    /// Mean over the peers of the UDP bytes each had sent by the target (bytes).
    pub bytes_to_target_per_peer: Option<f64>,
    /// Mean over the peers of the optimizer steps each had taken by the target (steps).
    pub steps_to_target_per_peer: Option<f64>,
    /// What a per-step fp32 ring all-reduce would have sent per peer in
    /// `steps_to_target_per_peer` steps (bytes; 0 for one peer).
    pub allreduce_bytes_to_target_per_peer: Option<f64>,
    /// What a per-step fp32 ring all-reduce would have sent per peer in `steps_per_peer`
    /// steps (bytes; 0 for one peer); null when P is not known.
    pub allreduce_bytes_per_peer: Option<f64>,
    /// `allreduce_bytes_to_target_per_peer / bytes_to_target_per_peer`: how many times fewer
    /// bytes than all-reduce the run sent to reach the target; null for one peer (all-reduce
    /// sends nothing), when the run sent nothing, or when the target was not reached.
    pub allreduce_ratio_to_target: Option<f64>,
    /// `allreduce_bytes_per_peer / bytes_sent_per_peer` over the whole run; null as above.
    pub allreduce_ratio_total: Option<f64>,
}

/// `allreduce / sent`, when both are positive.
fn ratio(allreduce: Option<f64>, sent: Option<f64>) -> Option<f64> {
    match (allreduce, sent) {
        (Some(a), Some(s)) if a > 0.0 && s > 0.0 => Some(a / s),
        _ => None,
    }
}

/// Mean over the peers of `(steps, bytes sent)` on each peer's first line at or after `t` (its
/// last line if none is that late); None when no peer wrote a line.
fn at_time(lines: &[Vec<Counters>], t: f64) -> Option<(f64, f64)> {
    let picked: Vec<&Counters> = lines
        .iter()
        .filter_map(|peer| peer.iter().find(|c| c.t >= t).or_else(|| peer.last()))
        .collect();
    if picked.is_empty() {
        return None;
    }
    let n = picked.len() as f64;
    let steps = picked.iter().map(|c| c.step as f64).sum::<f64>() / n;
    let bytes = picked.iter().map(|c| c.bytes_sent as f64).sum::<f64>() / n;
    Some((steps, bytes))
}

/// The communication numbers of a run.
pub(super) fn communication(run: &RunCounters) -> Communication {
    let per_step = run
        .parameters
        .map(|p| allreduce_bytes_per_step(run.peers, p));
    let at_target = run.time_to_target.and_then(|t| at_time(&run.lines, t));
    let steps_to_target = at_target.map(|(steps, _)| steps);
    let bytes_to_target = at_target.map(|(_, bytes)| bytes);
    let allreduce_to_target = per_step.zip(steps_to_target).map(|(b, s)| b * s);
    let allreduce_total = per_step.map(|b| b * run.steps_per_peer);
    Communication {
        parameters: run.parameters,
        steps_per_peer: run.steps_per_peer,
        bytes_to_target_per_peer: bytes_to_target,
        steps_to_target_per_peer: steps_to_target,
        allreduce_bytes_to_target_per_peer: allreduce_to_target,
        allreduce_bytes_per_peer: allreduce_total,
        allreduce_ratio_to_target: ratio(allreduce_to_target, bytes_to_target),
        allreduce_ratio_total: ratio(allreduce_total, Some(run.bytes_sent_per_peer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: f64, step: u64, bytes_sent: u64) -> Counters {
        Counters {
            t,
            step,
            bytes_sent,
        }
    }

    #[test]
    fn ring_allreduce_sends_two_n_minus_one_over_n_of_the_model_per_step() {
        // 4 peers, 1000 parameters: 2·3/4 · 4 B · 1000 = 6000 B per step and peer.
        assert_eq!(allreduce_bytes_per_step(4, 1000), 6000.0);
        assert_eq!(allreduce_bytes_per_step(2, 1000), 4000.0);
        assert_eq!(allreduce_bytes_per_step(1, 1000), 0.0);
        assert_eq!(allreduce_bytes_per_step(0, 1000), 0.0);
    }

    #[test]
    fn bytes_to_target_are_each_peers_first_line_at_or_after_the_target() {
        let run = RunCounters {
            peers: 4,
            parameters: Some(1000),
            lines: vec![
                vec![c(1.0, 50, 1_000), c(2.0, 100, 3_000), c(4.0, 200, 9_000)],
                vec![c(1.5, 60, 2_000), c(2.5, 100, 5_000)],
                // Wrote nothing at or after the target: its last line counts.
                vec![c(1.0, 100, 4_000)],
                vec![c(2.0, 100, 4_000)],
            ],
            time_to_target: Some(2.0),
            steps_per_peer: 200.0,
            bytes_sent_per_peer: 24_000.0,
        };
        let got = communication(&run);
        // Every peer at 100 steps; bytes (3000 + 5000 + 4000 + 4000) / 4.
        assert_eq!(got.steps_to_target_per_peer, Some(100.0));
        assert_eq!(got.bytes_to_target_per_peer, Some(4_000.0));
        // 2·3/4 · 4 · 1000 · 100 = 600,000 B; 600,000 / 4,000 = 150×.
        assert_eq!(got.allreduce_bytes_to_target_per_peer, Some(600_000.0));
        assert_eq!(got.allreduce_ratio_to_target, Some(150.0));
        // Whole run: 6000 · 200 = 1,200,000 B against 24,000 B sent: 50×.
        assert_eq!(got.allreduce_bytes_per_peer, Some(1_200_000.0));
        assert_eq!(got.allreduce_ratio_total, Some(50.0));
        assert_eq!(got.parameters, Some(1000));
    }

    #[test]
    fn a_target_not_reached_has_no_to_target_numbers() {
        let run = RunCounters {
            peers: 4,
            parameters: Some(1000),
            lines: vec![vec![c(1.0, 100, 1_000)]],
            time_to_target: None,
            steps_per_peer: 100.0,
            bytes_sent_per_peer: 1_000.0,
        };
        let got = communication(&run);
        assert_eq!(got.bytes_to_target_per_peer, None);
        assert_eq!(got.steps_to_target_per_peer, None);
        assert_eq!(got.allreduce_bytes_to_target_per_peer, None);
        assert_eq!(got.allreduce_ratio_to_target, None);
        // The whole run still compares: 600,000 / 1,000.
        assert_eq!(got.allreduce_ratio_total, Some(600.0));
    }

    #[test]
    fn the_centralized_baseline_sends_nothing_and_has_no_ratio() {
        let run = RunCounters {
            peers: 1,
            parameters: Some(1000),
            lines: vec![vec![c(1.0, 50, 0), c(3.0, 100, 0)]],
            time_to_target: Some(3.0),
            steps_per_peer: 100.0,
            bytes_sent_per_peer: 0.0,
        };
        let got = communication(&run);
        assert_eq!(got.bytes_to_target_per_peer, Some(0.0));
        assert_eq!(got.steps_to_target_per_peer, Some(100.0));
        assert_eq!(got.allreduce_bytes_to_target_per_peer, Some(0.0));
        assert_eq!(got.allreduce_bytes_per_peer, Some(0.0));
        assert_eq!(got.allreduce_ratio_to_target, None);
        assert_eq!(got.allreduce_ratio_total, None);
    }

    #[test]
    fn an_unknown_parameter_count_gives_no_allreduce_numbers() {
        let run = RunCounters {
            peers: 4,
            parameters: None,
            lines: vec![vec![c(1.0, 100, 1_000)]],
            time_to_target: Some(1.0),
            steps_per_peer: 100.0,
            bytes_sent_per_peer: 1_000.0,
        };
        let got = communication(&run);
        assert_eq!(got.bytes_to_target_per_peer, Some(1_000.0));
        assert_eq!(got.allreduce_bytes_per_peer, None);
        assert_eq!(got.allreduce_ratio_to_target, None);
        assert_eq!(got.allreduce_ratio_total, None);
    }
}
