//! Logging a write that keeps failing (a periodic checkpoint, a metrics line) without flooding
//! the log: the first failure, then at most one line a minute with the count, then the recovery.

use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Logs a repeating failure (a checkpoint or metrics write) once, then at most once per
/// [`WarnLimiter::PERIOD`] with the count since, and once when it recovers.
#[derive(Default)]
pub(super) struct WarnLimiter {
    failures: u64,
    last_warned: Option<Instant>,
}

impl WarnLimiter {
    const PERIOD: Duration = Duration::from_secs(60);

    pub(super) fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::PERIOD)
        {
            self.last_warned = Some(now);
            warn!(
                failures = self.failures,
                "{what} write failed: {e} (the peer runs on; repeats are logged at most once a minute)"
            );
        }
    }

    pub(super) fn recovered(&mut self, what: &str) {
        if self.failures > 0 {
            info!(failures = self.failures, "{what} writes work again");
            *self = Self::default();
        }
    }
}
