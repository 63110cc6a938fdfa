//! The sans-IO protocol core: membership, dissemination, the replica and the peer lifecycle.
//!
//! [`Core`] is a state machine in the manner of quinn-proto. It does no I/O and reads no clock:
//! the caller passes `now` and decoded messages in ([`Core::handle_message`],
//! [`Core::handle_timeout`], the local events [`Core::publish`], [`Core::start_drain`],
//! [`Core::leave`]) and drains what the core wants done ([`Core::poll_transmit`],
//! [`Core::poll_event`], [`Core::poll_timeout`]). Randomness comes from a seeded RNG, so the same
//! inputs give the same outputs; the simulator and the unit tests drive many cores without sockets.
//!
//! `Core` is a small orchestrator of four sub-machines, each owning one idea and its state (the
//! composition follows iroh-gossip's `proto/topic.rs`):
//!
//! - `membership`: the member table, SWIM failure detection with Lifeguard, the piggyback
//!   queue, push-pull and reconnects, this peer's incarnation;
//! - `dissemination`: the seen-cache, TTL push with fanout, lazy push (announce and pull) of
//!   large deltas, anti-entropy and the send ledger;
//! - `replica`: base, applied set, publish, apply, snapshot install, admission, delta log;
//! - `lifecycle`: join with backoff, the `min_peers` gate, the join timeout, the drain and its
//!   deadline, checkpoints, resume ([`decide_resume`]).
//!
//! Sub-machines never touch each other's state: they read each other through queries passed in
//! by the orchestrator, and write messages, events and counters to one outbox that the
//! orchestrator drains after every input. Every deadline is a [`timer::Timer`] in one table, so
//! [`Core::poll_timeout`] is the table's earliest entry.
//!
//! The merge keeps the invariant `base = θ₀ + Σ_{(o,v) ∈ applied} d_{o,v}` (docs/ALGORITHM.md):
//! every delta is added at most once, whatever path and how many times it arrives.

mod config;
mod dissemination;
mod equivocation;
mod events;
mod lifecycle;
mod membership;
mod outbox;
mod phase_clock;
mod queries;
mod replica;
mod stats;
pub mod timer;

pub use config::{
    CoreConfig, LifecycleConfig, LocalPeer, RestoredState, NORM_MIN_SAMPLES, NORM_WINDOW,
    OWN_NORM_SHARE,
};
pub use events::{Event, RejectReason};
pub use lifecycle::join::INTRODUCE_EVERY;
pub use lifecycle::resume::{decide_resume, CheckpointFound, ResumeDecision, ResumeRefusal};
pub use membership::admission::{RecordRefusal, MAX_IDENTITIES_PER_CERTIFICATE};
pub use membership::{sign_record, swim};
pub use outbox::Transmit;
pub use replica::admission::clip_to_norm;
pub use replica::delta_log::encoded_bytes;
pub use stats::CoreStats;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::auth::{content_hash, ContentHash, Credential, KeyId, Signature};
use crate::version_vector::VersionVector;
use crate::wire::{
    self, DeltaPayload, Envelope, JoinRequest, LeaveNotice, Lifecycle, MemberRecord, MemberStatus,
    Payload, PeerId, Welcome,
};
use dissemination::Dissemination;
use equivocation::Screen;
use lifecycle::join::answer_join;
use lifecycle::PeerLifecycle;
use membership::Membership;
use outbox::Outbox;
use replica::{Received, Replica};
use timer::{Timer, TimerTable};

/// Who a message came from, as the transport knows it: the connection's remote address (the
/// sender's listen address) and the key id of the certificate it authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The connection's remote address. Answers go here, never to an address a message names.
    pub addr: SocketAddr,
    /// SHA-256 of the certificate the connection presented ([`KeyId::of`]).
    pub key: KeyId,
}

/// The protocol state machine of one peer. See the module docs.
pub struct Core {
    /// The settings it runs with.
    config: CoreConfig,
    /// Messages, events, counters, the RNG and the latest `now`, shared by the sub-machines.
    out: Outbox,
    /// Every deadline.
    timers: TimerTable,
    /// Who is in the cluster.
    membership: Membership,
    /// How envelopes and deltas spread.
    dissemination: Dissemination,
    /// The model and the deltas folded into it.
    replica: Replica,
    /// Where this peer is in its life, and the policy that moves it on.
    lifecycle: PeerLifecycle,
    /// Clock offsets of the members, for [`Core::phase_lead`].
    phase_clocks: phase_clock::PhaseClocks,
    /// Transmits ready for the caller.
    transmits: VecDeque<Transmit>,
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
        let state = RestoredState {
            base,
            applied: VersionVector::new(),
            contents: Vec::new(),
            published: 0,
            incarnation: 0,
        };
        Self::build(config, me, state, seeds, rng_seed, now)
    }

    /// A peer restarted from a checkpoint: it keeps its base, applied set and published
    /// version, and rejoins with its incarnation raised by one.
    pub fn restore(
        config: CoreConfig,
        me: LocalPeer,
        mut state: RestoredState,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        state.incarnation += 1;
        Self::build(config, me, state, seeds, rng_seed, now)
    }

    fn build(
        config: CoreConfig,
        me: LocalPeer,
        state: RestoredState,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let own = MemberRecord {
            peer_id: me.id,
            name: me.name.clone(),
            addr: me.addr,
            incarnation: state.incarnation,
            heartbeat: 0,
            status: MemberStatus::Alive,
            lifecycle: Lifecycle::Joining,
            published: state.published,
            credential: Credential::new(Vec::new()),
            signature: Signature::default(),
        };
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let mut timers = TimerTable::default();
        let replica = Replica::new(&config, me.id, &state);
        let mut core = Self {
            membership: Membership::new(&config, own, me.keys.clone(), now, &mut timers),
            dissemination: Dissemination::new(&config, now, &mut timers),
            lifecycle: PeerLifecycle::new(&config, seeds, now, &mut timers),
            replica,
            phase_clocks: phase_clock::PhaseClocks::default(),
            out: Outbox::new(me, config.max_ttl, rng_seed, now),
            timers,
            transmits: VecDeque::new(),
            config,
        };
        // A peer that starts a cluster may pass the `min_peers` gate at once.
        core.after_input(now);
        core
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// When [`Core::handle_timeout`] should next be called: the earliest timer.
    pub fn poll_timeout(&self) -> Instant {
        // The gossip timer is always set; the fallback is never used.
        self.timers
            .earliest()
            .unwrap_or(self.out.now + self.config.gossip_interval)
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Fires the timers due at `now`, in [`Timer::ALL`] order, and forgets expired caches.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.out.now = self.out.now.max(now);
        self.dissemination.expire(now);
        let out = &mut self.out;
        let timers = &mut self.timers;
        let draining = self.lifecycle.state() == Lifecycle::Draining;
        for timer in Timer::ALL {
            match timer {
                Timer::Join if timers.take_expired(timer, now) => {
                    let own = self.membership.own().clone();
                    let heartbeat = self.membership.heartbeat();
                    self.lifecycle
                        .on_join_timer(out, now, timers, own, heartbeat);
                }
                Timer::Gossip if timers.is_expired(timer, now) => {
                    self.membership.on_gossip(out, now, timers)
                }
                Timer::PushPull if timers.is_expired(timer, now) => {
                    self.membership.on_push_pull(out, now, timers)
                }
                Timer::Reconnect if timers.is_expired(timer, now) => {
                    self.membership.on_reconnect(out, now, timers, draining)
                }
                // One SWIM round: the three probe timers, then suspicions and relays, each
                // handled only when due.
                Timer::ProbeIndirect => {
                    let replica = &self.replica;
                    self.membership
                        .on_probe_timers(out, now, timers, || replica.applied_fingerprint())
                }
                Timer::AntiEntropy if timers.is_expired(timer, now) => {
                    self.dissemination.on_anti_entropy(
                        out,
                        now,
                        timers,
                        &self.membership,
                        &self.replica,
                        self.lifecycle.state(),
                    )
                }
                Timer::DrainReport if timers.take_expired(timer, now) => {
                    self.dissemination.on_drain_report(
                        out,
                        now,
                        &self.membership,
                        &self.replica,
                        self.lifecycle.state(),
                    )
                }
                Timer::Pull if timers.is_expired(timer, now) => {
                    self.dissemination
                        .on_pull_timer(out, now, timers, &self.replica)
                }
                Timer::JoinDeadline if timers.take_expired(timer, now) => {
                    self.lifecycle.on_join_deadline(out)
                }
                Timer::DrainDeadline if timers.take_expired(timer, now) => {
                    self.lifecycle.on_drain_deadline()
                }
                Timer::Checkpoint if timers.take_expired(timer, now) => {
                    self.lifecycle.on_checkpoint(out, now, timers)
                }
                _ => {}
            }
        }
        self.after_input(now);
    }

    /// Decodes a frame from `from` and handles it; a frame that does not decode is counted in
    /// `decode_errors` and changes nothing else.
    ///
    /// Errors: the [`wire::DecodeError`], for logging.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: Sender,
        frame: &[u8],
    ) -> Result<(), wire::DecodeError> {
        match wire::decode(frame, self.config.limits()) {
            Ok(envelope) => {
                self.handle_message(now, from, envelope);
                Ok(())
            }
            Err(e) => {
                self.out.stats.decode_errors += 1;
                Err(e)
            }
        }
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
        self.out.now = self.out.now.max(now);
        self.dissemination
            .send_outcome(&mut self.out, to, origin, version, delivered);
    }

    /// Handles one decoded message received from `from`. In order: a TTL above the limit (or a
    /// `Have` or `Want` out of its bounds) is a decode error; a message other than a delta whose
    /// origin is not bound to `from`'s certificate is dropped (`senders_mismatched`); a delta
    /// not applied yet must carry its origin's valid signature (refused otherwise, before it can
    /// take a place in the seen-cache); duplicates by envelope id are dropped. Nothing here
    /// panics on any input.
    pub fn handle_message(&mut self, now: Instant, from: Sender, envelope: Envelope) {
        self.out.now = self.out.now.max(now);
        let mut payload_bytes = 0;
        if let Payload::Delta(delta) = &envelope.payload {
            payload_bytes = replica::delta_log::encoded_bytes(&delta.values);
            self.out.stats.delta_payload_bytes_received += payload_bytes;
            if self
                .replica
                .applied()
                .contains(envelope.origin, envelope.version)
            {
                self.out.stats.duplicate_deltas_received += 1;
            }
        }
        let lazy = matches!(envelope.payload, Payload::Have(_) | Payload::Want(_));
        if envelope.ttl > self.config.max_ttl
            || (lazy && envelope.validate(self.config.limits()).is_err())
        {
            self.out.stats.decode_errors += 1;
        } else if self.membership.is_revoked(&from.key) {
            self.out.stats.messages_from_revoked += 1;
        } else if !matches!(envelope.payload, Payload::Delta(_))
            && !from.key.binds(&envelope.origin)
        {
            self.out.stats.senders_mismatched += 1;
            self.out.event(Event::SenderMismatch {
                claimed: envelope.origin,
            });
        } else {
            match self.screen_delta(&envelope) {
                Screen::Reject(reason) => self.out.reject(envelope.origin, reason),
                Screen::Equivocation(proof) => {
                    self.out.stats.equivocations_detected += 1;
                    // Found here: every live member gets the proof, the sender included.
                    let me = self.out.me.addr;
                    self.handle_proof(me, proof);
                }
                Screen::Pass(content) => {
                    if !self.dissemination.first_sight(now, envelope.id) {
                        self.out.stats.duplicates_dropped += 1;
                    } else {
                        let kind = envelope.payload.kind().as_str();
                        *self.out.stats.received.entry(kind).or_default() += 1;
                        self.route(now, from, envelope, content, payload_bytes);
                    }
                }
            }
        }
        self.after_input(now);
    }

    /// Hands a new message to the sub-machine that owns its kind. Answers go to `from.addr`.
    /// `content` is a delta's content hash, computed by [`Core::screen_delta`], and
    /// `payload_bytes` the size of its values on the wire.
    fn route(
        &mut self,
        now: Instant,
        from: Sender,
        envelope: Envelope,
        content: Option<ContentHash>,
        payload_bytes: u64,
    ) {
        let origin = envelope.origin;
        let from = from.addr;
        let out = &mut self.out;
        match envelope.payload {
            Payload::Delta(ref delta) => {
                let delta = delta.clone();
                let announced = self.membership.announced_version(&origin);
                let live = self.membership.is_live(&origin);
                let content = content.unwrap_or_else(|| content_hash(&delta.values));
                let received = self.replica.receive(
                    out,
                    origin,
                    envelope.version,
                    &delta,
                    content,
                    announced,
                    live,
                );
                if received == Received::Applied {
                    let version = envelope.version;
                    if let Some(logged) = self.replica.logged(origin, version) {
                        let _ = logged.encoded.set(payload_bytes);
                    }
                    let pull = self.dissemination.pull_done(origin, version);
                    // A revoked origin's deltas still merge (peers that hold one and peers that
                    // do not would otherwise never agree again) but are no longer pushed on:
                    // they spread only as anti-entropy repairs what is missing.
                    if !self.membership.is_revoked_peer(&origin) {
                        self.dissemination.spread_applied(
                            out,
                            &self.membership,
                            from,
                            &envelope,
                            delta,
                            payload_bytes,
                            pull,
                        );
                    }
                }
            }
            Payload::Membership(view) => self.membership.handle_view(out, origin, from, view),
            Payload::Join(request) => {
                let (membership, replica) = (&mut self.membership, &self.replica);
                let version = envelope.version;
                answer_join(
                    out,
                    membership,
                    replica,
                    &mut self.dissemination,
                    origin,
                    from,
                    version,
                    request,
                )
            }
            Payload::Ping(probe) => {
                self.membership.merge_view(out, probe.updates, Some(origin));
                self.check_fingerprint(origin, from, probe.applied_hash);
                // Only probes carry the applied-set fingerprint, which walks the whole set
                // after each change: it is computed for them alone.
                let applied_hash = self.replica.applied_fingerprint();
                self.membership
                    .answer_ping(&mut self.out, from, probe.seq, applied_hash);
            }
            Payload::Ack(probe) => {
                self.membership.merge_view(out, probe.updates, Some(origin));
                self.check_fingerprint(origin, from, probe.applied_hash);
                let applied_hash = self.replica.applied_fingerprint();
                self.membership.handle_ack(
                    &mut self.out,
                    now,
                    &mut self.timers,
                    probe.seq,
                    applied_hash,
                );
            }
            Payload::PingReq(req) => {
                let applied_hash = self.replica.applied_fingerprint();
                self.membership
                    .handle_ping_req(out, now, origin, from, req, applied_hash)
            }
            Payload::Welcome(welcome) => self.welcome(origin, welcome),
            Payload::Digest(digest) => self.dissemination.handle_digest(
                out,
                &self.membership,
                &self.replica,
                self.lifecycle.state(),
                origin,
                from,
                digest,
            ),
            Payload::DrainBeacon(beacon) => self.dissemination.handle_beacon(
                out,
                &self.membership,
                &self.replica,
                self.lifecycle.state(),
                origin,
                from,
                beacon,
            ),
            Payload::Snapshot(snapshot) => {
                let membership = &self.membership;
                self.replica
                    .receive_snapshot(out, snapshot, &|o| membership.highest_announced(&o))
            }
            Payload::Leave(notice) => self.membership.handle_leave(out, origin, notice),
            Payload::Equivocation(proof) => self.handle_proof(from, proof),
            Payload::Have(have) => self.dissemination.handle_have(
                out,
                &mut self.timers,
                &self.membership,
                &self.replica,
                self.config.max_message_bytes,
                from,
                have,
            ),
            Payload::Want(want) => self.dissemination.handle_want(
                out,
                &self.membership,
                &self.replica,
                origin,
                from,
                want,
            ),
        }
    }

    /// Addresses a discovery source returned at `now` (`--seed dns:NAME:PORT`, resolved again
    /// every few seconds by the shell). Not joined yet: they become seeds for the join requests.
    /// Joined: each address no member listens at gets a join request (at most one per address
    /// every [`INTRODUCE_EVERY`]), whose answer merges the two views; so peers that
    /// each started a cluster alone, or a member that came back at a new address, find each
    /// other.
    pub fn discovered(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.out.now = self.out.now.max(now);
        let own = self.membership.own().clone();
        let fresh: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != own.addr).collect();
        let membership = &self.membership;
        let to = self
            .lifecycle
            .discovered(now, &fresh, |a| membership.by_addr(a).is_some());
        if !to.is_empty() {
            let heartbeat = self.membership.heartbeat();
            let request = Payload::Join(JoinRequest {
                member: own,
                forwarded: false,
            });
            let envelope = self.out.envelope(heartbeat, 1, request);
            self.out.stats.discovery_introductions += to.len() as u64;
            self.out.send(to, envelope);
        }
        self.after_input(now);
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
        self.out.now = self.out.now.max(now);
        let next = self.replica.published() + 1;
        self.phase_clocks.before_publish(
            self.out.me.id,
            self.replica.published(),
            self.membership.live(),
        );
        let content = content_hash(&values);
        let signature = self.membership.sign_delta(next, weight, &content);
        let (version, values) = self.replica.publish(
            &mut self.out,
            now,
            weight,
            values,
            content,
            signature.clone(),
        )?;
        self.membership.set_own_published(version);
        // Others bound how far they train ahead of what they have seen by the versions they
        // hear were published (Core::unseen_deltas): tell every live member now, in a small
        // control message that overtakes the delta itself.
        self.membership.announce_own(&mut self.out);
        let bytes = self.replica.logged(self.out.me.id, version).map_or_else(
            || replica::delta_log::encoded_bytes(&values),
            |d| d.encoded_bytes(),
        );
        self.dissemination.push_own(
            &mut self.out,
            &self.membership,
            version,
            DeltaPayload {
                weight,
                values,
                signature,
            },
            bytes,
        );
        self.after_input(now);
        Ok(version)
    }

    /// Counts a local delta the trainer scaled down to [`Core::own_delta_norm_bound`] before
    /// handing it to [`Core::publish`] (`own_deltas_clipped`).
    pub fn count_own_delta_clipped(&mut self) {
        self.out.stats.own_deltas_clipped += 1;
    }

    /// Raises this peer's published version to at least `version`: the highest version it may
    /// have sent before a restart (the shell keeps it durable before each publish), so that the
    /// next [`Core::publish`] uses a version never used before.
    pub fn raise_published(&mut self, version: u64) {
        self.replica.learn_published(version);
        self.membership.set_own_published(self.replica.published());
    }

    /// Stops trusting the certificate with key id `key` (revoked by the CA's list, or its
    /// holder caught equivocating): its member records are refused, messages over its
    /// connections are dropped (`messages_from_revoked`), every member bound to it is marked
    /// dead here and goes down, and its deltas are no longer forwarded (those already in the
    /// cluster still merge, through anti-entropy, so every peer ends with the same set). The
    /// shell also refuses its handshakes. Idempotent.
    pub fn revoke(&mut self, now: Instant, key: KeyId) {
        self.out.now = self.out.now.max(now);
        self.membership.revoke(&mut self.out, key);
        self.after_input(now);
    }

    /// Marks this peer as training. A core with [`LifecycleConfig::min_peers`] set does this
    /// by itself once the gate opens.
    pub fn start_training(&mut self) {
        self.set_lifecycle(Lifecycle::Training);
        self.after_input(self.out.now);
    }

    /// The training budget is spent and the last delta published: keep gossiping, with digests
    /// to every live member, until [`Core::drain_complete`] or the drain deadline
    /// ([`Event::DrainEnded`]).
    pub fn start_drain(&mut self, now: Instant) {
        self.out.now = self.out.now.max(now);
        self.set_lifecycle(Lifecycle::Draining);
        self.dissemination.hurry(now, &mut self.timers);
        self.timers.set(Timer::Gossip, now);
        self.timers.set(Timer::Reconnect, now);
        self.lifecycle.start_drain(now, &mut self.timers);
        self.after_input(now);
    }

    /// Leaves for good: tells every live member, then stops.
    pub fn leave(&mut self) {
        self.set_lifecycle(Lifecycle::Stopped);
        self.membership.mark_left();
        let to = self.membership.live_peer_addrs(&[]);
        let published = self.replica.published();
        let notice = LeaveNotice {
            record: self.membership.own().clone(),
        };
        let envelope = self.out.envelope(published, 1, Payload::Leave(notice));
        self.out.send(to, envelope);
        self.after_input(self.out.now);
    }

    // ----- orchestration -------------------------------------------------------------------

    /// What every input ends with: pass on what the sub-machines learned of each other, run
    /// the lifecycle gate and the drain, refresh the derived timer, and take the new transmits
    /// out of the outbox.
    fn after_input(&mut self, now: Instant) {
        self.replica
            .learn_published(self.membership.own_published_heard());
        for peer in self.membership.take_went_down() {
            self.dissemination.forget(&peer);
        }
        if self
            .lifecycle
            .gate(&mut self.out, self.membership.live_count())
        {
            self.set_lifecycle(Lifecycle::Training);
        }
        let draining = self.lifecycle.state() == Lifecycle::Draining;
        if draining {
            self.dissemination.schedule_early_report(
                now,
                &mut self.timers,
                &self.membership,
                self.replica.generation(),
            );
        }
        let (caught_up, view) = if draining {
            let me = self.out.me.id;
            let dead = self.membership.declared_dead(me);
            let view = lifecycle::drain::drain_view(dead, self.replica.applied_fingerprint());
            let suspect_reports_within = view.map(|_| self.config.drain_settle);
            (
                self.dissemination.all_caught_up(
                    me,
                    &self.membership,
                    &self.replica,
                    now,
                    suspect_reports_within,
                ),
                view,
            )
        } else {
            (false, None)
        };
        self.lifecycle
            .update_drain(&mut self.out, now, caught_up, view);
        self.timers
            .set_or_stop(Timer::Suspicion, self.membership.suspicion_deadline());
        for transmit in self.out.take_pending() {
            self.dissemination.note_sent(self.out.now, &transmit);
            self.transmits.push_back(transmit);
        }
    }

    /// `Welcome` from `origin`: merge its view; the first one also installs its snapshot.
    fn welcome(&mut self, origin: PeerId, welcome: Welcome) {
        self.membership
            .merge_view(&mut self.out, welcome.view.members, Some(origin));
        if !self.lifecycle.welcomed(&mut self.timers) {
            return;
        }
        let mut snapshot = welcome.snapshot;
        snapshot.applied.normalize();
        let membership = &self.membership;
        self.replica
            .install_snapshot(&mut self.out, snapshot, &|o| {
                membership.highest_announced(&o)
            });
        self.out.event(Event::Joined {
            via: origin,
            members: self.membership.live_count(),
        });
        self.membership.enqueue_own();
    }

    fn check_fingerprint(&mut self, peer: PeerId, addr: SocketAddr, hash: u64) {
        self.dissemination.check_fingerprint(
            &mut self.out,
            &self.membership,
            &self.replica,
            self.lifecycle.state(),
            self.lifecycle.is_joined(),
            peer,
            addr,
            hash,
        );
    }

    /// Moves to `lifecycle` and announces it in this peer's record: piggybacked like any
    /// change, and, for training and draining, also sent at once to every live member (one
    /// small control message each, once per run). Others' phase clocks act on those two: a
    /// peer waits only for members it knows are training, and stops waiting for one it knows
    /// is draining. Gossip alone takes several `gossip_interval` periods to reach everyone, so
    /// peers that pass the `min_peers` gate together would each train phases alone before
    /// hearing that the others had started.
    fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle.set_state(lifecycle);
        self.membership
            .set_own_lifecycle(lifecycle, self.replica.published());
        if matches!(lifecycle, Lifecycle::Training | Lifecycle::Draining) {
            self.membership.announce_own(&mut self.out);
        }
    }
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod compression_tests;
#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod equivocation_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod lazy_tests;
#[cfg(test)]
mod norm_tests;
#[cfg(test)]
mod tests;
