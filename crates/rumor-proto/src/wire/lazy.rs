//! The two control messages of lazy push (docs/ALGORITHM.md, "Dissemination"): a peer that holds
//! large deltas announces them ([`Have`]: the IHAVE of epidemic broadcast trees, Leitão, Pereira
//! and Rodrigues 2007), and a peer that lacks one asks the announcer for it ([`Want`]: their
//! IWANT). The delta itself then travels as an ordinary `Delta` envelope, to the one peer that
//! asked, so each peer receives each large delta about once instead of once per pusher.
//!
//! Both are sent by the peer named in the envelope's `origin`, over a connection its certificate
//! is bound to, like every message but a delta; the entries name the deltas' own origins.

use serde::{Deserialize, Serialize};

use super::{DecodeError, Limits, PeerId, ABSOLUTE_MAX_BODY};

/// Most entries accepted in one [`Have`] or [`Want`].
pub const MAX_LAZY_ENTRIES: usize = 1024;

/// "I hold these deltas": sent by a peer that applied a large delta (to `fanout` live members,
/// as eager push would forward it), by its origin on publish, and in answer to an anti-entropy
/// digest whose sender lacks large deltas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Have {
    /// The deltas announced.
    pub entries: Vec<HaveEntry>,
}

/// One announced delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveEntry {
    /// The delta's origin.
    pub origin: PeerId,
    /// Its version (at least 1).
    pub version: u64,
    /// Bytes of its values on the wire (compact encoding): what pulling it costs, so the
    /// receiver can give a large one more time to arrive.
    pub bytes: u64,
    /// Hops left: the receiver, once it has applied the delta, announces it onward with this
    /// less one, and not at all when that is 0 (the TTL eager push would have carried).
    pub ttl: u8,
}

/// "Send me these deltas": sent to a peer that announced them, which answers each one it still
/// holds with a `Delta` envelope to the asking connection, within its per-requester budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Want {
    /// The deltas asked for.
    pub entries: Vec<WantEntry>,
}

/// One delta asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WantEntry {
    /// The delta's origin.
    pub origin: PeerId,
    /// Its version (at least 1).
    pub version: u64,
}

/// Checks a [`Have`]'s bounds: at most [`MAX_LAZY_ENTRIES`] entries, each with a version of at
/// least 1, a TTL within `limits` and a size a frame can carry.
///
/// Errors: [`DecodeError::Invalid`] naming the first bound broken.
pub(super) fn validate_have(have: &Have, limits: Limits) -> Result<(), DecodeError> {
    validate_len("have", have.entries.len())?;
    for entry in &have.entries {
        if entry.version == 0 {
            return Err(DecodeError::Invalid("have: version 0".into()));
        }
        if entry.ttl > limits.max_ttl {
            return Err(DecodeError::Invalid(format!(
                "have: ttl {} above the maximum {}",
                entry.ttl, limits.max_ttl
            )));
        }
        if entry.bytes > ABSOLUTE_MAX_BODY as u64 {
            return Err(DecodeError::Invalid(format!(
                "have: delta of {} bytes above the largest frame",
                entry.bytes
            )));
        }
    }
    Ok(())
}

/// Checks a [`Want`]'s bounds: at most [`MAX_LAZY_ENTRIES`] entries, each with a version of at
/// least 1.
///
/// Errors: [`DecodeError::Invalid`] naming the first bound broken.
pub(super) fn validate_want(want: &Want) -> Result<(), DecodeError> {
    validate_len("want", want.entries.len())?;
    if want.entries.iter().any(|e| e.version == 0) {
        return Err(DecodeError::Invalid("want: version 0".into()));
    }
    Ok(())
}

fn validate_len(what: &str, len: usize) -> Result<(), DecodeError> {
    if len > MAX_LAZY_ENTRIES {
        return Err(DecodeError::Invalid(format!(
            "{what}: {len} entries above the maximum {MAX_LAZY_ENTRIES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, Envelope, MessageId, Payload};
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_body: 1 << 20,
            max_ttl: 6,
        }
    }

    fn envelope(payload: Payload) -> Envelope {
        Envelope {
            id: MessageId::from_u128(1),
            origin: PeerId::from_u128(2),
            origin_addr: "127.0.0.1:7000".parse().unwrap(),
            version: 0,
            ttl: 1,
            payload,
        }
    }

    fn have(count: usize, version: u64, ttl: u8) -> Payload {
        let entry = HaveEntry {
            origin: PeerId::from_u128(3),
            version,
            bytes: 1 << 20,
            ttl,
        };
        Payload::Have(Have {
            entries: vec![entry; count],
        })
    }

    #[test]
    fn have_and_want_round_trip() {
        for payload in [
            have(2, 5, 3),
            Payload::Want(Want {
                entries: vec![WantEntry {
                    origin: PeerId::from_u128(3),
                    version: 5,
                }],
            }),
        ] {
            let env = envelope(payload);
            let frame = encode(&env, 1 << 20).unwrap();
            assert_eq!(decode(&frame, limits()).unwrap(), env);
        }
    }

    #[test]
    fn out_of_bounds_entries_are_decode_errors() {
        for (payload, what) in [
            (have(MAX_LAZY_ENTRIES + 1, 1, 1), "too many entries"),
            (have(1, 0, 1), "version 0"),
            (have(1, 1, 7), "ttl above the limit"),
            (
                Payload::Want(Want {
                    entries: vec![
                        WantEntry {
                            origin: PeerId::from_u128(3),
                            version: 1,
                        };
                        MAX_LAZY_ENTRIES + 1
                    ],
                }),
                "too many wants",
            ),
        ] {
            let frame = encode(&envelope(payload), 1 << 20).unwrap();
            assert!(
                matches!(decode(&frame, limits()), Err(DecodeError::Invalid(_))),
                "{what}"
            );
        }
    }
}
