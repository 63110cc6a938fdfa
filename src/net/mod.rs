//! The QUIC transport: one quinn endpoint per peer, mutual TLS, a connection cache, one
//! unidirectional stream per message.
//!
//! This module moves opaque byte messages between peers and makes no protocol decisions: what a
//! message means, whom to send it to and what to do when a send fails is the caller's business
//! (`core/` via the runtime).
//!
//! # Design
//!
//! - **One socket.** A peer binds one UDP socket; its quinn endpoint both accepts and opens
//!   connections on it. A remote peer therefore sees our *listen* address as the remote address
//!   of every connection with us, and [`Incoming::from`] is the sender's listen address.
//! - **Mutual TLS** against the cluster CA ([`tls`]). A server whose client presents no
//!   certificate from the CA, an expired one, or one without the clientAuth usage, refuses the
//!   handshake and counts it in [`TransportStats::handshakes_rejected`].
//! - **Connection cache** keyed by remote socket address (IPv4-mapped IPv6 addresses are
//!   folded to IPv4). Connections we open and connections we accept both enter it, so a pair of
//!   peers talks over one connection in both directions. Concurrent sends to an address not yet
//!   connected share one connection attempt; a failed attempt is reported to every waiter and
//!   forgotten, so the next send tries again. A closed connection leaves the cache.
//!   If two peers connect to each other at the same instant, each keeps the connection it
//!   opened; both connections work, and each closes after the idle timeout when unused.
//! - **Framing.** One message is one unidirectional stream, ended by FIN; the receiver reads
//!   at most [`TransportConfig::max_message_bytes`] and stops a longer stream (dropped, counted
//!   in [`TransportStats::oversize_messages`]). A send cancelled midway resets its stream, so a
//!   truncated message is never delivered.
//! - **Delivery.** [`Transport::send`] returns once the receiver's QUIC stack acknowledged every
//!   byte (not that the application processed it). Received messages go into a bounded channel;
//!   when it is full, readers wait, and QUIC flow control pushes back on the senders.
//! - **Floods.** Each connection may have at most
//!   [`TransportConfig::max_streams_per_connection`] streams open towards us (QUIC
//!   `max_concurrent_uni_streams`), and a stream is accepted only while fewer than that many of
//!   the connection's messages, and then read only while fewer than that many of its member's
//!   messages (all connections with its certificate, [`member`]), are being read or wait for
//!   room in the shared channel. So one member holds at most that many of the channel's waiting
//!   places and readers, whatever it sends and over however many connections; the others keep
//!   their turn (tokio's channel serves waiting senders in order). On top of that, each member
//!   has two token buckets, on messages/s and bytes/s, shared by all its connections
//!   ([`TransportConfig::rate_limit_messages`], [`TransportConfig::rate_limit_bytes`], each
//!   with one second of burst). A message over a limit is not delivered: its stream is stopped
//!   with [`CODE_RATE_LIMITED`] and counted in [`TransportStats::messages_rate_limited`].
//!   Nothing legitimate is lost for good: deltas are repaired by anti-entropy, membership is
//!   re-gossiped, and probes are retried.
//! - **Unfinished messages** ([`reader`]). The bytes of messages still being read are taken
//!   from a byte budget of their connection and one of their member (every connection with
//!   the same certificate, [`member`]); a stream that finds a budget spent waits, so QUIC
//!   flow control holds its sender back. A stream not finished within
//!   [`TransportConfig::stream_timeout`] is stopped with [`CODE_TIMED_OUT`] and counted in
//!   [`TransportStats::streams_timed_out`]. A member may have at most
//!   [`TransportConfig::max_connections_per_member`] connections open to this peer; more are
//!   closed with [`CODE_TOO_MANY_CONNECTIONS`]. So one member holds at most its budget plus,
//!   per connection, QUIC's receive window
//!   ([`tls::CONNECTION_RECEIVE_WINDOW_BYTES`]), plus one chunk per stream it has in flight,
//!   whatever it sends.
//! - **Handshakes from strangers** ([`admission`]). Before any certificate is checked, an
//!   incoming connection attempt is admitted only while fewer than
//!   [`TransportConfig::max_handshakes`] handshakes (and fewer than
//!   [`TransportConfig::max_handshakes_per_ip`] from its IP) are in progress; past
//!   [`TransportConfig::handshakes_before_retry`] an unvalidated source gets a QUIC Retry first.
//!   A handshake must complete within [`TransportConfig::handshake_timeout`]. Refusals,
//!   retries and timeouts are counted in [`TransportStats`].
//! - **Revocation** ([`DenyList`]). Both certificate verifiers refuse a certificate on the
//!   transport's deny list ([`tls::CertRefusal::Revoked`]); [`Transport::deny`] adds one and
//!   closes every live connection over it with [`CODE_REVOKED`]. Counted in
//!   [`TransportStats::handshakes_refused_revoked`],
//!   [`TransportStats::connects_refused_revoked`] and
//!   [`TransportStats::connections_closed_revoked`].
//! - **Log lines** that a remote party can cause are throttled: at most one per member (for
//!   members) or per IP address (for strangers) every [`crate::ratelog::LOG_INTERVAL`], with
//!   the count of lines suppressed since.
//! - **Statistics.** UDP counters of live connections are summed on demand; a connection's
//!   final counters are folded into running totals when it closes. Datagrams of handshakes that
//!   never produced a connection (refused peers) are not counted.

mod accept;
pub mod admission;
mod config;
mod connection;
mod deny;
pub mod discovery;
mod error;
mod limits;
pub mod lossy;
mod member;
mod reader;
pub mod signing;
mod stats;
pub mod tls;
mod verify;
mod writer;
use connection::drive_connection;
use writer::write_message;

pub use config::{Congestion, TransportConfig, FALLBACK_BUFFERED_BYTES_PER_CONNECTION};
pub use deny::DenyList;
pub use error::NetError;
pub use signing::{peer_keys, peer_keys_denying, CertSigner, ClusterVerifier};
pub use stats::TransportStats;

use error::ConnectFailure;
use stats::Counters;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use quinn::{AsyncUdpSocket, Connection, Endpoint, EndpointConfig, Runtime, TokioRuntime, VarInt};
use tokio::sync::{mpsc, OnceCell};

use crate::certs::{PeerIdentity, CLUSTER_SERVER_NAME};
use crate::ratelog::RateLimitedLog;

/// Application error code: the endpoint is shutting down.
const CODE_CLOSING: u32 = 0;
/// Application error code on a stream: the message exceeds the receiver's size limit.
pub const CODE_TOO_LARGE: u32 = 1;
/// Application error code on a stream: the sender abandoned the message midway.
pub const CODE_CANCELLED: u32 = 2;
/// Application error code on a stream: the message was over its member's rate limit.
pub const CODE_RATE_LIMITED: u32 = 3;
/// Application error code on a stream: the message was not finished within the receiver's
/// stream timeout.
pub const CODE_TIMED_OUT: u32 = 4;
/// Application error code closing a connection: its member already has as many connections
/// with this peer as allowed.
pub const CODE_TOO_MANY_CONNECTIONS: u32 = 5;
/// Application error code closing a connection: the certificate behind it was revoked (it is
/// on the transport's [`DenyList`]).
pub const CODE_REVOKED: u32 = 6;

/// Upper bound on how long [`Transport::close`] waits for connections to drain, in ms.
const CLOSE_WAIT_MS: u64 = 1000;

/// A message received on one unidirectional stream.
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The connection's remote address: the sender's listen address.
    pub from: SocketAddr,
    /// The name of the member that sent it, for logs: the common name of the certificate its
    /// connection presented ([`member::common_name`] of its leaf). The member itself is `key`.
    pub member: Arc<str>,
    /// The certificate behind the connection: [`KeyId::of`] its peer's leaf certificate (DER),
    /// the one the handshake checked against the cluster CA. A signed record or delta whose
    /// credential has this key id came from the sender itself, not through others.
    ///
    /// [`KeyId::of`]: rumor_proto::auth::KeyId::of
    pub key: rumor_proto::auth::KeyId,
    /// The message, at most [`TransportConfig::max_message_bytes`] bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Incoming {
    /// Shows the sender and the length, not the content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from)
            .field("member", &self.member)
            .field("key", &self.key)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A cache entry: a connection attempt, pending or finished, shared by concurrent senders.
type Slot = Arc<OnceCell<Result<Connection, ConnectFailure>>>;

/// The state shared by the transport handle and its background tasks.
struct Shared {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    config: TransportConfig,
    /// Connection cache by canonical remote address.
    cache: DashMap<SocketAddr, Slot>,
    /// Every live connection, opened or accepted, by `stable_id`.
    live: DashMap<usize, Connection>,
    /// Counters of closed connections. Taken before `live` when both are touched, so a
    /// connection is counted exactly once: either live or folded.
    closed: Mutex<TransportStats>,
    counters: Counters,
    /// Handshakes in progress against their limits.
    admission: admission::HandshakeAdmission,
    /// Connections and shared limits by member (certificate).
    members: Arc<member::MemberTable>,
    /// Throttles log lines a member can cause (rate limits, oversize and unfinished messages),
    /// by certificate.
    member_log: Mutex<RateLimitedLog<rumor_proto::auth::KeyId>>,
    /// Throttles log lines a stranger can cause (refused and failed handshakes), by IP.
    source_log: Mutex<RateLimitedLog<std::net::IpAddr>>,
    incoming: mpsc::Sender<Incoming>,
    /// Drop counters of the loss-injecting socket, when there is one.
    drops: Option<Arc<lossy::LossCounters>>,
    /// Certificates refused at the handshake and cut off when added; shared with the
    /// verifiers.
    deny: DenyList,
}

/// Owned by [`Transport`] handles only (not by background tasks): when the last handle goes,
/// the endpoint closes and the background tasks end.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared
            .endpoint
            .close(VarInt::from_u32(CODE_CLOSING), b"dropped");
    }
}

/// A peer's QUIC transport. Cheap to clone; all clones share one endpoint.
///
/// Dropping the last clone closes the endpoint; [`Transport::close`] does so and waits.
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.handle.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds `addr` (port 0 = ephemeral) and starts accepting connections. Received messages
    /// arrive on the returned channel (capacity [`TransportConfig::incoming_queue`]).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`NetError::Bind`] if the socket cannot be bound; [`NetError::Config`],
    /// [`NetError::Tls`] or [`NetError::Verifier`] if the configuration or identity is unusable.
    pub async fn bind(
        addr: SocketAddr,
        identity: &PeerIdentity,
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
        let socket = TokioRuntime
            .wrap_udp_socket(socket)
            .map_err(|source| NetError::Bind { addr, source })?;
        Self::bind_socket(socket, identity, config).await
    }

    /// Like [`Transport::bind`], with loss injection: the socket drops datagrams as `loss`
    /// says ([`lossy::LossySocket`]) and [`TransportStats`] counts the drops. An inactive
    /// `loss` (all zero) binds the plain socket.
    ///
    /// # Errors
    /// As [`Transport::bind`]; [`NetError::Config`] if a probability is outside [0, 1].
    pub async fn bind_lossy(
        addr: SocketAddr,
        identity: &PeerIdentity,
        config: TransportConfig,
        loss: lossy::LossConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        Self::bind_denying(addr, identity, config, loss, DenyList::new()).await
    }

    /// Like [`Transport::bind_lossy`], refusing the certificates `deny` holds: its verifiers
    /// refuse them at the handshake, now and as the list grows (through this handle's
    /// [`Transport::deny`] or any clone of `deny`; only [`Transport::deny`] also closes the
    /// connections already open).
    ///
    /// # Errors
    /// As [`Transport::bind_lossy`].
    pub async fn bind_denying(
        addr: SocketAddr,
        identity: &PeerIdentity,
        config: TransportConfig,
        loss: lossy::LossConfig,
        deny: DenyList,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
        let inner = TokioRuntime
            .wrap_udp_socket(socket)
            .map_err(|source| NetError::Bind { addr, source })?;
        if !loss.is_active() {
            return Self::bind_inner(inner, identity, config, None, deny).await;
        }
        loss.validate()
            .map_err(|reason| NetError::Config { reason })?;
        let lossy = lossy::LossySocket::new(inner, loss);
        let drops = lossy.counters();
        Self::bind_inner(Arc::new(lossy), identity, config, Some(drops), deny).await
    }

    /// Like [`Transport::bind`], on a socket built by the caller (e.g. a wrapper that drops
    /// datagrams, for loss experiments).
    ///
    /// # Errors
    /// As [`Transport::bind`].
    pub async fn bind_socket(
        socket: Arc<dyn AsyncUdpSocket>,
        identity: &PeerIdentity,
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        Self::bind_inner(socket, identity, config, None, DenyList::new()).await
    }

    async fn bind_inner(
        socket: Arc<dyn AsyncUdpSocket>,
        identity: &PeerIdentity,
        config: TransportConfig,
        drops: Option<Arc<lossy::LossCounters>>,
        deny: DenyList,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        config.validate()?;
        let mut server = tls::server_config_denying(identity, &config, deny.clone())?;
        // Connection attempts waiting for the accept loop, and what they may buffer until
        // then: bounded far below quinn's defaults (65,536 attempts, 100 MB).
        server
            .max_incoming(config.max_handshakes.saturating_mul(2).max(16))
            .incoming_buffer_size(64 * 1024)
            .incoming_buffer_size_total(8 * 1024 * 1024);
        let client = tls::client_config_denying(identity, &config, deny.clone())?;
        let addr = socket.local_addr().map_err(|source| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let mut endpoint = Endpoint::new_with_abstract_socket(
            EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(TokioRuntime),
        )
        .map_err(|source| NetError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| NetError::Bind { addr, source })?;

        let (tx, rx) = mpsc::channel(config.incoming_queue);
        let admission = admission::HandshakeAdmission::new(admission::AdmissionLimits {
            max_handshakes: config.max_handshakes,
            handshakes_before_retry: config.handshakes_before_retry,
            max_handshakes_per_ip: config.max_handshakes_per_ip,
        });
        let members = Arc::new(member::MemberTable::new(&config));
        let shared = Arc::new(Shared {
            endpoint,
            local_addr,
            config,
            cache: DashMap::new(),
            live: DashMap::new(),
            closed: Mutex::new(TransportStats::default()),
            counters: Counters::default(),
            admission,
            members,
            member_log: Mutex::new(RateLimitedLog::new(crate::ratelog::LOG_INTERVAL)),
            source_log: Mutex::new(RateLimitedLog::new(crate::ratelog::LOG_INTERVAL)),
            incoming: tx,
            drops,
            deny,
        });
        tokio::spawn(accept::accept_loop(shared.clone()));
        tracing::debug!(%local_addr, name = %identity.name, "transport bound");
        Ok((
            Transport {
                handle: Arc::new(Handle { shared }),
            },
            rx,
        ))
    }

    /// The address the endpoint listens on (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// Sends one message on a new unidirectional stream of the (cached, reused) connection to
    /// `to`, connecting first if needed. Concurrent sends to the same new address share one
    /// connection attempt. Returns once the receiver's QUIC stack acknowledged all bytes.
    ///
    /// If the cached connection turns out to be closed, one fresh connection is tried.
    /// Cancelling the future resets the stream; the receiver then drops the partial message.
    ///
    /// # Errors
    /// [`NetError::MessageTooLarge`] (nothing sent); [`NetError::Connect`],
    /// [`NetError::Handshake`], [`NetError::ConnectTimeout`] when no connection can be made;
    /// [`NetError::Connection`] when it is lost (also when the receiver refused our
    /// certificate); [`NetError::Stopped`] when the receiver refused the message;
    /// [`NetError::Write`] for other stream failures.
    pub async fn send(&self, to: SocketAddr, bytes: Arc<[u8]>) -> Result<(), NetError> {
        self.send_with_priority(to, bytes, 0).await
    }

    /// [`Transport::send`] on a stream of the given priority: within one connection, quinn
    /// sends data of higher-priority streams first (default 0).
    ///
    /// # Errors
    /// As [`Transport::send`].
    pub async fn send_with_priority(
        &self,
        to: SocketAddr,
        bytes: Arc<[u8]>,
        priority: i32,
    ) -> Result<(), NetError> {
        self.send_to_member(to, None, bytes, priority).await
    }

    /// [`Transport::send_with_priority`], only over a connection whose certificate the member
    /// `member` (when given) is bound to: for a message addressed by what another message
    /// said, so that it cannot be aimed at a third host.
    ///
    /// # Errors
    /// [`NetError::WrongMember`] when the host at `to` holds another certificate (nothing is
    /// sent); otherwise as [`Transport::send`].
    pub async fn send_to_member(
        &self,
        to: SocketAddr,
        member: Option<rumor_proto::PeerId>,
        bytes: Arc<[u8]>,
        priority: i32,
    ) -> Result<(), NetError> {
        let shared = &self.handle.shared;
        let max = shared.config.max_message_bytes;
        if bytes.len() > max {
            return Err(NetError::MessageTooLarge {
                len: bytes.len(),
                max,
            });
        }
        let addr = canonical(to);
        let mut retried = false;
        loop {
            let conn = shared.connection(addr).await?;
            if let Some(member) = member {
                let (_, key) = member::member_identity(&conn);
                if !key.binds(&member) {
                    return Err(NetError::WrongMember { addr });
                }
            }
            match conn.open_uni().await {
                Ok(stream) => {
                    // Fails only on a stream that is already closed; the write then reports it.
                    let _ = stream.set_priority(priority);
                    return write_message(addr, stream, &bytes).await;
                }
                Err(source) if retried => return Err(NetError::Connection { addr, source }),
                Err(source) => {
                    tracing::debug!(%addr, error = %source, "cached connection lost, reconnecting");
                    shared.forget(addr, &conn);
                    retried = true;
                }
            }
        }
    }

    /// Closes the connection to `to`, if any (its pending sends fail), and forgets it; a later
    /// send connects anew. For members that died or left.
    pub fn disconnect(&self, to: SocketAddr) {
        let shared = &self.handle.shared;
        let addr = canonical(to);
        shared.cache.remove(&addr);
        // Both directions: the connection this peer opened and the one it accepted. Their
        // tasks fold the counters when they see the close.
        for conn in shared.live.iter() {
            if canonical(conn.remote_address()) == addr {
                conn.close(VarInt::from_u32(CODE_CLOSING), b"member down");
            }
        }
    }

    /// Denies the certificate with key id `key` (the revocation list calls it `name`): from now
    /// on both verifiers refuse it at the handshake ([`tls::CertRefusal::Revoked`]), and every
    /// live connection over it, opened or accepted, is closed with [`CODE_REVOKED`] (counted in
    /// [`TransportStats::connections_closed_revoked`]). Returns how many connections were
    /// closed. Denying a key again closes whatever got through meanwhile, and nothing else.
    pub fn deny(&self, key: rumor_proto::auth::KeyId, name: &str) -> usize {
        let shared = &self.handle.shared;
        if shared.deny.add(key, name) {
            tracing::info!(member = name, key = %key.short(), "certificate denied");
        }
        let doomed: Vec<Connection> = shared
            .live
            .iter()
            .filter(|conn| member::member_identity(conn).1 == key)
            .map(|conn| conn.clone())
            .collect();
        for conn in &doomed {
            shared.close_revoked(conn);
        }
        doomed.len()
    }

    /// The deny list this transport's verifiers consult (a handle on the same set).
    pub fn deny_list(&self) -> DenyList {
        self.handle.shared.deny.clone()
    }

    /// Transport counters: UDP counters summed over all connections, live and closed, plus
    /// handshake and oversize counts.
    pub fn stats(&self) -> TransportStats {
        self.handle.shared.stats()
    }

    /// Closes all connections and the endpoint, and waits (at most one second) until the
    /// remote peers were told. Later sends fail with [`NetError::Connect`].
    pub async fn close(&self) {
        let shared = &self.handle.shared;
        shared
            .endpoint
            .close(VarInt::from_u32(CODE_CLOSING), b"closing");
        let waited = tokio::time::timeout(
            Duration::from_millis(CLOSE_WAIT_MS),
            shared.endpoint.wait_idle(),
        )
        .await;
        if waited.is_err() {
            tracing::debug!(local_addr = %shared.local_addr, "close: endpoint not idle in time");
        }
        shared.fold_all();
    }
}

impl Shared {
    /// The connection to `addr`: the cached one if alive, else a new (shared) attempt.
    async fn connection(self: &Arc<Self>, addr: SocketAddr) -> Result<Connection, NetError> {
        let slot = match self.cache.entry(addr) {
            Entry::Occupied(mut entry) => {
                let usable = match entry.get().get() {
                    None => true, // an attempt is under way: join it
                    Some(Ok(conn)) => conn.close_reason().is_none(),
                    Some(Err(_)) => false,
                };
                if !usable {
                    entry.insert(Arc::new(OnceCell::new()));
                }
                entry.get().clone()
            }
            Entry::Vacant(entry) => entry.insert(Arc::new(OnceCell::new())).clone(),
        };
        // The map guard is released here, before any await.
        let result = slot.get_or_init(|| self.connect(addr)).await.clone();
        if result.is_err() {
            self.cache.remove_if(&addr, |_, s| Arc::ptr_eq(s, &slot));
        }
        result.map_err(|failure| failure.into_error(addr))
    }

    /// Opens a connection to `addr` and starts serving it.
    async fn connect(self: &Arc<Self>, addr: SocketAddr) -> Result<Connection, ConnectFailure> {
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(ConnectFailure::Connect)?;
        let timeout = self.config.connect_timeout;
        let timeout_ms = timeout.as_millis() as u64;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnectFailure::Timeout(timeout_ms))?
            .map_err(ConnectFailure::Handshake)?;
        tracing::debug!(%addr, "connection opened");
        self.serve(conn.clone(), addr, false);
        Ok(conn)
    }

    /// Drops `conn` from the cache if it is the cached connection to `addr`.
    fn forget(&self, addr: SocketAddr, conn: &Connection) {
        let id = conn.stable_id();
        self.cache.remove_if(
            &addr,
            |_, slot| matches!(slot.get(), Some(Ok(c)) if c.stable_id() == id),
        );
    }

    /// Registers a live connection and spawns the task that accepts its streams. A connection
    /// the remote member opened (`accepted`) is closed instead if its member already has
    /// [`TransportConfig::max_connections_per_member`]; the connection cache must not hold it
    /// then.
    fn serve(self: &Arc<Self>, conn: Connection, addr: SocketAddr, accepted: bool) {
        let (member, key) = member::member_identity(&conn);
        let lease = match self.members.attach(key, accepted) {
            Ok(lease) => lease,
            Err(too_many) => {
                self.counters
                    .connections_refused_per_member
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.member_log(&key) {
                    tracing::warn!(
                        %member,
                        key = %key.short(),
                        %addr,
                        open = too_many.open,
                        suppressed_since_last_log = suppressed,
                        "connection refused: the member has too many connections (logged at \
                         most once per member every {}s)",
                        crate::ratelog::LOG_INTERVAL.as_secs()
                    );
                }
                conn.close(
                    VarInt::from_u32(CODE_TOO_MANY_CONNECTIONS),
                    b"too many connections",
                );
                return;
            }
        };
        if accepted {
            self.cache_accepted(addr, &conn);
        }
        self.live.insert(conn.stable_id(), conn.clone());
        // Checked after the connection is live: a key denied meanwhile is either seen here or
        // finds the connection in `live` ([`Transport::deny`]).
        if self.deny.denied(&key).is_some() {
            self.close_revoked(&conn);
        }
        tokio::spawn(drive_connection(
            self.clone(),
            conn,
            addr,
            member,
            key,
            lease,
        ));
    }

    /// Closes `conn`, whose certificate is denied, with [`CODE_REVOKED`], and counts it. Its
    /// task leaves the cache and folds its counters when it sees the close.
    fn close_revoked(&self, conn: &Connection) {
        if conn.close_reason().is_some() {
            return;
        }
        conn.close(VarInt::from_u32(CODE_REVOKED), b"certificate revoked");
        self.counters
            .connections_closed_revoked
            .fetch_add(1, Ordering::Relaxed);
        let addr = canonical(conn.remote_address());
        self.forget(addr, conn);
        tracing::debug!(%addr, "connection over a revoked certificate closed");
    }

    /// Whether a log line about the member `key` may be written now: `Some(suppressed since
    /// the last one)`, or `None` to stay silent.
    fn member_log(&self, key: &rumor_proto::auth::KeyId) -> Option<u64> {
        self.member_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hit(Instant::now(), key)
    }

    /// Like [`Shared::member_log`], for a source IP that has not authenticated.
    fn source_log(&self, ip: std::net::IpAddr) -> Option<u64> {
        self.source_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hit(Instant::now(), &ip)
    }

    /// Folds the final counters of `conn` into the totals, once.
    fn fold(&self, conn: &Connection) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        if self.live.remove(&conn.stable_id()).is_some() {
            closed.add_connection(&conn.stats());
        }
    }

    /// Folds every live connection (after the endpoint closed).
    fn fold_all(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<usize> = self.live.iter().map(|e| *e.key()).collect();
        for id in ids {
            if let Some((_, conn)) = self.live.remove(&id) {
                closed.add_connection(&conn.stats());
            }
        }
    }

    fn stats(&self) -> TransportStats {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stats = closed.clone();
        for conn in self.live.iter() {
            stats.add_connection(&conn.stats());
        }
        stats.connections_open = self.live.len() as u64;
        drop(closed);
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        stats.handshakes_accepted = load(&c.handshakes_accepted);
        stats.handshakes_rejected = load(&c.handshakes_rejected);
        stats.handshakes_timed_out = load(&c.handshakes_timed_out);
        stats.handshakes_refused_capacity = load(&c.handshakes_refused_capacity);
        stats.handshakes_refused_per_source = load(&c.handshakes_refused_per_source);
        stats.handshake_retries_sent = load(&c.handshake_retries_sent);
        stats.handshakes_in_progress = self.admission.in_progress() as u64;
        stats.connections_refused_per_member = load(&c.connections_refused_per_member);
        stats.streams_timed_out = load(&c.streams_timed_out);
        stats.buffered_bytes = load(&c.buffered_bytes);
        stats.oversize_messages = load(&c.oversize_messages);
        stats.messages_rate_limited = load(&c.messages_rate_limited);
        stats.handshakes_refused_revoked = self.deny.refused_incoming();
        stats.connects_refused_revoked = self.deny.refused_outgoing();
        stats.connections_closed_revoked = load(&c.connections_closed_revoked);
        if let Some(d) = &self.drops {
            stats.datagrams_dropped_out = d.dropped_out.load(Ordering::Relaxed);
            stats.datagrams_dropped_in = d.dropped_in.load(Ordering::Relaxed);
        }
        stats
    }
}

impl Shared {
    /// Puts an accepted connection into the cache unless a live or pending one is there.
    fn cache_accepted(&self, addr: SocketAddr, conn: &Connection) {
        let fresh = || Arc::new(OnceCell::new_with(Some(Ok(conn.clone()))));
        match self.cache.entry(addr) {
            Entry::Occupied(mut entry) => {
                let keep = match entry.get().get() {
                    None => true,
                    Some(Ok(c)) => c.close_reason().is_none(),
                    Some(Err(_)) => false,
                };
                if !keep {
                    entry.insert(fresh());
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(fresh());
            }
        }
    }
}

/// The cache key of an address: IPv4-mapped IPv6 addresses become plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests;
