//! The gossip peer's trainer thread: the shared training loop ([`crate::train`]) with the
//! gossip hooks — fold in the deltas the core applied before each step, publish a delta every H
//! steps (or every period of time) under flow control, through the outer optimizer. It owns `work` (candle Vars) and a mirror of the core's base; the
//! core owns the exact base and the version vector.
//!
//! Publishing (`docs/ALGORITHM.md`, "Operations"): `d = outer(w · (work − base))`, `base += d`,
//! `work = base`, with `w = 1/n`, n the live members at that moment and `outer` the peer's outer
//! optimizer ([`crate::train::OuterOptimizer`]; the identity by default). A delta whose norm is
//! above the core's bound for its own deltas ([`rumor_proto::Core::own_delta_norm_bound`]) is
//! scaled down to it before it is quantized. Receiving: `base += d`, `work += d`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::model;
use crate::train::{self, StepPosition, TrainHooks, Trainer};
pub use crate::train::{TrainPlan, TrainProgress};
use crate::workload::Workload;

/// Flow control puts a publish off at most until the delta carries this many times
/// `publish_every` steps; past that the trainer waits for the network before it publishes.
pub const MAX_COALESCE: u32 = 4;

/// The longest the trainer yields to a lagging runtime before one step: a runtime blocked on
/// something else (a slow disk write) never stops training for long.
const MAX_RUNTIME_WAIT_PER_STEP: Duration = Duration::from_millis(100);

/// Commands from the node to the trainer thread.
#[derive(Debug)]
pub enum ToTrainer {
    /// The core applied a delta from another peer: add it to base and work.
    ApplyDelta(Arc<[f32]>),
    /// The core replaced its base by a snapshot: keep local progress on top of the new base.
    ReplaceBase(Arc<[f32]>),
}

/// A local delta for the core to publish, already added to the trainer's base.
#[derive(Debug)]
pub struct LocalDelta {
    /// `w = 1/n`.
    pub weight: f32,
    /// `outer(w · (work − base))`, clipped and quantized, flat (P values).
    pub values: Vec<f32>,
    /// The L2 norm the delta had before it was scaled down to the core's bound for own deltas;
    /// `None` when it was within the bound.
    pub norm_before_clip: Option<f64>,
}

/// Reports from the trainer thread to the node.
#[derive(Debug)]
pub enum FromTrainer {
    /// A local delta to publish.
    Publish(LocalDelta),
    /// Progress after a step.
    Progress(TrainProgress),
    /// The budget is spent and the last delta published.
    Finished(TrainProgress),
    /// Training failed; the error says why.
    Failed(model::ModelError),
}

/// Counts the shell keeps current for the trainer thread.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Live members: read at every publish for `w = 1/n`.
    pub live: Arc<AtomicUsize>,
    /// Own deltas not yet acknowledged by every live member ([`TrainPlan::max_unacked_deltas`]).
    pub unacked: Arc<AtomicUsize>,
    /// How promptly the peer's async runtime runs ([`TrainPlan::max_runtime_lag`]); `None`:
    /// never wait for it.
    pub runtime: Option<super::runtime_lag::RuntimeLag>,
    /// Deltas live members published that are not applied here
    /// ([`rumor_proto::Core::unseen_deltas`], [`TrainPlan::max_staleness`]).
    pub unseen: Arc<std::sync::atomic::AtomicU64>,
    /// The phase clock ([`rumor_proto::Core::phase_lead`], [`TrainPlan::max_phase_lead`]).
    pub phase: Arc<PhaseGauge>,
    /// The bits of the `f64` L2 norm own deltas are scaled down to
    /// ([`rumor_proto::Core::own_delta_norm_bound`]); 0: no bound yet.
    pub own_norm_bound: Arc<std::sync::atomic::AtomicU64>,
}

/// What the shell tells the trainer of its phase clock: how many of the trainer's publishes it
/// has handed to the core, and the core's [`rumor_proto::Core::phase_lead`] after the latest.
/// The trainer compares the first with its own count, so it never reads a lead from before its
/// last publish.
#[derive(Debug, Default)]
pub struct PhaseGauge {
    /// Publishes the shell has handed to the core.
    pub published: std::sync::atomic::AtomicU64,
    /// Local phases beyond the slowest other member still training.
    pub lead: std::sync::atomic::AtomicU64,
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
    /// Starts training `workload` from `base`, reading `gauges` as the shell updates them.
    pub fn spawn(
        plan: TrainPlan,
        workload: Arc<dyn Workload>,
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
                train::lower_current_thread_priority(plan.low_priority);
                let mut hooks = GossipHooks {
                    quantizer: model::Quantizer::new(plan.delta_compression),
                    max_unacked_deltas: plan.max_unacked_deltas,
                    publish_every: plan.publish_every,
                    outer: train::OuterOptimizer::new(plan.outer),
                    base: base.clone(),
                    since_publish: 0,
                    phase_started: Instant::now(),
                    live: gauges.live,
                    unacked: gauges.unacked,
                    runtime: gauges.runtime,
                    unseen: gauges.unseen,
                    phase: gauges.phase,
                    own_norm_bound: gauges.own_norm_bound,
                    publishes: 0,
                    max_phase_lead: plan.max_phase_lead,
                    max_staleness: plan.max_staleness,
                    staleness_wait_limit: plan.staleness_wait_limit,
                    staleness_wait: Duration::ZERO,
                    max_runtime_lag: plan.max_runtime_lag,
                    runtime_wait: Duration::ZERO,
                    reports: reports.clone(),
                    commands: rx,
                    stop: stop_flag,
                    pause: pause_flag,
                };
                match train::run_training(&plan, &workload, &base, &mut hooks) {
                    Ok(progress) => {
                        let _ = reports.send(FromTrainer::Finished(progress));
                    }
                    Err(e) => {
                        let _ = reports.send(FromTrainer::Failed(e));
                    }
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

/// The gossip side of the shared loop: the base mirror, the publish counter and flow control.
struct GossipHooks {
    /// The core's base as the trainer knows it (flat).
    base: Vec<f32>,
    /// Steps since the last published delta.
    since_publish: u64,
    /// When the current local phase began (after the staleness wait), for a period of time.
    phase_started: Instant,
    /// H, or a period of time ([`TrainPlan::publish_every`]).
    publish_every: train::PublishPeriod,
    /// Turns each phase's progress into the published delta ([`TrainPlan::outer`]).
    outer: train::OuterOptimizer,
    /// [`TrainPlan::max_unacked_deltas`].
    max_unacked_deltas: usize,
    live: Arc<AtomicUsize>,
    /// Own deltas not yet acknowledged by every live member (kept by the shell).
    unacked: Arc<AtomicUsize>,
    runtime: Option<super::runtime_lag::RuntimeLag>,
    /// [`TrainPlan::max_runtime_lag`].
    max_runtime_lag: Duration,
    /// Time yielded to the runtime so far.
    runtime_wait: Duration,
    unseen: Arc<std::sync::atomic::AtomicU64>,
    phase: Arc<PhaseGauge>,
    own_norm_bound: Arc<std::sync::atomic::AtomicU64>,
    /// Deltas this trainer has sent to the shell to publish.
    publishes: u64,
    /// [`TrainPlan::max_phase_lead`].
    max_phase_lead: u64,
    /// [`TrainPlan::max_staleness`].
    max_staleness: f64,
    /// [`TrainPlan::staleness_wait_limit`].
    staleness_wait_limit: Duration,
    /// Time waited for others' deltas so far.
    staleness_wait: Duration,
    reports: mpsc::UnboundedSender<FromTrainer>,
    commands: mpsc::UnboundedReceiver<ToTrainer>,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    quantizer: model::Quantizer,
}

impl TrainHooks for GossipHooks {
    type Error = model::ModelError;

    fn paused(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn before_step(&mut self, trainer: &mut Trainer) -> Result<(), Self::Error> {
        if let Some(runtime) = self
            .runtime
            .as_ref()
            .filter(|_| !self.max_runtime_lag.is_zero())
        {
            let stop = &self.stop;
            self.runtime_wait +=
                runtime.wait_until_prompt(self.max_runtime_lag, MAX_RUNTIME_WAIT_PER_STEP, &|| {
                    stop.load(Ordering::SeqCst)
                });
        }
        if self.since_publish == 0 {
            if !self.staleness_wait_limit.is_zero() {
                self.staleness_wait += self.wait_for_others();
            }
            self.phase_started = Instant::now();
        }
        self.apply_commands(trainer)
    }

    fn after_step(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
        _at: StepPosition,
    ) -> Result<(), Self::Error> {
        self.since_publish += 1;
        progress.runtime_wait_seconds = self.runtime_wait.as_secs_f64();
        progress.staleness_wait_seconds = self.staleness_wait.as_secs_f64();
        // A publish is put off at most until it would carry MAX_COALESCE × H steps, so a delta
        // stays within a small multiple of the usual size (the norm check compares it with
        // recent deltas).
        let elapsed = self.phase_started.elapsed();
        if self.publish_every.due(self.since_publish, elapsed, 1) {
            let overdue = self
                .publish_every
                .due(self.since_publish, elapsed, MAX_COALESCE);
            if overdue && !self.network_ready() {
                let waited = Instant::now();
                self.wait_for_network();
                progress.flow_control_wait_seconds += waited.elapsed().as_secs_f64();
                // Deltas that arrived meanwhile go into the base before it is published.
                self.apply_commands(trainer)?;
            }
            if overdue || self.network_ready() {
                self.publish(trainer, progress.step)?;
            }
        }
        Ok(())
    }

    fn evaluated_params<'a>(&'a self, _trainer: &Trainer) -> Result<Cow<'a, [f32]>, Self::Error> {
        Ok(Cow::Borrowed(&self.base))
    }

    fn report(&mut self, progress: &TrainProgress, _at: StepPosition) {
        let _ = self.reports.send(FromTrainer::Progress(progress.clone()));
    }

    fn finish(
        &mut self,
        trainer: &mut Trainer,
        progress: &mut TrainProgress,
    ) -> Result<(), Self::Error> {
        self.apply_commands(trainer)?;
        if self.since_publish > 0 {
            self.publish(trainer, progress.step)?;
        }
        Ok(())
    }
}

impl GossipHooks {
    /// Flow control ([`TrainPlan::max_unacked_deltas`]): whether a due publish may go out now.
    fn network_ready(&self) -> bool {
        let window = self.max_unacked_deltas;
        window == 0 || self.unacked.load(Ordering::SeqCst) < window
    }

    /// Bounded staleness (stale synchronous parallel, Ho et al. 2013, "More effective
    /// distributed ML via a stale synchronous parallel parameter server", without its server):
    /// before a local phase, waits while
    /// - this peer has run more than `max_phase_lead` phases beyond the slowest other member
    ///   still training, counted in that member's deltas applied here
    ///   ([`rumor_proto::Core::phase_lead`]), or
    /// - the live members have published more than `⌊max_staleness × (live − 1)⌋` deltas not
    ///   applied here (announced by their origins at once,
    ///   [`rumor_proto::Core::unseen_deltas`]),
    ///
    /// so a peer never trains ahead on a base that lacks the others' progress. A dead or
    /// suspected member is not waited for, nor one that waits for peers, drains or left. At
    /// most `staleness_wait_limit` per phase, so a delta that never comes (refused by the norm
    /// check, or from a straggler) slows training but never stops it. Returns how long it
    /// waited.
    fn wait_for_others(&self) -> Duration {
        let started = Instant::now();
        let limit = || {
            let others = self.live.load(Ordering::SeqCst).saturating_sub(1);
            (self.max_staleness * others as f64).floor() as u64
        };
        let ahead = || {
            self.phase.published.load(Ordering::SeqCst) < self.publishes
                || self.phase.lead.load(Ordering::SeqCst) > self.max_phase_lead
        };
        while (ahead() || self.unseen.load(Ordering::SeqCst) > limit())
            && started.elapsed() < self.staleness_wait_limit
            && !self.stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        started.elapsed()
    }

    /// Blocks until flow control lets a publish out or the trainer is told to stop.
    fn wait_for_network(&self) {
        while !self.network_ready() && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn apply_commands(&mut self, trainer: &mut Trainer) -> Result<(), model::ModelError> {
        let base = &mut self.base;
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

    fn publish(&mut self, trainer: &mut Trainer, step: u64) -> Result<(), model::ModelError> {
        let n = self.live.load(Ordering::SeqCst).max(1);
        let weight = 1.0 / n as f32;
        let work = trainer.work()?;
        let mut delta = model::scaled_difference(&work, &self.base, weight)?;
        trainer.check_finite(step, "the local update", &delta)?;
        self.outer.step(&mut delta)?;
        // Held to a tighter bar than the one others hold it to, so that no member refuses what
        // this peer applies; what the clip takes off is dropped, as in gradient clipping.
        let bound = f64::from_bits(self.own_norm_bound.load(Ordering::SeqCst));
        let norm_before_clip = rumor_proto::core::clip_to_norm(&mut delta, bound);
        // The quantized delta is what every peer adds, this one included; what rounding left
        // out goes into the next delta.
        self.quantizer.quantize(&mut delta);
        model::axpy(&mut self.base, 1.0, &delta)?;
        trainer.set_work(&self.base)?;
        self.since_publish = 0;
        self.publishes += 1;
        let _ = self.reports.send(FromTrainer::Publish(LocalDelta {
            weight,
            values: delta,
            norm_before_clip,
        }));
        Ok(())
    }
}
