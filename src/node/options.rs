//! What a peer is started with ([`PeerOptions`]) and what it ends with ([`PeerOutcome`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumor_proto::core::{CoreConfig, CoreStats};
use rumor_proto::version_vector::VersionVector;
use rumor_proto::wire::PeerId;

use super::status::MemberSummary;
use super::trainer::TrainPlan;
use crate::certs::PeerIdentity;
use crate::model;
use crate::net::TransportConfig;
use crate::workload::{Metrics, Workload};

/// Everything one peer needs.
#[derive(Clone)]
pub struct PeerOptions {
    /// Display name (the certificate name).
    pub name: String,
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Address to advertise; default the bound address.
    pub advertise: Option<SocketAddr>,
    /// Seeds to join through.
    pub seeds: Vec<SocketAddr>,
    /// Longest time from a stop request to the end of [`run_peer`]: the final evaluation is
    /// skipped when the leave and the save used it up.
    pub leave_grace: Duration,
    /// Seeds by DNS name, resolved at start and again every few seconds ([`discovery`]).
    pub dns_seeds: Vec<crate::net::discovery::DnsSeed>,
    /// Certificates for mutual TLS.
    pub identity: Arc<PeerIdentity>,
    /// The cluster's CA-signed revocation list, loaded at start and watched ([`revocation`]):
    /// certificates on it are refused at the handshake, their connections closed and their
    /// members dropped. `None`: no list.
    pub revocation_list: Option<PathBuf>,
    /// Directory for the peer id, checkpoints and metrics.
    pub data_dir: PathBuf,
    /// Continue from the checkpoint in `data_dir`.
    pub resume: bool,
    /// Initial parameters θ₀, flat in `layout` order (used when starting a cluster; joiners
    /// take the seed's snapshot).
    pub initial: Vec<f32>,
    /// The names and shapes of the model's tensors, in flat order.
    pub layout: model::ParamLayout,
    /// The training plan.
    pub plan: TrainPlan,
    /// What this peer trains: the model, this peer's shard and the held-out data.
    pub workload: Arc<dyn Workload>,
    /// Protocol settings, the lifecycle policy included (`core.lifecycle`: the `min_peers`
    /// gate, join timeout, drain deadline and checkpoint period). `core.lifecycle.min_peers`
    /// `None` runs membership and gossip only, never training (benchmarks).
    pub core: CoreConfig,
    /// Transport settings, and the sender's (`max_inflight_per_peer`, `send_timeout`).
    pub transport: TransportConfig,
    /// Seed for the protocol RNG.
    pub rng_seed: u64,
    /// Datagrams the peer's socket drops on purpose (inactive: none).
    pub loss: crate::net::lossy::LossConfig,
    /// Where to append one line per delta applied or published (`peer.audit_log`); `None`: no
    /// audit log.
    pub audit_log: Option<PathBuf>,
}

/// What a peer ends with.
#[derive(Clone, Debug)]
pub struct PeerOutcome {
    /// Peer id.
    pub peer_id: PeerId,
    /// Display name.
    pub name: String,
    /// The final base (flat).
    pub base: Vec<f32>,
    /// The deltas folded into it.
    pub applied: VersionVector,
    /// Deltas this peer published.
    pub version: u64,
    /// Held-out metrics of the final base (the workload's, headline first); empty when the
    /// final evaluation was skipped.
    pub metrics: Metrics,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples processed.
    pub samples: u64,
    /// Whether the drain ended consistent (false: the drain deadline passed first).
    pub drained: bool,
    /// Seconds from the start of the drain (training over, last delta published) to its end;
    /// `None` when the peer stopped before its drain ended.
    pub drain_seconds: Option<f64>,
    /// When the drain ended (Unix seconds), so the drains of several peers can be put on one
    /// clock; `None` like `drain_seconds`.
    pub drain_ended_unix: Option<f64>,
    /// Members known at exit.
    pub members: Vec<MemberSummary>,
    /// Protocol counters at exit.
    pub stats: CoreStats,
    /// Transport counters at exit (UDP bytes, handshakes accepted and rejected).
    pub transport: crate::net::TransportStats,
    /// Seconds from start to exit.
    pub wall_seconds: f64,
}
