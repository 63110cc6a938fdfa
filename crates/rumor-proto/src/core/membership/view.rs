//! The member table: one record per known peer, merged by version.
//!
//! Two records for one peer merge by `(incarnation, status precedence, heartbeat)`: a higher
//! incarnation wins; on equal incarnation left > dead > suspect > alive; then the higher
//! heartbeat. The merge is commutative, associative and idempotent, so views can be gossiped in
//! any order and any number of times.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

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

/// Records by peer id (ordered, so iteration is deterministic), with the counts and indexes
/// that per-message work reads kept up to date on every change, so none of them walks the
/// table: the number of live members, the members declared dead, and who listens where.
#[derive(Clone, Debug, Default)]
pub struct MemberTable {
    records: BTreeMap<PeerId, MemberRecord>,
    /// How many records are live (alive or suspect).
    live: usize,
    /// The peers whose record says dead.
    dead: BTreeSet<PeerId>,
    /// The peers listening at each address (one, unless a peer came back under a new id).
    addrs: HashMap<SocketAddr, BTreeSet<PeerId>>,
    /// The live members' ids and addresses, by id, as last listed; emptied when a member
    /// joins, becomes live or not, or moves (not on heartbeats).
    live_addrs: OnceCell<Vec<(PeerId, SocketAddr)>>,
}

impl MemberTable {
    /// A view holding only `me`.
    pub fn new(me: MemberRecord) -> Self {
        let mut table = Self::default();
        table.put(me);
        table
    }

    /// Merges one record by version.
    pub fn merge(&mut self, record: MemberRecord) -> MergeOutcome {
        match self.records.get(&record.peer_id) {
            None => {
                self.put(record);
                MergeOutcome::New
            }
            Some(existing) if existing.is_superseded_by(&record) => {
                let previous = existing.status;
                self.put(record);
                MergeOutcome::Updated { previous }
            }
            Some(_) => MergeOutcome::Unchanged,
        }
    }

    /// Puts `record` in place of the held one whatever their versions (a local verdict, such
    /// as a revocation).
    pub fn replace(&mut self, record: MemberRecord) {
        self.put(record);
    }

    /// The record of `peer`, if known.
    pub fn get(&self, peer: &PeerId) -> Option<&MemberRecord> {
        self.records.get(peer)
    }

    /// Changes the record of `peer` in place (used for the local peer's own record); nothing
    /// when it is not known.
    pub fn update(&mut self, peer: &PeerId, change: impl FnOnce(&mut MemberRecord)) {
        if let Some(mut record) = self.records.get(peer).cloned() {
            change(&mut record);
            self.put(record);
        }
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
        self.records.values().filter(|r| is_live(r.status))
    }

    /// Number of live members, the local peer included.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// The live members' ids and listen addresses, by id, the local peer included (what
    /// picking gossip targets reads: a flat list, rebuilt only when liveness or an address
    /// changes).
    pub fn live_addrs(&self) -> &[(PeerId, SocketAddr)] {
        self.live_addrs
            .get_or_init(|| self.live().map(|r| (r.peer_id, r.addr)).collect())
    }

    /// The members whose record says dead, by peer id.
    pub fn dead(&self) -> impl Iterator<Item = &MemberRecord> {
        self.dead.iter().filter_map(|peer| self.records.get(peer))
    }

    /// The peer listening at `addr`, if any (the lowest id when several are).
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&MemberRecord> {
        let peer = self.addrs.get(&addr)?.first()?;
        self.records.get(peer)
    }

    /// Stores `record`, keeping the counts and indexes in step with the record it replaces.
    fn put(&mut self, record: MemberRecord) {
        let peer = record.peer_id;
        let listed = (is_live(record.status), record.addr);
        match self.records.get(&peer) {
            Some(old) => {
                let (status, addr) = (old.status, old.addr);
                if (is_live(status), addr) != listed {
                    self.live_addrs.take();
                }
                self.unindex(peer, status, addr);
            }
            None => {
                self.live_addrs.take();
            }
        }
        self.index(peer, record.status, record.addr);
        self.records.insert(peer, record);
    }

    fn index(&mut self, peer: PeerId, status: MemberStatus, addr: SocketAddr) {
        if is_live(status) {
            self.live += 1;
        }
        if status == MemberStatus::Dead {
            self.dead.insert(peer);
        }
        self.addrs.entry(addr).or_default().insert(peer);
    }

    fn unindex(&mut self, peer: PeerId, status: MemberStatus, addr: SocketAddr) {
        if is_live(status) {
            self.live -= 1;
        }
        if status == MemberStatus::Dead {
            self.dead.remove(&peer);
        }
        if let Some(peers) = self.addrs.get_mut(&addr) {
            peers.remove(&peer);
            if peers.is_empty() {
                self.addrs.remove(&addr);
            }
        }
    }
}

/// Whether a record with `status` counts as a live member.
fn is_live(status: MemberStatus) -> bool {
    matches!(status, MemberStatus::Alive | MemberStatus::Suspect)
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
