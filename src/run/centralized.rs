//! The centralized baseline (`rumor up --mode centralized`): one model on all the training data
//! through the shared training loop, with a progress bar and evaluation lines instead of gossip,
//! and the same `metrics.jsonl` as the other modes' peers (one "peer", `centralized`, no bytes).

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::config::Config;
use crate::model::{self, ModelError};
use crate::node::{BaselineLine, MetricsFile};
use crate::train::Trainer;
use crate::train::{self, StepPosition, TrainHooks, TrainPlan, TrainProgress};
use crate::workload::describe_params;

use super::options::{budget, workload_for, RunData};
use super::summary::{accuracy_of, summarize, PeerSummary, RunSummary};
use super::{io_err, RunError};

/// The name of the centralized run's one "peer": in its summary, its `metrics.jsonl` lines and
/// its folder under `up`'s output dir.
pub const CENTRALIZED_PEER: &str = "centralized";

/// The centralized baseline: one model on all the training data, the same sample budget
/// (`epochs` passes over the whole set) and batch size, learning rate `up.centralized_lr`, the
/// batch order seeded by `train.rng_seed`. With `no_tui` (or no terminal) there is no progress
/// bar; evaluation lines are printed every `train.eval_every` steps either way.
///
/// With `data_dir`, it writes `data_dir/metrics.jsonl` as a barrier peer does: a line per
/// progress report and one for the final model (`lifecycle` `left`), peer
/// [`CENTRALIZED_PEER`], `bytes_sent` and `bytes_received` 0.
///
/// # Errors
/// [`RunError::Io`] if `data_dir` cannot be created; [`RunError::Model`] if training fails or
/// diverges.
pub fn centralized(
    config: &Config,
    data: &RunData,
    no_tui: bool,
    data_dir: Option<&Path>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let metrics_file = match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            Some(MetricsFile::open(&dir.join("metrics.jsonl")))
        }
        None => None,
    };
    let t = &config.train;
    let lr = config.up.centralized_lr;
    let workload = workload_for(config, data, crate::data::ShardSpec::WHOLE)?;
    let (layout, initial) = describe_params(workload.as_ref(), t.rng_seed)?;
    let (epochs, max_steps) = budget(config, workload.as_ref(), 1);
    let plan = TrainPlan {
        epochs,
        max_steps,
        lr_schedule: t.lr_schedule,
        device: t.device,
        batch_size: t.batch_size,
        lr,
        weight_decay: t.weight_decay,
        publish_every: crate::train::PublishPeriod::Steps(1),
        outer: crate::train::OuterSettings::default(),
        eval_every: t.eval_every,
        order_seed: t.rng_seed,
        start_step: 0,
        max_train_time: None,
        slowdown: 1.0,
        eval_snapshots: None,
        max_unacked_deltas: 0,
        delta_compression: model::Compression::None,
        low_priority: false,
        max_runtime_lag: std::time::Duration::ZERO,
        max_staleness: 0.0,
        max_phase_lead: 0,
        staleness_wait_limit: std::time::Duration::ZERO,
    };
    let total_steps = plan.total_steps(workload.train_examples());
    let mut hooks = ProgressHooks {
        bar: crate::ui::progress::bar(total_steps, "centralized", !no_tui),
        bars: crate::ui::progress::drawn(!no_tui),
        total_steps,
        started,
        params: Vec::new(),
        metrics: metrics_file,
    };
    let mut progress = train::run_training(&plan, &workload, &initial, &mut hooks)?;
    let metrics = crate::workload::evaluate(workload.as_ref(), &layout, &hooks.params)?;
    // The last line is the final model's, as a barrier peer's is.
    progress.metrics = Some(metrics.clone());
    progress.train_loss = None;
    hooks.write_line("left", &progress);
    let peer = PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: CENTRALIZED_PEER.into(),
        test_accuracy: accuracy_of(&metrics),
        metrics,
        version: 0,
        applied: 0,
        bytes_sent: 0,
        bytes_received: 0,
        steps: progress.step,
        samples: progress.samples,
        drained: true,
        drain_seconds: None,
        drain_ended_unix: None,
        parameters: hooks.params.len() as u64,
    };
    Ok(summarize(
        "centralized",
        data.name(),
        vec![peer],
        0.0,
        started.elapsed(),
        lr,
        t.epochs,
    ))
}

/// The centralized side of the shared loop: a progress bar and evaluation lines.
struct ProgressHooks {
    /// The bar (hidden without a terminal).
    bar: ProgressBar,
    /// Whether the bar is drawn (then lines go above it).
    bars: bool,
    /// Optimizer steps of the whole budget.
    total_steps: u64,
    /// Start of the run.
    started: Instant,
    /// The trained parameters at the end (flat).
    params: Vec<f32>,
    /// Where the metrics lines go, if anywhere.
    metrics: Option<MetricsFile>,
}

impl ProgressHooks {
    /// Appends the line of `progress` to `metrics.jsonl`, if written.
    fn write_line(&mut self, lifecycle: &'static str, progress: &TrainProgress) {
        if let Some(file) = self.metrics.as_mut() {
            file.append(&BaselineLine::new(
                CENTRALIZED_PEER,
                "centralized",
                lifecycle,
                self.started,
                progress,
            ));
        }
    }
}

impl TrainHooks for ProgressHooks {
    type Error = ModelError;

    fn after_step(
        &mut self,
        _trainer: &mut Trainer,
        progress: &mut TrainProgress,
        at: StepPosition,
    ) -> Result<(), ModelError> {
        self.bar.inc(1);
        if progress.step % 20 == 0 {
            self.bar.set_message(format!(
                "epoch {} loss {:.4}",
                at.epoch + 1,
                at.epoch_mean_loss
            ));
        }
        Ok(())
    }

    fn evaluated_params<'a>(&'a self, trainer: &Trainer) -> Result<Cow<'a, [f32]>, ModelError> {
        Ok(Cow::Owned(trainer.work()?))
    }

    fn report(&mut self, progress: &TrainProgress, at: StepPosition) {
        self.write_line("training", progress);
        let Some(metrics) = &progress.metrics else {
            return;
        };
        let line = format!(
            "[{:>6.1}s] centralized epoch {} step {}/{} loss {:.4} {metrics}",
            self.started.elapsed().as_secs_f64(),
            at.epoch + 1,
            progress.step,
            self.total_steps,
            at.epoch_mean_loss,
        );
        if self.bars {
            self.bar.println(line);
        } else {
            println!("{line}");
        }
    }

    fn finish(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
    ) -> Result<(), ModelError> {
        self.bar.finish_and_clear();
        let params = trainer.work()?;
        trainer.check_finite(progress.step, "the model parameters", &params)?;
        self.params = params;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The centralized run writes the `metrics.jsonl` a barrier peer writes: one peer,
    /// `centralized`, no bytes, a line per report with evaluations where due, and a last line
    /// with the final model's metrics.
    #[test]
    fn the_centralized_run_writes_metrics_lines_like_a_peer() {
        let (train, test) = crate::data::synthetic::generate(3, 640, 64);
        let data = RunData::from(crate::data::TrainTest {
            train,
            test,
            name: "synthetic".into(),
            description: "640 synthetic rows".into(),
        });
        let mut config = Config::default();
        config.train.epochs = 1;
        config.train.batch_size = 32;
        config.train.eval_every = 10;
        config.train.threads = 1;
        let dir = tempfile::tempdir().unwrap();
        let peer_dir = dir.path().join(CENTRALIZED_PEER);
        let summary = centralized(&config, &data, true, Some(&peer_dir)).unwrap();
        assert_eq!(summary.peers[0].name, CENTRALIZED_PEER);
        assert_eq!(summary.parameters, 784 * 128 + 128 + 128 * 10 + 10);
        let text = std::fs::read_to_string(peer_dir.join("metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // 640 / 32 = 20 steps: reports (with an evaluation) at 10 and 20, then the final line.
        assert_eq!(lines.len(), 3, "{text}");
        for l in &lines {
            assert_eq!(l["peer"], CENTRALIZED_PEER, "{l}");
            assert_eq!(l["mode"], "centralized", "{l}");
            assert_eq!(l["bytes_sent"], 0, "{l}");
            assert!(l["test_accuracy"].is_number(), "{l}");
            assert!(l["time"].as_f64().unwrap() > l["elapsed_seconds"].as_f64().unwrap());
        }
        assert_eq!(lines[1]["step"], 20);
        assert_eq!(lines[2]["lifecycle"], "left");
        assert_eq!(lines[2]["step"], 20);
        let last = lines[2]["test_accuracy"].as_f64().unwrap();
        assert!((last - f64::from(summary.peers[0].test_accuracy)).abs() < 1e-6);
    }
}
