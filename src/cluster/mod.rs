//! The local cluster supervisor: the peers of one process (`rumor up`, its dashboard, the lab's
//! runs through `up`, `rumor bench membership`) started, paused, killed, restarted, added to and
//! collected in one place, so that every front end drives peers the same way and none of them
//! owns peers itself.
//!
//! Restart follows the README's dashboard section: a killed peer comes back from its last
//! checkpoint (`--resume`, incarnation + 1) when it has one, else fresh with a new peer id (its
//! published versions are unknown, and reusing its id would republish versions peers already
//! hold); it rejoins through the live peers, on its old port when that port is free.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::GossipEvent;
use crate::node::{lock, NodeError, PeerHandle, PeerOptions, PeerOutcome, PeerStatus};

/// Accuracy samples kept per peer (one a second while it runs).
const HISTORY_KEPT: usize = 400;

/// Why a peer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddPeerError {
    /// No peer is running to join through.
    #[error("no live peer to join through")]
    NoLivePeer,
    /// This cluster was started without a way to make a new peer's options.
    #[error("this run cannot add peers")]
    NoFactory,
    /// Making the new peer's options failed (its certificate, its shard, the configuration).
    #[error(transparent)]
    Options(Box<dyn std::error::Error + Send + Sync>),
}

/// Why a peer could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// Only a peer killed by the operator (and ended) can be restarted.
    #[error("only a killed peer can be restarted")]
    NotKilled,
    /// No peer at that index.
    #[error("no peer {0}")]
    NoSuchPeer(usize),
}

/// How a restarted peer came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// From its last checkpoint, as `--resume`.
    FromCheckpoint,
    /// Fresh with a new peer id (it had no checkpoint yet).
    Fresh,
}

impl Restart {
    /// What the operator is told.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FromCheckpoint => "restarted from its checkpoint (--resume)",
            Self::Fresh => "restarted fresh with a new peer id (no checkpoint yet)",
        }
    }
}

/// Makes the options of a new peer: its index in the cluster and the live peers' addresses to
/// join through.
pub type PeerFactory =
    Box<dyn FnMut(usize, Vec<SocketAddr>) -> Result<PeerOptions, AddPeerError> + Send>;

/// How a supervised peer ended.
#[derive(Debug)]
pub enum PeerEnd {
    /// Still running.
    Running,
    /// Killed by the operator and not restarted.
    Killed,
    /// Ended on its own: its outcome or its error.
    Done(Box<Result<PeerOutcome, NodeError>>),
}

/// One supervised peer: its options (to restart it), its handle while it runs, how it ended
/// and what it last reported.
pub struct LocalPeer {
    /// The options it was (last) started with.
    pub options: PeerOptions,
    handle: Option<PeerHandle>,
    /// Its in-process status, readable after it ended.
    status: Arc<Mutex<PeerStatus>>,
    /// How it ended.
    pub end: PeerEnd,
    /// What it last reported (its `/status` record).
    pub last: PeerStatus,
    /// Samples over time of the workload's headline metric (test accuracy in [0, 1] for
    /// images, validation loss for text), one per [`LocalCluster::poll`] with sampling.
    pub history: Vec<f32>,
}

impl LocalPeer {
    fn spawn(options: PeerOptions) -> Self {
        let handle = PeerHandle::spawn(options.clone());
        let last = PeerStatus::new(&options.name);
        Self {
            status: handle.status.clone(),
            options,
            handle: Some(handle),
            end: PeerEnd::Running,
            last,
            history: Vec::new(),
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The running peer's handle (None once it ended and was collected).
    pub fn handle(&self) -> Option<&PeerHandle> {
        self.handle.as_ref()
    }

    /// Its in-process status now (the last one after it ended).
    pub fn status(&self) -> PeerStatus {
        lock(&self.status).clone()
    }

    /// Whether the operator paused it.
    pub fn is_paused(&self) -> bool {
        self.handle.as_ref().is_some_and(PeerHandle::is_paused)
    }

    /// Running and not killed: a peer others can join through.
    fn is_live(&self) -> bool {
        self.handle.is_some() && matches!(self.end, PeerEnd::Running)
    }
}

/// The peers of a local cluster.
pub struct LocalCluster {
    peers: Vec<LocalPeer>,
    factory: Option<PeerFactory>,
    /// The first peer's bound address, which the others were seeded with.
    seed: Option<SocketAddr>,
}

impl LocalCluster {
    /// Starts one peer per options: the first at once, the others seeded with its bound address
    /// (their own seeds are replaced; `min_peers` is the caller's). A first peer that fails
    /// before binding leaves the others' seeds as they were.
    pub async fn start(options: Vec<PeerOptions>) -> Self {
        let mut cluster = Self {
            peers: Vec::with_capacity(options.len()),
            factory: None,
            seed: None,
        };
        for (i, mut opts) in options.into_iter().enumerate() {
            if i > 0 {
                opts.seeds = cluster.seed.into_iter().collect();
            }
            let mut peer = LocalPeer::spawn(opts);
            if i == 0 {
                if let Some(h) = peer.handle.as_mut() {
                    cluster.seed = h.bound_addr().await;
                }
            }
            cluster.peers.push(peer);
        }
        cluster
    }

    /// The first peer's bound address, which the others started with were seeded with (None
    /// if it failed before binding).
    pub fn seed(&self) -> Option<SocketAddr> {
        self.seed
    }

    /// Lets [`Self::add_peer`] make new peers with `factory`.
    pub fn with_factory(mut self, factory: PeerFactory) -> Self {
        self.factory = Some(factory);
        self
    }

    /// The peers, in the order they were started.
    pub fn peers(&self) -> &[LocalPeer] {
        &self.peers
    }

    /// The in-process status of every peer, in order.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(LocalPeer::status).collect()
    }

    /// Starts one more peer with `options` as they are; returns its index.
    pub fn add(&mut self, options: PeerOptions) -> usize {
        self.peers.push(LocalPeer::spawn(options));
        self.peers.len() - 1
    }

    /// Adds a peer made by the factory, joining through the live peers; returns its name.
    ///
    /// # Errors
    /// [`AddPeerError::NoLivePeer`] when no peer runs; [`AddPeerError::NoFactory`] without a
    /// factory; what the factory fails with.
    pub fn add_peer(&mut self) -> Result<String, AddPeerError> {
        let seeds = self.live_addrs(None);
        if seeds.is_empty() {
            return Err(AddPeerError::NoLivePeer);
        }
        let index = self.peers.len();
        let factory = self.factory.as_mut().ok_or(AddPeerError::NoFactory)?;
        let options = factory(index, seeds)?;
        let name = options.name.clone();
        self.add(options);
        Ok(name)
    }

    /// Pauses a running peer, or resumes a paused one; returns whether it is now paused (None:
    /// no running peer `index`).
    pub fn toggle_pause(&self, index: usize) -> Option<bool> {
        let h = self.peers.get(index)?.handle.as_ref()?;
        let now = !h.is_paused();
        h.set_paused(now);
        Some(now)
    }

    /// Kills a running peer as a crash (no leave, no final save); returns whether one was.
    pub fn kill(&mut self, index: usize) -> bool {
        match self.peers.get_mut(index) {
            Some(peer) => match &peer.handle {
                Some(h) => {
                    h.kill();
                    peer.end = PeerEnd::Killed;
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Restarts a killed peer (see the module docs): from its checkpoint when it has one, else
    /// fresh with a new peer id; through the live peers, on its old port when free.
    ///
    /// # Errors
    /// [`RestartError::NotKilled`] unless the peer was killed and has ended;
    /// [`RestartError::NoSuchPeer`] for an index out of range.
    pub fn restart(&mut self, index: usize) -> Result<Restart, RestartError> {
        let seeds = self.live_addrs(Some(index));
        let peer = self
            .peers
            .get_mut(index)
            .ok_or(RestartError::NoSuchPeer(index))?;
        if !matches!(peer.end, PeerEnd::Killed) || peer.handle.is_some() {
            return Err(RestartError::NotKilled);
        }
        let mut o = peer.options.clone();
        o.resume = o.data_dir.join("checkpoint.json").exists();
        o.seeds = seeds;
        o.core.lifecycle.min_peers = o.core.lifecycle.min_peers.map(|_| 1);
        o.listen = same_or_any_port(peer.last.addr);
        let how = if o.resume {
            Restart::FromCheckpoint
        } else {
            // Restarted fresh as a new id: its seed goes (and the legacy id file, which would
            // otherwise become the seed again). The old id's ledger entry stays, unused.
            let _ =
                std::fs::remove_file(o.data_dir.join(crate::node::data_dir::IDENTITY_SEED_FILE));
            let _ =
                std::fs::remove_file(o.data_dir.join(crate::node::data_dir::LEGACY_PEER_ID_FILE));
            Restart::Fresh
        };
        let handle = PeerHandle::spawn(o);
        peer.status = handle.status.clone();
        peer.handle = Some(handle);
        peer.end = PeerEnd::Running;
        Ok(how)
    }

    /// Asks every running peer to resume if paused, stop training, leave and save.
    pub fn request_stop_all(&self) {
        for h in self.peers.iter().filter_map(|p| p.handle.as_ref()) {
            h.set_paused(false);
            h.request_stop();
        }
    }

    /// Senders that ask each peer running now to stop (for a signal handler).
    pub fn stop_senders(&self) -> Vec<Arc<watch::Sender<bool>>> {
        self.peers
            .iter()
            .filter_map(|p| p.handle.as_ref().map(PeerHandle::stop_sender))
            .collect()
    }

    /// The end-of-training flag of every running peer ([`PeerHandle::end_training_flag`]).
    pub fn end_training_flags(&self) -> Vec<Arc<std::sync::atomic::AtomicBool>> {
        self.peers
            .iter()
            .filter_map(|p| p.handle.as_ref().map(PeerHandle::end_training_flag))
            .collect()
    }

    /// Refreshes each running peer's last view, takes its recent events and collects the
    /// peers that ended (a killed one stays killed); with `sample`, records each running peer's
    /// accuracy in its history. Returns the events and the names and errors of the peers that
    /// failed since the last poll.
    pub async fn poll(&mut self, sample: bool) -> (Vec<GossipEvent>, Vec<(String, String)>) {
        let mut events = Vec::new();
        let mut failures = Vec::new();
        for peer in &mut self.peers {
            if let Some(h) = &peer.handle {
                let view = h.snapshot.borrow().peer.clone();
                if !view.name.is_empty() {
                    peer.last = view;
                }
                events.extend(h.events.drain());
                if h.is_finished() {
                    if let Some(h) = peer.handle.take() {
                        let result = h.wait().await;
                        if !matches!(peer.end, PeerEnd::Killed) {
                            if let Err(e) = &result {
                                failures.push((
                                    peer.options.name.clone(),
                                    crate::report::Chain(e).to_string(),
                                ));
                            }
                            peer.end = PeerEnd::Done(Box::new(result));
                        }
                    }
                }
            }
            if sample && peer.handle.is_some() {
                let headline = peer.last.metrics.as_ref().and_then(|m| m.primary());
                if let Some(a) = headline.map(|(_, v)| v as f32).or(peer.last.test_accuracy) {
                    peer.history.push(a);
                    if peer.history.len() > HISTORY_KEPT {
                        peer.history.remove(0);
                    }
                }
            }
        }
        (events, failures)
    }

    /// Whether no peer runs any more.
    pub fn all_ended(&self) -> bool {
        self.peers.iter().all(|p| p.handle.is_none())
    }

    /// Waits for every running peer to end, in order.
    pub async fn wait_all(&mut self) {
        for peer in &mut self.peers {
            if let Some(h) = peer.handle.take() {
                let result = h.wait().await;
                if !matches!(peer.end, PeerEnd::Killed) {
                    peer.end = PeerEnd::Done(Box::new(result));
                }
            }
        }
    }

    /// Asks every running peer that was not killed to stop, and waits up to `per_peer` for
    /// each; a peer still running then is left to end on its own.
    pub async fn shutdown(mut self, per_peer: Duration) {
        for peer in &mut self.peers {
            if matches!(peer.end, PeerEnd::Killed) {
                continue;
            }
            if let Some(h) = peer.handle.take() {
                h.request_stop();
                let _ = tokio::time::timeout(per_peer, h.wait()).await;
            }
        }
    }

    /// The cluster as it ended: every peer's name and end, in order. Call after
    /// [`Self::all_ended`] or [`Self::wait_all`]; a peer still running counts as
    /// [`PeerEnd::Running`].
    pub fn into_ends(self) -> Vec<(String, PeerEnd)> {
        self.peers
            .into_iter()
            .map(|p| (p.options.name, p.end))
            .collect()
    }

    /// Addresses of the live peers other than `except`.
    fn live_addrs(&self, except: Option<usize>) -> Vec<SocketAddr> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, p)| Some(*i) != except && p.is_live())
            .filter_map(|(_, p)| p.last.addr)
            .collect()
    }
}

/// The peer's old address when it can be bound again (peers know it there), else any port.
fn same_or_any_port(old: Option<SocketAddr>) -> SocketAddr {
    match old {
        Some(addr) if std::net::UdpSocket::bind(addr).is_ok() => addr,
        _ => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}
