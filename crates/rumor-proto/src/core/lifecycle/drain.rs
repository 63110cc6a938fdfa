//! The drain: after its last delta, a peer keeps gossiping until every live peer holds the
//! same applied set, or until the drain deadline.
//!
//! The drain completes once the condition holds (this peer draining; every other live member,
//! suspected or not, draining or past it and reporting this peer's applied set; while some
//! member is declared dead, a suspect's report no older than `drain_settle`).
//!
//! The settle only guards against a false death: a member wrongly declared dead is not waited
//! for, so every peer that agrees without it could stop at once without its last deltas. A live
//! member, suspected or not, already blocks the condition until it reports the same applied set,
//! and a member that left said so itself. So with no member declared dead the drain ends as soon
//! as the condition holds (one digest round after the applied sets agree), and only while some
//! member is declared dead must the condition hold for `drain_settle` with the same dead members
//! and applied set, giving that member time to refute (docs/ALGORITHM.md, "When to stop").

use std::hash::{Hash, Hasher};
use std::time::Instant;

use crate::id::PeerId;
use crate::wire::Lifecycle;

use super::PeerLifecycle;
use crate::core::events::Event;
use crate::core::outbox::Outbox;
use crate::core::timer::{Timer, TimerTable};

impl PeerLifecycle {
    /// The trainer is done: sets the drain deadline (once) from the policy.
    pub fn start_drain(&mut self, now: Instant, timers: &mut TimerTable) {
        if timers.get(Timer::DrainDeadline).is_none() && !self.drain_deadline_passed {
            timers.set_or_stop(
                Timer::DrainDeadline,
                self.policy.drain_timeout.map(|d| now + d),
            );
        }
    }

    /// [`Timer::DrainDeadline`].
    pub fn on_drain_deadline(&mut self) {
        self.drain_deadline_passed = true;
    }

    /// Re-evaluates the drain at `now`: `others_caught_up` is the condition's part about the
    /// other members, `view` a fingerprint of the members declared dead and the applied set
    /// ([`drain_view`]), `None` when no member is declared dead (nothing to settle). Emits [`Event::DrainEnded`] once, when the drain completes or its
    /// deadline has passed.
    pub fn update_drain(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        others_caught_up: bool,
        view: Option<u64>,
    ) {
        // Gaps do not block: a version every live peer lacks (published by a peer that crashed
        // before it got out) can never arrive, and equal applied sets are what consistency needs.
        if self.state != Lifecycle::Draining || !others_caught_up {
            self.drain_since = None;
            self.drain_settled = false;
        } else if let Some(view) = view {
            match self.drain_since {
                Some((since, v)) if v == view => {
                    self.drain_settled = now.saturating_duration_since(since) >= self.drain_settle;
                }
                _ => {
                    self.drain_since = Some((now, view));
                    self.drain_settled = self.drain_settle.is_zero();
                }
            }
        } else {
            self.drain_since = None;
            self.drain_settled = true;
        }
        if self.state == Lifecycle::Draining && !self.drain_ended {
            if self.drain_settled {
                self.drain_ended = true;
                out.event(Event::DrainEnded { drained: true });
            } else if self.drain_deadline_passed {
                self.drain_ended = true;
                out.event(Event::DrainEnded { drained: false });
            }
        }
    }

    /// Whether the drain may end: the condition holds, and has held for `drain_settle` while
    /// some member is declared dead (see the module docs).
    pub fn drain_complete(&self) -> bool {
        self.drain_settled
    }
}

/// What must stay unchanged while the drain settles: the members declared `dead` (by failure
/// detection, not by leaving) with their incarnations, and the applied set (by
/// `applied_fingerprint`, its
/// [`crate::version_vector::VersionVector::fingerprint`]), as one fingerprint. `None` when
/// no member is declared dead: there is no false verdict to wait out.
pub fn drain_view(
    dead: impl Iterator<Item = (PeerId, u64)>,
    applied_fingerprint: u64,
) -> Option<u64> {
    let mut dead: Vec<(PeerId, u64)> = dead.collect();
    if dead.is_empty() {
        return None;
    }
    dead.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dead.hash(&mut hasher);
    applied_fingerprint.hash(&mut hasher);
    Some(hasher.finish())
}
