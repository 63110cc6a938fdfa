//! Admission of incoming QUIC handshakes: what a peer spends on strangers before any
//! certificate has been checked.
//!
//! A QUIC Initial packet costs its sender one UDP datagram and its receiver a TLS handshake
//! state (tens of KB) that lives until the handshake completes or times out. Without limits a
//! flood of Initials from one host — no credentials needed — grows a peer's memory by gigabytes
//! and its handshakes crowd out the cluster's own packets. Each incoming connection attempt
//! therefore passes [`HandshakeAdmission::admit`] before quinn starts a handshake for it:
//!
//! 1. **Hard cap.** At most [`AdmissionLimits::max_handshakes`] handshakes are in progress at
//!    once; past that the attempt is refused (quinn answers with a stateless
//!    `CONNECTION_REFUSED`, costing no state).
//! 2. **Address validation.** Once more than [`AdmissionLimits::handshakes_before_retry`]
//!    handshakes are in progress, an attempt whose source address has not been validated is
//!    answered with a QUIC Retry (RFC 9000 §8.1.2): a stateless token the client must echo
//!    from the address it claims. Spoofed floods never get past it, and a real client pays one
//!    round trip.
//! 3. **Per-source limit.** At most [`AdmissionLimits::max_handshakes_per_ip`] handshakes in
//!    progress from one IP address, so one host cannot hold every place of the cap.
//!
//! A handshake that is admitted holds its places through an [`AdmissionTicket`] until it ends;
//! the caller bounds its duration with the handshake timeout. The decision is pure bookkeeping
//! (no clock, no socket), so it is tested directly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Limits on handshakes in progress; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Handshakes in progress at once, over all sources; at least 1.
    pub max_handshakes: usize,
    /// Handshakes in progress above which unvalidated sources get a Retry first; 0 retries
    /// every unvalidated source.
    pub handshakes_before_retry: usize,
    /// Handshakes in progress at once from one IP address; at least 1.
    pub max_handshakes_per_ip: usize,
}

/// Why an incoming connection attempt was refused before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// [`AdmissionLimits::max_handshakes`] handshakes were already in progress.
    Capacity,
    /// [`AdmissionLimits::max_handshakes_per_ip`] handshakes from the same IP were in progress.
    PerSource,
}

impl Refusal {
    /// Lower-case name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::PerSource => "per_source",
        }
    }
}

/// What to do with one incoming connection attempt.
#[derive(Debug)]
pub enum Admission {
    /// Start the handshake; the ticket holds its places until dropped.
    Accept(AdmissionTicket),
    /// Answer with a QUIC Retry (address validation) and keep no state.
    Retry,
    /// Refuse without a handshake.
    Refuse(Refusal),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Handshakes in progress, by source IP, against [`AdmissionLimits`]. Cheap to share.
#[derive(Clone, Debug)]
pub struct HandshakeAdmission {
    limits: AdmissionLimits,
    counts: Arc<Mutex<Counts>>,
}

impl HandshakeAdmission {
    /// An admission with nothing in progress.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// Decides for one connection attempt from `ip`; `validated` says whether its address was
    /// validated (a Retry token was echoed) and `may_retry` whether a Retry can still be sent
    /// (not after one was already answered).
    pub fn admit(&self, ip: IpAddr, validated: bool, may_retry: bool) -> Admission {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.max_handshakes {
            return Admission::Refuse(Refusal::Capacity);
        }
        if !validated && may_retry && counts.total >= self.limits.handshakes_before_retry {
            return Admission::Retry;
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.max_handshakes_per_ip {
            return Admission::Refuse(Refusal::PerSource);
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Admission::Accept(AdmissionTicket {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// The places one admitted handshake holds; given back when dropped.
#[derive(Debug)]
pub struct AdmissionTicket {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_handshakes: 4,
            handshakes_before_retry: 2,
            max_handshakes_per_ip: 3,
        }
    }

    #[test]
    fn unvalidated_sources_get_a_retry_past_the_threshold() {
        let a = HandshakeAdmission::new(limits());
        let t1 = a.admit(ip(1), false, true);
        let t2 = a.admit(ip(2), false, true);
        assert!(matches!(t1, Admission::Accept(_)));
        assert!(matches!(t2, Admission::Accept(_)));
        assert!(matches!(a.admit(ip(3), false, true), Admission::Retry));
        // A validated source (it echoed the Retry token) is admitted.
        assert!(matches!(a.admit(ip(3), true, false), Admission::Accept(_)));
        // Dropping the returned ticket gave its place back at once.
        assert_eq!(a.in_progress(), 2);
        drop(t1);
        assert_eq!(a.in_progress(), 1);
        assert!(matches!(a.admit(ip(4), false, true), Admission::Accept(_)));
        drop(t2);
    }

    #[test]
    fn the_cap_refuses_even_validated_sources_and_frees_with_tickets() {
        let a = HandshakeAdmission::new(limits());
        let tickets: Vec<_> = (1..=4)
            .map(|i| match a.admit(ip(i), true, false) {
                Admission::Accept(t) => t,
                other => panic!("expected accept, got {other:?}"),
            })
            .collect();
        assert!(matches!(
            a.admit(ip(9), true, false),
            Admission::Refuse(Refusal::Capacity)
        ));
        // Without may_retry an unvalidated source past the threshold is not retried again.
        drop(tickets);
        assert_eq!(a.in_progress(), 0);
        assert!(matches!(a.admit(ip(9), false, false), Admission::Accept(_)));
    }

    #[test]
    fn one_ip_cannot_hold_every_place() {
        let a = HandshakeAdmission::new(AdmissionLimits {
            max_handshakes: 10,
            handshakes_before_retry: 10,
            max_handshakes_per_ip: 2,
        });
        let _t: Vec<_> = (0..2).map(|_| a.admit(ip(1), true, false)).collect();
        assert!(matches!(
            a.admit(ip(1), true, false),
            Admission::Refuse(Refusal::PerSource)
        ));
        assert!(matches!(a.admit(ip(2), true, false), Admission::Accept(_)));
    }
}
