//! SWIM failure detection state, with Lifeguard's refinements.
//!
//! - SWIM (Das, Gupta, Motivala, DSN 2002): each period probe one member chosen round-robin over a
//!   shuffled list; on no ack within the probe timeout ask `k` others to probe it (`PingReq`); on
//!   no ack by the end of the period, suspect it; a suspect that does not refute (by raising its
//!   incarnation) within the suspicion timeout is declared dead.
//! - Lifeguard (Dadgar, Phillips, Currey, 2018): the suspicion timeout starts at a maximum and
//!   shrinks logarithmically as independent suspicions of the same member arrive ("dynamic
//!   suspicion"), and a local health multiplier stretches this peer's own probe interval and
//!   timeout while it is itself slow to answer ("local health aware probe").
//!
//! The settings and the state live here as plain data and arithmetic; the probing itself is
//! in the membership module's `detector`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::id::PeerId;

/// Failure-detector settings. The defaults follow memberlist's LAN profile, except
/// `suspicion_mult` (see there).
///
/// This is the `[membership]` section of the configuration file as it is: keys are the field
/// names, durations take units ("500ms", "1s"), absent keys keep these defaults and unknown keys
/// are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwimConfig {
    /// One member is probed per period (memberlist LAN: 1 s).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking others (memberlist LAN: 500 ms).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly (memberlist: 3).
    pub indirect_checks: usize,
    /// Suspicion timeout floor = `suspicion_mult × max(1, log10 n) × probe_interval`; the floor
    /// applies once `suspicion_mult − 2` (at least 1) independent suspicions confirm it.
    /// Default 3, memberlist's local-network profile (its LAN profile has 4): a crash of one of
    /// 8 peers is then known to all in about 5 s instead of 6 (first probe of the dead peer
    /// ~0.7 s, failed probe period 1 s, floor 3 s, dissemination ~0.2 s), while an unconfirmed
    /// suspicion still waits `suspicion_max_timeout_mult ×` the floor (18 s), and a live suspect
    /// hears of it and refutes within a few 200 ms gossip rounds. Lifeguard's dynamic suspicion
    /// (Dadgar et al., DSN 2018) is what allows a short floor: only confirmed suspicions get it.
    pub suspicion_mult: u32,
    /// Suspicion timeout ceiling = `suspicion_max_timeout_mult ×` the floor (memberlist: 6).
    pub suspicion_max_timeout_mult: u32,
    /// Local health multiplier ceiling: probe interval and timeout stretch up to this factor (memberlist: 8).
    pub awareness_max_multiplier: u32,
    /// A membership change is piggybacked `retransmit_mult × ⌈log10(n + 1)⌉` times (memberlist: 4).
    pub retransmit_mult: u32,
    /// Period of the full-view push-pull exchange with one random member (memberlist LAN: 30 s).
    #[serde(with = "humantime_serde")]
    pub push_pull_interval: Duration,
    /// Period of the attempt to reach one member declared dead with a push-pull, so that
    /// partitions heal (Serf's reconnect): a live peer on the other side refutes its death.
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 3,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(10),
        }
    }
}

impl SwimConfig {
    /// The suspicion timeout floor for a cluster of `n` members.
    pub fn suspicion_min(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        self.probe_interval
            .mul_f64(f64::from(self.suspicion_mult) * scale)
    }

    /// Lifeguard's dynamic suspicion timeout after `confirmations` independent suspicions:
    /// `max − (max − min) · ln(c + 1) / ln(k + 1)`, with `k = suspicion_mult − 2` expected
    /// confirmations, never below `min`.
    pub fn suspicion_timeout(&self, n: usize, confirmations: usize) -> Duration {
        let min = self.suspicion_min(n);
        let max = min.mul_f64(f64::from(self.suspicion_max_timeout_mult.max(1)));
        let k = self.suspicion_mult.saturating_sub(2).max(1) as f64;
        let fraction = ((confirmations as f64) + 1.0).ln() / (k + 1.0).ln();
        let span = max.saturating_sub(min).as_secs_f64();
        let timeout = max.as_secs_f64() - span * fraction.min(1.0);
        Duration::from_secs_f64(timeout.max(min.as_secs_f64()))
    }

    /// How many times a membership change is piggybacked in a cluster of `n`.
    pub fn retransmits(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.retransmit_mult.max(1) * scale
    }
}

/// The probe in progress, if any. Its deadlines are the `ProbeIndirect` and `ProbeFail`
/// timers of the core's timer table.
#[derive(Clone, Debug)]
pub struct PendingProbe {
    /// Who is probed.
    pub target: PeerId,
    /// Sequence number the ack must carry.
    pub seq: u64,
}

/// A probe this peer runs on behalf of another (`PingReq`).
#[derive(Clone, Debug)]
pub struct Relay {
    /// Who asked.
    pub requester: SocketAddr,
    /// The requester's sequence number, echoed in the ack sent back.
    pub their_seq: u64,
    /// Forgotten after this.
    pub expires: Instant,
}

/// A member this peer suspects.
#[derive(Clone, Debug)]
pub struct Suspicion {
    /// The incarnation suspected; a higher one refutes.
    pub incarnation: u64,
    /// When the suspicion started here.
    pub started: Instant,
    /// Peers that independently reported the suspicion.
    pub confirmations: HashSet<PeerId>,
}

/// The failure detector's mutable state.
#[derive(Debug, Default)]
pub struct SwimState {
    /// Shuffled probe order; refilled when exhausted.
    pub order: Vec<PeerId>,
    /// Next index into `order`.
    pub next: usize,
    /// Next probe sequence number.
    pub seq: u64,
    /// The probe in progress.
    pub pending: Option<PendingProbe>,
    /// Probes run for others, by our sequence number.
    pub relays: HashMap<u64, Relay>,
    /// Current suspicions, by member.
    pub suspicions: HashMap<PeerId, Suspicion>,
    /// Local health score: 0 healthy, up to `awareness_max_multiplier − 1`.
    pub awareness: u32,
}

impl SwimState {
    /// The factor the probe interval and timeout are stretched by (Lifeguard LHM).
    pub fn health_multiplier(&self) -> u32 {
        self.awareness + 1
    }

    /// Adjusts the local health score by `delta`, within `[0, max − 1]`.
    pub fn adjust_awareness(&mut self, delta: i32, max_multiplier: u32) {
        let ceiling = max_multiplier.max(1) - 1;
        let next = i64::from(self.awareness) + i64::from(delta);
        self.awareness = next.clamp(0, i64::from(ceiling)) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        // memberlist's LAN multiplier, so that two confirmations are expected.
        let c = SwimConfig {
            suspicion_mult: 4,
            ..SwimConfig::default()
        };
        let min = c.suspicion_min(8);
        assert_eq!(min, Duration::from_secs(4));
        assert_eq!(c.suspicion_timeout(8, 0), Duration::from_secs(24));
        let one = c.suspicion_timeout(8, 1);
        assert!(one < Duration::from_secs(24) && one > min);
        assert_eq!(c.suspicion_timeout(8, 2), min);
        assert_eq!(c.suspicion_timeout(8, 10), min);
        // Grows with log n.
        assert!(c.suspicion_min(1000) > c.suspicion_min(10));
        // The default: 3 s to 18 s for 8 members, the floor after one confirmation.
        let d = SwimConfig::default();
        assert_eq!(d.suspicion_timeout(8, 0), Duration::from_secs(18));
        assert_eq!(d.suspicion_timeout(8, 1), Duration::from_secs(3));
    }

    #[test]
    fn awareness_is_bounded() {
        let mut s = SwimState::default();
        s.adjust_awareness(-1, 8);
        assert_eq!(s.awareness, 0);
        for _ in 0..20 {
            s.adjust_awareness(1, 8);
        }
        assert_eq!(s.health_multiplier(), 8);
    }
}
