//! Dissemination: how envelopes and deltas spread.
//!
//! [`Dissemination`] owns the seen-cache ([`seen`]: each envelope handled once), push gossip of
//! deltas with a TTL and `fanout` (publish, forward), and anti-entropy ([`anti_entropy`]:
//! digests of applied sets, pushes of what a peer lacks, the send ledger [`sent`] of what is in
//! flight, and each peer's reported progress).
//!
//! It reads the member table and the replica through their queries and never changes them:
//! whether a delta is applied is the replica's call, made before it is forwarded here.

pub mod answers;
pub mod anti_entropy;
pub mod lazy;
pub mod seen;
pub mod sent;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::{MessageId, PeerId};
use crate::wire::{DeltaPayload, Envelope, Lifecycle, MessageKind, Payload};

use super::config::CoreConfig;
use super::membership::Membership;
use super::outbox::{Outbox, Transmit};
use super::timer::{Timer, TimerTable};
use answers::AnswerLimits;
use lazy::{PullDone, Pulls};
use seen::SeenCache;
use sent::{Outcome, SendLedger};

/// What this peer last heard of another peer's progress, from its digests.
#[derive(Clone, Debug)]
struct PeerProgress {
    applied: crate::version_vector::VersionVector,
    /// `applied.fingerprint()`, to tell most differing sets apart without walking them.
    applied_fingerprint: u64,
    /// The replica generation at which this report was last found to match ours in full.
    matched_at: std::cell::Cell<Option<u64>>,
    lifecycle: Lifecycle,
    /// Its per-origin content fingerprints, sorted by origin.
    contents: Vec<(crate::id::PeerId, [u8; 16])>,
    /// The equivocations it holds proofs for, sorted.
    equivocations: Vec<(crate::id::PeerId, u64)>,
    /// When this report arrived (virtual time).
    received_at: Instant,
}

/// A member's drain beacon, kept when it came after the member's last digest.
struct BeaconReport {
    lifecycle: Lifecycle,
    /// Its `drain_summary`.
    summary: [u8; 16],
    /// When it arrived (virtual time).
    received_at: Instant,
}

/// The dissemination sub-machine. See the module docs.
pub struct Dissemination {
    /// Peers each delta is pushed to per hop.
    fanout: usize,
    /// Largest TTL (hops).
    max_ttl: u8,
    /// Period of digests while training (to one random member).
    anti_entropy_interval: Duration,
    /// Period of digests while draining (to every live member).
    drain_anti_entropy_interval: Duration,
    /// How long another origin's delta is held before anti-entropy pushes it.
    anti_entropy_delay: Duration,
    /// Envelope ids already handled.
    seen: SeenCache,
    /// Deltas recently sent, by destination.
    sent: SendLedger,
    /// Each member's last reported applied set and lifecycle.
    progress: HashMap<PeerId, PeerProgress>,
    /// Each member's last drain beacon (lifecycle, drain summary), when it came after its last
    /// digest.
    beacons: HashMap<PeerId, BeaconReport>,
    /// Beacons that differ from this peer's summary it may still answer with a digest until
    /// the next anti-entropy tick.
    beacon_answers_left: usize,
    /// When a digest was last sent to a peer because its applied fingerprint differed.
    last_digest_to: HashMap<PeerId, Instant>,
    /// While draining: when this peer last reported its holdings to every live member (a drain
    /// round or an early report), and the replica generation it reported.
    last_report: Option<(Instant, u64)>,
    /// How much each requester may still be sent.
    answers: AnswerLimits,
    /// Deltas larger than this (bytes on the wire) are announced and pulled ([`lazy`]).
    lazy_push_threshold: u64,
    /// How long a pull waits before the next announcer is asked (plus a per-MiB part).
    pull_timeout: Duration,
    /// Deltas asked for that have not arrived yet.
    pulls: Pulls,
    /// Announced versions this far above the highest known of their origin are not pulled
    /// (they would be refused); 0: no limit.
    max_version_jump: u64,
}

impl Dissemination {
    /// Whether `peer` may be sent a snapshot now (at most one per anti-entropy interval per
    /// requester); counts it when so, and counts a refusal in `answers_limited`.
    pub fn take_snapshot(&mut self, out: &mut Outbox, peer: PeerId) -> bool {
        let allowed = self.answers.take_snapshot(out.now, peer);
        if !allowed {
            out.stats.answers_limited += 1;
        }
        allowed
    }

    /// Empty caches; the first digest is due one anti-entropy period after `now`.
    pub fn new(config: &CoreConfig, now: Instant, timers: &mut TimerTable) -> Self {
        timers.set(Timer::AntiEntropy, now + config.anti_entropy_interval);
        Self {
            fanout: config.fanout,
            max_ttl: config.max_ttl,
            anti_entropy_interval: config.anti_entropy_interval,
            drain_anti_entropy_interval: config.drain_anti_entropy_interval,
            anti_entropy_delay: config.anti_entropy_delay,
            answers: AnswerLimits::new(
                config
                    .drain_anti_entropy_interval
                    .min(config.anti_entropy_interval),
                config.anti_entropy_max_bytes,
                config.anti_entropy_interval,
            ),
            seen: SeenCache::new(config.seen_retention, config.seen_capacity),
            sent: SendLedger::new(config.resend_after),
            progress: HashMap::new(),
            beacons: HashMap::new(),
            beacon_answers_left: config.fanout,
            last_digest_to: HashMap::new(),
            last_report: None,
            lazy_push_threshold: config.lazy_push_threshold,
            pull_timeout: config.pull_timeout,
            pulls: Pulls::default(),
            max_version_jump: config.max_version_jump,
        }
    }

    /// How many deltas this peer has asked an announcer for and not received yet.
    pub fn pulls_in_progress(&self) -> usize {
        self.pulls.len()
    }

    /// Whether envelope `id` was handled already (it may have expired since the last input).
    pub fn has_seen(&self, id: &MessageId) -> bool {
        self.seen.contains(id)
    }

    /// Records envelope `id` as handled at `now`; false when it already was (a duplicate).
    pub fn first_sight(&mut self, now: Instant, id: MessageId) -> bool {
        self.seen.insert(now, id)
    }

    /// Records a transmit this peer queued: its id is marked seen (so an echo is dropped as a
    /// duplicate), and a delta is in flight to each destination.
    pub fn note_sent(&mut self, now: Instant, transmit: &Transmit) {
        let envelope = &transmit.envelope;
        self.seen.insert(now, envelope.id);
        if envelope.payload.kind() == MessageKind::Delta {
            for addr in &transmit.to {
                self.sent
                    .sent(now, *addr, envelope.origin, envelope.version);
            }
        }
    }

    /// Forgets old envelope ids and old send records.
    pub fn expire(&mut self, now: Instant) {
        self.seen.expire(now);
        self.sent.expire(now);
    }

    /// What became of a delta sent to `to` (see [`super::Core::send_outcome`]).
    pub fn send_outcome(
        &mut self,
        out: &mut Outbox,
        to: SocketAddr,
        origin: PeerId,
        version: u64,
        delivered: bool,
    ) {
        if self.sent.outcome(out.now, to, origin, version, delivered) == Outcome::Failed {
            out.stats.delta_sends_failed += 1;
        }
    }

    /// How many of `me`'s deltas are in flight to some member that is alive and not suspect.
    pub fn own_deltas_unacked(&self, me: PeerId, membership: &Membership) -> usize {
        let alive: HashSet<SocketAddr> = membership.alive_peer_addrs().into_iter().collect();
        self.sent.in_flight_versions(me, &alive)
    }

    /// Pushes a delta just published here (`bytes` on the wire) to `fanout` live members, with
    /// a TTL that lets push gossip reach every live member; a large one is announced to them
    /// instead ([`lazy`]).
    pub fn push_own(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        version: u64,
        delta: DeltaPayload,
        bytes: u64,
    ) {
        let ttl = self.initial_ttl(membership.live_count());
        if self.is_large(bytes) {
            let me = out.me.id;
            self.announce(out, membership, &[], &[], me, version, bytes, ttl);
            return;
        }
        let to = out.choose(membership.live_peer_addrs(&[]), self.fanout);
        let envelope = out.envelope(version, ttl, Payload::Delta(delta));
        out.send(to, envelope);
    }

    /// A delta from `from` (`bytes` on the wire) that the replica has just applied: `from` has
    /// it (never push it back), and it is forwarded with its TTL decremented; a large one is
    /// announced instead, with the highest TTL it came or was announced with (`pull`), less
    /// one, to members other than its origin, `from` and those that announced it.
    #[allow(clippy::too_many_arguments)]
    pub fn spread_applied(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        from: SocketAddr,
        envelope: &Envelope,
        delta: DeltaPayload,
        bytes: u64,
        pull: PullDone,
    ) {
        self.sent
            .has(out.now, from, envelope.origin, envelope.version);
        if !self.is_large(bytes) {
            self.forward(out, membership, from, envelope, Payload::Delta(delta));
            return;
        }
        let ttl = envelope.ttl.max(pull.ttl).saturating_sub(1);
        if ttl == 0 {
            out.stats.ttl_expired += 1;
            return;
        }
        let mut exclude = vec![envelope.origin];
        if let Some(sender) = membership.by_addr(from) {
            exclude.push(sender.peer_id);
        }
        let (origin, version) = (envelope.origin, envelope.version);
        let mut skip = pull.announcers;
        skip.push(from);
        self.announce(
            out, membership, &exclude, &skip, origin, version, bytes, ttl,
        );
    }

    /// Forwards a newly handled envelope with its TTL decremented, unless it reaches 0, to
    /// `fanout` live members other than its origin and its sender.
    fn forward(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        from: SocketAddr,
        envelope: &Envelope,
        payload: Payload,
    ) {
        let ttl = envelope.ttl.saturating_sub(1);
        if ttl == 0 {
            out.stats.ttl_expired += 1;
            return;
        }
        let mut exclude = vec![envelope.origin];
        if let Some(sender) = membership.by_addr(from) {
            exclude.push(sender.peer_id);
        }
        let to = out.choose(membership.live_peer_addrs(&exclude), self.fanout);
        if to.is_empty() {
            return;
        }
        out.stats.forwarded += 1;
        let forwarded = Envelope {
            id: envelope.id,
            origin: envelope.origin,
            origin_addr: envelope.origin_addr,
            version: envelope.version,
            ttl,
            payload,
        };
        out.send(to, forwarded);
    }

    /// TTL for a new delta: 1 when the fanout reaches every live peer directly, else enough
    /// hops for push gossip to cover `live` peers (⌈log_fanout(live)⌉ + 1), capped by `max_ttl`.
    fn initial_ttl(&self, live: usize) -> u8 {
        let fanout = self.fanout.max(1);
        if fanout + 1 >= live || fanout == 1 {
            return if fanout == 1 { self.max_ttl } else { 1 };
        }
        let hops = ((live as f64).ln() / (fanout as f64).ln()).ceil() as u32 + 1;
        hops.min(u32::from(self.max_ttl)).max(1) as u8
    }
}
