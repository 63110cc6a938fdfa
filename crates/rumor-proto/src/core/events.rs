//! What the core tells its caller: [`Event`]s, and why a delta was refused.
//!
//! Output types only; the sub-machines push them through the outbox ([`super::outbox`]).

use std::sync::Arc;

use serde::Serialize;

use super::membership::admission::RecordRefusal;
use crate::wire::{MemberRecord, PeerId};

/// Why a delta was refused. Refused deltas change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RejectReason {
    /// Its length is not the model's parameter count.
    Shape,
    /// It holds NaN or an infinity.
    NonFinite,
    /// Its weight is outside (0, 1].
    Weight,
    /// Version 0 is never published.
    Version,
    /// Its L2 norm is far above the norms of recently accepted deltas
    /// ([`super::CoreConfig::max_delta_norm_factor`]).
    Norm,
    /// Its version is too far above the highest version known of its origin
    /// ([`super::CoreConfig::max_version_jump`]).
    VersionJump,
    /// Its origin has no admitted member record here, so nothing binds it to a certificate
    /// (an invented origin id, or a member not heard of yet: anti-entropy brings the delta
    /// again once its record arrives).
    UnknownOrigin,
    /// Its signature does not verify under its origin's certificate: forged, or altered by a
    /// forwarder.
    Signature,
}

impl RejectReason {
    /// Lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Shape => "shape",
            RejectReason::NonFinite => "non_finite",
            RejectReason::Weight => "weight",
            RejectReason::Version => "version",
            RejectReason::Norm => "norm",
            RejectReason::VersionJump => "version_jump",
            RejectReason::UnknownOrigin => "unknown_origin",
            RejectReason::Signature => "signature",
        }
    }
}

/// Something the shell or the trainer must know about.
#[derive(Clone, Debug)]
pub enum Event {
    /// A seed welcomed this peer; `base` has been replaced by its snapshot.
    Joined {
        /// The seed that answered.
        via: PeerId,
        /// Live members known after the merge.
        members: usize,
    },
    /// A peer not known before appeared in the view.
    MemberUp(MemberRecord),
    /// A member left or was declared dead.
    MemberDown(MemberRecord),
    /// A member is suspected of failure.
    MemberSuspect(MemberRecord),
    /// A delta from another peer was added to `base`; the trainer adds it to `work` too.
    DeltaApplied {
        /// Who published it.
        origin: PeerId,
        /// Its version.
        version: u64,
        /// The values added (flat, scaled).
        values: Arc<[f32]>,
    },
    /// A delta applied earlier was taken out of `base` again: its origin signed two different
    /// deltas under its version, and every peer resolves that version to nothing. The trainer
    /// subtracts `values` from `work` too.
    DeltaRetracted {
        /// Who published it.
        origin: PeerId,
        /// Its version.
        version: u64,
        /// The values taken out (flat, scaled).
        values: Arc<[f32]>,
    },
    /// A member was caught equivocating (two signed deltas under one version): its
    /// certificate is no longer trusted here ([`super::Core::revoke`]); the shell refuses its
    /// connections too.
    Quarantined {
        /// The equivocating member.
        origin: PeerId,
        /// Its certificate's key id.
        key: crate::auth::KeyId,
        /// The equivocated version.
        version: u64,
    },
    /// `base` was replaced by a snapshot (topped up with the deltas it lacked).
    BaseReplaced {
        /// The new base, flat.
        base: Arc<[f32]>,
        /// False when some delta this peer had could not be re-applied (counted as inexact).
        exact: bool,
    },
    /// A delta arrived while earlier versions of the same origin are missing.
    GapDetected {
        /// The origin with a gap.
        origin: PeerId,
        /// The missing versions.
        missing: Vec<u64>,
    },
    /// A member record was refused (unbound, not a member's credential, bad signature, too
    /// many ids for one certificate).
    RecordRefused {
        /// The id the record spoke for.
        peer: PeerId,
        /// Why.
        reason: RecordRefusal,
    },
    /// A message was dropped because its origin is not bound to the certificate of the
    /// connection it came on: a member speaking as another.
    SenderMismatch {
        /// The origin the message claimed.
        claimed: PeerId,
    },
    /// A delta was refused.
    DeltaRejected {
        /// Who published it.
        origin: PeerId,
        /// Why.
        reason: RejectReason,
    },
    /// The peer moved to training by itself ([`super::LifecycleConfig::min_peers`]): the
    /// shell starts its trainer from the current base.
    TrainingStarted {
        /// Live members known, this peer included.
        members: usize,
        /// True when the join timeout passed before `min_peers` members were live, and
        /// training starts with the members known.
        short_of_min_peers: bool,
    },
    /// No seed welcomed this peer within [`super::LifecycleConfig::join_timeout`]. The core
    /// keeps trying; the shell normally gives up.
    JoinFailed,
    /// The drain is over: complete (`drained`: every live peer holds the same applied set), or
    /// cut short by [`super::LifecycleConfig::drain_timeout`] (`drained` false). Emitted once;
    /// the shell then leaves ([`super::Core::leave`]).
    DrainEnded {
        /// Whether the drain completed before its deadline.
        drained: bool,
    },
    /// [`super::LifecycleConfig::checkpoint_interval`] passed since the last one: the shell
    /// saves a checkpoint ([`super::Core::snapshot`] and the counters it needs).
    CheckpointDue,
}
