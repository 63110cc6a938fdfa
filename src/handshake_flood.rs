//! A flood of QUIC Initial packets, for testing what a peer spends on strangers.
//!
//! Anyone who can send UDP to a peer can start QUIC handshakes with it: no certificate is
//! needed to send an Initial packet. [`flood_initials`] builds real Initial packets (a TLS
//! ClientHello with ALPN [`crate::net::tls::ALPN`], each under a fresh connection id, built by
//! quinn-proto exactly as a client would) and sends each once, from a few UDP sockets, without
//! ever answering: every handshake it starts is abandoned. The target must refuse, retry or
//! time them out without its memory growing (`crate::net::admission`).
//!
//! It is an attack tool: point it only at peers you run.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::crypto::rustls::QuicClientConfig;
use serde::Serialize;

use crate::certs::CLUSTER_SERVER_NAME;

/// Initial packets built per quinn-proto endpoint before a fresh one is made (its connection
/// table would otherwise grow with the flood).
const CONNECTIONS_PER_ENDPOINT: u64 = 1024;

/// What to send.
#[derive(Clone, Debug)]
pub struct HandshakeFloodOptions {
    /// The peer's listen address.
    pub target: SocketAddr,
    /// Initial packets to send.
    pub count: u64,
    /// Packets per second; 0 sends as fast as packets can be built.
    pub rate: f64,
    /// UDP sockets (source ports) to send from, round-robin; at least 1.
    pub sources: usize,
}

/// What was sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HandshakeFloodReport {
    /// Initial packets sent.
    pub sent: u64,
    /// UDP payload bytes sent, in bytes.
    pub bytes: u64,
    /// Sends the local socket refused (e.g. its buffer was full).
    pub send_errors: u64,
    /// Time taken, in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for HandshakeFloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} QUIC Initial packets ({:.1} MB) in {:.1} s ({:.0} packets/s), {} send errors",
            self.sent,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.sent as f64 / self.seconds.max(1e-9),
            self.send_errors
        )
    }
}

/// Errors of [`flood_initials`].
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFloodError {
    /// A local UDP socket could not be bound.
    #[error("cannot bind a UDP socket: {0}")]
    Bind(std::io::Error),
    /// The client TLS configuration could not be built.
    #[error("client TLS configuration: {0}")]
    Tls(String),
    /// quinn-proto refused to start a connection to the target.
    #[error("cannot start a handshake with {target}: {reason}")]
    Connect {
        /// The target.
        target: SocketAddr,
        /// quinn-proto's reason.
        reason: String,
    },
    /// `sources` is 0 or `rate` is negative or not finite.
    #[error("bad flood options: {0}")]
    Options(&'static str),
}

/// A client configuration a stranger could have: the cluster's ALPN, no certificate of its
/// own, and no trusted root (it never gets far enough to verify the server).
fn stranger_config() -> Result<quinn_proto::ClientConfig, HandshakeFloodError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HandshakeFloodError::Tls(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::net::tls::ALPN.to_vec()];
    let quic =
        QuicClientConfig::try_from(tls).map_err(|e| HandshakeFloodError::Tls(e.to_string()))?;
    Ok(quinn_proto::ClientConfig::new(Arc::new(quic)))
}

/// Sends `options.count` QUIC Initial packets to `options.target`, each starting a new
/// handshake that is never continued. Blocking: run it on a thread of its own.
///
/// # Errors
/// [`HandshakeFloodError`] if the options are unusable, a socket cannot be bound or a packet
/// cannot be built; send failures are only counted.
pub fn flood_initials(
    options: &HandshakeFloodOptions,
) -> Result<HandshakeFloodReport, HandshakeFloodError> {
    if options.sources == 0 {
        return Err(HandshakeFloodError::Options("sources must be at least 1"));
    }
    if !options.rate.is_finite() || options.rate < 0.0 {
        return Err(HandshakeFloodError::Options(
            "rate must be a finite number ≥ 0",
        ));
    }
    let local: SocketAddr = if options.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sockets = (0..options.sources)
        .map(|_| UdpSocket::bind(local))
        .collect::<Result<Vec<_>, _>>()
        .map_err(HandshakeFloodError::Bind)?;
    let config = stranger_config()?;
    let started = Instant::now();
    let mut report = HandshakeFloodReport::default();
    let mut endpoint = None;
    let mut buf = Vec::with_capacity(1500);
    for i in 0..options.count {
        if i % CONNECTIONS_PER_ENDPOINT == 0 {
            endpoint = None;
        }
        let ep = endpoint.get_or_insert_with(|| {
            quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            )
        });
        let now = Instant::now();
        let (_, mut conn) = ep
            .connect(now, config.clone(), options.target, CLUSTER_SERVER_NAME)
            .map_err(|e| HandshakeFloodError::Connect {
                target: options.target,
                reason: e.to_string(),
            })?;
        buf.clear();
        let Some(transmit) = conn.poll_transmit(now, 1, &mut buf) else {
            continue;
        };
        let packet = &buf[..transmit.size];
        let socket = &sockets[(i as usize) % sockets.len()];
        match socket.send_to(packet, options.target) {
            Ok(n) => {
                report.sent += 1;
                report.bytes += n as u64;
            }
            Err(_) => report.send_errors += 1,
        }
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64((i + 1) as f64 / options.rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_sends_initial_packets() -> Result<(), Box<dyn std::error::Error>> {
        let sink = UdpSocket::bind("127.0.0.1:0")?;
        sink.set_read_timeout(Some(Duration::from_secs(5)))?;
        let report = flood_initials(&HandshakeFloodOptions {
            target: sink.local_addr()?,
            count: 3,
            rate: 0.0,
            sources: 2,
        })?;
        assert_eq!(report.sent, 3);
        let mut buf = [0u8; 2048];
        let mut dcids = std::collections::HashSet::new();
        for _ in 0..3 {
            let (n, _) = sink.recv_from(&mut buf)?;
            // A QUIC v1 long-header Initial, padded to at least 1200 bytes (RFC 9000 §14.1).
            assert!(n >= 1200, "{n} bytes");
            assert_eq!(buf[0] & 0xf0, 0xc0, "long header, Initial type");
            assert_eq!(&buf[1..5], &[0, 0, 0, 1], "QUIC version 1");
            let len = buf[5] as usize;
            dcids.insert(buf[6..6 + len].to_vec());
        }
        assert_eq!(dcids.len(), 3, "every packet starts its own handshake");
        Ok(())
    }
}
