//! The member table: one record per known peer, merged by version.
//!
//! Two records for one peer merge by `(incarnation, status precedence, heartbeat)`: a higher
//! incarnation wins; on equal incarnation left > dead > suspect > alive; then the higher
//! heartbeat. The merge is commutative, associative and idempotent, so views can be gossiped in
//! any order and any number of times.

use std::collections::BTreeMap;

use crate::id::PeerId;
use crate::wire::{MemberRecord, MemberStatus};

/// What merging one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The peer was not known before.
    New,
    /// The record replaced an older one whose status was `previous`.
    Updated {
        /// Status before the merge.
        previous: MemberStatus,
    },
    /// The incoming record was older or equal; nothing changed.
    Unchanged,
}

/// Records by peer id (ordered, so iteration is deterministic).
#[derive(Clone, Debug, Default)]
pub struct MemberTable {
    records: BTreeMap<PeerId, MemberRecord>,
}

impl MemberTable {
    /// A view holding only `me`.
    pub fn new(me: MemberRecord) -> Self {
        let mut records = BTreeMap::new();
        records.insert(me.peer_id, me);
        Self { records }
    }

    /// Merges one record by version.
    pub fn merge(&mut self, record: MemberRecord) -> MergeOutcome {
        match self.records.get_mut(&record.peer_id) {
            None => {
                self.records.insert(record.peer_id, record);
                MergeOutcome::New
            }
            Some(existing) if existing.is_superseded_by(&record) => {
                let previous = existing.status;
                *existing = record;
                MergeOutcome::Updated { previous }
            }
            Some(_) => MergeOutcome::Unchanged,
        }
    }

    /// Puts `record` in place of the held one whatever their versions (a local verdict, such
    /// as a revocation).
    pub fn replace(&mut self, record: MemberRecord) {
        self.records.insert(record.peer_id, record);
    }

    /// The record of `peer`, if known.
    pub fn get(&self, peer: &PeerId) -> Option<&MemberRecord> {
        self.records.get(peer)
    }

    /// Mutable access to the record of `peer` (used for the local peer's own record).
    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut MemberRecord> {
        self.records.get_mut(peer)
    }

    /// All records, by peer id.
    pub fn iter(&self) -> impl Iterator<Item = &MemberRecord> {
        self.records.values()
    }

    /// Number of records (any status).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Members that count as live (alive or suspect), the local peer included.
    pub fn live(&self) -> impl Iterator<Item = &MemberRecord> {
        self.records
            .values()
            .filter(|r| matches!(r.status, MemberStatus::Alive | MemberStatus::Suspect))
    }

    /// Number of live members, the local peer included.
    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    /// The peer listening at `addr`, if any.
    pub fn by_addr(&self, addr: std::net::SocketAddr) -> Option<&MemberRecord> {
        self.records.values().find(|r| r.addr == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Lifecycle;

    fn record(inc: u64, hb: u64, status: MemberStatus) -> MemberRecord {
        MemberRecord {
            peer_id: PeerId::from_u128(9),
            name: "p".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation: inc,
            heartbeat: hb,
            status,
            lifecycle: Lifecycle::Training,
            published: 0,
            credential: crate::auth::Credential::new(Vec::new()),
            signature: Default::default(),
        }
    }

    #[test]
    fn merge_follows_swim_precedence() {
        let mut m = MemberTable::default();
        assert_eq!(
            m.merge(record(0, 5, MemberStatus::Alive)),
            MergeOutcome::New
        );
        assert_eq!(
            m.merge(record(0, 4, MemberStatus::Alive)),
            MergeOutcome::Unchanged
        );
        assert!(matches!(
            m.merge(record(0, 1, MemberStatus::Suspect)),
            MergeOutcome::Updated { .. }
        ));
        assert_eq!(
            m.merge(record(0, 99, MemberStatus::Alive)),
            MergeOutcome::Unchanged,
            "alive does not override suspect at equal incarnation"
        );
        assert!(matches!(
            m.merge(record(1, 0, MemberStatus::Alive)),
            MergeOutcome::Updated { .. }
        ));
        assert!(matches!(
            m.merge(record(1, 0, MemberStatus::Left)),
            MergeOutcome::Updated { .. }
        ));
        assert_eq!(m.live_count(), 0);
    }

    #[test]
    fn merge_is_order_independent() {
        let records = [
            record(0, 3, MemberStatus::Alive),
            record(1, 1, MemberStatus::Suspect),
            record(1, 2, MemberStatus::Alive),
            record(0, 9, MemberStatus::Dead),
        ];
        let mut a = MemberTable::default();
        let mut b = MemberTable::default();
        for r in &records {
            a.merge(r.clone());
        }
        for r in records.iter().rev() {
            b.merge(r.clone());
        }
        assert_eq!(a.get(&PeerId::from_u128(9)), b.get(&PeerId::from_u128(9)));
    }
}
