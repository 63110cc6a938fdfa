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
//!
//! A refusal travels in the TLS alert (`certificate_unknown`, RFC 8446 §6.2, for rumor's own
//! refusals; webpki's alerts otherwise) and, through quinn, as the reason text of the QUIC
//! CONNECTION_CLOSE frame, so the refused side can report it ([`TlsRefusal`]).
//!
//! The ring crypto provider is used explicitly (never the process default), TLS 1.3 only (QUIC
//! requires it), ALPN [`ALPN`]. The QUIC transport parameters are set here too, from
//! [`TransportConfig`] and the constants below; QUIC datagrams (RFC 9221) are not negotiated,
//! since rumor never reads them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use super::{NetError, TransportConfig};
use crate::certs::{display_name, printable, PeerIdentity};

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

/// Why rumor refused a peer's certificate, beyond what webpki says.
///
/// Carried inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`, which
/// rustls prints with `Debug`; `Debug` therefore prints the same sentence as `Display`.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    /// The certificate does not chain to this peer's CA; it names another issuer. "This
    /// cluster" in the message is the refusing peer's.
    #[error("certificate from another cluster CA, {theirs:?}; this cluster's CA is {ours:?}")]
    ForeignCa {
        /// The cluster name of the CA that issued the certificate (its issuer's common name).
        theirs: String,
        /// The cluster name of the refusing peer's CA.
        ours: String,
    },
    /// The certificate names an issuer with the same name as this peer's CA, but that CA did
    /// not sign it: another cluster's CA of the same name (all CAs made before cluster names
    /// existed are called "rumor cluster CA").
    #[error(
        "certificate from another cluster CA of the same name as this cluster's, {name:?} \
         (its signature does not verify with this cluster's CA)"
    )]
    ForeignCaSameName {
        /// The name both CAs carry.
        name: String,
    },
    /// The certificate has no extended key usage extension.
    #[error(
        "certificate has no extended key usage extension; rumor requires both serverAuth \
         and clientAuth"
    )]
    NoExtendedKeyUsage,
    /// The certificate's extended key usage extension lacks `serverAuth` or `clientAuth`.
    #[error(
        "certificate's extended key usage lacks {missing}; rumor requires both serverAuth \
         and clientAuth"
    )]
    MissingExtendedKeyUsage {
        /// What is missing: "serverAuth", "clientAuth" or "serverAuth and clientAuth".
        missing: &'static str,
    },
    /// The certificate (or its extensions) does not parse as X.509.
    #[error("certificate does not parse: {reason}")]
    Unparsable {
        /// The parser's complaint.
        reason: String,
    },
}

impl fmt::Debug for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<CertRefusal> for rustls::Error {
    fn from(refusal: CertRefusal) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            refusal,
        ))))
    }
}

/// Checks that `end_entity` carries the extended key usage extension and that it lists both
/// `serverAuth` and `clientAuth` (RFC 5280 §4.2.1.12); `anyExtendedKeyUsage` alone does not
/// count.
///
/// # Errors
/// [`CertRefusal::NoExtendedKeyUsage`], [`CertRefusal::MissingExtendedKeyUsage`], or
/// [`CertRefusal::Unparsable`] if the certificate or the extension does not parse.
pub fn check_extended_key_usage(end_entity: &CertificateDer<'_>) -> Result<(), CertRefusal> {
    let unparsable = |e: &dyn fmt::Display| CertRefusal::Unparsable {
        reason: e.to_string(),
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|e| unparsable(&e))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| unparsable(&e))?
        .ok_or(CertRefusal::NoExtendedKeyUsage)?
        .value;
    let missing = match (eku.server_auth, eku.client_auth) {
        (true, true) => return Ok(()),
        (true, false) => "clientAuth",
        (false, true) => "serverAuth",
        (false, false) => "serverAuth and clientAuth",
    };
    Err(CertRefusal::MissingExtendedKeyUsage { missing })
}

/// What a verifier knows about this peer's CA, to name it in refusals.
#[derive(Clone, Debug)]
struct OwnCa {
    /// The DER of the CA's subject name.
    subject: Vec<u8>,
    /// The CA's cluster name.
    name: String,
}

impl OwnCa {
    fn new(ca: &CertificateDer<'_>) -> Result<Self, NetError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(ca.as_ref()).map_err(|e| NetError::Config {
                reason: format!("the cluster CA certificate does not parse: {e}"),
            })?;
        Ok(Self {
            subject: cert.subject().as_raw().to_vec(),
            name: display_name(cert.subject()),
        })
    }

    /// Turns webpki's verdict on `end_entity` into rumor's: a certificate that does not chain
    /// to this CA is a [`CertRefusal::ForeignCa`] naming its issuer; any other webpki error
    /// stands; a certificate webpki accepts must still pass [`check_extended_key_usage`].
    fn judge<T>(
        &self,
        end_entity: &CertificateDer<'_>,
        webpki: Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        match webpki {
            Ok(verified) => {
                check_extended_key_usage(end_entity)?;
                Ok(verified)
            }
            Err(rustls::Error::InvalidCertificate(
                e @ (CertificateError::UnknownIssuer | CertificateError::BadSignature),
            )) => {
                let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity.as_ref()) else {
                    return Err(rustls::Error::InvalidCertificate(e));
                };
                let issuer = cert.issuer();
                let theirs = display_name(issuer);
                Err(if issuer.as_raw() == self.subject.as_slice() {
                    CertRefusal::ForeignCaSameName { name: theirs }
                } else {
                    CertRefusal::ForeignCa {
                        theirs,
                        ours: self.name.clone(),
                    }
                }
                .into())
            }
            Err(e) => Err(e),
        }
    }
}

/// The server side's client-certificate verifier: rustls' `WebPkiClientVerifier` against the
/// cluster CA, then rumor's checks (see the module documentation).
#[derive(Debug)]
pub struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    ca: OwnCa,
}

impl ClusterClientVerifier {
    /// A verifier trusting only `identity`'s CA.
    ///
    /// # Errors
    /// [`NetError::Tls`] if the CA is unusable as a trust anchor; [`NetError::Verifier`] if
    /// rustls cannot build its verifier; [`NetError::Config`] if the CA does not parse.
    pub fn new(identity: &PeerIdentity) -> Result<Self, NetError> {
        let inner = WebPkiClientVerifier::builder_with_provider(root_store(identity)?, provider())
            .build()
            .map_err(NetError::Verifier)?;
        Ok(Self {
            inner,
            ca: OwnCa::new(&identity.ca)?,
        })
    }
}

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.ca.judge(
            end_entity,
            self.inner
                .verify_client_cert(end_entity, intermediates, now),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client side's server-certificate verifier: rustls' `WebPkiServerVerifier` against the
/// cluster CA, then rumor's checks (see the module documentation).
#[derive(Debug)]
pub struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ca: OwnCa,
}

impl ClusterServerVerifier {
    /// A verifier trusting only `identity`'s CA.
    ///
    /// # Errors
    /// [`NetError::Tls`] if the CA is unusable as a trust anchor; [`NetError::Verifier`] if
    /// rustls cannot build its verifier; [`NetError::Config`] if the CA does not parse.
    pub fn new(identity: &PeerIdentity) -> Result<Self, NetError> {
        let inner = WebPkiServerVerifier::builder_with_provider(root_store(identity)?, provider())
            .build()
            .map_err(NetError::Verifier)?;
        Ok(Self {
            inner,
            ca: OwnCa::new(&identity.ca)?,
        })
    }
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.ca.judge(
            end_entity,
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// A handshake that failed over a certificate, as one side of the connection saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The remote side closed the connection with a TLS alert about certificates: it refused
    /// this peer's certificate.
    ByRemote {
        /// The TLS alert (RFC 8446 §6), e.g. 48 for unknown_ca.
        alert: u8,
        /// The remote side's reason text, made printable; may be empty.
        reason: String,
    },
    /// This side refused the remote's certificate.
    ByUs {
        /// The TLS alert this side sent.
        alert: u8,
        /// rustls' description of what is wrong (names the other cluster's CA when it is
        /// one), made printable.
        reason: String,
    },
}

/// How both [`CertRefusal::ForeignCa`] messages begin.
const FOREIGN_CA_PREFIX: &str = "certificate from another cluster CA";

/// Longest reason text kept from a refusal, in characters.
const MAX_REASON_LEN: usize = 300;

impl TlsRefusal {
    /// The refusal behind a failed connection, if it was about certificates: a QUIC close with
    /// a crypto error code (0x100 + TLS alert, RFC 9001 §4.8) whose alert is one of the
    /// certificate alerts ([`is_certificate_alert`]).
    pub fn from_connection_error(error: &ConnectionError) -> Option<Self> {
        let (code, reason, by_remote) = match error {
            ConnectionError::ConnectionClosed(close) => (
                u64::from(close.error_code),
                String::from_utf8_lossy(&close.reason).into_owned(),
                true,
            ),
            ConnectionError::TransportError(e) => (u64::from(e.code), e.reason.clone(), false),
            _ => return None,
        };
        if !(0x100..0x200).contains(&code) {
            return None;
        }
        let alert = u8::try_from(code & 0xff).ok()?;
        if !is_certificate_alert(alert) {
            return None;
        }
        let reason = printable(&tidy_reason(&reason), MAX_REASON_LEN);
        Some(if by_remote {
            Self::ByRemote { alert, reason }
        } else {
            Self::ByUs { alert, reason }
        })
    }

    /// The refusal behind a failed send or connection attempt, if it was about certificates
    /// (see [`TlsRefusal::from_connection_error`]).
    pub fn from_net_error(error: &NetError) -> Option<Self> {
        match error {
            NetError::Handshake { source, .. } | NetError::Connection { source, .. } => {
                Self::from_connection_error(source)
            }
            _ => None,
        }
    }
}

impl fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ByRemote { alert, reason } => {
                write!(
                    f,
                    "refused this peer's certificate (TLS alert {})",
                    alert_name(*alert)
                )?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Self::ByUs { reason, .. } if reason.starts_with(FOREIGN_CA_PREFIX) => {
                write!(f, "presented a {reason}")
            }
            Self::ByUs { alert, reason } => {
                write!(
                    f,
                    "presented a certificate this peer refused (TLS alert {})",
                    alert_name(*alert)
                )?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether a TLS alert (RFC 8446 §6.2) says a certificate was refused: bad_certificate (42),
/// unsupported_certificate (43), certificate_revoked (44), certificate_expired (45),
/// certificate_unknown (46), unknown_ca (48), access_denied (49), decrypt_error (51, a
/// certificate signature that does not verify) or certificate_required (116).
pub fn is_certificate_alert(alert: u8) -> bool {
    matches!(alert, 42..=46 | 48 | 49 | 51 | 116)
}

/// The RFC 8446 name of a TLS alert, e.g. "unknown_ca"; "alert N" for others.
pub fn alert_name(alert: u8) -> String {
    let name = match alert {
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        80 => "internal_error",
        109 => "missing_extension",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return format!("alert {alert}"),
    };
    name.to_string()
}

/// rustls' text for a refused certificate, shortened: "invalid peer certificate: " and the
/// `Other(OtherError(..))` wrapping of rumor's own refusals are dropped, so what remains is
/// e.g. "certificate from another cluster CA, ...".
fn tidy_reason(reason: &str) -> String {
    let reason = reason
        .strip_prefix("invalid peer certificate: ")
        .unwrap_or(reason);
    reason
        .strip_prefix("Other(OtherError(")
        .and_then(|r| r.strip_suffix("))"))
        .unwrap_or(reason)
        .to_string()
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
        .send_window(SEND_WINDOW_BYTES)
        // No QUIC datagrams (RFC 9221): rumor never reads them, so a peer must not be able to
        // send any. Without a receive buffer the max_datagram_frame_size transport parameter
        // is not sent, and the remote's Connection::max_datagram_size() is None.
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0);
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
    let verifier = Arc::new(ClusterClientVerifier::new(identity)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
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
    let verifier = Arc::new(ClusterServerVerifier::new(identity)?);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{
        init_cluster_ca, init_legacy_ca, issue, issue_with, load_identity, IssueOptions,
        CLUSTER_SERVER_NAME,
    };
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
