//! Settings of a transport: QUIC parameters, limits on what peers and strangers may cost, and
//! their validation.

use serde::Serialize;

use super::NetError;

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
    /// ms; else it is stopped with [`CODE_TIMED_OUT`](super::CODE_TIMED_OUT). Default 15000.
    pub stream_timeout_ms: u64,
    /// Bytes of unfinished messages one connection may hold at once, in bytes; a smaller value
    /// than [`TransportConfig::max_message_bytes`] is raised to it. Default 32 MiB.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of unfinished messages all connections of one member may hold at once, in bytes;
    /// a smaller value than [`TransportConfig::max_message_bytes`] is raised to it. Default
    /// 64 MiB.
    pub max_buffered_bytes_per_member: u64,
    /// Connections one member (one certificate name) may open to this peer at once; more are
    /// closed with [`CODE_TOO_MANY_CONNECTIONS`](super::CODE_TOO_MANY_CONNECTIONS). Default 4.
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
