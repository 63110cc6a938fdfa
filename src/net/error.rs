//! Errors of the transport, and why a shared connection attempt failed.
//!
//! A variant with a `source` does not repeat it in its message; print the chain with
//! [`crate::report`].

use std::net::SocketAddr;

use quinn::ConnectionError;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The UDP socket could not be bound or set up.
    #[error("cannot bind {addr}")]
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
    /// A message is larger than [`TransportConfig::max_message_bytes`](super::TransportConfig::max_message_bytes); nothing was sent.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the message, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// quinn refused to start a connection (e.g. the endpoint is closing, bad address).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::ConnectError,
    },
    /// The handshake failed (peer unreachable, certificate refused by either side, ...).
    #[error("handshake with {addr} failed")]
    Handshake {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: ConnectionError,
    },
    /// The handshake did not complete within [`TransportConfig::connect_timeout`](super::TransportConfig::connect_timeout).
    #[error("connecting to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout {
        /// The remote address.
        addr: SocketAddr,
        /// The timeout, in ms.
        timeout_ms: u64,
    },
    /// An established connection was lost while sending (closed, reset, timed out, or the
    /// server refused our certificate after our side had finished the handshake).
    #[error("connection to {addr} lost")]
    Connection {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: ConnectionError,
    },
    /// The receiver stopped the stream, e.g. with [`CODE_TOO_LARGE`](super::CODE_TOO_LARGE); the message was dropped.
    #[error("{addr} stopped the stream with code {code}")]
    Stopped {
        /// The remote address.
        addr: SocketAddr,
        /// The application error code the receiver gave.
        code: u64,
    },
    /// The host at `addr` holds another certificate than the member the message is for (a
    /// member-bound send, [`super::Transport::send_to_member`]); nothing was sent.
    #[error("{addr} is not the member the message is for (its certificate is another)")]
    WrongMember {
        /// The remote address.
        addr: SocketAddr,
    },
    /// Writing the stream failed for another reason.
    #[error("writing to {addr} failed")]
    Write {
        /// The remote address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::WriteError,
    },
}

/// Why a shared connection attempt failed; cloneable so every waiter gets a copy.
#[derive(Clone, Debug)]
pub(super) enum ConnectFailure {
    Connect(quinn::ConnectError),
    Handshake(ConnectionError),
    Timeout(u64),
}

impl ConnectFailure {
    pub(super) fn into_error(self, addr: SocketAddr) -> NetError {
        match self {
            Self::Connect(source) => NetError::Connect { addr, source },
            Self::Handshake(source) => NetError::Handshake { addr, source },
            Self::Timeout(timeout_ms) => NetError::ConnectTimeout { addr, timeout_ms },
        }
    }
}
