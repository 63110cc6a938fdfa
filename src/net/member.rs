//! Members as the transport sees them: the certificate behind each connection.
//!
//! Limits that a member could multiply by opening more connections are kept per member, not
//! per connection: the number of connections it may have with this peer at once and the bytes
//! of unfinished messages all its connections may hold together. A member is named by the
//! common name of the leaf certificate it presented (what `rumor certs issue --name` wrote),
//! which the cluster CA vouches for; a connection whose certificate has no readable common
//! name is grouped under [`UNNAMED`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use quinn::Connection;
use rumor_proto::auth::KeyId;
use rustls::pki_types::CertificateDer;

use super::reader::ByteBudget;

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

struct Entry {
    connections: usize,
    budget: ByteBudget,
}

/// Connections and byte budgets by member.
pub(super) struct MemberTable {
    max_connections: usize,
    budget_bytes: u64,
    entries: Mutex<HashMap<Arc<str>, Entry>>,
}

impl MemberTable {
    /// A table allowing `max_connections` connections and `budget_bytes` bytes of unfinished
    /// messages per member.
    pub(super) fn new(max_connections: usize, budget_bytes: u64) -> Self {
        Self {
            max_connections,
            budget_bytes,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a connection of `member`; `accepted` connections (opened by the member) are
    /// refused past the cap, connections this peer opened never are. The lease returned gives
    /// the place back when dropped and carries the member's shared budget.
    pub(super) fn attach(
        self: &Arc<Self>,
        member: &Arc<str>,
        accepted: bool,
    ) -> Result<MemberLease, TooManyConnections> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry(member.clone()).or_insert_with(|| Entry {
            connections: 0,
            budget: ByteBudget::new(self.budget_bytes),
        });
        if accepted && entry.connections >= self.max_connections {
            return Err(TooManyConnections {
                open: entry.connections,
            });
        }
        entry.connections += 1;
        Ok(MemberLease {
            table: self.clone(),
            member: member.clone(),
            budget: entry.budget.clone(),
        })
    }

    /// Connections `member` has now.
    #[cfg(test)]
    fn connections(&self, member: &str) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(member)
            .map_or(0, |e| e.connections)
    }
}

/// One connection's place in its member's entry.
pub(super) struct MemberLease {
    table: Arc<MemberTable>,
    member: Arc<str>,
    pub(super) budget: ByteBudget,
}

impl Drop for MemberLease {
    fn drop(&mut self) {
        let mut entries = self
            .table
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&self.member) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                entries.remove(&self.member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_are_capped_per_member_and_leases_give_places_back() {
        let table = Arc::new(MemberTable::new(2, 1024));
        let a: Arc<str> = Arc::from("peer-a");
        let b: Arc<str> = Arc::from("peer-b");
        let l1 = table.attach(&a, true).expect("first");
        let l2 = table.attach(&a, true).expect("second");
        assert_eq!(
            table.attach(&a, true).err(),
            Some(TooManyConnections { open: 2 })
        );
        // Connections this peer opened are never refused; other members are not affected.
        let own = table.attach(&a, false).expect("outgoing");
        assert!(table.attach(&b, true).is_ok());
        assert_eq!(table.connections("peer-a"), 3);
        drop((l1, l2, own));
        assert_eq!(table.connections("peer-a"), 0);
        assert!(table.attach(&a, true).is_ok());
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
