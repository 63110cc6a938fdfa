//! The centralized baseline (`rumor up --mode centralized`): one model on all the training data
//! through the shared training loop, with a progress bar and evaluation lines instead of gossip.

use std::borrow::Cow;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::config::Config;
use crate::model::{self, ModelError};
use crate::train::Trainer;
use crate::train::{self, StepPosition, TrainHooks, TrainPlan, TrainProgress};
use crate::workload::describe_params;

use super::options::{budget, workload_for, RunData};
use super::summary::{accuracy_of, summarize, PeerSummary, RunSummary};
use super::RunError;

/// The centralized baseline: one model on all the training data, the same sample budget
/// (`epochs` passes over the whole set) and batch size, learning rate `up.centralized_lr`, the
/// batch order seeded by `train.rng_seed`. With `no_tui` (or no terminal) there is no progress
/// bar; evaluation lines are printed every `train.eval_every` steps either way.
///
/// # Errors
/// [`RunError::Model`] if training fails or diverges.
pub fn centralized(config: &Config, data: &RunData, no_tui: bool) -> Result<RunSummary, RunError> {
    let started = Instant::now();
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
        publish_every: 0,
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
        staleness_wait_limit: std::time::Duration::ZERO,
    };
    let total_steps = plan.total_steps(workload.train_examples());
    let mut hooks = ProgressHooks {
        bar: crate::ui::progress::bar(total_steps, "centralized", !no_tui),
        bars: crate::ui::progress::drawn(!no_tui),
        total_steps,
        started,
        params: Vec::new(),
    };
    let progress = train::run_training(&plan, &workload, &initial, &mut hooks)?;
    let metrics = crate::workload::evaluate(workload.as_ref(), &layout, &hooks.params)?;
    let peer = PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: "centralized".into(),
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
