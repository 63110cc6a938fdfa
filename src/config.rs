//! Configuration: a TOML file (`config/default.toml` documents every key) whose values command
//! line flags override. Unknown keys and out-of-range values are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::data::{DatasetSpec, Partition, ShardSpec};
use crate::model::ModelSpec;
use crate::net::TransportConfig;
use rumor_proto::core::swim::SwimConfig;
use rumor_proto::core::CoreConfig;

/// Why a configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad value).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, naming the key and position.
        message: String,
    },
    /// A value is out of range.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `train.batch_size`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// One peer's identity, addresses and lifecycle limits.
    pub peer: PeerSection,
    /// Data, model and optimisation.
    pub train: TrainSection,
    /// Dissemination and anti-entropy.
    pub gossip: GossipSection,
    /// Failure detection (SWIM with Lifeguard).
    pub membership: MembershipSection,
    /// QUIC transport.
    pub transport: TransportSection,
    /// `rumor up`.
    pub up: UpSection,
    /// Loss injection under QUIC (experiments).
    pub loss: LossSection,
}

/// `[loss]`: datagrams dropped on purpose by this process's socket ([`crate::net::lossy`]).
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
    /// Seed peers to join through, tried in turn. Empty: start a new cluster.
    pub seeds: Vec<SocketAddr>,
    /// Directory with `ca.pem` and `NAME.pem` / `NAME.key`.
    pub certs: PathBuf,
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
    /// How often the base is checkpointed while running.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for PeerSection {
    fn default() -> Self {
        Self {
            name: "peer".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            seeds: Vec::new(),
            certs: PathBuf::from("certs"),
            data_dir: PathBuf::from("run/peer"),
            min_peers: 1,
            join_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(30),
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
    /// `auto`, `synthetic`, `fashion-mnist` or `idx:DIR`.
    pub dataset: String,
    /// MLP layer sizes, e.g. `784-128-10`.
    pub model: String,
    /// This peer's shard, `K/N` (1-based).
    pub shard: String,
    /// Dirichlet concentration for non-IID shards; absent: IID.
    pub non_iid_alpha: Option<f64>,
    /// Passes over the peer's own shard.
    pub epochs: u32,
    /// Stop training after this long even if epochs remain (a time-boxed run); absent: no limit.
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
    /// Local steps between published deltas (H).
    pub publish_every: u64,
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
    /// `bf16` (2 bytes per parameter) or `int8` (≈ 1 byte), with error feedback. The sync
    /// baseline compresses its model exchange the same way.
    pub delta_compression: crate::model::Compression,
    /// Run the training thread at the lowest priority (the network's work goes first).
    pub low_priority: bool,
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
            dataset: "auto".into(),
            model: "784-128-10".into(),
            shard: "1/1".into(),
            non_iid_alpha: None,
            epochs: 2,
            max_train_time: None,
            batch_size: 64,
            lr: 1e-3,
            lr_scaling: LrScaling::Linear,
            weight_decay: 0.01,
            publish_every: 10,
            eval_every: 100,
            deferred_eval: false,
            max_unacked_deltas: 4,
            delta_compression: crate::model::Compression::None,
            low_priority: false,
            rng_seed: 42,
            threads: 1,
            slowdown: std::collections::BTreeMap::new(),
        }
    }
}

/// `[gossip]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSection {
    /// Peers each message is pushed to per hop.
    pub fanout: usize,
    /// Largest TTL sent or accepted (hops).
    pub max_ttl: u8,
    /// Period of membership gossip.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Period of anti-entropy digests while training.
    #[serde(with = "humantime_serde")]
    pub anti_entropy_interval: Duration,
    /// Period of anti-entropy digests while draining.
    #[serde(with = "humantime_serde")]
    pub drain_anti_entropy_interval: Duration,
    /// How long the drain condition must hold unchanged before the drain completes.
    #[serde(with = "humantime_serde")]
    pub drain_settle: Duration,
    /// How long envelope ids stay in the seen-cache (at least 90 s).
    #[serde(with = "humantime_serde")]
    pub seen_retention: Duration,
    /// Most envelope ids in the seen-cache.
    pub seen_capacity: usize,
    /// Bytes of deltas kept for anti-entropy pulls.
    pub delta_log_bytes: usize,
    /// Largest message accepted or sent (bytes).
    pub max_message_bytes: usize,
    /// Most delta bytes pushed in answer to one digest.
    pub anti_entropy_max_bytes: usize,
    /// Anti-entropy pushes another origin's delta only once held this long.
    #[serde(with = "humantime_serde")]
    pub anti_entropy_delay: Duration,
    /// How long a delta sent to a peer is not pushed to it again by anti-entropy.
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
    /// A received delta whose L2 norm is above this factor times the highest median norm of
    /// the last 64 accepted deltas seen is rejected (`norm`); 0 disables the check.
    pub max_delta_norm_factor: f32,
    /// A received delta more than this many versions above the highest version known of its
    /// origin is rejected (`version_jump`); 0 disables the check.
    pub max_version_jump: u64,
}

impl Default for GossipSection {
    fn default() -> Self {
        let c = CoreConfig::default();
        Self {
            fanout: c.fanout,
            max_ttl: c.max_ttl,
            gossip_interval: c.gossip_interval,
            anti_entropy_interval: c.anti_entropy_interval,
            drain_anti_entropy_interval: c.drain_anti_entropy_interval,
            drain_settle: c.drain_settle,
            seen_retention: c.seen_retention,
            seen_capacity: c.seen_capacity,
            delta_log_bytes: c.delta_log_bytes,
            max_message_bytes: c.max_message_bytes,
            anti_entropy_max_bytes: c.anti_entropy_max_bytes,
            anti_entropy_delay: c.anti_entropy_delay,
            resend_after: c.resend_after,
            max_delta_norm_factor: c.max_delta_norm_factor,
            max_version_jump: c.max_version_jump,
        }
    }
}

/// `[membership]`: SWIM failure detection; defaults follow memberlist's LAN profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSection {
    /// One member is probed per period.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking others to probe.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly.
    pub indirect_checks: usize,
    /// Suspicion timeout floor: `suspicion_mult × max(1, log10 n) × probe_interval`.
    pub suspicion_mult: u32,
    /// Suspicion timeout ceiling, as a multiple of the floor.
    pub suspicion_max_timeout_mult: u32,
    /// Most a slow peer stretches its own probe interval and timeout (Lifeguard).
    pub awareness_max_multiplier: u32,
    /// A membership change is piggybacked `retransmit_mult × ⌈log10(n + 1)⌉` times.
    pub retransmit_mult: u32,
    /// Period of the full-view push-pull exchange with one random member.
    #[serde(with = "humantime_serde")]
    pub push_pull_interval: Duration,
    /// Period of the attempt to reach one member declared dead (heals partitions).
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
}

impl Default for MembershipSection {
    fn default() -> Self {
        let s = SwimConfig::default();
        Self {
            probe_interval: s.probe_interval,
            probe_timeout: s.probe_timeout,
            indirect_checks: s.indirect_checks,
            suspicion_mult: s.suspicion_mult,
            suspicion_max_timeout_mult: s.suspicion_max_timeout_mult,
            awareness_max_multiplier: s.awareness_max_multiplier,
            retransmit_mult: s.retransmit_mult,
            push_pull_interval: s.push_pull_interval,
            reconnect_interval: s.reconnect_interval,
        }
    }
}

impl MembershipSection {
    /// The failure-detector settings.
    pub fn swim(&self) -> SwimConfig {
        SwimConfig {
            probe_interval: self.probe_interval,
            probe_timeout: self.probe_timeout,
            indirect_checks: self.indirect_checks,
            suspicion_mult: self.suspicion_mult,
            suspicion_max_timeout_mult: self.suspicion_max_timeout_mult,
            awareness_max_multiplier: self.awareness_max_multiplier,
            retransmit_mult: self.retransmit_mult,
            push_pull_interval: self.push_pull_interval,
            reconnect_interval: self.reconnect_interval,
        }
    }
}

/// `[transport]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSection {
    /// Longest wait for a QUIC handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// QUIC keep-alive period.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Received messages buffered between the network and the core.
    pub incoming_queue: usize,
    /// Deltas and snapshots in flight at once to one destination; past that a send is dropped
    /// and counted (anti-entropy repairs it). Control messages are not limited.
    pub max_inflight_per_peer: usize,
    /// A send not acknowledged after this long is abandoned (its stream reset).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// QUIC congestion controller: `cubic`, `newreno` or `bbr`.
    pub congestion: crate::net::Congestion,
    /// RTT assumed before the first sample (RFC 9002 §6.2.2).
    #[serde(with = "humantime_serde")]
    pub initial_rtt: Duration,
    /// ACK delay asked of the peer (QUIC ACK frequency extension); 0: the peer's own, 25 ms.
    #[serde(with = "humantime_serde")]
    pub max_ack_delay: Duration,
    /// Streams (messages) one connection may have open, or in flight towards the core, at once.
    pub max_streams_per_connection: u32,
    /// Messages/s accepted from one connection (one second of burst); 0: no limit.
    pub rate_limit_messages: u32,
    /// Bytes/s accepted from one connection (one second of burst); 0: no limit.
    pub rate_limit_bytes: u64,
    /// An incoming handshake not completed within this long is abandoned.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Incoming handshakes in progress at once; more attempts are refused.
    pub max_handshakes: usize,
    /// Handshakes in progress above which unvalidated sources get a QUIC Retry first.
    pub handshakes_before_retry: usize,
    /// Incoming handshakes in progress at once from one IP address.
    pub max_handshakes_per_ip: usize,
    /// A received message must be finished within this long of its first byte.
    #[serde(with = "humantime_serde")]
    pub stream_timeout: Duration,
    /// Bytes of unfinished messages one connection may hold; 0: derived from the model.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of unfinished messages one member's connections may hold; 0: derived.
    pub max_buffered_bytes_per_member: u64,
    /// Connections one member (certificate name) may open to this peer at once.
    pub max_connections_per_member: usize,
}

impl Default for TransportSection {
    fn default() -> Self {
        let n = TransportConfig::default();
        Self {
            connect_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            incoming_queue: 1024,
            max_inflight_per_peer: 16,
            send_timeout: Duration::from_secs(10),
            congestion: crate::net::Congestion::Cubic,
            initial_rtt: Duration::from_millis(333),
            max_ack_delay: Duration::ZERO,
            max_streams_per_connection: n.max_streams_per_connection,
            rate_limit_messages: n.rate_limit_messages,
            rate_limit_bytes: n.rate_limit_bytes,
            handshake_timeout: Duration::from_millis(n.handshake_timeout_ms),
            max_handshakes: n.max_handshakes,
            handshakes_before_retry: n.handshakes_before_retry,
            max_handshakes_per_ip: n.max_handshakes_per_ip,
            stream_timeout: Duration::from_millis(n.stream_timeout_ms),
            max_buffered_bytes_per_connection: 0,
            max_buffered_bytes_per_member: 0,
            max_connections_per_member: n.max_connections_per_member,
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

impl Config {
    /// Reads `path` (TOML). Errors: unreadable file, unknown key, wrong type, invalid value.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text. Errors: toml's message naming the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks ranges and parses the string-typed keys. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dataset()?;
        self.model()?;
        self.shard()?;
        self.partition()?;
        let t = &self.train;
        check(t.epochs >= 1, "train.epochs", "must be at least 1")?;
        check(t.batch_size >= 1, "train.batch_size", "must be at least 1")?;
        check(
            t.publish_every >= 1,
            "train.publish_every",
            "must be at least 1",
        )?;
        check(t.threads >= 1, "train.threads", "must be at least 1")?;
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            "must be a positive number",
        )?;
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            "must be a non-negative number",
        )?;
        let g = &self.gossip;
        check(g.fanout >= 1, "gossip.fanout", "must be at least 1")?;
        check(g.max_ttl >= 1, "gossip.max_ttl", "must be at least 1")?;
        check(
            g.seen_retention >= Duration::from_secs(90),
            "gossip.seen_retention",
            "must be at least 90s",
        )?;
        check(
            g.seen_capacity >= 1,
            "gossip.seen_capacity",
            "must be at least 1",
        )?;
        check(
            g.max_message_bytes >= 64 * 1024,
            "gossip.max_message_bytes",
            "must be at least 65536",
        )?;
        check(
            !g.gossip_interval.is_zero()
                && !g.anti_entropy_interval.is_zero()
                && !g.drain_anti_entropy_interval.is_zero(),
            "gossip.*_interval",
            "intervals must be above zero",
        )?;
        check(
            g.max_delta_norm_factor.is_finite()
                && (g.max_delta_norm_factor == 0.0 || g.max_delta_norm_factor >= 1.0),
            "gossip.max_delta_norm_factor",
            "must be 0 (off) or a number ≥ 1",
        )?;
        check(
            self.peer.min_peers >= 1,
            "peer.min_peers",
            "must be at least 1",
        )?;
        check(
            self.transport.incoming_queue >= 1,
            "transport.incoming_queue",
            "must be at least 1",
        )?;
        let t = &self.transport;
        for (ok, key) in [
            (t.max_handshakes >= 1, "transport.max_handshakes"),
            (
                t.max_handshakes_per_ip >= 1,
                "transport.max_handshakes_per_ip",
            ),
            (
                t.max_connections_per_member >= 1,
                "transport.max_connections_per_member",
            ),
        ] {
            check(ok, key, "must be at least 1")?;
        }
        check(
            t.handshake_timeout >= Duration::from_millis(1),
            "transport.handshake_timeout",
            "must be at least 1ms",
        )?;
        check(
            t.stream_timeout >= t.send_timeout,
            "transport.stream_timeout",
            &format!(
                "must be at least transport.send_timeout ({}), or receivers would stop \
                 messages their senders still wait for",
                humantime::format_duration(t.send_timeout)
            ),
        )?;
        for (value, key) in [
            (
                t.max_buffered_bytes_per_connection,
                "transport.max_buffered_bytes_per_connection",
            ),
            (
                t.max_buffered_bytes_per_member,
                "transport.max_buffered_bytes_per_member",
            ),
        ] {
            check(
                value == 0 || value >= g.max_message_bytes as u64,
                key,
                &format!(
                    "must be 0 (derived from the model) or hold one message of \
                     gossip.max_message_bytes ({} bytes)",
                    g.max_message_bytes
                ),
            )?;
        }
        check(
            self.transport.max_streams_per_connection >= 1,
            "transport.max_streams_per_connection",
            "must be at least 1",
        )?;
        check(
            self.transport.max_inflight_per_peer >= 1,
            "transport.max_inflight_per_peer",
            "must be at least 1",
        )?;
        check(
            !self.transport.send_timeout.is_zero(),
            "transport.send_timeout",
            "must be above zero",
        )?;
        check(
            self.transport.max_ack_delay < Duration::from_millis(1 << 14),
            "transport.max_ack_delay",
            "must be below 16384ms (RFC 9000 §18.2)",
        )?;
        check(self.up.peers >= 1, "up.peers", "must be at least 1")?;
        check(
            self.up.centralized_lr.is_finite() && self.up.centralized_lr > 0.0,
            "up.centralized_lr",
            "must be a positive number",
        )?;
        for (name, f) in &self.train.slowdown {
            check(
                f.is_finite() && *f >= 1.0,
                "train.slowdown",
                &format!("factor of {name} must be a number ≥ 1, got {f}"),
            )?;
        }
        check(
            !self.up.sync_timeout.is_zero(),
            "up.sync_timeout",
            "must be above zero",
        )?;
        if let Some(i) = self.up.sync_index {
            check(
                i < self.up.sync_peers.len(),
                "up.sync_index",
                &format!(
                    "{i} is not an index into up.sync_peers ({} addresses)",
                    self.up.sync_peers.len()
                ),
            )?;
        }
        self.loss_config(0)
            .validate()
            .map_err(|m| invalid("loss", m))?;
        let params = self.model()?.param_count();
        check(
            params * 4 + 4096 <= g.max_message_bytes,
            "gossip.max_message_bytes",
            "is smaller than one delta of this model",
        )?;
        Ok(())
    }

    /// `train.dataset` parsed.
    pub fn dataset(&self) -> Result<DatasetSpec, ConfigError> {
        DatasetSpec::from_str(&self.train.dataset).map_err(|e| invalid("train.dataset", e))
    }

    /// `train.model` parsed.
    pub fn model(&self) -> Result<ModelSpec, ConfigError> {
        ModelSpec::from_str(&self.train.model).map_err(|e| invalid("train.model", e))
    }

    /// `train.shard` parsed.
    pub fn shard(&self) -> Result<ShardSpec, ConfigError> {
        ShardSpec::from_str(&self.train.shard).map_err(|e| invalid("train.shard", e))
    }

    /// IID, or Dirichlet with `train.non_iid_alpha`.
    pub fn partition(&self) -> Result<Partition, ConfigError> {
        match self.train.non_iid_alpha {
            None => Ok(Partition::Iid),
            Some(alpha) if alpha.is_finite() && alpha > 0.0 => Ok(Partition::Dirichlet { alpha }),
            Some(alpha) => Err(invalid(
                "train.non_iid_alpha",
                format!("must be a positive number, got {alpha}"),
            )),
        }
    }

    /// The protocol settings for a model with `param_count` parameters.
    pub fn core_config(&self, param_count: usize) -> CoreConfig {
        let g = &self.gossip;
        CoreConfig {
            fanout: g.fanout,
            max_ttl: g.max_ttl,
            gossip_interval: g.gossip_interval,
            anti_entropy_interval: g.anti_entropy_interval,
            drain_anti_entropy_interval: g.drain_anti_entropy_interval,
            drain_settle: g.drain_settle,
            seen_retention: g.seen_retention,
            seen_capacity: g.seen_capacity,
            delta_log_bytes: g.delta_log_bytes,
            max_message_bytes: g.max_message_bytes,
            anti_entropy_max_bytes: g.anti_entropy_max_bytes,
            anti_entropy_delay: g.anti_entropy_delay,
            resend_after: g.resend_after,
            max_delta_norm_factor: g.max_delta_norm_factor,
            max_version_jump: g.max_version_jump,
            swim: self.membership.swim(),
            param_count,
            ..CoreConfig::default()
        }
    }

    /// The loss injection of the peer with shard index `index` (0-based; mixed into the seed so
    /// peers drop different datagrams).
    pub fn loss_config(&self, index: usize) -> crate::net::lossy::LossConfig {
        use crate::net::lossy::{LinkLoss, LossConfig};
        let l = &self.loss;
        LossConfig {
            default: LinkLoss {
                loss_in: l.loss_in,
                loss_out: l.loss_out,
            },
            links: l
                .links
                .iter()
                .map(|k| {
                    (
                        k.addr,
                        LinkLoss {
                            loss_in: k.loss_in,
                            loss_out: k.loss_out,
                        },
                    )
                })
                .collect(),
            seed: l.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// `rumor peer --mode sync`: this peer's index in `up.sync_peers` (`up.sync_index`, else the
    /// position of `peer.advertise`, else of `peer.listen`, in the list).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `up.sync_peers` has fewer than two addresses or this
    /// peer's address is not in it and no index is set.
    pub fn sync_index(&self) -> Result<usize, ConfigError> {
        let peers = &self.up.sync_peers;
        check(
            peers.len() >= 2,
            "up.sync_peers",
            "sync mode needs every sync peer's address (at least two)",
        )?;
        if let Some(i) = self.up.sync_index {
            check(
                i < peers.len(),
                "up.sync_index",
                "is not an index into up.sync_peers",
            )?;
            return Ok(i);
        }
        let own = self.peer.advertise.unwrap_or(self.peer.listen);
        peers.iter().position(|a| *a == own).ok_or_else(|| {
            invalid(
                "up.sync_index",
                format!("unset, and this peer's address {own} is not in up.sync_peers"),
            )
        })
    }

    /// The slowdown factor of the peer called `name` (1: none).
    pub fn slowdown_of(&self, name: &str) -> f64 {
        self.train.slowdown.get(name).copied().unwrap_or(1.0)
    }

    /// The transport settings.
    pub fn transport_config(&self) -> TransportConfig {
        let t = &self.transport;
        let (per_connection, per_member) = self.buffered_bytes_budgets();
        TransportConfig {
            max_message_bytes: self.gossip.max_message_bytes,
            connect_timeout_ms: t.connect_timeout.as_millis() as u64,
            keep_alive_ms: t.keep_alive.as_millis() as u64,
            idle_timeout_ms: t.idle_timeout.as_millis() as u64,
            incoming_queue: t.incoming_queue,
            congestion: t.congestion,
            initial_rtt_ms: t.initial_rtt.as_millis().max(1) as u64,
            max_ack_delay_ms: t.max_ack_delay.as_millis() as u64,
            max_streams_per_connection: t.max_streams_per_connection,
            rate_limit_messages: t.rate_limit_messages,
            rate_limit_bytes: t.rate_limit_bytes,
            handshake_timeout_ms: t.handshake_timeout.as_millis() as u64,
            max_handshakes: t.max_handshakes,
            handshakes_before_retry: t.handshakes_before_retry,
            max_handshakes_per_ip: t.max_handshakes_per_ip,
            stream_timeout_ms: t.stream_timeout.as_millis() as u64,
            max_buffered_bytes_per_connection: per_connection,
            max_buffered_bytes_per_member: per_member,
            max_connections_per_member: t.max_connections_per_member,
        }
    }

    /// The byte budgets of unfinished received messages, per connection and per member, in
    /// bytes: the configured values, or where 0, derived from the model. A sender has at most
    /// `max_inflight_per_peer` deltas or snapshots in flight to one destination, each about
    /// 4 bytes per parameter, plus control messages; a connection's budget holds that twice
    /// over, and at least one message of `gossip.max_message_bytes`. A member's budget is two
    /// connections' worth (a pair of peers uses one connection each way at most).
    pub fn buffered_bytes_budgets(&self) -> (u64, u64) {
        let t = &self.transport;
        let message = self.gossip.max_message_bytes as u64;
        let params = self.model().map_or(0, |m| m.param_count()) as u64;
        let frame = params * 4 + 4096;
        let derived = ((t.max_inflight_per_peer as u64 + 2) * frame * 2).max(message);
        let per_connection = match t.max_buffered_bytes_per_connection {
            0 => derived,
            n => n,
        };
        let per_member = match t.max_buffered_bytes_per_member {
            0 => per_connection.saturating_mul(2),
            n => n,
        };
        (per_connection, per_member)
    }
}

fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, message))
    }
}

fn invalid(key: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_toml_matches_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let parsed = Config::from_file(&path).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[train]\nbatch_sise = 3\n").unwrap_err();
        assert!(err.contains("batch_sise"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let mut c = Config::default();
        c.train.batch_size = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("train.batch_size"), "{err}");
        let mut c = Config::default();
        c.train.shard = "5/4".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("train.shard"), "{err}");
        let err = Config::from_toml("[peer]\njoin_timeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("join_timeout"), "{err}");
    }
}
