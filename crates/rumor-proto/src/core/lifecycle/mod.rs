//! The peer lifecycle: joining, the `min_peers` gate, training, draining, leaving.
//!
//! [`PeerLifecycle`] owns where this peer is in its life and the policy that moves it on:
//! join requests to the seeds in turn with exponential backoff ([`join`]), the `min_peers`
//! gate and the join timeout, the drain condition, its settle time and its deadline
//! ([`drain`]), the checkpoint period, and what a restart does with what it finds on disk
//! ([`resume`]). The shell acts on the events it emits; it decides none of this.
//!
//! It holds no member records and no model: live counts, the drain view and snapshots are
//! passed in by the orchestrator.

pub mod drain;
pub mod join;
pub mod resume;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::Lifecycle;

use super::config::{CoreConfig, LifecycleConfig};
use super::events::Event;
use super::outbox::Outbox;
use super::timer::{Timer, TimerTable};

/// The lifecycle sub-machine. See the module docs.
pub struct PeerLifecycle {
    /// The gate, the deadlines and the checkpoint period.
    policy: LifecycleConfig,
    /// How long the drain condition must hold before the drain completes.
    drain_settle: Duration,
    /// First wait before retrying a join.
    join_backoff_initial: Duration,
    /// Longest wait between join attempts.
    join_backoff_max: Duration,
    /// Where this peer is in its life.
    state: Lifecycle,
    /// Addresses to send join requests to, in turn (this peer's own address left out).
    seeds: Vec<SocketAddr>,
    /// Whether a seed welcomed this peer (or it started the cluster).
    joined: bool,
    /// Join requests sent so far.
    join_attempt: u32,
    /// Addresses from discovery sent a join request after joining, and when
    /// ([`PeerLifecycle::discovered`]).
    introduced: std::collections::HashMap<SocketAddr, Instant>,
    /// Whether the join timeout has passed.
    join_deadline_passed: bool,
    /// Since when the drain condition holds, and the view it holds for.
    drain_since: Option<(Instant, u64)>,
    /// Whether the drain condition has held for `drain_settle`.
    drain_settled: bool,
    /// Whether the drain deadline has passed.
    drain_deadline_passed: bool,
    /// Whether [`Event::DrainEnded`] was emitted.
    drain_ended: bool,
}

impl PeerLifecycle {
    /// A peer starting at `now`: joined at once when there is no seed (it starts a cluster),
    /// else its first join request is due now. The join deadline and the first checkpoint are
    /// set from the policy.
    pub fn new(
        config: &CoreConfig,
        seeds: Vec<SocketAddr>,
        now: Instant,
        timers: &mut TimerTable,
    ) -> Self {
        let joined = seeds.is_empty();
        if !joined {
            timers.set(Timer::Join, now);
        }
        let policy = config.lifecycle.clone();
        timers.set_or_stop(Timer::JoinDeadline, policy.join_timeout.map(|d| now + d));
        timers.set_or_stop(
            Timer::Checkpoint,
            policy.checkpoint_interval.map(|d| now + d),
        );
        Self {
            policy,
            drain_settle: config.drain_settle,
            join_backoff_initial: config.join_backoff_initial,
            join_backoff_max: config.join_backoff_max,
            state: Lifecycle::Joining,
            seeds,
            joined,
            join_attempt: 0,
            introduced: std::collections::HashMap::new(),
            join_deadline_passed: false,
            drain_since: None,
            drain_settled: false,
            drain_deadline_passed: false,
            drain_ended: false,
        }
    }

    /// Where this peer is in its life.
    pub fn state(&self) -> Lifecycle {
        self.state
    }

    /// Moves to `state` (the orchestrator announces it in this peer's member record).
    pub fn set_state(&mut self, state: Lifecycle) {
        self.state = state;
    }

    /// Whether a seed has welcomed this peer (or it started the cluster).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// [`Timer::JoinDeadline`]: not joined yet → [`Event::JoinFailed`]; joined, the gate may
    /// now open short of `min_peers` ([`PeerLifecycle::gate`]).
    pub fn on_join_deadline(&mut self, out: &mut Outbox) {
        self.join_deadline_passed = true;
        if !self.joined {
            out.event(Event::JoinFailed);
        }
    }

    /// The `min_peers` gate, checked after every input: true when this peer should start
    /// training now (and [`Event::TrainingStarted`] was emitted): it is joined, has not
    /// started, has a `min_peers` policy, and either `live` members (itself included) reach
    /// it or the join timeout has passed.
    pub fn gate(&mut self, out: &mut Outbox, live: usize) -> bool {
        let Some(min_peers) = self.policy.min_peers else {
            return false;
        };
        if !self.joined || self.state >= Lifecycle::Training {
            return false;
        }
        let enough = live >= min_peers;
        if !(enough || self.join_deadline_passed) {
            return false;
        }
        out.event(Event::TrainingStarted {
            members: live,
            short_of_min_peers: !enough,
        });
        true
    }

    /// [`Timer::Checkpoint`]: asks the shell for a checkpoint and sets the next one.
    pub fn on_checkpoint(&mut self, out: &mut Outbox, now: Instant, timers: &mut TimerTable) {
        if let Some(period) = self.policy.checkpoint_interval {
            timers.set(Timer::Checkpoint, now + period);
            out.event(Event::CheckpointDue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::LocalPeer;

    fn setup(
        policy: LifecycleConfig,
        seeds: Vec<SocketAddr>,
    ) -> (PeerLifecycle, Outbox, TimerTable, Instant) {
        let now = Instant::now();
        let config = CoreConfig {
            lifecycle: policy,
            ..CoreConfig::default()
        };
        let (id, keys) = crate::auth::test_keys::member(1);
        let me = LocalPeer {
            id,
            name: "p".into(),
            addr: "10.0.0.1:1000".parse().unwrap(),
            keys,
        };
        let mut timers = TimerTable::default();
        let lifecycle = PeerLifecycle::new(&config, seeds, now, &mut timers);
        (lifecycle, Outbox::new(me, 6, 1, now), timers, now)
    }

    fn events(out: &mut Outbox) -> Vec<Event> {
        std::iter::from_fn(|| out.poll_event()).collect()
    }

    #[test]
    fn the_gate_opens_at_min_peers_or_short_at_the_join_deadline() {
        let policy = LifecycleConfig {
            min_peers: Some(3),
            ..LifecycleConfig::default()
        };
        let (mut lifecycle, mut out, _, _) = setup(policy.clone(), vec![]);
        assert!(!lifecycle.gate(&mut out, 2));
        assert!(lifecycle.gate(&mut out, 3));
        assert!(matches!(
            events(&mut out)[..],
            [Event::TrainingStarted {
                members: 3,
                short_of_min_peers: false
            }]
        ));
        let (mut lifecycle, mut out, _, _) = setup(policy, vec![]);
        lifecycle.on_join_deadline(&mut out);
        assert!(lifecycle.gate(&mut out, 1));
        assert!(matches!(
            events(&mut out)[..],
            [Event::TrainingStarted {
                members: 1,
                short_of_min_peers: true
            }]
        ));
    }

    #[test]
    fn without_min_peers_the_gate_never_opens_and_an_unwelcomed_peer_fails_at_the_deadline() {
        let seed: SocketAddr = "10.0.0.1:1001".parse().unwrap();
        let (mut lifecycle, mut out, timers, now) = setup(LifecycleConfig::default(), vec![seed]);
        assert_eq!(timers.get(Timer::Join), Some(now));
        assert_eq!(
            timers.get(Timer::JoinDeadline),
            Some(now + Duration::from_secs(60))
        );
        assert!(!lifecycle.gate(&mut out, 10));
        lifecycle.on_join_deadline(&mut out);
        assert!(matches!(events(&mut out)[..], [Event::JoinFailed]));
        assert!(
            !lifecycle.gate(&mut out, 10),
            "membership only, and not joined"
        );
    }

    #[test]
    fn the_drain_ends_once_drained_or_at_its_deadline() {
        let (mut lifecycle, mut out, mut timers, now) = setup(LifecycleConfig::default(), vec![]);
        lifecycle.set_state(Lifecycle::Draining);
        lifecycle.start_drain(now, &mut timers);
        assert_eq!(
            timers.get(Timer::DrainDeadline),
            Some(now + Duration::from_secs(60))
        );
        // Some member is declared dead (a view to settle): the condition must hold for
        // `drain_settle` (3 s) with the same view.
        lifecycle.update_drain(&mut out, now, true, Some(7));
        lifecycle.update_drain(&mut out, now + Duration::from_secs(2), true, Some(8));
        assert!(
            events(&mut out).is_empty(),
            "the view changed: settling starts again"
        );
        lifecycle.update_drain(&mut out, now + Duration::from_secs(5), true, Some(8));
        assert!(matches!(
            events(&mut out)[..],
            [Event::DrainEnded { drained: true }]
        ));
        lifecycle.update_drain(&mut out, now + Duration::from_secs(9), true, Some(8));
        assert!(events(&mut out).is_empty(), "emitted once");

        // Nobody declared dead: the drain ends as soon as the condition holds.
        let (mut lifecycle, mut out, mut timers, now) = setup(LifecycleConfig::default(), vec![]);
        lifecycle.set_state(Lifecycle::Draining);
        lifecycle.start_drain(now, &mut timers);
        lifecycle.update_drain(&mut out, now, false, None);
        assert!(events(&mut out).is_empty(), "not caught up yet");
        lifecycle.update_drain(&mut out, now + Duration::from_millis(200), true, None);
        assert!(matches!(
            events(&mut out)[..],
            [Event::DrainEnded { drained: true }]
        ));

        let (mut lifecycle, mut out, mut timers, now) = setup(LifecycleConfig::default(), vec![]);
        lifecycle.set_state(Lifecycle::Draining);
        lifecycle.start_drain(now, &mut timers);
        lifecycle.on_drain_deadline();
        lifecycle.update_drain(&mut out, now + Duration::from_secs(60), false, None);
        assert!(matches!(
            events(&mut out)[..],
            [Event::DrainEnded { drained: false }]
        ));
    }
}
