//! Members as the transport sees them: the certificate behind each connection.
//!
//! Limits that a member could multiply by opening more connections are kept per member, not
//! per connection: the number of connections it may have with this peer at once, the bytes of
//! unfinished messages all its connections may hold together, its token buckets on messages/s
//! and bytes/s, and the messages of all its connections being read or waiting for room in the
//! incoming channel. A member is one certificate: it is keyed by the [`KeyId`] of the leaf
//! certificate it presented (SHA-256 of the DER), the identity the protocol binds peer ids to,
//! which the cluster CA vouches for. Two certificates with the same common name are two
//! members. The common name (what `rumor certs issue --name` wrote) only names the member in
//! logs and [`Incoming::member`](super::Incoming::member); a connection whose certificate has no
//! readable common name is shown as [`UNNAMED`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use quinn::Connection;
use rumor_proto::auth::KeyId;
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;

use super::limits::{ByteBudget, RateLimiter};
use super::TransportConfig;

/// The member name of a connection whose certificate carries no readable common name.
pub const UNNAMED: &str = "(unnamed)";

/// Who is behind `conn`: the common name of its peer's leaf certificate (the member name) and
/// the [`KeyId`] of that certificate's DER, read once per connection. A connection without a
/// certificate (impossible after mutual TLS) is [`UNNAMED`] with `KeyId::of(&[])`.
pub(super) fn member_identity(conn: &Connection) -> (Arc<str>, KeyId) {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
    let leaf = chain.as_ref().and_then(|chain| chain.first());
    let name = leaf.and_then(|leaf| common_name(leaf.as_ref()));
    let key = KeyId::of(leaf.map_or(&[][..], |leaf| leaf.as_ref()));
    (Arc::from(name.as_deref().unwrap_or(UNNAMED)), key)
}

/// The first common name in the subject of a DER certificate, if it parses.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Why a member's connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooManyConnections {
    /// Connections the member already has.
    pub(super) open: usize,
}

/// What all connections of one member share, from its first connection to its last.
pub(super) struct MemberLimits {
    /// Bytes of unfinished messages all its connections may hold together.
    pub(super) budget: ByteBudget,
    /// Token buckets on messages/s and bytes/s of all its connections together.
    pub(super) limiter: Mutex<RateLimiter>,
    /// Places for messages of all its connections being read or waiting for room in the
    /// incoming channel, [`TransportConfig::max_streams_per_connection`] in all.
    pub(super) streams: Arc<Semaphore>,
}

struct Entry {
    connections: usize,
    limits: Arc<MemberLimits>,
}

/// Connections and shared limits by member (certificate).
///
/// A member's entry is made with its first connection. It outlives the member's last
/// connection while anything of it is left — messages still read or queued, token buckets not
/// yet full again — so closing every connection and opening a new one neither refills the
/// buckets nor frees places for more messages. An entry with no connection and nothing left,
/// which a fresh one would equal, is dropped at the next connection of any member.
pub(super) struct MemberTable {
    max_connections: usize,
    budget_bytes: u64,
    max_streams: usize,
    /// The configuration the token buckets of a new member are made from.
    config: TransportConfig,
    entries: Mutex<HashMap<KeyId, Entry>>,
}

impl MemberTable {
    /// A table applying `config`'s per-member limits: `max_connections_per_member`
    /// connections, the member byte budget of [`TransportConfig::buffered_bytes_budgets`], the
    /// token buckets of `rate_limit_messages` and `rate_limit_bytes`, and
    /// `max_streams_per_connection` messages in flight.
    pub(super) fn new(config: &TransportConfig) -> Self {
        Self {
            max_connections: config.max_connections_per_member,
            budget_bytes: config.buffered_bytes_budgets().1,
            max_streams: (config.max_streams_per_connection as usize).min(Semaphore::MAX_PERMITS),
            config: config.clone(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a connection of the member `key`; `accepted` connections (opened by the
    /// member) are refused past the cap, connections this peer opened never are. The lease
    /// returned carries the member's shared limits and gives the place back when dropped.
    pub(super) fn attach(
        self: &Arc<Self>,
        key: KeyId,
        accepted: bool,
    ) -> Result<MemberLease, TooManyConnections> {
        self.attach_at(key, accepted, Instant::now())
    }

    /// [`MemberTable::attach`] at `now`.
    fn attach_at(
        self: &Arc<Self>,
        key: KeyId,
        accepted: bool,
        now: Instant,
    ) -> Result<MemberLease, TooManyConnections> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, entry| !entry.is_spent(now));
        let entry = entries.entry(key).or_insert_with(|| Entry {
            connections: 0,
            limits: Arc::new(MemberLimits {
                budget: ByteBudget::new(self.budget_bytes),
                limiter: Mutex::new(RateLimiter::new(&self.config, now)),
                streams: Arc::new(Semaphore::new(self.max_streams)),
            }),
        });
        if accepted && entry.connections >= self.max_connections {
            return Err(TooManyConnections {
                open: entry.connections,
            });
        }
        entry.connections += 1;
        Ok(MemberLease {
            table: self.clone(),
            key,
            limits: entry.limits.clone(),
        })
    }

    /// Connections the member `key` has now.
    #[cfg(test)]
    pub(super) fn connections(&self, key: &KeyId) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |e| e.connections)
    }

    /// Members with an entry now.
    #[cfg(test)]
    fn members(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Messages of the member `key` being read or waiting for the incoming channel now.
    #[cfg(test)]
    pub(super) fn streams_in_flight(&self, key: &KeyId) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |e| {
                self.max_streams
                    .saturating_sub(e.limits.streams.available_permits())
            })
    }
}

impl Entry {
    /// True if the entry has no connection, nothing holds its limits (no message of the member
    /// is being read or queued) and its token buckets are full at `now`: a fresh entry would
    /// be the same.
    fn is_spent(&self, now: Instant) -> bool {
        self.connections == 0
            && Arc::strong_count(&self.limits) == 1
            && self
                .limits
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_full(now)
    }
}

/// One connection's place in its member's entry.
pub(super) struct MemberLease {
    table: Arc<MemberTable>,
    key: KeyId,
    /// The member's shared limits.
    pub(super) limits: Arc<MemberLimits>,
}

impl Drop for MemberLease {
    fn drop(&mut self) {
        let mut entries = self
            .table
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table(max_connections: usize, rate_limit_messages: u32) -> Arc<MemberTable> {
        Arc::new(MemberTable::new(&TransportConfig {
            max_connections_per_member: max_connections,
            rate_limit_messages,
            ..TransportConfig::default()
        }))
    }

    #[test]
    fn accepted_connections_are_capped_per_member_and_leases_give_places_back(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let table = table(2, 10);
        let a = KeyId::of(b"certificate a");
        let b = KeyId::of(b"certificate b");
        let l1 = table.attach(a, true).map_err(|e| format!("{e:?}"))?;
        let l2 = table.attach(a, true).map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            table.attach(a, true).err(),
            Some(TooManyConnections { open: 2 })
        );
        // Connections this peer opened are never refused; other members are not affected.
        let own = table.attach(a, false).map_err(|e| format!("{e:?}"))?;
        assert!(table.attach(b, true).is_ok());
        assert_eq!(table.connections(&a), 3);
        drop((l1, l2, own));
        assert_eq!(table.connections(&a), 0);
        assert!(table.attach(a, true).is_ok());
        Ok(())
    }

    #[test]
    fn connections_of_one_member_share_its_limits_and_other_members_do_not(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let table = table(4, 10);
        // Two certificates with the same common name are two keys, so two members.
        let a = KeyId::of(b"certificate a");
        let b = KeyId::of(b"certificate b");
        let l1 = table.attach(a, true).map_err(|e| format!("{e:?}"))?;
        let l2 = table.attach(a, false).map_err(|e| format!("{e:?}"))?;
        let other = table.attach(b, true).map_err(|e| format!("{e:?}"))?;
        assert!(Arc::ptr_eq(&l1.limits, &l2.limits));
        assert!(!Arc::ptr_eq(&l1.limits, &other.limits));
        assert!(Arc::ptr_eq(&l1.limits.streams, &l2.limits.streams));
        Ok(())
    }

    #[test]
    fn a_member_keeps_its_limits_after_its_last_connection_until_a_fresh_entry_would_equal_them(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let table = table(4, 10);
        let a = KeyId::of(b"certificate a");
        let b = KeyId::of(b"certificate b");
        let t0 = Instant::now();
        let lease = table.attach_at(a, true, t0).map_err(|e| format!("{e:?}"))?;
        // The member spends its burst of 10 messages, closes and reconnects at once: the
        // buckets are not refilled.
        {
            let mut limiter = lease
                .limits
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            assert_eq!((0..20).filter(|_| limiter.admit_message(t0)).count(), 10);
        }
        let limits = Arc::downgrade(&lease.limits);
        drop(lease);
        assert_eq!(table.connections(&a), 0);
        let again = table.attach_at(a, true, t0).map_err(|e| format!("{e:?}"))?;
        assert!(
            limits
                .upgrade()
                .is_some_and(|l| Arc::ptr_eq(&l, &again.limits)),
            "the entry outlived the last connection"
        );
        assert!(!again
            .limits
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit_message(t0));
        drop(again);
        // Half a second later the bucket is not full yet: kept. A second later it is: the next
        // connection of any member drops it.
        let _b = table
            .attach_at(b, true, t0 + Duration::from_millis(500))
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(table.members(), 2);
        let _b2 = table
            .attach_at(b, true, t0 + Duration::from_millis(1001))
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(table.members(), 1);
        assert!(limits.upgrade().is_none(), "the spent entry was dropped");
        Ok(())
    }

    #[test]
    fn an_entry_whose_messages_are_still_in_flight_is_kept(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let table = table(4, 10);
        let a = KeyId::of(b"certificate a");
        let t0 = Instant::now();
        let lease = table.attach_at(a, true, t0).map_err(|e| format!("{e:?}"))?;
        // A reader of the closed connection still holds the member's limits.
        let reader = lease.limits.clone();
        drop(lease);
        let later = t0 + Duration::from_secs(10);
        let again = table
            .attach_at(a, true, later)
            .map_err(|e| format!("{e:?}"))?;
        assert!(Arc::ptr_eq(&reader, &again.limits));
        Ok(())
    }

    #[test]
    fn common_name_is_read_from_a_certificate() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        crate::certs::init_ca(dir.path(), false)?;
        crate::certs::issue(dir.path(), "peer-7", 1)?;
        let id = crate::certs::load_identity(dir.path(), "peer-7")?;
        let leaf = id.chain.first().ok_or("empty chain")?;
        assert_eq!(common_name(leaf.as_ref()).as_deref(), Some("peer-7"));
        assert_eq!(common_name(b"not a certificate"), None);
        Ok(())
    }
}
