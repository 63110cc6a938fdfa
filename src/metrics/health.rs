//! The answers of `/healthz` and `/readyz`, for Kubernetes probes and compose health checks.
//!
//! - Liveness (`/healthz`): the peer's event loop publishes a status snapshot at least every
//!   100 ms while it turns, whatever it is doing (joining, training, paused, draining). A
//!   snapshot older than [`STALE_AFTER`] means the loop is stuck (or has ended): 503, and a
//!   liveness probe restarts the process. A peer whose run is over and that lingers
//!   (`--linger`) answers 200 `finished`: nothing is stuck.
//! - Readiness (`/readyz`): the peer has joined and trains or drains: 200. Starting, joining
//!   (looking for seeds or waiting for `min_peers`) or stopped: 503. A Service that lists only
//!   ready peers would hide joiners from each other, so rumor's headless Service publishes
//!   addresses that are not ready as well (`deploy/kubernetes`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rumor_proto::wire::Lifecycle;

use super::StatusSnapshot;

/// A snapshot older than this fails `/healthz`: 100 times the longest gap between snapshots of
/// a loop that turns, so a loaded machine's pauses (seconds at worst) never fail it.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// When the last snapshot arrived, kept by the metrics server.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    /// Milliseconds from `started` to the last snapshot.
    last_ms: AtomicU64,
    /// Set once the peer's run is over (its loop has ended on purpose).
    finished: AtomicBool,
}

impl Heartbeat {
    /// A heartbeat that counts as fresh now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// A snapshot arrived at `now`.
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The peer's run is over: no more snapshots will come, and that is no failure.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// Time since the last snapshot, at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

/// `/healthz` at `now`: 200 `ok` while the last snapshot is younger than [`STALE_AFTER`], 200
/// `finished` once the run is over, else 503 saying how old the last snapshot is.
pub fn liveness(heartbeat: &Heartbeat, now: Instant) -> (StatusCode, String) {
    let age = heartbeat.age(now);
    if heartbeat.finished.load(Ordering::Relaxed) {
        (StatusCode::OK, "finished\n".into())
    } else if age < STALE_AFTER {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "event loop stalled: no status for {:.1} s (limit {} s)\n",
                age.as_secs_f64(),
                STALE_AFTER.as_secs()
            ),
        )
    }
}

/// `/readyz`: 200 while the peer trains or drains, else 503 with its lifecycle.
pub fn readiness(snapshot: &StatusSnapshot) -> (StatusCode, String) {
    let lifecycle = snapshot.peer.lifecycle;
    match lifecycle {
        Lifecycle::Training | Lifecycle::Draining => {
            (StatusCode::OK, format!("ready: {}\n", lifecycle.as_str()))
        }
        Lifecycle::Starting | Lifecycle::Joining | Lifecycle::Stopped => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", lifecycle.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_once_snapshots_stop() {
        let beat = Heartbeat::new();
        let t0 = Instant::now();
        beat.beat(t0);
        assert_eq!(
            liveness(&beat, t0 + Duration::from_secs(1)).0,
            StatusCode::OK
        );
        let late = t0 + Duration::from_secs(11);
        let (code, body) = liveness(&beat, late);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stalled"), "{body}");
        beat.finish();
        assert_eq!(liveness(&beat, late), (StatusCode::OK, "finished\n".into()));
    }

    #[test]
    fn ready_only_while_training_or_draining() {
        let mut s = StatusSnapshot::default();
        for (lifecycle, ok) in [
            (Lifecycle::Starting, false),
            (Lifecycle::Joining, false),
            (Lifecycle::Training, true),
            (Lifecycle::Draining, true),
            (Lifecycle::Stopped, false),
        ] {
            s.peer.lifecycle = lifecycle;
            let (code, body) = readiness(&s);
            assert_eq!(code == StatusCode::OK, ok, "{body}");
            assert!(body.contains(lifecycle.as_str()), "{body}");
        }
    }
}
