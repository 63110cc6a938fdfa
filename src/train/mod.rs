//! The one training loop of rumor: epochs over a shard in a seeded order, batches, optimizer
//! steps, periodic reports with test evaluation (in place or deferred to files), the straggler
//! slowdown, pause and stop. The gossip peer ([`crate::node::trainer`]), the barrier baseline
//! ([`crate::sync`]) and the centralized baseline ([`crate::run`]) differ only in what happens
//! around a step — fold in received deltas and publish one, meet the others at a barrier, or
//! nothing — and say so through [`TrainHooks`].

mod device;
mod eval;
mod outer;
mod plan;
mod publish;
mod schedule;
mod trainer;

use std::borrow::Cow;
use std::time::{Duration, Instant};

pub use device::DeviceChoice;
pub use eval::{evaluate_snapshot, write_eval_snapshot};
pub use outer::{OuterKind, OuterOptimizer, OuterSettings};
pub use plan::{StepPosition, TrainPlan, TrainProgress};
pub use publish::PublishPeriod;
pub use schedule::LrSchedule;
pub use trainer::Trainer;

use std::sync::Arc;

use crate::data::epoch_order;
use crate::model::ModelError;
use crate::workload;
use crate::workload::Workload;

/// Steps between progress reports when no evaluation falls due.
pub const REPORT_EVERY: u64 = 10;

/// What a mode does around the shared loop's steps. Every method but [`Self::after_step`],
/// [`Self::evaluated_params`] and [`Self::finish`] has a default that does nothing.
pub trait TrainHooks {
    /// The error the mode's hooks fail with; model failures of the loop convert into it.
    type Error: From<ModelError>;

    /// While true the loop sleeps before its next step (an operator's pause).
    fn paused(&self) -> bool {
        false
    }

    /// True once the loop should stop early (then [`Self::finish`] still runs).
    fn stop_requested(&self) -> bool {
        false
    }

    /// Runs before each step, inside the step's measured wall time (the gossip peer folds in
    /// the deltas its core applied).
    ///
    /// # Errors
    /// Whatever the mode fails with; the loop stops and returns it.
    fn before_step(&mut self, _trainer: &mut Trainer) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Runs after each step (and its slowdown), before the step's report: publish a delta,
    /// meet the others at a barrier, draw a progress bar. `progress` already counts the step.
    ///
    /// # Errors
    /// Whatever the mode fails with; the loop stops and returns it.
    fn after_step(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
        at: StepPosition,
    ) -> Result<(), Self::Error>;

    /// The parameters evaluated at an evaluation point (flat, in `ParamLayout` order): the
    /// shared base for the gossip peer, the last average for the barrier baseline, the trained
    /// parameters for the centralized baseline.
    ///
    /// # Errors
    /// Whatever reading them fails with.
    fn evaluated_params<'a>(&'a self, trainer: &Trainer) -> Result<Cow<'a, [f32]>, Self::Error>;

    /// Receives a report every [`REPORT_EVERY`] steps and at every evaluation point.
    fn report(&mut self, _progress: &TrainProgress, _at: StepPosition) {}

    /// Runs once when the budget is spent or the loop stopped early: publish the last delta,
    /// the final barrier, the final checks.
    ///
    /// # Errors
    /// Whatever the mode fails with.
    fn finish(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
    ) -> Result<(), Self::Error>;
}

/// Trains `workload`'s model from `initial` (flat parameters) on the workload's shard,
/// evaluating on its held-out data, with `hooks` around each step; returns the final counters
/// (no metrics: the caller evaluates the final model its own way).
///
/// Each epoch visits the shard in [`epoch_order`] (seeded by `plan.order_seed`) in batches of
/// `plan.batch_size`, dropping the last incomplete one; the loop ends after `plan.epochs` epochs
/// or `plan.max_steps` steps, whichever comes first. The learning rate follows
/// `plan.lr_schedule` over that many steps. The first `plan.start_step` batches are
/// skipped (a resumed peer). A step diverging to a non-finite loss fails with an error naming
/// the learning rate. Every [`REPORT_EVERY`] steps, and every `plan.eval_every` steps with an
/// evaluation (or a file, with `plan.eval_snapshots`), [`TrainHooks::report`] receives the mean
/// loss and step time since the last report.
///
/// # Errors
/// [`ModelError`] (converted) when the trainer cannot be built, a step fails or diverges, or
/// evaluation fails; whatever a hook returns.
pub fn run_training<H: TrainHooks>(
    plan: &TrainPlan,
    workload: &Arc<dyn Workload>,
    initial: &[f32],
    hooks: &mut H,
) -> Result<TrainProgress, H::Error> {
    let device = plan.device.open()?;
    let mut trainer = Trainer::with_device(
        workload.clone(),
        initial,
        plan.lr,
        plan.weight_decay,
        device,
    )?;
    let examples = workload.train_examples();
    let total_steps = plan.total_steps(examples);
    let mut progress = TrainProgress::default();
    let mut loss_sum = 0.0f64;
    let mut loss_count = 0u32;
    let mut step_time = Duration::ZERO;
    let batch = plan.batch_size.max(1);
    let started_training = Instant::now();
    'epochs: for epoch in 0..plan.epochs {
        progress.epoch = epoch;
        let order = epoch_order(examples, u64::from(epoch), plan.order_seed);
        let mut epoch_loss_sum = 0.0f64;
        let mut epoch_steps = 0usize;
        for (index, chunk) in order.chunks_exact(batch).enumerate() {
            while hooks.paused() && !hooks.stop_requested() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if hooks.stop_requested()
                || progress.step >= total_steps
                || plan
                    .max_train_time
                    .is_some_and(|limit| started_training.elapsed() >= limit)
            {
                break 'epochs;
            }
            if progress.step < plan.start_step {
                progress.step += 1;
                progress.samples += chunk.len() as u64 * workload.units_per_example();
                continue;
            }
            let iteration = Instant::now();
            hooks.before_step(&mut trainer)?;
            if let Some(lr) = plan.lr_schedule.lr_at(plan.lr, progress.step, total_steps) {
                trainer.set_learning_rate(lr);
            }
            let step_started = Instant::now();
            let (loss, units) = trainer.train_step(chunk)?;
            // A diverged run stops here, with an error naming the learning rate, instead of
            // sending non-finite values the others would refuse.
            trainer.check_loss(progress.step + 1, loss)?;
            step_time += step_started.elapsed();
            if plan.slowdown > 1.0 && plan.slowdown.is_finite() {
                // The whole iteration (received deltas folded in, batch, step) is stretched.
                std::thread::sleep(iteration.elapsed().mul_f64(plan.slowdown - 1.0));
            }
            progress.step += 1;
            progress.samples += units;
            loss_sum += f64::from(loss);
            loss_count += 1;
            epoch_loss_sum += f64::from(loss);
            epoch_steps += 1;
            let at = StepPosition {
                epoch,
                batch: index + 1,
                epoch_mean_loss: epoch_loss_sum / epoch_steps as f64,
            };
            hooks.after_step(&mut trainer, &mut progress, at)?;
            let evaluate = plan.eval_every > 0 && progress.step % plan.eval_every == 0;
            if evaluate || progress.step % REPORT_EVERY == 0 {
                progress.train_loss = Some((loss_sum / f64::from(loss_count.max(1))) as f32);
                progress.step_seconds = step_time.as_secs_f64() / f64::from(loss_count.max(1));
                progress.metrics = None;
                progress.eval_snapshot = None;
                if evaluate {
                    evaluate_now(plan, &trainer, hooks, &mut progress)?;
                }
                loss_sum = 0.0;
                loss_count = 0;
                step_time = Duration::ZERO;
                hooks.report(&progress, at);
            }
        }
    }
    hooks.finish(&mut trainer, &mut progress)?;
    progress.metrics = None;
    progress.eval_snapshot = None;
    Ok(progress)
}

/// One evaluation point: the held-out metrics of the hooks' evaluated parameters, or, with
/// `plan.eval_snapshots`, their file (a file that cannot be written is logged and skipped).
fn evaluate_now<H: TrainHooks>(
    plan: &TrainPlan,
    trainer: &Trainer,
    hooks: &H,
    progress: &mut TrainProgress,
) -> Result<(), H::Error> {
    let params = hooks.evaluated_params(trainer)?;
    if let Some(dir) = &plan.eval_snapshots {
        match write_eval_snapshot(dir, progress.step, &params) {
            Ok(path) => progress.eval_snapshot = Some(path),
            Err(e) => tracing::warn!(
                "cannot write an evaluation snapshot in {}: {e}",
                dir.display()
            ),
        }
    } else {
        progress.metrics = Some(workload::evaluate(
            trainer.workload().as_ref(),
            trainer.layout(),
            &params,
        )?);
    }
    Ok(())
}

/// Gives the calling thread the lowest priority of its scheduling policy when `low` (on Linux,
/// niceness 19 under the default policy); a refusal is logged, not fatal. Training threads call
/// it first ([`TrainPlan::low_priority`]).
pub fn lower_current_thread_priority(low: bool) {
    if !low {
        return;
    }
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::debug!("cannot lower the training thread's priority: {e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;

    /// Counts what the loop asks of its hooks.
    #[derive(Default)]
    struct Counting {
        before: u64,
        after: u64,
        reports: Vec<(u64, bool)>,
        finished: u64,
    }

    impl TrainHooks for Counting {
        type Error = ModelError;

        fn before_step(&mut self, _trainer: &mut Trainer) -> Result<(), ModelError> {
            self.before += 1;
            Ok(())
        }

        fn after_step(
            &mut self,
            _trainer: &mut Trainer,
            progress: &mut TrainProgress,
            _at: StepPosition,
        ) -> Result<(), ModelError> {
            self.after += 1;
            assert_eq!(progress.step, self.after + 3, "the step is counted first");
            Ok(())
        }

        fn evaluated_params<'a>(&'a self, trainer: &Trainer) -> Result<Cow<'a, [f32]>, ModelError> {
            Ok(Cow::Owned(trainer.work()?))
        }

        fn report(&mut self, progress: &TrainProgress, _at: StepPosition) {
            self.reports
                .push((progress.step, progress.metrics.is_some()));
        }

        fn finish(
            &mut self,
            _trainer: &mut Trainer,
            _progress: &mut TrainProgress,
        ) -> Result<(), ModelError> {
            self.finished += 1;
            Ok(())
        }
    }

    #[test]
    fn the_loop_skips_resumed_steps_reports_every_ten_and_evaluates_when_due() {
        let (train, test) = crate::data::synthetic::generate(3, 256, 64);
        let spec = ModelSpec {
            input: train.dim,
            hidden: vec![8],
            classes: train.classes,
        };
        let workload: Arc<dyn Workload> = Arc::new(crate::workload::image::ImageClassification {
            model: crate::workload::image::ImageModel::Mlp(spec),
            dataset: "synthetic".into(),
            train: Arc::new(train),
            test: Arc::new(test),
            epoch_examples: None,
        });
        let plan = TrainPlan {
            epochs: 2,
            max_steps: None,
            lr_schedule: LrSchedule::Constant,
            device: DeviceChoice::Cpu,
            batch_size: 16,
            lr: 0.01,
            weight_decay: 0.0,
            publish_every: PublishPeriod::Steps(4),
            outer: OuterSettings::default(),
            eval_every: 15,
            order_seed: 1,
            start_step: 3,
            max_train_time: None,
            slowdown: 1.0,
            eval_snapshots: None,
            max_unacked_deltas: 0,
            delta_compression: crate::model::Compression::None,
            low_priority: false,
            max_runtime_lag: std::time::Duration::ZERO,
            max_staleness: 0.0,
            max_phase_lead: 0,
            staleness_wait_limit: std::time::Duration::ZERO,
        };
        let (_, initial) = crate::workload::describe_params(workload.as_ref(), 7).unwrap();
        let mut hooks = Counting::default();
        let progress = run_training(&plan, &workload, &initial, &mut hooks).unwrap();
        // 2 epochs × 16 batches, the first 3 skipped (their samples still count).
        assert_eq!(progress.step, 32);
        assert_eq!(progress.samples, 32 * 16);
        assert_eq!((hooks.before, hooks.after, hooks.finished), (29, 29, 1));
        assert_eq!(
            hooks.reports,
            vec![(10, false), (15, true), (20, false), (30, true)]
        );
        assert!(progress.metrics.is_none());
    }
}
