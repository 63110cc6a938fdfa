//! What a running peer shows of itself: its live [`PeerStatus`] (for tables, dashboards and
//! tests; the same record its snapshots publish), refreshed by the peer driver, and the
//! [`MemberSummary`] of each member it knew at exit, for its outcome and run summary.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::trainer::TrainProgress;
use crate::lock::lock;
use crate::metrics::MemberView;
use crate::net::Transport;
use rumor_proto::core::Core;
use rumor_proto::wire::PeerId;

pub use crate::metrics::PeerStatus;

/// A member as the peer saw it at exit: the fields of its [`MemberView`] that the run summary
/// (`--summary-json`) records.
#[derive(Clone, Debug, Serialize)]
pub struct MemberSummary {
    /// Peer id.
    pub peer_id: PeerId,
    /// Display name.
    pub name: String,
    /// Liveness status.
    pub status: String,
    /// Incarnation.
    pub incarnation: u64,
    /// Lifecycle state.
    pub lifecycle: String,
}

/// Refreshes the live record from the core, the transport's counters and the trainer's last
/// report (a loss or accuracy it has not reported again is kept).
pub(super) fn update_status(
    status: &Arc<Mutex<PeerStatus>>,
    core: &Core,
    transport: &Transport,
    progress: &TrainProgress,
) {
    let net = transport.stats();
    let mut s = lock(status);
    s.lifecycle = core.lifecycle();
    s.version = core.published();
    s.applied = core.applied().len();
    s.peers_known = core.live_count();
    s.step = progress.step;
    s.samples = progress.samples;
    if progress.train_loss.is_some() {
        s.train_loss = progress.train_loss;
    }
    if let Some(metrics) = &progress.metrics {
        s.test_accuracy = metrics.accuracy();
        s.metrics = Some(metrics.clone());
    }
    s.bytes_sent = net.bytes_sent;
    s.bytes_received = net.bytes_received;
    s.duplicates_dropped = core.stats().duplicates_dropped;
    s.suspicions_raised = core.stats().suspicions_raised;
    s.members_declared_dead = core.stats().members_declared_dead;
    s.incarnation = core.incarnation();
    s.members = core.members().map(MemberView::from).collect();
}

/// The members the core knows, as the run summary records them.
pub(super) fn member_summaries(core: &Core) -> Vec<MemberSummary> {
    core.members()
        .map(|m| MemberSummary::from(MemberView::from(m)))
        .collect()
}

impl From<MemberView> for MemberSummary {
    fn from(m: MemberView) -> Self {
        Self {
            peer_id: m.peer_id,
            name: m.name,
            status: m.status,
            incarnation: m.incarnation,
            lifecycle: m.lifecycle,
        }
    }
}

impl super::PeerOutcome {
    /// The final base's `accuracy` metric, NaN when the workload has none or it was skipped.
    pub fn accuracy(&self) -> f32 {
        self.metrics.accuracy().unwrap_or(f32::NAN)
    }
}
