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
//! The primitives (`certs::signature`) also sign and check the CA's revocation list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumor_proto::auth::{AuthError, Credential, KeyId, PeerKeys, Signature, Signer, Verifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, SignatureScheme};

use super::verify::{provider, ClusterClientVerifier};
use super::{DenyList, NetError};
use crate::certs::signature::{key_signer, sign_statement, verify_statement};
pub use crate::certs::signature::{SIGNING_SCHEMES, VERIFY_SCHEMES};
use crate::certs::PeerIdentity;

/// Longest time a successful admission is remembered before the credential is checked against
/// the CA again.
pub const ADMIT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Most admissions remembered at once (key ids of members; a cluster has far fewer).
pub const ADMIT_CACHE_CAPACITY: usize = 4096;

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
        let signer = key_signer(&identity.key).map_err(|reason| NetError::Config {
            reason: format!("the private key of {:?}: {reason}", identity.name),
        })?;
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
