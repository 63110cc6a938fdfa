//! Carries the core's transmits to the transport: encodes each message once, sends it to each
//! destination in its own task, and keeps one slow or vanished destination from holding up
//! the others.
//!
//! - **Priorities.** Each message goes on its own QUIC stream; streams of control messages
//!   (probes, acks, digests, membership, joins, leaves, and lazy push's announcements and
//!   requests, `Have` and `Want`) get a higher stream priority than snapshots and deltas (a
//!   delta sent because a peer asked for it included), so a queue of model bytes never delays a probe's ack into a false
//!   suspicion, nor a digest into a slow drain.
//! - **Per-destination caps.** Bulk messages (deltas, snapshots, welcomes) to one destination
//!   take a slot of that destination's own budget (`max_inflight_per_peer`); past it the send
//!   is dropped and counted, and anti-entropy repairs the gap later. Control messages are small
//!   and always sent.
//! - **Send timeout.** A send that has not been acknowledged after `send_timeout` is abandoned
//!   (its stream reset), so a destination that went away without closing its connection does
//!   not hold a slot until the QUIC idle timeout. The connection it was on is presumed stuck
//!   (under heavy loss a QUIC connection can stop making progress while staying open) and is
//!   closed, at most once per `send_timeout` per destination; the next send connects afresh.
//! - **Outcomes.** Whether each delta reached its destination (acknowledged, failed, timed
//!   out, or dropped for the budget) goes back to the core ([`SendOutcome`],
//!   [`Core::send_outcome`]), so anti-entropy neither pushes a delta that is still on its way
//!   nor waits long to push one that was lost.
//! - **Departed members.** When the core declares a member dead or left, its connection is
//!   closed, which fails its pending sends at once.
//! - **Seeds.** While a peer joins, what became of each join request sent to a seed (delivered,
//!   failed and why, certificate refused by either side) is kept in a [`SeedLog`], so the peer
//!   can say why it is still waiting and why its join failed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use crate::net::tls::TlsRefusal;
use crate::net::{NetError, Transport};
use crate::report::Chain;
use rumor_proto::core::Core;
use rumor_proto::wire::{self, MessageKind, PeerId};

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

/// What became of one delta sent to one destination (for [`Core::send_outcome`]).
#[derive(Clone, Copy, Debug)]
pub struct SendOutcome {
    /// The destination.
    pub to: SocketAddr,
    /// The delta's origin.
    pub origin: PeerId,
    /// Its version.
    pub version: u64,
    /// Acknowledged by the destination's transport.
    pub delivered: bool,
}

/// What became of the last join request sent to one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Still on its way.
    Pending,
    /// The seed's transport acknowledged it; no welcome has come (yet).
    Delivered,
    /// The TLS handshake failed over a certificate: the seed refused this peer's, or this peer
    /// refused the seed's.
    Refused(TlsRefusal),
    /// The seed did not complete the handshake in time.
    NoAnswer {
        /// The connect timeout, in ms.
        timeout_ms: u64,
    },
    /// The send was abandoned after the send timeout.
    TimedOut(Duration),
    /// The send failed for another reason (the transport's error, as text).
    Failed(String),
}

impl SeedOutcome {
    fn from_error(error: &NetError) -> Self {
        if let Some(refusal) = TlsRefusal::from_net_error(error) {
            return Self::Refused(refusal);
        }
        match error {
            NetError::ConnectTimeout { timeout_ms, .. } => Self::NoAnswer {
                timeout_ms: *timeout_ms,
            },
            e => Self::Failed(Chain(e).to_string()),
        }
    }
}

/// One seed's join requests: how many were sent, and what became of the latest finished one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedState {
    /// The seed's address.
    pub addr: SocketAddr,
    /// Join requests sent to it.
    pub attempts: u32,
    /// The outcome of the latest request that finished, else [`SeedOutcome::Pending`] (or
    /// `None` before the first request).
    pub last: Option<SeedOutcome>,
}

impl std::fmt::Display for SeedState {
    /// One clause about the seed, e.g. "seed 127.0.0.1:7000 refused this peer's certificate
    /// (TLS alert certificate_unknown): ...".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = self.addr;
        match &self.last {
            None => write!(f, "seed {addr} not tried yet"),
            Some(SeedOutcome::Pending) => write!(f, "seed {addr} has not answered yet"),
            Some(SeedOutcome::Delivered) => {
                write!(
                    f,
                    "seed {addr} received the join request but sent no welcome"
                )
            }
            Some(SeedOutcome::Refused(refusal)) => write!(f, "seed {addr} {refusal}"),
            Some(SeedOutcome::NoAnswer { timeout_ms }) => write!(
                f,
                "seed {addr} did not answer (handshake timed out after {timeout_ms} ms)"
            ),
            Some(SeedOutcome::TimedOut(after)) => write!(
                f,
                "seed {addr} did not acknowledge the join request within {after:?}"
            ),
            Some(SeedOutcome::Failed(error)) => write!(f, "seed {addr}: {error}"),
        }
    }
}

/// What became of the join requests sent to each seed. Only the seeds given to
/// [`SeedLog::new`] are tracked, so it never grows.
#[derive(Debug, Default)]
pub struct SeedLog {
    seeds: Mutex<Vec<SeedState>>,
}

impl SeedLog {
    /// A log of join requests to `seeds`.
    pub fn new(seeds: &[SocketAddr]) -> Self {
        let mut states: Vec<SeedState> = Vec::with_capacity(seeds.len());
        for &addr in seeds {
            if !states.iter().any(|s| s.addr == addr) {
                states.push(SeedState {
                    addr,
                    attempts: 0,
                    last: None,
                });
            }
        }
        Self {
            seeds: Mutex::new(states),
        }
    }

    fn update(&self, addr: SocketAddr, f: impl FnOnce(&mut SeedState)) -> bool {
        let mut seeds = self.seeds.lock().unwrap_or_else(PoisonError::into_inner);
        match seeds.iter_mut().find(|s| s.addr == addr) {
            Some(state) => {
                f(state);
                true
            }
            None => false,
        }
    }

    /// Records a join request sent to `addr`; false (nothing recorded) if `addr` is not a seed.
    fn sent(&self, addr: SocketAddr) -> bool {
        self.update(addr, |s| {
            s.attempts = s.attempts.saturating_add(1);
            if s.last.is_none() {
                s.last = Some(SeedOutcome::Pending);
            }
        })
    }

    /// Records what became of a join request to `addr`.
    fn finished(&self, addr: SocketAddr, outcome: SeedOutcome) {
        self.update(addr, |s| s.last = Some(outcome));
    }

    /// Every seed's state, in the order the seeds were given.
    pub fn states(&self) -> Vec<SeedState> {
        self.seeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One clause per seed (see [`SeedState`]'s `Display`), joined by "; ". Seeds whose
    /// certificate handshake failed come first: that is the cause to fix.
    pub fn summary(&self) -> String {
        let mut states = self.states();
        states.sort_by_key(|s| !matches!(s.last, Some(SeedOutcome::Refused(_))));
        let clauses: Vec<String> = states.iter().map(ToString::to_string).collect();
        clauses.join("; ")
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
    outcomes: mpsc::UnboundedSender<SendOutcome>,
    /// When each destination's connection was last closed for a timed-out send.
    reconnected: Arc<std::sync::Mutex<HashMap<SocketAddr, tokio::time::Instant>>>,
    /// What became of the join requests to each seed.
    seeds: Arc<SeedLog>,
}

impl Sender {
    /// A sender over `transport` allowing `max_inflight_per_peer` (at least 1) bulk messages in
    /// flight per destination, each send abandoned after `send_timeout`. The receiver gets the
    /// outcome of every delta send; pass each to [`Core::send_outcome`].
    pub fn new(
        transport: Transport,
        max_inflight_per_peer: usize,
        send_timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<SendOutcome>) {
        let (outcomes, rx) = mpsc::unbounded_channel();
        let sender = Self {
            transport,
            max_inflight_per_peer: max_inflight_per_peer.max(1),
            send_timeout,
            budgets: HashMap::new(),
            counters: Arc::new(Counters::default()),
            outcomes,
            reconnected: Arc::default(),
            seeds: Arc::default(),
        };
        (sender, rx)
    }

    /// Tracks the join requests sent to `seeds` from now on (see [`Sender::seed_log`]);
    /// replaces any earlier log.
    pub fn watch_seeds(&mut self, seeds: &[SocketAddr]) {
        self.seeds = Arc::new(SeedLog::new(seeds));
    }

    /// What became of the join requests sent to the seeds given to [`Sender::watch_seeds`].
    pub fn seed_log(&self) -> &SeedLog {
        &self.seeds
    }

    /// Sends everything the core has queued. Must be called inside a tokio runtime.
    pub fn flush(&mut self, core: &mut Core) {
        let max = core.config().max_message_bytes;
        while let Some(t) = core.poll_transmit() {
            let kind = t.envelope.payload.kind();
            let frame: Arc<[u8]> = match wire::encode(&t.envelope, max) {
                Ok(f) => f.into(),
                Err(e) => {
                    warn!("cannot encode a {kind:?} message: {}", Chain(&e));
                    continue;
                }
            };
            let delta =
                (kind == MessageKind::Delta).then_some((t.envelope.origin, t.envelope.version));
            let to_member = t.to_member;
            for to in t.to {
                let report = |delivered: bool| {
                    if let Some((origin, version)) = delta {
                        // The receiver lives as long as the peer task that calls flush.
                        let _ = self.outcomes.send(SendOutcome {
                            to,
                            origin,
                            version,
                            delivered,
                        });
                    }
                };
                let permit = if is_bulk(kind) {
                    let budget = self
                        .budgets
                        .entry(to)
                        .or_insert_with(|| Arc::new(Semaphore::new(self.max_inflight_per_peer)));
                    match budget.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                            report(false);
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
                let outcomes = self.outcomes.clone();
                let reconnected = self.reconnected.clone();
                let seeds =
                    (kind == MessageKind::Join && self.seeds.sent(to)).then(|| self.seeds.clone());
                counters.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let send = transport.send_to_member(to, to_member, frame, priority(kind));
                    let delivered = match tokio::time::timeout(timeout, send).await {
                        Ok(Ok(())) => {
                            if let Some(seeds) = &seeds {
                                seeds.finished(to, SeedOutcome::Delivered);
                            }
                            true
                        }
                        Ok(Err(e)) => {
                            debug!(%to, "send of a {kind:?} failed: {}", Chain(&e));
                            if let Some(seeds) = &seeds {
                                seeds.finished(to, SeedOutcome::from_error(&e));
                            }
                            false
                        }
                        Err(_) => {
                            counters.timed_out.fetch_add(1, Ordering::Relaxed);
                            debug!(%to, "send of a {kind:?} abandoned after {timeout:?}");
                            if let Some(seeds) = &seeds {
                                seeds.finished(to, SeedOutcome::TimedOut(timeout));
                            }
                            let now = tokio::time::Instant::now();
                            let mut last = reconnected
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if last
                                .get(&to)
                                .is_none_or(|t| now.duration_since(*t) >= timeout)
                            {
                                last.insert(to, now);
                                drop(last);
                                debug!(%to, "connection presumed stuck: reconnecting");
                                transport.disconnect(to);
                            }
                            false
                        }
                    };
                    if let Some((origin, version)) = delta {
                        // Nobody listens once the peer task ended; nothing to report then.
                        let _ = outcomes.send(SendOutcome {
                            to,
                            origin,
                            version,
                            delivered,
                        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lazy push's announcements and requests are control messages; the delta they bring is
    /// bulk, like any delta.
    #[test]
    fn have_and_want_are_control_and_deltas_bulk() {
        for kind in [MessageKind::Have, MessageKind::Want, MessageKind::Digest] {
            assert_eq!(priority(kind), PRIORITY_CONTROL, "{kind:?}");
            assert!(!is_bulk(kind), "{kind:?}");
        }
        assert_eq!(priority(MessageKind::Delta), PRIORITY_BULK);
        assert!(is_bulk(MessageKind::Delta));
    }

    #[test]
    fn seed_log_tracks_only_seeds_and_puts_refusals_first() {
        let a: SocketAddr = ([127, 0, 0, 1], 7000).into();
        let b: SocketAddr = ([127, 0, 0, 1], 7001).into();
        let stranger: SocketAddr = ([127, 0, 0, 1], 9999).into();
        let log = SeedLog::new(&[a, b, a]);
        assert_eq!(
            log.summary(),
            "seed 127.0.0.1:7000 not tried yet; seed 127.0.0.1:7001 not tried yet"
        );
        assert!(!log.sent(stranger), "not a seed");
        log.finished(stranger, SeedOutcome::Delivered);
        assert_eq!(log.states().len(), 2);

        assert!(log.sent(a) && log.sent(a) && log.sent(b));
        log.finished(a, SeedOutcome::NoAnswer { timeout_ms: 5000 });
        log.finished(
            b,
            SeedOutcome::Refused(TlsRefusal::ByRemote {
                alert: 48,
                reason: String::new(),
            }),
        );
        assert_eq!(log.states()[0].attempts, 2);
        assert_eq!(
            log.summary(),
            "seed 127.0.0.1:7001 refused this peer's certificate (TLS alert unknown_ca); \
             seed 127.0.0.1:7000 did not answer (handshake timed out after 5000 ms)"
        );
        log.finished(a, SeedOutcome::Delivered);
        assert!(log
            .summary()
            .ends_with("seed 127.0.0.1:7000 received the join request but sent no welcome"));
    }
}
