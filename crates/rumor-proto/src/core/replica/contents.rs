//! What was applied under each version: the content hash of every applied delta, and per
//! origin a fingerprint of them that digests carry, so that two peers holding different
//! contents under one `(origin, version)` — an equivocating origin — find out.
//!
//! A version's content can be unknown here (a base restored from a checkpoint made before
//! contents were kept): an origin with any unknown version has no fingerprint, and is simply
//! not compared.

use std::collections::{BTreeMap, HashMap};

use crate::auth::{contents_fingerprint, ContentHash, RETRACTED};
use crate::id::PeerId;
use crate::version_vector::VersionVector;

/// Content hashes by origin and version.
#[derive(Debug, Default)]
pub struct Contents {
    by_origin: HashMap<PeerId, BTreeMap<u64, ContentHash>>,
}

impl Contents {
    /// Contents from a list of `(origin, version, content hash)` (a snapshot's).
    pub fn from_list(list: &[(PeerId, u64, ContentHash)]) -> Self {
        let mut contents = Self::default();
        for &(origin, version, content) in list {
            contents.insert(origin, version, content);
        }
        contents
    }

    /// Every known `(origin, version, content hash)`, for a snapshot.
    pub fn to_list(&self) -> Vec<(PeerId, u64, ContentHash)> {
        let mut list: Vec<(PeerId, u64, ContentHash)> = self
            .by_origin
            .iter()
            .flat_map(|(&origin, versions)| versions.iter().map(move |(&v, &c)| (origin, v, c)))
            .collect();
        list.sort_unstable_by_key(|&(origin, version, _)| (origin, version));
        list
    }

    /// Records the content of `(origin, version)` (replacing any earlier one).
    pub fn insert(&mut self, origin: PeerId, version: u64, content: ContentHash) {
        self.by_origin
            .entry(origin)
            .or_default()
            .insert(version, content);
    }

    /// The content applied under `(origin, version)`, if known.
    pub fn get(&self, origin: PeerId, version: u64) -> Option<&ContentHash> {
        self.by_origin.get(&origin)?.get(&version)
    }

    /// Whether `(origin, version)` was resolved to nothing (an equivocation).
    pub fn is_retracted(&self, origin: PeerId, version: u64) -> bool {
        self.get(origin, version) == Some(&RETRACTED)
    }

    /// Keeps only the versions present in `applied`.
    pub fn retain_applied(&mut self, applied: &VersionVector) {
        self.by_origin.retain(|origin, versions| {
            versions.retain(|&version, _| applied.contains(*origin, version));
            !versions.is_empty()
        });
    }

    /// The fingerprint of each origin of `applied` whose every applied version's content is
    /// known, sorted by origin.
    /// Computed afresh each time: one SHA-256 over 40 bytes per applied delta.
    pub fn fingerprints(&self, applied: &VersionVector) -> Vec<(PeerId, [u8; 16])> {
        let mut out = Vec::new();
        for (&origin, entry) in applied.origins() {
            let Some(versions) = self.by_origin.get(&origin) else {
                continue;
            };
            let count = entry.contiguous() + entry.exceptions_len() as u64;
            if versions.len() as u64 != count {
                continue;
            }
            let fingerprint = contents_fingerprint(origin, versions.iter().map(|(v, c)| (*v, c)));
            out.push((origin, fingerprint));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_complete_origins_and_tell_contents_apart() {
        let (a, b) = (PeerId::from_u128(1), PeerId::from_u128(2));
        let mut applied = VersionVector::new();
        for v in 1..=3 {
            applied.insert(a, v);
            applied.insert(b, v);
        }
        let mut one = Contents::default();
        let mut two = Contents::default();
        for v in 1..=3 {
            one.insert(a, v, [v as u8; 32]);
            two.insert(a, v, [v as u8; 32]);
            one.insert(b, v, [9; 32]);
        }
        // b is incomplete in `two`: not listed.
        assert_eq!(one.fingerprints(&applied).len(), 2);
        assert_eq!(two.fingerprints(&applied).len(), 1);
        assert_eq!(one.fingerprints(&applied)[0], two.fingerprints(&applied)[0]);
        two.insert(a, 2, [7; 32]);
        assert_ne!(one.fingerprints(&applied)[0], two.fingerprints(&applied)[0]);
        let round = Contents::from_list(&one.to_list());
        assert_eq!(round.to_list(), one.to_list());
    }
}
