//! How promptly the async runtime gets the CPU: a task on it beats every [`BEAT`], and the
//! training thread yields while the last beat is older than its allowed lag
//! (`train.max_runtime_lag`). So the event loop (probes, acks, the merge of arriving deltas,
//! anti-entropy) always gets its share of the cores even when peers outnumber them, and
//! training takes the rest, without lowering the training thread's priority (which would leave
//! it only what other work on the machine leaves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the runtime task beats.
pub const BEAT: Duration = Duration::from_millis(5);

/// The runtime's last beat, shared between the beating task and training threads.
#[derive(Clone, Debug)]
pub struct RuntimeLag {
    origin: Instant,
    /// Microseconds from `origin` to the last beat.
    last_beat_us: Arc<AtomicU64>,
}

impl RuntimeLag {
    /// Starts beating on the current tokio runtime; the task ends when the returned guard is
    /// dropped.
    pub fn start() -> (Self, BeatGuard) {
        let lag = Self {
            origin: Instant::now(),
            last_beat_us: Arc::new(AtomicU64::new(0)),
        };
        let beating = lag.clone();
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(BEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                beating.beat();
            }
        });
        (lag, BeatGuard(task))
    }

    fn beat(&self) {
        let us = self.origin.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.last_beat_us.store(us, Ordering::Relaxed);
    }

    /// How long ago the runtime last beat: about [`BEAT`] at most while it runs promptly.
    pub fn lag(&self) -> Duration {
        let now = self.origin.elapsed();
        now.saturating_sub(Duration::from_micros(
            self.last_beat_us.load(Ordering::Relaxed),
        ))
    }

    /// Blocks the calling (training) thread while the runtime lags more than `max_lag`, at most
    /// `cap` in all, or until `stop` says so. Returns how long it waited.
    pub fn wait_until_prompt(
        &self,
        max_lag: Duration,
        cap: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Duration {
        let started = Instant::now();
        while self.lag() > max_lag && started.elapsed() < cap && !stop() {
            std::thread::sleep(Duration::from_millis(1));
        }
        started.elapsed()
    }
}

/// Stops the beating task when dropped.
#[derive(Debug)]
pub struct BeatGuard(tokio::task::JoinHandle<()>);

impl Drop for BeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_runs_beats_and_a_blocked_one_lags() {
        let (lag, _guard) = RuntimeLag::start();
        tokio::time::sleep(BEAT * 4).await;
        assert!(lag.lag() < Duration::from_secs(1));
        // Block the only runtime thread: no beat can happen meanwhile.
        std::thread::sleep(Duration::from_millis(60));
        assert!(lag.lag() >= Duration::from_millis(50), "{:?}", lag.lag());
        // A training thread gives up waiting at its cap.
        let waited = lag.wait_until_prompt(
            Duration::from_millis(20),
            Duration::from_millis(30),
            &|| false,
        );
        assert!(waited >= Duration::from_millis(30));
    }
}
