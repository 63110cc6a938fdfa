//! Chaos's own QUIC connection to its target.
//!
//! [`crate::net::Transport`] always finishes a stream before it waits for the receiver's
//! verdict, and the receiver's QUIC acknowledges the bytes and the FIN as soon as they arrive,
//! before its application has read them. Once every byte of a finished stream is acknowledged,
//! quinn forgets the stream and ignores a `STOP_SENDING` that comes later, so a sender sees a
//! stream its receiver stopped after the acknowledgement (a whole oversized frame that fit in
//! the stream window, a message over the rate limit whose stream was accepted late) as
//! delivered. [`Link`] sends like the transport, with the same TLS and QUIC settings, plus one
//! thing the transport does not do: [`Link::send`] with `hold_fin` writes the whole message but
//! does not finish the stream until the receiver has had time to stop it. A receiver that
//! refuses a frame by its length stops the stream without waiting for its end, so an oversized
//! frame sent this way is always reported as stopped by the receiver.
//!
//! It also reads and drops whatever the target sends back, on this connection or on
//! connections the target opens to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, SendStream, VarInt};
use tokio::sync::Mutex;

use crate::certs::{PeerIdentity, CLUSTER_SERVER_NAME};
use crate::net::{tls, NetError, TransportConfig, CODE_CANCELLED};

/// Application error code chaos closes its connection with (the transport's "closing").
const CODE_CLOSING: u32 = 0;

/// How long [`Link::close`] waits for the endpoint to become idle.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What became of one message, as the sender can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target's QUIC acknowledged every byte and the end of the stream, and had not
    /// stopped the stream before.
    Delivered,
    /// The target stopped the stream with this application code before acknowledging it all.
    Stopped(u64),
    /// No connection, the connection was lost, or another stream error.
    Failed,
}

/// The connection, or when the last attempt to reconnect failed.
enum State {
    Up(Connection),
    Down(Instant),
}

/// After a failed reconnect, sends fail at once for this long before the next attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// One QUIC endpoint and its connection to the target, reconnected when lost.
pub(crate) struct Link {
    endpoint: Endpoint,
    local: SocketAddr,
    target: SocketAddr,
    connect_timeout: Duration,
    /// Largest message read from the target (and dropped).
    read_limit: usize,
    /// How long a `hold_fin` send waits for the receiver to stop the stream.
    verdict_wait: Duration,
    state: Mutex<State>,
}

/// The address to bind to reach `target`: loopback for a loopback target, else any address of
/// the same family.
fn bind_address(target: SocketAddr) -> SocketAddr {
    let ip = match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

impl Link {
    /// Binds an endpoint with `identity` and connects to `target`.
    ///
    /// # Errors
    /// [`NetError`] when the endpoint cannot be bound or configured, or the first connection
    /// cannot be made.
    pub(crate) async fn connect(
        identity: &PeerIdentity,
        target: SocketAddr,
        config: &TransportConfig,
        verdict_wait: Duration,
    ) -> Result<Self, NetError> {
        let addr = bind_address(target);
        let server = tls::server_config(identity, config)?;
        let client = tls::client_config(identity, config)?;
        let mut endpoint =
            Endpoint::server(server, addr).map_err(|source| NetError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let local = endpoint
            .local_addr()
            .map_err(|source| NetError::Bind { addr, source })?;
        let read_limit = config.max_message_bytes;
        tokio::spawn(accept_and_drain(endpoint.clone(), read_limit));
        let link = Self {
            endpoint,
            local,
            target,
            connect_timeout: config.connect_timeout,
            read_limit,
            verdict_wait,
            state: Mutex::new(State::Down(Instant::now())),
        };
        let conn = link.open_connection().await?;
        *link.state.lock().await = State::Up(conn);
        Ok(link)
    }

    /// The local address of the endpoint.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn open_connection(&self) -> Result<Connection, NetError> {
        let addr = self.target;
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|source| NetError::Connect { addr, source })?;
        let timeout_ms = self.connect_timeout.as_millis() as u64;
        let conn = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| NetError::ConnectTimeout { addr, timeout_ms })?
            .map_err(|source| NetError::Handshake { addr, source })?;
        tokio::spawn(drain(conn.clone(), self.read_limit));
        Ok(conn)
    }

    /// The live connection; a new attempt when it was lost (the target may close it, e.g.
    /// when it declares chaos's address dead), at most one per [`RECONNECT_BACKOFF`] after a
    /// failed one (`None` meanwhile).
    async fn connection(&self) -> Option<Connection> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Up(conn) if conn.close_reason().is_none() => return Some(conn.clone()),
            State::Up(_) => {}
            State::Down(since) if since.elapsed() < RECONNECT_BACKOFF => return None,
            State::Down(_) => {}
        }
        match self.open_connection().await {
            Ok(conn) => {
                *state = State::Up(conn.clone());
                Some(conn)
            }
            Err(e) => {
                tracing::warn!(target = %self.target, "chaos: cannot reconnect: {}", crate::report::Chain(&e));
                *state = State::Down(Instant::now());
                None
            }
        }
    }

    /// Sends `bytes` on a new unidirectional stream. With `hold_fin`, the stream is finished
    /// only when the receiver has not stopped it within the verdict wait.
    pub(crate) async fn send(&self, bytes: &[u8], hold_fin: bool) -> Outcome {
        let Some(conn) = self.connection().await else {
            return Outcome::Failed;
        };
        let stream = match conn.open_uni().await {
            Ok(stream) => stream,
            Err(_) => {
                // Lost between the check and the open: one more connection.
                let Some(conn) = self.connection().await else {
                    return Outcome::Failed;
                };
                match conn.open_uni().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(
                            "chaos: cannot open a stream: {}",
                            crate::report::Chain(&e)
                        );
                        return Outcome::Failed;
                    }
                }
            }
        };
        write(stream, bytes, hold_fin, self.verdict_wait).await
    }

    /// Why the target closed the connection, when it did (e.g. a refused handshake: a revoked
    /// or quarantined certificate); `None` while it is open or after a failed reconnect.
    pub(crate) async fn close_reason(&self) -> Option<String> {
        match &*self.state.lock().await {
            State::Up(conn) => conn.close_reason().map(|e| e.to_string()),
            State::Down(_) => None,
        }
    }

    /// Closes the connection and waits (briefly) for the endpoint to become idle.
    pub(crate) async fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(CODE_CLOSING), b"chaos done");
        // Not idle in time: the endpoint is dropped anyway.
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}

/// The outcome of a stream error while writing or waiting.
fn write_outcome(error: quinn::WriteError) -> Outcome {
    match error {
        quinn::WriteError::Stopped(code) => Outcome::Stopped(code.into_inner()),
        other => {
            tracing::debug!("chaos: send failed: {other}");
            Outcome::Failed
        }
    }
}

/// Resets `stream` (a message never completed is never taken for a whole one) and returns
/// `outcome`.
fn abandon(mut stream: SendStream, outcome: Outcome) -> Outcome {
    // Fails only on a stream already closed or reset: nothing left to do.
    let _ = stream.reset(VarInt::from_u32(CODE_CANCELLED));
    outcome
}

async fn write(mut stream: SendStream, bytes: &[u8], hold_fin: bool, wait: Duration) -> Outcome {
    if let Err(e) = stream.write_all(bytes).await {
        return abandon(stream, write_outcome(e));
    }
    if hold_fin {
        match tokio::time::timeout(wait, stream.stopped()).await {
            Ok(Ok(Some(code))) => return abandon(stream, Outcome::Stopped(code.into_inner())),
            // The stream is not finished: it cannot have been acknowledged whole.
            Ok(Ok(None)) => return Outcome::Delivered,
            Ok(Err(e)) => return abandon(stream, write_outcome(e.into())),
            // Not refused within the wait: finish it and take the usual verdict.
            Err(_) => {}
        }
    }
    if stream.finish().is_err() {
        return abandon(stream, Outcome::Failed);
    }
    match stream.stopped().await {
        Ok(None) => Outcome::Delivered,
        Ok(Some(code)) => Outcome::Stopped(code.into_inner()),
        Err(e) => write_outcome(e.into()),
    }
}

/// Reads and drops what the target sends on `conn`, until the connection closes.
async fn drain(conn: Connection, limit: usize) {
    while let Ok(mut stream) = conn.accept_uni().await {
        tokio::spawn(async move {
            // What the target says is of no interest; errors included.
            let _ = stream.read_to_end(limit).await;
        });
    }
}

/// Accepts the connections the target opens to chaos's endpoint and drains them.
async fn accept_and_drain(endpoint: Endpoint, limit: usize) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                drain(conn, limit).await;
            }
        });
    }
}
