//! Carries the core's transmits to the transport: encodes each message once, sends it to each
//! destination in its own task, and keeps one slow or vanished destination from holding up
//! the others.
//!
//! - **Priorities.** Each message goes on its own QUIC stream; streams of control messages
//!   (probes, acks, digests, membership, joins, leaves) get a higher stream priority than
//!   snapshots and deltas, so a queue of model bytes never delays a probe's ack into a false
//!   suspicion, nor a digest into a slow drain.
//! - **Per-destination caps.** Bulk messages (deltas, snapshots, welcomes) to one destination
//!   take a slot of that destination's own budget (`max_inflight_per_peer`); past it the send
//!   is dropped and counted, and anti-entropy repairs the gap later. Control messages are small
//!   and always sent.
//! - **Send timeout.** A send that has not been acknowledged after `send_timeout` is abandoned
//!   (its stream reset), so a destination that went away without closing its connection does
//!   not hold a slot until the QUIC idle timeout.
//! - **Departed members.** When the core declares a member dead or left, its connection is
//!   closed, which fails its pending sends at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::core::Core;
use crate::net::Transport;
use crate::wire::{self, MessageKind};

/// QUIC stream priority of control messages (quinn: higher is sent first).
const PRIORITY_CONTROL: i32 = 2;
/// Stream priority of a welcome (a snapshot a joining peer waits for before it can train).
const PRIORITY_WELCOME: i32 = 1;
/// Stream priority of deltas and anti-entropy snapshots.
const PRIORITY_BULK: i32 = 0;

/// Whether messages of `kind` carry model parameters (and take a per-destination slot).
fn is_bulk(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::Delta | MessageKind::Snapshot | MessageKind::Welcome
    )
}

fn priority(kind: MessageKind) -> i32 {
    match kind {
        MessageKind::Welcome => PRIORITY_WELCOME,
        k if is_bulk(k) => PRIORITY_BULK,
        _ => PRIORITY_CONTROL,
    }
}

/// Counters of the sender, shared with its send tasks.
#[derive(Debug, Default)]
struct Counters {
    /// Bulk sends dropped because the destination's budget was full.
    dropped_full: AtomicU64,
    /// Sends abandoned after the send timeout.
    timed_out: AtomicU64,
    /// Send tasks running.
    in_flight: AtomicUsize,
}

/// The outgoing half of a peer's shell. See the module documentation.
pub struct Sender {
    transport: Transport,
    max_inflight_per_peer: usize,
    send_timeout: Duration,
    budgets: HashMap<SocketAddr, Arc<Semaphore>>,
    counters: Arc<Counters>,
}

impl Sender {
    /// A sender over `transport` allowing `max_inflight_per_peer` (at least 1) bulk messages in
    /// flight per destination, each send abandoned after `send_timeout`.
    pub fn new(transport: Transport, max_inflight_per_peer: usize, send_timeout: Duration) -> Self {
        Self {
            transport,
            max_inflight_per_peer: max_inflight_per_peer.max(1),
            send_timeout,
            budgets: HashMap::new(),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Sends everything the core has queued. Must be called inside a tokio runtime.
    pub fn flush(&mut self, core: &mut Core) {
        let max = core.config().max_message_bytes;
        while let Some(t) = core.poll_transmit() {
            let kind = t.envelope.payload.kind();
            let frame: Arc<[u8]> = match wire::encode(&t.envelope, max) {
                Ok(f) => f.into(),
                Err(e) => {
                    warn!("cannot encode a {kind:?} message: {e}");
                    continue;
                }
            };
            for to in t.to {
                let permit = if is_bulk(kind) {
                    let budget = self
                        .budgets
                        .entry(to)
                        .or_insert_with(|| Arc::new(Semaphore::new(self.max_inflight_per_peer)));
                    match budget.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    None
                };
                let transport = self.transport.clone();
                let frame = frame.clone();
                let counters = self.counters.clone();
                let timeout = self.send_timeout;
                counters.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let send = transport.send_with_priority(to, frame, priority(kind));
                    match tokio::time::timeout(timeout, send).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%to, "send of a {kind:?} failed: {e}"),
                        Err(_) => {
                            counters.timed_out.fetch_add(1, Ordering::Relaxed);
                            debug!(%to, "send of a {kind:?} abandoned after {timeout:?}");
                        }
                    }
                    drop(permit);
                    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }

    /// A member at `addr` died or left: closes its connection (failing its pending sends) and
    /// forgets its budget.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.budgets.remove(&addr);
        self.transport.disconnect(addr);
    }

    /// Waits until every send task finished, at most `limit`.
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.counters.in_flight.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Bulk sends dropped because their destination's budget was full.
    pub fn dropped_full(&self) -> u64 {
        self.counters.dropped_full.load(Ordering::Relaxed)
    }

    /// Sends abandoned after the send timeout.
    pub fn timed_out(&self) -> u64 {
        self.counters.timed_out.load(Ordering::Relaxed)
    }
}
