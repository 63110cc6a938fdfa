//! What a running peer shows of itself: its live [`PeerStatus`] (for tables, dashboards and
//! tests) and the [`MemberSummary`] of each member it knows, refreshed by the peer driver.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::trainer::TrainProgress;
use crate::lock::lock;
use crate::net::Transport;
use rumor_proto::core::Core;
use rumor_proto::wire::{Lifecycle, PeerId};

/// A live view of a peer, for tables and tests. Updated by the peer task.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// Display name.
    pub name: String,
    /// Peer id (nil until started).
    pub peer_id: PeerId,
    /// Advertised address (None until bound).
    pub addr: Option<SocketAddr>,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Deltas published by this peer.
    pub version: u64,
    /// Deltas folded into the base (all origins).
    pub applied: u64,
    /// Live members known, itself included.
    pub peers_known: usize,
    /// Optimizer steps.
    pub step: u64,
    /// Samples processed.
    pub samples: u64,
    /// Last training loss.
    pub train_loss: Option<f32>,
    /// Last test accuracy of the base.
    pub test_accuracy: Option<f32>,
    /// UDP bytes sent (quinn counters).
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Envelopes dropped as duplicates.
    pub duplicates_dropped: u64,
    /// The members this peer knows, with their status as it sees them.
    pub members: Vec<MemberSummary>,
    /// Suspicions this peer raised.
    pub suspicions_raised: u64,
    /// Members this peer declared dead.
    pub members_declared_dead: u64,
}

impl PeerStatus {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            peer_id: PeerId::nil(),
            addr: None,
            lifecycle: Lifecycle::Starting,
            version: 0,
            applied: 0,
            peers_known: 0,
            step: 0,
            samples: 0,
            train_loss: None,
            test_accuracy: None,
            bytes_sent: 0,
            bytes_received: 0,
            duplicates_dropped: 0,
            members: Vec::new(),
            suspicions_raised: 0,
            members_declared_dead: 0,
        }
    }
}

/// A member as the peer saw it at exit.
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
    if progress.test_accuracy.is_some() {
        s.test_accuracy = progress.test_accuracy;
    }
    s.bytes_sent = net.bytes_sent;
    s.bytes_received = net.bytes_received;
    s.duplicates_dropped = core.stats().duplicates_dropped;
    s.suspicions_raised = core.stats().suspicions_raised;
    s.members_declared_dead = core.stats().members_declared_dead;
    s.members = member_summaries(core);
}

pub(super) fn member_summaries(core: &Core) -> Vec<MemberSummary> {
    core.members()
        .map(|m| MemberSummary {
            peer_id: m.peer_id,
            name: m.name.clone(),
            status: m.status.as_str().to_string(),
            incarnation: m.incarnation,
            lifecycle: m.lifecycle.as_str().to_string(),
        })
        .collect()
}
