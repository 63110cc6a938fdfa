//! The send ledger: what this peer knows of each delta's way to each destination, so that
//! anti-entropy does not push a delta to a peer that has it or is still receiving it.
//!
//! Fed by the orchestrator (every delta queued), by the shell's send outcomes and by deltas
//! received (the sender has them); read by anti-entropy and by the trainer's flow control.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::PeerId;

/// How long a delta sent without a reported outcome blocks anti-entropy from pushing it to the
/// same destination again (a safety net: the shell reports every outcome well before this).
const MAX_IN_FLIGHT_AGE: Duration = Duration::from_secs(60);

/// What this peer knows of one delta's way to one destination.
#[derive(Clone, Copy, Debug)]
enum Sent {
    /// Sent at this time; no outcome reported yet.
    InFlight(Instant),
    /// The destination has it (delivered, or it sent it to us) as of this time.
    Has(Instant),
}

/// What happened to a reported send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded as delivered.
    Delivered,
    /// A send in flight failed; anti-entropy may push it again.
    Failed,
    /// A failure for a send not in flight (already settled or forgotten): nothing changed.
    Ignored,
}

/// Deltas recently sent, by `(destination, origin, version)`.
#[derive(Debug)]
pub struct SendLedger {
    /// How long a destination that has a delta is not sent it again.
    resend_after: Duration,
    entries: HashMap<(SocketAddr, PeerId, u64), Sent>,
}

impl SendLedger {
    /// An empty ledger; a delivered delta blocks re-pushes for `resend_after`.
    pub fn new(resend_after: Duration) -> Self {
        Self {
            resend_after,
            entries: HashMap::new(),
        }
    }

    /// A delta was queued for `to` at `now`.
    pub fn sent(&mut self, now: Instant, to: SocketAddr, origin: PeerId, version: u64) {
        self.entries
            .insert((to, origin, version), Sent::InFlight(now));
    }

    /// `to` has the delta as of `now` (it was delivered, or `to` sent it to us).
    pub fn has(&mut self, now: Instant, to: SocketAddr, origin: PeerId, version: u64) {
        self.entries.insert((to, origin, version), Sent::Has(now));
    }

    /// The shell's report of a send to `to`.
    pub fn outcome(
        &mut self,
        now: Instant,
        to: SocketAddr,
        origin: PeerId,
        version: u64,
        delivered: bool,
    ) -> Outcome {
        let key = (to, origin, version);
        if delivered {
            self.entries.insert(key, Sent::Has(now));
            Outcome::Delivered
        } else if matches!(self.entries.get(&key), Some(Sent::InFlight(_))) {
            self.entries.remove(&key);
            Outcome::Failed
        } else {
            Outcome::Ignored
        }
    }

    /// Whether anti-entropy should leave `(origin, version)` alone for `to` (in flight or had).
    pub fn blocks(&self, to: SocketAddr, origin: PeerId, version: u64) -> bool {
        self.entries.contains_key(&(to, origin, version))
    }

    /// Forgets entries past their age at `now`.
    pub fn expire(&mut self, now: Instant) {
        let window = self.resend_after;
        self.entries.retain(|_, sent| match *sent {
            Sent::InFlight(at) => now.saturating_duration_since(at) < MAX_IN_FLIGHT_AGE,
            Sent::Has(at) => now.saturating_duration_since(at) < window,
        });
    }

    /// How many distinct versions of `origin` are in flight to one of `destinations`.
    pub fn in_flight_versions(&self, origin: PeerId, destinations: &HashSet<SocketAddr>) -> usize {
        let mut versions: Vec<u64> = self
            .entries
            .iter()
            .filter(|((to, o, _), sent)| {
                *o == origin && matches!(sent, Sent::InFlight(_)) && destinations.contains(to)
            })
            .map(|((_, _, version), _)| *version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_send_unblocks_and_a_delivered_one_blocks_for_resend_after() {
        let t0 = Instant::now();
        let to: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let origin = PeerId::from_u128(1);
        let mut ledger = SendLedger::new(Duration::from_secs(5));
        ledger.sent(t0, to, origin, 1);
        assert!(ledger.blocks(to, origin, 1));
        assert_eq!(ledger.outcome(t0, to, origin, 1, false), Outcome::Failed);
        assert!(!ledger.blocks(to, origin, 1));
        assert_eq!(ledger.outcome(t0, to, origin, 1, false), Outcome::Ignored);
        assert_eq!(ledger.outcome(t0, to, origin, 1, true), Outcome::Delivered);
        ledger.expire(t0 + Duration::from_secs(4));
        assert!(ledger.blocks(to, origin, 1));
        ledger.expire(t0 + Duration::from_secs(5));
        assert!(!ledger.blocks(to, origin, 1));
    }

    #[test]
    fn in_flight_versions_count_distinct_versions_to_the_given_destinations() {
        let t0 = Instant::now();
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:1001".parse().unwrap();
        let me = PeerId::from_u128(1);
        let mut ledger = SendLedger::new(Duration::from_secs(5));
        ledger.sent(t0, a, me, 1);
        ledger.sent(t0, b, me, 1);
        ledger.sent(t0, b, me, 2);
        ledger.has(t0, a, me, 3);
        assert_eq!(
            ledger.in_flight_versions(me, &[a, b].into_iter().collect()),
            2
        );
        assert_eq!(ledger.in_flight_versions(me, &[a].into_iter().collect()), 1);
        ledger.expire(t0 + MAX_IN_FLIGHT_AGE);
        assert_eq!(
            ledger.in_flight_versions(me, &[a, b].into_iter().collect()),
            0
        );
    }
}
