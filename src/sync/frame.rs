//! The sync baseline's frame codec: sync frames do not go through the gossip codec or core (the
//! core would refuse an unknown kind); they travel on their own streams with their own header
//! (layout in the [`super`] module docs).

use crate::model::CompactValues;

use super::SyncError;

/// First four bytes of a sync frame.
pub const SYNC_MAGIC: [u8; 4] = *b"RSYN";
/// Version of the sync frame layout.
pub const SYNC_VERSION: u8 = 2;
/// Bytes before the values.
pub const SYNC_HEADER_LEN: usize = 22;
/// Round number of the *hello* frame (no values) each peer sends once before training, so
/// connections are set up before the first barrier, as a DDP job rendezvouses before training.
pub const HELLO_ROUND: u64 = u64::MAX;

/// Frames of rounds more than this many ahead of the current one are dropped, so a peer cannot
/// make this one buffer values without bound. With the barrier a live peer is at most one round
/// ahead; one that considered this peer down and went on alone may be further ahead, and such a
/// peer's late frames only cost a timeout.
pub const MAX_ROUNDS_AHEAD: u64 = 16;

/// One decoded sync frame.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncFrame {
    /// Round number, from 0.
    pub round: u64,
    /// Sender's index in the peer list.
    pub index: u32,
    /// The sender's budget is spent; this is its final model.
    pub last: bool,
    /// The sender's update since the last average (its whole model when `last`), flat.
    pub values: Vec<f32>,
}

impl SyncFrame {
    /// Encodes the frame (see the module docs for the layout); the values go in their densest
    /// exact form ([`CompactValues`]), so a quantized update costs about a byte per value.
    pub fn encode(&self) -> Vec<u8> {
        let data = CompactValues::encode(&self.values).to_bytes();
        let mut out = Vec::with_capacity(SYNC_HEADER_LEN + data.len());
        out.extend_from_slice(&SYNC_MAGIC);
        out.push(SYNC_VERSION);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.push(u8::from(self.last));
        out.extend_from_slice(&(self.values.len() as u32).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// Decodes a frame holding exactly `expected_len` values.
    ///
    /// # Errors
    /// [`SyncError::Frame`] for a wrong magic, version, count or length.
    pub fn decode(bytes: &[u8], expected_len: usize) -> Result<Self, SyncError> {
        let bad = |m: &str| SyncError::Frame(m.to_string());
        if bytes.len() < SYNC_HEADER_LEN {
            return Err(bad("shorter than the header"));
        }
        if bytes[..4] != SYNC_MAGIC {
            return Err(bad("wrong magic"));
        }
        if bytes[4] != SYNC_VERSION {
            return Err(bad("unknown version"));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i..i + 4]);
            u32::from_be_bytes(b)
        };
        let round = u64_at(5);
        let index = u32_at(13);
        let last = match bytes[17] {
            0 => false,
            1 => true,
            _ => return Err(bad("bad final flag")),
        };
        let count = u32_at(18) as usize;
        let expected_len = if round == HELLO_ROUND {
            0
        } else {
            expected_len
        };
        if count != expected_len {
            return Err(SyncError::Frame(format!(
                "{count} values, expected {expected_len}"
            )));
        }
        let values = CompactValues::decode_bytes(&bytes[SYNC_HEADER_LEN..], count)
            .map_err(|e| SyncError::Frame(format!("values: {e}")))?;
        Ok(Self {
            round,
            index,
            last,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let f = SyncFrame {
            round: 7,
            index: 2,
            last: true,
            values: vec![1.0, -2.5, 3.25],
        };
        let bytes = f.encode();
        assert_eq!(SyncFrame::decode(&bytes, 3).unwrap(), f);
        assert!(SyncFrame::decode(&bytes, 4).is_err());
        assert!(SyncFrame::decode(&bytes[..bytes.len() - 1], 3).is_err());
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(SyncFrame::decode(&wrong, 3).is_err());
        assert!(SyncFrame::decode(&[], 3).is_err());
        let hello = SyncFrame {
            round: HELLO_ROUND,
            index: 1,
            last: false,
            values: vec![],
        };
        assert_eq!(SyncFrame::decode(&hello.encode(), 3).unwrap(), hello);
    }
}
