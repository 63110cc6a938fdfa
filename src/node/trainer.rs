//! The trainer thread: runs optimizer steps on the peer's shard, publishes deltas every H steps,
//! and folds in the deltas the core applied. It owns `work` (candle Vars) and a mirror of the
//! core's base; the core owns the exact base and the version vector.
//!
//! Publishing (`docs/ALGORITHM.md`, "Operations"): `d = w · (work − base)`, `base += d`, `work = base`, with
//! `w = 1/n` and n the live members at that moment. Receiving: `base += d`, `work += d`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::data::{epoch_order, Dataset};
use crate::model::{self, ModelSpec, Trainer};

/// What the trainer needs to run.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    /// The model shape.
    pub spec: ModelSpec,
    /// Passes over the shard.
    pub epochs: u32,
    /// Samples per step.
    pub batch_size: usize,
    /// Effective learning rate (after scaling by the number of peers).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Steps between published deltas (H).
    pub publish_every: u64,
    /// Steps between test evaluations of the base (0: never during training).
    pub eval_every: u64,
    /// Seed of the batch order.
    pub order_seed: u64,
    /// Steps already done before a restart: the loop skips that many batches (their samples
    /// count as processed) so a resumed peer finishes its budget instead of starting over.
    pub start_step: u64,
    /// Stop training after this long even if epochs remain.
    pub max_train_time: Option<Duration>,
    /// Straggler factor ≥ 1: after each step the thread sleeps (factor − 1) × that step's
    /// measured wall time (folding in received deltas, gathering the batch, the optimizer
    /// step), so steps take `slowdown` times as long. 1: no sleep.
    pub slowdown: f64,
    /// When set, an evaluation point does not evaluate: it writes the base to this directory
    /// ([`write_eval_snapshot`]) and reports the file in [`TrainProgress::eval_snapshot`], to be
    /// evaluated after the run ([`evaluate_snapshot`]). Measurement then costs the run no
    /// compute (the lab uses this). None: evaluate in place.
    pub eval_snapshots: Option<PathBuf>,
    /// Flow control: while this many of the peer's own deltas are still unacknowledged by some
    /// live member (the shell's count), a due publish is put off and training goes on; the next
    /// step tries again, and the delta then carries every step since the last one. So a slow or
    /// lossy network first stretches the publish period instead of queueing deltas that go
    /// stale. Once a delta would carry [`MAX_COALESCE`] × `publish_every` steps, the trainer
    /// stops stepping until the window opens (back-pressure from its own outbox, like a full
    /// socket buffer): a peer never trains further ahead of what its peers have received, which
    /// keeps the merged deltas from going stale and overshooting together (asynchronous SGD's
    /// staleness problem). It waits for transport acknowledgements only, never for another
    /// peer's training; members under suspicion or dead are not waited for, and a send counts
    /// as done once it fails or times out. 0: no limit, no waiting.
    pub max_unacked_deltas: usize,
    /// How published deltas are quantized ([`model::Compression`], with error feedback).
    pub delta_compression: model::Compression,
    /// Run the training thread at the lowest priority, so the protocol and network tasks get
    /// the CPU first when it is short: probes are answered and deltas sent while training
    /// takes what is left.
    pub low_priority: bool,
}

/// Flow control puts a publish off at most until the delta carries this many times
/// `publish_every` steps; past that the trainer waits for the network before it publishes.
pub const MAX_COALESCE: u64 = 4;

/// Gives the calling thread the lowest priority of its scheduling policy when `low` (on Linux,
/// niceness 19 under the default policy); a refusal is logged, not fatal.
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

/// Writes `base` to `dir/step-NNNNNNNN.f32` (little-endian `f32`s, no header; the directory is
/// created if needed) and returns the path. Not fsync'd: these files only live for the run.
///
/// # Errors
/// The I/O error, if the directory or file cannot be written.
pub fn write_eval_snapshot(dir: &Path, step: u64, base: &[f32]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("step-{step:08}.f32"));
    let mut bytes = Vec::with_capacity(base.len() * 4);
    for v in base {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Evaluates a file written by [`write_eval_snapshot`]: test accuracy in [0, 1] of the model
/// `spec` with those parameters on `test`.
///
/// # Errors
/// [`model::ModelError`] if the file cannot be read, its length is not `4 × spec.param_count()`
/// bytes, or evaluation fails.
pub fn evaluate_snapshot(
    spec: &ModelSpec,
    path: &Path,
    test: &Dataset,
) -> Result<f32, model::ModelError> {
    let bytes = std::fs::read(path).map_err(|source| model::ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() != spec.param_count() * 4 {
        return Err(model::ModelError::LengthMismatch {
            what: "evaluation snapshot",
            expected: spec.param_count() * 4,
            actual: bytes.len(),
        });
    }
    let base: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    model::evaluate(spec, &base, &test.images, &test.labels)
}

/// Commands from the node to the trainer thread.
#[derive(Debug)]
pub enum ToTrainer {
    /// The core applied a delta from another peer: add it to base and work.
    ApplyDelta(Arc<[f32]>),
    /// The core replaced its base by a snapshot: keep local progress on top of the new base.
    ReplaceBase(Arc<[f32]>),
}

/// Reports from the trainer thread to the node.
#[derive(Debug)]
pub enum FromTrainer {
    /// A local delta to publish: values already scaled by `weight`.
    Publish {
        /// `w = 1/n`.
        weight: f32,
        /// `w · (work − base)`, flat.
        values: Vec<f32>,
    },
    /// Progress after a step.
    Progress(TrainProgress),
    /// The budget is spent and the last delta published.
    Finished(TrainProgress),
    /// Training failed; the error says why.
    Failed(model::ModelError),
}

/// Counters of the training loop.
#[derive(Clone, Debug, Default)]
pub struct TrainProgress {
    /// Optimizer steps taken.
    pub step: u64,
    /// Samples processed.
    pub samples: u64,
    /// Current epoch (0-based).
    pub epoch: u32,
    /// Mean training loss over the steps since the last report.
    pub train_loss: Option<f32>,
    /// Test accuracy of the base, when evaluated at this step.
    pub test_accuracy: Option<f32>,
    /// With [`TrainPlan::eval_snapshots`]: the file holding the base at this evaluation point,
    /// to be evaluated after the run (then `test_accuracy` is None).
    pub eval_snapshot: Option<PathBuf>,
    /// Mean wall time of an optimizer step since the last report (seconds).
    pub step_seconds: f64,
    /// Wall time spent waiting for the network by flow control so far ([`MAX_COALESCE`]),
    /// in seconds.
    pub flow_control_wait_seconds: f64,
}

/// Counts the shell keeps current for the trainer thread.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Live members: read at every publish for `w = 1/n`.
    pub live: Arc<AtomicUsize>,
    /// Own deltas not yet acknowledged by every live member ([`TrainPlan::max_unacked_deltas`]).
    pub unacked: Arc<AtomicUsize>,
}

/// A running trainer thread.
pub struct TrainerHandle {
    /// Commands to the thread.
    pub commands: mpsc::UnboundedSender<ToTrainer>,
    /// Set to stop the thread early (graceful leave).
    pub stop: Arc<AtomicBool>,
    /// While set the thread sleeps between steps (an operator's pause).
    pub pause: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TrainerHandle {
    /// Starts training on `shard` from `base`, reading `gauges` as the shell updates them.
    pub fn spawn(
        plan: TrainPlan,
        shard: Arc<Dataset>,
        test: Arc<Dataset>,
        base: Vec<f32>,
        gauges: Gauges,
        reports: mpsc::UnboundedSender<FromTrainer>,
        name: String,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let pause = Arc::new(AtomicBool::new(false));
        let pause_flag = pause.clone();
        let thread = std::thread::Builder::new()
            .name(format!("train-{name}"))
            .spawn(move || {
                lower_current_thread_priority(plan.low_priority);
                let mut run = TrainLoop {
                    quantizer: model::Quantizer::new(plan.delta_compression),
                    plan,
                    shard,
                    test,
                    live: gauges.live,
                    unacked: gauges.unacked,
                    reports: reports.clone(),
                    commands: rx,
                    stop: stop_flag,
                    pause: pause_flag,
                };
                if let Err(e) = run.run(base) {
                    let _ = reports.send(FromTrainer::Failed(e));
                }
            })?;
        Ok(Self {
            commands: tx,
            stop,
            pause,
            thread: Some(thread),
        })
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TrainerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct TrainLoop {
    plan: TrainPlan,
    shard: Arc<Dataset>,
    test: Arc<Dataset>,
    live: Arc<AtomicUsize>,
    /// Own deltas not yet acknowledged by every live member (kept by the shell).
    unacked: Arc<AtomicUsize>,
    reports: mpsc::UnboundedSender<FromTrainer>,
    commands: mpsc::UnboundedReceiver<ToTrainer>,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    quantizer: model::Quantizer,
}

impl TrainLoop {
    fn run(&mut self, base: Vec<f32>) -> Result<(), model::ModelError> {
        let mut trainer =
            Trainer::new(&self.plan.spec, &base, self.plan.lr, self.plan.weight_decay)?;
        let mut base = base;
        let mut progress = TrainProgress::default();
        let mut loss_sum = 0.0f64;
        let mut loss_count = 0u32;
        let mut step_time = Duration::ZERO;
        let mut since_publish = 0u64;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let batch = self.plan.batch_size.max(1);
        let started_training = Instant::now();
        'epochs: for epoch in 0..self.plan.epochs {
            progress.epoch = epoch;
            let order = epoch_order(self.shard.len(), u64::from(epoch), self.plan.order_seed);
            for chunk in order.chunks_exact(batch) {
                while self.pause.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if self.stop.load(Ordering::SeqCst)
                    || self
                        .plan
                        .max_train_time
                        .is_some_and(|limit| started_training.elapsed() >= limit)
                {
                    break 'epochs;
                }
                if progress.step < self.plan.start_step {
                    progress.step += 1;
                    progress.samples += chunk.len() as u64;
                    continue;
                }
                let iteration = Instant::now();
                self.apply_commands(&mut trainer, &mut base)?;
                self.shard.gather_batch(chunk, &mut images, &mut labels);
                let started = Instant::now();
                let loss = trainer.train_step(&images, &labels)?;
                // A diverged run stops here, with an error naming the learning rate, instead of
                // publishing non-finite deltas the core would refuse one by one.
                trainer.check_loss(progress.step + 1, loss)?;
                step_time += started.elapsed();
                if self.plan.slowdown > 1.0 && self.plan.slowdown.is_finite() {
                    // The whole iteration (received deltas folded in, batch, step) is stretched.
                    std::thread::sleep(iteration.elapsed().mul_f64(self.plan.slowdown - 1.0));
                }
                progress.step += 1;
                progress.samples += chunk.len() as u64;
                since_publish += 1;
                loss_sum += f64::from(loss);
                loss_count += 1;
                // A publish is put off at most until it would carry MAX_COALESCE × H steps, so a
                // delta stays within a small multiple of the usual size (the norm check compares
                // it with recent deltas).
                if since_publish >= self.plan.publish_every {
                    let overdue = since_publish >= MAX_COALESCE * self.plan.publish_every.max(1);
                    if overdue && !self.network_ready() {
                        let waited = Instant::now();
                        self.wait_for_network();
                        progress.flow_control_wait_seconds += waited.elapsed().as_secs_f64();
                        // Deltas that arrived meanwhile go into the base before it is published.
                        self.apply_commands(&mut trainer, &mut base)?;
                    }
                    if overdue || self.network_ready() {
                        self.publish(&mut trainer, &mut base, progress.step)?;
                        since_publish = 0;
                    }
                }
                let evaluate =
                    self.plan.eval_every > 0 && progress.step % self.plan.eval_every == 0;
                if evaluate || progress.step % 10 == 0 {
                    progress.train_loss = Some((loss_sum / f64::from(loss_count.max(1))) as f32);
                    progress.step_seconds = step_time.as_secs_f64() / f64::from(loss_count.max(1));
                    progress.test_accuracy = None;
                    progress.eval_snapshot = None;
                    if evaluate {
                        if let Some(dir) = &self.plan.eval_snapshots {
                            match write_eval_snapshot(dir, progress.step, &base) {
                                Ok(path) => progress.eval_snapshot = Some(path),
                                Err(e) => tracing::warn!(
                                    "cannot write an evaluation snapshot in {}: {e}",
                                    dir.display()
                                ),
                            }
                        } else {
                            progress.test_accuracy = Some(model::evaluate(
                                &self.plan.spec,
                                &base,
                                &self.test.images,
                                &self.test.labels,
                            )?);
                        }
                    }
                    loss_sum = 0.0;
                    loss_count = 0;
                    step_time = Duration::ZERO;
                    let _ = self.reports.send(FromTrainer::Progress(progress.clone()));
                }
            }
        }
        self.apply_commands(&mut trainer, &mut base)?;
        if since_publish > 0 {
            self.publish(&mut trainer, &mut base, progress.step)?;
        }
        progress.test_accuracy = None;
        progress.eval_snapshot = None;
        let _ = self.reports.send(FromTrainer::Finished(progress));
        Ok(())
    }

    /// Flow control ([`TrainPlan::max_unacked_deltas`]): whether a due publish may go out now.
    fn network_ready(&self) -> bool {
        let window = self.plan.max_unacked_deltas;
        window == 0 || self.unacked.load(Ordering::SeqCst) < window
    }

    /// Blocks until flow control lets a publish out or the trainer is told to stop.
    fn wait_for_network(&self) {
        while !self.network_ready() && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn apply_commands(
        &mut self,
        trainer: &mut Trainer,
        base: &mut [f32],
    ) -> Result<(), model::ModelError> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                ToTrainer::ApplyDelta(delta) => {
                    model::axpy(base, 1.0, &delta)?;
                    trainer.add_to_work(&delta)?;
                }
                ToTrainer::ReplaceBase(new_base) => {
                    // Keep the local progress since the last publish on top of the new base.
                    let mut work = trainer.work()?;
                    model::axpy(&mut work, -1.0, base)?;
                    model::axpy(&mut work, 1.0, &new_base)?;
                    base.copy_from_slice(&new_base);
                    trainer.set_work(&work)?;
                }
            }
        }
        Ok(())
    }

    fn publish(
        &mut self,
        trainer: &mut Trainer,
        base: &mut [f32],
        step: u64,
    ) -> Result<(), model::ModelError> {
        let n = self.live.load(Ordering::SeqCst).max(1);
        let weight = 1.0 / n as f32;
        let work = trainer.work()?;
        let mut delta = model::scaled_difference(&work, base, weight)?;
        trainer.check_finite(step, "the local update", &delta)?;
        // The quantized delta is what every peer adds, this one included; what rounding left
        // out goes into the next delta.
        self.quantizer.quantize(&mut delta);
        model::axpy(base, 1.0, &delta)?;
        trainer.set_work(base)?;
        let _ = self.reports.send(FromTrainer::Publish {
            weight,
            values: delta,
        });
        Ok(())
    }
}
