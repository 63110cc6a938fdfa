//! Bounded staleness by phase clocks: how many local phases this peer has run beyond the
//! slowest other member still training, counted in the deltas it holds from that member
//! (stale synchronous parallel, Ho et al. 2013, "More effective distributed ML via a stale
//! synchronous parallel parameter server", here without the server and without a global
//! clock).
//!
//! A member's clock is the highest version of it applied here; this peer's is its own published
//! version. A member that joined after this peer had published `k` deltas starts `k` behind by
//! no fault of its own, so each member's clock is offset by what this peer had published when it
//! first counted it (at its first publish after learning of the member): members that were there
//! from the start have offset 0, a late joiner is not expected to catch up.

use std::collections::HashMap;

use crate::id::PeerId;
use crate::version_vector::VersionVector;
use crate::wire::{Lifecycle, MemberRecord, MemberStatus};

/// Per-member clock offsets (in this peer's versions).
#[derive(Debug, Default)]
pub(crate) struct PhaseClocks {
    offsets: HashMap<PeerId, u64>,
}

/// Whether `m` holds back this peer's next phase: another member, alive (a suspect one is not
/// waited for), and training (one that is waiting for peers, draining or gone publishes no
/// more).
fn counts(me: PeerId, m: &MemberRecord) -> bool {
    m.peer_id != me && m.status == MemberStatus::Alive && m.lifecycle == Lifecycle::Training
}

impl PhaseClocks {
    /// Before this peer publishes version `published + 1`: members not yet counted get the
    /// offset `published`.
    pub(crate) fn before_publish<'a>(
        &mut self,
        me: PeerId,
        published: u64,
        members: impl Iterator<Item = &'a MemberRecord>,
    ) {
        for m in members.filter(|m| m.peer_id != me) {
            self.offsets.entry(m.peer_id).or_insert(published);
        }
    }

    /// How many of its own deltas this peer has published beyond the clock of the member
    /// furthest behind: `max over counted members m of published − offset_m − max_applied_m`
    /// (0 when every one is level or ahead, or none counts).
    pub(crate) fn lead<'a>(
        &self,
        me: PeerId,
        published: u64,
        applied: &VersionVector,
        members: impl Iterator<Item = &'a MemberRecord>,
    ) -> u64 {
        members
            .filter(|m| counts(me, m))
            .map(|m| {
                let offset = self.offsets.get(&m.peer_id).copied().unwrap_or(published);
                published
                    .saturating_sub(offset)
                    .saturating_sub(applied.max_of(m.peer_id))
            })
            .max()
            .unwrap_or(0)
    }
}
