//! Lazy push: large deltas are announced and pulled instead of pushed, so each peer receives each
//! one about once (the lazy half of Plumtree: Leitão, Pereira and Rodrigues 2007, "Epidemic
//! Broadcast Trees", with its IHAVE/IWANT messages; docs/ALGORITHM.md, "Dissemination").
//!
//! A delta whose values take more than `lazy_push_threshold` bytes on the wire is announced in a
//! [`Have`] exactly where eager push would have sent it (its origin on publish, every peer that
//! applies it for the first time, with the TTL push would have carried), and in answer to a
//! digest whose sender lacks it. A peer told of a delta it lacks asks the announcer for it
//! ([`Want`]) unless it already asks someone, keeps the other announcers as alternatives, and
//! asks the next one when the delta has not come by the pull's deadline. An announcer answers
//! each `Want` from its delta log, within the requester's answer budget. Since a peer asks for a
//! delta only once at a time, what it downloads is one copy per delta, plus a copy per pull
//! that ran out while its answer was still on the way.
//!
//! These are [`Dissemination`] methods; the pulls in progress are a [`Pulls`] table.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::PeerId;
use crate::wire::{Envelope, Have, HaveEntry, Payload, Want, WantEntry, MAX_LAZY_ENTRIES};

use super::Dissemination;
use crate::core::membership::Membership;
use crate::core::outbox::Outbox;
use crate::core::replica::Replica;
use crate::core::timer::{Timer, TimerTable};

/// Most pulls in progress at once; announcements past it are ignored (anti-entropy announces
/// them again), so a member cannot grow the table without bound.
pub const MAX_PULLS: usize = 4096;

/// Most pulls in progress from one announcer, so that one member announcing deltas it never
/// sends cannot take the whole table.
pub const MAX_PULLS_PER_ANNOUNCER: usize = MAX_PULLS / 4;

/// Most other announcers remembered per pull.
pub const MAX_ALTERNATIVES: usize = 8;

/// Time a pull gets per MiB of its delta, on top of `pull_timeout`: a large delta queued behind
/// others at its announcer takes longer to come.
pub const PULL_TIME_PER_MIB: Duration = Duration::from_secs(1);

/// One delta asked for that has not arrived yet.
#[derive(Clone, Debug)]
struct Pull {
    /// Where the `Want` went: the address of the connection its announcer spoke on.
    from: SocketAddr,
    /// When to ask the next announcer.
    deadline: Instant,
    /// Its size as announced (bytes on the wire).
    bytes: u64,
    /// The highest TTL it was announced with: once applied it is announced on with one less.
    ttl: u8,
    /// Other peers that announced it, to ask in turn.
    alternatives: VecDeque<SocketAddr>,
}

/// The pulls in progress, by `(origin, version)` (ordered, so a run stays a function of its
/// seed).
#[derive(Debug, Default)]
pub struct Pulls {
    entries: BTreeMap<(PeerId, u64), Pull>,
}

/// What a finished pull leaves for the announcement that follows the apply.
#[derive(Clone, Debug, Default)]
pub struct PullDone {
    /// The highest TTL the delta was announced with (0: none was seen).
    pub ttl: u8,
    /// The peers that announced it (they have it: no need to announce it to them).
    pub announcers: Vec<SocketAddr>,
}

impl Pulls {
    /// The earliest deadline, if any pull is in progress.
    fn earliest(&self) -> Option<Instant> {
        self.entries.values().map(|p| p.deadline).min()
    }

    /// Number of pulls in progress.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Dissemination {
    /// Whether a delta of `bytes` (on the wire) goes by lazy push.
    pub fn is_large(&self, bytes: u64) -> bool {
        bytes > self.lazy_push_threshold
    }

    /// Announces `(origin, version)` of `bytes` with `ttl` to `fanout` live members other than
    /// `exclude` and the addresses in `skip` (who have it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        exclude: &[PeerId],
        skip: &[SocketAddr],
        origin: PeerId,
        version: u64,
        bytes: u64,
        ttl: u8,
    ) {
        let candidates: Vec<SocketAddr> = membership
            .live_peer_addrs(exclude)
            .into_iter()
            .filter(|a| !skip.contains(a))
            .collect();
        let to = out.choose(candidates, self.fanout);
        let entry = HaveEntry {
            origin,
            version,
            bytes,
            ttl,
        };
        self.send_have(out, to, vec![entry]);
    }

    /// Sends one `Have` of `entries` to each of `to`.
    pub(super) fn send_have(
        &mut self,
        out: &mut Outbox,
        to: Vec<SocketAddr>,
        entries: Vec<HaveEntry>,
    ) {
        if to.is_empty() || entries.is_empty() {
            return;
        }
        out.stats.announces_sent += (to.len() * entries.len()) as u64;
        let envelope = out.envelope(0, 1, Payload::Have(Have { entries }));
        out.send(to, envelope);
    }

    /// The delta `(origin, version)` was applied (by any path): its pull, if any, is over.
    pub fn pull_done(&mut self, origin: PeerId, version: u64) -> PullDone {
        self.pulls
            .entries
            .remove(&(origin, version))
            .map(|p| PullDone {
                ttl: p.ttl,
                announcers: std::iter::once(p.from).chain(p.alternatives).collect(),
            })
            .unwrap_or_default()
    }

    /// A `Have` over the connection at `from`: asks its sender (in one `Want`) for each delta
    /// announced that is neither applied here nor asked of someone already, and keeps it as an
    /// alternative for those asked of someone else. Deltas that would be refused (an origin
    /// without an admitted record, a version past `max_version_jump`), larger than a message
    /// may be, or past [`MAX_PULLS`] in all or [`MAX_PULLS_PER_ANNOUNCER`] from this sender are
    /// ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_have(
        &mut self,
        out: &mut Outbox,
        timers: &mut TimerTable,
        membership: &Membership,
        replica: &Replica,
        max_message_bytes: usize,
        from: SocketAddr,
        have: Have,
    ) {
        let now = out.now;
        let mut wants = Vec::new();
        let mut from_here = self
            .pulls
            .entries
            .values()
            .filter(|p| p.from == from)
            .count();
        for entry in have.entries {
            let key = (entry.origin, entry.version);
            // It has it: anti-entropy need not send it there.
            self.sent.has(now, from, entry.origin, entry.version);
            if entry.version == 0 || replica.applied().contains(entry.origin, entry.version) {
                continue;
            }
            let known = replica
                .applied()
                .max_of(entry.origin)
                .max(membership.announced_version(&entry.origin));
            let too_far = self.max_version_jump > 0
                && entry.version > known.saturating_add(self.max_version_jump);
            if membership.get(&entry.origin).is_none()
                || too_far
                || entry.bytes > max_message_bytes as u64
            {
                continue;
            }
            if let Some(pull) = self.pulls.entries.get_mut(&key) {
                pull.ttl = pull.ttl.max(entry.ttl);
                if pull.from != from
                    && !pull.alternatives.contains(&from)
                    && pull.alternatives.len() < MAX_ALTERNATIVES
                {
                    pull.alternatives.push_back(from);
                }
                continue;
            }
            if self.pulls.entries.len() >= MAX_PULLS || from_here >= MAX_PULLS_PER_ANNOUNCER {
                continue;
            }
            from_here += 1;
            let deadline = now + pull_time(self.pull_timeout, entry.bytes);
            self.pulls.entries.insert(
                key,
                Pull {
                    from,
                    deadline,
                    bytes: entry.bytes,
                    ttl: entry.ttl,
                    alternatives: VecDeque::new(),
                },
            );
            let earliest = timers
                .get(Timer::Pull)
                .map_or(deadline, |t| t.min(deadline));
            timers.set(Timer::Pull, earliest);
            wants.push(WantEntry {
                origin: entry.origin,
                version: entry.version,
            });
        }
        send_want(out, from, wants);
    }

    /// A `Want` from `requester`, over the connection at `from`: each delta asked for that the
    /// log holds goes to `from` as a one-hop `Delta` envelope (the receiver announces it on
    /// itself), as long as the requester's answer budget lasts (refusals are counted in
    /// `answers_limited`); deltas not held are ignored (`wants_not_held`).
    pub fn handle_want(
        &mut self,
        out: &mut Outbox,
        membership: &Membership,
        replica: &Replica,
        requester: PeerId,
        from: SocketAddr,
        mut want: Want,
    ) {
        want.entries.sort_unstable_by_key(|e| (e.origin, e.version));
        want.entries.dedup();
        let now = out.now;
        let mut budget = self.answers.bytes_left(now, requester);
        let start = budget;
        for entry in want.entries {
            let Some(delta) = replica.logged(entry.origin, entry.version) else {
                out.stats.wants_not_held += 1;
                continue;
            };
            let size = delta.values.len() * 4;
            if size > budget {
                out.stats.answers_limited += 1;
                continue;
            }
            budget -= size;
            let envelope = super::anti_entropy::logged_delta_envelope(
                out,
                membership,
                entry.origin,
                entry.version,
                delta,
            );
            out.send(vec![from], envelope);
        }
        self.answers.spend(now, requester, start - budget);
    }

    /// [`Timer::Pull`]: every pull past its deadline whose delta is still missing is counted in
    /// `pull_timeouts` and asked of its next announcer; with none left it is dropped, and
    /// anti-entropy will announce the delta again.
    pub fn on_pull_timer(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        timers: &mut TimerTable,
        replica: &Replica,
    ) {
        let mut retries: BTreeMap<SocketAddr, Vec<WantEntry>> = BTreeMap::new();
        let mut finished = Vec::new();
        for (&(origin, version), pull) in self.pulls.entries.iter_mut() {
            if replica.applied().contains(origin, version) {
                finished.push((origin, version));
                continue;
            }
            if pull.deadline > now {
                continue;
            }
            out.stats.pull_timeouts += 1;
            match pull.alternatives.pop_front() {
                Some(next) => {
                    pull.from = next;
                    pull.deadline = now + pull_time(self.pull_timeout, pull.bytes);
                    retries
                        .entry(next)
                        .or_default()
                        .push(WantEntry { origin, version });
                }
                None => finished.push((origin, version)),
            }
        }
        for key in finished {
            self.pulls.entries.remove(&key);
        }
        for (to, wants) in retries {
            send_want(out, to, wants);
        }
        timers.set_or_stop(Timer::Pull, self.pulls.earliest());
    }
}

/// How long a pull of a delta of `bytes` may take before the next announcer is asked:
/// `pull_timeout` plus [`PULL_TIME_PER_MIB`] per MiB.
fn pull_time(pull_timeout: Duration, bytes: u64) -> Duration {
    pull_timeout + PULL_TIME_PER_MIB.mul_f64(bytes as f64 / (1024.0 * 1024.0))
}

/// Sends one `Want` of `wants` to `to` (in messages of at most [`MAX_LAZY_ENTRIES`]).
fn send_want(out: &mut Outbox, to: SocketAddr, wants: Vec<WantEntry>) {
    for chunk in wants.chunks(MAX_LAZY_ENTRIES) {
        out.stats.pulls_sent += chunk.len() as u64;
        let envelope: Envelope = out.envelope(
            0,
            1,
            Payload::Want(Want {
                entries: chunk.to_vec(),
            }),
        );
        out.send(vec![to], envelope);
    }
}
