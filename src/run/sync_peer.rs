//! Peers of the barrier baseline ([`crate::sync`]) made from peer options: `up --mode sync`
//! starts several, `peer --mode sync` one, and both bind, build and run them through here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::net::{Incoming, Transport};
use crate::node::{NodeError, PeerOptions};
use crate::sync::{SyncOutcome, SyncPeer};

use super::RunError;

/// A sync peer whose transport is bound, before it knows every other peer's address.
pub(super) struct BoundSyncPeer {
    options: PeerOptions,
    transport: Transport,
    incoming: mpsc::Receiver<Incoming>,
}

impl BoundSyncPeer {
    /// Binds the transport of `options` (its settings and loss injection) at `addr`.
    ///
    /// # Errors
    /// [`RunError::Peer`] naming the peer when the transport cannot be bound.
    pub(super) async fn bind(options: PeerOptions, addr: SocketAddr) -> Result<Self, RunError> {
        let (transport, incoming) = Transport::bind_lossy(
            addr,
            &options.identity,
            options.transport.clone(),
            options.loss.clone(),
        )
        .await
        .map_err(|e| RunError::peer(&options.name, e.into()))?;
        Ok(Self {
            options,
            transport,
            incoming,
        })
    }

    /// The address the transport is bound to.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// The peer at `index` of `peers` (every sync peer's address, this one's included), which
    /// waits at most `timeout` at a barrier.
    pub(super) fn into_peer(
        self,
        index: usize,
        peers: Vec<SocketAddr>,
        timeout: Duration,
    ) -> SyncPeer {
        let o = self.options;
        SyncPeer {
            name: o.name,
            index,
            peers,
            transport: self.transport,
            incoming: self.incoming,
            initial: o.initial,
            plan: o.plan,
            layout: o.layout,
            workload: o.workload,
            data_dir: o.data_dir,
            timeout,
        }
    }
}

/// Runs `peer` to its end.
///
/// # Errors
/// [`RunError::Peer`] naming the peer, the sync error as its source.
pub(super) async fn run(peer: SyncPeer) -> Result<SyncOutcome, RunError> {
    let name = peer.name.clone();
    crate::sync::run_sync_peer(peer)
        .await
        .map_err(|e| RunError::peer(&name, NodeError::Sync(Box::new(e))))
}
