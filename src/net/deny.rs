//! Certificates this peer no longer trusts: the key ids of the cluster's revocation list
//! (`certs::revoke`), shared by a transport's two certificate verifiers, its connection
//! registry and the origin-signature verifier ([`super::ClusterVerifier`]).
//!
//! A [`DenyList`] only grows: a key once denied stays denied for the life of the handle, as the
//! protocol core never trusts a revoked certificate again either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rumor_proto::auth::KeyId;

use crate::certs::printable;

/// Longest member name a refusal repeats from the list, in characters.
const MAX_NAME_LEN: usize = 64;

#[derive(Default)]
struct Inner {
    /// Denied key id → the name the list gives it.
    keys: RwLock<HashMap<KeyId, Arc<str>>>,
    /// Incoming handshakes refused because the client's certificate is denied.
    refused_incoming: AtomicU64,
    /// Outgoing handshakes refused because the server's certificate is denied.
    refused_outgoing: AtomicU64,
}

/// A shared set of denied certificates ([`KeyId`]s, each with the member name the revocation
/// list gives it). Cheap to clone; clones share the set and its counters.
#[derive(Clone, Default)]
pub struct DenyList {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DenyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyList")
            .field("denied", &self.len())
            .finish_non_exhaustive()
    }
}

/// Which side of a handshake judged a denied certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// This peer accepts a connection and judges the client's certificate.
    Incoming,
    /// This peer opens a connection and judges the server's certificate.
    Outgoing,
}

impl DenyList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Denies `key` (the certificate the list calls `name`). Returns true when it was not
    /// denied before.
    pub fn add(&self, key: KeyId, name: &str) -> bool {
        let mut keys = self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if keys.contains_key(&key) {
            return false;
        }
        keys.insert(key, Arc::from(printable(name, MAX_NAME_LEN)));
        true
    }

    /// The name of `key` on the list, if it is denied.
    pub fn denied(&self, key: &KeyId) -> Option<Arc<str>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Certificates denied now.
    pub fn len(&self) -> usize {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no certificate is denied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incoming handshakes refused so far because the client's certificate is denied.
    pub fn refused_incoming(&self) -> u64 {
        self.inner.refused_incoming.load(Ordering::Relaxed)
    }

    /// Outgoing handshakes refused so far because the server's certificate is denied.
    pub fn refused_outgoing(&self) -> u64 {
        self.inner.refused_outgoing.load(Ordering::Relaxed)
    }

    /// The name of the certificate `der` if it is denied (the verifiers refuse it with
    /// `CertRefusal::Revoked`), counted for `side`. Hashes `der` only when something is denied.
    pub(super) fn judge(&self, der: &[u8], side: Side) -> Result<(), Arc<str>> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(name) = self.denied(&KeyId::of(der)) else {
            return Ok(());
        };
        let counter = match side {
            Side::Incoming => &self.inner.refused_incoming,
            Side::Outgoing => &self.inner.refused_outgoing,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Err(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_denied_once_and_refusals_are_counted_by_side() {
        let deny = DenyList::new();
        let der = b"a certificate".as_slice();
        let key = KeyId::of(der);
        assert!(deny.is_empty());
        assert_eq!(deny.judge(der, Side::Incoming), Ok(()));
        assert!(deny.add(key, "peer-\u{7}x"));
        assert!(!deny.add(key, "other"), "a second add changes nothing");
        assert_eq!(deny.len(), 1);
        assert_eq!(deny.denied(&key).as_deref(), Some("peer-?x"));
        let refusal: Arc<str> = Arc::from("peer-?x");
        assert_eq!(deny.judge(der, Side::Incoming), Err(refusal.clone()));
        assert_eq!(deny.clone().judge(der, Side::Outgoing), Err(refusal));
        assert_eq!(deny.judge(b"another", Side::Outgoing), Ok(()));
        assert_eq!((deny.refused_incoming(), deny.refused_outgoing()), (1, 1));
    }
}
