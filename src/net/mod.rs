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
//!   the connection's messages are being read or wait for room in the shared channel. So one
//!   connection holds at most that many of the channel's waiting places and readers, whatever it
//!   sends; the others keep their turn (tokio's channel serves waiting senders in order). On top
//!   of that, each connection has two token buckets, on messages/s and bytes/s
//!   ([`TransportConfig::rate_limit_messages`], [`TransportConfig::rate_limit_bytes`], each
//!   with one second of burst). A message over a limit is not delivered: its stream is stopped
//!   with [`CODE_RATE_LIMITED`] and counted in [`TransportStats::messages_rate_limited`].
//!   Nothing legitimate is lost for good: deltas are repaired by anti-entropy, membership is
//!   re-gossiped, and probes are retried.
//! - **Unfinished messages** ([`reader`]). The bytes of messages still being read are taken
//!   from a byte budget of their connection and one of their member (every connection with
//!   the same certificate name, [`member`]); a stream that finds a budget spent waits, so QUIC
//!   flow control holds its sender back. A stream not finished within
//!   [`TransportConfig::stream_timeout_ms`] is stopped with [`CODE_TIMED_OUT`] and counted in
//!   [`TransportStats::streams_timed_out`]. A member may have at most
//!   [`TransportConfig::max_connections_per_member`] connections open to this peer; more are
//!   closed with [`CODE_TOO_MANY_CONNECTIONS`]. So one member holds at most its budget plus,
//!   per connection, QUIC's receive window
//!   ([`tls::CONNECTION_RECEIVE_WINDOW_BYTES`]) and one chunk per stream, whatever it sends.
//! - **Handshakes from strangers** ([`admission`]). Before any certificate is checked, an
//!   incoming connection attempt is admitted only while fewer than
//!   [`TransportConfig::max_handshakes`] handshakes (and fewer than
//!   [`TransportConfig::max_handshakes_per_ip`] from its IP) are in progress; past
//!   [`TransportConfig::handshakes_before_retry`] an unvalidated source gets a QUIC Retry first.
//!   A handshake must complete within [`TransportConfig::handshake_timeout_ms`]. Refusals,
//!   retries and timeouts are counted in [`TransportStats`].
//! - **Log lines** that a remote party can cause are throttled: at most one per member (for
//!   members) or per IP address (for strangers) every [`crate::ratelog::LOG_INTERVAL`], with
//!   the count of lines suppressed since.
//! - **Statistics.** UDP counters of live connections are summed on demand; a connection's
//!   final counters are folded into running totals when it closes. Datagrams of handshakes that
//!   never produced a connection (refused peers) are not counted.

pub mod admission;
pub mod lossy;
pub mod member;
mod reader;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use quinn::{
    AsyncUdpSocket, Connection, ConnectionError, Endpoint, EndpointConfig, Runtime, SendStream,
    TokioRuntime, VarInt,
};
use serde::Serialize;
use tokio::sync::{mpsc, OnceCell, Semaphore};

use crate::certs::{PeerIdentity, CLUSTER_SERVER_NAME};
use crate::ratelog::RateLimitedLog;

/// Application error code: the endpoint is shutting down.
const CODE_CLOSING: u32 = 0;
/// Application error code on a stream: the message exceeds the receiver's size limit.
pub const CODE_TOO_LARGE: u32 = 1;
/// Application error code on a stream: the sender abandoned the message midway.
pub const CODE_CANCELLED: u32 = 2;
/// Application error code on a stream: the message was over the connection's rate limit.
pub const CODE_RATE_LIMITED: u32 = 3;
/// Application error code on a stream: the message was not finished within the receiver's
/// stream timeout.
pub const CODE_TIMED_OUT: u32 = 4;
/// Application error code closing a connection: its member already has as many connections
/// with this peer as allowed.
pub const CODE_TOO_MANY_CONNECTIONS: u32 = 5;

/// Upper bound on how long [`Transport::close`] waits for connections to drain, in ms.
const CLOSE_WAIT_MS: u64 = 1000;

/// Settings of a [`Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Largest message accepted or sent, in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Time allowed to establish a connection (QUIC + TLS handshake), in ms. Default 5000.
    pub connect_timeout_ms: u64,
    /// Interval of QUIC keep-alive packets on an otherwise silent connection, in ms; 0 disables
    /// them. Default 5000.
    pub keep_alive_ms: u64,
    /// A connection with no packets from the peer for this long is closed, in ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// Capacity of the channel of received messages, in messages (at least 1). Default 1024.
    pub incoming_queue: usize,
    /// QUIC congestion controller. Default [`Congestion::Cubic`] (quinn's default).
    pub congestion: Congestion,
    /// RTT assumed before the first sample, in ms; sets how soon a lost handshake packet is
    /// sent again (3 × this at first). Default 333, RFC 9002 §6.2.2's value for unknown paths.
    pub initial_rtt_ms: u64,
    /// ACK delay requested from the peer through the QUIC ACK frequency extension
    /// (draft-ietf-quic-ack-frequency), in ms; 0 leaves the peer's own (25 ms in quinn).
    /// Default 0.
    pub max_ack_delay_ms: u64,
    /// Streams (messages) one connection may have open towards us, and messages of one
    /// connection being read or waiting for room in the incoming channel, at once. Default 256.
    pub max_streams_per_connection: u32,
    /// Messages per second accepted from one connection, with one second of burst; 0 for no
    /// limit. Default 2000.
    pub rate_limit_messages: u32,
    /// Bytes per second accepted from one connection, with one second of burst; a message is
    /// accepted while the bucket is not empty (so one message of any allowed size passes), and
    /// its length is then taken out. 0 for no limit. Default 128 MiB/s.
    pub rate_limit_bytes: u64,
    /// An incoming handshake not completed within this long is abandoned, in ms. Default 5000.
    pub handshake_timeout_ms: u64,
    /// Incoming handshakes in progress at once; further attempts are refused. Default 256.
    pub max_handshakes: usize,
    /// Incoming handshakes in progress above which a source address that has not been
    /// validated gets a QUIC Retry first. Default 32.
    pub handshakes_before_retry: usize,
    /// Incoming handshakes in progress at once from one IP address. Default 64.
    pub max_handshakes_per_ip: usize,
    /// A received message (stream) must be finished within this long of being accepted, in
    /// ms; else it is stopped with [`CODE_TIMED_OUT`]. Default 15000.
    pub stream_timeout_ms: u64,
    /// Bytes of unfinished messages one connection may hold at once, in bytes; a smaller value
    /// than [`TransportConfig::max_message_bytes`] is raised to it. Default 32 MiB.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of unfinished messages all connections of one member may hold at once, in bytes;
    /// a smaller value than [`TransportConfig::max_message_bytes`] is raised to it. Default
    /// 64 MiB.
    pub max_buffered_bytes_per_member: u64,
    /// Connections one member (one certificate name) may open to this peer at once; more are
    /// closed with [`CODE_TOO_MANY_CONNECTIONS`]. Default 4.
    pub max_connections_per_member: usize,
}

/// QUIC congestion controller (quinn `congestion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default: backs off on every loss, so random (non-congestion)
    /// loss shrinks its window.
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
    /// BBR (quinn's experimental implementation): paces by measured bandwidth and RTT and
    /// does not treat each loss as congestion; suited to lossy links.
    Bbr,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            connect_timeout_ms: 5000,
            keep_alive_ms: 5000,
            idle_timeout_ms: 30_000,
            incoming_queue: 1024,
            congestion: Congestion::Cubic,
            initial_rtt_ms: 333,
            max_ack_delay_ms: 0,
            max_streams_per_connection: 256,
            rate_limit_messages: 2000,
            rate_limit_bytes: 128 * 1024 * 1024,
            handshake_timeout_ms: 5000,
            max_handshakes: 256,
            handshakes_before_retry: 32,
            max_handshakes_per_ip: 64,
            stream_timeout_ms: 15_000,
            max_buffered_bytes_per_connection: 32 * 1024 * 1024,
            max_buffered_bytes_per_member: 64 * 1024 * 1024,
            max_connections_per_member: 4,
        }
    }
}

impl TransportConfig {
    /// Checks the values a transport cannot work with.
    ///
    /// # Errors
    /// [`NetError::Config`] naming the first field that is zero where at least 1 is needed.
    pub fn validate(&self) -> Result<(), NetError> {
        let fail = |reason: String| Err(NetError::Config { reason });
        let at_least_one: [(&str, u64); 7] = [
            ("incoming_queue", self.incoming_queue as u64),
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("max_handshakes", self.max_handshakes as u64),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip as u64),
            (
                "max_connections_per_member",
                self.max_connections_per_member as u64,
            ),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("stream_timeout_ms", self.stream_timeout_ms),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// A message received on one unidirectional stream.
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The connection's remote address: the sender's listen address.
    pub from: SocketAddr,
    /// The member that sent it: the common name of the certificate its connection presented
    /// ([`member::member_name`]).
    pub member: Arc<str>,
    /// The message, at most [`TransportConfig::max_message_bytes`] bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Incoming {
    /// Shows the sender and the length, not the content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from)
            .field("member", &self.member)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Counters of one transport since it was bound.
///
/// UDP counters are summed over all connections, live and closed (quinn `ConnectionStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// UDP payload bytes sent, in bytes.
    pub bytes_sent: u64,
    /// UDP payload bytes received, in bytes.
    pub bytes_received: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Packets declared lost by QUIC loss detection.
    pub lost_packets: u64,
    /// Incoming handshakes that completed (the client's certificate was accepted).
    pub handshakes_accepted: u64,
    /// Incoming handshakes that failed: certificate refused or TLS error.
    pub handshakes_rejected: u64,
    /// Incoming handshakes abandoned after [`TransportConfig::handshake_timeout_ms`].
    pub handshakes_timed_out: u64,
    /// Incoming connection attempts refused before any handshake because
    /// [`TransportConfig::max_handshakes`] were in progress.
    pub handshakes_refused_capacity: u64,
    /// Incoming connection attempts refused before any handshake because their IP address
    /// had [`TransportConfig::max_handshakes_per_ip`] in progress.
    pub handshakes_refused_per_source: u64,
    /// QUIC Retry packets sent to validate a source address (RFC 9000 §8.1.2).
    pub handshake_retries_sent: u64,
    /// Incoming handshakes in progress now.
    pub handshakes_in_progress: u64,
    /// Accepted connections closed because their member already had
    /// [`TransportConfig::max_connections_per_member`].
    pub connections_refused_per_member: u64,
    /// Received streams stopped because they were not finished within
    /// [`TransportConfig::stream_timeout_ms`].
    pub streams_timed_out: u64,
    /// Bytes of unfinished received messages held now, in bytes.
    pub buffered_bytes: u64,
    /// Received streams dropped because they exceeded the message size limit.
    pub oversize_messages: u64,
    /// Received messages dropped because their connection was over its rate limit
    /// (messages/s or bytes/s).
    pub messages_rate_limited: u64,
    /// Connections currently open, opened or accepted.
    pub connections_open: u64,
    /// Datagrams dropped on purpose on send by loss injection ([`lossy`]); 0 without it.
    pub datagrams_dropped_out: u64,
    /// Datagrams dropped on purpose on receive by loss injection ([`lossy`]); 0 without it.
    pub datagrams_dropped_in: u64,
}

impl TransportStats {
    fn add_connection(&mut self, stats: &quinn::ConnectionStats) {
        self.bytes_sent += stats.udp_tx.bytes;
        self.bytes_received += stats.udp_rx.bytes;
        self.datagrams_sent += stats.udp_tx.datagrams;
        self.datagrams_received += stats.udp_rx.datagrams;
        self.lost_packets += stats.path.lost_packets;
    }
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The UDP socket could not be bound or set up.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value is unusable (e.g. a zero queue, an idle timeout out of range).
    #[error("bad transport configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the identity (CA, certificate chain or key) while building a config.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// A message is larger than [`TransportConfig::max_message_bytes`]; nothing was sent.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the message, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// quinn refused to start a connection (e.g. the endpoint is closing, bad address).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::ConnectError,
    },
    /// The handshake failed (peer unreachable, certificate refused by either side, ...).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: ConnectionError,
    },
    /// The handshake did not complete within [`TransportConfig::connect_timeout_ms`].
    #[error("connecting to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout {
        /// The remote address.
        addr: SocketAddr,
        /// The timeout, in ms.
        timeout_ms: u64,
    },
    /// An established connection was lost while sending (closed, reset, timed out, or the
    /// server refused our certificate after our side had finished the handshake).
    #[error("connection to {addr} lost: {source}")]
    Connection {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: ConnectionError,
    },
    /// The receiver stopped the stream, e.g. with [`CODE_TOO_LARGE`]; the message was dropped.
    #[error("{addr} stopped the stream with code {code}")]
    Stopped {
        /// The remote address.
        addr: SocketAddr,
        /// The application error code the receiver gave.
        code: u64,
    },
    /// Writing the stream failed for another reason.
    #[error("writing to {addr} failed: {source}")]
    Write {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::WriteError,
    },
}

/// Why a shared connection attempt failed; cloneable so every waiter gets a copy.
#[derive(Clone, Debug)]
enum ConnectFailure {
    Connect(quinn::ConnectError),
    Handshake(ConnectionError),
    Timeout(u64),
}

impl ConnectFailure {
    fn into_error(self, addr: SocketAddr) -> NetError {
        match self {
            Self::Connect(source) => NetError::Connect { addr, source },
            Self::Handshake(source) => NetError::Handshake { addr, source },
            Self::Timeout(timeout_ms) => NetError::ConnectTimeout { addr, timeout_ms },
        }
    }
}

/// A cache entry: a connection attempt, pending or finished, shared by concurrent senders.
type Slot = Arc<OnceCell<Result<Connection, ConnectFailure>>>;

/// Event counters of a transport; see [`TransportStats`] for their meaning.
#[derive(Default)]
struct Counters {
    handshakes_accepted: AtomicU64,
    handshakes_rejected: AtomicU64,
    handshakes_timed_out: AtomicU64,
    handshakes_refused_capacity: AtomicU64,
    handshakes_refused_per_source: AtomicU64,
    handshake_retries_sent: AtomicU64,
    connections_refused_per_member: AtomicU64,
    streams_timed_out: AtomicU64,
    oversize_messages: AtomicU64,
    messages_rate_limited: AtomicU64,
    /// Shared with every reader's byte holdings.
    buffered_bytes: Arc<AtomicU64>,
}

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
    /// Connections and byte budgets by member.
    members: Arc<member::MemberTable>,
    /// Throttles log lines a member can cause (rate limits, oversize and unfinished messages).
    member_log: Mutex<RateLimitedLog<Arc<str>>>,
    /// Throttles log lines a stranger can cause (refused and failed handshakes), by IP.
    source_log: Mutex<RateLimitedLog<std::net::IpAddr>>,
    incoming: mpsc::Sender<Incoming>,
    /// Drop counters of the loss-injecting socket, when there is one.
    drops: Option<Arc<lossy::LossCounters>>,
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
        if !loss.is_active() {
            return Self::bind(addr, identity, config).await;
        }
        loss.validate()
            .map_err(|reason| NetError::Config { reason })?;
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
        let inner = TokioRuntime
            .wrap_udp_socket(socket)
            .map_err(|source| NetError::Bind { addr, source })?;
        let lossy = lossy::LossySocket::new(inner, loss);
        let drops = lossy.counters();
        Self::bind_inner(Arc::new(lossy), identity, config, Some(drops)).await
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
        Self::bind_inner(socket, identity, config, None).await
    }

    async fn bind_inner(
        socket: Arc<dyn AsyncUdpSocket>,
        identity: &PeerIdentity,
        config: TransportConfig,
        drops: Option<Arc<lossy::LossCounters>>,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        config.validate()?;
        let mut server = tls::server_config(identity, &config)?;
        // Connection attempts waiting for the accept loop, and what they may buffer until
        // then: bounded far below quinn's defaults (65,536 attempts, 100 MB).
        server
            .max_incoming(config.max_handshakes.saturating_mul(2).max(16))
            .incoming_buffer_size(64 * 1024)
            .incoming_buffer_size_total(8 * 1024 * 1024);
        let client = tls::client_config(identity, &config)?;
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
        let members = Arc::new(member::MemberTable::new(
            config.max_connections_per_member,
            config
                .max_buffered_bytes_per_member
                .max(config.max_message_bytes as u64),
        ));
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
        });
        tokio::spawn(accept_loop(shared.clone()));
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
        let timeout_ms = self.config.connect_timeout_ms;
        let conn = tokio::time::timeout(Duration::from_millis(timeout_ms), connecting)
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
        let member = member::member_name(&conn);
        let lease = match self.members.attach(&member, accepted) {
            Ok(lease) => lease,
            Err(too_many) => {
                self.counters
                    .connections_refused_per_member
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.member_log(&member) {
                    tracing::warn!(
                        %member,
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
        tokio::spawn(drive_connection(self.clone(), conn, addr, member, lease));
    }

    /// Whether a log line about `member` may be written now: `Some(suppressed since the last
    /// one)`, or `None` to stay silent.
    fn member_log(&self, member: &Arc<str>) -> Option<u64> {
        self.member_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hit(Instant::now(), member)
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
        if let Some(d) = &self.drops {
            stats.datagrams_dropped_out = d.dropped_out.load(Ordering::Relaxed);
            stats.datagrams_dropped_in = d.dropped_in.load(Ordering::Relaxed);
        }
        stats
    }
}

/// Accepts incoming connections until the endpoint closes. Each attempt is first admitted,
/// retried or refused ([`admission`]); an admitted handshake runs in its own task, bounded by
/// the handshake timeout.
async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let remote = incoming.remote_address();
        let decision = shared.admission.admit(
            remote.ip(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        match decision {
            admission::Admission::Accept(ticket) => {
                tokio::spawn(handshake(shared.clone(), incoming, ticket));
            }
            admission::Admission::Retry => {
                if incoming.retry().is_ok() {
                    shared
                        .counters
                        .handshake_retries_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
                // An attempt that cannot be retried was refused by quinn inside `retry`.
            }
            admission::Admission::Refuse(reason) => {
                incoming.refuse();
                let counter = match reason {
                    admission::Refusal::Capacity => &shared.counters.handshakes_refused_capacity,
                    admission::Refusal::PerSource => &shared.counters.handshakes_refused_per_source,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.source_log(remote.ip()) {
                    tracing::warn!(
                        %remote,
                        reason = reason.as_str(),
                        in_progress = shared.admission.in_progress(),
                        suppressed_since_last_log = suppressed,
                        "incoming connection refused before its handshake: too many handshakes \
                         in progress (logged at most once per IP every {}s)",
                        crate::ratelog::LOG_INTERVAL.as_secs()
                    );
                }
            }
        }
    }
    tracing::debug!(local_addr = %shared.local_addr, "accept loop ended");
}

/// Runs one admitted handshake to its end, within the handshake timeout; the ticket holds its
/// admission places until then. An abandoned handshake's state is freed when `connecting` is
/// dropped.
async fn handshake(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    ticket: admission::AdmissionTicket,
) {
    let remote = incoming.remote_address();
    let timeout = Duration::from_millis(shared.config.handshake_timeout_ms);
    let outcome = match incoming.accept() {
        Ok(connecting) => tokio::time::timeout(timeout, connecting).await,
        Err(error) => Ok(Err(error)),
    };
    drop(ticket);
    match outcome {
        Ok(Ok(conn)) => {
            shared
                .counters
                .handshakes_accepted
                .fetch_add(1, Ordering::Relaxed);
            let addr = canonical(conn.remote_address());
            tracing::debug!(%addr, "connection accepted");
            shared.serve(conn, addr, true);
        }
        Ok(Err(error)) => {
            shared
                .counters
                .handshakes_rejected
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.source_log(remote.ip()) {
                tracing::info!(
                    %remote,
                    %error,
                    suppressed_since_last_log = suppressed,
                    "incoming handshake refused (logged at most once per IP every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                );
            }
        }
        Err(_) => {
            shared
                .counters
                .handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.source_log(remote.ip()) {
                tracing::info!(
                    %remote,
                    timeout_ms = shared.config.handshake_timeout_ms,
                    suppressed_since_last_log = suppressed,
                    "incoming handshake not completed in time, abandoned (logged at most once \
                     per IP every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                );
            }
        }
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

/// Accepts the unidirectional streams of one connection (opened or accepted) until it closes,
/// then removes it from the cache and folds its counters. The member lease is held until then.
async fn drive_connection(
    shared: Arc<Shared>,
    conn: Connection,
    addr: SocketAddr,
    member: Arc<str>,
    lease: member::MemberLease,
) {
    let limits = Arc::new(reader::ConnectionLimits {
        member,
        limiter: Mutex::new(reader::RateLimiter::new(&shared.config, Instant::now())),
        budget: reader::ByteBudget::new(
            shared
                .config
                .max_buffered_bytes_per_connection
                .max(shared.config.max_message_bytes as u64),
        ),
        member_budget: lease.budget.clone(),
    });
    let in_flight = Arc::new(Semaphore::new(
        shared.config.max_streams_per_connection as usize,
    ));
    loop {
        // A stream is accepted only while the connection has a free in-flight place; until
        // then the sender's further streams wait in QUIC flow control.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        match conn.accept_uni().await {
            Ok(stream) => {
                let reader = reader::Reader {
                    shared: shared.clone(),
                    from: addr,
                    limits: limits.clone(),
                    _permit: permit,
                };
                tokio::spawn(reader.read(stream));
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "connection closed");
                break;
            }
        }
    }
    shared.forget(addr, &conn);
    shared.fold(&conn);
    drop(lease);
}

/// Resets the stream if dropped before the message was completely written, so the receiver
/// never takes a truncated message for a whole one (quinn finishes a dropped stream).
struct StreamGuard {
    stream: SendStream,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            // Fails only if the stream is already closed or reset: nothing left to do.
            let _ = self.stream.reset(VarInt::from_u32(CODE_CANCELLED));
        }
    }
}

/// Writes `bytes` on `stream`, finishes it and waits for the receiver's acknowledgement.
async fn write_message(addr: SocketAddr, stream: SendStream, bytes: &[u8]) -> Result<(), NetError> {
    let mut guard = StreamGuard {
        stream,
        finished: false,
    };
    guard
        .stream
        .write_all(bytes)
        .await
        .map_err(|e| write_error(addr, e))?;
    guard
        .stream
        .finish()
        .map_err(|_| write_error(addr, quinn::WriteError::ClosedStream))?;
    guard.finished = true;
    match guard.stream.stopped().await {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(NetError::Stopped {
            addr,
            code: code.into_inner(),
        }),
        Err(e) => Err(write_error(addr, e.into())),
    }
}

fn write_error(addr: SocketAddr, error: quinn::WriteError) -> NetError {
    match error {
        quinn::WriteError::Stopped(code) => NetError::Stopped {
            addr,
            code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(source) => NetError::Connection { addr, source },
        source => NetError::Write { addr, source },
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
mod tests {
    use super::*;
    use crate::certs::{init_ca, issue, issue_with, load_identity, IssueOptions};
    use tokio::time::{timeout, Instant};

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Upper bound of every wait in these tests.
    const WAIT: Duration = Duration::from_secs(20);

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A fresh cluster CA in a temporary directory with one identity per name.
    fn cluster(
        names: &[&str],
    ) -> Result<(tempfile::TempDir, Vec<PeerIdentity>), Box<dyn std::error::Error + Send + Sync>>
    {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        let mut ids = Vec::new();
        for name in names {
            issue(dir.path(), name, 1)?;
            ids.push(load_identity(dir.path(), name)?);
        }
        Ok((dir, ids))
    }

    async fn bind(
        id: &PeerIdentity,
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        Transport::bind(localhost(), id, config).await
    }

    async fn recv(
        rx: &mut mpsc::Receiver<Incoming>,
    ) -> Result<Incoming, Box<dyn std::error::Error + Send + Sync>> {
        timeout(WAIT, rx.recv())
            .await?
            .ok_or_else(|| "incoming channel closed".into())
    }

    async fn send(
        t: &Transport,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        timeout(WAIT, t.send(to, Arc::from(bytes))).await??;
        Ok(())
    }

    /// Polls `condition` every 10 ms until it holds or [`WAIT`] passes.
    async fn wait_for(what: &str, condition: impl Fn() -> bool) -> TestResult {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exchange_both_ways_over_one_connection() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let (a, mut a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;

        send(&a, b.local_addr(), b"hello").await?;
        let got = recv(&mut b_rx).await?;
        assert_eq!(
            got.from,
            a.local_addr(),
            "remote address is the listen address"
        );
        assert_eq!(got.bytes, b"hello");

        // B replies to the address it saw: the accepted connection is reused.
        send(&b, got.from, b"hi back").await?;
        let got = recv(&mut a_rx).await?;
        assert_eq!(got.from, b.local_addr());
        assert_eq!(got.bytes, b"hi back");

        for i in 0..5u8 {
            send(&a, b.local_addr(), &[i]).await?;
            send(&b, a.local_addr(), &[i]).await?;
            assert_eq!(recv(&mut b_rx).await?.bytes, [i]);
            assert_eq!(recv(&mut a_rx).await?.bytes, [i]);
        }

        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.connections_open, 1);
        assert_eq!(sb.connections_open, 1);
        assert_eq!(sa.handshakes_accepted, 0, "A never accepted a connection");
        assert_eq!(sb.handshakes_accepted, 1);
        assert_eq!(sb.handshakes_rejected, 0);
        assert!(sa.bytes_sent > 0 && sa.bytes_received > 0);
        assert!(sa.datagrams_sent > 0 && sb.datagrams_received > 0);

        // Closing folds the counters of closed connections into the totals.
        a.close().await;
        let after = a.stats();
        assert_eq!(after.connections_open, 0);
        assert!(after.bytes_sent >= sa.bytes_sent);
        wait_for("B to see the close", || b.stats().connections_open == 0).await?;
        assert!(b.stats().bytes_received >= sb.bytes_received);
        assert!(
            timeout(WAIT, a.send(b.local_addr(), Arc::from(&b"late"[..])))
                .await?
                .is_err()
        );
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_share_one_connection() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;
        let to = b.local_addr();
        let sends: Vec<_> = (0..20u8)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move { a.send(to, Arc::from(&[i][..])).await })
            })
            .collect();
        for handle in sends {
            timeout(WAIT, handle).await???;
        }
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(recv(&mut b_rx).await?.bytes[0]);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20u8).collect::<Vec<_>>());
        assert_eq!(b.stats().handshakes_accepted, 1);
        assert_eq!(a.stats().connections_open, 1);
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_messages_of_400_kb_arrive_intact() -> TestResult {
        const COUNT: usize = 100;
        const LEN: usize = 400 * 1024;
        let (_dir, ids) = cluster(&["a", "b"])?;
        let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;

        let message = |i: usize| -> Vec<u8> {
            (0..LEN)
                .map(|j| (i.wrapping_mul(131) ^ j.wrapping_mul(7)) as u8)
                .collect()
        };
        let to = b.local_addr();
        let sender = {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..COUNT {
                    let mut bytes = message(i);
                    bytes[..4].copy_from_slice(&(i as u32).to_le_bytes());
                    a.send(to, Arc::from(bytes)).await?;
                }
                Ok::<(), NetError>(())
            })
        };
        let mut seen = [false; COUNT];
        for _ in 0..COUNT {
            let got = recv(&mut b_rx).await?;
            assert_eq!(got.bytes.len(), LEN);
            let i = u32::from_le_bytes([got.bytes[0], got.bytes[1], got.bytes[2], got.bytes[3]])
                as usize;
            assert!(i < COUNT && !seen[i], "unexpected or duplicate message {i}");
            seen[i] = true;
            assert!(got.bytes[4..] == message(i)[4..], "message {i} corrupted");
        }
        timeout(WAIT, sender).await???;
        assert!(b.stats().bytes_received > (COUNT * LEN) as u64);
        assert_eq!(b.stats().connections_open, 1);
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_over_the_rate_limit_are_dropped_and_counted() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        let limited = TransportConfig {
            rate_limit_messages: 5,
            ..TransportConfig::default()
        };
        let (b, mut b_rx) = bind(&ids[1], limited).await?;
        let to = b.local_addr();
        let mut refused = 0;
        for i in 0..50u8 {
            match timeout(WAIT, a.send(to, Arc::from(&[i][..]))).await? {
                Ok(()) => {}
                Err(NetError::Stopped { code, .. }) if code == u64::from(CODE_RATE_LIMITED) => {
                    refused += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        let limited = b.stats().messages_rate_limited;
        // 5 tokens of burst, then 5/s: unless the 50 sends took over 5 s, at least 20 fail.
        assert!(
            limited >= 20,
            "only {limited} of 50 messages were rate-limited"
        );
        assert!(refused <= limited);
        let mut delivered = 0;
        while delivered + limited < 50 {
            recv(&mut b_rx).await?;
            delivered += 1;
        }
        assert_eq!(b.stats().messages_rate_limited, limited);
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversize_message_is_dropped_and_counted() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        let small = TransportConfig {
            max_message_bytes: 64 * 1024,
            ..TransportConfig::default()
        };
        let (b, mut b_rx) = bind(&ids[1], small.clone()).await?;

        let big = vec![7u8; 100 * 1024];
        // The receiver's QUIC stack may acknowledge every byte before the reader sees the
        // stream is too long, so the sender learns of the refusal only sometimes.
        let result = timeout(WAIT, a.send(b.local_addr(), Arc::from(big))).await?;
        assert!(
            match &result {
                Ok(()) => true,
                Err(NetError::Stopped { code, .. }) => *code == u64::from(CODE_TOO_LARGE),
                Err(_) => false,
            },
            "{result:?}"
        );
        wait_for("the oversize count", || b.stats().oversize_messages == 1).await?;

        send(&a, b.local_addr(), b"normal").await?;
        assert_eq!(recv(&mut b_rx).await?.bytes, b"normal");
        assert!(
            b_rx.try_recv().is_err(),
            "the oversize message was delivered"
        );
        assert_eq!(b.stats().oversize_messages, 1);
        assert_eq!(b.stats().connections_open, 1, "the connection survives");

        // A sender refuses a message over its own limit without touching the network.
        let result = b
            .send(a.local_addr(), Arc::from(vec![0u8; 64 * 1024 + 1]))
            .await;
        assert!(
            matches!(result, Err(NetError::MessageTooLarge { .. })),
            "{result:?}"
        );
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connection_closes_and_next_send_reconnects() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let config = TransportConfig {
            idle_timeout_ms: 300,
            keep_alive_ms: 0,
            ..TransportConfig::default()
        };
        let (a, _a_rx) = bind(&ids[0], config.clone()).await?;
        let (b, mut b_rx) = bind(&ids[1], config).await?;
        send(&a, b.local_addr(), b"one").await?;
        assert_eq!(recv(&mut b_rx).await?.bytes, b"one");
        wait_for("the idle timeout", || {
            a.stats().connections_open == 0 && b.stats().connections_open == 0
        })
        .await?;
        send(&a, b.local_addr(), b"two").await?;
        assert_eq!(recv(&mut b_rx).await?.bytes, b"two");
        assert_eq!(b.stats().handshakes_accepted, 2);
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_peer_fails_every_waiter() -> TestResult {
        let (_dir, ids) = cluster(&["a"])?;
        let config = TransportConfig {
            connect_timeout_ms: 300,
            ..TransportConfig::default()
        };
        let (a, _a_rx) = bind(&ids[0], config).await?;
        // A bound UDP socket that never answers.
        let silent = std::net::UdpSocket::bind(localhost())?;
        let to = silent.local_addr()?;
        let (r1, r2) = timeout(WAIT, async {
            tokio::join!(
                a.send(to, Arc::from(&b"x"[..])),
                a.send(to, Arc::from(&b"y"[..])),
            )
        })
        .await?;
        assert!(matches!(r1, Err(NetError::ConnectTimeout { .. })), "{r1:?}");
        assert!(matches!(r2, Err(NetError::ConnectTimeout { .. })), "{r2:?}");
        assert!(a.handle.shared.cache.is_empty(), "failed attempt forgotten");
        a.close().await;
        Ok(())
    }

    /// Binds a server with `server` and a client with `client`; the client's message must not
    /// be delivered and the server must count a refused handshake.
    async fn assert_refused(server: &PeerIdentity, client: &PeerIdentity) -> TestResult {
        let (s, mut s_rx) = bind(server, TransportConfig::default()).await?;
        let (c, _c_rx) = bind(client, TransportConfig::default()).await?;
        let result = timeout(WAIT, c.send(s.local_addr(), Arc::from(&b"let me in"[..]))).await?;
        assert!(result.is_err(), "send to a refusing server succeeded");
        wait_for("the server's refusal", || {
            s.stats().handshakes_rejected >= 1
        })
        .await?;
        let stats = s.stats();
        assert_eq!(stats.handshakes_accepted, 0);
        assert_eq!(stats.connections_open, 0);
        assert!(
            s_rx.try_recv().is_err(),
            "a refused peer delivered a message"
        );
        c.close().await;
        s.close().await;
        assert!(
            s_rx.try_recv().is_err(),
            "a refused peer delivered a message"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn certificate_from_another_ca_is_refused() -> TestResult {
        let (_dir, ids) = cluster(&["server"])?;
        let (_other_dir, others) = cluster(&["stranger"])?;
        // The stranger knows and trusts the cluster CA (it is public) but its own certificate
        // comes from another CA: its connect() completes, the server's verdict is what counts.
        let stranger = PeerIdentity {
            ca: ids[0].ca.clone(),
            ..others[0].clone()
        };
        assert_refused(&ids[0], &stranger).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_certificate_is_refused() -> TestResult {
        let (dir, ids) = cluster(&["server"])?;
        issue_with(
            dir.path(),
            "expired",
            30,
            IssueOptions {
                not_after_days_ago: Some(1),
                ..IssueOptions::default()
            },
        )?;
        let expired = load_identity(dir.path(), "expired")?;
        assert_refused(&ids[0], &expired).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn certificate_without_client_auth_is_refused() -> TestResult {
        let (dir, ids) = cluster(&["server"])?;
        issue_with(
            dir.path(),
            "server-only",
            30,
            IssueOptions {
                client_auth: false,
                ..IssueOptions::default()
            },
        )?;
        let server_only = load_identity(dir.path(), "server-only")?;
        assert_refused(&ids[0], &server_only).await
    }

    /// A quinn client with `id`'s certificate, connected to `to`.
    async fn raw_client(
        id: &PeerIdentity,
        to: SocketAddr,
    ) -> Result<(Endpoint, Connection), Box<dyn std::error::Error + Send + Sync>> {
        let endpoint = Endpoint::client(localhost())?;
        let config = tls::client_config(id, &TransportConfig::default())?;
        let conn = timeout(
            WAIT,
            endpoint.connect_with(config, to, CLUSTER_SERVER_NAME)?,
        )
        .await??;
        Ok((endpoint, conn))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_threshold_handshakes_are_retried_and_still_connect() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let retry_all = TransportConfig {
            handshakes_before_retry: 0,
            ..TransportConfig::default()
        };
        let (b, mut b_rx) = bind(&ids[1], retry_all).await?;
        let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
        send(&a, b.local_addr(), b"after a retry").await?;
        assert_eq!(recv(&mut b_rx).await?.bytes, b"after a retry");
        let stats = b.stats();
        assert_eq!(stats.handshake_retries_sent, 1, "{stats:?}");
        assert_eq!(stats.handshakes_accepted, 1);
        assert_eq!(stats.handshakes_in_progress, 0);
        a.close().await;
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_message_is_stopped_at_the_stream_timeout() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let quick = TransportConfig {
            stream_timeout_ms: 300,
            ..TransportConfig::default()
        };
        let (b, mut b_rx) = bind(&ids[1], quick).await?;
        let (_endpoint, conn) = raw_client(&ids[0], b.local_addr()).await?;
        let mut stream = conn.open_uni().await?;
        stream.write_all(&[1u8; 10_000]).await?;
        // Never finished: the receiver stops it, and the sender learns the code.
        let code = timeout(WAIT, stream.stopped()).await??;
        assert_eq!(code, Some(VarInt::from_u32(CODE_TIMED_OUT)));
        let stats = b.stats();
        assert_eq!(stats.streams_timed_out, 1);
        assert_eq!(stats.buffered_bytes, 0, "its bytes were given back");
        assert!(b_rx.try_recv().is_err(), "nothing was delivered");
        // The connection still carries finished messages.
        let mut next = conn.open_uni().await?;
        next.write_all(b"whole").await?;
        next.finish()?;
        let got = recv(&mut b_rx).await?;
        assert_eq!(got.bytes, b"whole");
        assert_eq!(&*got.member, "a", "the member is the certificate's name");
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_gets_no_more_connections_than_allowed() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b", "c"])?;
        let one_each = TransportConfig {
            max_connections_per_member: 1,
            ..TransportConfig::default()
        };
        let (b, mut b_rx) = bind(&ids[1], one_each).await?;
        let (_e1, first) = raw_client(&ids[0], b.local_addr()).await?;
        let (_e2, second) = raw_client(&ids[0], b.local_addr()).await?;
        let closed = timeout(WAIT, second.closed()).await?;
        assert!(
            matches!(
                &closed,
                ConnectionError::ApplicationClosed(c)
                    if c.error_code == VarInt::from_u32(CODE_TOO_MANY_CONNECTIONS)
            ),
            "{closed:?}"
        );
        assert_eq!(b.stats().connections_refused_per_member, 1);
        // The first connection, and another member, are unaffected.
        let (_e3, other) = raw_client(&ids[2], b.local_addr()).await?;
        for conn in [&first, &other] {
            let mut s = conn.open_uni().await?;
            s.write_all(b"hello").await?;
            s.finish()?;
            assert_eq!(recv(&mut b_rx).await?.bytes, b"hello");
        }
        b.close().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_holds_no_more_unfinished_bytes_than_its_budget() -> TestResult {
        let (_dir, ids) = cluster(&["a", "b"])?;
        let budget = 256 * 1024;
        let small = TransportConfig {
            max_message_bytes: budget as usize,
            max_buffered_bytes_per_connection: budget,
            max_buffered_bytes_per_member: budget,
            stream_timeout_ms: 60_000,
            ..TransportConfig::default()
        };
        let (b, _b_rx) = bind(&ids[1], small).await?;
        let (_endpoint, conn) = raw_client(&ids[0], b.local_addr()).await?;
        // Eight streams of 200 KB each, never finished: 1.6 MB offered, 256 KiB held.
        let mut streams = Vec::new();
        for _ in 0..8 {
            let mut s = conn.open_uni().await?;
            let _ = timeout(Duration::from_millis(500), s.write_all(&[0u8; 200_000])).await;
            streams.push(s);
        }
        wait_for("the budget to fill", || {
            b.stats().buffered_bytes + 64 * 1024 > budget
        })
        .await?;
        let held = b.stats().buffered_bytes;
        assert!(held <= budget, "{held} bytes held, budget {budget}");
        // Giving up the streams gives the bytes back.
        for mut s in streams {
            s.reset(VarInt::from_u32(0))?;
        }
        wait_for("the bytes to come back", || b.stats().buffered_bytes == 0).await?;
        b.close().await;
        Ok(())
    }

    #[test]
    fn canonical_folds_mapped_addresses() -> Result<(), std::net::AddrParseError> {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9000".parse()?;
        assert_eq!(canonical(mapped), SocketAddr::from(([127, 0, 0, 1], 9000)));
        let v6: SocketAddr = "[::1]:9000".parse()?;
        assert_eq!(canonical(v6), v6);
        Ok(())
    }
}
