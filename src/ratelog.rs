//! Log throttling: at most one log line per key per interval, with the count of the occurrences
//! suppressed since the last line.
//!
//! Hostile input must not turn into a log flood: a peer sending thousands of bad deltas or
//! messages a second would otherwise write a warning for each. The caller passes the time in,
//! so the throttle is deterministic and testable without a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Interval between two log lines about the same key (origin, remote address), 10 s.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Most keys tracked at once; past that, keys whose interval has passed are forgotten, and if
/// none has, occurrences of new keys are suppressed (counted in [`RateLimitedLog::overflowed`]).
pub const MAX_KEYS: usize = 1024;

/// Decides, per key, whether an occurrence is logged now or suppressed.
#[derive(Debug)]
pub struct RateLimitedLog<K> {
    interval: Duration,
    /// Lines allowed per key per interval.
    burst: u32,
    keys: HashMap<K, Window>,
    overflowed: u64,
}

/// One key's current interval.
#[derive(Debug)]
struct Window {
    /// When the interval began.
    start: Instant,
    /// Lines logged in it.
    logged: u32,
    /// Occurrences suppressed since the last line.
    suppressed: u64,
}

impl<K: Hash + Eq + Clone> RateLimitedLog<K> {
    /// A throttle logging each key at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_burst(interval, 1)
    }

    /// A throttle logging each key at most `burst` times (at least once) per `interval`: for
    /// lines that come in legitimate bursts (members joining) but must not flood.
    pub fn with_burst(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            keys: HashMap::new(),
            overflowed: 0,
        }
    }

    /// Records one occurrence of `key` at `now`. Returns `Some(suppressed)` when it should be
    /// logged, with the number of occurrences suppressed since the key was last logged, and
    /// `None` when it is suppressed.
    pub fn hit(&mut self, now: Instant, key: &K) -> Option<u64> {
        if let Some(w) = self.keys.get_mut(key) {
            if now.saturating_duration_since(w.start) >= self.interval {
                w.start = now;
                w.logged = 0;
            }
            if w.logged < self.burst {
                w.logged += 1;
                let n = w.suppressed;
                w.suppressed = 0;
                return Some(n);
            }
            w.suppressed += 1;
            return None;
        }
        if self.keys.len() >= MAX_KEYS {
            let interval = self.interval;
            self.keys
                .retain(|_, w| now.saturating_duration_since(w.start) < interval);
            if self.keys.len() >= MAX_KEYS {
                self.overflowed += 1;
                return None;
            }
        }
        self.keys.insert(
            key.clone(),
            Window {
                start: now,
                logged: 1,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Occurrences suppressed because too many keys were tracked.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_suppressed_count() {
        let t0 = Instant::now();
        let mut log = RateLimitedLog::new(Duration::from_secs(10));
        assert_eq!(log.hit(t0, &"a"), Some(0));
        assert_eq!(log.hit(t0, &"b"), Some(0));
        for i in 1..=5 {
            assert_eq!(log.hit(t0 + Duration::from_secs(i), &"a"), None);
        }
        assert_eq!(log.hit(t0 + Duration::from_secs(10), &"a"), Some(5));
        assert_eq!(log.hit(t0 + Duration::from_secs(11), &"a"), None);
    }

    #[test]
    fn a_burst_of_lines_per_interval_then_silence() {
        let t0 = Instant::now();
        let mut log = RateLimitedLog::with_burst(Duration::from_secs(10), 3);
        assert_eq!(log.hit(t0, &"m"), Some(0));
        assert_eq!(log.hit(t0, &"m"), Some(0));
        assert_eq!(log.hit(t0, &"m"), Some(0));
        for _ in 0..100 {
            assert_eq!(log.hit(t0 + Duration::from_secs(1), &"m"), None);
        }
        assert_eq!(log.hit(t0 + Duration::from_secs(10), &"m"), Some(100));
        assert_eq!(log.hit(t0 + Duration::from_secs(10), &"m"), Some(0));
    }

    #[test]
    fn key_table_is_bounded() {
        let t0 = Instant::now();
        let mut log = RateLimitedLog::new(Duration::from_secs(10));
        for k in 0..MAX_KEYS {
            assert_eq!(log.hit(t0, &k), Some(0));
        }
        assert_eq!(log.hit(t0, &MAX_KEYS), None);
        assert_eq!(log.overflowed(), 1);
        // Once the interval passed, old keys make room.
        assert_eq!(log.hit(t0 + Duration::from_secs(10), &MAX_KEYS), Some(0));
    }
}
