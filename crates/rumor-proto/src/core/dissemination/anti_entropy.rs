//! Anti-entropy: peers exchange digests of their applied sets and push each other the deltas
//! the other lacks (from the delta log, within a byte budget), or a snapshot when the log no
//! longer holds them. A probe whose applied-set fingerprint differs from ours starts an
//! exchange at once. Digests also carry each peer's lifecycle, which the drain reads.
//!
//! These are [`Dissemination`] methods; the replica and the member table are read, never
//! changed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::PeerId;
use crate::version_vector::VersionVector;
use crate::wire::{
    DeltaPayload, Digest, DrainBeacon, Envelope, HaveEntry, Lifecycle, MemberStatus, Payload,
    MAX_LAZY_ENTRIES,
};

use super::{BeaconReport, Dissemination, PeerProgress};
use crate::core::membership::Membership;
use crate::core::outbox::Outbox;
use crate::core::replica::delta_log::LoggedDelta;
use crate::core::replica::Replica;
use crate::core::timer::{Timer, TimerTable};

/// How many early drain reports ([`Dissemination::schedule_early_report`]) and rounds may go
/// per `drain_anti_entropy_interval`: an early report waits at least a quarter of the interval
/// after the last report.
pub const EARLY_REPORTS_PER_ROUND: u32 = 4;

/// Whether two sorted fingerprint lists agree on every origin both list.
fn same_contents(theirs: &[(PeerId, [u8; 16])], ours: &[(PeerId, [u8; 16])]) -> bool {
    theirs.iter().all(|(origin, fingerprint)| {
        ours.binary_search_by_key(origin, |(o, _)| *o)
            .map_or(true, |i| ours[i].1 == *fingerprint)
    })
}

/// A logged delta as a one-hop envelope, with its origin's signature.
pub(super) fn logged_delta_envelope(
    out: &mut Outbox,
    membership: &Membership,
    origin: PeerId,
    version: u64,
    delta: &LoggedDelta,
) -> Envelope {
    Envelope {
        id: out.new_id(),
        origin,
        origin_addr: membership.addr_of(&origin).unwrap_or(out.me.addr),
        version,
        ttl: 1,
        payload: Payload::Delta(DeltaPayload {
            weight: delta.weight,
            values: delta.values.clone(),
            signature: delta.signature.clone(),
        }),
    }
}

impl Dissemination {
    /// [`Timer::AntiEntropy`]: a digest to one random member while training; while draining,
    /// a digest to `fanout` random live members and a [`DrainBeacon`] to every other one (so
    /// a round costs O(N) small messages and O(fanout) digests of O(N) bytes per peer, not N
    /// digests); none before training.
    pub fn on_anti_entropy(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
    ) {
        if lifecycle < Lifecycle::Training {
            timers.set(Timer::AntiEntropy, now + self.anti_entropy_interval);
            return;
        }
        let draining = lifecycle == Lifecycle::Draining;
        let period = if draining {
            self.drain_anti_entropy_interval
        } else {
            self.anti_entropy_interval
        };
        timers.set(Timer::AntiEntropy, now + period);
        if draining {
            // This round reports to every live member: an early report would repeat it.
            self.last_report = Some((now, replica.generation()));
            timers.stop(Timer::DrainReport);
        }
        self.beacon_answers_left = self.fanout;
        let live = membership.live_peer_addrs(&[]);
        if !draining {
            let target = out.choose(live, 1);
            self.send_digest(out, target, membership, replica, lifecycle, false);
        } else if live.len() <= self.fanout {
            self.send_digest(out, live, membership, replica, lifecycle, false);
        } else {
            let full = out.choose(live.clone(), self.fanout);
            let rest: Vec<SocketAddr> = live.into_iter().filter(|a| !full.contains(a)).collect();
            self.send_digest(out, full, membership, replica, lifecycle, false);
            let beacon = DrainBeacon {
                lifecycle,
                summary: replica.drain_summary(),
            };
            let envelope = out.envelope(membership.heartbeat(), 1, Payload::DrainBeacon(beacon));
            out.send(rest, envelope);
        }
    }

    /// While draining, once every live member has said it is draining: when this peer's
    /// holdings (`generation`) changed since it last reported them, sets
    /// [`Timer::DrainReport`] to the earliest instant an early report may go, at most
    /// [`EARLY_REPORTS_PER_ROUND`] per `drain_anti_entropy_interval` counting the rounds,
    /// unless the next round comes first. The last deltas of a run are then reported as soon
    /// as they are applied rather than at the next round, which is what ends the drain; while
    /// some member still trains, its deltas keep changing the holdings and the rounds suffice.
    pub fn schedule_early_report(
        &self,
        now: Instant,
        timers: &mut TimerTable,
        membership: &Membership,
        generation: u64,
    ) {
        let Some((reported_at, reported)) = self.last_report else {
            return;
        };
        if reported == generation || timers.get(Timer::DrainReport).is_some() {
            return;
        }
        let me = membership.own().peer_id;
        if !membership
            .live()
            .all(|m| m.peer_id == me || m.lifecycle >= Lifecycle::Draining)
        {
            return;
        }
        let gap = self.drain_anti_entropy_interval / EARLY_REPORTS_PER_ROUND;
        let due = now.max(reported_at + gap);
        if timers
            .get(Timer::AntiEntropy)
            .is_some_and(|round| round <= due)
        {
            return;
        }
        timers.set(Timer::DrainReport, due);
    }

    /// [`Timer::DrainReport`]: a [`DrainBeacon`] with this peer's current summary to every
    /// other live member (a beacon whatever the cluster's size: it is all the drain condition
    /// needs, and one that differs is answered with a digest).
    pub fn on_drain_report(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
    ) {
        if lifecycle != Lifecycle::Draining {
            return;
        }
        let beacon = DrainBeacon {
            lifecycle,
            summary: replica.drain_summary(),
        };
        let envelope = out.envelope(membership.heartbeat(), 1, Payload::DrainBeacon(beacon));
        out.send(membership.live_peer_addrs(&[]), envelope);
        self.last_report = Some((now, replica.generation()));
    }

    /// A drain beacon from `origin` (a member): remember it as its latest report. One that
    /// differs from this peer's summary is answered with a full digest (at most `fanout` per
    /// anti-entropy period, and once per period per member), so the two compare in full and
    /// push each other what one lacks, as a digest to every member would have.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_beacon(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
        origin: PeerId,
        origin_addr: SocketAddr,
        beacon: DrainBeacon,
    ) {
        if membership.get(&origin).is_none() {
            return;
        }
        let differs = beacon.summary != replica.drain_summary();
        self.beacons.insert(
            origin,
            BeaconReport {
                lifecycle: beacon.lifecycle,
                summary: beacon.summary,
                received_at: out.now,
            },
        );
        if !differs || lifecycle < Lifecycle::Training || self.beacon_answers_left == 0 {
            return;
        }
        let gap = self.drain_anti_entropy_interval;
        if self.digest_at_most_every(
            out,
            membership,
            replica,
            lifecycle,
            origin,
            origin_addr,
            gap,
        ) {
            self.beacon_answers_left -= 1;
        }
    }

    /// Sends `peer` this peer's digest unless one went to it less than `gap` ago; returns
    /// whether it did.
    #[allow(clippy::too_many_arguments)]
    fn digest_at_most_every(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
        peer: PeerId,
        addr: SocketAddr,
        gap: std::time::Duration,
    ) -> bool {
        let now = out.now;
        if self
            .last_digest_to
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < gap)
        {
            return false;
        }
        self.last_digest_to.insert(peer, now);
        let addr = membership.addr_of(&peer).unwrap_or(addr);
        self.send_digest(out, vec![addr], membership, replica, lifecycle, false);
        true
    }

    /// Sends digests to every live member from `now` on (the drain started).
    pub fn hurry(&mut self, now: Instant, timers: &mut TimerTable) {
        timers.set(Timer::AntiEntropy, now);
    }

    /// A digest from `origin`: push what it lacks while the log holds it and the byte budget
    /// lasts (a snapshot when some of it is gone), announce in one `Have` the large deltas it
    /// lacks (as many as the budget would let it pull), ask for what we lack, and remember its
    /// progress if it is a member.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_digest(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
        origin: PeerId,
        origin_addr: SocketAddr,
        digest: Digest,
    ) {
        let Digest {
            mut applied,
            lifecycle: theirs,
            reply,
            mut contents,
            mut equivocations,
        } = digest;
        applied.normalize();
        contents.sort_unstable_by_key(|(origin, _)| *origin);
        contents.dedup_by_key(|(origin, _)| *origin);
        equivocations.sort_unstable();
        equivocations.dedup();
        let addr = membership.addr_of(&origin).unwrap_or(origin_addr);
        // Proofs it lacks.
        for key in replica.equivocations() {
            if equivocations.binary_search(&key).is_err() {
                if let Some(proof) = replica.proof(key.0, key.1) {
                    let envelope = out.envelope(0, 1, Payload::Equivocation(proof.clone()));
                    out.send(vec![addr], envelope);
                }
            }
        }
        // Origins of which it applied the same versions but other contents: push it our
        // copies; where one differs, it holds two signed deltas under one version (a proof).
        let ours = replica.fingerprints();
        let now = out.now;
        let mut budget = self.answers.bytes_left(now, origin);
        let start = budget;
        for (delta_origin, fingerprint) in &contents {
            let differs = ours
                .binary_search_by_key(delta_origin, |(o, _)| *o)
                .is_ok_and(|i| ours[i].1 != *fingerprint);
            let same_versions = applied.origins().get(delta_origin)
                == replica.applied().origins().get(delta_origin);
            if !(differs && same_versions) {
                continue;
            }
            for version in replica.logged_versions(*delta_origin) {
                let Some(delta) = replica.logged(*delta_origin, version) else {
                    continue;
                };
                let size = delta.values.len() * 4;
                if size > budget {
                    break;
                }
                budget -= size;
                out.stats.anti_entropy_deltas_sent += 1;
                let envelope =
                    logged_delta_envelope(out, membership, *delta_origin, version, delta);
                out.send(vec![addr], envelope);
            }
        }
        let missing: Vec<(PeerId, u64)> = replica.applied().difference(&applied).collect();
        let mut lost = false;
        // Large deltas it lacks, to announce rather than push ([`super::lazy`]), and the bytes
        // pulling them will take from its budget.
        let mut haves: Vec<HaveEntry> = Vec::new();
        let mut announced = 0;
        for (delta_origin, version) in missing {
            if self.sent.blocks(addr, delta_origin, version) {
                continue;
            }
            let Some(delta) = replica.logged(delta_origin, version) else {
                lost = true;
                continue;
            };
            // Someone else's fresh delta is most likely still on its way from its origin;
            // pushing it too would race the origin's own send (under loss, many times over).
            if delta_origin != out.me.id
                && out.now.saturating_duration_since(delta.logged_at) < self.anti_entropy_delay
            {
                continue;
            }
            let size = delta.values.len() * 4;
            let bytes = delta.encoded_bytes();
            if self.is_large(bytes) {
                if haves.len() < MAX_LAZY_ENTRIES && announced + size <= budget {
                    announced += size;
                    haves.push(HaveEntry {
                        origin: delta_origin,
                        version,
                        bytes,
                        ttl: 1,
                    });
                }
                continue;
            }
            if size > budget {
                out.stats.answers_limited += 1;
                break;
            }
            budget -= size;
            let envelope = logged_delta_envelope(out, membership, delta_origin, version, delta);
            out.stats.anti_entropy_deltas_sent += 1;
            out.send(vec![addr], envelope);
        }
        self.answers.spend(now, origin, start - budget);
        self.send_have(out, vec![addr], haves);
        if lost && self.take_snapshot(out, origin) {
            out.stats.snapshots_sent += 1;
            let envelope = out.envelope(0, 1, Payload::Snapshot(replica.snapshot()));
            out.send(vec![addr], envelope);
        }
        // Ask for what we lack by answering with our own digest.
        if !reply && !applied.is_subset_of(replica.applied()) {
            self.send_digest(out, vec![addr], membership, replica, lifecycle, true);
        }
        // Progress is kept for members of the view only: digests claiming other origins would
        // otherwise grow this map (each entry a version vector) without bound.
        if membership.get(&origin).is_some() {
            self.beacons.remove(&origin);
            self.progress.insert(
                origin,
                PeerProgress {
                    applied_fingerprint: applied.fingerprint(),
                    matched_at: std::cell::Cell::new(None),
                    applied,
                    lifecycle: theirs,
                    contents,
                    equivocations,
                    received_at: out.now,
                },
            );
        }
    }

    /// When a probe shows that `peer`'s applied set differs from ours (its fingerprint `hash`),
    /// start anti-entropy with it, at most once per anti-entropy interval per peer. Only once
    /// `joined`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_fingerprint(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
        joined: bool,
        peer: PeerId,
        addr: SocketAddr,
        hash: u64,
    ) {
        if hash == replica.applied_fingerprint() || !joined {
            return;
        }
        let gap = self.anti_entropy_interval;
        self.digest_at_most_every(out, membership, replica, lifecycle, peer, addr, gap);
    }

    fn send_digest(
        &mut self,
        out: &mut Outbox,
        targets: Vec<SocketAddr>,
        membership: &Membership,
        replica: &Replica,
        lifecycle: Lifecycle,
        reply: bool,
    ) {
        if targets.is_empty() {
            return;
        }
        let digest = Digest {
            applied: replica.applied().clone(),
            lifecycle,
            reply,
            contents: replica.fingerprints().to_vec(),
            equivocations: replica.equivocations(),
        };
        let envelope = out.envelope(membership.heartbeat(), 1, Payload::Digest(digest));
        out.send(targets, envelope);
    }

    /// Forgets what `peer` reported (it went down).
    pub fn forget(&mut self, peer: &PeerId) {
        self.progress.remove(peer);
        self.beacons.remove(peer);
    }

    /// The lifecycle and applied set `peer` last reported in a digest.
    pub fn peer_progress(&self, peer: &PeerId) -> Option<(Lifecycle, &VersionVector)> {
        self.progress.get(peer).map(|p| (p.lifecycle, &p.applied))
    }

    /// Whether every live member other than `me` has said it is draining or past it and
    /// reported exactly `replica`'s applied set, the same content fingerprint for every origin
    /// both know all contents of, and the same equivocations: the drain condition's part that
    /// is about others. A peer never counts as caught up while it is known to hold other
    /// contents.
    ///
    /// A suspect member counts on the same terms, except that with `suspect_reports_within`
    /// set (some member is declared dead, so the drain must settle) its matching report must
    /// have arrived within that long before `now`: a member cut off since an older report could
    /// hold a dead member's delta that it can no longer report (docs/ALGORITHM.md, *Drain
    /// condition*).
    pub fn all_caught_up(
        &self,
        me: PeerId,
        membership: &Membership,
        replica: &Replica,
        now: Instant,
        suspect_reports_within: Option<Duration>,
    ) -> bool {
        let generation = replica.generation();
        let applied = replica.applied();
        let fingerprint = replica.applied_fingerprint();
        let ours = replica.fingerprints();
        let equivocations = replica.equivocations();
        let summary = replica.drain_summary();
        let recent_enough = |m: &crate::wire::MemberRecord, received_at: Instant| {
            m.status == MemberStatus::Alive
                || suspect_reports_within
                    .is_none_or(|within| now.saturating_duration_since(received_at) <= within)
        };
        membership.live().all(|m| {
            if m.peer_id == me {
                return true;
            }
            if let Some(beacon) = self.beacons.get(&m.peer_id) {
                // Its latest report is a beacon: equal summaries, equal holdings.
                return beacon.lifecycle >= Lifecycle::Draining
                    && beacon.summary == summary
                    && recent_enough(m, beacon.received_at);
            }
            self.progress.get(&m.peer_id).is_some_and(|p| {
                if p.lifecycle < Lifecycle::Draining || !recent_enough(m, p.received_at) {
                    return false;
                }
                // Reports are compared in full once per change on either side.
                if p.matched_at.get() == Some(generation) {
                    return true;
                }
                let matches = p.applied_fingerprint == fingerprint
                    && p.applied == *applied
                    && p.equivocations == equivocations
                    && same_contents(&p.contents, ours);
                if matches {
                    p.matched_at.set(Some(generation));
                }
                matches
            })
        })
    }
}
