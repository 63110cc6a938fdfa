//! The cluster's certificate verifiers and what a refusal says.
//!
//! rustls's webpki verifiers, wrapped ([`ClusterClientVerifier`], [`ClusterServerVerifier`]) to
//! require both extended key usages and to name the other cluster's CA in a refusal; and
//! [`TlsRefusal`], which reads a refusal back out of a failed connection. See [`super::tls`]
//! for why.

use std::fmt;
use std::sync::Arc;

use quinn::ConnectionError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use super::deny::{DenyList, Side};
use super::NetError;
use crate::certs::{display_name, printable, PeerIdentity};

/// The ring crypto provider, used for every rumor TLS configuration.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn root_store(identity: &PeerIdentity) -> Result<Arc<RootCertStore>, NetError> {
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
    /// The certificate is on this peer's deny list ([`DenyList`]): on the cluster's revocation
    /// list (`rumor certs revoke`), or quarantined after its holder signed two different deltas
    /// under one version (the name then says so).
    #[error(
        "certificate revoked: {name:?} is on this cluster's revocation list or was quarantined \
         for equivocation"
    )]
    Revoked {
        /// The member name the revocation list gives the certificate, or "quarantined
        /// equivocator ID", made printable.
        name: String,
    },
}

/// The refusal of a certificate the deny list names `name`.
fn revoked(name: Arc<str>) -> CertRefusal {
    CertRefusal::Revoked {
        name: name.to_string(),
    }
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
///
/// With a [`DenyList`] ([`ClusterClientVerifier::denying`]) a denied certificate is refused
/// first, with [`CertRefusal::Revoked`], and counted in [`DenyList::refused_incoming`].
#[derive(Debug)]
pub struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    ca: OwnCa,
    deny: DenyList,
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
            deny: DenyList::new(),
        })
    }

    /// The same verifier refusing the certificates `deny` holds, now and as it grows.
    pub fn denying(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
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
        self.deny
            .judge(end_entity.as_ref(), Side::Incoming)
            .map_err(revoked)?;
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
///
/// With a [`DenyList`] ([`ClusterServerVerifier::denying`]) a denied certificate is refused
/// first, with [`CertRefusal::Revoked`], and counted in [`DenyList::refused_outgoing`].
#[derive(Debug)]
pub struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ca: OwnCa,
    deny: DenyList,
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
            deny: DenyList::new(),
        })
    }

    /// The same verifier refusing the certificates `deny` holds, now and as it grows.
    pub fn denying(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
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
        self.deny
            .judge(end_entity.as_ref(), Side::Outgoing)
            .map_err(revoked)?;
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
