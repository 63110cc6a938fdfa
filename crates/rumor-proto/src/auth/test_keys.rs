//! Ed25519 keys made from seeds, and a small test CA, for the simulator, the fuzzer and tests.
//!
//! These are not certificates and no running peer uses them: a test credential is the bytes
//! `rumor-test-credential/1 | public key (32) | CA signature (64)`, where the CA signs the tag and
//! the key. They make real signatures (ring's Ed25519, deterministic for a seed), so the
//! simulator checks exactly what a real cluster checks: binding, admission and signatures.

use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::{AuthError, Credential, KeyId, PeerKeys, Signature, Signer, Verifier};
use crate::id::PeerId;

const TAG: &[u8] = b"rumor-test-credential/1";
const KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

fn key_pair(domain: u8, seed: u64) -> Ed25519KeyPair {
    let mut bytes = [0u8; 32];
    bytes[0] = domain;
    bytes[1..9].copy_from_slice(&seed.to_le_bytes());
    // Any 32 bytes are a valid Ed25519 seed.
    match Ed25519KeyPair::from_seed_unchecked(&bytes) {
        Ok(pair) => pair,
        Err(_) => unreachable!("ring accepts every 32-byte Ed25519 seed"),
    }
}

/// A test certificate authority: it issues [`TestKeys`] and backs a [`TestVerifier`].
pub struct TestCa {
    key: Ed25519KeyPair,
}

impl TestCa {
    /// The CA made from `seed` (the simulator's and tests' cluster uses seed 0).
    pub fn new(seed: u64) -> Self {
        Self {
            key: key_pair(0xCA, seed),
        }
    }

    /// Issues the member keys made from `seed`.
    pub fn issue(&self, seed: u64) -> TestKeys {
        let key = key_pair(0x01, seed);
        let public = key.public_key().as_ref().to_vec();
        let mut signed = TAG.to_vec();
        signed.extend_from_slice(&public);
        let ca_signature = self.key.sign(&signed);
        let mut bytes = signed;
        bytes.extend_from_slice(ca_signature.as_ref());
        TestKeys {
            key,
            credential: Credential::new(bytes),
        }
    }

    /// A verifier that admits this CA's credentials.
    pub fn verifier(&self) -> TestVerifier {
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(self.key.public_key().as_ref());
        TestVerifier { ca_public: public }
    }
}

/// A member's test keys: an Ed25519 key pair and its credential.
pub struct TestKeys {
    key: Ed25519KeyPair,
    credential: Credential,
}

impl TestKeys {
    /// The credential's key id.
    pub fn key_id(&self) -> KeyId {
        self.credential.key_id()
    }
}

impl Signer for TestKeys {
    fn credential(&self) -> &Credential {
        &self.credential
    }

    fn sign(&self, statement: &[u8]) -> Result<Signature, AuthError> {
        Ok(Signature(self.key.sign(statement).as_ref().to_vec()))
    }
}

/// Admits the credentials of one [`TestCa`] and checks Ed25519 signatures under them.
#[derive(Clone)]
pub struct TestVerifier {
    ca_public: [u8; KEY_LEN],
}

/// A test credential's parts: the bytes the CA signed, the member's public key, the CA's
/// signature.
struct Parts<'a> {
    signed: &'a [u8],
    public: &'a [u8],
    ca_signature: &'a [u8],
}

fn split(credential: &Credential) -> Result<Parts<'_>, AuthError> {
    let bytes = credential.as_bytes();
    if bytes.len() != TAG.len() + KEY_LEN + SIGNATURE_LEN || !bytes.starts_with(TAG) {
        return Err(AuthError::Credential("not a test credential".into()));
    }
    let (signed, ca_signature) = bytes.split_at(TAG.len() + KEY_LEN);
    Ok(Parts {
        signed,
        public: &signed[TAG.len()..],
        ca_signature,
    })
}

impl Verifier for TestVerifier {
    fn admit(&self, credential: &Credential) -> Result<(), AuthError> {
        let parts = split(credential)?;
        UnparsedPublicKey::new(&ED25519, &self.ca_public)
            .verify(parts.signed, parts.ca_signature)
            .map_err(|_| AuthError::Credential("not issued by this cluster's test CA".into()))
    }

    fn verify(
        &self,
        credential: &Credential,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), AuthError> {
        let parts = split(credential)?;
        UnparsedPublicKey::new(&ED25519, parts.public)
            .verify(statement, &signature.0)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// The keys of test member `n` in the cluster of [`TestCa::new(0)`], and its peer id (seed `n`).
pub fn member(n: u64) -> (PeerId, PeerKeys) {
    member_of(&TestCa::new(0), n)
}

/// The keys of test member `n` of `ca`, and its peer id (data dir seed `n`).
pub fn member_of(ca: &TestCa, n: u64) -> (PeerId, PeerKeys) {
    let keys = ca.issue(n);
    let id = PeerId::bound(&keys.key_id(), n.to_be_bytes());
    let keys = PeerKeys {
        signer: Arc::new(keys),
        verifier: Arc::new(ca.verifier()),
    };
    (id, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_under_their_own_key_and_ca() {
        let ca = TestCa::new(0);
        let (a, b) = (ca.issue(1), ca.issue(2));
        let verifier = ca.verifier();
        let sig = a.sign(b"hello").unwrap();
        assert!(verifier.admit(a.credential()).is_ok());
        assert!(verifier.verify(a.credential(), b"hello", &sig).is_ok());
        assert_eq!(
            verifier.verify(b.credential(), b"hello", &sig),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verifier.verify(a.credential(), b"hellO", &sig),
            Err(AuthError::BadSignature)
        );
        let stranger = TestCa::new(9).issue(1);
        assert!(verifier.admit(stranger.credential()).is_err());
    }

    #[test]
    fn bound_ids_carry_their_key_prefix() {
        let (id, keys) = member(3);
        assert!(keys.key_id().binds(&id));
        let (other, _) = member(4);
        assert!(!keys.key_id().binds(&other));
    }
}
