//! The outbox the sub-machines write to: messages to send, events for the shell, counters, and
//! the seeded randomness and clock they share.
//!
//! A sub-machine never reaches into another's state; what it wants done leaves through here,
//! and the orchestrator ([`super::Core`]) drains the outbox after every input: it records each
//! new transmit with dissemination (so echoes are dropped and anti-entropy knows what is in
//! flight), then hands transmits and events to the caller.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::id::MessageId;
use crate::wire::{Envelope, Payload};

use super::config::LocalPeer;
use super::events::{Event, RejectReason};
use super::stats::CoreStats;

/// One message to send to one or more peers.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Listen addresses to send to (the same envelope to each).
    pub to: Vec<SocketAddr>,
    /// The message.
    pub envelope: Envelope,
    /// When set, the member every destination must be: the caller sends only over a connection
    /// whose certificate this id is bound to ([`crate::auth::KeyId::binds`]), and drops the
    /// message otherwise. Set for answers sent to an address that a message named rather than
    /// to the connection a request came on (a forwarded join's welcome).
    pub to_member: Option<crate::id::PeerId>,
}

/// Shared output and context of the sub-machines. See the module docs.
pub(crate) struct Outbox {
    /// The local peer.
    pub me: LocalPeer,
    /// Largest TTL sent (hops).
    pub max_ttl: u8,
    /// The latest `now` passed in by the caller.
    pub now: Instant,
    /// The one seeded RNG of this peer: ids, peer choices, probe order.
    pub rng: ChaCha8Rng,
    /// Counters.
    pub stats: CoreStats,
    /// Transmits queued since the orchestrator last drained them.
    pending: Vec<Transmit>,
    /// Events for the caller.
    events: VecDeque<Event>,
}

impl Outbox {
    /// An empty outbox for `me`, its RNG seeded from `rng_seed` and the peer id.
    pub fn new(me: LocalPeer, max_ttl: u8, rng_seed: u64, now: Instant) -> Self {
        // Mixing in the peer id keeps envelope ids distinct across peers that were given the
        // same seed, while a run stays a pure function of (seed, peer id).
        let id = me.id.as_uuid().as_u128();
        let rng =
            ChaCha8Rng::seed_from_u64(rng_seed ^ (id as u64) ^ ((id >> 64) as u64).rotate_left(17));
        Self {
            me,
            max_ttl,
            now,
            rng,
            stats: CoreStats::default(),
            pending: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// A fresh random envelope id.
    pub fn new_id(&mut self) -> MessageId {
        MessageId::from_uuid(
            uuid::Builder::from_random_bytes(rand::Rng::gen(&mut self.rng)).into_uuid(),
        )
    }

    /// An envelope from this peer with a fresh id and `ttl` capped at `max_ttl`.
    pub fn envelope(&mut self, version: u64, ttl: u8, payload: Payload) -> Envelope {
        Envelope {
            id: self.new_id(),
            origin: self.me.id,
            origin_addr: self.me.addr,
            version,
            ttl: ttl.min(self.max_ttl),
            payload,
        }
    }

    /// Queues `envelope` for every address in `to` (nothing when `to` is empty) and counts it
    /// per destination.
    pub fn send(&mut self, to: Vec<SocketAddr>, envelope: Envelope) {
        self.queue(to, envelope, None);
    }

    /// Queues `envelope` for `to`, to be sent only if the host there holds the certificate
    /// `member` is bound to ([`Transmit::to_member`]).
    pub fn send_to_member(
        &mut self,
        to: SocketAddr,
        member: crate::id::PeerId,
        envelope: Envelope,
    ) {
        self.queue(vec![to], envelope, Some(member));
    }

    fn queue(
        &mut self,
        to: Vec<SocketAddr>,
        envelope: Envelope,
        to_member: Option<crate::id::PeerId>,
    ) {
        if to.is_empty() {
            return;
        }
        let kind = envelope.payload.kind();
        *self.stats.sent.entry(kind.as_str()).or_default() += to.len() as u64;
        self.pending.push(Transmit {
            to,
            envelope,
            to_member,
        });
    }

    /// Queues an event for the caller.
    pub fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Counts a refused member record and tells the caller.
    pub fn refuse_record(
        &mut self,
        peer: crate::id::PeerId,
        reason: super::membership::admission::RecordRefusal,
    ) {
        *self
            .stats
            .records_refused
            .entry(reason.as_str())
            .or_default() += 1;
        self.events.push_back(Event::RecordRefused { peer, reason });
    }

    /// Counts a refused delta and tells the caller.
    pub fn reject(&mut self, origin: crate::id::PeerId, reason: RejectReason) {
        *self
            .stats
            .deltas_rejected
            .entry(reason.as_str())
            .or_default() += 1;
        self.event(Event::DeltaRejected { origin, reason });
    }

    /// At most `count` of `candidates`, chosen at random.
    pub fn choose(&mut self, mut candidates: Vec<SocketAddr>, count: usize) -> Vec<SocketAddr> {
        candidates.shuffle(&mut self.rng);
        candidates.truncate(count);
        candidates
    }

    /// The transmits queued since the last call, oldest first.
    pub fn take_pending(&mut self) -> Vec<Transmit> {
        std::mem::take(&mut self.pending)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
