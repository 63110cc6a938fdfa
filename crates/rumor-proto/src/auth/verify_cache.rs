//! A [`Verifier`] that remembers the signatures it has found valid, so that one signed
//! statement checked by many holders of the verifier costs one signature verification.
//!
//! Whether a signature verifies under a credential's key is a pure function of three byte
//! strings: the credential, the statement and the signature. The cache keys each valid triple
//! by the SHA-256 of the three, each prefixed by its length (so no two triples share an
//! encoding), and answers a triple it holds without verifying again. It holds only successes:
//! a signature that does not verify is checked, and refused, every time it is presented, and a
//! triple differing from a cached one in any byte (another signature, another statement,
//! another credential) is a different key and is verified.
//!
//! Admission ([`Verifier::admit`]) is not cached unless asked for
//! ([`CachingVerifier::caching_admissions`]): a real CA's verdict depends on the clock
//! (validity) and on revocation, not on the credential's bytes alone. The test CA's depends
//! on nothing else, and for it admitted credentials are remembered by [`KeyId`] (their
//! SHA-256), successes only, like signatures.
//!
//! The simulator gives all its peers one of these around the test verifier: every peer still
//! checks every delta, record and credential it receives, through the same calls and
//! counters, but a statement signed once is verified once per run instead of once per peer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{AuthError, Credential, KeyId, Signature, Verifier};

/// Valid triples remembered; the cache is emptied when it fills (they are verified again on
/// their next check).
pub const MAX_CACHED_SIGNATURES: usize = 1 << 20;

/// A [`Verifier`] around `V` with a cache of valid signatures. See the module docs.
pub struct CachingVerifier<V> {
    inner: V,
    /// SHA-256 of each valid (credential, statement, signature), length-prefixed.
    valid: Mutex<HashSet<[u8; 32]>>,
    /// Most entries `valid` (and `admitted`) holds before it is emptied.
    capacity: usize,
    /// Credentials admitted, when admissions are cached (`None`: every one goes to `inner`).
    admitted: Option<Mutex<HashSet<KeyId>>>,
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
            admitted: None,
            verified: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Remembers admitted credentials too. Only for an `inner` whose [`Verifier::admit`] is a
    /// pure function of the credential's bytes (the test CA's): a real CA's verdict changes
    /// with the clock and with revocation.
    pub fn caching_admissions(mut self) -> Self {
        self.admitted = Some(Mutex::new(HashSet::new()));
        self
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
        let Some(admitted) = &self.admitted else {
            return self.inner.admit(credential);
        };
        let key = credential.key_id();
        if lock(admitted).contains(&key) {
            return Ok(());
        }
        self.inner.admit(credential)?;
        remember(&mut lock(admitted), key, self.capacity);
        Ok(())
    }

    fn verify(
        &self,
        credential: &Credential,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), AuthError> {
        let key = key(credential, statement, signature);
        if lock(&self.valid).contains(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.verified.fetch_add(1, Ordering::Relaxed);
        self.inner.verify(credential, statement, signature)?;
        remember(&mut lock(&self.valid), key, self.capacity);
        Ok(())
    }
}

/// Locks a cache. A poisoned lock only means another holder panicked mid-insert; the set is
/// still a set of checked keys.
fn lock<T>(set: &Mutex<HashSet<T>>) -> std::sync::MutexGuard<'_, HashSet<T>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds `key` to `set`, emptying it first when it holds `capacity` keys.
fn remember<T: std::hash::Hash + Eq>(set: &mut HashSet<T>, key: T, capacity: usize) {
    if set.len() >= capacity {
        set.clear();
    }
    set.insert(key);
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
    fn admissions_are_cached_only_when_asked_and_only_when_admitted() {
        let ca = TestCa::new(0);
        let member = ca.issue(1);
        let stranger = TestCa::new(9).issue(1);
        for cache in [
            CachingVerifier::new(ca.verifier()),
            CachingVerifier::new(ca.verifier()).caching_admissions(),
        ] {
            for _ in 0..2 {
                assert!(cache.admit(member.credential()).is_ok());
                assert!(cache.admit(stranger.credential()).is_err());
            }
        }
        let cache = CachingVerifier::new(ca.verifier()).caching_admissions();
        assert!(cache.admit(member.credential()).is_ok());
        assert!(lock(cache.admitted.as_ref().unwrap()).contains(&member.key_id()));
        assert!(cache.admit(stranger.credential()).is_err());
        assert_eq!(lock(cache.admitted.as_ref().unwrap()).len(), 1);
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
