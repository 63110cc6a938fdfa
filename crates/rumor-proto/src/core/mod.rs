//! The sans-IO protocol core: membership, dissemination and the version-vector merge.
//!
//! [`Core`] is a state machine in the manner of quinn-proto. It does no I/O and reads no clock:
//! the caller passes `now` and decoded messages in ([`Core::handle_message`],
//! [`Core::handle_timeout`], the local events [`Core::publish`], [`Core::start_drain`],
//! [`Core::leave`]) and drains what the core wants done ([`Core::poll_transmit`],
//! [`Core::poll_event`], [`Core::poll_timeout`]). Randomness comes from a seeded RNG, so the same
//! inputs give the same outputs; the simulator and the unit tests drive many cores without sockets.
//!
//! The merge keeps the invariant `base = θ₀ + Σ_{(o,v) ∈ applied} d_{o,v}` (docs/ALGORITHM.md):
//! every delta is added at most once, whatever path and how many times it arrives.

pub mod delta_log;
pub mod membership;
pub mod seen;
pub mod swim;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::id::MessageId;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::version_vector::VersionVector;
use crate::wire::{
    self, DeltaPayload, Digest, Envelope, JoinRequest, LeaveNotice, Lifecycle, MemberRecord,
    MemberStatus, MembershipView, MessageKind, Payload, PeerId, PingRequest, Probe, Snapshot,
    Welcome,
};
use delta_log::{DeltaLog, LoggedDelta};
use membership::{Membership, MergeOutcome};
use seen::SeenCache;
use swim::{PendingProbe, Relay, Suspicion, SwimConfig, SwimState};

/// Most membership records piggybacked on one probe or gossip message.
const MAX_PIGGYBACK: usize = 8;

/// Most missing versions listed in one [`Event::GapDetected`].
const MAX_GAP_REPORT: usize = 1024;

/// Norms of the last this many accepted deltas (received from a live member of the view, or
/// published here; all-zero deltas left out) form the reference of the norm check
/// ([`CoreConfig::max_delta_norm_factor`]).
pub const NORM_WINDOW: usize = 64;

/// The norm check starts once this many accepted deltas have been seen; before that any finite
/// delta of the right shape passes.
pub const NORM_MIN_SAMPLES: usize = 8;

/// Protocol settings. Durations are wall-clock intervals; sizes are bytes.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Peers each message is pushed to per hop.
    pub fanout: usize,
    /// Largest TTL this peer sends or accepts (hops).
    pub max_ttl: u8,
    /// Period of membership gossip: pending membership changes are pushed to `fanout` members
    /// (nothing is sent when there is no change).
    pub gossip_interval: Duration,
    /// Period of anti-entropy digests while training (to one random member).
    pub anti_entropy_interval: Duration,
    /// Period of anti-entropy digests while draining (to every live member).
    pub drain_anti_entropy_interval: Duration,
    /// While some member is declared dead, how long the drain condition must hold, with the
    /// same dead members and applied set, before the drain completes. Gives a member falsely
    /// declared dead time to refute (draining peers try every dead member each second), so a
    /// peer does not finish with a view that lacks that member's deltas. With no member declared
    /// dead the drain completes as soon as the condition holds.
    pub drain_settle: Duration,
    /// How long an envelope id is remembered (at least 90 s).
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
    pub anti_entropy_delay: Duration,
    /// A delta sent to a peer is not pushed to it again by anti-entropy for this long: it is
    /// most likely still in flight (QUIC retransmits it), and pushing it again only adds load.
    pub resend_after: Duration,
    /// First wait before retrying a join; doubles per attempt up to `join_backoff_max`.
    pub join_backoff_initial: Duration,
    /// Longest wait between join attempts.
    pub join_backoff_max: Duration,
    /// Number of model parameters; a delta or snapshot of another length is rejected.
    pub param_count: usize,
    /// A received delta whose L2 norm (of its values, which are already scaled by its weight:
    /// the norm of what would be added to `base`) is above this factor times the reference
    /// norm is rejected as [`RejectReason::Norm`]. The reference is the highest median of the
    /// norms of the last [`NORM_WINDOW`] accepted deltas seen so far; it never decreases, so an
    /// early (large) delta delivered late still passes. No check before [`NORM_MIN_SAMPLES`]
    /// deltas were accepted; 0 disables the check.
    pub max_delta_norm_factor: f32,
    /// A received delta whose version is more than this many versions above the highest
    /// version known of its origin is rejected as [`RejectReason::VersionJump`]. The known
    /// version is the larger of the highest version applied from that origin and the
    /// `published` version its member record announces; it is 0 for an origin never heard of,
    /// so a new origin's first deltas must have versions at most this value. 0 disables the
    /// check.
    pub max_version_jump: u64,
    /// Failure detection.
    pub swim: SwimConfig,
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
            join_backoff_initial: Duration::from_millis(250),
            join_backoff_max: Duration::from_secs(4),
            param_count: 0,
            max_delta_norm_factor: 10.0,
            max_version_jump: 10_000,
            swim: SwimConfig::default(),
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

/// The local peer as the core needs to know it.
#[derive(Clone, Debug)]
pub struct LocalPeer {
    /// Stable id (stored in the data dir).
    pub id: PeerId,
    /// Display name (the certificate name).
    pub name: String,
    /// The address other peers reach this one at.
    pub addr: SocketAddr,
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
}

/// One message to send to one or more peers.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Listen addresses to send to (the same envelope to each).
    pub to: Vec<SocketAddr>,
    /// The message.
    pub envelope: Envelope,
}

/// How long a delta sent without a reported outcome blocks anti-entropy from pushing it to the
/// same destination again (a safety net: the shell reports every outcome well before this).
const MAX_IN_FLIGHT_AGE: Duration = Duration::from_secs(60);

/// What this peer knows of one delta's way to one destination.
#[derive(Clone, Copy, Debug)]
enum Sent {
    /// Sent at this time; no outcome reported yet.
    InFlight(Instant),
    /// The destination has it (delivered, or it sent it to us) as of this time.
    Has(Instant),
}

/// Why a delta was refused. Refused deltas change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RejectReason {
    /// Its length is not the model's parameter count.
    Shape,
    /// It holds NaN or an infinity.
    NonFinite,
    /// Its weight is outside (0, 1].
    Weight,
    /// Version 0 is never published.
    Version,
    /// Its L2 norm is far above the norms of recently accepted deltas
    /// ([`CoreConfig::max_delta_norm_factor`]).
    Norm,
    /// Its version is too far above the highest version known of its origin
    /// ([`CoreConfig::max_version_jump`]).
    VersionJump,
}

impl RejectReason {
    /// Lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Shape => "shape",
            RejectReason::NonFinite => "non_finite",
            RejectReason::Weight => "weight",
            RejectReason::Version => "version",
            RejectReason::Norm => "norm",
            RejectReason::VersionJump => "version_jump",
        }
    }
}

/// Something the shell or the trainer must know about.
#[derive(Clone, Debug)]
pub enum Event {
    /// A seed welcomed this peer; `base` has been replaced by its snapshot.
    Joined {
        /// The seed that answered.
        via: PeerId,
        /// Live members known after the merge.
        members: usize,
    },
    /// A peer not known before appeared in the view.
    MemberUp(MemberRecord),
    /// A member left or was declared dead.
    MemberDown(MemberRecord),
    /// A member is suspected of failure.
    MemberSuspect(MemberRecord),
    /// A delta from another peer was added to `base`; the trainer adds it to `work` too.
    DeltaApplied {
        /// Who published it.
        origin: PeerId,
        /// Its version.
        version: u64,
        /// The values added (flat, scaled).
        values: Arc<[f32]>,
    },
    /// `base` was replaced by a snapshot (topped up with the deltas it lacked).
    BaseReplaced {
        /// The new base, flat.
        base: Arc<[f32]>,
        /// False when some delta this peer had could not be re-applied (counted as inexact).
        exact: bool,
    },
    /// A delta arrived while earlier versions of the same origin are missing.
    GapDetected {
        /// The origin with a gap.
        origin: PeerId,
        /// The missing versions.
        missing: Vec<u64>,
    },
    /// A delta was refused.
    DeltaRejected {
        /// Who published it.
        origin: PeerId,
        /// Why.
        reason: RejectReason,
    },
}

/// Counters of what the core has seen and done since it started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CoreStats {
    /// Messages handled, by kind (after dedup).
    pub received: BTreeMap<&'static str, u64>,
    /// Messages queued for sending, by kind, counted once per destination.
    pub sent: BTreeMap<&'static str, u64>,
    /// Envelopes dropped because their id was in the seen-cache.
    pub duplicates_dropped: u64,
    /// Deltas whose `(origin, version)` was already applied (arrived by another path).
    pub deltas_already_applied: u64,
    /// Deltas added to the base from other peers.
    pub deltas_applied: u64,
    /// Deltas published by this peer.
    pub deltas_published: u64,
    /// Forwarded envelopes (counted once per forward, not per destination).
    pub forwarded: u64,
    /// Envelopes not forwarded because their TTL reached 0.
    pub ttl_expired: u64,
    /// Deltas refused, by reason (`shape`, `non_finite`, `weight`, `version`, `norm`,
    /// `version_jump`).
    pub deltas_rejected: BTreeMap<&'static str, u64>,
    /// Frames that failed to decode.
    pub decode_errors: u64,
    /// Times a delta arrived ahead of a missing earlier version of its origin.
    pub gaps_detected: u64,
    /// Deltas pushed in answer to anti-entropy digests.
    pub anti_entropy_deltas_sent: u64,
    /// Delta sends the shell reported failed (refused, timed out, or dropped because the
    /// destination had too many in flight); anti-entropy pushes them again.
    pub delta_sends_failed: u64,
    /// Snapshots sent because a peer lacked deltas no longer in the log.
    pub snapshots_sent: u64,
    /// Snapshots installed (the join's included).
    pub snapshots_installed: u64,
    /// Snapshot installs that could not re-apply every delta this peer held (inexact merges).
    pub inexact_merges: u64,
    /// Join requests sent.
    pub join_attempts: u64,
    /// Join requests passed on to another member to answer (snapshot load spreading).
    pub joins_forwarded: u64,
    /// Direct probes sent.
    pub probes_sent: u64,
    /// Indirect probe requests sent.
    pub indirect_probes_sent: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Members this peer started to suspect.
    pub suspicions_raised: u64,
    /// Members this peer declared dead after the suspicion timeout.
    pub members_declared_dead: u64,
    /// Times this peer refuted a suspicion of itself.
    pub refutations: u64,
}

/// What this peer last heard of another peer's progress, from its digests.
#[derive(Clone, Debug)]
struct PeerProgress {
    applied: VersionVector,
    lifecycle: Lifecycle,
}

/// The protocol state machine of one peer. See the module docs.
pub struct Core {
    config: CoreConfig,
    me: LocalPeer,
    rng: ChaCha8Rng,
    lifecycle: Lifecycle,
    members: Membership,
    seen: SeenCache,
    applied: VersionVector,
    base: Vec<f32>,
    log: DeltaLog,
    published: u64,
    incarnation: u64,
    progress: HashMap<PeerId, PeerProgress>,
    /// Deltas recently sent to a peer: (target, origin, version) → when.
    recently_sent: HashMap<(SocketAddr, PeerId, u64), Sent>,
    /// Failure detector.
    swim: SwimState,
    /// Membership changes still to piggyback, with retransmits left.
    updates: Vec<(MemberRecord, u32)>,
    next_probe: Instant,
    next_push_pull: Instant,
    next_reconnect: Instant,
    /// While some member is declared dead: since when the drain condition holds, and the view
    /// ([`Core::drain_view`]) it holds for.
    drain_since: Option<(Instant, u64)>,
    /// Whether the drain may end ([`Core::drain_complete`]).
    drain_settled: bool,
    /// When a digest was last sent to a peer because its applied fingerprint differed.
    last_digest_to: HashMap<PeerId, Instant>,
    seeds: Vec<SocketAddr>,
    joined: bool,
    join_attempt: u32,
    next_join: Option<Instant>,
    next_gossip: Instant,
    next_anti_entropy: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: CoreStats,
    /// L2 norms of the last [`NORM_WINDOW`] accepted deltas (a ring).
    norms: VecDeque<f64>,
    /// The highest median of `norms` seen (0 until [`NORM_MIN_SAMPLES`] were accepted).
    norm_reference: f64,
    /// The latest `now` passed in by the caller.
    now: Instant,
}

impl Core {
    /// A fresh peer with initial parameters `base` (θ₀, flat, `config.param_count` long).
    ///
    /// With no `seeds` the peer starts a new cluster and counts as joined at once; otherwise it
    /// sends `Join` to the seeds in turn, with exponential backoff, until one answers `Welcome`.
    pub fn new(
        config: CoreConfig,
        me: LocalPeer,
        base: Vec<f32>,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        Self::build(
            config,
            me,
            base,
            VersionVector::new(),
            0,
            0,
            seeds,
            rng_seed,
            now,
        )
    }

    /// A peer restarted from a checkpoint: it keeps its base, applied set and published
    /// version, and rejoins with a higher incarnation.
    pub fn restore(
        config: CoreConfig,
        me: LocalPeer,
        state: RestoredState,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        Self::build(
            config,
            me,
            state.base,
            state.applied,
            state.published,
            state.incarnation + 1,
            seeds,
            rng_seed,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        config: CoreConfig,
        me: LocalPeer,
        base: Vec<f32>,
        applied: VersionVector,
        published: u64,
        incarnation: u64,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let record = MemberRecord {
            peer_id: me.id,
            name: me.name.clone(),
            addr: me.addr,
            incarnation,
            heartbeat: 0,
            status: MemberStatus::Alive,
            lifecycle: Lifecycle::Joining,
            published,
        };
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let joined = seeds.is_empty();
        Self {
            seen: SeenCache::new(config.seen_retention, config.seen_capacity),
            log: DeltaLog::new(config.delta_log_bytes),
            // Mixing in the peer id keeps envelope ids distinct across peers that were given
            // the same seed, while a run stays a pure function of (seed, peer id).
            rng: ChaCha8Rng::seed_from_u64({
                let id = me.id.as_uuid().as_u128();
                rng_seed ^ (id as u64) ^ ((id >> 64) as u64).rotate_left(17)
            }),
            lifecycle: Lifecycle::Joining,
            members: Membership::new(record),
            applied,
            base,
            published,
            incarnation,
            progress: HashMap::new(),
            recently_sent: HashMap::new(),
            swim: SwimState::default(),
            updates: Vec::new(),
            next_probe: now + config.swim.probe_interval,
            next_push_pull: now + config.swim.push_pull_interval,
            next_reconnect: now + config.swim.reconnect_interval,
            drain_since: None,
            drain_settled: false,
            last_digest_to: HashMap::new(),
            joined,
            join_attempt: 0,
            next_join: if joined { None } else { Some(now) },
            next_gossip: now + config.gossip_interval,
            next_anti_entropy: now + config.anti_entropy_interval,
            seeds,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: CoreStats::default(),
            norms: VecDeque::with_capacity(NORM_WINDOW),
            norm_reference: 0.0,
            now,
            config,
            me,
        }
    }

    // ----- queries -------------------------------------------------------------------------

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.me.id
    }

    /// The current base (flat, layout order).
    pub fn base(&self) -> &[f32] {
        &self.base
    }

    /// The deltas folded into the base.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// The last version this peer published (0 before the first).
    pub fn published(&self) -> u64 {
        self.published
    }

    /// This peer's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Where this peer is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// Whether a seed has welcomed this peer (or it started the cluster).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Live members (alive or suspect), this peer included: the `n` of the weight `w = 1/n`.
    pub fn live_count(&self) -> usize {
        self.members.live_count()
    }

    /// Every member record held, this peer's own included.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.iter()
    }

    /// The settings this core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Bytes and entries of the delta log.
    pub fn delta_log_usage(&self) -> (usize, usize) {
        (self.log.bytes(), self.log.len())
    }

    /// The lifecycle and applied set another peer last reported in a digest.
    pub fn peer_progress(&self, peer: &PeerId) -> Option<(Lifecycle, &VersionVector)> {
        self.progress.get(peer).map(|p| (p.lifecycle, &p.applied))
    }

    /// Whether draining may end: this peer is draining, every other live member has said it is
    /// draining (so its last delta is published) and reported the same applied set as this peer,
    /// and none is under suspicion. While some member is declared dead (by failure detection,
    /// not by leaving), that must also have held for [`CoreConfig::drain_settle`] with the same
    /// dead members and applied set, so that a member declared dead falsely can refute first.
    pub fn drain_complete(&self) -> bool {
        self.drain_settled
    }

    /// The drain condition at this instant (see [`Core::drain_complete`]).
    fn drain_condition(&self) -> bool {
        // Gaps do not block: a version every live peer lacks (published by a peer that crashed
        // before it got out) can never arrive, and equal applied sets are what consistency needs.
        if self.lifecycle != Lifecycle::Draining {
            return false;
        }
        // Members that left or died are not waited for: every live peer must agree with this
        // one, so whatever they published reached all or none of the survivors.
        self.members.live().all(|m| {
            m.peer_id == self.me.id
                || (m.status == MemberStatus::Alive
                    && self.progress.get(&m.peer_id).is_some_and(|p| {
                        p.lifecycle >= Lifecycle::Draining && p.applied == self.applied
                    }))
        })
    }

    /// The members declared dead by failure detection, with their incarnations, and the applied
    /// set: what must stay unchanged while the drain settles. `None` when no member is declared
    /// dead, so there is nothing to settle. A member that left is not in it: it said so itself,
    /// so there is no false verdict to wait out.
    fn drain_view(&self) -> Option<u64> {
        let mut dead: Vec<(PeerId, u64)> = self
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Dead && m.peer_id != self.me.id)
            .map(|m| (m.peer_id, m.incarnation))
            .collect();
        if dead.is_empty() {
            return None;
        }
        dead.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        dead.hash(&mut hasher);
        self.applied.fingerprint().hash(&mut hasher);
        Some(hasher.finish())
    }

    /// Re-evaluates [`Core::drain_complete`] at `now`.
    ///
    /// The settle only guards against a false death: a member wrongly declared dead is not waited
    /// for, so every peer that agrees without it could stop at once without its last deltas. A
    /// live member, suspected or not, already blocks the condition until it reports the same
    /// applied set, and a member that left said so itself. So with no member declared
    /// dead the drain ends as soon as the condition holds (one digest round after the applied
    /// sets agree), and the settle applies only while someone is declared dead.
    fn update_drain(&mut self, now: Instant) {
        if !self.drain_condition() {
            self.drain_since = None;
            self.drain_settled = false;
            return;
        }
        let Some(view) = self.drain_view() else {
            self.drain_since = None;
            self.drain_settled = true;
            return;
        };
        match self.drain_since {
            Some((since, v)) if v == view => {
                self.drain_settled =
                    now.saturating_duration_since(since) >= self.config.drain_settle;
            }
            _ => {
                self.drain_since = Some((now, view));
                self.drain_settled = self.config.drain_settle.is_zero();
            }
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self
            .next_gossip
            .min(self.next_anti_entropy)
            .min(self.next_probe)
            .min(self.next_push_pull)
            .min(self.next_reconnect);
        if let Some(join) = self.next_join {
            next = next.min(join);
        }
        if let Some(p) = &self.swim.pending {
            next = next.min(if p.indirect_sent {
                p.fail_at
            } else {
                p.indirect_at
            });
        }
        if let Some(at) = self.next_suspicion_deadline() {
            next = next.min(at);
        }
        next
    }

    fn next_suspicion_deadline(&self) -> Option<Instant> {
        if self.swim.suspicions.is_empty() {
            return None;
        }
        let n = self.live_count();
        self.swim
            .suspicions
            .values()
            .map(|s| s.started + self.config.swim.suspicion_timeout(n, s.confirmations.len()))
            .min()
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Advances timers: membership gossip, anti-entropy digests, join retries, seen-cache expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.seen.expire(now);
        let window = self.config.resend_after;
        self.recently_sent.retain(|_, sent| match *sent {
            Sent::InFlight(at) => now.saturating_duration_since(at) < MAX_IN_FLIGHT_AGE,
            Sent::Has(at) => now.saturating_duration_since(at) < window,
        });
        if let Some(at) = self.next_join {
            if now >= at && !self.joined {
                self.send_join(now);
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.config.gossip_interval;
            self.gossip_updates();
        }
        if now >= self.next_push_pull {
            self.next_push_pull = now + self.config.swim.push_pull_interval;
            let targets = self.pick_peers(1, &[]);
            self.send_view(targets, true, false);
        }
        if now >= self.next_reconnect {
            // One member believed dead per period; while draining, every one of them each
            // second, so that a peer that was only cut off is not left behind by the drain.
            let draining = self.lifecycle == Lifecycle::Draining;
            let period = if draining {
                self.config
                    .swim
                    .reconnect_interval
                    .min(Duration::from_secs(1))
            } else {
                self.config.swim.reconnect_interval
            };
            self.next_reconnect = now + period;
            let mut dead: Vec<(PeerId, SocketAddr)> = self
                .members
                .iter()
                .filter(|m| m.status == MemberStatus::Dead)
                .map(|m| (m.peer_id, m.addr))
                .collect();
            dead.sort();
            let targets: Vec<SocketAddr> = if draining {
                dead.iter().map(|&(_, addr)| addr).collect()
            } else {
                dead.choose(&mut self.rng)
                    .map(|&(_, a)| a)
                    .into_iter()
                    .collect()
            };
            self.send_view(targets, true, false);
        }
        self.run_failure_detector(now);
        if now >= self.next_anti_entropy && self.lifecycle < Lifecycle::Training {
            self.next_anti_entropy = now + self.config.anti_entropy_interval;
        } else if now >= self.next_anti_entropy {
            let draining = self.lifecycle == Lifecycle::Draining;
            self.next_anti_entropy = now
                + if draining {
                    self.config.drain_anti_entropy_interval
                } else {
                    self.config.anti_entropy_interval
                };
            let targets = if draining {
                self.live_peer_addrs(&[])
            } else {
                self.pick_peers(1, &[])
            };
            self.send_digest(targets, false);
        }
        self.update_drain(now);
    }

    /// Decodes a frame from `from` and handles it; a frame that does not decode is counted in
    /// `decode_errors` and changes nothing else.
    ///
    /// Errors: the [`wire::DecodeError`], for logging.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frame: &[u8],
    ) -> Result<(), wire::DecodeError> {
        match wire::decode(frame, self.config.limits()) {
            Ok(envelope) => {
                self.handle_message(now, from, envelope);
                Ok(())
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    /// How many of this peer's own deltas are still on their way (sent, no outcome reported)
    /// to some member that is alive and not under suspicion. For flow control: the trainer
    /// publishes no more while this is at its window.
    pub fn own_deltas_unacked(&self) -> usize {
        let alive: std::collections::HashSet<SocketAddr> = self
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive && m.peer_id != self.me.id)
            .map(|m| m.addr)
            .collect();
        let mut versions: Vec<u64> = self
            .recently_sent
            .iter()
            .filter(|((to, origin, _), sent)| {
                *origin == self.me.id && matches!(sent, Sent::InFlight(_)) && alive.contains(to)
            })
            .map(|((_, _, version), _)| *version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions.len()
    }

    /// What became of a delta this peer sent to `to` (the address of a
    /// [`Transmit`]): `delivered` when the receiver's transport acknowledged every byte, false
    /// when the send failed, timed out or was never made. Until then anti-entropy does not push
    /// that delta to `to` again (a send under loss can take long; pushing it again only adds
    /// load); after a failure it pushes it at the next digest that shows it missing. Reporting
    /// is optional: an unreported send stops blocking re-pushes after 60 s.
    pub fn send_outcome(
        &mut self,
        now: Instant,
        to: SocketAddr,
        origin: PeerId,
        version: u64,
        delivered: bool,
    ) {
        self.now = self.now.max(now);
        let key = (to, origin, version);
        if delivered {
            self.recently_sent.insert(key, Sent::Has(self.now));
        } else if matches!(self.recently_sent.get(&key), Some(Sent::InFlight(_))) {
            self.recently_sent.remove(&key);
            self.stats.delta_sends_failed += 1;
        }
    }

    /// Handles one decoded message received from the peer at `from` (the connection's remote
    /// address). Duplicates by envelope id are dropped; nothing here panics on any input.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, envelope: Envelope) {
        self.handle_message_inner(now, from, envelope);
        self.update_drain(now);
    }

    fn handle_message_inner(&mut self, now: Instant, from: SocketAddr, envelope: Envelope) {
        self.now = self.now.max(now);
        if envelope.ttl > self.config.max_ttl {
            self.stats.decode_errors += 1;
            return;
        }
        if !self.seen.insert(now, envelope.id) {
            self.stats.duplicates_dropped += 1;
            return;
        }
        *self
            .stats
            .received
            .entry(envelope.payload.kind().as_str())
            .or_default() += 1;
        let origin = envelope.origin;
        match envelope.payload {
            Payload::Delta(ref delta) => {
                let delta = delta.clone();
                self.handle_delta(from, &envelope, delta);
            }
            Payload::Membership(view) => {
                let answer = view.push_pull && !view.reply;
                self.merge_view(view.members, Some(origin));
                if answer {
                    self.send_view(vec![envelope.origin_addr], true, true);
                }
            }
            Payload::Join(JoinRequest { member, forwarded }) => self.handle_join(
                origin,
                envelope.origin_addr,
                envelope.version,
                member,
                forwarded,
            ),
            Payload::Ping(probe) => {
                self.merge_view(probe.updates, Some(origin));
                self.check_fingerprint(origin, envelope.origin_addr, probe.applied_hash);
                let ack = self.probe_payload(probe.seq);
                let env = self.envelope(0, 1, Payload::Ack(ack));
                self.queue(vec![envelope.origin_addr], env);
            }
            Payload::Ack(probe) => {
                self.merge_view(probe.updates, Some(origin));
                self.check_fingerprint(origin, envelope.origin_addr, probe.applied_hash);
                self.handle_ack(now, probe.seq);
            }
            Payload::PingReq(mut req) => {
                let updates = std::mem::take(&mut req.updates);
                self.merge_view(updates, Some(origin));
                self.relay_probe(now, envelope.origin_addr, req);
            }
            Payload::Welcome(welcome) => self.handle_welcome(origin, welcome),
            Payload::Digest(digest) => self.handle_digest(origin, envelope.origin_addr, digest),
            Payload::Snapshot(mut snapshot) => {
                snapshot.applied.normalize();
                if !snapshot.applied.is_subset_of(&self.applied) {
                    self.install_snapshot(snapshot);
                }
            }
            Payload::Leave(notice) => self.handle_leave(origin, notice),
        }
    }

    /// Publishes a local delta `values` (flat, already scaled by `weight`), which the trainer
    /// has already added to its own base. Returns the version assigned.
    ///
    /// Errors: [`RejectReason`] when the delta has the wrong length, non-finite values or a
    /// weight outside (0, 1]; nothing changes then.
    pub fn publish(
        &mut self,
        now: Instant,
        weight: f32,
        values: Vec<f32>,
    ) -> Result<u64, RejectReason> {
        self.now = self.now.max(now);
        self.check_delta(weight, &values)?;
        self.record_norm(l2_norm(&values));
        self.published += 1;
        let version = self.published;
        let values: Arc<[f32]> = values.into();
        add_into(&mut self.base, &values);
        self.applied.insert(self.me.id, version);
        self.log.insert(
            self.me.id,
            version,
            LoggedDelta {
                weight,
                values: values.clone(),
                logged_at: now,
            },
        );
        self.stats.deltas_published += 1;
        if let Some(me) = self.members.get_mut(&self.me.id) {
            me.published = version;
        }
        let live = self.live_count();
        let to = self.pick_peers(self.config.fanout, &[]);
        let ttl = self.initial_ttl(live);
        let envelope = self.envelope(
            version,
            ttl,
            Payload::Delta(DeltaPayload { weight, values }),
        );
        self.queue(to, envelope);
        Ok(version)
    }

    /// Marks this peer as training (after joining and waiting for enough members).
    pub fn start_training(&mut self) {
        self.set_lifecycle(Lifecycle::Training);
    }

    /// The training budget is spent and the last delta published: keep gossiping, with digests
    /// to every live member, until [`Core::drain_complete`].
    pub fn start_drain(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.set_lifecycle(Lifecycle::Draining);
        self.next_anti_entropy = now;
        self.next_gossip = now;
        self.next_reconnect = now;
        self.update_drain(now);
    }

    /// Leaves for good: tells every live member, then stops.
    pub fn leave(&mut self) {
        self.set_lifecycle(Lifecycle::Stopped);
        if let Some(me) = self.members.get_mut(&self.me.id) {
            me.status = MemberStatus::Left;
        }
        let to = self.live_peer_addrs(&[]);
        let envelope = self.envelope(
            self.published,
            1,
            Payload::Leave(LeaveNotice {
                published: self.published,
                incarnation: self.incarnation,
            }),
        );
        self.queue(to, envelope);
    }

    /// A snapshot of this peer's base and applied set, as sent in `Welcome`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            base: self.base.clone().into(),
            applied: self.applied.clone(),
        }
    }

    // ----- internals -----------------------------------------------------------------------

    fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
        if let Some(me) = self.members.get_mut(&self.me.id) {
            me.lifecycle = lifecycle;
            me.published = self.published;
            me.heartbeat += 1;
        }
        self.enqueue_own();
    }

    fn check_delta(&self, weight: f32, values: &[f32]) -> Result<(), RejectReason> {
        if values.len() != self.config.param_count {
            return Err(RejectReason::Shape);
        }
        if !(weight.is_finite() && weight > 0.0 && weight <= 1.0) {
            return Err(RejectReason::Weight);
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(RejectReason::NonFinite);
        }
        Ok(())
    }

    /// The highest version known of `origin`: applied, or announced in its member record.
    fn known_version(&self, origin: PeerId) -> u64 {
        let announced = self.members.get(&origin).map_or(0, |m| m.published);
        self.applied.max_of(origin).max(announced)
    }

    fn check_version_jump(&self, origin: PeerId, version: u64) -> Result<(), RejectReason> {
        let jump = self.config.max_version_jump;
        if jump > 0 && version > self.known_version(origin).saturating_add(jump) {
            return Err(RejectReason::VersionJump);
        }
        Ok(())
    }

    fn check_norm(&self, norm: f64) -> Result<(), RejectReason> {
        let factor = f64::from(self.config.max_delta_norm_factor);
        if factor <= 0.0 || self.norm_reference <= 0.0 {
            return Ok(());
        }
        if norm > factor * self.norm_reference {
            return Err(RejectReason::Norm);
        }
        Ok(())
    }

    /// Adds an accepted delta's norm to the window and raises the reference to the window's
    /// median if that is higher.
    ///
    /// The reference never goes down: deltas shrink as training converges, and a delta
    /// published early but delivered late (a straggler, an anti-entropy repair) must still pass,
    /// or the peers that rejected it would never be consistent with those that applied it.
    fn record_norm(&mut self, norm: f64) {
        if norm.is_nan() || norm <= 0.0 {
            return;
        }
        if self.norms.len() >= NORM_WINDOW {
            self.norms.pop_front();
        }
        self.norms.push_back(norm);
        if self.norms.len() >= NORM_MIN_SAMPLES {
            let mut sorted: Vec<f64> = self.norms.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            self.norm_reference = self.norm_reference.max(sorted[sorted.len() / 2]);
        }
    }

    fn reject(&mut self, origin: PeerId, reason: RejectReason) {
        *self
            .stats
            .deltas_rejected
            .entry(reason.as_str())
            .or_default() += 1;
        self.events
            .push_back(Event::DeltaRejected { origin, reason });
    }

    fn handle_delta(&mut self, from: SocketAddr, envelope: &Envelope, delta: DeltaPayload) {
        let origin = envelope.origin;
        let version = envelope.version;
        if version == 0 {
            self.reject(origin, RejectReason::Version);
            return;
        }
        if let Err(reason) = self.check_delta(delta.weight, &delta.values) {
            self.reject(origin, reason);
            return;
        }
        if self.applied.contains(origin, version) {
            self.stats.deltas_already_applied += 1;
            return;
        }
        if let Err(reason) = self.check_version_jump(origin, version) {
            self.reject(origin, reason);
            return;
        }
        let norm = l2_norm(&delta.values);
        if let Err(reason) = self.check_norm(norm) {
            self.reject(origin, reason);
            return;
        }
        // Only members' deltas shape the reference: deltas from origins outside the view (or
        // all-zero ones) could otherwise drag the median down until honest deltas fail.
        if self
            .members
            .get(&origin)
            .is_some_and(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
        {
            self.record_norm(norm);
        }
        // The sender has it; never push it back.
        self.recently_sent
            .insert((from, origin, version), Sent::Has(self.now));
        let before = self.applied.max_of(origin);
        add_into(&mut self.base, &delta.values);
        self.applied.insert(origin, version);
        self.log.insert(
            origin,
            version,
            LoggedDelta {
                weight: delta.weight,
                values: delta.values.clone(),
                logged_at: self.now,
            },
        );
        self.stats.deltas_applied += 1;
        if origin == self.me.id {
            // One of our own deltas coming back after a restart: never publish it again.
            self.published = self.published.max(version);
        }
        if version > before + 1 {
            self.stats.gaps_detected += 1;
            let missing = self
                .applied
                .origins()
                .get(&origin)
                .map(|e| e.missing_at_most(MAX_GAP_REPORT))
                .unwrap_or_default();
            self.events
                .push_back(Event::GapDetected { origin, missing });
        }
        self.events.push_back(Event::DeltaApplied {
            origin,
            version,
            values: delta.values.clone(),
        });
        self.forward(from, envelope, Payload::Delta(delta));
    }

    /// Forwards a newly handled envelope with its TTL decremented, unless it reaches 0.
    fn forward(&mut self, from: SocketAddr, envelope: &Envelope, payload: Payload) {
        let ttl = envelope.ttl.saturating_sub(1);
        if ttl == 0 {
            self.stats.ttl_expired += 1;
            return;
        }
        let mut exclude = vec![envelope.origin];
        if let Some(sender) = self.members.by_addr(from) {
            exclude.push(sender.peer_id);
        }
        let to = self.pick_peers(self.config.fanout, &exclude);
        if to.is_empty() {
            return;
        }
        self.stats.forwarded += 1;
        let forwarded = Envelope {
            id: envelope.id,
            origin: envelope.origin,
            origin_addr: envelope.origin_addr,
            version: envelope.version,
            ttl,
            payload,
        };
        self.queue(to, forwarded);
    }

    fn merge_view(&mut self, records: Vec<MemberRecord>, from: Option<PeerId>) {
        for record in records {
            self.merge_record(record, from);
        }
    }

    /// Merges one record by version (DESIGN §3), queues real changes for piggybacking, keeps
    /// the suspicion bookkeeping, and refutes suspicions of this peer. `from` is the peer whose
    /// message carried the record (an independent confirmation of a suspicion).
    fn merge_record(&mut self, record: MemberRecord, from: Option<PeerId>) {
        if record.peer_id == self.me.id {
            // A restarted peer learns the versions it published before its checkpoint.
            self.published = self.published.max(record.published);
            // Someone believes a worse version of us: refute by raising the incarnation (SWIM),
            // unless we are leaving anyway.
            if record.status != MemberStatus::Alive
                && record.incarnation >= self.incarnation
                && self.lifecycle != Lifecycle::Stopped
            {
                self.incarnation = record.incarnation + 1;
                self.stats.refutations += 1;
                // Lifeguard: being suspected hints that this peer is the slow one.
                self.swim
                    .adjust_awareness(1, self.config.swim.awareness_max_multiplier);
                if let Some(me) = self.members.get_mut(&self.me.id) {
                    me.incarnation = self.incarnation;
                    me.status = MemberStatus::Alive;
                    me.heartbeat += 1;
                }
                self.enqueue_own();
            } else if record.incarnation > self.incarnation && self.lifecycle != Lifecycle::Stopped
            {
                // Someone knows an alive incarnation of us above ours: this peer restarted
                // without its state (e.g. a damaged checkpoint). Outrank it, so that its records
                // and ours do not fight over which one is current.
                self.incarnation = record.incarnation + 1;
                if let Some(me) = self.members.get_mut(&self.me.id) {
                    me.incarnation = self.incarnation;
                    me.heartbeat += 1;
                }
                self.enqueue_own();
            }
            return;
        }
        let peer = record.peer_id;
        match self.members.merge(record.clone()) {
            MergeOutcome::New => {
                self.enqueue_update(record.clone());
                match record.status {
                    MemberStatus::Alive => self.events.push_back(Event::MemberUp(record)),
                    MemberStatus::Suspect => {
                        self.events.push_back(Event::MemberUp(record.clone()));
                        self.start_suspicion(&record, from);
                    }
                    MemberStatus::Dead | MemberStatus::Left => {}
                }
            }
            MergeOutcome::Updated { previous } => {
                self.enqueue_update(record.clone());
                let was_live = matches!(previous, MemberStatus::Alive | MemberStatus::Suspect);
                match record.status {
                    MemberStatus::Alive => {
                        self.swim.suspicions.remove(&peer);
                        if !was_live {
                            self.events.push_back(Event::MemberUp(record));
                        }
                    }
                    MemberStatus::Suspect => {
                        self.start_suspicion(&record, from);
                        if !was_live {
                            self.events.push_back(Event::MemberUp(record.clone()));
                        }
                        self.events.push_back(Event::MemberSuspect(record));
                    }
                    MemberStatus::Dead | MemberStatus::Left => {
                        self.swim.suspicions.remove(&peer);
                        if was_live {
                            self.progress.remove(&peer);
                            self.events.push_back(Event::MemberDown(record));
                        }
                    }
                }
            }
            MergeOutcome::Unchanged => {
                // The same suspicion reported by another peer confirms it (Lifeguard).
                if record.status == MemberStatus::Suspect {
                    if let (Some(s), Some(from)) = (self.swim.suspicions.get_mut(&peer), from) {
                        if s.incarnation == record.incarnation && from != peer {
                            s.confirmations.insert(from);
                        }
                    }
                }
            }
        }
    }

    fn start_suspicion(&mut self, record: &MemberRecord, from: Option<PeerId>) {
        let now = self.now;
        let entry = self
            .swim
            .suspicions
            .entry(record.peer_id)
            .or_insert_with(|| Suspicion {
                incarnation: record.incarnation,
                started: now,
                confirmations: Default::default(),
            });
        if entry.incarnation != record.incarnation {
            *entry = Suspicion {
                incarnation: record.incarnation,
                started: now,
                confirmations: Default::default(),
            };
        }
        if let Some(from) = from.filter(|f| *f != record.peer_id && *f != self.me.id) {
            entry.confirmations.insert(from);
        }
    }

    fn enqueue_update(&mut self, record: MemberRecord) {
        let retransmits = self.config.swim.retransmits(self.members.len());
        self.updates.retain(|(r, _)| r.peer_id != record.peer_id);
        self.updates.push((record, retransmits));
    }

    fn enqueue_own(&mut self) {
        let own = self.own_record();
        self.enqueue_update(own);
    }

    /// Up to [`MAX_PIGGYBACK`] pending changes, those with the most retransmits left first.
    fn take_updates(&mut self) -> Vec<MemberRecord> {
        self.updates.sort_by_key(|u| std::cmp::Reverse(u.1));
        let mut out = Vec::new();
        for (record, left) in self.updates.iter_mut().take(MAX_PIGGYBACK) {
            out.push(record.clone());
            *left = left.saturating_sub(1);
        }
        self.updates.retain(|(_, left)| *left > 0);
        out
    }

    fn probe_payload(&mut self, seq: u64) -> Probe {
        Probe {
            seq,
            updates: self.take_updates(),
            applied_hash: self.applied.fingerprint(),
        }
    }

    /// When a probe shows a peer's applied set differs from ours, start anti-entropy with it
    /// (at most once per anti-entropy interval per peer).
    fn check_fingerprint(&mut self, peer: PeerId, addr: SocketAddr, hash: u64) {
        if hash == self.applied.fingerprint() || !self.joined {
            return;
        }
        let now = self.now;
        let gap = self.config.anti_entropy_interval;
        if self
            .last_digest_to
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < gap)
        {
            return;
        }
        self.last_digest_to.insert(peer, now);
        let addr = self.members.get(&peer).map_or(addr, |m| m.addr);
        self.send_digest(vec![addr], false);
    }

    /// SWIM: one probe per (health-stretched) period, indirect probes on a missed ack,
    /// suspicion on a failed probe, death after the suspicion timeout.
    fn run_failure_detector(&mut self, now: Instant) {
        let swim = self.config.swim.clone();
        let mult = self.swim.health_multiplier();
        // The probe in progress.
        if let Some(p) = self.swim.pending.clone() {
            if !p.indirect_sent && now >= p.indirect_at {
                let target_addr = self.members.get(&p.target).map(|m| m.addr);
                if let Some(target_addr) = target_addr {
                    let helpers = self.pick_peers(swim.indirect_checks, &[p.target]);
                    if !helpers.is_empty() {
                        self.stats.indirect_probes_sent += helpers.len() as u64;
                        let req = PingRequest {
                            target: p.target,
                            target_addr,
                            seq: p.seq,
                            updates: self.take_updates(),
                        };
                        let env = self.envelope(0, 1, Payload::PingReq(req));
                        self.queue(helpers, env);
                    }
                }
                if let Some(pending) = self.swim.pending.as_mut() {
                    pending.indirect_sent = true;
                }
            }
            if now >= p.fail_at {
                self.swim.pending = None;
                self.stats.probes_failed += 1;
                self.swim.adjust_awareness(1, swim.awareness_max_multiplier);
                self.suspect(p.target);
            }
        }
        // A new probe.
        if now >= self.next_probe {
            self.next_probe = now + swim.probe_interval * mult;
            if self.swim.pending.is_none() {
                if let Some(target) = self.next_probe_target() {
                    if let Some(addr) = self.members.get(&target).map(|m| m.addr) {
                        self.swim.seq += 1;
                        let seq = self.swim.seq;
                        self.swim.pending = Some(PendingProbe {
                            target,
                            seq,
                            indirect_at: now + swim.probe_timeout * mult,
                            fail_at: now + swim.probe_interval * mult,
                            indirect_sent: false,
                        });
                        self.stats.probes_sent += 1;
                        let ping = self.probe_payload(seq);
                        let env = self.envelope(0, 1, Payload::Ping(ping));
                        self.queue(vec![addr], env);
                    }
                }
            }
        }
        // Suspicions that ran out.
        let n = self.live_count();
        let expired: Vec<(PeerId, u64)> = self
            .swim
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.started + swim.suspicion_timeout(n, s.confirmations.len()))
            .map(|(p, s)| (*p, s.incarnation))
            .collect();
        let mut declared = false;
        for (peer, incarnation) in expired {
            self.swim.suspicions.remove(&peer);
            let Some(mut record) = self.members.get(&peer).cloned() else {
                continue;
            };
            if record.status == MemberStatus::Suspect && record.incarnation == incarnation {
                record.status = MemberStatus::Dead;
                self.stats.members_declared_dead += 1;
                self.merge_record(record, None);
                declared = true;
            }
        }
        // A death is pushed at once rather than at the next gossip tick: the others' suspicion
        // timers run out at about the same time, so waiting would only add up to a gossip
        // interval to the time until every peer knows (one message per death, no idle cost).
        if declared {
            self.gossip_updates();
        }
        // Relays nobody answered.
        self.swim.relays.retain(|_, r| r.expires > now);
    }

    fn next_probe_target(&mut self) -> Option<PeerId> {
        for _ in 0..2 {
            while self.swim.next < self.swim.order.len() {
                let candidate = self.swim.order[self.swim.next];
                self.swim.next += 1;
                let live = self.members.get(&candidate).is_some_and(|m| {
                    matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)
                });
                if live && candidate != self.me.id {
                    return Some(candidate);
                }
            }
            // Refill: every live member once, in a fresh random order (SWIM's round robin).
            let mut order: Vec<PeerId> = self
                .members
                .live()
                .map(|m| m.peer_id)
                .filter(|p| *p != self.me.id)
                .collect();
            order.shuffle(&mut self.rng);
            self.swim.order = order;
            self.swim.next = 0;
        }
        None
    }

    fn suspect(&mut self, peer: PeerId) {
        let Some(mut record) = self.members.get(&peer).cloned() else {
            return;
        };
        if record.status != MemberStatus::Alive {
            return;
        }
        record.status = MemberStatus::Suspect;
        self.stats.suspicions_raised += 1;
        self.merge_record(record, None);
    }

    fn handle_ack(&mut self, now: Instant, seq: u64) {
        if let Some(p) = &self.swim.pending {
            if p.seq == seq {
                self.swim.pending = None;
                self.swim
                    .adjust_awareness(-1, self.config.swim.awareness_max_multiplier);
                return;
            }
        }
        if let Some(relay) = self.swim.relays.remove(&seq) {
            if relay.expires > now {
                let ack = self.probe_payload(relay.their_seq);
                let env = self.envelope(0, 1, Payload::Ack(ack));
                self.queue(vec![relay.requester], env);
            }
        }
    }

    fn relay_probe(&mut self, now: Instant, requester: SocketAddr, req: PingRequest) {
        if req.target == self.me.id {
            return;
        }
        self.swim.seq += 1;
        let seq = self.swim.seq;
        self.swim.relays.insert(
            seq,
            Relay {
                requester,
                their_seq: req.seq,
                expires: now + self.config.swim.probe_interval * self.swim.health_multiplier(),
            },
        );
        let ping = self.probe_payload(seq);
        let env = self.envelope(0, 1, Payload::Ping(ping));
        self.queue(vec![req.target_addr], env);
    }

    fn handle_join(
        &mut self,
        origin: PeerId,
        origin_addr: SocketAddr,
        version: u64,
        mut member: MemberRecord,
        forwarded: bool,
    ) {
        member.peer_id = origin;
        member.status = MemberStatus::Alive;
        let addr = member.addr;
        self.merge_record(member.clone(), None);
        if !forwarded {
            // Spread the snapshot load: a random member that is already training answers,
            // or this seed itself when none is (a cluster still forming).
            let mut donors: Vec<&MemberRecord> = self
                .members
                .live()
                .filter(|m| {
                    m.peer_id != origin
                        && (m.peer_id == self.me.id
                            || matches!(m.lifecycle, Lifecycle::Training | Lifecycle::Draining))
                })
                .collect();
            donors.sort_by_key(|m| m.peer_id);
            let donor = donors.choose(&mut self.rng).map(|m| (m.peer_id, m.addr));
            if let Some((_, donor_addr)) = donor.filter(|(d, _)| *d != self.me.id) {
                self.stats.joins_forwarded += 1;
                let forward = Envelope {
                    id: self.new_id(),
                    origin,
                    origin_addr,
                    version,
                    ttl: 1,
                    payload: Payload::Join(JoinRequest {
                        member,
                        forwarded: true,
                    }),
                };
                self.queue(vec![donor_addr], forward);
                return;
            }
        }
        let welcome = Welcome {
            view: self.full_view(),
            snapshot: self.snapshot(),
        };
        let envelope = self.envelope(self.heartbeat(), 1, Payload::Welcome(welcome));
        self.queue(vec![addr], envelope);
    }

    fn handle_welcome(&mut self, origin: PeerId, welcome: Welcome) {
        self.merge_view(welcome.view.members, Some(origin));
        if self.joined {
            return;
        }
        self.joined = true;
        self.next_join = None;
        let mut snapshot = welcome.snapshot;
        snapshot.applied.normalize();
        self.install_snapshot(snapshot);
        self.events.push_back(Event::Joined {
            via: origin,
            members: self.live_count(),
        });
        self.enqueue_own();
    }

    /// Replaces the base by `snapshot`, then re-applies the deltas this peer holds that the
    /// snapshot lacks (DESIGN §4). Deltas no longer in the log are left out of both the base and
    /// the applied set, so anti-entropy can still bring them; such an install counts as inexact.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        if snapshot.base.len() != self.config.param_count {
            self.reject(self.me.id, RejectReason::Shape);
            return;
        }
        if !snapshot.base.iter().all(|v| v.is_finite()) {
            self.reject(self.me.id, RejectReason::NonFinite);
            return;
        }
        let mut base = snapshot.base.to_vec();
        let mut applied = snapshot.applied;
        let extra: Vec<(PeerId, u64)> = self.applied.difference(&applied).collect();
        let mut exact = true;
        for (origin, version) in extra {
            match self.log.get(origin, version) {
                Some(delta) => {
                    add_into(&mut base, &delta.values);
                    applied.insert(origin, version);
                }
                None => exact = false,
            }
        }
        self.base = base;
        self.applied = applied;
        // A restarted peer learns the versions it published before its checkpoint.
        self.published = self.published.max(self.applied.max_of(self.me.id));
        self.stats.snapshots_installed += 1;
        if !exact {
            self.stats.inexact_merges += 1;
        }
        self.events.push_back(Event::BaseReplaced {
            base: self.base.clone().into(),
            exact,
        });
    }

    fn handle_digest(&mut self, origin: PeerId, origin_addr: SocketAddr, digest: Digest) {
        let Digest {
            mut applied,
            lifecycle,
            reply,
        } = digest;
        applied.normalize();
        let addr = self
            .members
            .get(&origin)
            .map(|m| m.addr)
            .unwrap_or(origin_addr);
        // Push what they lack, while it is in the log and within the byte budget.
        let missing: Vec<(PeerId, u64)> = self.applied.difference(&applied).collect();
        let mut budget = self.config.anti_entropy_max_bytes;
        let mut lost = false;
        for (delta_origin, version) in missing {
            if self
                .recently_sent
                .contains_key(&(addr, delta_origin, version))
            {
                continue;
            }
            let Some(delta) = self.log.get(delta_origin, version) else {
                lost = true;
                continue;
            };
            // Someone else's fresh delta is most likely still on its way from its origin;
            // pushing it too would race the origin's own send (under loss, many times over).
            if delta_origin != self.me.id
                && self.now.saturating_duration_since(delta.logged_at)
                    < self.config.anti_entropy_delay
            {
                continue;
            }
            let size = delta.values.len() * 4;
            if size > budget {
                break;
            }
            budget -= size;
            let payload = Payload::Delta(DeltaPayload {
                weight: delta.weight,
                values: delta.values.clone(),
            });
            let origin_addr = self
                .members
                .get(&delta_origin)
                .map(|m| m.addr)
                .unwrap_or(self.me.addr);
            let envelope = Envelope {
                id: self.new_id(),
                origin: delta_origin,
                origin_addr,
                version,
                ttl: 1,
                payload,
            };
            self.stats.anti_entropy_deltas_sent += 1;
            self.queue(vec![addr], envelope);
        }
        if lost {
            self.stats.snapshots_sent += 1;
            let envelope = self.envelope(0, 1, Payload::Snapshot(self.snapshot()));
            self.queue(vec![addr], envelope);
        }
        // Ask for what we lack by answering with our own digest.
        if !reply && !applied.is_subset_of(&self.applied) {
            self.send_digest(vec![addr], true);
        }
        // Progress is kept for members of the view only: digests claiming other origins would
        // otherwise grow this map (each entry a version vector) without bound.
        if self.members.get(&origin).is_some() {
            self.progress
                .insert(origin, PeerProgress { applied, lifecycle });
        }
    }

    fn handle_leave(&mut self, origin: PeerId, notice: LeaveNotice) {
        let Some(existing) = self.members.get(&origin).cloned() else {
            return;
        };
        let mut record = existing;
        record.status = MemberStatus::Left;
        record.incarnation = record.incarnation.max(notice.incarnation);
        record.published = record.published.max(notice.published);
        record.lifecycle = Lifecycle::Stopped;
        self.merge_record(record, Some(origin));
    }

    fn send_join(&mut self, now: Instant) {
        if self.seeds.is_empty() {
            return;
        }
        let seed = self.seeds[self.join_attempt as usize % self.seeds.len()];
        let member = self.own_record();
        let envelope = self.envelope(
            self.heartbeat(),
            1,
            Payload::Join(JoinRequest {
                member,
                forwarded: false,
            }),
        );
        self.stats.join_attempts += 1;
        self.queue(vec![seed], envelope);
        let backoff = self
            .config
            .join_backoff_initial
            .saturating_mul(1u32 << self.join_attempt.min(16))
            .min(self.config.join_backoff_max);
        self.join_attempt = self.join_attempt.saturating_add(1);
        self.next_join = Some(now + backoff);
    }

    /// Pushes pending membership changes to `fanout` members; sends nothing when idle.
    fn gossip_updates(&mut self) {
        if self.updates.is_empty() {
            return;
        }
        let targets = self.pick_peers(self.config.fanout, &[]);
        if targets.is_empty() {
            return;
        }
        let members = self.take_updates();
        let view = MembershipView {
            members,
            push_pull: false,
            reply: false,
        };
        let envelope = self.envelope(self.heartbeat(), 1, Payload::Membership(view));
        self.queue(targets, envelope);
    }

    /// Sends the whole view (push-pull).
    fn send_view(&mut self, targets: Vec<SocketAddr>, push_pull: bool, reply: bool) {
        if targets.is_empty() {
            return;
        }
        let mut view = self.full_view();
        view.push_pull = push_pull;
        view.reply = reply;
        let envelope = self.envelope(self.heartbeat(), 1, Payload::Membership(view));
        self.queue(targets, envelope);
    }

    fn send_digest(&mut self, targets: Vec<SocketAddr>, reply: bool) {
        if targets.is_empty() {
            return;
        }
        let digest = Digest {
            applied: self.applied.clone(),
            lifecycle: self.lifecycle,
            reply,
        };
        let envelope = self.envelope(self.heartbeat(), 1, Payload::Digest(digest));
        self.queue(targets, envelope);
    }

    fn full_view(&self) -> MembershipView {
        MembershipView {
            members: self.members.iter().cloned().collect(),
            push_pull: false,
            reply: false,
        }
    }

    fn own_record(&self) -> MemberRecord {
        self.members
            .get(&self.me.id)
            .cloned()
            .unwrap_or_else(|| MemberRecord {
                peer_id: self.me.id,
                name: self.me.name.clone(),
                addr: self.me.addr,
                incarnation: self.incarnation,
                heartbeat: 0,
                status: MemberStatus::Alive,
                lifecycle: self.lifecycle,
                published: self.published,
            })
    }

    fn heartbeat(&self) -> u64 {
        self.members.get(&self.me.id).map_or(0, |m| m.heartbeat)
    }

    /// TTL for a new delta: 1 when the fanout reaches every live peer directly, else enough
    /// hops for push gossip to cover `live` peers (⌈log_fanout(live)⌉ + 1), capped by `max_ttl`.
    fn initial_ttl(&self, live: usize) -> u8 {
        let fanout = self.config.fanout.max(1);
        if fanout + 1 >= live || fanout == 1 {
            return if fanout == 1 { self.config.max_ttl } else { 1 };
        }
        let hops = ((live as f64).ln() / (fanout as f64).ln()).ceil() as u32 + 1;
        hops.min(u32::from(self.config.max_ttl)).max(1) as u8
    }

    fn live_peer_addrs(&self, exclude: &[PeerId]) -> Vec<SocketAddr> {
        self.members
            .live()
            .filter(|m| m.peer_id != self.me.id && !exclude.contains(&m.peer_id))
            .map(|m| m.addr)
            .collect()
    }

    fn pick_peers(&mut self, count: usize, exclude: &[PeerId]) -> Vec<SocketAddr> {
        let mut candidates = self.live_peer_addrs(exclude);
        candidates.shuffle(&mut self.rng);
        candidates.truncate(count);
        candidates
    }

    fn new_id(&mut self) -> MessageId {
        MessageId::from_uuid(
            uuid::Builder::from_random_bytes(rand::Rng::gen(&mut self.rng)).into_uuid(),
        )
    }

    fn envelope(&mut self, version: u64, ttl: u8, payload: Payload) -> Envelope {
        Envelope {
            id: self.new_id(),
            origin: self.me.id,
            origin_addr: self.me.addr,
            version,
            ttl: ttl.min(self.config.max_ttl),
            payload,
        }
    }

    fn queue(&mut self, to: Vec<SocketAddr>, envelope: Envelope) {
        if to.is_empty() {
            return;
        }
        // Our own id is marked seen so an echo is dropped as a duplicate.
        self.seen_own(envelope.id);
        let kind: MessageKind = envelope.payload.kind();
        *self.stats.sent.entry(kind.as_str()).or_default() += to.len() as u64;
        if kind == MessageKind::Delta {
            for addr in &to {
                self.recently_sent.insert(
                    (*addr, envelope.origin, envelope.version),
                    Sent::InFlight(self.now),
                );
            }
        }
        self.transmits.push_back(Transmit { to, envelope });
    }

    fn seen_own(&mut self, id: MessageId) {
        self.seen.insert(self.now, id);
    }
}

/// `base += delta`, element by element. Lengths are checked by the callers.
/// The L2 norm of `values`, accumulated in f64.
fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

fn add_into(base: &mut [f32], delta: &[f32]) {
    for (b, d) in base.iter_mut().zip(delta.iter()) {
        *b += d;
    }
}

#[cfg(test)]
mod tests;
