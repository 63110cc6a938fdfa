//! How much state one member can make this peer send it. Answers to a member's requests — the
//! deltas an anti-entropy digest asks for, a snapshot for a digest or a join — come from a budget
//! of that requester: at most `anti_entropy_max_bytes` of pushed deltas per window (the drain's
//! digest period, so an honest peer's one digest per period is never cut), and at most one
//! snapshot per `snapshot_interval`. A member sending digests or joins as fast as its rate limit
//! allows gets no more than an honest one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::PeerId;

/// Most requesters remembered; past this, entries whose window and snapshot interval are over
/// are dropped (a fresh entry equals them).
const MAX_REQUESTERS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Requester {
    window_start: Instant,
    bytes: usize,
    last_snapshot: Option<Instant>,
}

/// The per-requester budgets. See the module docs.
#[derive(Debug)]
pub struct AnswerLimits {
    window: Duration,
    max_bytes: usize,
    snapshot_interval: Duration,
    requesters: HashMap<PeerId, Requester>,
}

impl AnswerLimits {
    /// Budgets of `max_bytes` of deltas per `window` and one snapshot per `snapshot_interval`
    /// per requester.
    pub fn new(window: Duration, max_bytes: usize, snapshot_interval: Duration) -> Self {
        Self {
            window,
            max_bytes,
            snapshot_interval,
            requesters: HashMap::new(),
        }
    }

    fn entry(&mut self, now: Instant, peer: PeerId) -> &mut Requester {
        if self.requesters.len() >= MAX_REQUESTERS && !self.requesters.contains_key(&peer) {
            let (window, interval) = (self.window, self.snapshot_interval);
            self.requesters.retain(|_, r| {
                now.saturating_duration_since(r.window_start) < window
                    || r.last_snapshot
                        .is_some_and(|at| now.saturating_duration_since(at) < interval)
            });
        }
        let window = self.window;
        let entry = self.requesters.entry(peer).or_insert(Requester {
            window_start: now,
            bytes: 0,
            last_snapshot: None,
        });
        if now.saturating_duration_since(entry.window_start) >= window {
            entry.window_start = now;
            entry.bytes = 0;
        }
        entry
    }

    /// Bytes of deltas `peer` may still be sent in the current window.
    pub fn bytes_left(&mut self, now: Instant, peer: PeerId) -> usize {
        let max = self.max_bytes;
        max.saturating_sub(self.entry(now, peer).bytes)
    }

    /// Counts `bytes` of deltas sent to `peer`.
    pub fn spend(&mut self, now: Instant, peer: PeerId, bytes: usize) {
        let entry = self.entry(now, peer);
        entry.bytes = entry.bytes.saturating_add(bytes);
    }

    /// Whether `peer` may be sent a snapshot now; if so, counts it.
    pub fn take_snapshot(&mut self, now: Instant, peer: PeerId) -> bool {
        let interval = self.snapshot_interval;
        let entry = self.entry(now, peer);
        if entry
            .last_snapshot
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return false;
        }
        entry.last_snapshot = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requester_gets_one_budget_per_window_and_one_snapshot_per_interval() {
        let t0 = Instant::now();
        let p = PeerId::from_u128(1);
        let q = PeerId::from_u128(2);
        let mut limits =
            AnswerLimits::new(Duration::from_millis(200), 1000, Duration::from_secs(1));
        assert_eq!(limits.bytes_left(t0, p), 1000);
        limits.spend(t0, p, 800);
        assert_eq!(limits.bytes_left(t0 + Duration::from_millis(100), p), 200);
        assert_eq!(
            limits.bytes_left(t0, q),
            1000,
            "another requester, its own budget"
        );
        assert_eq!(limits.bytes_left(t0 + Duration::from_millis(200), p), 1000);
        assert!(limits.take_snapshot(t0, p));
        assert!(!limits.take_snapshot(t0 + Duration::from_millis(900), p));
        assert!(limits.take_snapshot(t0 + Duration::from_secs(1), p));
    }
}
