//! SWIM probing with Lifeguard's local health: one probe per (stretched) period, indirect
//! probes through `k` members on a missed ack, suspicion on a failed probe, and death once a
//! suspicion runs out (the algorithm is described in [`super::swim`]).
//!
//! These are [`Membership`] methods: the probe deadlines are timers of the core's table, the
//! state is [`super::swim::SwimState`], and a verdict is merged into the member table like any
//! record.

use std::net::SocketAddr;
use std::time::Instant;

use rand::seq::SliceRandom;

use crate::id::PeerId;
use crate::wire::{MemberStatus, Payload, PingRequest, Probe};

use super::swim::{PendingProbe, Relay};
use super::Membership;
use crate::core::outbox::Outbox;
use crate::core::timer::{Timer, TimerTable};

impl Membership {
    /// The probe timers ([`Timer::ProbeIndirect`], [`Timer::ProbeFail`], [`Timer::Probe`])
    /// due at `now`, in that order, then suspicions that ran out and relays nobody answered.
    /// `applied_hash` gives the applied-set fingerprint carried on probes (asked for only when
    /// a probe is sent: computing it walks the applied set).
    pub fn on_probe_timers(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        applied_hash: impl FnOnce() -> u64,
    ) {
        let config = self.swim_config.clone();
        let mult = self.swim.health_multiplier();
        if let Some(p) = self.swim.pending.clone() {
            if timers.take_expired(Timer::ProbeIndirect, now) {
                if let Some(target_addr) = self.addr_of(&p.target) {
                    let helpers =
                        out.choose(self.live_peer_addrs(&[p.target]), config.indirect_checks);
                    if !helpers.is_empty() {
                        out.stats.indirect_probes_sent += helpers.len() as u64;
                        let req = PingRequest {
                            target: p.target,
                            target_addr,
                            seq: p.seq,
                            updates: self.piggyback.take(),
                        };
                        let envelope = out.envelope(0, 1, Payload::PingReq(req));
                        out.send(helpers, envelope);
                    }
                }
            }
            if timers.take_expired(Timer::ProbeFail, now) {
                timers.stop(Timer::ProbeIndirect);
                self.swim.pending = None;
                out.stats.probes_failed += 1;
                self.swim
                    .adjust_awareness(1, config.awareness_max_multiplier);
                self.suspect(out, p.target);
            }
        }
        if timers.is_expired(Timer::Probe, now) {
            timers.set(Timer::Probe, now + config.probe_interval * mult);
            if self.swim.pending.is_none() {
                if let Some(target) = self.next_probe_target(out) {
                    if let Some(addr) = self.addr_of(&target) {
                        self.swim.seq += 1;
                        let seq = self.swim.seq;
                        self.swim.pending = Some(PendingProbe { target, seq });
                        timers.set(Timer::ProbeIndirect, now + config.probe_timeout * mult);
                        timers.set(Timer::ProbeFail, now + config.probe_interval * mult);
                        out.stats.probes_sent += 1;
                        let ping = self.probe_payload(seq, applied_hash());
                        let envelope = out.envelope(0, 1, Payload::Ping(ping));
                        out.send(vec![addr], envelope);
                    }
                }
            }
        }
        self.expire_suspicions(out, now);
        self.swim.relays.retain(|_, r| r.expires > now);
    }

    /// When the earliest suspicion runs out ([`Timer::Suspicion`]), if any.
    pub fn suspicion_deadline(&self) -> Option<Instant> {
        let n = self.live_count();
        self.swim
            .suspicions
            .values()
            .map(|s| s.started + self.swim_config.suspicion_timeout(n, s.confirmations.len()))
            .min()
    }

    /// Declares dead the suspects whose suspicion ran out without a refutation.
    fn expire_suspicions(&mut self, out: &mut Outbox, now: Instant) {
        let n = self.live_count();
        let expired: Vec<(PeerId, u64)> = self
            .swim
            .suspicions
            .iter()
            .filter(|(_, s)| {
                now >= s.started + self.swim_config.suspicion_timeout(n, s.confirmations.len())
            })
            .map(|(p, s)| (*p, s.incarnation))
            .collect();
        let mut declared = false;
        for (peer, incarnation) in expired {
            self.swim.suspicions.remove(&peer);
            let Some(mut record) = self.get(&peer).cloned() else {
                continue;
            };
            if record.status == MemberStatus::Suspect && record.incarnation == incarnation {
                record.status = MemberStatus::Dead;
                out.stats.members_declared_dead += 1;
                self.merge_record(out, record, None);
                declared = true;
            }
        }
        // A death is pushed at once rather than at the next gossip tick: the others' suspicion
        // timers run out at about the same time, so waiting would only add up to a gossip
        // interval to the time until every peer knows (one message per death, no idle cost).
        if declared {
            self.push_updates(out);
        }
    }

    /// Acknowledges a `Ping` with sequence number `seq` from the peer at `to` (its records are
    /// merged first, by the caller).
    pub fn answer_ping(&mut self, out: &mut Outbox, to: SocketAddr, seq: u64, applied_hash: u64) {
        let ack = self.probe_payload(seq, applied_hash);
        let envelope = out.envelope(0, 1, Payload::Ack(ack));
        out.send(vec![to], envelope);
    }

    /// An `Ack` with sequence number `seq` (its records are merged first, by the caller): ends
    /// our probe, or is passed back to whoever asked us to relay.
    pub fn handle_ack(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        seq: u64,
        applied_hash: u64,
    ) {
        if self.swim.pending.as_ref().is_some_and(|p| p.seq == seq) {
            self.swim.pending = None;
            timers.stop(Timer::ProbeIndirect);
            timers.stop(Timer::ProbeFail);
            self.swim
                .adjust_awareness(-1, self.swim_config.awareness_max_multiplier);
            return;
        }
        if let Some(relay) = self.swim.relays.remove(&seq) {
            if relay.expires > now {
                let ack = self.probe_payload(relay.their_seq, applied_hash);
                let envelope = out.envelope(0, 1, Payload::Ack(ack));
                out.send(vec![relay.requester], envelope);
            }
        }
    }

    /// A `PingReq` from the peer at `requester`: probe its target on its behalf.
    pub fn handle_ping_req(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        origin: PeerId,
        requester: SocketAddr,
        mut req: PingRequest,
        applied_hash: u64,
    ) {
        let updates = std::mem::take(&mut req.updates);
        self.merge_view(out, updates, Some(origin));
        if req.target == self.me {
            return;
        }
        self.swim.seq += 1;
        let seq = self.swim.seq;
        let expires = now + self.swim_config.probe_interval * self.swim.health_multiplier();
        self.swim.relays.insert(
            seq,
            Relay {
                requester,
                their_seq: req.seq,
                expires,
            },
        );
        let ping = self.probe_payload(seq, applied_hash);
        let envelope = out.envelope(0, 1, Payload::Ping(ping));
        out.send(vec![req.target_addr], envelope);
    }

    fn probe_payload(&mut self, seq: u64, applied_hash: u64) -> Probe {
        Probe {
            seq,
            updates: self.piggyback.take(),
            applied_hash,
        }
    }

    /// The next live member in the shuffled round-robin order (SWIM), refilled when spent.
    fn next_probe_target(&mut self, out: &mut Outbox) -> Option<PeerId> {
        for _ in 0..2 {
            while self.swim.next < self.swim.order.len() {
                let candidate = self.swim.order[self.swim.next];
                self.swim.next += 1;
                if self.is_live(&candidate) && candidate != self.me {
                    return Some(candidate);
                }
            }
            let mut order: Vec<PeerId> = self
                .live()
                .map(|m| m.peer_id)
                .filter(|p| *p != self.me)
                .collect();
            order.shuffle(&mut out.rng);
            self.swim.order = order;
            self.swim.next = 0;
        }
        None
    }

    fn suspect(&mut self, out: &mut Outbox, peer: PeerId) {
        let Some(mut record) = self.get(&peer).cloned() else {
            return;
        };
        if record.status != MemberStatus::Alive {
            return;
        }
        record.status = MemberStatus::Suspect;
        out.stats.suspicions_raised += 1;
        self.merge_record(out, record, None);
    }
}
