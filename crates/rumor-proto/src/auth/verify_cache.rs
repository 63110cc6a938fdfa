//! A [`Verifier`] that remembers the signatures it has found valid, so that one signed
//! statement checked by many holders of the verifier costs one signature verification.
//!
//! Whether a signature verifies under a credential's key is a pure function of three byte
//! strings: the credential, the statement and the signature. The cache keys each valid triple
//! by the SHA-256 of the three, each prefixed by its length (so no two triples share an
//! encoding), and answers a triple it holds without verifying again. It holds only successes:
//! a signature that does not verify is checked, and refused, every time it is presented, and a
//! triple differing from a cached one in any byte (another signature, another statement,
//! another credential) is a different key and is verified. Admission ([`Verifier::admit`]) is
//! never cached: it can depend on the clock (validity) and on revocation.
//!
//! The simulator gives all its peers one of these around the test verifier: every peer still
//! checks every delta and record it receives, through the same calls and counters, but a
//! statement signed once is verified once per run instead of once per peer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{AuthError, Credential, Signature, Verifier};

/// Valid triples remembered; the cache is emptied when it fills (they are verified again on
/// their next check).
pub const MAX_CACHED_SIGNATURES: usize = 1 << 20;

/// A [`Verifier`] around `V` with a cache of valid signatures. See the module docs.
pub struct CachingVerifier<V> {
    inner: V,
    /// SHA-256 of each valid (credential, statement, signature), length-prefixed.
    valid: Mutex<HashSet<[u8; 32]>>,
    /// Most entries `valid` holds before it is emptied.
    capacity: usize,
    /// Signatures verified by `inner` (valid or not).
    verified: AtomicU64,
    /// Checks answered from the cache.
    hits: AtomicU64,
}

impl<V: Verifier> CachingVerifier<V> {
    /// Wraps `inner` with an empty cache of at most [`MAX_CACHED_SIGNATURES`] entries.
    pub fn new(inner: V) -> Self {
        Self::with_capacity(inner, MAX_CACHED_SIGNATURES)
    }

    /// Wraps `inner` with an empty cache of at most `capacity` entries (at least one).
    pub fn with_capacity(inner: V, capacity: usize) -> Self {
        Self {
            inner,
            valid: Mutex::new(HashSet::new()),
            capacity: capacity.max(1),
            verified: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// How many signatures the wrapped verifier has checked (valid or not).
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// How many checks were answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The cache key of a triple: SHA-256 over each part's length (8 bytes, little-endian) and
/// bytes.
fn key(credential: &Credential, statement: &[u8], signature: &Signature) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [credential.as_bytes(), statement, &signature.0] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part);
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    bytes
}

impl<V: Verifier> Verifier for CachingVerifier<V> {
    fn admit(&self, credential: &Credential) -> Result<(), AuthError> {
        self.inner.admit(credential)
    }

    fn verify(
        &self,
        credential: &Credential,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), AuthError> {
        let key = key(credential, statement, signature);
        // A poisoned lock only means another holder panicked mid-insert; the set is still a
        // set of valid keys.
        if self
            .valid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.verified.fetch_add(1, Ordering::Relaxed);
        self.inner.verify(credential, statement, signature)?;
        let mut valid = self.valid.lock().unwrap_or_else(PoisonError::into_inner);
        if valid.len() >= self.capacity {
            valid.clear();
        }
        valid.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::TestCa;
    use crate::auth::Signer;

    #[test]
    fn a_valid_signature_is_verified_once_and_a_bad_one_every_time() {
        let ca = TestCa::new(0);
        let (a, b) = (ca.issue(1), ca.issue(2));
        let cache = CachingVerifier::new(ca.verifier());
        let sig = a.sign(b"hello").unwrap();
        for _ in 0..3 {
            assert!(cache.verify(a.credential(), b"hello", &sig).is_ok());
        }
        assert_eq!((cache.verified(), cache.hits()), (1, 2));
        // Any byte changed is another triple: verified, and refused, each time.
        let mut forged = sig.clone();
        forged.0[0] ^= 1;
        for _ in 0..2 {
            assert_eq!(
                cache.verify(a.credential(), b"hello", &forged),
                Err(AuthError::BadSignature)
            );
            assert_eq!(
                cache.verify(a.credential(), b"hellO", &sig),
                Err(AuthError::BadSignature)
            );
            assert_eq!(
                cache.verify(b.credential(), b"hello", &sig),
                Err(AuthError::BadSignature)
            );
        }
        assert_eq!((cache.verified(), cache.hits()), (7, 2));
    }

    #[test]
    fn parts_cannot_shift_bytes_into_each_other() {
        let cred = Credential::new(b"ab".to_vec());
        let moved = Credential::new(b"a".to_vec());
        let sig = Signature(b"s".to_vec());
        assert_ne!(key(&cred, b"c", &sig), key(&moved, b"bc", &sig));
    }

    #[test]
    fn a_full_cache_is_emptied_and_still_answers_correctly() {
        let ca = TestCa::new(0);
        let a = ca.issue(1);
        let cache = CachingVerifier::with_capacity(ca.verifier(), 2);
        let sigs: Vec<Signature> = (0..3u8).map(|i| a.sign(&[i]).unwrap()).collect();
        for (i, sig) in sigs.iter().enumerate() {
            assert!(cache.verify(a.credential(), &[i as u8], sig).is_ok());
        }
        // The third insert emptied the cache: the first is verified again, still valid.
        assert!(cache.verify(a.credential(), &[0], &sigs[0]).is_ok());
        assert_eq!(cache.verified(), 4);
        assert!(cache.verify(a.credential(), &[1], &sigs[0]).is_err());
    }
}
