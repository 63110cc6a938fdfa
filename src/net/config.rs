//! Settings of a transport: QUIC parameters, limits on what peers and strangers may cost, and
//! their validation.
//!
//! [`TransportConfig`] is also the `[transport]` section of the configuration file as it is:
//! keys are the field names, durations take units ("333ms", "5s"), absent keys keep the
//! defaults below and unknown keys are errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NetError;

/// The byte budget of unfinished messages of one connection of a transport whose
/// `max_buffered_bytes_per_connection` is 0, in bytes: 32 MiB (a configuration file's 0 is
/// derived from the model before the transport sees it).
pub const FALLBACK_BUFFERED_BYTES_PER_CONNECTION: u64 = 32 * 1024 * 1024;

/// Settings of a [`Transport`](super::Transport), and of the node's sender
/// (`max_inflight_per_peer`, `send_timeout`), which sends over it.
///
/// One field is not a key of the `[transport]` section: `max_message_bytes` is
/// `gossip.max_message_bytes`, filled in by `Config::transport_config`, which also replaces a
/// per-connection byte budget of 0 by one derived from the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest message accepted or sent, in bytes. Default 16 MiB.
    #[serde(skip)]
    pub max_message_bytes: usize,
    /// Time allowed to establish a connection (QUIC + TLS handshake). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Interval of QUIC keep-alive packets on an otherwise silent connection; zero disables
    /// them. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// A connection with no packets from the peer for this long is closed. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Capacity of the channel of received messages, in messages (at least 1). Default 1024.
    pub incoming_queue: usize,
    /// Deltas and snapshots the node's sender has in flight at once to one destination, in
    /// messages; past that a send is dropped and counted (anti-entropy repairs it). Control
    /// messages are not limited. Not used by the transport itself. Default 16.
    pub max_inflight_per_peer: usize,
    /// A send of the node's sender not acknowledged after this long is abandoned (its stream
    /// reset). Not used by the transport itself. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// QUIC congestion controller. Default [`Congestion::Cubic`] (quinn's default).
    pub congestion: Congestion,
    /// RTT assumed before the first sample (at least 1 ms is used); sets how soon a lost
    /// handshake packet is sent again (3 × this at first). Default 333 ms, RFC 9002 §6.2.2's
    /// value for unknown paths.
    #[serde(with = "humantime_serde")]
    pub initial_rtt: Duration,
    /// ACK delay requested from the peer through the QUIC ACK frequency extension
    /// (draft-ietf-quic-ack-frequency); zero leaves the peer's own (25 ms in quinn). Default 0.
    #[serde(with = "humantime_serde")]
    pub max_ack_delay: Duration,
    /// Streams (messages) one connection may have open towards us (QUIC
    /// `max_concurrent_uni_streams`), and messages being read or waiting for room in the
    /// incoming channel at once: of one connection, and of one member (certificate) over all
    /// its connections together. Default 256.
    pub max_streams_per_connection: u32,
    /// Messages per second accepted from one member (certificate), all its connections
    /// together, with one second of burst; 0 for no limit. Default 2000.
    pub rate_limit_messages: u32,
    /// Bytes per second accepted from one member (certificate), all its connections together,
    /// with one second of burst; a message is accepted while the bucket is not empty (so one
    /// message of any allowed size passes), and its length is then taken out. 0 for no limit.
    /// Default 128 MiB/s.
    pub rate_limit_bytes: u64,
    /// An incoming handshake not completed within this long is abandoned. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Incoming handshakes in progress at once; further attempts are refused. Default 256.
    pub max_handshakes: usize,
    /// Incoming handshakes in progress above which a source address that has not been
    /// validated gets a QUIC Retry first. Default 32.
    pub handshakes_before_retry: usize,
    /// Incoming handshakes in progress at once from one IP address. Default 64.
    pub max_handshakes_per_ip: usize,
    /// A received message (stream) must be finished within this long of being accepted; else
    /// it is stopped with [`CODE_TIMED_OUT`](super::CODE_TIMED_OUT). Default 15 s.
    #[serde(with = "humantime_serde")]
    pub stream_timeout: Duration,
    /// Bytes of unfinished messages one connection may hold at once, in bytes; a smaller value
    /// than [`TransportConfig::max_message_bytes`] is raised to it. 0 (the default): derived
    /// from the model by `Config::transport_config`; a transport given 0 uses
    /// [`FALLBACK_BUFFERED_BYTES_PER_CONNECTION`] ([`TransportConfig::buffered_bytes_budgets`]).
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of unfinished messages all connections of one member (certificate) may hold at
    /// once, in bytes; a smaller value than [`TransportConfig::max_message_bytes`] is raised to
    /// it. 0 (the default): twice the per-connection budget.
    pub max_buffered_bytes_per_member: u64,
    /// Connections one member (one certificate) may open to this peer at once; more are
    /// closed with [`CODE_TOO_MANY_CONNECTIONS`](super::CODE_TOO_MANY_CONNECTIONS). Default 4.
    pub max_connections_per_member: usize,
}

/// QUIC congestion controller (quinn `congestion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
            connect_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            incoming_queue: 1024,
            max_inflight_per_peer: 16,
            send_timeout: Duration::from_secs(10),
            congestion: Congestion::Cubic,
            initial_rtt: Duration::from_millis(333),
            max_ack_delay: Duration::ZERO,
            max_streams_per_connection: 256,
            rate_limit_messages: 2000,
            rate_limit_bytes: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            handshakes_before_retry: 32,
            max_handshakes_per_ip: 64,
            stream_timeout: Duration::from_secs(15),
            max_buffered_bytes_per_connection: 0,
            max_buffered_bytes_per_member: 0,
            max_connections_per_member: 4,
        }
    }
}

impl TransportConfig {
    /// The byte budgets of unfinished received messages, per connection and per member, in
    /// bytes, as the transport applies them: each value is raised to one message of
    /// `max_message_bytes`; a connection's 0 is [`FALLBACK_BUFFERED_BYTES_PER_CONNECTION`],
    /// and a member's 0 twice the connection's budget.
    pub fn buffered_bytes_budgets(&self) -> (u64, u64) {
        let message = self.max_message_bytes as u64;
        let per_connection = match self.max_buffered_bytes_per_connection {
            0 => FALLBACK_BUFFERED_BYTES_PER_CONNECTION.max(message),
            n => n.max(message),
        };
        let per_member = match self.max_buffered_bytes_per_member {
            0 => per_connection.saturating_mul(2),
            n => n.max(message),
        };
        (per_connection, per_member)
    }

    /// Checks the values a transport cannot work with.
    ///
    /// # Errors
    /// [`NetError::Config`] naming the first field that is zero where at least 1 (or a
    /// duration above zero) is needed.
    pub fn validate(&self) -> Result<(), NetError> {
        let fail = |reason: String| Err(NetError::Config { reason });
        let at_least_one: [(&str, u64); 5] = [
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
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("stream_timeout", self.stream_timeout),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be above zero"));
            }
        }
        Ok(())
    }
}
