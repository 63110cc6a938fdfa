//! What a training run is asked to do ([`TrainPlan`]) and what it reports as it goes
//! ([`TrainProgress`]), shared by the gossip peer, the barrier baseline and the centralized
//! baseline.

use std::path::PathBuf;
use std::time::Duration;

use super::LrSchedule;
use crate::model;
use crate::workload::Metrics;

/// What the training loop needs to run.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    /// Passes over the shard.
    pub epochs: u32,
    /// Stop after this many optimizer steps even if epochs remain (a budget in tokens becomes
    /// this). None: the epochs alone bound the run.
    pub max_steps: Option<u64>,
    /// How the learning rate moves over the run ([`LrSchedule::Constant`]: it stays `lr`).
    pub lr_schedule: LrSchedule,
    /// Where the optimizer steps run (evaluation stays on the CPU, off the training path).
    pub device: super::DeviceChoice,
    /// Samples per step.
    pub batch_size: usize,
    /// Effective learning rate (after scaling by the number of peers).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// How often the gossip peer publishes (H steps, or a period of wall time); in the sync
    /// baseline, the steps between barrier rounds (a period of time is refused there).
    pub publish_every: super::PublishPeriod,
    /// The outer optimizer applied to each published delta (gossip) or round update (sync).
    pub outer: super::OuterSettings,
    /// Steps between test evaluations (0: never during training).
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
    /// When set, an evaluation point does not evaluate: it writes the evaluated model to this
    /// directory ([`super::write_eval_snapshot`]) and reports the file in
    /// [`TrainProgress::eval_snapshot`], to be evaluated after the run
    /// ([`super::evaluate_snapshot`]). Measurement then costs the run no compute (the lab uses
    /// this). None: evaluate in place.
    pub eval_snapshots: Option<PathBuf>,
    /// Flow control of the gossip peer: while this many of the peer's own deltas are still
    /// unacknowledged by some live member (the shell's count), a due publish is put off and
    /// training goes on; the next step tries again, and the delta then carries every step since
    /// the last one. So a slow or lossy network first stretches the publish period instead of
    /// queueing deltas that go stale. Once a delta would carry
    /// [`crate::node::trainer::MAX_COALESCE`] × `publish_every` steps, the trainer stops
    /// stepping until the window opens (back-pressure from its own outbox, like a full socket
    /// buffer): a peer never trains further ahead of what its peers have received, which keeps
    /// the merged deltas from going stale and overshooting together (asynchronous SGD's
    /// staleness problem). It waits for transport acknowledgements only, never for another
    /// peer's training; members under suspicion or dead are not waited for, and a send counts
    /// as done once it fails or times out. 0: no limit, no waiting.
    pub max_unacked_deltas: usize,
    /// How published deltas (and sync round updates) are quantized ([`model::Compression`],
    /// with error feedback).
    pub delta_compression: model::Compression,
    /// Run the training thread at the lowest priority, so the protocol and network tasks get
    /// the CPU first when it is short: probes are answered and deltas sent while training
    /// takes what is left.
    pub low_priority: bool,
    /// The gossip trainer waits before a step while its peer's async runtime has not run for
    /// longer than this (`train.max_runtime_lag`; zero: never).
    pub max_runtime_lag: std::time::Duration,
    /// Bounded staleness (`train.max_staleness`): before a local phase the gossip trainer
    /// waits while more than ⌊this × (live − 1)⌋ deltas others published are not applied here.
    pub max_staleness: f64,
    /// Bounded staleness by phase clocks (`train.max_phase_lead`): before a local phase the
    /// gossip trainer waits while it has published more than this many deltas beyond the
    /// latest one it holds from the slowest other member still training.
    pub max_phase_lead: u64,
    /// The longest that wait lasts per phase (`train.staleness_wait_limit`; zero: no wait).
    pub staleness_wait_limit: std::time::Duration,
}

impl TrainPlan {
    /// Optimizer steps the run takes on a shard of `examples` examples: full batches per epoch
    /// × epochs, capped by `max_steps`.
    pub fn total_steps(&self, examples: usize) -> u64 {
        let per_epoch = (examples / self.batch_size.max(1)) as u64;
        let by_epochs = per_epoch.saturating_mul(u64::from(self.epochs));
        self.max_steps.map_or(by_epochs, |cap| cap.min(by_epochs))
    }
}

/// Counters of the training loop.
#[derive(Clone, Debug, Default)]
pub struct TrainProgress {
    /// Optimizer steps taken.
    pub step: u64,
    /// Budget units processed: samples for images, tokens for text
    /// ([`crate::workload::Workload::budget_unit`]).
    pub samples: u64,
    /// Current epoch (0-based).
    pub epoch: u32,
    /// Mean training loss over the steps since the last report.
    pub train_loss: Option<f32>,
    /// Held-out metrics of the evaluated model, when evaluated at this step.
    pub metrics: Option<Metrics>,
    /// With [`TrainPlan::eval_snapshots`]: the file holding the evaluated model at this
    /// evaluation point, to be evaluated after the run (then `test_accuracy` is None).
    pub eval_snapshot: Option<PathBuf>,
    /// Mean wall time of an optimizer step since the last report (seconds).
    pub step_seconds: f64,
    /// Wall time the gossip peer's flow control spent waiting for the network so far
    /// ([`crate::node::trainer::MAX_COALESCE`]), in seconds.
    pub flow_control_wait_seconds: f64,
    /// Wall time the gossip trainer yielded to its peer's lagging async runtime so far
    /// ([`TrainPlan::max_runtime_lag`]), in seconds.
    pub runtime_wait_seconds: f64,
    /// Wall time the gossip trainer waited for others' deltas so far
    /// ([`TrainPlan::max_staleness`]), in seconds.
    pub staleness_wait_seconds: f64,
}

/// Where the loop stands after one optimizer step, for hooks that show it.
#[derive(Clone, Copy, Debug)]
pub struct StepPosition {
    /// Epoch, 0-based.
    pub epoch: u32,
    /// Batch within the epoch, 1-based.
    pub batch: usize,
    /// Mean training loss over this epoch's steps so far.
    pub epoch_mean_loss: f64,
}
