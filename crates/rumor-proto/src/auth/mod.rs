//! Who said it: peer identities bound to certificates, and the origin signatures that let any
//! peer check a delta or a member record that reached it through others.
//!
//! - A member's [`Credential`] is its certificate (DER), issued by the cluster CA. Its
//!   [`KeyId`] is the SHA-256 of those bytes.
//! - A [`PeerId`] is bound to a credential: its first [`KEY_PREFIX_LEN`] bytes are the key id's
//!   first bytes, the rest is a random seed kept in the peer's data dir ([`PeerId::bound`]). So a
//!   receiver checks from the id alone which certificate may speak for it, and a peer that lost
//!   its data dir comes back as a new id (no version of the old one can be reused).
//! - Every delta and every member record is signed by its origin over a [`statement`]: fixed,
//!   domain-separated bytes naming everything that must not change on the way (for a delta, the
//!   SHA-256 of its values, [`content_hash`]). Forwarders pass the signature on unchanged.
//!
//! The core signs through a [`Signer`] and checks through a [`Verifier`], both passed in
//! ([`PeerKeys`]): the `rumor` crate implements them with the certificate's key and the cluster
//! CA through rustls' crypto provider; [`test_keys`] implements them with Ed25519 keys made from
//! seeds, for the simulator and the tests. Checking a credential against the CA reads the wall
//! clock (certificate validity); that is the implementation's business, not the core's.

pub mod statement;
pub mod test_keys;
pub mod verify_cache;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::PeerId;

pub use statement::{content_hash, contents_fingerprint, drain_summary, ContentHash, RETRACTED};

/// Bytes of a [`PeerId`] taken from its credential's [`KeyId`] (the rest is the data dir's seed).
pub const KEY_PREFIX_LEN: usize = 8;
/// Longest signature accepted on the wire (bytes). ECDSA P-384 in DER is at most 104.
pub const MAX_SIGNATURE_LEN: usize = 512;
/// Longest credential accepted on the wire (bytes).
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

impl PeerId {
    /// The id of the peer holding the certificate with key id `key` and the data dir seed
    /// `seed`: the key's prefix, then the seed.
    pub fn bound(key: &KeyId, seed: [u8; 8]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..KEY_PREFIX_LEN].copy_from_slice(&key.prefix());
        bytes[KEY_PREFIX_LEN..].copy_from_slice(&seed);
        Self::from_uuid(uuid::Uuid::from_bytes(bytes))
    }

    /// The first [`KEY_PREFIX_LEN`] bytes: those of the key id of the only certificate that
    /// may speak for this peer.
    pub fn key_prefix(&self) -> [u8; KEY_PREFIX_LEN] {
        let mut prefix = [0u8; KEY_PREFIX_LEN];
        prefix.copy_from_slice(&self.as_uuid().as_bytes()[..KEY_PREFIX_LEN]);
        prefix
    }
}

/// The SHA-256 of a [`Credential`]'s bytes: which certificate speaks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The key id of a credential (its DER bytes, or a test credential's bytes).
    pub fn of(credential: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, credential);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The key id whose 32 bytes are `bytes` (a SHA-256 computed elsewhere, e.g. read back
    /// from a revocation list); no hashing is done.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first [`KEY_PREFIX_LEN`] bytes, which every [`PeerId`] bound to it starts with.
    pub fn prefix(&self) -> [u8; KEY_PREFIX_LEN] {
        let mut prefix = [0u8; KEY_PREFIX_LEN];
        prefix.copy_from_slice(&self.0[..KEY_PREFIX_LEN]);
        prefix
    }

    /// Whether `peer` is bound to this key (its id starts with this key's prefix).
    pub fn binds(&self, peer: &PeerId) -> bool {
        peer.key_prefix() == self.prefix()
    }

    /// The first 8 bytes in hex, as logs show a certificate.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl fmt::Display for KeyId {
    /// All 64 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A member's credential: its certificate as issued by the cluster CA (DER; at most
/// [`MAX_CREDENTIAL_LEN`] bytes on the wire). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential(Arc<[u8]>);

impl Credential {
    /// Wraps credential bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its [`KeyId`] (a SHA-256 over the bytes; callers that check many records cache it).
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.0)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential({} bytes, {})",
            self.0.len(),
            self.key_id().short()
        )
    }
}

impl Serialize for Credential {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(Self(Arc::from(bytes.into_vec())))
    }
}

/// An origin's signature over a [`statement`] (at most [`MAX_SIGNATURE_LEN`] bytes on the wire).
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({} bytes)", self.0.len())
    }
}

/// Why a credential or a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is not a member's: not issued by the cluster CA, expired, revoked, or
    /// unreadable. The text says which.
    #[error("credential refused: {0}")]
    Credential(String),
    /// The signature does not verify under the credential's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The signer could not sign (its key is unusable).
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Signs this peer's statements with its certificate's private key.
pub trait Signer: Send + Sync {
    /// This peer's credential (its certificate), carried in its member record.
    fn credential(&self) -> &Credential;

    /// Signs `statement` ([`statement`]'s bytes).
    ///
    /// Errors: [`AuthError::Signing`] when the key cannot sign.
    fn sign(&self, statement: &[u8]) -> Result<Signature, AuthError>;
}

/// Checks credentials against the cluster's trust root and signatures against credentials.
pub trait Verifier: Send + Sync {
    /// Whether `credential` belongs to a member now: issued by the cluster CA, valid, usable
    /// for both client and server authentication, not revoked.
    ///
    /// Errors: [`AuthError::Credential`] naming what is wrong.
    fn admit(&self, credential: &Credential) -> Result<(), AuthError>;

    /// Whether `signature` is `credential`'s key's signature over `statement`.
    ///
    /// Errors: [`AuthError::BadSignature`], or [`AuthError::Credential`] when the credential's
    /// key cannot be read.
    fn verify(
        &self,
        credential: &Credential,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), AuthError>;
}

/// What a core signs and checks with: this peer's signer and the cluster's verifier.
#[derive(Clone)]
pub struct PeerKeys {
    /// Signs this peer's records and deltas.
    pub signer: Arc<dyn Signer>,
    /// Checks everyone's.
    pub verifier: Arc<dyn Verifier>,
}

impl PeerKeys {
    /// This peer's key id.
    pub fn key_id(&self) -> KeyId {
        self.signer.credential().key_id()
    }
}

impl fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerKeys")
            .field("credential", self.signer.credential())
            .finish_non_exhaustive()
    }
}
