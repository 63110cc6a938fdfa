//! The settings a [`super::Core`] runs with, and who the local peer is.
//!
//! Plain data: every sub-machine reads its part of [`CoreConfig`]; nothing here has behaviour
//! beyond defaults and the wire limits derived from the sizes.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::version_vector::VersionVector;
use crate::wire;

use super::membership::swim::SwimConfig;

/// Norms of the last this many accepted deltas (received from a live member of the view, or
/// published here; all-zero deltas left out) form the reference of the norm check
/// ([`CoreConfig::max_delta_norm_factor`]).
pub const NORM_WINDOW: usize = 64;

/// The norm check starts once this many accepted deltas have been seen; before that any finite
/// delta of the right shape passes.
pub const NORM_MIN_SAMPLES: usize = 8;

/// A peer holds its own deltas to this share of the bar it holds others' to: before it
/// publishes, a delta whose norm is above `OWN_NORM_SHARE × max_delta_norm_factor ×` the median
/// norm of the last [`NORM_WINDOW`] deltas it accepted from other members is scaled down to
/// that norm ([`super::Core::own_delta_norm_bound`]). The margin covers the difference between
/// this peer's window and a receiver's reference, so an honest peer's delta is never refused by
/// some members and applied by others.
pub const OWN_NORM_SHARE: f64 = 0.5;

/// Protocol settings. Durations are wall-clock intervals; sizes are bytes.
///
/// This is the `[gossip]` section of the configuration file as it is: keys are the field names,
/// durations take units ("200ms", "2s"), absent keys keep these defaults and unknown keys are
/// errors. Three fields are not keys of that section: `param_count` comes from the model,
/// `swim` is the `[membership]` section and `lifecycle` is filled from `[peer]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// Peers each message is pushed to per hop.
    pub fanout: usize,
    /// Largest TTL this peer sends or accepts (hops).
    pub max_ttl: u8,
    /// Period of membership gossip: pending membership changes are pushed to `fanout` members
    /// (nothing is sent when there is no change).
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Period of anti-entropy digests while training (to one random member).
    #[serde(with = "humantime_serde")]
    pub anti_entropy_interval: Duration,
    /// Period of anti-entropy digests while draining (to every live member).
    #[serde(with = "humantime_serde")]
    pub drain_anti_entropy_interval: Duration,
    /// How long the drain condition must hold, with the same live members and applied set and
    /// no member under suspicion, before the drain completes. Gives a member falsely declared
    /// dead time to refute (draining peers try every dead member each second), so a peer does
    /// not finish alone with a view that lacks that member's deltas.
    #[serde(with = "humantime_serde")]
    pub drain_settle: Duration,
    /// How long an envelope id is remembered (at least 90 s).
    #[serde(with = "humantime_serde")]
    pub seen_retention: Duration,
    /// Most envelope ids remembered.
    pub seen_capacity: usize,
    /// Bytes of delta values kept for anti-entropy pulls.
    pub delta_log_bytes: usize,
    /// Largest message body sent or accepted (bytes).
    pub max_message_bytes: usize,
    /// Most delta bytes pushed in answer to one digest.
    pub anti_entropy_max_bytes: usize,
    /// Anti-entropy pushes another origin's delta only once this peer has held it this long:
    /// until then its origin's own send is most likely still under way.
    #[serde(with = "humantime_serde")]
    pub anti_entropy_delay: Duration,
    /// A delta sent to a peer is not pushed to it again by anti-entropy for this long: it is
    /// most likely still in flight (QUIC retransmits it), and pushing it again only adds load.
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
    /// Deltas whose values take more than this many bytes on the wire (compact encoding) are
    /// spread by lazy push: announced (`Have`) where a small one is pushed, and sent only to
    /// the peers that ask for them (`Want`), so each peer receives each about once.
    /// `u64::MAX` (`"off"` in the file) pushes every delta eagerly.
    #[serde(with = "threshold_serde")]
    pub lazy_push_threshold: u64,
    /// How long a peer waits for a delta it asked an announcer for before it asks the next
    /// peer that announced it; one more second per MiB of the delta is added.
    #[serde(with = "humantime_serde")]
    pub pull_timeout: Duration,
    /// First wait before retrying a join; doubles per attempt up to `join_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub join_backoff_initial: Duration,
    /// Longest wait between join attempts.
    #[serde(with = "humantime_serde")]
    pub join_backoff_max: Duration,
    /// Number of model parameters; a delta or snapshot of another length is rejected.
    #[serde(skip)]
    pub param_count: usize,
    /// A received delta whose L2 norm (of its values, which are already scaled by its weight:
    /// the norm of what would be added to `base`) is above this factor times the reference
    /// norm is rejected as [`super::RejectReason::Norm`]. The reference is the highest median of the
    /// norms of the last [`NORM_WINDOW`] accepted deltas seen so far; it never decreases, so an
    /// early (large) delta delivered late still passes. No check before [`NORM_MIN_SAMPLES`]
    /// deltas were accepted; 0 disables the check. A peer scales its own deltas down to
    /// [`OWN_NORM_SHARE`] of this bar before it publishes them.
    pub max_delta_norm_factor: f32,
    /// A received delta whose version is more than this many versions above the highest
    /// version known of its origin is rejected as [`super::RejectReason::VersionJump`]. The known
    /// version is the larger of the highest version applied from that origin and the
    /// `published` version its member record announces; it is 0 for an origin never heard of,
    /// so a new origin's first deltas must have versions at most this value. 0 disables the
    /// check.
    pub max_version_jump: u64,
    /// Failure detection.
    #[serde(skip)]
    pub swim: SwimConfig,
    /// When this peer starts training, how long it waits to join, how long it drains, and
    /// how often it asks for a checkpoint.
    #[serde(skip)]
    pub lifecycle: LifecycleConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            fanout: 3,
            max_ttl: 6,
            gossip_interval: Duration::from_millis(200),
            anti_entropy_interval: Duration::from_millis(1000),
            drain_anti_entropy_interval: Duration::from_millis(200),
            drain_settle: Duration::from_secs(3),
            seen_retention: Duration::from_secs(120),
            seen_capacity: 65_536,
            delta_log_bytes: 256 * 1024 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            anti_entropy_max_bytes: 8 * 1024 * 1024,
            anti_entropy_delay: Duration::from_secs(2),
            resend_after: Duration::from_secs(5),
            lazy_push_threshold: 64 * 1024,
            pull_timeout: Duration::from_secs(2),
            join_backoff_initial: Duration::from_millis(250),
            join_backoff_max: Duration::from_secs(4),
            param_count: 0,
            max_delta_norm_factor: 10.0,
            max_version_jump: 10_000,
            swim: SwimConfig::default(),
            lifecycle: LifecycleConfig::default(),
        }
    }
}

impl CoreConfig {
    /// The wire limits implied by this config.
    pub fn limits(&self) -> wire::Limits {
        wire::Limits {
            max_body: self.max_message_bytes,
            max_ttl: self.max_ttl,
        }
    }
}

/// `lazy_push_threshold` in a configuration file: a byte count, or `"off"` (stored as
/// `u64::MAX`; TOML integers stop at `i64::MAX`, and anything above is written as `"off"`).
mod threshold_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Bytes(u64),
        Word(String),
    }

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        if *value > i64::MAX as u64 {
            s.serialize_str("off")
        } else {
            s.serialize_u64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Text::deserialize(d)? {
            Text::Bytes(n) => Ok(n),
            Text::Word(w) if w == "off" => Ok(u64::MAX),
            Text::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a byte count or \"off\", found \"{w}\""
            ))),
        }
    }
}

/// The peer lifecycle policy: the `min_peers` gate, the join timeout, the drain deadline and
/// the checkpoint period. The defaults are those of `rumor peer`, except that a core starts
/// training only when told to ([`super::Core::start_training`]) unless `min_peers` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleConfig {
    /// Start training by itself once joined and at least this many members are live (this peer
    /// included), emitting [`super::Event::TrainingStarted`]. `None`: never by itself (a
    /// membership-only peer, or a caller that drives the lifecycle by hand).
    pub min_peers: Option<usize>,
    /// Longest wait after start to be welcomed and reach `min_peers`. Not joined by then:
    /// [`super::Event::JoinFailed`]; joined but short of `min_peers`: training starts with the
    /// members known (`short_of_min_peers`). `None`: wait for ever.
    pub join_timeout: Option<Duration>,
    /// Longest drain: past it the drain ends unfinished ([`super::Event::DrainEnded`] with
    /// `drained: false`). `None`: drain until complete.
    pub drain_timeout: Option<Duration>,
    /// Period of [`super::Event::CheckpointDue`], from start. `None`: never.
    pub checkpoint_interval: Option<Duration>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            min_peers: None,
            join_timeout: Some(Duration::from_secs(60)),
            drain_timeout: Some(Duration::from_secs(60)),
            checkpoint_interval: None,
        }
    }
}

/// The local peer as the core needs to know it.
#[derive(Clone, Debug)]
pub struct LocalPeer {
    /// Stable id (stored in the data dir).
    pub id: PeerId,
    /// Display name (the certificate name).
    pub name: String,
    /// The address other peers reach this one at.
    pub addr: SocketAddr,
    /// What it signs its records and deltas with, and checks everyone's with. `id` must be
    /// bound to the signer's credential ([`crate::auth::KeyId::binds`]), or every other peer
    /// refuses what it says.
    pub keys: crate::auth::PeerKeys,
}

/// State restored from a checkpoint (`rumor peer --resume`).
#[derive(Clone, Debug)]
pub struct RestoredState {
    /// The saved base, flat.
    pub base: Vec<f32>,
    /// The deltas folded into it.
    pub applied: VersionVector,
    /// The last version this peer published before it stopped.
    pub published: u64,
    /// The incarnation it ran with; the restarted peer uses one more.
    pub incarnation: u64,
    /// The content hash of the applied deltas whose content was saved (a checkpoint made before
    /// contents were kept has none: those origins are then not compared for equivocation).
    pub contents: Vec<(crate::id::PeerId, u64, crate::auth::ContentHash)>,
}

impl RestoredState {
    /// What is left of a peer whose checkpoint was lost or damaged: θ₀ (`initial`), nothing
    /// applied, published 0 and incarnation 0. Restored from it, the peer rejoins at
    /// incarnation 1, outranks any higher incarnation of itself it hears of, and learns its
    /// base and the versions it published from a seed's snapshot and the members' records.
    pub fn lost(initial: Vec<f32>) -> Self {
        Self {
            base: initial,
            applied: VersionVector::new(),
            contents: Vec::new(),
            published: 0,
            incarnation: 0,
        }
    }
}
