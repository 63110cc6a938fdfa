//! rustls and quinn configuration for mutual TLS inside the cluster.
//!
//! Both directions are authenticated against the cluster CA and nothing else:
//!
//! - the server side *requires* a client certificate that chains to the CA (rustls
//!   `WebPkiClientVerifier`, the CA as the only root; webpki checks validity dates and the
//!   clientAuth extended key usage);
//! - the client side presents the peer's chain, trusts only the CA and expects the server
//!   certificate to carry [`CLUSTER_SERVER_NAME`](crate::certs::CLUSTER_SERVER_NAME).
//!
//! The ring crypto provider is used explicitly (never the process default), TLS 1.3 only (QUIC
//! requires it), ALPN [`ALPN`]. The QUIC transport parameters are set here too, from
//! [`TransportConfig`] and the constants below.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::{NetError, TransportConfig};
use crate::certs::PeerIdentity;

/// The ALPN protocol identifier of rumor's wire protocol, version 1.
pub const ALPN: &[u8] = b"rumor/1";

/// Flow-control window of one stream, in bytes: a 1 MB message fits without waiting for a
/// window update.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 2 * 1024 * 1024;

/// Flow-control window of one connection over all its streams, in bytes.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Bytes the sender may have in flight per connection, in bytes.
pub const SEND_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

/// The ring crypto provider, used for every rumor TLS configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(identity: &PeerIdentity) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(NetError::Tls)?;
    Ok(Arc::new(roots))
}

/// Builds the QUIC transport parameters shared by both sides.
///
/// # Errors
/// [`NetError::Config`] if `idle_timeout_ms` is out of QUIC's range (2^62 ms).
pub fn transport_config(config: &TransportConfig) -> Result<quinn::TransportConfig, NetError> {
    let mut transport = quinn::TransportConfig::default();
    match config.congestion {
        super::Congestion::Cubic => {}
        super::Congestion::NewReno => {
            transport.congestion_controller_factory(Arc::new(
                quinn::congestion::NewRenoConfig::default(),
            ));
        }
        super::Congestion::Bbr => {
            transport
                .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
    }
    let idle =
        IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms)).map_err(|_| {
            NetError::Config {
                reason: format!("idle_timeout_ms {} out of range", config.idle_timeout_ms),
            }
        })?;
    transport
        .max_idle_timeout(Some(idle))
        .initial_rtt(Duration::from_millis(config.initial_rtt_ms.max(1)))
        .keep_alive_interval(
            (config.keep_alive_ms > 0).then(|| Duration::from_millis(config.keep_alive_ms)),
        )
        .max_concurrent_uni_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES);
    if config.max_ack_delay_ms > 0 {
        // Ask the peer to acknowledge sooner than its own max_ack_delay (25 ms by default):
        // a probe timeout waits srtt + 4·rttvar + max_ack_delay, doubling while probes are
        // lost, so on a lossy low-RTT link the ACK delay sets how long a tail loss stalls a
        // stream.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(Duration::from_millis(config.max_ack_delay_ms)));
        transport.ack_frequency_config(Some(ack));
    }
    Ok(transport)
}

/// The quinn server configuration: presents `identity`'s chain and requires a client
/// certificate that chains to the cluster CA.
///
/// Connection migration is disabled: peers are addressed by their listen address, which is the
/// key of the connection cache.
///
/// # Errors
/// [`NetError::Tls`] if the CA, chain or key is unusable (e.g. key does not match);
/// [`NetError::Verifier`] if the client verifier cannot be built; [`NetError::Config`] for bad
/// transport parameters or a provider without the QUIC initial cipher suite.
pub fn server_config(
    identity: &PeerIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(identity)?, provider.clone())
            .build()
            .map_err(NetError::Verifier)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(NetError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Config {
        reason: e.to_string(),
    })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server
        .transport_config(Arc::new(transport_config(config)?))
        .migration(false);
    Ok(server)
}

/// The quinn client configuration: presents `identity`'s chain, trusts only the cluster CA.
/// Connect with server name [`CLUSTER_SERVER_NAME`](crate::certs::CLUSTER_SERVER_NAME).
///
/// # Errors
/// [`NetError::Tls`] if the CA, chain or key is unusable; [`NetError::Config`] for bad transport
/// parameters or a provider without the QUIC initial cipher suite.
pub fn client_config(
    identity: &PeerIdentity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, NetError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .with_root_certificates(root_store(identity)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(NetError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Config {
        reason: e.to_string(),
    })?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport_config(config)?));
    Ok(client)
}
