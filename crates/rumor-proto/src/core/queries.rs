//! Read-only views of a [`Core`] for the shell, the simulator and tests: the model, the
//! membership, progress and counters. Nothing here changes state.

use crate::version_vector::VersionVector;
use crate::wire::{Lifecycle, MemberRecord, PeerId, Snapshot};

use super::{Core, CoreConfig, CoreStats};

impl Core {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.out.me.id
    }

    /// The current base (flat, layout order).
    pub fn base(&self) -> &[f32] {
        self.replica.base()
    }

    /// The deltas folded into the base.
    pub fn applied(&self) -> &VersionVector {
        self.replica.applied()
    }

    /// The content hash of every applied delta whose content is known, sorted by origin and
    /// version (a checkpoint saves them, so a resumed peer can still compare contents).
    pub fn contents(&self) -> Vec<(PeerId, u64, crate::auth::ContentHash)> {
        self.replica.contents()
    }

    /// The last version this peer published (0 before the first).
    pub fn published(&self) -> u64 {
        self.replica.published()
    }

    /// This peer's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.membership.incarnation()
    }

    /// Where this peer is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.state()
    }

    /// Whether a seed has welcomed this peer (or it started the cluster).
    pub fn is_joined(&self) -> bool {
        self.lifecycle.is_joined()
    }

    /// Deltas that live, unsuspected members have published (by the `published` version in
    /// their records, which each publish puts into the piggyback queue) above the highest
    /// version of theirs applied here: how far this peer's base lags the others' training.
    /// Versions below the highest applied one that are missing (gaps, skipped reservations)
    /// are anti-entropy's business and not counted. The trainer's staleness bound reads it.
    pub fn unseen_deltas(&self) -> u64 {
        let me = self.out.me.id;
        let applied = self.replica.applied();
        self.membership
            .live()
            .filter(|m| m.peer_id != me && m.status == crate::wire::MemberStatus::Alive)
            .map(|m| m.published.saturating_sub(applied.max_of(m.peer_id)))
            .sum()
    }

    /// How many local phases this peer has published beyond the slowest other member still
    /// training, in that member's deltas applied here (the stale-synchronous-parallel clock
    /// difference; members that joined late are offset by what this peer had published when
    /// it first counted them). 0 when it is level with everyone. The trainer waits before a
    /// phase while this exceeds `train.max_phase_lead`.
    pub fn phase_lead(&self) -> u64 {
        self.phase_clocks.lead(
            self.out.me.id,
            self.replica.published(),
            self.replica.applied(),
            self.membership.live(),
        )
    }

    /// The largest L2 norm this peer's next delta (values as added to the base, already scaled
    /// by its weight) may have: [`super::OWN_NORM_SHARE`] of the bar its norm check sets for
    /// others' deltas, at the median norm of the deltas it recently accepted from other members.
    /// The trainer scales a larger delta down to it ([`super::clip_to_norm`]) before it
    /// publishes, so that no member refuses a delta this peer has already applied. `None`: no
    /// other member's delta accepted yet, or the check is off.
    pub fn own_delta_norm_bound(&self) -> Option<f64> {
        self.replica.own_norm_bound()
    }

    /// Live members (alive or suspect), this peer included: the `n` of the weight `w = 1/n`.
    pub fn live_count(&self) -> usize {
        self.membership.live_count()
    }

    /// Every member record held, this peer's own included.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.membership.iter()
    }

    /// The settings this core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.out.stats
    }

    /// Bytes and entries of the delta log.
    pub fn delta_log_usage(&self) -> (usize, usize) {
        self.replica.log_usage()
    }

    /// The lifecycle and applied set another peer last reported in a digest.
    pub fn peer_progress(&self, peer: &PeerId) -> Option<(Lifecycle, &VersionVector)> {
        self.dissemination.peer_progress(peer)
    }

    /// Whether draining may end: this peer is draining, and every other live member (suspected
    /// or not) has said it is draining (so its last delta is published) and reported the same
    /// applied set as this peer. While some member is declared dead this must have held for the
    /// last [`CoreConfig::drain_settle`] with the same dead members and applied set, and a
    /// suspected member's report must be no older than that.
    pub fn drain_complete(&self) -> bool {
        self.lifecycle.drain_complete()
    }

    /// How many of this peer's own deltas are still on their way (sent, no outcome reported)
    /// to some member that is alive and not under suspicion. For flow control: the trainer
    /// publishes no more while this is at its window.
    pub fn own_deltas_unacked(&self) -> usize {
        self.dissemination
            .own_deltas_unacked(self.out.me.id, &self.membership)
    }

    /// How many large deltas this peer has asked for (lazy push) and not received yet.
    pub fn pulls_in_progress(&self) -> usize {
        self.dissemination.pulls_in_progress()
    }

    /// A snapshot of this peer's base and applied set, as sent in `Welcome`.
    pub fn snapshot(&self) -> Snapshot {
        self.replica.snapshot()
    }
}
