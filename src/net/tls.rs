//! rustls and quinn configuration for mutual TLS inside the cluster.
//!
//! Both directions are authenticated against the cluster CA and nothing else:
//!
//! - the server side *requires* a client certificate that chains to the CA (rustls
//!   `WebPkiClientVerifier`, the CA as the only root; webpki checks the signatures, the validity
//!   dates and, when the extension is present, the clientAuth extended key usage);
//! - the client side presents the peer's chain, trusts only the CA and expects the server
//!   certificate to carry [`CLUSTER_SERVER_NAME`](crate::certs::CLUSTER_SERVER_NAME)
//!   (`WebPkiServerVerifier`).
//!
//! Both verifiers are wrapped ([`ClusterClientVerifier`], [`ClusterServerVerifier`]) to add two
//! things webpki does not do:
//!
//! - **Both extended key usages.** X.509 (RFC 5280 §4.2.1.12) reads a certificate without the
//!   extended key usage extension as good for any purpose, and webpki accepts it. rumor refuses
//!   it: after webpki's checks the end-entity certificate must carry the extension and list both
//!   `serverAuth` and `clientAuth` ([`check_extended_key_usage`]). `anyExtendedKeyUsage` does
//!   not count.
//! - **Naming the other cluster.** When webpki finds no path to the CA (unknown issuer, or an
//!   issuer of the same name whose signature does not match), the refusal names the CA that
//!   issued the certificate and this peer's own CA ([`CertRefusal::ForeignCa`]).
//! - **Revocation.** A certificate on the cluster's revocation list, which the peer loaded into
//!   its [`DenyList`], is refused before anything else ([`CertRefusal::Revoked`], naming the
//!   member), both as a client and as a server certificate. TLS session resumption is off on
//!   both sides: a resumed handshake would skip the verifiers, letting a certificate revoked
//!   (or expired) since its first connection back in. Connections are long-lived, so the cost
//!   is one full handshake per connection.
//!
//! A refusal travels in the TLS alert (`certificate_unknown`, RFC 8446 §6.2, for rumor's own
//! refusals; webpki's alerts otherwise) and, through quinn, as the reason text of the QUIC
//! CONNECTION_CLOSE frame, so the refused side can report it ([`TlsRefusal`]).
//!
//! The ring crypto provider is used explicitly (never the process default), TLS 1.3 only (QUIC
//! requires it), ALPN [`ALPN`]. The QUIC transport parameters are set here too, from
//! [`TransportConfig`] and the constants below; QUIC datagrams (RFC 9221) are not negotiated,
//! since rumor never reads them.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};

use super::verify::provider;
pub use super::verify::{
    alert_name, check_extended_key_usage, is_certificate_alert, CertRefusal, ClusterClientVerifier,
    ClusterServerVerifier, TlsRefusal,
};
use super::DenyList;
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

/// Builds the QUIC transport parameters shared by both sides.
///
/// # Errors
/// [`NetError::Config`] if `idle_timeout` is out of QUIC's range (2^62 ms).
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
    let idle = IdleTimeout::try_from(config.idle_timeout).map_err(|_| NetError::Config {
        reason: format!("idle_timeout {:?} out of range", config.idle_timeout),
    })?;
    transport
        .max_idle_timeout(Some(idle))
        .initial_rtt(config.initial_rtt.max(Duration::from_millis(1)))
        .keep_alive_interval((!config.keep_alive.is_zero()).then_some(config.keep_alive))
        .max_concurrent_uni_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES)
        // Streams of one priority are sent in the order they were written, not round-robin.
        // Each message is its own stream: with fair queuing, N deltas queued to a slow
        // destination all progress together and all finish late, so under CPU starvation or a
        // thin link every one of them can outlast the send and stream timeouts, be abandoned
        // and be pushed again by anti-entropy, and nothing arrives. In order, the oldest
        // finishes first and the queue drains. Control messages have a higher priority and
        // still overtake bulk ones.
        .send_fairness(false)
        // No QUIC datagrams (RFC 9221): rumor never reads them, so a peer must not be able to
        // send any. Without a receive buffer the max_datagram_frame_size transport parameter
        // is not sent, and the remote's Connection::max_datagram_size() is None.
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0);
    if !config.max_ack_delay.is_zero() {
        // Ask the peer to acknowledge sooner than its own max_ack_delay (25 ms by default):
        // a probe timeout waits srtt + 4·rttvar + max_ack_delay, doubling while probes are
        // lost, so on a lossy low-RTT link the ACK delay sets how long a tail loss stalls a
        // stream.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(config.max_ack_delay));
        transport.ack_frequency_config(Some(ack));
    }
    Ok(transport)
}

/// The quinn server configuration: presents `identity`'s chain and requires a client
/// certificate that chains to the cluster CA and carries both extended key usages
/// ([`ClusterClientVerifier`]).
///
/// Connection migration is disabled: peers are addressed by their listen address, which is the
/// key of the connection cache.
///
/// # Errors
/// [`NetError::Tls`] if the CA, chain or key is unusable (e.g. key does not match);
/// [`NetError::Verifier`] if the client verifier cannot be built; [`NetError::Config`] for bad
/// transport parameters, a CA that does not parse, or a provider without the QUIC initial
/// cipher suite.
pub fn server_config(
    identity: &PeerIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, NetError> {
    server_config_denying(identity, config, DenyList::new())
}

/// [`server_config`] whose client verifier also refuses the certificates `deny` holds, now and
/// as it grows ([`CertRefusal::Revoked`]).
///
/// # Errors
/// As [`server_config`].
pub fn server_config_denying(
    identity: &PeerIdentity,
    config: &TransportConfig,
    deny: DenyList,
) -> Result<quinn::ServerConfig, NetError> {
    let verifier = Arc::new(ClusterClientVerifier::new(identity)?.denying(deny));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(NetError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    // No session resumption: a resumed handshake skips the certificate checks, so a certificate
    // revoked (or expired) since would get back in.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Config {
        reason: e.to_string(),
    })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server
        .transport_config(Arc::new(transport_config(config)?))
        .migration(false);
    Ok(server)
}

/// The quinn client configuration: presents `identity`'s chain, trusts only the cluster CA and
/// requires both extended key usages of the server's certificate ([`ClusterServerVerifier`]).
/// Connect with server name [`CLUSTER_SERVER_NAME`](crate::certs::CLUSTER_SERVER_NAME).
///
/// # Errors
/// [`NetError::Tls`] if the CA, chain or key is unusable; [`NetError::Verifier`] if the server
/// verifier cannot be built; [`NetError::Config`] for bad transport parameters, a CA that does
/// not parse, or a provider without the QUIC initial cipher suite.
pub fn client_config(
    identity: &PeerIdentity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, NetError> {
    client_config_denying(identity, config, DenyList::new())
}

/// [`client_config`] whose server verifier also refuses the certificates `deny` holds, now and
/// as it grows ([`CertRefusal::Revoked`]).
///
/// # Errors
/// As [`client_config`].
pub fn client_config_denying(
    identity: &PeerIdentity,
    config: &TransportConfig,
    deny: DenyList,
) -> Result<quinn::ClientConfig, NetError> {
    let verifier = Arc::new(ClusterServerVerifier::new(identity)?.denying(deny));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(NetError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No session resumption (see `server_config_denying`): every handshake checks the server's
    // certificate.
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Config {
        reason: e.to_string(),
    })?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport_config(config)?));
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{
        init_cluster_ca, init_legacy_ca, issue, issue_with, load_identity, IssueOptions,
        CLUSTER_SERVER_NAME,
    };
    use quinn::ConnectionError;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::danger::ClientCertVerifier;
    use rustls::CertificateError;
    use std::net::SocketAddr;
    use std::path::Path;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Upper bound of every network wait in these tests.
    const WAIT: Duration = Duration::from_secs(20);

    /// A CA named `cluster` in a fresh temporary directory.
    fn ca(cluster: &str) -> Result<tempfile::TempDir, Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        init_cluster_ca(dir.path(), false, Some(cluster))?;
        Ok(dir)
    }

    fn identity(
        dir: &Path,
        name: &str,
        options: IssueOptions,
    ) -> Result<PeerIdentity, Box<dyn std::error::Error + Send + Sync>> {
        issue_with(dir, name, 10, options)?;
        Ok(load_identity(dir, name)?)
    }

    /// Runs both of `trusting`'s verifiers on `presented`'s chain: as a client certificate and
    /// as a server certificate for [`CLUSTER_SERVER_NAME`].
    fn verify_both_ways(
        trusting: &PeerIdentity,
        presented: &PeerIdentity,
    ) -> Result<[Result<(), rustls::Error>; 2], NetError> {
        let now = UnixTime::now();
        let (leaf, rest) = (&presented.chain[0], &presented.chain[1..]);
        let as_client = ClusterClientVerifier::new(trusting)?
            .verify_client_cert(leaf, rest, now)
            .map(|_| ());
        let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(|e| NetError::Config {
            reason: e.to_string(),
        })?;
        let as_server = ClusterServerVerifier::new(trusting)?
            .verify_server_cert(leaf, rest, &name, &[], now)
            .map(|_| ());
        Ok([as_client, as_server])
    }

    #[test]
    fn certificates_must_list_both_extended_key_usages() -> TestResult {
        let dir = ca("home")?;
        let both = identity(dir.path(), "both", IssueOptions::default())?;
        let none = identity(
            dir.path(),
            "no-eku",
            IssueOptions {
                extended_key_usage: false,
                ..IssueOptions::default()
            },
        )?;
        let server_only = identity(
            dir.path(),
            "server-only",
            IssueOptions {
                client_auth: false,
                ..IssueOptions::default()
            },
        )?;

        assert_eq!(check_extended_key_usage(&both.chain[0]), Ok(()));
        assert_eq!(
            check_extended_key_usage(&none.chain[0]),
            Err(CertRefusal::NoExtendedKeyUsage)
        );
        assert_eq!(
            check_extended_key_usage(&server_only.chain[0]),
            Err(CertRefusal::MissingExtendedKeyUsage {
                missing: "clientAuth"
            })
        );

        for result in verify_both_ways(&both, &both)? {
            assert!(result.is_ok(), "{result:?}");
        }
        // Without the extension webpki alone accepts the certificate for any purpose; the
        // cluster verifiers refuse it both ways.
        for result in verify_both_ways(&both, &none)? {
            let text = result.err().ok_or("no EKU accepted")?.to_string();
            assert!(text.contains("no extended key usage extension"), "{text}");
        }
        // serverAuth only: webpki refuses it as a client certificate (wrong purpose), rumor as
        // a server certificate (clientAuth missing).
        let [as_client, as_server] = verify_both_ways(&both, &server_only)?;
        assert!(as_client.is_err(), "serverAuth-only accepted as a client");
        let text = as_server
            .err()
            .ok_or("serverAuth-only accepted as a server")?
            .to_string();
        assert!(text.contains("lacks clientAuth"), "{text}");
        Ok(())
    }

    #[test]
    fn a_denied_certificate_is_refused_both_ways_naming_the_member() -> TestResult {
        let dir = ca("home")?;
        let member = identity(dir.path(), "member", IssueOptions::default())?;
        let revoked = identity(dir.path(), "revoked", IssueOptions::default())?;
        let deny = DenyList::new();
        let judge = |presented: &PeerIdentity| -> Result<[Result<(), rustls::Error>; 2], NetError> {
            let now = UnixTime::now();
            let (leaf, rest) = (&presented.chain[0], &presented.chain[1..]);
            let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(|e| NetError::Config {
                reason: e.to_string(),
            })?;
            Ok([
                ClusterClientVerifier::new(&member)?
                    .denying(deny.clone())
                    .verify_client_cert(leaf, rest, now)
                    .map(|_| ()),
                ClusterServerVerifier::new(&member)?
                    .denying(deny.clone())
                    .verify_server_cert(leaf, rest, &name, &[], now)
                    .map(|_| ()),
            ])
        };
        for result in judge(&revoked)? {
            assert!(result.is_ok(), "{result:?}");
        }
        let key = rumor_proto::auth::KeyId::of(revoked.chain[0].as_ref());
        deny.add(key, "revoked");
        let expected = CertRefusal::Revoked {
            name: "revoked".into(),
        };
        for result in judge(&revoked)? {
            let error = result.err().ok_or("a revoked certificate was accepted")?;
            let text = error.to_string();
            assert!(
                text.contains(
                    "certificate revoked: \"revoked\" is on this cluster's revocation list"
                ),
                "{text}"
            );
            let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = error else {
                return Err(format!("unexpected error kind: {text}").into());
            };
            assert_eq!(other.0.downcast_ref::<CertRefusal>(), Some(&expected));
        }
        assert_eq!((deny.refused_incoming(), deny.refused_outgoing()), (1, 1));
        // Others are not affected.
        for result in judge(&member)? {
            assert!(result.is_ok(), "{result:?}");
        }
        Ok(())
    }

    #[test]
    fn certificate_from_another_ca_is_refused_naming_both_cas() -> TestResult {
        let home = ca("home-cluster")?;
        let away = ca("away-cluster")?;
        let member = identity(home.path(), "member", IssueOptions::default())?;
        let stranger = identity(away.path(), "stranger", IssueOptions::default())?;
        let expected = CertRefusal::ForeignCa {
            theirs: "away-cluster".into(),
            ours: "home-cluster".into(),
        };
        for result in verify_both_ways(&member, &stranger)? {
            let error = result.err().ok_or("a stranger was accepted")?;
            let text = error.to_string();
            assert!(
                text.contains(
                    "certificate from another cluster CA, \"away-cluster\"; this cluster's CA \
                     is \"home-cluster\""
                ),
                "{text}"
            );
            let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = error else {
                return Err(format!("unexpected error kind: {text}").into());
            };
            assert_eq!(
                other.0.downcast_ref::<CertRefusal>(),
                Some(&expected),
                "{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn legacy_cas_work_and_two_of_them_are_told_apart() -> TestResult {
        let first = tempfile::tempdir()?;
        let second = tempfile::tempdir()?;
        init_legacy_ca(first.path())?;
        init_legacy_ca(second.path())?;
        issue(first.path(), "a", 10)?;
        issue(first.path(), "b", 10)?;
        issue(second.path(), "c", 10)?;
        let a = load_identity(first.path(), "a")?;
        let b = load_identity(first.path(), "b")?;
        let c = load_identity(second.path(), "c")?;
        for result in verify_both_ways(&a, &b)? {
            assert!(result.is_ok(), "legacy CA member refused: {result:?}");
        }
        for result in verify_both_ways(&a, &c)? {
            let text = result.err().ok_or("other legacy CA accepted")?.to_string();
            assert!(
                text.contains("another cluster CA of the same name")
                    && text.contains("rumor cluster CA"),
                "{text}"
            );
        }
        Ok(())
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A server endpoint for `server` and a client endpoint for `client`, both on loopback.
    fn endpoints(
        server: &PeerIdentity,
        client: &PeerIdentity,
    ) -> Result<(quinn::Endpoint, quinn::Endpoint), Box<dyn std::error::Error + Send + Sync>> {
        let config = TransportConfig::default();
        let s = quinn::Endpoint::server(server_config(server, &config)?, localhost())?;
        let mut c = quinn::Endpoint::client(localhost())?;
        c.set_default_client_config(client_config(client, &config)?);
        Ok((s, c))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_are_not_negotiated() -> TestResult {
        let dir = ca("dgram")?;
        let a = identity(dir.path(), "a", IssueOptions::default())?;
        let b = identity(dir.path(), "b", IssueOptions::default())?;
        let (server, mut client) = endpoints(&a, &b)?;
        // The client wants datagrams (quinn's defaults): the rumor server must still give it no
        // way to send one.
        let mut eager = client_config(&b, &TransportConfig::default())?;
        eager.transport_config(Arc::new(quinn::TransportConfig::default()));
        client.set_default_client_config(eager);
        let to = server.local_addr()?;
        let (accepted, connected) = tokio::time::timeout(WAIT, async {
            let accept = async {
                let incoming = server.accept().await.ok_or("server endpoint closed")?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(incoming.await?)
            };
            let connect = async { Ok(client.connect(to, CLUSTER_SERVER_NAME)?.await?) };
            tokio::try_join!(accept, connect)
        })
        .await??;
        // The server advertised no max_datagram_frame_size: the client may send none.
        assert_eq!(connected.max_datagram_size(), None);
        let sent = connected.send_datagram(b"not wanted".to_vec().into());
        assert!(
            matches!(sent, Err(quinn::SendDatagramError::UnsupportedByPeer)),
            "{sent:?}"
        );
        // The rumor side has datagrams off altogether.
        let sent = accepted.send_datagram(b"nor this".to_vec().into());
        assert!(
            matches!(sent, Err(quinn::SendDatagramError::Disabled)),
            "{sent:?}"
        );

        // Between two rumor peers neither side may send one.
        let (server, client) = endpoints(&a, &b)?;
        let to = server.local_addr()?;
        let (accepted, connected) = tokio::time::timeout(WAIT, async {
            let accept = async {
                let incoming = server.accept().await.ok_or("server endpoint closed")?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(incoming.await?)
            };
            let connect = async { Ok(client.connect(to, CLUSTER_SERVER_NAME)?.await?) };
            tokio::try_join!(accept, connect)
        })
        .await??;
        assert_eq!(connected.max_datagram_size(), None);
        assert_eq!(accepted.max_datagram_size(), None);
        client.close(VarInt::from_u32(0), b"done");
        server.close(VarInt::from_u32(0), b"done");
        Ok(())
    }

    /// Connects `client` to `server` and sends one stream; returns the client's and the
    /// server's view of how the connection ended.
    async fn handshake_errors(
        server: &PeerIdentity,
        client: &PeerIdentity,
    ) -> Result<(ConnectionError, ConnectionError), Box<dyn std::error::Error + Send + Sync>> {
        let (s, c) = endpoints(server, client)?;
        let to = s.local_addr()?;
        let outcome = tokio::time::timeout(WAIT, async {
            let accept = async {
                let incoming = s.accept().await.ok_or("server endpoint closed")?;
                match incoming.await {
                    Ok(_) => Err("the server accepted the client".into()),
                    Err(e) => Ok::<_, Box<dyn std::error::Error + Send + Sync>>(e),
                }
            };
            let connect = async {
                let conn = match c.connect(to, CLUSTER_SERVER_NAME)?.await {
                    Ok(conn) => conn,
                    Err(e) => return Ok(e),
                };
                // TLS 1.3: the client is done before the server has judged its certificate.
                if let Ok(mut stream) = conn.open_uni().await {
                    let _ = stream.write_all(b"hello").await;
                }
                Ok(conn.closed().await)
            };
            tokio::try_join!(connect, accept)
        })
        .await??;
        c.close(VarInt::from_u32(0), b"done");
        s.close(VarInt::from_u32(0), b"done");
        Ok(outcome)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_over_the_wire_name_the_other_cluster() -> TestResult {
        let home = ca("home")?;
        let away = ca("away")?;
        let member = identity(home.path(), "member", IssueOptions::default())?;
        let stranger = identity(away.path(), "stranger", IssueOptions::default())?;

        // The stranger trusts the home CA, so only the server refuses.
        let trusting_stranger = PeerIdentity {
            ca: member.ca.clone(),
            ..stranger.clone()
        };
        let (client_side, server_side) = handshake_errors(&member, &trusting_stranger).await?;
        let server_refusal =
            TlsRefusal::from_connection_error(&server_side).ok_or("server: not a refusal")?;
        assert!(
            matches!(&server_refusal, TlsRefusal::ByUs { alert: 46, reason }
                if reason == "certificate from another cluster CA, \"away\"; this cluster's CA is \"home\""),
            "{server_refusal:?}"
        );
        let client_refusal =
            TlsRefusal::from_connection_error(&client_side).ok_or("client: not a refusal")?;
        let text = client_refusal.to_string();
        assert!(
            matches!(client_refusal, TlsRefusal::ByRemote { alert: 46, .. }),
            "{client_refusal:?}"
        );
        assert_eq!(
            text,
            "refused this peer's certificate (TLS alert certificate_unknown): certificate from \
             another cluster CA, \"away\"; this cluster's CA is \"home\""
        );

        // A stranger of its own cluster refuses the server's certificate first.
        let (client_side, _) = handshake_errors(&member, &stranger).await?;
        let refusal =
            TlsRefusal::from_connection_error(&client_side).ok_or("client: not a refusal")?;
        assert_eq!(
            refusal.to_string(),
            "presented a certificate from another cluster CA, \"home\"; this cluster's CA is \
             \"away\""
        );
        Ok(())
    }

    #[test]
    fn only_certificate_alerts_are_refusals() {
        let closed = |code: u64, reason: &'static [u8]| {
            ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto((code & 0xff) as u8),
                frame_type: None,
                reason: reason.to_vec().into(),
            })
        };
        let refusal = TlsRefusal::from_connection_error(&closed(48, b""));
        assert_eq!(
            refusal.map(|r| r.to_string()).as_deref(),
            Some("refused this peer's certificate (TLS alert unknown_ca)")
        );
        let odd = TlsRefusal::from_connection_error(&closed(42, b"bad\x1b[31m"));
        assert_eq!(
            odd,
            Some(TlsRefusal::ByRemote {
                alert: 42,
                reason: "bad?[31m".into()
            })
        );
        // no_application_protocol is no certificate matter; nor is a timeout.
        assert_eq!(TlsRefusal::from_connection_error(&closed(120, b"")), None);
        assert_eq!(
            TlsRefusal::from_connection_error(&ConnectionError::TimedOut),
            None
        );
        assert_eq!(alert_name(48), "unknown_ca");
        assert_eq!(alert_name(7), "alert 7");
        assert!(is_certificate_alert(46) && !is_certificate_alert(40));
    }
}
