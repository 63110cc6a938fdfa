//! The messages peers exchange and the one codec that turns them into bytes.
//!
//! Every message is an [`Envelope`]. On the wire an envelope is a frame:
//!
//! ```text
//! magic "RMOR" (4 bytes) | protocol version (1 byte) | body length (u32, big endian) | body (bincode 2, serde)
//! ```
//!
//! One frame travels on one QUIC unidirectional stream. Decoding never panics: every path is
//! bounded by a size limit and ends in a typed [`DecodeError`], and [`Envelope::validate`] checks
//! the semantic bounds (TTL, string lengths, vector lengths) that bincode cannot know.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{ContentHash, Credential, Signature, MAX_CREDENTIAL_LEN, MAX_SIGNATURE_LEN};
use crate::version_vector::VersionVector;
use serde::{Deserialize, Serialize};

mod lazy;
pub use lazy::{Have, HaveEntry, Want, WantEntry, MAX_LAZY_ENTRIES};

/// A peer's identity: a UUID created once and stored in the peer's data dir.
pub use crate::id::{MessageId, PeerId};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RMOR";
/// Version of the frame layout and message types; a peer rejects frames of another version.
pub const PROTOCOL_VERSION: u8 = 5;
/// Bytes before the body: magic, protocol version, body length.
pub const HEADER_LEN: usize = 9;
/// Hard upper bound on a body, whatever the configured limit (bytes). Bounds bincode's allocations.
pub const ABSOLUTE_MAX_BODY: usize = 256 * 1024 * 1024;
// A sparse vector may declare as many values as the largest int8 body could carry.
const _: () = assert!(crate::compact::MAX_SPARSE_VALUES == ABSOLUTE_MAX_BODY);
/// Longest peer name accepted (characters).
pub const MAX_NAME_LEN: usize = 64;
/// Most member records accepted in one view.
pub const MAX_VIEW_MEMBERS: usize = 4096;
/// Most origins accepted in one version vector.
pub const MAX_VECTOR_ORIGINS: usize = 4096;
/// Most exception entries (versions above the contiguous prefix) accepted per origin.
pub const MAX_VECTOR_EXCEPTIONS: usize = 65_536;
/// Most equivocated `(origin, version)` pairs listed in one digest.
pub const MAX_EQUIVOCATIONS: usize = 4096;
/// Most content hashes carried by one snapshot (one per applied delta).
pub const MAX_SNAPSHOT_CONTENTS: usize = 4 * 1024 * 1024;

/// One gossip message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message; a receiver drops an id it has seen (dedup).
    pub id: MessageId,
    /// The peer that created the message. For every kind but `Delta` it is the sender itself,
    /// and a receiver drops the message unless the sender's certificate is the one `origin` is
    /// bound to ([`crate::auth::KeyId::binds`]); a `Delta` may come through others and is
    /// checked by its signature instead.
    pub origin: PeerId,
    /// Where the origin listens (informative: answers go to the connection the message came
    /// on, never to an address a message names).
    pub origin_addr: SocketAddr,
    /// The origin's version of the item carried: the delta number for `Delta`, the heartbeat for
    /// membership messages, 0 where no version applies.
    pub version: u64,
    /// Hops left. A forwarder decrements it and never forwards at 0.
    pub ttl: u8,
    /// What the message carries.
    pub payload: Payload,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// A model delta `d = w · (work − base)` published by `origin` as its version `version`.
    Delta(DeltaPayload),
    /// A membership view, spread by periodic gossip.
    Membership(MembershipView),
    /// A new peer asks a seed to let it in.
    Join(JoinRequest),
    /// The seed's answer to `Join`: its view and a snapshot of its base.
    Welcome(Welcome),
    /// Anti-entropy: the sender's applied version vector and progress.
    Digest(Digest),
    /// A full snapshot sent when the deltas a peer lacks are no longer in the sender's delta log.
    Snapshot(Snapshot),
    /// The origin leaves the cluster for good after publishing `published` versions.
    Leave(LeaveNotice),
    /// SWIM probe: "are you alive?", with piggybacked membership changes.
    Ping(Probe),
    /// SWIM answer to `Ping`, direct or relayed, with piggybacked membership changes.
    Ack(Probe),
    /// SWIM indirect probe: "probe `target` for me and relay its ack".
    PingReq(PingRequest),
    /// Proof that `origin` signed two different deltas under one version: spread to every
    /// member, each of which quarantines the origin and resolves that version to nothing.
    Equivocation(EquivocationProof),
    /// Lazy push: the sender holds these (large) deltas ([`lazy`]).
    Have(Have),
    /// Lazy push: the sender asks for these deltas, which it was told of in a `Have`.
    Want(Want),
    /// Drain: the sender's lifecycle and a summary of what it holds, in place of a full
    /// `Digest` to the members it does not send one to this round.
    DrainBeacon(DrainBeacon),
}

impl Payload {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> MessageKind {
        match self {
            Payload::Delta(_) => MessageKind::Delta,
            Payload::Membership(_) => MessageKind::Membership,
            Payload::Join(_) => MessageKind::Join,
            Payload::Welcome(_) => MessageKind::Welcome,
            Payload::Digest(_) => MessageKind::Digest,
            Payload::Snapshot(_) => MessageKind::Snapshot,
            Payload::Leave(_) => MessageKind::Leave,
            Payload::Ping(_) => MessageKind::Ping,
            Payload::Ack(_) => MessageKind::Ack,
            Payload::PingReq(_) => MessageKind::PingReq,
            Payload::Equivocation(_) => MessageKind::Equivocation,
            Payload::Have(_) => MessageKind::Have,
            Payload::DrainBeacon(_) => MessageKind::DrainBeacon,
            Payload::Want(_) => MessageKind::Want,
        }
    }
}

/// Message kinds, for per-kind counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MessageKind {
    /// [`Payload::Delta`]
    Delta,
    /// [`Payload::Membership`]
    Membership,
    /// [`Payload::Join`]
    Join,
    /// [`Payload::Welcome`]
    Welcome,
    /// [`Payload::Digest`]
    Digest,
    /// [`Payload::Snapshot`]
    Snapshot,
    /// [`Payload::Leave`]
    Leave,
    /// [`Payload::Ping`]
    Ping,
    /// [`Payload::Ack`]
    Ack,
    /// [`Payload::PingReq`]
    PingReq,
    /// [`Payload::Equivocation`]
    Equivocation,
    /// [`Payload::Have`]
    Have,
    /// [`Payload::Want`]
    Want,
    /// [`Payload::DrainBeacon`]
    DrainBeacon,
}

impl MessageKind {
    /// All kinds, in a fixed order.
    pub const ALL: [MessageKind; 14] = [
        MessageKind::Delta,
        MessageKind::Membership,
        MessageKind::Join,
        MessageKind::Welcome,
        MessageKind::Digest,
        MessageKind::Snapshot,
        MessageKind::Leave,
        MessageKind::Ping,
        MessageKind::Ack,
        MessageKind::PingReq,
        MessageKind::Equivocation,
        MessageKind::Have,
        MessageKind::Want,
        MessageKind::DrainBeacon,
    ];

    /// Lower-case name, as used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Delta => "delta",
            MessageKind::Membership => "membership",
            MessageKind::Join => "join",
            MessageKind::Welcome => "welcome",
            MessageKind::Digest => "digest",
            MessageKind::Snapshot => "snapshot",
            MessageKind::Leave => "leave",
            MessageKind::Ping => "ping",
            MessageKind::Ack => "ack",
            MessageKind::PingReq => "ping_req",
            MessageKind::Equivocation => "equivocation",
            MessageKind::Have => "have",
            MessageKind::Want => "want",
            MessageKind::DrainBeacon => "drain_beacon",
        }
    }
}

/// A model delta. `values` is flat in the model's `ParamLayout` order (f32, one per parameter).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaPayload {
    /// The weight `w = 1/n` the sender scaled its local progress by, in (0, 1].
    pub weight: f32,
    /// The delta, already scaled by `weight`. On the wire in its densest exact form
    /// ([`crate::compact::CompactValues`]: sparse, int8 blocks, bf16 or f32), decoded bit for
    /// bit.
    #[serde(with = "crate::compact::compact_serde")]
    pub values: Arc<[f32]>,
    /// The origin's signature over [`crate::auth::statement::delta`] (origin, version, weight
    /// and the SHA-256 of `values`). Forwarders pass it on unchanged.
    pub signature: Signature,
}

/// One signed delta as evidence: what its origin signed, and the values when the holder still
/// has them (empty otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedDelta {
    /// The weight signed.
    pub weight: f32,
    /// The SHA-256 of the values signed ([`crate::auth::content_hash`]).
    pub content: ContentHash,
    /// The origin's signature over [`crate::auth::statement::delta`].
    pub signature: Signature,
    /// The values (flat, scaled), so that a peer that applied this delta can take it out
    /// again; empty when the sender no longer holds them. Must hash to `content`.
    #[serde(with = "crate::compact::compact_serde")]
    pub values: Arc<[f32]>,
}

/// Two validly signed, different deltas of `origin` under one `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EquivocationProof {
    /// The equivocating member.
    pub origin: PeerId,
    /// The version it signed twice.
    pub version: u64,
    /// One of the deltas (the one with the smaller content hash).
    pub first: SignedDelta,
    /// The other.
    pub second: SignedDelta,
}

/// Where a peer is in its life: `starting → joining → training → draining → stopped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Loading data and certificates; not yet in contact with anyone.
    Starting,
    /// Looking for a seed, or waiting for `min_peers` members.
    Joining,
    /// Training and gossiping.
    Training,
    /// Training budget spent; gossip continues until consistent or the drain deadline.
    Draining,
    /// Saved and gone.
    Stopped,
}

impl Lifecycle {
    /// Lower-case name for tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Joining => "joining",
            Lifecycle::Training => "training",
            Lifecycle::Draining => "draining",
            Lifecycle::Stopped => "stopped",
        }
    }
}

/// Liveness of a member as seen by the holder of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Answering and gossiping.
    Alive,
    /// Suspected of failure; may refute by raising its incarnation.
    Suspect,
    /// Declared failed.
    Dead,
    /// Left on purpose.
    Left,
}

impl MemberStatus {
    /// SWIM precedence on equal incarnation: left > dead > suspect > alive.
    pub fn precedence(self) -> u8 {
        match self {
            MemberStatus::Alive => 0,
            MemberStatus::Suspect => 1,
            MemberStatus::Dead => 2,
            MemberStatus::Left => 3,
        }
    }

    /// Lower-case name for tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
            MemberStatus::Left => "left",
        }
    }
}

/// One member as a peer knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's id.
    pub peer_id: PeerId,
    /// Display name (the certificate name).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Raised by the member itself to refute suspicion or after a restart.
    pub incarnation: u64,
    /// Raised by the member itself on every gossip period.
    pub heartbeat: u64,
    /// Liveness as the record's holder believes it.
    pub status: MemberStatus,
    /// The member's lifecycle state, as it last said.
    pub lifecycle: Lifecycle,
    /// How many deltas the member has published (its latest version).
    pub published: u64,
    /// The member's certificate; `peer_id` is bound to it ([`crate::auth::KeyId::binds`]).
    pub credential: Credential,
    /// The member's signature over [`MemberRecord::statement`]: every field above but
    /// the liveness others may claim (suspect, dead). Only the member can sign a new
    /// incarnation, heartbeat, address, lifecycle, published version or `Left`.
    pub signature: Signature,
}

impl MemberRecord {
    /// The statement its member signs ([`crate::auth::statement::member`]): every field but
    /// the liveness others may claim. `Alive`, `Suspect` and `Dead` sign the same (a suspicion
    /// or a death is another member's claim about the record, SWIM-style, and can only name
    /// the incarnation the member signed); `Left` is the member's own word and signs
    /// differently.
    pub fn statement(&self) -> Vec<u8> {
        crate::auth::statement::member(
            self.peer_id,
            &self.name,
            self.addr,
            self.incarnation,
            self.heartbeat,
            self.lifecycle.as_str(),
            self.published,
            self.status == MemberStatus::Left,
        )
    }

    /// Whether `other` supersedes `self` for the same peer: higher incarnation wins; on equal
    /// incarnation the status precedence left > dead > suspect > alive; then the higher heartbeat.
    pub fn is_superseded_by(&self, other: &MemberRecord) -> bool {
        (
            other.incarnation,
            other.status.precedence(),
            other.heartbeat,
        ) > (self.incarnation, self.status.precedence(), self.heartbeat)
    }
}

/// Membership records: recent changes (gossip), or the sender's whole view (push-pull).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipView {
    /// The records.
    pub members: Vec<MemberRecord>,
    /// Push-pull: true when this is the whole view and the receiver should answer with its own.
    pub push_pull: bool,
    /// True when this answers a push-pull (the receiver must not answer it again).
    pub reply: bool,
}

/// A SWIM probe or its ack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Sequence number; the ack echoes it.
    pub seq: u64,
    /// Piggybacked membership changes.
    pub updates: Vec<MemberRecord>,
    /// A hash of the sender's applied version vector; a mismatch triggers anti-entropy.
    pub applied_hash: u64,
}

/// An indirect probe request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    /// The member to probe.
    pub target: PeerId,
    /// Where it listens.
    pub target_addr: SocketAddr,
    /// The requester's sequence number, echoed in the relayed ack.
    pub seq: u64,
    /// Piggybacked membership changes.
    pub updates: Vec<MemberRecord>,
}

/// A join request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's own record.
    pub member: MemberRecord,
    /// True when a seed passed the request on to another member to answer (spreading the
    /// snapshot load); a forwarded request is answered, never forwarded again.
    pub forwarded: bool,
}

/// The answer to a join: a view and a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The seed's view, the seed's own record included.
    pub view: MembershipView,
    /// The seed's base and the set of deltas folded into it.
    pub snapshot: Snapshot,
}

/// A base and its applied version vector: `base = θ₀ + Σ_{(o,v) ∈ applied} d_{o,v}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Flat parameters, in layout order.
    pub base: Arc<[f32]>,
    /// The deltas folded into `base`.
    pub applied: VersionVector,
    /// The content hash of each applied delta whose content the sender knows (a version
    /// resolved to nothing after an equivocation carries [`crate::auth::RETRACTED`]).
    pub contents: Vec<(PeerId, u64, ContentHash)>,
}

/// Anti-entropy digest: what the sender has applied and where it is in its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// The sender's applied version vector.
    pub applied: VersionVector,
    /// The sender's lifecycle state.
    pub lifecycle: Lifecycle,
    /// True when this digest answers another one (the receiver must not answer it with a digest).
    pub reply: bool,
    /// Per origin, a fingerprint of the contents applied under its versions
    /// ([`crate::auth::contents_fingerprint`]), for the origins whose every applied version's
    /// content the sender knows. Two peers with the same applied versions of an origin but
    /// different fingerprints hold different contents under some version.
    pub contents: Vec<(PeerId, [u8; 16])>,
    /// The `(origin, version)` pairs the sender holds an equivocation proof for.
    pub equivocations: Vec<(PeerId, u64)>,
}

/// What a draining peer tells the members it sends no full [`Digest`] to in a drain round: its
/// lifecycle and [`crate::auth::drain_summary`] of its replica (applied set, content
/// fingerprints, equivocation proofs). Two peers with equal summaries hold the same deltas with
/// the same contents, so a receiver can count the sender as caught up without the sender's
/// applied vector (O(origins) bytes) in every message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainBeacon {
    /// The sender's lifecycle state.
    pub lifecycle: Lifecycle,
    /// The sender's drain summary (the first 16 bytes of a SHA-256).
    pub summary: [u8; 16],
}

/// A graceful leave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaveNotice {
    /// The leaver's own record, status `Left`, signed by it: its last incarnation and
    /// published version.
    pub record: MemberRecord,
}

/// Why a frame could not be decoded. Nothing is changed by a failed decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the 9-byte header.
    #[error("frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The first four bytes are not `RMOR`.
    #[error("bad magic {0:02x?}, not a rumor frame")]
    BadMagic([u8; 4]),
    /// A protocol version this peer does not speak.
    #[error("protocol version {0} is not supported (this peer speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The declared body length exceeds the limit.
    #[error("body of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared body length (bytes).
        declared: usize,
        /// The limit in force (bytes).
        limit: usize,
    },
    /// The declared body length does not match the bytes present.
    #[error("header declares {declared} body bytes but {present} are present")]
    LengthMismatch {
        /// Declared body length (bytes).
        declared: usize,
        /// Bytes present after the header.
        present: usize,
    },
    /// bincode could not decode the body.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body decoded but left bytes unread.
    #[error("{0} trailing bytes after the body")]
    TrailingBytes(usize),
    /// The message decoded but breaks a bound (TTL, a length, a count).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Why an envelope could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// bincode failed (should not happen for well-formed values).
    #[error("encoding failed: {0}")]
    Bincode(#[from] bincode::error::EncodeError),
    /// The encoded body exceeds the limit.
    #[error("encoded body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded body size (bytes).
        size: usize,
        /// The limit in force (bytes).
        limit: usize,
    },
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_limit::<ABSOLUTE_MAX_BODY>()
}

/// Encodes an envelope into a frame. Errors when the body exceeds `max_body` bytes.
pub fn encode(envelope: &Envelope, max_body: usize) -> Result<Vec<u8>, EncodeError> {
    let body = bincode::serde::encode_to_vec(envelope, bincode_config())?;
    let limit = max_body.min(ABSOLUTE_MAX_BODY);
    if body.len() > limit {
        return Err(EncodeError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(PROTOCOL_VERSION);
    // The length fits: body.len() <= ABSOLUTE_MAX_BODY < u32::MAX.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Bounds applied after decoding.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body accepted (bytes).
    pub max_body: usize,
    /// Largest TTL accepted (hops).
    pub max_ttl: u8,
}

/// Decodes one frame and validates the envelope against `limits`.
///
/// Errors: [`DecodeError`] for every malformed, oversized or out-of-bounds input. Never panics.
pub fn decode(frame: &[u8], limits: Limits) -> Result<Envelope, DecodeError> {
    if frame.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(frame.len()));
    }
    let magic = [frame[0], frame[1], frame[2], frame[3]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    if frame[4] != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(frame[4]));
    }
    let declared = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) as usize;
    let limit = limits.max_body.min(ABSOLUTE_MAX_BODY);
    if declared > limit {
        return Err(DecodeError::TooLarge { declared, limit });
    }
    let body = &frame[HEADER_LEN..];
    if body.len() != declared {
        return Err(DecodeError::LengthMismatch {
            declared,
            present: body.len(),
        });
    }
    // A sparse delta may not declare more values than a dense one of this body could hold.
    let (envelope, read): (Envelope, usize) = crate::compact::with_value_limit(limit, || {
        bincode::serde::decode_from_slice(body, bincode_config())
    })
    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - read));
    }
    envelope.validate(limits)?;
    Ok(envelope)
}

impl Envelope {
    /// Checks the bounds bincode cannot: TTL, names, view and vector sizes, finite delta weight.
    ///
    /// Errors: [`DecodeError::Invalid`] naming the first bound broken.
    pub fn validate(&self, limits: Limits) -> Result<(), DecodeError> {
        if self.ttl > limits.max_ttl {
            return Err(DecodeError::Invalid(format!(
                "ttl {} above the maximum {}",
                self.ttl, limits.max_ttl
            )));
        }
        match &self.payload {
            Payload::Delta(delta) => validate_signature(&delta.signature),
            Payload::Membership(view) => validate_view(view),
            Payload::Join(join) => validate_record(&join.member),
            Payload::Welcome(welcome) => {
                validate_view(&welcome.view)?;
                validate_snapshot(&welcome.snapshot)
            }
            Payload::Digest(digest) => {
                validate_vector(&digest.applied)?;
                validate_count("digest contents", digest.contents.len(), MAX_VECTOR_ORIGINS)?;
                validate_count(
                    "digest equivocations",
                    digest.equivocations.len(),
                    MAX_EQUIVOCATIONS,
                )
            }
            Payload::Snapshot(snapshot) => validate_snapshot(snapshot),
            Payload::Equivocation(proof) => {
                validate_signature(&proof.first.signature)?;
                validate_signature(&proof.second.signature)
            }
            Payload::Leave(notice) => validate_record(&notice.record),
            Payload::Ping(probe) | Payload::Ack(probe) => validate_records(&probe.updates),
            Payload::PingReq(req) => validate_records(&req.updates),
            Payload::Have(have) => lazy::validate_have(have, limits),
            Payload::Want(want) => lazy::validate_want(want),
            Payload::DrainBeacon(_) => Ok(()),
        }
    }
}

fn validate_record(record: &MemberRecord) -> Result<(), DecodeError> {
    if record.name.chars().count() > MAX_NAME_LEN {
        return Err(DecodeError::Invalid(format!(
            "member name longer than {MAX_NAME_LEN} characters"
        )));
    }
    if record.credential.as_bytes().len() > MAX_CREDENTIAL_LEN {
        return Err(DecodeError::Invalid(format!(
            "member credential of {} bytes above the maximum {MAX_CREDENTIAL_LEN}",
            record.credential.as_bytes().len()
        )));
    }
    validate_signature(&record.signature)
}

fn validate_snapshot(snapshot: &Snapshot) -> Result<(), DecodeError> {
    validate_vector(&snapshot.applied)?;
    validate_count(
        "snapshot contents",
        snapshot.contents.len(),
        MAX_SNAPSHOT_CONTENTS,
    )
}

fn validate_count(what: &str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::Invalid(format!(
            "{what}: {count} entries above the maximum {max}"
        )));
    }
    Ok(())
}

fn validate_signature(signature: &Signature) -> Result<(), DecodeError> {
    if signature.0.len() > MAX_SIGNATURE_LEN {
        return Err(DecodeError::Invalid(format!(
            "signature of {} bytes above the maximum {MAX_SIGNATURE_LEN}",
            signature.0.len()
        )));
    }
    Ok(())
}

fn validate_view(view: &MembershipView) -> Result<(), DecodeError> {
    validate_records(&view.members)
}

fn validate_records(records: &[MemberRecord]) -> Result<(), DecodeError> {
    if records.len() > MAX_VIEW_MEMBERS {
        return Err(DecodeError::Invalid(format!(
            "view of {} members above the maximum {MAX_VIEW_MEMBERS}",
            records.len()
        )));
    }
    records.iter().try_for_each(validate_record)
}

fn validate_vector(vector: &VersionVector) -> Result<(), DecodeError> {
    let origins: &BTreeMap<PeerId, _> = vector.origins();
    if origins.len() > MAX_VECTOR_ORIGINS {
        return Err(DecodeError::Invalid(format!(
            "version vector of {} origins above the maximum {MAX_VECTOR_ORIGINS}",
            origins.len()
        )));
    }
    for entry in origins.values() {
        if entry.exceptions_len() > MAX_VECTOR_EXCEPTIONS {
            return Err(DecodeError::Invalid(format!(
                "version vector entry with {} exceptions above the maximum {MAX_VECTOR_EXCEPTIONS}",
                entry.exceptions_len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
