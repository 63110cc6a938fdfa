//! Counters of a transport: UDP traffic summed over connections, and every refusal and limit
//! the transport applied.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::Serialize;

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
    /// Incoming handshakes abandoned after [`TransportConfig::handshake_timeout`](super::TransportConfig::handshake_timeout).
    pub handshakes_timed_out: u64,
    /// Incoming connection attempts refused before any handshake because
    /// [`TransportConfig::max_handshakes`](super::TransportConfig::max_handshakes) were in progress.
    pub handshakes_refused_capacity: u64,
    /// Incoming connection attempts refused before any handshake because their IP address
    /// had [`TransportConfig::max_handshakes_per_ip`](super::TransportConfig::max_handshakes_per_ip) in progress.
    pub handshakes_refused_per_source: u64,
    /// QUIC Retry packets sent to validate a source address (RFC 9000 §8.1.2).
    pub handshake_retries_sent: u64,
    /// Incoming handshakes in progress now.
    pub handshakes_in_progress: u64,
    /// Accepted connections closed because their member already had
    /// [`TransportConfig::max_connections_per_member`](super::TransportConfig::max_connections_per_member).
    pub connections_refused_per_member: u64,
    /// Received streams stopped because they were not finished within
    /// [`TransportConfig::stream_timeout`](super::TransportConfig::stream_timeout).
    pub streams_timed_out: u64,
    /// Bytes of unfinished received messages held now, in bytes.
    pub buffered_bytes: u64,
    /// Received streams dropped because they exceeded the message size limit.
    pub oversize_messages: u64,
    /// Received messages dropped because their member (all connections with its certificate)
    /// was over its rate limit (messages/s or bytes/s).
    pub messages_rate_limited: u64,
    /// Incoming handshakes refused because the client's certificate is revoked (on the deny
    /// list); also counted in `handshakes_rejected`.
    pub handshakes_refused_revoked: u64,
    /// Outgoing connection attempts refused because the server's certificate is revoked.
    pub connects_refused_revoked: u64,
    /// Live connections closed because their certificate was revoked (or was found revoked
    /// as the connection opened), with [`CODE_REVOKED`](super::CODE_REVOKED).
    pub connections_closed_revoked: u64,
    /// Connections currently open, opened or accepted.
    pub connections_open: u64,
    /// Datagrams dropped on purpose on send by loss injection ([`lossy`](super::lossy)); 0 without it.
    pub datagrams_dropped_out: u64,
    /// Datagrams dropped on purpose on receive by loss injection ([`lossy`](super::lossy)); 0 without it.
    pub datagrams_dropped_in: u64,
}

impl TransportStats {
    pub(super) fn add_connection(&mut self, stats: &quinn::ConnectionStats) {
        self.bytes_sent += stats.udp_tx.bytes;
        self.bytes_received += stats.udp_rx.bytes;
        self.datagrams_sent += stats.udp_tx.datagrams;
        self.datagrams_received += stats.udp_rx.datagrams;
        self.lost_packets += stats.path.lost_packets;
    }
}

/// Event counters of a transport; see [`TransportStats`] for their meaning.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) handshakes_accepted: AtomicU64,
    pub(super) handshakes_rejected: AtomicU64,
    pub(super) handshakes_timed_out: AtomicU64,
    pub(super) handshakes_refused_capacity: AtomicU64,
    pub(super) handshakes_refused_per_source: AtomicU64,
    pub(super) handshake_retries_sent: AtomicU64,
    pub(super) connections_refused_per_member: AtomicU64,
    pub(super) streams_timed_out: AtomicU64,
    pub(super) oversize_messages: AtomicU64,
    pub(super) messages_rate_limited: AtomicU64,
    pub(super) connections_closed_revoked: AtomicU64,
    /// Shared with every reader's byte holdings.
    pub(super) buffered_bytes: Arc<AtomicU64>,
}
