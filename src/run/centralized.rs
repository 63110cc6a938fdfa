//! The centralized baseline (`rumor up --mode centralized`): one model on all the training data
//! through the shared training loop, with a progress bar and evaluation lines instead of gossip.

use std::borrow::Cow;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::config::Config;
use crate::data::TrainTest;
use crate::model::{self, ModelError, Trainer};
use crate::train::{self, StepPosition, TrainHooks, TrainPlan, TrainProgress};

use super::summary::{summarize, PeerSummary, RunSummary};
use super::RunError;

/// The centralized baseline: one model on all the training data, the same sample budget
/// (`epochs` passes over the whole set) and batch size, learning rate `up.centralized_lr`, the
/// batch order seeded by `train.rng_seed`. With `no_tui` (or no terminal) there is no progress
/// bar; evaluation lines are printed every `train.eval_every` steps either way.
///
/// # Errors
/// [`RunError::Model`] if training fails or diverges.
pub fn centralized(
    config: &Config,
    data: &TrainTest,
    no_tui: bool,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let spec = &config.train.model;
    let t = &config.train;
    let lr = config.up.centralized_lr;
    let initial = model::init_params(spec, t.rng_seed);
    let plan = TrainPlan {
        spec: spec.clone(),
        epochs: t.epochs,
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
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size.max(1));
    let mut hooks = ProgressHooks {
        bar: crate::ui::progress::bar(
            steps_per_epoch as u64 * u64::from(t.epochs),
            "centralized",
            !no_tui,
        ),
        bars: crate::ui::progress::drawn(!no_tui),
        epochs: t.epochs,
        steps_per_epoch,
        started,
        params: Vec::new(),
    };
    let progress = train::run_training(&plan, &data.train, &data.test, &initial, &mut hooks)?;
    let acc = model::evaluate(spec, &hooks.params, &data.test.images, &data.test.labels)?;
    let peer = PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: "centralized".into(),
        test_accuracy: acc,
        version: 0,
        applied: 0,
        bytes_sent: 0,
        bytes_received: 0,
        steps: progress.step,
        samples: progress.samples,
        drained: true,
        drain_seconds: None,
    };
    Ok(summarize(
        "centralized",
        &data.name,
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
    /// Epochs of the budget.
    epochs: u32,
    /// Steps per epoch as the bar counts them.
    steps_per_epoch: usize,
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
                "epoch {}/{} loss {:.4}",
                at.epoch + 1,
                self.epochs,
                at.epoch_mean_loss
            ));
        }
        Ok(())
    }

    fn evaluated_params<'a>(&'a self, trainer: &Trainer) -> Result<Cow<'a, [f32]>, ModelError> {
        Ok(Cow::Owned(trainer.work()?))
    }

    fn report(&mut self, progress: &TrainProgress, at: StepPosition) {
        let Some(acc) = progress.test_accuracy else {
            return;
        };
        let line = format!(
            "[{:>6.1}s] centralized epoch {}/{} step {}/{} loss {:.4} test accuracy {:.2}%",
            self.started.elapsed().as_secs_f64(),
            at.epoch + 1,
            self.epochs,
            at.batch,
            self.steps_per_epoch,
            at.epoch_mean_loss,
            acc * 100.0
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
