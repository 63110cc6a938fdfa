//! The counters of what the core has seen and done, read by the shell's status, metrics and
//! reports. Plain data: each sub-machine bumps the counters of its own idea.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters of what the core has seen and done since it started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CoreStats {
    /// Messages handled, by kind (after dedup).
    pub received: BTreeMap<&'static str, u64>,
    /// Messages queued for sending, by kind, counted once per destination.
    pub sent: BTreeMap<&'static str, u64>,
    /// Envelopes dropped because their id was in the seen-cache.
    pub duplicates_dropped: u64,
    /// Deltas whose `(origin, version)` was already applied (arrived by another path).
    pub deltas_already_applied: u64,
    /// Delta envelopes received whose `(origin, version)` was already applied here, whether
    /// dropped by envelope id or as already applied: the copies that dissemination wasted.
    pub duplicate_deltas_received: u64,
    /// Bytes of delta values (compact encoding) in every delta envelope received, duplicate or
    /// not, refused or not.
    pub delta_payload_bytes_received: u64,
    /// Lazy push: deltas announced in `Have` messages, counted once per destination.
    pub announces_sent: u64,
    /// Lazy push: deltas asked for in `Want` messages (a pull, or a retry from another
    /// announcer).
    pub pulls_sent: u64,
    /// Lazy push: pulls that ran out before the delta arrived (then asked of the next peer that
    /// announced it, or left to anti-entropy).
    pub pull_timeouts: u64,
    /// Lazy push: deltas asked for that this peer does not hold (ignored).
    pub wants_not_held: u64,
    /// Deltas added to the base from other peers.
    pub deltas_applied: u64,
    /// Deltas published by this peer.
    pub deltas_published: u64,
    /// Of those, deltas the trainer scaled down to [`super::Core::own_delta_norm_bound`]
    /// before publishing (reported with [`super::Core::count_own_delta_clipped`]).
    pub own_deltas_clipped: u64,
    /// Forwarded envelopes (counted once per forward, not per destination).
    pub forwarded: u64,
    /// Envelopes not forwarded because their TTL reached 0.
    pub ttl_expired: u64,
    /// Deltas refused, by reason (`shape`, `non_finite`, `weight`, `version`, `norm`,
    /// `version_jump`, `unknown_origin`, `signature`).
    pub deltas_rejected: BTreeMap<&'static str, u64>,
    /// Member records refused, by reason (`unbound`, `credential`, `signature`,
    /// `too_many_identities`, `revoked`).
    pub records_refused: BTreeMap<&'static str, u64>,
    /// Messages dropped because their origin is not bound to the certificate of the connection
    /// they came on.
    pub senders_mismatched: u64,
    /// Origin signatures verified (member records and deltas; records whose signed part was
    /// already held, and copies of applied deltas, are not verified again).
    pub signatures_verified: u64,
    /// Messages dropped because they came over a revoked certificate's connection.
    pub messages_from_revoked: u64,
    /// Equivocations this peer found itself: a validly signed delta whose content differs from
    /// the one applied under the same `(origin, version)`.
    pub equivocations_detected: u64,
    /// Valid equivocation proofs received that were new here.
    pub equivocation_proofs_received: u64,
    /// Equivocation proofs refused (a signature that does not verify, one content twice, an
    /// unknown origin).
    pub equivocation_proofs_refused: u64,
    /// Deltas applied here and taken out again because their version was equivocated.
    pub deltas_retracted: u64,
    /// Frames that failed to decode.
    pub decode_errors: u64,
    /// Times a delta arrived ahead of a missing earlier version of its origin.
    pub gaps_detected: u64,
    /// Deltas pushed in answer to anti-entropy digests.
    pub anti_entropy_deltas_sent: u64,
    /// Delta sends the shell reported failed (refused, timed out, or dropped because the
    /// destination had too many in flight); anti-entropy pushes them again.
    pub delta_sends_failed: u64,
    /// Snapshots sent because a peer lacked deltas no longer in the log.
    pub snapshots_sent: u64,
    /// Answers held back because their requester had used its budget: deltas past
    /// `anti_entropy_max_bytes` per digest period (pushed for a digest or asked for in a
    /// `Want`), a second snapshot within an anti-entropy interval.
    pub answers_limited: u64,
    /// Snapshots installed (the join's included).
    pub snapshots_installed: u64,
    /// Snapshot installs that could not re-apply every delta this peer held (inexact merges).
    pub inexact_merges: u64,
    /// Snapshots not installed because the install would have dropped deltas this peer holds
    /// and the snapshot does not outrank this peer's state.
    pub snapshots_refused: u64,
    /// Join requests sent.
    pub join_attempts: u64,
    /// Join requests sent after joining, to addresses discovery returned that no member held.
    pub discovery_introductions: u64,
    /// Join requests passed on to another member to answer (snapshot load spreading).
    pub joins_forwarded: u64,
    /// Direct probes sent.
    pub probes_sent: u64,
    /// Indirect probe requests sent.
    pub indirect_probes_sent: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Members this peer started to suspect.
    pub suspicions_raised: u64,
    /// Members this peer declared dead after the suspicion timeout.
    pub members_declared_dead: u64,
    /// Times this peer refuted a suspicion of itself.
    pub refutations: u64,
}
