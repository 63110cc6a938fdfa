//! Wall-clock time for timestamps that leave the process (metrics lines, events, quarantine
//! file names). The protocol core never reads it: it is given `Instant`s by its driver.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, with fractions (0 if the clock is before the epoch).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whole seconds since the Unix epoch (0 if the clock is before the epoch).
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
