//! Joining: this peer's join requests to the seeds, and a seed's answer to another's request.
//!
//! A joiner sends `Join` to its seeds in turn with exponential backoff until one answers
//! `Welcome` (the whole view and a snapshot). A seed spreads the snapshot load: it passes the
//! request on to a random member already training, and answers itself only when none is.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::id::PeerId;
use crate::wire::{JoinRequest, MemberRecord, MemberStatus, Payload, Welcome};

use super::PeerLifecycle;
use crate::core::dissemination::Dissemination;
use crate::core::membership::Membership;
use crate::core::outbox::Outbox;
use crate::core::replica::Replica;
use crate::core::timer::{Timer, TimerTable};

/// How often a joined peer sends a join request to one address that discovery keeps returning
/// and no member holds (a host that does not answer, or not yet).
pub const INTRODUCE_EVERY: Duration = Duration::from_secs(10);

impl PeerLifecycle {
    /// [`Timer::Join`]: sends `own` (this peer's record) to the next seed and sets the retry
    /// after a backoff that doubles per attempt up to `join_backoff_max`. Nothing once joined.
    pub fn on_join_timer(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        own: MemberRecord,
        heartbeat: u64,
    ) {
        if self.joined || self.seeds.is_empty() {
            return;
        }
        let seed = self.seeds[self.join_attempt as usize % self.seeds.len()];
        let request = Payload::Join(JoinRequest {
            member: own,
            forwarded: false,
        });
        let envelope = out.envelope(heartbeat, 1, request);
        out.stats.join_attempts += 1;
        out.send(vec![seed], envelope);
        let backoff = self
            .join_backoff_initial
            .saturating_mul(1u32 << self.join_attempt.min(16))
            .min(self.join_backoff_max);
        self.join_attempt = self.join_attempt.saturating_add(1);
        timers.set(Timer::Join, now + backoff);
    }

    /// Addresses a discovery source (DNS) returned at `now`, this peer's own left out; `known`
    /// says whether a member listens at an address. Not joined: the new ones become seeds, tried
    /// in turn by the join timer. Joined: returns those to send a join request to — no member's
    /// address, and not sent one within [`INTRODUCE_EVERY`] — so that peers that started apart
    /// (each alone at first, as the pods of a StatefulSet may) merge their views.
    pub fn discovered(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
        known: impl Fn(SocketAddr) -> bool,
    ) -> Vec<SocketAddr> {
        if !self.joined {
            for a in addrs {
                if !self.seeds.contains(a) {
                    self.seeds.push(*a);
                }
            }
            return Vec::new();
        }
        self.introduced
            .retain(|_, at| now.saturating_duration_since(*at) < INTRODUCE_EVERY);
        let mut to = Vec::new();
        for a in addrs {
            if !known(*a) && !self.introduced.contains_key(a) && !to.contains(a) {
                self.introduced.insert(*a, now);
                to.push(*a);
            }
        }
        to
    }

    /// A `Welcome` arrived: true when it is the first (this peer is now joined and should
    /// install its snapshot); false when already joined.
    pub fn welcomed(&mut self, timers: &mut TimerTable) -> bool {
        if self.joined {
            return false;
        }
        self.joined = true;
        timers.stop(Timer::Join);
        true
    }
}

/// A seed's answer to `request`, which came from `origin` over the connection at `from`: merge
/// the joiner's signed record, then welcome it here with the whole view and a snapshot, or pass
/// the request on to a member already training (snapshot load spreading). A joiner gets at most
/// one snapshot per anti-entropy interval from this peer.
///
/// A direct request must be the joiner's own (`origin` is the joiner, bound to the
/// connection's certificate) and is answered over that connection, at `from`; a forwarded one
/// comes from a member and is answered at the address the joiner signed in its record, to be
/// sent only to a host holding the joiner's certificate ([`super::super::Transmit::to_member`]). A
/// record refused by admission earns nothing.
#[allow(clippy::too_many_arguments)]
pub fn answer_join(
    out: &mut Outbox,
    membership: &mut Membership,
    replica: &Replica,
    dissemination: &mut Dissemination,
    origin: PeerId,
    from: SocketAddr,
    version: u64,
    request: JoinRequest,
) {
    let JoinRequest {
        mut member,
        forwarded,
    } = request;
    let joiner = member.peer_id;
    if !forwarded && joiner != origin {
        out.stats.senders_mismatched += 1;
        return;
    }
    member.status = MemberStatus::Alive;
    if !membership.merge_record(out, member.clone(), None) {
        return;
    }
    let donors = membership.snapshot_donors(joiner);
    if let JoinAnswer::Forward(donor) = choose_answer(out, &donors, forwarded) {
        forward_join(out, donor, version, member);
        return;
    }
    if !dissemination.take_snapshot(out, joiner) {
        return;
    }
    let heartbeat = membership.heartbeat();
    let welcome = Welcome {
        view: membership.full_view(),
        snapshot: replica.snapshot(),
    };
    let envelope = out.envelope(heartbeat, 1, Payload::Welcome(welcome));
    if forwarded {
        // The address comes from the joiner's record, not from a connection: sent only to a
        // host holding the joiner's certificate.
        out.send_to_member(member.addr, joiner, envelope);
    } else {
        out.send(vec![from], envelope);
    }
}

/// Where a join request should be answered from.
enum JoinAnswer {
    /// Pass it on to this member (already training), which answers with its own snapshot.
    Forward(SocketAddr),
    /// Answer it here.
    Welcome,
}

/// A seed's choice for a join request from `origin` (its record already merged): a random
/// snapshot donor among `donors` ([`crate::core::membership::Membership::snapshot_donors`]),
/// or this peer itself when it drew itself, there is none, or the request was `forwarded`
/// to it already.
fn choose_answer(out: &mut Outbox, donors: &[(PeerId, SocketAddr)], forwarded: bool) -> JoinAnswer {
    if forwarded {
        return JoinAnswer::Welcome;
    }
    match donors.choose(&mut out.rng) {
        Some(&(donor, addr)) if donor != out.me.id => JoinAnswer::Forward(addr),
        _ => JoinAnswer::Welcome,
    }
}

/// Passes the joiner's request (its signed `member` record) on to `donor`, as this peer's own
/// message.
fn forward_join(out: &mut Outbox, donor: SocketAddr, version: u64, member: MemberRecord) {
    out.stats.joins_forwarded += 1;
    let forward = out.envelope(
        version,
        1,
        Payload::Join(JoinRequest {
            member,
            forwarded: true,
        }),
    );
    out.send(vec![donor], forward);
}
