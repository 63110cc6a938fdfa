//! `rumor bench training`: optimizer steps per second of one gossiping peer against the bare
//! training loop on the same workload, plan and thread count: what gossip (publishing,
//! signing, quantizing deltas, merging, the async runtime beside the trainer) costs training.
//!
//! The gossiping peer trains shard 1/1 beside a second peer that only runs gossip and
//! membership (it receives and merges every delta, so sends and acknowledgements happen) and
//! never trains. Both rates are measured between the reports at step 10 and at the last step,
//! so start-up, joining and the drain are left out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::certs;
use crate::config::Config;
use crate::model::ModelError;
use crate::node::PeerHandle;
use crate::run::{load_data, peer_options, RunError};
use crate::train::{self, StepPosition, TrainHooks, TrainProgress, Trainer};

/// What `rumor bench training` prints.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingBench {
    /// The workload, as it describes itself.
    pub workload: String,
    /// Steps measured (from the report at step 10 to the last).
    pub steps: u64,
    /// Optimizer steps per second of the bare loop.
    pub bare_steps_per_second: f64,
    /// Optimizer steps per second of the gossiping peer.
    pub gossip_steps_per_second: f64,
    /// `gossip / bare`.
    pub ratio: f64,
}

impl std::fmt::Display for TrainingBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: bare loop {:.2} steps/s, gossiping peer {:.2} steps/s, ratio {:.3} \
             ({} steps measured)",
            self.workload,
            self.bare_steps_per_second,
            self.gossip_steps_per_second,
            self.ratio,
            self.steps
        )
    }
}

/// The bare loop's hooks: nothing around a step; the time of each report.
struct Timing {
    reports: Vec<(u64, Instant)>,
}

impl TrainHooks for Timing {
    type Error = ModelError;

    fn after_step(
        &mut self,
        _: &mut Trainer,
        _: &mut TrainProgress,
        _: StepPosition,
    ) -> Result<(), ModelError> {
        Ok(())
    }

    fn evaluated_params<'a>(
        &'a self,
        trainer: &Trainer,
    ) -> Result<std::borrow::Cow<'a, [f32]>, ModelError> {
        Ok(std::borrow::Cow::Owned(trainer.work()?))
    }

    fn report(&mut self, progress: &TrainProgress, _: StepPosition) {
        self.reports.push((progress.step, Instant::now()));
    }

    fn finish(&mut self, _: &mut Trainer, _: &mut TrainProgress) -> Result<(), ModelError> {
        Ok(())
    }
}

/// Steps per second between the first report at step ≥ 10 and the last, from `(step,
/// seconds)` pairs; `None` with fewer than two such reports.
fn rate(points: &[(u64, f64)]) -> Option<(u64, f64)> {
    let first = points.iter().find(|(s, _)| *s >= 10)?;
    let last = points.iter().max_by_key(|(s, _)| *s)?;
    let (steps, seconds) = (last.0.checked_sub(first.0)?, last.1 - first.1);
    (steps > 0 && seconds > 0.0).then(|| (steps, steps as f64 / seconds))
}

fn failed(what: &str) -> RunError {
    RunError::Io {
        what: format!("benchmark: {what}"),
        source: std::io::Error::other("no measurement"),
    }
}

/// Runs `steps` optimizer steps of `config`'s workload (model, data, batch, lr, `publish_every`,
/// delta compression) twice: in the bare loop, then in a gossiping peer.
///
/// # Errors
/// What loading the data, building the model, certificates or the peers fail with; a run too
/// short to measure (`steps` below 20).
pub async fn training(config: &Config, steps: u64) -> Result<TrainingBench, RunError> {
    let mut config = config.clone();
    config.train.shard = crate::data::ShardSpec::WHOLE;
    config.train.eval_every = 0;
    config.train.tokens = None;
    config.train.epochs = u32::MAX;
    let data = load_data(&config)?;
    let (temp, certs_dir) = super::temp_ca("rumor-bench-training-")?;
    let options = |name: &str, seed| -> Result<crate::node::PeerOptions, RunError> {
        certs::issue(&certs_dir, name, 2)?;
        let identity = Arc::new(certs::load_identity(&certs_dir, name)?);
        let mut c = config.clone();
        c.peer.name = name.into();
        c.peer.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.peer.seeds = Vec::from_iter(seed);
        c.peer.data_dir = temp.path().join(name);
        c.peer.min_peers = 2;
        // The drain is not measured; the listener never trains, so bound it.
        c.peer.drain_timeout = Duration::from_secs(20);
        let mut o = peer_options(&c, identity, &data, 1)?;
        o.plan.max_steps = Some(steps);
        Ok(o)
    };
    let trainer_options = options("trainer", None)?;

    // The bare loop, on the same workload and plan.
    let workload = trainer_options.workload.clone();
    let (plan, initial) = (
        trainer_options.plan.clone(),
        trainer_options.initial.clone(),
    );
    let started = Instant::now();
    let bare = tokio::task::spawn_blocking(move || {
        let mut hooks = Timing {
            reports: Vec::new(),
        };
        train::run_training(&plan, &workload, &initial, &mut hooks).map(|_| hooks.reports)
    })
    .await
    .map_err(|e| RunError::Io {
        what: "the bare training loop".into(),
        source: std::io::Error::other(e),
    })??;
    let bare: Vec<(u64, f64)> = bare
        .into_iter()
        .map(|(s, at)| (s, at.duration_since(started).as_secs_f64()))
        .collect();
    let (measured, bare_rate) = rate(&bare).ok_or_else(|| failed("the bare loop is too short"))?;

    // The gossiping peer, beside a peer that only gossips.
    let data_dir = trainer_options.data_dir.clone();
    let describe = trainer_options.workload.describe();
    let mut trainer = PeerHandle::spawn(trainer_options);
    let seed = trainer.bound_addr().await;
    let mut listener_options = options("listener", seed)?;
    listener_options.core.lifecycle.min_peers = None;
    let listener = PeerHandle::spawn(listener_options);
    let outcome = trainer
        .wait()
        .await
        .map_err(|e| RunError::peer("trainer", e))?;
    listener.request_stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    let text =
        std::fs::read_to_string(data_dir.join("metrics.jsonl")).map_err(|source| RunError::Io {
            what: "reading the gossiping peer's metrics.jsonl".into(),
            source,
        })?;
    let gossip: Vec<(u64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["lifecycle"] == "training")
        .filter_map(|v| Some((v["step"].as_u64()?, v["elapsed_seconds"].as_f64()?)))
        .collect();
    let (_, gossip_rate) =
        rate(&gossip).ok_or_else(|| failed("the gossiping peer's run is too short"))?;
    if outcome.steps < steps {
        return Err(failed("the gossiping peer stopped early"));
    }
    Ok(TrainingBench {
        workload: describe,
        steps: measured,
        bare_steps_per_second: bare_rate,
        gossip_steps_per_second: gossip_rate,
        ratio: gossip_rate / bare_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_runs_from_the_report_at_step_ten_to_the_last() {
        let points = [(5, 0.5), (10, 1.0), (20, 2.0), (30, 2.5)];
        assert_eq!(rate(&points), Some((20, 20.0 / 1.5)));
        assert_eq!(rate(&[(10, 1.0)]), None);
        assert_eq!(rate(&[]), None);
    }
}
