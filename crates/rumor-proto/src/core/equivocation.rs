//! Equivocation: an origin that signs two different deltas under one version. Digests compare
//! per-origin fingerprints of applied contents, so peers holding different contents push each
//! other their copies; the peer that receives a validly signed delta whose content differs
//! from the one it applied holds two signed messages under one `(origin, version)`, a proof.
//! The proof is spread to every member; each one quarantines the origin ([`Core::revoke`] of
//! its certificate) and resolves that version to nothing — taking out whichever of the deltas
//! it applied, whose values the proof carries — so every peer still ends with the same model
//! (docs/ALGORITHM.md, "Equivocation").

use std::net::SocketAddr;

use crate::auth::{content_hash, ContentHash};
use crate::id::PeerId;
use crate::wire::{DeltaPayload, Envelope, EquivocationProof, Payload, SignedDelta};

use super::events::{Event, RejectReason};
use super::Core;

/// What a delta's first look found.
pub(super) enum Screen {
    /// Go on (with the content hash when it was computed).
    Pass(Option<ContentHash>),
    /// Refused before anything else: counted, nothing kept.
    Reject(RejectReason),
    /// A second, different, validly signed delta under a version applied here.
    Equivocation(EquivocationProof),
}

impl Core {
    /// A delta's first look, before it may take a place in the seen-cache: a delta not applied
    /// yet must come from an admitted origin with a valid signature; one applied already is
    /// compared with the content applied under its version, and a valid, different one is an
    /// equivocation. Other messages pass.
    pub(super) fn screen_delta(&mut self, envelope: &Envelope) -> Screen {
        let Payload::Delta(delta) = &envelope.payload else {
            return Screen::Pass(None);
        };
        let (origin, version) = (envelope.origin, envelope.version);
        let applied = self.replica.applied().contains(origin, version);
        let held = self.replica.content_of(origin, version).copied();
        if applied
            && (held.is_none()
                || self.replica.is_retracted(origin, version)
                || self.dissemination.has_seen(&envelope.id))
        {
            // Nothing to compare with, or another copy of a message already handled (a
            // different content under a reused envelope id is caught by the digests'
            // fingerprints instead): dropped later as a duplicate or as already applied, without
            // hashing its values.
            return Screen::Pass(None);
        }
        let content = content_hash(&delta.values);
        if applied && held == Some(content) {
            return Screen::Pass(Some(content));
        }
        self.out.stats.signatures_verified += 1;
        if let Err(reason) =
            self.membership
                .verify_delta(origin, version, delta.weight, &content, &delta.signature)
        {
            return Screen::Reject(reason);
        }
        match held {
            Some(held) if applied => {
                match self.proof_against(origin, version, held, delta, content) {
                    Some(proof) => Screen::Equivocation(proof),
                    // Our own copy is no longer in the log: no proof can be made here; the
                    // fingerprints keep differing, so the drain does not complete, and a peer
                    // that still holds its copy will make the proof.
                    None => Screen::Pass(None),
                }
            }
            _ => Screen::Pass(Some(content)),
        }
    }

    /// A proof from the delta applied here under `(origin, version)` (content `held`, from the
    /// log) and `other`, which hashes to `content`.
    fn proof_against(
        &self,
        origin: PeerId,
        version: u64,
        held: ContentHash,
        other: &DeltaPayload,
        content: ContentHash,
    ) -> Option<EquivocationProof> {
        let ours = self.replica.logged(origin, version)?;
        let ours = SignedDelta {
            weight: ours.weight,
            content: held,
            signature: ours.signature.clone(),
            values: ours.values.clone(),
        };
        let theirs = SignedDelta {
            weight: other.weight,
            content,
            signature: other.signature.clone(),
            values: other.values.clone(),
        };
        let (first, second) = if ours.content <= theirs.content {
            (ours, theirs)
        } else {
            (theirs, ours)
        };
        Some(EquivocationProof {
            origin,
            version,
            first,
            second,
        })
    }

    /// An equivocation proof, found here or received from `from`: checked, then (when new)
    /// the version is resolved to nothing, the origin quarantined, the proof kept for digests
    /// and sent to every live member but `from`.
    pub(super) fn handle_proof(&mut self, from: SocketAddr, mut proof: EquivocationProof) {
        let (origin, version) = (proof.origin, proof.version);
        if self.replica.proof(origin, version).is_some() {
            return;
        }
        let Some(record) = self.membership.get(&origin) else {
            self.out.stats.equivocation_proofs_refused += 1;
            return;
        };
        let key = record.credential.key_id();
        let valid = proof.first.content != proof.second.content
            && [&proof.first, &proof.second].into_iter().all(|d| {
                self.membership
                    .verify_delta(origin, version, d.weight, &d.content, &d.signature)
                    .is_ok()
            });
        if !valid {
            self.out.stats.equivocation_proofs_refused += 1;
            return;
        }
        // Values that do not hash to what was signed are useless; the signatures still prove.
        for delta in [&mut proof.first, &mut proof.second] {
            if !delta.values.is_empty() && content_hash(&delta.values) != delta.content {
                delta.values = Vec::new().into();
            }
        }
        if from != self.out.me.addr {
            self.out.stats.equivocation_proofs_received += 1;
        }
        self.replica.retract(&mut self.out, &proof);
        self.membership.revoke(&mut self.out, key);
        self.out.event(Event::Quarantined {
            origin,
            key,
            version,
        });
        let to: Vec<SocketAddr> = self
            .membership
            .live_peer_addrs(&[])
            .into_iter()
            .filter(|addr| *addr != from)
            .collect();
        let envelope = self
            .out
            .envelope(0, 1, Payload::Equivocation(proof.clone()));
        self.out.send(to, envelope);
        self.replica.keep_proof(proof);
    }
}
