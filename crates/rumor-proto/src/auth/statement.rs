//! What an origin signs: a statement, fixed bytes that name everything a forwarder must not
//! change.
//!
//! Each statement starts with a domain tag (`rumor/delta/1`, `rumor/member/1`), so a signature
//! made for one kind can never be passed off as another, and is encoded with bincode's fixed
//! little-endian layout, so every peer derives the same bytes from the same fields.

use std::net::SocketAddr;

use crate::id::PeerId;

/// SHA-256 of a delta's values (f32, little endian, in layout order).
pub type ContentHash = [u8; 32];

/// The content recorded for a version resolved to nothing after an equivocation (no SHA-256
/// output is all ones in practice).
pub const RETRACTED: ContentHash = [0xff; 32];

/// What a draining peer's [`crate::wire::DrainBeacon`] says it holds: the first 16 bytes of the
/// SHA-256 over its applied set (per origin in id order: the contiguous prefix and the versions
/// above it), its per-origin content fingerprints ([`contents_fingerprint`]) and the
/// `(origin, version)` pairs it holds equivocation proofs for. Equal summaries mean equal
/// applied sets, equal contents for every origin both know all contents of, and equal proofs:
/// what the drain condition compares (up to a SHA-256 collision).
pub fn drain_summary(
    applied: &crate::version_vector::VersionVector,
    contents: &[(PeerId, [u8; 16])],
    equivocations: &[(PeerId, u64)],
) -> [u8; 16] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"rumor/drain/1");
    context.update(&(applied.origins().len() as u64).to_le_bytes());
    for (origin, entry) in applied.origins() {
        context.update(origin.as_uuid().as_bytes());
        context.update(&entry.contiguous().to_le_bytes());
        context.update(&(entry.exceptions_len() as u64).to_le_bytes());
        for version in entry.exceptions() {
            context.update(&version.to_le_bytes());
        }
    }
    context.update(&(contents.len() as u64).to_le_bytes());
    for (origin, fingerprint) in contents {
        context.update(origin.as_uuid().as_bytes());
        context.update(fingerprint);
    }
    context.update(&(equivocations.len() as u64).to_le_bytes());
    for (origin, version) in equivocations {
        context.update(origin.as_uuid().as_bytes());
        context.update(&version.to_le_bytes());
    }
    let mut summary = [0u8; 16];
    summary.copy_from_slice(&context.finish().as_ref()[..16]);
    summary
}

/// A fingerprint of the contents applied under an origin's versions: the first 16 bytes of
/// the SHA-256 over the origin and its `(version, content hash)` pairs in increasing version
/// order. Not incremental on purpose: additive set hashes can be collided by whoever chooses
/// the contents (the equivocator does).
pub fn contents_fingerprint<'a>(
    origin: PeerId,
    versions: impl Iterator<Item = (u64, &'a ContentHash)>,
) -> [u8; 16] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"rumor/contents/1");
    context.update(origin.as_uuid().as_bytes());
    for (version, content) in versions {
        context.update(&version.to_le_bytes());
        context.update(content);
    }
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&context.finish().as_ref()[..16]);
    fingerprint
}

/// The SHA-256 of `values` as little-endian f32 bytes: what a delta's signature covers, and
/// what tells two deltas under one `(origin, version)` apart.
pub fn content_hash(values: &[f32]) -> ContentHash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = Vec::with_capacity(4096 * 4);
    for chunk in values.chunks(4096) {
        buffer.clear();
        for value in chunk {
            buffer.extend_from_slice(&value.to_le_bytes());
        }
        context.update(&buffer);
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

fn encode(fields: impl serde::Serialize) -> Vec<u8> {
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding();
    // Plain integers, byte arrays and strings always encode.
    bincode::serde::encode_to_vec(fields, config).unwrap_or_default()
}

/// The statement an origin signs for its delta `version`: origin, version, the weight's bits and
/// the [`content_hash`] of the (scaled) values.
pub fn delta(origin: PeerId, version: u64, weight: f32, content: &ContentHash) -> Vec<u8> {
    encode(("rumor/delta/1", origin, version, weight.to_bits(), content))
}

/// What a member signs about itself: its id, name, address, incarnation, heartbeat,
/// lifecycle (by name), published version, and whether it left. `MemberRecord::statement`
/// (in `wire`) feeds it a record's fields.
#[allow(clippy::too_many_arguments)]
pub fn member(
    peer: PeerId,
    name: &str,
    addr: SocketAddr,
    incarnation: u64,
    heartbeat: u64,
    lifecycle: &str,
    published: u64,
    left: bool,
) -> Vec<u8> {
    encode((
        "rumor/member/1",
        peer,
        name,
        addr,
        incarnation,
        heartbeat,
        lifecycle,
        published,
        left,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_tells_one_bit_apart() {
        let a = content_hash(&[1.0, 2.0, 3.0]);
        let b = content_hash(&[1.0, 2.0, f32::from_bits(3.0f32.to_bits() + 1)]);
        assert_ne!(a, b);
        assert_eq!(a, content_hash(&[1.0, 2.0, 3.0]));
    }

    #[test]
    fn delta_statements_differ_in_every_field() {
        let o = PeerId::from_u128(1);
        let h = content_hash(&[1.0]);
        let base = delta(o, 1, 0.5, &h);
        assert_ne!(base, delta(PeerId::from_u128(2), 1, 0.5, &h));
        assert_ne!(base, delta(o, 2, 0.5, &h));
        assert_ne!(base, delta(o, 1, 0.25, &h));
        assert_ne!(base, delta(o, 1, 0.5, &content_hash(&[2.0])));
    }
}
