//! One sync peer's trainer thread: the shared training loop ([`crate::train`]) with a barrier
//! every H steps (send this round's update, wait for the average) and a final barrier with the
//! whole model.

use std::borrow::Cow;

use tokio::sync::mpsc;

use std::sync::Arc;

use crate::model::{self, Quantizer};
use crate::train::Trainer;
use crate::train::{self, StepPosition, TrainHooks, TrainPlan, TrainProgress};
use crate::workload::Workload;

use super::SyncError;

/// Requests from the trainer thread.
pub(super) enum ToNet {
    /// Average these values (this round's update, or the final model when `last`) with the
    /// others of round `round`; answer the mean on `reply`.
    Round {
        round: u64,
        last: bool,
        values: Vec<f32>,
        reply: std::sync::mpsc::Sender<Vec<f32>>,
    },
    /// A progress report, for a metrics line.
    Progress(TrainProgress),
    /// Training ended (steps, samples) or failed.
    Done(Result<(u64, u64), String>),
}

/// Trains `workload` from `initial` with a barrier every `plan.publish_every` steps and a final
/// one; returns (steps, samples). The barrier baseline runs its whole budget:
/// `plan.max_train_time` does not apply.
///
/// # Errors
/// [`SyncError::Model`] if training fails; [`SyncError::Trainer`] if the network task ended.
pub(super) fn train_with_barriers(
    plan: &TrainPlan,
    workload: &Arc<dyn Workload>,
    initial: &[f32],
    to_net: &mpsc::UnboundedSender<ToNet>,
) -> Result<(u64, u64), SyncError> {
    let plan = TrainPlan {
        max_train_time: None,
        ..plan.clone()
    };
    let publish_every = plan.publish_every.steps().ok_or_else(|| {
        SyncError::Trainer(format!(
            "the barrier baseline meets every H steps: train.publish_every must be a number of \
             steps, not {}",
            plan.publish_every
        ))
    })?;
    let mut hooks = BarrierHooks {
        to_net,
        base: initial.to_vec(),
        quantizer: Quantizer::new(plan.delta_compression),
        outer: crate::train::OuterOptimizer::new(plan.outer),
        publish_every,
        since_barrier: 0,
        round: 0,
    };
    let progress = train::run_training(&plan, workload, initial, &mut hooks)?;
    Ok((progress.step, progress.samples))
}

/// The barrier side of the shared loop.
struct BarrierHooks<'a> {
    /// Requests to the network task.
    to_net: &'a mpsc::UnboundedSender<ToNet>,
    /// The last average (θ₀ before the first round), flat.
    base: Vec<f32>,
    /// Quantizes round updates with error feedback.
    quantizer: Quantizer,
    /// The outer optimizer applied to each round's mean update (DiLoCo's outer step; every
    /// peer holds the same state, as every peer receives the same mean).
    outer: crate::train::OuterOptimizer,
    /// H: steps between barriers.
    publish_every: u64,
    /// Steps since the last barrier.
    since_barrier: u64,
    /// The next round's number, from 0.
    round: u64,
}

impl BarrierHooks<'_> {
    /// Sends this round's update (or, `last`, the whole model) and waits for the average, which
    /// becomes both the base and the trained parameters.
    fn barrier(&mut self, trainer: &mut Trainer, last: bool, step: u64) -> Result<(), SyncError> {
        let (reply, answer) = std::sync::mpsc::channel();
        let work = trainer.work()?;
        trainer.check_finite(step, "the model parameters", &work)?;
        let values = if last {
            work
        } else {
            let mut update = model::scaled_difference(&work, &self.base, 1.0)?;
            self.quantizer.quantize(&mut update);
            update
        };
        self.to_net
            .send(ToNet::Round {
                round: self.round,
                last,
                values,
                reply,
            })
            .map_err(|_| SyncError::Trainer("the network task ended".into()))?;
        let mean = answer
            .recv()
            .map_err(|_| SyncError::Trainer("the network task ended".into()))?;
        if last {
            self.base = mean;
        } else {
            let mut step = mean;
            self.outer.step(&mut step)?;
            model::axpy(&mut self.base, 1.0, &step)?;
        }
        trainer.set_work(&self.base)?;
        Ok(())
    }
}

impl TrainHooks for BarrierHooks<'_> {
    type Error = SyncError;

    fn after_step(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
        _at: StepPosition,
    ) -> Result<(), SyncError> {
        self.since_barrier += 1;
        if self.since_barrier >= self.publish_every {
            self.barrier(trainer, false, progress.step)?;
            self.round += 1;
            self.since_barrier = 0;
        }
        Ok(())
    }

    fn evaluated_params<'a>(&'a self, _trainer: &Trainer) -> Result<Cow<'a, [f32]>, SyncError> {
        Ok(Cow::Borrowed(&self.base))
    }

    fn report(&mut self, progress: &TrainProgress, _at: StepPosition) {
        let _ = self.to_net.send(ToNet::Progress(progress.clone()));
    }

    fn finish(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
    ) -> Result<(), SyncError> {
        self.barrier(trainer, true, progress.step)
    }
}
