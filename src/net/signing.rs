//! Origin signatures with the member's certificate key, checked against the cluster CA: the
//! `rumor` crate's implementation of [`rumor_proto::auth`]'s [`Signer`] and [`Verifier`].
//!
//! - [`CertSigner`] signs statements with the private key of the peer's certificate, through
//!   rustls' ring provider (the same code that signs TLS handshakes). A [`Signature`] on the
//!   wire is the TLS `SignatureScheme` as a big-endian `u16`, then the signature bytes as the
//!   scheme defines them (ECDSA: DER; Ed25519: 64 bytes; RSA-PSS: the modulus' length).
//! - [`ClusterVerifier`] admits a [`Credential`] (a leaf certificate, DER) exactly as the
//!   handshake admits a client certificate ([`ClusterClientVerifier`]: chains to the cluster
//!   CA, valid now, both serverAuth and clientAuth), and checks signatures with webpki against
//!   the certificate's public key, with the provider's verification algorithms, TLS 1.3 style
//!   (one algorithm per scheme). Admissions are cached for [`ADMIT_CACHE_TTL`] (never past the
//!   certificate's expiry) so that records forwarded again and again cost no X.509 work. A
//!   credential on its [`DenyList`] (the cluster's revocation list) is refused whatever the
//!   cache says.
//!
//! [`peer_keys`] builds both from a [`PeerIdentity`]; [`peer_keys_denying`] with a deny list.
//! The same primitives sign and check the CA's revocation list (`certs::revoke`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumor_proto::auth::{AuthError, Credential, KeyId, PeerKeys, Signature, Signer, Verifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, SignatureScheme};

use super::verify::{provider, ClusterClientVerifier};
use super::{DenyList, NetError};
use crate::certs::PeerIdentity;

/// The schemes a [`CertSigner`] offers its key, in order of preference. rumor's certificates
/// (rcgen's default) are ECDSA P-256, which takes the first.
pub const SIGNING_SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// The schemes a [`ClusterVerifier`] accepts: those of TLS 1.3 a certificate key can sign with
/// (no SHA-1, no PKCS#1 v1.5).
pub const VERIFY_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Longest time a successful admission is remembered before the credential is checked against
/// the CA again.
pub const ADMIT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Most admissions remembered at once (key ids of members; a cluster has far fewer).
pub const ADMIT_CACHE_CAPACITY: usize = 4096;

/// Length of the scheme prefix of a wire [`Signature`], in bytes.
const SCHEME_LEN: usize = 2;

/// Signs with the private key of this peer's certificate; see the module documentation.
pub struct CertSigner {
    credential: Credential,
    signer: Box<dyn rustls::sign::Signer>,
}

impl CertSigner {
    /// The signer of `identity`: its leaf certificate (the first of its chain) as the
    /// credential, its private key with the first of [`SIGNING_SCHEMES`] the key supports.
    ///
    /// # Errors
    /// [`NetError::Config`] if the chain is empty, or the key is not one rustls' ring provider
    /// can sign with (unreadable, or a type none of [`SIGNING_SCHEMES`] fits).
    pub fn new(identity: &PeerIdentity) -> Result<Self, NetError> {
        let leaf = identity.chain.first().ok_or_else(|| NetError::Config {
            reason: format!("the certificate chain of {:?} is empty", identity.name),
        })?;
        let signer = key_signer(&identity.key, &format!("{:?}", identity.name))?;
        Ok(Self {
            credential: Credential::new(leaf.as_ref()),
            signer,
        })
    }

    /// The scheme this signer signs with.
    pub fn scheme(&self) -> SignatureScheme {
        self.signer.scheme()
    }
}

impl std::fmt::Debug for CertSigner {
    /// Shows the credential and the scheme, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSigner")
            .field("credential", &self.credential)
            .field("scheme", &self.signer.scheme())
            .finish_non_exhaustive()
    }
}

impl Signer for CertSigner {
    fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The scheme (2 bytes, big endian), then the signature over `statement`.
    fn sign(&self, statement: &[u8]) -> Result<Signature, AuthError> {
        sign_statement(self.signer.as_ref(), statement).map(Signature)
    }
}

/// A rustls signer for `key` with the first of [`SIGNING_SCHEMES`] the key supports, through the
/// ring provider. `owner` names the key in errors (e.g. `"peer-1"` or the CA key's path).
///
/// # Errors
/// [`NetError::Config`] if the key is not one the ring provider can sign with (unreadable, or a
/// type none of [`SIGNING_SCHEMES`] fits).
pub(crate) fn key_signer(
    key: &PrivateKeyDer<'_>,
    owner: &str,
) -> Result<Box<dyn rustls::sign::Signer>, NetError> {
    let key =
        rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| NetError::Config {
            reason: format!("the private key of {owner} cannot sign: {e}"),
        })?;
    key.choose_scheme(&SIGNING_SCHEMES)
        .ok_or_else(|| NetError::Config {
            reason: format!(
                "the private key of {owner} ({:?}) supports none of the signature schemes \
                 {SIGNING_SCHEMES:?}",
                key.algorithm()
            ),
        })
}

/// Signs `statement` with `signer`: the scheme as a big-endian `u16`, then the signature bytes
/// as the scheme defines them (the wire form of a [`Signature`]).
///
/// # Errors
/// [`AuthError::Signing`] when the key cannot sign.
pub(crate) fn sign_statement(
    signer: &dyn rustls::sign::Signer,
    statement: &[u8],
) -> Result<Vec<u8>, AuthError> {
    let signature = signer
        .sign(statement)
        .map_err(|e| AuthError::Signing(e.to_string()))?;
    let mut bytes = Vec::with_capacity(SCHEME_LEN + signature.len());
    bytes.extend_from_slice(&u16::from(signer.scheme()).to_be_bytes());
    bytes.extend_from_slice(&signature);
    Ok(bytes)
}

/// Checks `signature` (scheme, then signature, as [`sign_statement`] makes it) over
/// `statement` with the public key of the certificate `der` (any certificate webpki can read,
/// a CA's included), with `provider`'s verification algorithms, one per scheme (TLS 1.3 style).
/// The certificate itself is not judged (chain, dates, usages): callers do that.
///
/// # Errors
/// [`AuthError::BadSignature`] for a signature that is too short, names a scheme outside
/// [`VERIFY_SCHEMES`] or one that does not fit the key, or does not verify;
/// [`AuthError::Credential`] when `der` is no certificate webpki can read.
pub(crate) fn verify_statement(
    provider: &CryptoProvider,
    der: &[u8],
    statement: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    let Some((scheme, signature)) = signature.split_first_chunk::<SCHEME_LEN>() else {
        return Err(AuthError::BadSignature);
    };
    let scheme = SignatureScheme::from(u16::from_be_bytes(*scheme));
    if !VERIFY_SCHEMES.contains(&scheme) {
        return Err(AuthError::BadSignature);
    }
    // TLS 1.3: one verification algorithm per scheme, the provider's first.
    let algorithm = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .and_then(|(_, algorithms)| algorithms.first())
        .ok_or(AuthError::BadSignature)?;
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| AuthError::Credential(format!("certificate does not parse: {e}")))?;
    cert.verify_signature(*algorithm, statement, signature)
        .map_err(|_| AuthError::BadSignature)
}

/// Remembered admissions: key id → until when it stands.
#[derive(Default)]
struct AdmitCache {
    until: HashMap<KeyId, Instant>,
}

impl AdmitCache {
    fn admitted(&self, key: &KeyId, now: Instant) -> bool {
        self.until.get(key).is_some_and(|until| now < *until)
    }

    /// Remembers `key` until `until`, keeping at most `capacity` entries: expired ones go
    /// first, then the one that would expire soonest.
    fn insert(&mut self, key: KeyId, until: Instant, now: Instant, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.until.len() >= capacity && !self.until.contains_key(&key) {
            self.until.retain(|_, until| now < *until);
            if self.until.len() >= capacity {
                let soonest = self
                    .until
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(key, _)| *key);
                if let Some(soonest) = soonest {
                    self.until.remove(&soonest);
                }
            }
        }
        self.until.insert(key, until);
    }
}

/// Checks credentials against the cluster CA and signatures against credentials; see the
/// module documentation.
pub struct ClusterVerifier {
    client: ClusterClientVerifier,
    provider: Arc<CryptoProvider>,
    cache: Mutex<AdmitCache>,
    ttl: Duration,
    capacity: usize,
    deny: DenyList,
}

impl ClusterVerifier {
    /// A verifier trusting only `identity`'s CA, caching admissions for [`ADMIT_CACHE_TTL`],
    /// at most [`ADMIT_CACHE_CAPACITY`] of them.
    ///
    /// # Errors
    /// As [`ClusterClientVerifier::new`]: [`NetError::Tls`] if the CA is unusable as a trust
    /// anchor, [`NetError::Verifier`] if rustls cannot build its verifier, [`NetError::Config`]
    /// if the CA does not parse.
    pub fn new(identity: &PeerIdentity) -> Result<Self, NetError> {
        Ok(Self {
            client: ClusterClientVerifier::new(identity)?,
            provider: provider(),
            cache: Mutex::new(AdmitCache::default()),
            ttl: ADMIT_CACHE_TTL,
            capacity: ADMIT_CACHE_CAPACITY,
            deny: DenyList::new(),
        })
    }

    /// The same verifier refusing the credentials `deny` holds, now and as it grows (a
    /// remembered admission of a denied credential is dropped at its next
    /// [`Verifier::admit`]).
    pub fn denying(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
    }

    /// The same verifier remembering each admission for at most `ttl`, at most `capacity` of
    /// them; `capacity` 0 remembers none (every [`Verifier::admit`] checks against the CA).
    pub fn with_cache_limits(mut self, ttl: Duration, capacity: usize) -> Self {
        self.ttl = ttl;
        self.capacity = capacity;
        self
    }

    /// Admissions remembered now (expired ones included until they are pushed out).
    pub fn cached_admissions(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .until
            .len()
    }

    /// How long an admission of `der` may be remembered: [`ADMIT_CACHE_TTL`] (or the
    /// configured ttl), never past the certificate's notAfter.
    fn cache_for(&self, der: &[u8]) -> Duration {
        let not_after = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| cert.validity().not_after.timestamp());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match not_after {
            Some(not_after) => {
                let left = u64::try_from(not_after).unwrap_or(0).saturating_sub(now);
                self.ttl.min(Duration::from_secs(left))
            }
            None => Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for ClusterVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterVerifier")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("cached", &self.cached_admissions())
            .finish_non_exhaustive()
    }
}

/// rustls' verdict on a certificate as one sentence: rumor's own refusals
/// ([`super::verify::CertRefusal`]) as they print, webpki's without the "invalid peer
/// certificate: " prefix.
fn refusal_text(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        rustls::Error::InvalidCertificate(e) => e.to_string(),
        other => other.to_string(),
    }
}

impl Verifier for ClusterVerifier {
    /// Checks `credential` as the handshake checks a client certificate, unless an admission
    /// of the same key id is remembered.
    ///
    /// Errors: [`AuthError::Credential`] with the refusal, e.g. "certificate from another
    /// cluster CA, ...", an expired certificate, missing extended key usages, or a credential
    /// on the deny list ("certificate revoked: ...", checked before the cache, whose entry is
    /// dropped).
    fn admit(&self, credential: &Credential) -> Result<(), AuthError> {
        let key = credential.key_id();
        let now = Instant::now();
        if let Some(name) = self.deny.denied(&key) {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .until
                .remove(&key);
            let refusal = super::verify::CertRefusal::Revoked {
                name: name.to_string(),
            };
            return Err(AuthError::Credential(refusal.to_string()));
        }
        if self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admitted(&key, now)
        {
            return Ok(());
        }
        let der = CertificateDer::from(credential.as_bytes());
        self.client
            .verify_client_cert(&der, &[], UnixTime::now())
            .map_err(|e| AuthError::Credential(refusal_text(&e)))?;
        let cache_for = self.cache_for(credential.as_bytes());
        if !cache_for.is_zero() {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, now + cache_for, now, self.capacity);
        }
        Ok(())
    }

    /// Checks `signature` (scheme, then signature) over `statement` with the public key of
    /// `credential`. Does not admit the credential.
    ///
    /// Errors: [`AuthError::BadSignature`] for a signature that is too short, names a scheme
    /// outside [`VERIFY_SCHEMES`] or one that does not fit the key, or does not verify;
    /// [`AuthError::Credential`] when the credential is no certificate webpki can read.
    fn verify(
        &self,
        credential: &Credential,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), AuthError> {
        verify_statement(
            &self.provider,
            credential.as_bytes(),
            statement,
            &signature.0,
        )
    }
}

/// This peer's [`PeerKeys`]: a [`CertSigner`] with `identity`'s certificate and key, and a
/// [`ClusterVerifier`] trusting `identity`'s CA.
///
/// # Errors
/// As [`CertSigner::new`] and [`ClusterVerifier::new`].
pub fn peer_keys(identity: &PeerIdentity) -> Result<PeerKeys, NetError> {
    peer_keys_denying(identity, DenyList::new())
}

/// [`peer_keys`] whose verifier also refuses the credentials `deny` holds, now and as it grows
/// ([`ClusterVerifier::denying`]).
///
/// # Errors
/// As [`peer_keys`].
pub fn peer_keys_denying(identity: &PeerIdentity, deny: DenyList) -> Result<PeerKeys, NetError> {
    Ok(PeerKeys {
        signer: Arc::new(CertSigner::new(identity)?),
        verifier: Arc::new(ClusterVerifier::new(identity)?.denying(deny)),
    })
}

#[cfg(test)]
mod tests;
