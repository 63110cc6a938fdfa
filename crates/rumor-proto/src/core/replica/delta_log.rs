//! The bounded delta log: recent deltas kept so peers that missed them can pull them
//! (anti-entropy), and so a snapshot can be topped up with deltas it lacks (docs/ALGORITHM.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::id::PeerId;

/// One logged delta.
#[derive(Clone, Debug)]
pub struct LoggedDelta {
    /// The weight it was published with.
    pub weight: f32,
    /// Flat values, already scaled by `weight`.
    pub values: Arc<[f32]>,
    /// When this peer applied (or published) it.
    pub logged_at: Instant,
    /// The origin's signature, passed on with the delta when it is pushed again.
    pub signature: crate::auth::Signature,
    /// [`LoggedDelta::encoded_bytes`], once asked for.
    pub encoded: std::cell::OnceCell<u64>,
}

impl LoggedDelta {
    /// Bytes of its values on the wire ([`encoded_bytes`]), computed once.
    pub fn encoded_bytes(&self) -> u64 {
        *self.encoded.get_or_init(|| encoded_bytes(&self.values))
    }
}

/// Bytes of `values` on the wire: the data of their compact encoding
/// ([`crate::compact::CompactValues`]), which decides between eager and lazy push.
pub fn encoded_bytes(values: &[f32]) -> u64 {
    crate::compact::CompactValues::encode(values).data_bytes() as u64
}

/// Deltas by `(origin, version)`, oldest evicted first once over `max_bytes`.
#[derive(Debug)]
pub struct DeltaLog {
    max_bytes: usize,
    bytes: usize,
    entries: HashMap<(PeerId, u64), LoggedDelta>,
    order: VecDeque<(PeerId, u64)>,
    evicted: u64,
}

impl DeltaLog {
    /// An empty log holding at most `max_bytes` of delta values (4 bytes per f32).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Adds a delta, evicting the oldest ones past the byte bound. A delta larger than the
    /// whole bound is not kept.
    pub fn insert(&mut self, origin: PeerId, version: u64, delta: LoggedDelta) {
        let size = delta.values.len() * 4;
        if size > self.max_bytes || self.entries.contains_key(&(origin, version)) {
            return;
        }
        while self.bytes + size > self.max_bytes {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.entries.remove(&key) {
                self.bytes -= old.values.len() * 4;
                self.evicted += 1;
            }
        }
        self.bytes += size;
        self.entries.insert((origin, version), delta);
        self.order.push_back((origin, version));
    }

    /// The delta `(origin, version)` if still held.
    pub fn get(&self, origin: PeerId, version: u64) -> Option<&LoggedDelta> {
        self.entries.get(&(origin, version))
    }

    /// Forgets `(origin, version)` (an equivocated version: neither delta may be pushed again).
    pub fn remove(&mut self, origin: PeerId, version: u64) {
        if let Some(old) = self.entries.remove(&(origin, version)) {
            self.bytes -= old.values.len() * 4;
        }
    }

    /// The versions of `origin` held, in increasing order.
    pub fn versions_of(&self, origin: PeerId) -> Vec<u64> {
        let mut versions: Vec<u64> = self
            .entries
            .keys()
            .filter(|(o, _)| *o == origin)
            .map(|&(_, v)| v)
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Bytes of delta values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of deltas held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Deltas evicted so far.
    #[cfg(test)]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_past_the_byte_bound() {
        let a = PeerId::from_u128(1);
        let mut log = DeltaLog::new(40);
        for v in 1..=5 {
            log.insert(
                a,
                v,
                LoggedDelta {
                    weight: 1.0,
                    values: vec![0.0; 4].into(),
                    logged_at: Instant::now(),
                    signature: Default::default(),
                    encoded: Default::default(),
                },
            );
        }
        assert_eq!(log.len(), 2);
        assert!(log.get(a, 1).is_none());
        assert!(log.get(a, 5).is_some());
        assert_eq!(log.evicted(), 3);
        assert!(log.bytes() <= 40);
    }
}
