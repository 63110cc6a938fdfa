//! One table of every deadline the core keeps, so that [`super::Core::poll_timeout`] is the
//! table's earliest entry and no deadline can be forgotten (the shape of quinn-proto's
//! `TimerTable`).
//!
//! The table only stores instants; what a timer does when it fires belongs to the sub-machine
//! that set it. Timers fire in the order of [`Timer::ALL`], which is the order the core has
//! always handled them in.

use std::time::Instant;

/// Every kind of deadline. Each is set at most once at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Retry the join with the next seed (lifecycle; exponential backoff).
    Join,
    /// Push pending membership changes to `fanout` members (membership).
    Gossip,
    /// Exchange the full view with one random member (membership).
    PushPull,
    /// Try to reach members declared dead, so partitions heal (membership).
    Reconnect,
    /// The probe in progress got no direct ack: ask others to probe (membership, SWIM).
    ProbeIndirect,
    /// The probe in progress got no ack at all: suspect its target (membership, SWIM).
    ProbeFail,
    /// Start the next probe (membership, SWIM).
    Probe,
    /// The earliest suspicion runs out (membership, Lifeguard's dynamic timeout).
    Suspicion,
    /// Send an anti-entropy digest (dissemination).
    AntiEntropy,
    /// While draining, report holdings that changed since the last round early
    /// (dissemination).
    DrainReport,
    /// The earliest pull of a lazily pushed delta runs out: ask the next announcer
    /// (dissemination).
    Pull,
    /// The join timeout: fail, or start training short of `min_peers` (lifecycle).
    JoinDeadline,
    /// The drain deadline: stop draining unfinished (lifecycle).
    DrainDeadline,
    /// Ask the shell for a checkpoint (lifecycle).
    Checkpoint,
}

impl Timer {
    /// Every timer, in firing order.
    pub const ALL: [Timer; 14] = [
        Timer::Join,
        Timer::Gossip,
        Timer::PushPull,
        Timer::Reconnect,
        Timer::ProbeIndirect,
        Timer::ProbeFail,
        Timer::Probe,
        Timer::Suspicion,
        Timer::AntiEntropy,
        Timer::DrainReport,
        Timer::Pull,
        Timer::JoinDeadline,
        Timer::DrainDeadline,
        Timer::Checkpoint,
    ];
}

/// The deadline of each [`Timer`], or none.
#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    data: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Sets `timer` to fire at `at`, replacing any earlier setting.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer as usize] = Some(at);
    }

    /// Sets `timer` to `at`, or stops it when `at` is `None`.
    pub fn set_or_stop(&mut self, timer: Timer, at: Option<Instant>) {
        self.data[timer as usize] = at;
    }

    /// When `timer` fires, if set.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    /// Whether `timer` is set and due at `now`.
    pub fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| now >= at)
    }

    /// Stops `timer` and returns true if it was due at `now`; leaves it alone otherwise.
    pub fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.is_expired(timer, now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline set, if any.
    pub fn earliest(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_is_the_minimum_of_the_set_timers() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.earliest(), None);
        table.set(Timer::Gossip, t0 + Duration::from_secs(2));
        table.set(Timer::Probe, t0 + Duration::from_secs(1));
        assert_eq!(table.earliest(), Some(t0 + Duration::from_secs(1)));
        table.stop(Timer::Probe);
        assert_eq!(table.earliest(), Some(t0 + Duration::from_secs(2)));
        assert!(!table.take_expired(Timer::Gossip, t0));
        assert!(table.take_expired(Timer::Gossip, t0 + Duration::from_secs(2)));
        assert_eq!(table.get(Timer::Gossip), None);
    }

    #[test]
    fn all_lists_each_timer_at_its_own_index() {
        for (i, timer) in Timer::ALL.iter().enumerate() {
            assert_eq!(*timer as usize, i);
        }
    }
}
