//! A version vector with exceptions: the exact set of `(origin, version)` deltas folded into a base.
//!
//! Each origin publishes versions 1, 2, 3, … Deltas may arrive out of order, so per origin the set
//! is stored as a contiguous prefix `1..=contiguous` plus the versions above it that are present
//! (the exceptions to "everything above the prefix is missing"). This is the dotted version
//! vector idea of Preguiça et al. ("Dotted Version Vectors", 2010) restricted to one writer per
//! origin: membership tests, inserts and set differences are all exact.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::id::PeerId;

/// The versions of one origin that are present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginEntry {
    /// Every version in `1..=contiguous` is present.
    contiguous: u64,
    /// Present versions above `contiguous + 1` (never contains `contiguous + 1` itself).
    exceptions: BTreeSet<u64>,
}

impl OriginEntry {
    /// Whether `version` is present. Version 0 never is.
    pub fn contains(&self, version: u64) -> bool {
        version != 0 && (version <= self.contiguous || self.exceptions.contains(&version))
    }

    /// The contiguous prefix: all of `1..=contiguous` are present.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// The highest version present (0 when none).
    pub fn max(&self) -> u64 {
        self.exceptions
            .iter()
            .next_back()
            .copied()
            .unwrap_or(self.contiguous)
    }

    /// The versions above the contiguous prefix that are present, in increasing order.
    pub fn exceptions(&self) -> impl Iterator<Item = u64> + '_ {
        self.exceptions.iter().copied()
    }

    /// How many versions above the contiguous prefix are present.
    pub fn exceptions_len(&self) -> usize {
        self.exceptions.len()
    }

    /// Versions below `max()` that are missing (the gaps), in increasing order.
    ///
    /// A gap can be as wide as the versions a peer accepted allow; prefer
    /// [`OriginEntry::missing_at_most`] on anything that came from the network.
    pub fn missing(&self) -> Vec<u64> {
        self.missing_at_most(usize::MAX)
    }

    /// The first `limit` versions below `max()` that are missing, in increasing order.
    pub fn missing_at_most(&self, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut expect = self.contiguous + 1;
        for &v in &self.exceptions {
            while expect < v {
                if out.len() >= limit {
                    return out;
                }
                out.push(expect);
                expect += 1;
            }
            expect = v + 1;
        }
        out
    }

    fn insert(&mut self, version: u64) -> bool {
        if self.contains(version) || version == 0 {
            return false;
        }
        if version == self.contiguous + 1 {
            self.contiguous = version;
            while self.exceptions.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else {
            self.exceptions.insert(version);
        }
        true
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter_above(0)
    }

    /// Present versions greater than `floor`, in increasing order.
    fn iter_above(&self, floor: u64) -> impl Iterator<Item = u64> + '_ {
        (floor.saturating_add(1)..=self.contiguous)
            .chain(self.exceptions.range(floor.saturating_add(1)..).copied())
    }

    /// Whether every version of `self` is in `other`, in time bounded by the exception sets.
    fn is_subset_of(&self, other: &OriginEntry) -> bool {
        if self.contiguous > other.contiguous {
            let needed = self.contiguous - other.contiguous;
            if needed > other.exceptions.len() as u64 {
                return false;
            }
            if !(other.contiguous + 1..=self.contiguous).all(|v| other.exceptions.contains(&v)) {
                return false;
            }
        }
        self.exceptions.iter().all(|&v| other.contains(v))
    }

    fn union_with(&mut self, other: &OriginEntry) {
        if other.contiguous > self.contiguous {
            self.contiguous = other.contiguous;
        }
        self.exceptions.extend(other.exceptions.iter().copied());
        self.normalize();
    }

    /// Restores the invariant after decoding an entry from the network (exceptions at or below
    /// the prefix are dropped, a run continuing the prefix is absorbed).
    fn normalize(&mut self) {
        let contiguous = self.contiguous;
        self.exceptions.retain(|&v| v > contiguous);
        while self.exceptions.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }
}

/// The set of `(origin, version)` pairs folded into a base.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    entries: BTreeMap<PeerId, OriginEntry>,
}

impl VersionVector {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `(origin, version)` is present.
    pub fn contains(&self, origin: PeerId, version: u64) -> bool {
        self.entries
            .get(&origin)
            .is_some_and(|entry| entry.contains(version))
    }

    /// Adds `(origin, version)`; returns false when it was already present (or version is 0).
    pub fn insert(&mut self, origin: PeerId, version: u64) -> bool {
        if version == 0 {
            return false;
        }
        self.entries.entry(origin).or_default().insert(version)
    }

    /// Per-origin entries, by origin.
    pub fn origins(&self) -> &BTreeMap<PeerId, OriginEntry> {
        &self.entries
    }

    /// The highest version present for `origin` (0 when none).
    pub fn max_of(&self, origin: PeerId) -> u64 {
        self.entries.get(&origin).map_or(0, OriginEntry::max)
    }

    /// The contiguous prefix for `origin` (0 when none).
    pub fn contiguous_of(&self, origin: PeerId) -> u64 {
        self.entries.get(&origin).map_or(0, OriginEntry::contiguous)
    }

    /// Number of `(origin, version)` pairs present.
    pub fn len(&self) -> u64 {
        self.entries.values().fold(0u64, |acc, e| {
            acc.saturating_add(e.contiguous)
                .saturating_add(e.exceptions.len() as u64)
        })
    }

    /// Whether no pair is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some origin has a gap (a version missing below one that is present).
    pub fn has_gaps(&self) -> bool {
        self.entries.values().any(|e| !e.exceptions.is_empty())
    }

    /// All pairs present, by origin then version.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.entries
            .iter()
            .flat_map(|(&origin, entry)| entry.iter().map(move |v| (origin, v)))
    }

    /// Pairs present in `self` and not in `other`, by origin then version. The work done is
    /// bounded by what `self` holds above `other`'s contiguous prefixes, so call it with `self`
    /// the local vector when `other` came from the network.
    pub fn difference<'a>(
        &'a self,
        other: &'a VersionVector,
    ) -> impl Iterator<Item = (PeerId, u64)> + 'a {
        self.entries.iter().flat_map(move |(&origin, entry)| {
            let theirs = other.entries.get(&origin);
            let floor = theirs.map_or(0, OriginEntry::contiguous);
            entry
                .iter_above(floor)
                .filter(move |&v| !theirs.is_some_and(|t| t.contains(v)))
                .map(move |v| (origin, v))
        })
    }

    /// Whether every pair of `self` is in `other`. Time is bounded by the exception sets, so
    /// either side may come from the network.
    pub fn is_subset_of(&self, other: &VersionVector) -> bool {
        self.entries
            .iter()
            .all(|(origin, entry)| match other.entries.get(origin) {
                Some(theirs) => entry.is_subset_of(theirs),
                None => entry.contiguous == 0 && entry.exceptions.is_empty(),
            })
    }

    /// Adds every pair of `other`. Time is bounded by the exception sets.
    pub fn union_with(&mut self, other: &VersionVector) {
        for (origin, entry) in &other.entries {
            self.entries.entry(*origin).or_default().union_with(entry);
        }
    }

    /// A 64-bit FNV-1a fingerprint of the set: equal sets give equal fingerprints on every
    /// peer and build. Used to notice cheaply that two peers differ.
    pub fn fingerprint(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        for (origin, entry) in &self.entries {
            eat(origin.as_uuid().as_bytes());
            eat(&entry.contiguous.to_le_bytes());
            for v in &entry.exceptions {
                eat(&v.to_le_bytes());
            }
        }
        hash
    }

    /// Restores the internal invariant after decoding from the network. Idempotent.
    pub fn normalize(&mut self) {
        for entry in self.entries.values_mut() {
            entry.normalize();
        }
        self.entries
            .retain(|_, e| e.contiguous > 0 || !e.exceptions.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_inserts_close_the_gap() {
        let a = PeerId::from_u128(1);
        let mut vv = VersionVector::new();
        assert!(vv.insert(a, 1));
        assert!(vv.insert(a, 3));
        assert!(vv.has_gaps());
        assert_eq!(vv.origins()[&a].missing(), vec![2]);
        assert!(!vv.insert(a, 3), "duplicate");
        assert!(vv.insert(a, 2));
        assert!(!vv.has_gaps());
        assert_eq!(vv.contiguous_of(a), 3);
        assert_eq!(vv.len(), 3);
    }

    #[test]
    fn difference_and_subset() {
        let (a, b) = (PeerId::from_u128(1), PeerId::from_u128(2));
        let mut x = VersionVector::new();
        let mut y = VersionVector::new();
        for v in 1..=5 {
            x.insert(a, v);
        }
        x.insert(b, 2);
        y.insert(a, 1);
        y.insert(a, 4);
        let diff: Vec<_> = x.difference(&y).collect();
        assert_eq!(diff, vec![(a, 2), (a, 3), (a, 5), (b, 2)]);
        assert!(y.is_subset_of(&x));
        assert!(!x.is_subset_of(&y));
        y.union_with(&x);
        assert_eq!(x, y);
    }

    #[test]
    fn normalize_repairs_decoded_entries() {
        let a = PeerId::from_u128(1);
        let mut vv = VersionVector::new();
        vv.entries.insert(
            a,
            OriginEntry {
                contiguous: 2,
                exceptions: [1, 2, 3, 4, 9].into_iter().collect(),
            },
        );
        vv.normalize();
        assert_eq!(vv.contiguous_of(a), 4);
        assert_eq!(vv.max_of(a), 9);
        assert_eq!(vv.len(), 5);
    }
}
