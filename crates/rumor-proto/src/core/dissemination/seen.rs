//! The seen-cache: envelope ids already handled, so a message that arrives twice is handled once.
//!
//! Bounded two ways: entries older than the retention are forgotten, and past the capacity the
//! oldest entry is forgotten first. A forgotten id that arrives again is handled again, which is
//! harmless for deltas (the version vector catches them) and for idempotent membership merges.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::id::MessageId;

/// Ids seen within the retention window, at most `capacity` of them.
#[derive(Debug)]
pub struct SeenCache {
    retention: Duration,
    capacity: usize,
    ids: HashSet<MessageId>,
    order: VecDeque<(Instant, MessageId)>,
}

impl SeenCache {
    /// An empty cache keeping ids for `retention` and at most `capacity` of them (at least 1).
    pub fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            retention,
            capacity: capacity.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id` at `now`; returns false if it was already there (a duplicate).
    pub fn insert(&mut self, now: Instant, id: MessageId) -> bool {
        self.expire(now);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((now, id));
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    /// Whether `id` is held (not counting expiry since the last insert or expire).
    pub fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    /// Forgets ids older than the retention.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            if now.saturating_duration_since(at) <= self.retention {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    /// Number of ids held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_within_retention_is_caught_and_expires_after() {
        let t0 = Instant::now();
        let mut seen = SeenCache::new(Duration::from_secs(90), 100);
        let id = MessageId::from_u128(5);
        assert!(seen.insert(t0, id));
        assert!(!seen.insert(t0 + Duration::from_secs(89), id));
        assert!(seen.insert(t0 + Duration::from_secs(91), id));
    }

    #[test]
    fn capacity_bounds_memory() {
        let t0 = Instant::now();
        let mut seen = SeenCache::new(Duration::from_secs(90), 10);
        for i in 0..1000u128 {
            seen.insert(t0, MessageId::from_u128(i));
        }
        assert_eq!(seen.len(), 10);
    }
}
