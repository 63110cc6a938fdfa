//! Membership and failure detection: who is in the cluster, as this peer sees it.
//!
//! [`Membership`] owns the member table ([`view`]), SWIM failure detection with Lifeguard's
//! refinements ([`swim`], [`detector`]), the piggyback queue of changes ([`piggyback`]), the
//! periodic gossip of those changes, the full-view push-pull and the reconnect attempts to
//! members believed dead, and this peer's own incarnation (raised to refute a suspicion).
//!
//! It knows nothing of deltas, base or drain: the applied-set fingerprint it puts on probes is
//! passed in, and what other machines must learn from it (a member that went down, versions of
//! this peer that others announce) the orchestrator reads after each input.

pub mod admission;
pub mod detector;
pub mod piggyback;
pub mod swim;
pub mod view;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::auth::{statement, ContentHash, KeyId, PeerKeys, Signature};
use crate::id::PeerId;
use crate::wire::{LeaveNotice, Lifecycle, MemberRecord, MemberStatus, MembershipView, Payload};

use super::config::CoreConfig;
use super::events::{Event, RejectReason};
use super::outbox::Outbox;
use super::timer::{Timer, TimerTable};
use admission::RecordAdmission;
use piggyback::Piggyback;
use swim::{Suspicion, SwimConfig, SwimState};
use view::{MemberTable, MergeOutcome};

/// The membership sub-machine. See the module docs.
pub struct Membership {
    /// Failure-detector settings.
    swim_config: SwimConfig,
    /// Members each change is gossiped to per period.
    fanout: usize,
    /// Period of membership gossip.
    gossip_interval: Duration,
    /// This peer's id.
    me: PeerId,
    /// One record per known peer, this peer's own included.
    table: MemberTable,
    /// Failure-detector state.
    swim: SwimState,
    /// Changes still to piggyback.
    piggyback: Piggyback,
    /// This peer's incarnation.
    incarnation: u64,
    /// Members that went from live to dead or left, not yet taken by the orchestrator.
    went_down: Vec<PeerId>,
    /// The highest version of this peer's deltas that others' records of it announced.
    own_published_heard: u64,
    /// This peer's signer (for its own record) and the cluster's verifier.
    keys: PeerKeys,
    /// Which records are believed, and the caches that make checking cheap.
    admission: RecordAdmission,
}

/// Sets `record`'s credential to this peer's and signs it. A signer that fails leaves an empty
/// signature, which every receiver refuses (the peer is then heard by no one, and the failure
/// is the shell's to report: its key is unusable).
pub fn sign_record(keys: &PeerKeys, record: &mut MemberRecord) {
    record.credential = keys.signer.credential().clone();
    record.signature = keys.signer.sign(&record.statement()).unwrap_or_default();
}

impl Membership {
    /// A view holding only `own` (this peer's record), with the gossip, push-pull, reconnect
    /// and probe timers set one period after `now`.
    pub fn new(
        config: &CoreConfig,
        mut own: MemberRecord,
        keys: PeerKeys,
        now: Instant,
        timers: &mut TimerTable,
    ) -> Self {
        sign_record(&keys, &mut own);
        let mut admission = RecordAdmission::default();
        // Its own record counts as one of its certificate's identities.
        let _ = admission.check(&*keys.verifier, None, &own);
        timers.set(Timer::Gossip, now + config.gossip_interval);
        timers.set(Timer::PushPull, now + config.swim.push_pull_interval);
        timers.set(Timer::Reconnect, now + config.swim.reconnect_interval);
        timers.set(Timer::Probe, now + config.swim.probe_interval);
        Self {
            swim_config: config.swim.clone(),
            fanout: config.fanout,
            gossip_interval: config.gossip_interval,
            me: own.peer_id,
            incarnation: own.incarnation,
            table: MemberTable::new(own),
            swim: SwimState::default(),
            piggyback: Piggyback::default(),
            went_down: Vec::new(),
            own_published_heard: 0,
            keys,
            admission,
        }
    }

    // ----- queries -------------------------------------------------------------------------

    /// The record of `peer`, if known.
    pub fn get(&self, peer: &PeerId) -> Option<&MemberRecord> {
        self.table.get(peer)
    }

    /// Every record, by peer id.
    pub fn iter(&self) -> impl Iterator<Item = &MemberRecord> {
        self.table.iter()
    }

    /// The members declared dead by failure detection (not those that left), other than `me`,
    /// with their incarnations.
    pub fn declared_dead(&self, me: PeerId) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.table
            .dead()
            .filter(move |m| m.peer_id != me)
            .map(|m| (m.peer_id, m.incarnation))
    }

    /// Live members (alive or suspect), this peer included.
    pub fn live(&self) -> impl Iterator<Item = &MemberRecord> {
        self.table.live()
    }

    /// Number of live members, this peer included.
    pub fn live_count(&self) -> usize {
        self.table.live_count()
    }

    /// The member listening at `addr`, if any.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&MemberRecord> {
        self.table.by_addr(addr)
    }

    /// This peer's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This peer's heartbeat (the version of membership messages it sends).
    pub fn heartbeat(&self) -> u64 {
        self.own().heartbeat
    }

    /// Whether `peer` is a live member (alive or suspect).
    pub fn is_live(&self, peer: &PeerId) -> bool {
        self.get(peer)
            .is_some_and(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
    }

    /// The listen address of `peer`, if known.
    pub fn addr_of(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.get(peer).map(|m| m.addr)
    }

    /// The `published` version `peer`'s record announces (0 when unknown).
    pub fn announced_version(&self, peer: &PeerId) -> u64 {
        self.get(peer).map_or(0, |m| m.published)
    }

    /// The highest version of `peer` that its record announces, and for this peer also the
    /// highest that others' records of it announced (a peer restarted without its state learns
    /// its earlier versions that way). 0 when unknown.
    pub fn highest_announced(&self, peer: &PeerId) -> u64 {
        let announced = self.announced_version(peer);
        if *peer == self.me {
            announced.max(self.own_published_heard)
        } else {
            announced
        }
    }

    /// Checks a delta `(origin, version)` whose values hash to `content` against its origin's
    /// admitted record: the origin must be known (only admitted records enter the table, so
    /// invented origins are refused) and `signature` must verify over the delta's statement.
    ///
    /// Errors: [`RejectReason::UnknownOrigin`] or [`RejectReason::Signature`].
    pub fn verify_delta(
        &self,
        origin: PeerId,
        version: u64,
        weight: f32,
        content: &ContentHash,
        signature: &Signature,
    ) -> Result<(), RejectReason> {
        let record = self.get(&origin).ok_or(RejectReason::UnknownOrigin)?;
        let statement = statement::delta(origin, version, weight, content);
        self.keys
            .verifier
            .verify(&record.credential, &statement, signature)
            .map_err(|_| RejectReason::Signature)
    }

    /// Signs this peer's delta `version` (`content`: the hash of its values, already scaled by
    /// `weight`).
    pub fn sign_delta(&self, version: u64, weight: f32, content: &ContentHash) -> Signature {
        let statement = statement::delta(self.me, version, weight, content);
        self.keys.signer.sign(&statement).unwrap_or_default()
    }

    /// This peer's own record.
    pub fn own(&self) -> &MemberRecord {
        // The table is created with this peer's record and never drops a record.
        self.table
            .get(&self.me)
            .expect("the member table always holds this peer's own record")
    }

    /// Addresses of the live members other than this peer and `exclude`.
    pub fn live_peer_addrs(&self, exclude: &[PeerId]) -> Vec<SocketAddr> {
        self.table
            .live_addrs()
            .iter()
            .filter(|(peer, _)| *peer != self.me && !exclude.contains(peer))
            .map(|&(_, addr)| addr)
            .collect()
    }

    /// Addresses of the members that are alive (not suspect) other than this peer.
    pub fn alive_peer_addrs(&self) -> Vec<SocketAddr> {
        self.table
            .iter()
            .filter(|m| m.status == MemberStatus::Alive && m.peer_id != self.me)
            .map(|m| m.addr)
            .collect()
    }

    /// The live members other than `except` that could send a joiner a snapshot: this peer, or
    /// one already training or draining. Sorted by peer id.
    pub fn snapshot_donors(&self, except: PeerId) -> Vec<(PeerId, SocketAddr)> {
        let mut donors: Vec<(PeerId, SocketAddr)> = self
            .table
            .live()
            .filter(|m| {
                m.peer_id != except
                    && (m.peer_id == self.me
                        || matches!(m.lifecycle, Lifecycle::Training | Lifecycle::Draining))
            })
            .map(|m| (m.peer_id, m.addr))
            .collect();
        donors.sort_by_key(|d| d.0);
        donors
    }

    /// The whole view, as sent in push-pull and `Welcome`.
    pub fn full_view(&self) -> MembershipView {
        MembershipView {
            members: self.table.iter().cloned().collect(),
            push_pull: false,
            reply: false,
        }
    }

    /// The highest version of this peer's deltas that others' records of it announced (a
    /// restarted peer learns from it what it published before its checkpoint).
    pub fn own_published_heard(&self) -> u64 {
        self.own_published_heard
    }

    /// Members that went down since the last call.
    pub fn take_went_down(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.went_down)
    }

    // ----- this peer's own record ----------------------------------------------------------

    /// Announces a new lifecycle state and published version (a new heartbeat).
    pub fn set_own_lifecycle(&mut self, lifecycle: Lifecycle, published: u64) {
        self.update_own(|me| {
            me.lifecycle = lifecycle;
            me.published = published;
            me.heartbeat += 1;
        });
        self.enqueue_own();
    }

    /// Records a newly published version in this peer's record (carried by the next change).
    pub fn set_own_published(&mut self, version: u64) {
        self.update_own(|me| me.published = version);
    }

    /// Marks this peer as left (before its `Leave` goes out).
    pub fn mark_left(&mut self) {
        self.update_own(|me| {
            me.status = MemberStatus::Left;
            me.lifecycle = Lifecycle::Stopped;
        });
    }

    /// Stops believing the certificate `key`: its records are refused from now on, and every
    /// member bound to it is marked dead here (a local verdict, passed on like any death) and
    /// goes down. Returns the members that went down; none when it was revoked already.
    pub fn revoke(&mut self, out: &mut Outbox, key: KeyId) -> Vec<PeerId> {
        if !self.admission.revoke(key) {
            return Vec::new();
        }
        let bound: Vec<MemberRecord> = self
            .table
            .iter()
            .filter(|m| key.binds(&m.peer_id) && m.peer_id != self.me)
            .cloned()
            .collect();
        let mut down = Vec::new();
        for mut record in bound {
            let was_live = matches!(record.status, MemberStatus::Alive | MemberStatus::Suspect);
            if record.status != MemberStatus::Left {
                record.status = MemberStatus::Dead;
            }
            self.swim.suspicions.remove(&record.peer_id);
            let peer = record.peer_id;
            self.table.replace(record.clone());
            if was_live {
                self.went_down.push(peer);
                down.push(peer);
                out.event(Event::MemberDown(record));
            }
        }
        down
    }

    /// Whether messages from the certificate `key` are refused.
    pub fn is_revoked(&self, key: &KeyId) -> bool {
        self.admission.is_revoked(key)
    }

    /// Whether `peer` is bound to a revoked certificate.
    pub fn is_revoked_peer(&self, peer: &PeerId) -> bool {
        self.admission.is_revoked_peer(peer)
    }

    /// Changes this peer's own record and signs it again.
    fn update_own(&mut self, change: impl FnOnce(&mut MemberRecord)) {
        let keys = &self.keys;
        self.table.update(&self.me, |me| {
            change(me);
            sign_record(keys, me);
        });
    }

    /// Queues this peer's record for piggybacking.
    pub fn enqueue_own(&mut self) {
        let own = self.own().clone();
        self.enqueue_update(own);
    }

    // ----- incoming messages ---------------------------------------------------------------

    /// Merges the records of a `Membership` message from `origin` and answers a push-pull
    /// request with this peer's whole view.
    pub fn handle_view(
        &mut self,
        out: &mut Outbox,
        origin: PeerId,
        origin_addr: SocketAddr,
        view: MembershipView,
    ) {
        let answer = view.push_pull && !view.reply;
        self.merge_view(out, view.members, Some(origin));
        if answer {
            self.send_view(out, vec![origin_addr], true, true);
        }
    }

    /// A member says goodbye: its own signed record, status `Left`, with its last published
    /// version. A notice for another id, or not saying `Left`, is refused as unbound.
    pub fn handle_leave(&mut self, out: &mut Outbox, origin: PeerId, notice: LeaveNotice) {
        let record = notice.record;
        if record.peer_id != origin || record.status != MemberStatus::Left {
            out.refuse_record(origin, admission::RecordRefusal::Unbound);
            return;
        }
        self.merge_record(out, record, Some(origin));
    }

    /// Merges records carried by a message from `from` (if known).
    pub fn merge_view(
        &mut self,
        out: &mut Outbox,
        records: Vec<MemberRecord>,
        from: Option<PeerId>,
    ) {
        for record in records {
            self.merge_record(out, record, from);
        }
    }

    /// Merges one record by version (docs/ALGORITHM.md), queues real changes for
    /// piggybacking, keeps the suspicion bookkeeping, and refutes suspicions of this peer.
    /// `from` is the peer whose message carried the record (an independent confirmation of a
    /// suspicion). A record that would change the table is checked first
    /// ([`admission::RecordAdmission::check`]); a refused one is counted and changes nothing.
    /// Returns false when the record was refused.
    pub fn merge_record(
        &mut self,
        out: &mut Outbox,
        record: MemberRecord,
        from: Option<PeerId>,
    ) -> bool {
        let peer = record.peer_id;
        let held = self.table.get(&peer);
        let changes = held.is_none_or(|held| held.is_superseded_by(&record));
        let confirms = record.status == MemberStatus::Suspect;
        if changes || confirms {
            match self.admission.check(&*self.keys.verifier, held, &record) {
                Ok(verified) => out.stats.signatures_verified += u64::from(verified),
                Err(refusal) => {
                    out.refuse_record(peer, refusal);
                    return false;
                }
            }
        }
        if peer == self.me {
            self.merge_own(out, record);
            return true;
        }
        match self.table.merge(record.clone()) {
            MergeOutcome::New => {
                self.enqueue_update(record.clone());
                match record.status {
                    MemberStatus::Alive => out.event(Event::MemberUp(record)),
                    MemberStatus::Suspect => {
                        out.event(Event::MemberUp(record.clone()));
                        self.start_suspicion(out.now, &record, from);
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
                            out.event(Event::MemberUp(record));
                        }
                    }
                    MemberStatus::Suspect => {
                        self.start_suspicion(out.now, &record, from);
                        if !was_live {
                            out.event(Event::MemberUp(record.clone()));
                        }
                        out.event(Event::MemberSuspect(record));
                    }
                    MemberStatus::Dead | MemberStatus::Left => {
                        self.swim.suspicions.remove(&peer);
                        if was_live {
                            self.went_down.push(peer);
                            out.event(Event::MemberDown(record));
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
        true
    }

    /// Another peer's record of this one.
    fn merge_own(&mut self, out: &mut Outbox, record: MemberRecord) {
        self.own_published_heard = self.own_published_heard.max(record.published);
        let leaving = self.own().lifecycle == Lifecycle::Stopped;
        if record.status != MemberStatus::Alive
            && record.incarnation >= self.incarnation
            && !leaving
        {
            // Someone believes a worse version of us: refute by raising the incarnation (SWIM).
            self.incarnation = record.incarnation + 1;
            out.stats.refutations += 1;
            // Lifeguard: being suspected hints that this peer is the slow one.
            self.swim
                .adjust_awareness(1, self.swim_config.awareness_max_multiplier);
            let incarnation = self.incarnation;
            self.update_own(|me| {
                me.incarnation = incarnation;
                me.status = MemberStatus::Alive;
                me.heartbeat += 1;
            });
            self.enqueue_own();
        } else if !leaving
            && (record.incarnation > self.incarnation
                || (record.incarnation == self.incarnation
                    && record.heartbeat > self.own().heartbeat))
        {
            // Someone knows an alive record of us that this run never made: an incarnation
            // above ours, or ours with a heartbeat ahead of ours (heartbeats only grow). This
            // peer restarted without its state (a damaged checkpoint, or none yet) and the
            // record is its earlier run's, with that run's address. Outrank it, or the members
            // keep the old record and probe an address nobody answers at.
            self.incarnation = record.incarnation + 1;
            let incarnation = self.incarnation;
            self.update_own(|me| {
                me.incarnation = incarnation;
                me.heartbeat += 1;
            });
            self.enqueue_own();
        }
    }

    fn start_suspicion(&mut self, now: Instant, record: &MemberRecord, from: Option<PeerId>) {
        let fresh = || Suspicion {
            incarnation: record.incarnation,
            started: now,
            confirmations: Default::default(),
        };
        let entry = self
            .swim
            .suspicions
            .entry(record.peer_id)
            .or_insert_with(fresh);
        if entry.incarnation != record.incarnation {
            *entry = fresh();
        }
        if let Some(from) = from.filter(|f| *f != record.peer_id && *f != self.me) {
            entry.confirmations.insert(from);
        }
    }

    fn enqueue_update(&mut self, record: MemberRecord) {
        let retransmits = self.swim_config.retransmits(self.table.len());
        self.piggyback.push(record, retransmits);
    }

    // ----- timers --------------------------------------------------------------------------

    /// [`Timer::Gossip`]: pushes pending changes to `fanout` members; sends nothing when idle.
    pub fn on_gossip(&mut self, out: &mut Outbox, now: Instant, timers: &mut TimerTable) {
        timers.set(Timer::Gossip, now + self.gossip_interval);
        self.push_updates(out);
    }

    /// Pushes the pending membership changes to `fanout` live members now; nothing when there
    /// are none.
    fn push_updates(&mut self, out: &mut Outbox) {
        if self.piggyback.is_empty() {
            return;
        }
        let targets = out.choose(self.live_peer_addrs(&[]), self.fanout);
        if targets.is_empty() {
            return;
        }
        let view = MembershipView {
            members: self.piggyback.take(),
            push_pull: false,
            reply: false,
        };
        let envelope = out.envelope(self.heartbeat(), 1, Payload::Membership(view));
        out.send(targets, envelope);
    }

    /// [`Timer::PushPull`]: exchanges the whole view with one random member.
    pub fn on_push_pull(&mut self, out: &mut Outbox, now: Instant, timers: &mut TimerTable) {
        timers.set(Timer::PushPull, now + self.swim_config.push_pull_interval);
        let targets = out.choose(self.live_peer_addrs(&[]), 1);
        self.send_view(out, targets, true, false);
    }

    /// [`Timer::Reconnect`]: a push-pull to one member believed dead per period; while
    /// `draining`, to every one of them each second, so that a peer that was only cut off is
    /// not left behind by the drain.
    pub fn on_reconnect(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        draining: bool,
    ) {
        let period = if draining {
            self.swim_config
                .reconnect_interval
                .min(Duration::from_secs(1))
        } else {
            self.swim_config.reconnect_interval
        };
        timers.set(Timer::Reconnect, now + period);
        let mut dead: Vec<(PeerId, SocketAddr)> = self
            .table
            .iter()
            .filter(|m| m.status == MemberStatus::Dead)
            .map(|m| (m.peer_id, m.addr))
            .collect();
        dead.sort();
        let targets: Vec<SocketAddr> = if draining {
            dead.iter().map(|&(_, addr)| addr).collect()
        } else {
            dead.choose(&mut out.rng)
                .map(|&(_, a)| a)
                .into_iter()
                .collect()
        };
        self.send_view(out, targets, true, false);
    }

    /// Sends the whole view (push-pull).
    /// Sends this peer's own record alone to every live member (a `Membership` message that
    /// asks for no answer): how a new published version is announced at once.
    pub fn announce_own(&mut self, out: &mut Outbox) {
        let targets = self.live_peer_addrs(&[]);
        if targets.is_empty() {
            return;
        }
        let view = MembershipView {
            members: vec![self.own().clone()],
            push_pull: false,
            reply: false,
        };
        let envelope = out.envelope(self.heartbeat(), 1, Payload::Membership(view));
        out.send(targets, envelope);
    }

    fn send_view(
        &mut self,
        out: &mut Outbox,
        targets: Vec<SocketAddr>,
        push_pull: bool,
        reply: bool,
    ) {
        if targets.is_empty() {
            return;
        }
        let mut view = self.full_view();
        view.push_pull = push_pull;
        view.reply = reply;
        let envelope = out.envelope(self.heartbeat(), 1, Payload::Membership(view));
        out.send(targets, envelope);
    }
}
