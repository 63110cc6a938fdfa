//! The piggyback queue: membership changes still to be carried on probes and gossip, each a
//! bounded number of times (SWIM's infection-style dissemination; memberlist's broadcast queue).

use crate::wire::MemberRecord;

/// Most membership records piggybacked on one probe or gossip message.
pub const MAX_PIGGYBACK: usize = 8;

/// Pending changes, one per peer, with the retransmits each has left.
#[derive(Debug, Default)]
pub struct Piggyback {
    updates: Vec<(MemberRecord, u32)>,
}

impl Piggyback {
    /// Queues `record` to be sent `retransmits` times, replacing any older change of its peer.
    pub fn push(&mut self, record: MemberRecord, retransmits: u32) {
        self.updates.retain(|(r, _)| r.peer_id != record.peer_id);
        self.updates.push((record, retransmits));
    }

    /// Whether no change is pending.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Up to [`MAX_PIGGYBACK`] pending changes, those with the most retransmits left first;
    /// each taken one counts a retransmit, and those with none left are dropped.
    pub fn take(&mut self) -> Vec<MemberRecord> {
        self.updates.sort_by_key(|u| std::cmp::Reverse(u.1));
        let mut out = Vec::new();
        for (record, left) in self.updates.iter_mut().take(MAX_PIGGYBACK) {
            out.push(record.clone());
            *left = left.saturating_sub(1);
        }
        self.updates.retain(|(_, left)| *left > 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PeerId;
    use crate::wire::{Lifecycle, MemberStatus};

    fn record(n: u128) -> MemberRecord {
        MemberRecord {
            peer_id: PeerId::from_u128(n),
            name: format!("p{n}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation: 0,
            heartbeat: 0,
            status: MemberStatus::Alive,
            lifecycle: Lifecycle::Training,
            published: 0,
            credential: crate::auth::Credential::new(Vec::new()),
            signature: Default::default(),
        }
    }

    #[test]
    fn each_change_is_sent_its_retransmits_then_dropped() {
        let mut queue = Piggyback::default();
        queue.push(record(1), 2);
        queue.push(record(1), 2);
        assert_eq!(queue.take().len(), 1, "one change per peer");
        assert_eq!(queue.take().len(), 1);
        assert!(queue.is_empty());
    }

    #[test]
    fn at_most_max_piggyback_per_message() {
        let mut queue = Piggyback::default();
        for n in 0..20 {
            queue.push(record(n), 1);
        }
        assert_eq!(queue.take().len(), MAX_PIGGYBACK);
    }
}
