//! The sections of the configuration file, one struct per `[section]`, with their defaults
//! (`config/default.toml` documents every key).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::text;
use crate::data::{DatasetSpec, ShardSpec};
use crate::train::LrSchedule;
use crate::workload::ModelChoice;
use rumor_proto::core::LifecycleConfig;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossSection {
    /// Fraction of received datagrams dropped, in [0, 1].
    pub loss_in: f64,
    /// Fraction of sent datagrams dropped, in [0, 1].
    pub loss_out: f64,
    /// Seed of the drop decisions (mixed with the peer's shard index).
    pub seed: u64,
    /// Per-link overrides by remote address.
    pub links: Vec<LinkLossSection>,
}

/// One `[[loss.links]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLossSection {
    /// The remote peer's address.
    pub addr: SocketAddr,
    /// Fraction of datagrams from it dropped, in [0, 1].
    #[serde(default)]
    pub loss_in: f64,
    /// Fraction of datagrams to it dropped, in [0, 1].
    #[serde(default)]
    pub loss_out: f64,
}

/// `[peer]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSection {
    /// Certificate name in `certs`, also the display name.
    pub name: String,
    /// UDP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Address other peers reach this one at; empty: the listen address.
    pub advertise: Option<SocketAddr>,
    /// Seed peers to join through, tried in turn. Empty (and no `dns_seeds`): start a new
    /// cluster.
    pub seeds: Vec<SocketAddr>,
    /// Seeds by DNS name, `NAME:PORT` (`--seed dns:NAME:PORT`): every address the name
    /// resolves to, resolved at start and again every few seconds, so peers that start later
    /// are found (a Kubernetes headless Service, a compose service name).
    pub dns_seeds: Vec<crate::net::discovery::DnsSeed>,
    /// Directory with `ca.pem` and `NAME.pem` / `NAME.key`.
    pub certs: PathBuf,
    /// The CA-signed revocation list to load at start and watch (`rumor certs revoke`);
    /// absent: `revoked.json` in `certs`. A missing file is an empty list.
    pub revocation_list: Option<PathBuf>,
    /// Directory for the peer id, checkpoints and metrics.
    pub data_dir: PathBuf,
    /// Members (this peer included) to know before training starts.
    pub min_peers: usize,
    /// Longest wait for a seed's welcome and `min_peers` members.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// Longest drain after the training budget is spent.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Longest time from SIGTERM (or Ctrl-C) to exit: the leave, the final save and the
    /// final evaluation, which is skipped when the time is spent. Shorter than the engine's
    /// own grace (Kubernetes gives 30 s before SIGKILL).
    #[serde(with = "humantime_serde")]
    pub leave_grace: Duration,
    /// After the run (drained or left, saved, summary written) keep the process up, serving
    /// `/status` and `/metrics` (`/healthz` answers `finished`), until SIGTERM or Ctrl-C: for
    /// engines that restart an exited container (a StatefulSet).
    pub linger: bool,
    /// How often the base is checkpointed while running.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// File to append one line per delta applied or published to, `ORIGIN VERSION
    /// CONTENT_HASH` (hex SHA-256 of the values); absent: no audit log.
    pub audit_log: Option<PathBuf>,
}

impl Default for PeerSection {
    fn default() -> Self {
        Self {
            name: "peer".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            seeds: Vec::new(),
            dns_seeds: Vec::new(),
            certs: PathBuf::from("certs"),
            revocation_list: None,
            data_dir: PathBuf::from("run/peer"),
            min_peers: 1,
            join_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            leave_grace: Duration::from_secs(20),
            linger: false,
            checkpoint_interval: Duration::from_secs(30),
            audit_log: None,
        }
    }
}

impl PeerSection {
    /// The lifecycle policy of this section for a peer that trains: it starts once
    /// `min_peers` members are live, and its join, drain and checkpoint periods are the keys of
    /// the same names (each a limit, never "wait for ever").
    pub fn lifecycle(&self) -> LifecycleConfig {
        LifecycleConfig {
            min_peers: Some(self.min_peers),
            join_timeout: Some(self.join_timeout),
            drain_timeout: Some(self.drain_timeout),
            checkpoint_interval: Some(self.checkpoint_interval),
        }
    }
}

/// How the learning rate of a peer grows with the number of peers N (see `train.lr_scaling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScaling {
    /// `lr` as given.
    None,
    /// `lr × N`: each peer's progress is scaled by `w = 1/N` when published, so linear scaling
    /// keeps the step per sample of the averaged model equal to centralized training.
    Linear,
    /// `lr × √N`: a middle ground.
    Sqrt,
}

impl LrScaling {
    /// The factor for `peers` peers.
    pub fn factor(self, peers: usize) -> f64 {
        let n = peers.max(1) as f64;
        match self {
            LrScaling::None => 1.0,
            LrScaling::Linear => n,
            LrScaling::Sqrt => n.sqrt(),
        }
    }
}

/// `[train]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// `auto`, `synthetic`, `fashion-mnist` or `idx:DIR` (images); `auto`, `synthetic`,
    /// `austen` or `text:FILE` (text).
    #[serde(with = "text")]
    pub dataset: DatasetSpec,
    /// How a text model's training tokens are split among peers: `interleaved` (blocks of 1024
    /// tokens dealt round-robin, close to IID), `interleaved:BLOCK` or `contiguous` (one slice
    /// per peer: each peer reads other chapters).
    #[serde(with = "text")]
    pub text_sharding: crate::data::text::TextSharding,
    /// The model: `mlp` (`784-128-10`), `mlp:WIDTHS` or bare widths, e.g. `784-256-10`.
    #[serde(with = "text")]
    pub model: ModelChoice,
    /// This peer's shard, `K/N` (1-based).
    #[serde(with = "text")]
    pub shard: ShardSpec,
    /// Dirichlet concentration for non-IID shards; absent: IID.
    pub non_iid_alpha: Option<f64>,
    /// Passes over the peer's own shard.
    pub epochs: u32,
    /// Budget in tokens for text models, over all peers together (the centralized baseline
    /// trains the same number); each of N peers trains ⌈tokens / N⌉. Absent: `epochs` alone.
    pub tokens: Option<u64>,
    /// `constant`, `cosine` (the default: warm-up 0.05, floor 0.1) or
    /// `cosine:warmup=F,floor=F`: the learning rate over the run (linear warm-up over a
    /// fraction of the steps, cosine decay to floor × lr).
    #[serde(with = "text")]
    pub lr_schedule: LrSchedule,
    /// Where training runs: `cpu`, `cuda`, `cuda:N` or `metal` (a GPU needs a build with the
    /// cargo feature of that name).
    #[serde(with = "text")]
    pub device: crate::train::DeviceChoice,
    /// Stop training after this long even if epochs remain (a time-boxed run; the learning-rate
    /// schedule still runs over the epochs); absent: no limit.
    #[serde(default, with = "humantime_serde::option")]
    pub max_train_time: Option<Duration>,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate before scaling by the number of peers.
    pub lr: f64,
    /// `none`, `linear` or `sqrt`: how the peer learning rate grows with the number of peers.
    pub lr_scaling: LrScaling,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// When a gossip peer publishes: every H local steps (`10`), or every period of wall time
    /// (`"5s"`, for peers of different speeds). The barrier baseline needs steps.
    pub publish_every: crate::train::PublishPeriod,
    /// The outer optimizer of each published delta: `none` (the scaled local progress as it
    /// is) or `nesterov` (DiLoCo's SGD with Nesterov momentum, run by each peer on its own
    /// pseudo-gradients; the barrier baseline runs it on each round's mean).
    pub outer_optimizer: crate::train::OuterKind,
    /// Outer learning rate η of `nesterov` (dimensionless, > 0).
    pub outer_lr: f64,
    /// Outer momentum μ of `nesterov`, in [0, 1).
    pub outer_momentum: f64,
    /// Local steps between test-set evaluations of the base (0: only at the end).
    pub eval_every: u64,
    /// Write the base to `data_dir/evals/` at each evaluation point instead of evaluating it
    /// during the run; `rumor lab` evaluates the files afterwards, so measuring costs the run
    /// no compute.
    pub deferred_eval: bool,
    /// Flow control: a due publish is put off while this many of the peer's own deltas are
    /// unacknowledged by some live member, and past 4 × `publish_every` steps training waits
    /// for them (0: no limit).
    pub max_unacked_deltas: usize,
    /// How published deltas are quantized before they are applied and sent: `none` (f32),
    /// `bf16` (2 bytes per parameter), `int8` (≈ 1 byte) or `topk:P%:Bbit` (the largest P% of
    /// each 4096 values at 2 or 4 bits, ≈ 0.03 bytes per parameter at `topk:2%:2bit`; `topk`
    /// alone is that), with error feedback. The sync baseline compresses its model exchange
    /// the same way.
    pub delta_compression: crate::model::Compression,
    /// Run the training thread at the lowest priority (the network's work goes first).
    pub low_priority: bool,
    /// The gossip trainer waits before a step while the peer's async runtime (gossip, probes,
    /// the merge) has not run for longer than this, so training never starves it when peers
    /// outnumber cores; 0s: never wait.
    #[serde(with = "humantime_serde")]
    pub max_runtime_lag: std::time::Duration,
    /// Bounded staleness: before a local phase of `publish_every` steps the gossip trainer
    /// waits while the live members have published more than ⌊this × (live − 1)⌋ deltas it has
    /// not applied yet (0: all it has heard of must be in), for at most
    /// `staleness_wait_limit` per phase.
    pub max_staleness: f64,
    /// Bounded staleness by phase clocks: before a local phase the gossip trainer waits while
    /// it has published more than this many deltas beyond the latest one it holds from the
    /// slowest other member still training (0: every such member's delta of the phase just
    /// ended must be in). A straggler holds the others back at most `staleness_wait_limit` per
    /// phase; a larger value lets fast peers run that many phases ahead.
    pub max_phase_lead: u64,
    /// The longest the gossip trainer waits for others' deltas before one local phase; 0s:
    /// never wait (no staleness bound).
    #[serde(with = "humantime_serde")]
    pub staleness_wait_limit: std::time::Duration,
    /// Seed for θ₀, sharding, batch order and protocol randomness.
    pub rng_seed: u64,
    /// CPU threads for candle's matrix products.
    pub threads: usize,
    /// Stragglers on purpose: peer name → factor ≥ 1; that peer sleeps (factor − 1) × its
    /// measured step time after each step.
    pub slowdown: std::collections::BTreeMap<String, f64>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            dataset: DatasetSpec::Auto,
            text_sharding: crate::data::text::TextSharding::Interleaved {
                block: crate::data::text::DEFAULT_INTERLEAVE_BLOCK,
            },
            model: ModelChoice::default(),
            shard: ShardSpec::WHOLE,
            non_iid_alpha: None,
            epochs: 2,
            tokens: None,
            lr_schedule: LrSchedule::default(),
            device: crate::train::DeviceChoice::Cpu,
            max_train_time: None,
            batch_size: 64,
            lr: 1e-3,
            lr_scaling: LrScaling::Linear,
            weight_decay: 0.01,
            publish_every: crate::train::PublishPeriod::Steps(10),
            outer_optimizer: crate::train::OuterKind::None,
            outer_lr: 0.7,
            outer_momentum: 0.9,
            eval_every: 100,
            deferred_eval: false,
            max_unacked_deltas: 4,
            delta_compression: crate::model::Compression::None,
            low_priority: false,
            max_runtime_lag: std::time::Duration::from_millis(20),
            max_staleness: 0.0,
            max_phase_lead: 0,
            staleness_wait_limit: std::time::Duration::from_secs(2),
            rng_seed: 42,
            threads: 1,
            slowdown: std::collections::BTreeMap::new(),
        }
    }
}

/// Training mode of `rumor up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Peers gossip deltas, no barrier (the product).
    Gossip,
    /// One process trains on all the data (the baseline).
    Centralized,
    /// Peers average their models behind a barrier every H steps (the baseline of synchronous
    /// data parallelism and FedAvg), over the same QUIC transport.
    Sync,
}

impl Mode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Gossip => "gossip",
            Mode::Centralized => "centralized",
            Mode::Sync => "sync",
        }
    }
}

/// `[up]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpSection {
    /// Local peers to start.
    pub peers: usize,
    /// `gossip` or `centralized`.
    pub mode: Mode,
    /// Learning rate of the centralized baseline (not scaled).
    pub centralized_lr: f64,
    /// `sync` mode: longest wait at a barrier for the other peers' models; a peer whose model
    /// has not arrived by then is left out of that round's average.
    #[serde(with = "humantime_serde")]
    pub sync_timeout: Duration,
    /// `rumor peer` in `sync` mode: every sync peer's address, in peer-index order (this peer
    /// included). `rumor up` ignores it (its peers learn each other's addresses in-process).
    pub sync_peers: Vec<SocketAddr>,
    /// `rumor peer` in `sync` mode: this peer's index in `sync_peers`; unset: the position of
    /// its advertise (else listen) address there.
    pub sync_index: Option<usize>,
}

impl Default for UpSection {
    fn default() -> Self {
        Self {
            peers: 4,
            mode: Mode::Gossip,
            centralized_lr: 1e-3,
            sync_timeout: Duration::from_secs(30),
            sync_peers: Vec::new(),
            sync_index: None,
        }
    }
}
