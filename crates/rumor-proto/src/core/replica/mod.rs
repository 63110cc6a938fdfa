//! The replica: this peer's copy of the model and the exact set of deltas folded into it.
//!
//! [`Replica`] owns the base, the applied version vector, the last version published here,
//! the delta log ([`delta_log`]) and the admission checks ([`admission`]). It keeps the merge
//! invariant `base = θ₀ + Σ_{(o,v) ∈ applied} d_{o,v}` (docs/ALGORITHM.md): every delta is added
//! at most once, whatever path and how many times it arrives.
//!
//! It sends nothing: publishing and forwarding deltas, and answering digests from the log, are
//! dissemination's; what the replica learns of members (an origin's announced version, whether
//! it is live) is passed in.

pub mod admission;
pub mod contents;
pub mod delta_log;

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{ContentHash, RETRACTED};
use crate::id::PeerId;
use crate::version_vector::VersionVector;
use crate::wire::{DeltaPayload, EquivocationProof, Snapshot};

use super::config::{CoreConfig, RestoredState};
use super::events::{Event, RejectReason};
use super::outbox::Outbox;
use admission::{l2_norm, Admission};
use contents::Contents;
use delta_log::{DeltaLog, LoggedDelta};

/// Most missing versions listed in one [`Event::GapDetected`].
pub(crate) const MAX_GAP_REPORT: usize = 1024;

/// What became of a received delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Refused by an admission check (counted and reported); nothing changed.
    Rejected,
    /// Its `(origin, version)` was already applied; nothing changed.
    AlreadyApplied,
    /// Added to the base; it is new here, so it may be forwarded.
    Applied,
}

/// The replica sub-machine. See the module docs.
pub struct Replica {
    /// This peer's id.
    me: PeerId,
    /// The current base, flat, in layout order.
    base: Vec<f32>,
    /// The deltas folded into `base`.
    applied: VersionVector,
    /// The last version this peer published (0 before the first).
    published: u64,
    /// Recent deltas, for anti-entropy pulls and snapshot top-ups.
    log: DeltaLog,
    /// Checks a delta must pass.
    admission: Admission,
    /// The content hash of each applied delta.
    contents: Contents,
    /// Equivocation proofs, by `(origin, version)`.
    proofs: std::collections::BTreeMap<(PeerId, u64), EquivocationProof>,
    /// [`Replica::fingerprints`] as last computed, until `applied` or `contents` change: the
    /// drain condition reads them after every input, and each costs one SHA-256 per applied
    /// delta.
    fingerprints: std::cell::OnceCell<Vec<(PeerId, [u8; 16])>>,
    /// Raised whenever `applied`, `contents` or the proofs change, so others can tell that a
    /// comparison they made against this replica still holds.
    generation: u64,
    /// `applied.fingerprint()` as last computed, until `applied` changes.
    applied_fingerprint: std::cell::OnceCell<u64>,
    /// [`Replica::drain_summary`] as last computed, until anything it covers changes.
    drain_summary: std::cell::OnceCell<[u8; 16]>,
}

impl Replica {
    /// A replica holding `state`'s base with its applied set folded in, its published
    /// versions, and the contents it saved.
    pub fn new(config: &CoreConfig, me: PeerId, state: &RestoredState) -> Self {
        let mut contents = Contents::from_list(&state.contents);
        contents.retain_applied(&state.applied);
        Self {
            me,
            base: state.base.clone(),
            applied: state.applied.clone(),
            published: state.published,
            log: DeltaLog::new(config.delta_log_bytes),
            admission: Admission::new(config),
            contents,
            proofs: Default::default(),
            fingerprints: Default::default(),
            generation: 0,
            applied_fingerprint: Default::default(),
            drain_summary: Default::default(),
        }
    }

    /// The current base (flat, layout order).
    pub fn base(&self) -> &[f32] {
        &self.base
    }

    /// The deltas folded into the base.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// The last version this peer published.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// The delta `(origin, version)` if the log still holds it.
    pub fn logged(&self, origin: PeerId, version: u64) -> Option<&LoggedDelta> {
        self.log.get(origin, version)
    }

    /// The versions of `origin` the delta log holds, in increasing order.
    pub fn logged_versions(&self, origin: PeerId) -> Vec<u64> {
        self.log.versions_of(origin)
    }

    /// The content hash applied under `(origin, version)`, if known.
    pub fn content_of(&self, origin: PeerId, version: u64) -> Option<&ContentHash> {
        self.contents.get(origin, version)
    }

    /// The equivocation proof held for `(origin, version)`.
    pub fn proof(&self, origin: PeerId, version: u64) -> Option<&EquivocationProof> {
        self.proofs.get(&(origin, version))
    }

    /// Keeps a proof (for digests: a peer that lacks it gets it).
    pub fn keep_proof(&mut self, proof: EquivocationProof) {
        self.proofs.insert((proof.origin, proof.version), proof);
        self.changed();
    }

    /// Drops what was derived from the applied set, contents and proofs, which just changed.
    fn changed(&mut self) {
        self.fingerprints.take();
        self.applied_fingerprint.take();
        self.drain_summary.take();
        self.generation += 1;
    }

    /// [`VersionVector::fingerprint`] of the applied set (probes and the drain read it after
    /// every input).
    pub fn applied_fingerprint(&self) -> u64 {
        *self
            .applied_fingerprint
            .get_or_init(|| self.applied.fingerprint())
    }

    /// [`crate::auth::drain_summary`] of the applied set, the content fingerprints and the
    /// proofs held (what a drain beacon says).
    pub fn drain_summary(&self) -> [u8; 16] {
        *self.drain_summary.get_or_init(|| {
            crate::auth::drain_summary(&self.applied, self.fingerprints(), &self.equivocations())
        })
    }

    /// A number that changes whenever the applied set, the contents or the proofs do.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `(origin, version)` pairs proofs are held for, in order.
    pub fn equivocations(&self) -> Vec<(PeerId, u64)> {
        self.proofs.keys().copied().collect()
    }

    /// Whether `(origin, version)` was resolved to nothing after an equivocation.
    pub fn is_retracted(&self, origin: PeerId, version: u64) -> bool {
        self.contents.is_retracted(origin, version)
    }

    /// Every applied `(origin, version, content hash)` known, sorted (for checkpoints).
    pub fn contents(&self) -> Vec<(PeerId, u64, ContentHash)> {
        self.contents.to_list()
    }

    /// The per-origin content fingerprints a digest carries (sorted by origin).
    pub fn fingerprints(&self) -> &[(PeerId, [u8; 16])] {
        self.fingerprints
            .get_or_init(|| self.contents.fingerprints(&self.applied))
    }

    /// Bytes and entries of the delta log.
    pub fn log_usage(&self) -> (usize, usize) {
        (self.log.bytes(), self.log.len())
    }

    /// A snapshot of the base and the applied set, as sent in `Welcome`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            base: self.base.clone().into(),
            applied: self.applied.clone(),
            contents: self.contents.to_list(),
        }
    }

    /// See [`admission::Admission::own_norm_bound`].
    pub fn own_norm_bound(&self) -> Option<f64> {
        self.admission.own_norm_bound()
    }

    /// Raises the published version to `version` (a restarted peer learning what it published
    /// before its checkpoint), so that it never publishes a version twice.
    pub fn learn_published(&mut self, version: u64) {
        self.published = self.published.max(version);
    }

    /// Adds a local delta (flat, already scaled by `weight`) under the next version
    /// (`published() + 1`, which `signature` signs). Returns that version and the values,
    /// shared.
    ///
    /// Errors: [`RejectReason`] for a wrong length, non-finite values or a weight outside
    /// (0, 1]; nothing changes then.
    pub fn publish(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        weight: f32,
        values: Vec<f32>,
        content: ContentHash,
        signature: crate::auth::Signature,
    ) -> Result<(u64, Arc<[f32]>), RejectReason> {
        self.admission.check_shape(weight, &values)?;
        self.admission.record_norm(l2_norm(&values), false);
        self.published += 1;
        let version = self.published;
        let values: Arc<[f32]> = values.into();
        add_into(&mut self.base, &values);
        self.applied.insert(self.me, version);
        self.contents.insert(self.me, version, content);
        self.changed();
        self.log.insert(
            self.me,
            version,
            LoggedDelta {
                weight,
                values: values.clone(),
                logged_at: now,
                signature,
                encoded: Default::default(),
            },
        );
        out.stats.deltas_published += 1;
        Ok((version, values))
    }

    /// A delta `(origin, version)` from the network, whose values hash to `content`.
    /// `announced` is the version `origin`'s member record announces; `origin_is_live` whether
    /// it is a live member (only members' deltas shape the norm reference).
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        &mut self,
        out: &mut Outbox,
        origin: PeerId,
        version: u64,
        delta: &DeltaPayload,
        content: ContentHash,
        announced: u64,
        origin_is_live: bool,
    ) -> Received {
        if version == 0 {
            out.reject(origin, RejectReason::Version);
            return Received::Rejected;
        }
        if let Err(reason) = self.admission.check_shape(delta.weight, &delta.values) {
            out.reject(origin, reason);
            return Received::Rejected;
        }
        if self.applied.contains(origin, version) {
            out.stats.deltas_already_applied += 1;
            return Received::AlreadyApplied;
        }
        let known = self.applied.max_of(origin).max(announced);
        if let Err(reason) = self.admission.check_version_jump(known, version) {
            out.reject(origin, reason);
            return Received::Rejected;
        }
        let norm = l2_norm(&delta.values);
        if let Err(reason) = self.admission.check_norm(norm) {
            out.reject(origin, reason);
            return Received::Rejected;
        }
        // Deltas from origins outside the view (or all-zero ones) could otherwise drag the
        // median down until honest deltas fail.
        if origin_is_live {
            self.admission.record_norm(norm, origin != self.me);
        }
        let before = self.applied.max_of(origin);
        add_into(&mut self.base, &delta.values);
        self.applied.insert(origin, version);
        self.contents.insert(origin, version, content);
        self.changed();
        self.log.insert(
            origin,
            version,
            LoggedDelta {
                weight: delta.weight,
                values: delta.values.clone(),
                logged_at: out.now,
                signature: delta.signature.clone(),
                encoded: Default::default(),
            },
        );
        out.stats.deltas_applied += 1;
        if origin == self.me {
            // One of our own deltas coming back after a restart: never publish it again.
            self.published = self.published.max(version);
        }
        if version > before + 1 {
            out.stats.gaps_detected += 1;
            let missing = self
                .applied
                .origins()
                .get(&origin)
                .map(|e| e.missing_at_most(MAX_GAP_REPORT))
                .unwrap_or_default();
            out.event(Event::GapDetected { origin, missing });
        }
        out.event(Event::DeltaApplied {
            origin,
            version,
            values: delta.values.clone(),
        });
        Received::Applied
    }

    /// A `Snapshot` from the network, installed when it holds deltas this peer lacks and the
    /// install loses nothing: every delta this peer applied that the snapshot lacks is still in
    /// the log, to be re-applied on top of it. An install that would drop some (an inexact
    /// merge) is taken only from a snapshot that [`outranks`] this peer's state, so of two
    /// peers that each hold deltas the other can no longer be sent exactly one gives way, once,
    /// instead of both trading losses back and forth (and a late copy of an old snapshot never
    /// undoes newer merges). Every change of the applied set thus raises its rank. A refused
    /// snapshot is counted (`snapshots_refused`); anti-entropy then goes the other way.
    /// `announced` gives the highest version each origin's record announces (see
    /// [`Replica::install_snapshot`]).
    pub fn receive_snapshot(
        &mut self,
        out: &mut Outbox,
        mut snapshot: Snapshot,
        announced: &dyn Fn(PeerId) -> u64,
    ) {
        snapshot.applied.normalize();
        if snapshot.applied.is_subset_of(&self.applied) {
            return;
        }
        let exact = self
            .applied
            .difference(&snapshot.applied)
            .all(|(origin, version)| self.log.get(origin, version).is_some());
        if !exact && !outranks(&snapshot.applied, &self.applied) {
            out.stats.snapshots_refused += 1;
            return;
        }
        self.install_snapshot(out, snapshot, announced);
    }

    /// Replaces the base by `snapshot`, then re-applies the deltas this peer holds that the
    /// snapshot lacks (docs/ALGORITHM.md). Deltas no longer in the log are left out of both the
    /// base and the applied set, so anti-entropy can still bring them; such an install counts
    /// as inexact. A snapshot of the wrong length or with non-finite values is refused, and so
    /// is one that claims a version more than `max_version_jump` above the highest this peer
    /// knows of its origin (applied here, or `announced(origin)` by its record), the bound a
    /// delta meets: an applied set is enumerated in places (what a digest's sender lacks), so
    /// a claimed prefix of 2⁴⁰ versions would exhaust memory. Refusals are counted by reason
    /// (`deltas_rejected`).
    pub fn install_snapshot(
        &mut self,
        out: &mut Outbox,
        snapshot: Snapshot,
        announced: &dyn Fn(PeerId) -> u64,
    ) {
        if let Err(reason) = self.admission.check_base(&snapshot.base) {
            out.reject(self.me, reason);
            return;
        }
        for (&origin, entry) in snapshot.applied.origins() {
            let mut known = self.applied.max_of(origin).max(announced(origin));
            if origin == self.me {
                known = known.max(self.published);
            }
            if let Err(reason) = self.admission.check_version_jump(known, entry.max()) {
                out.reject(origin, reason);
                return;
            }
        }
        let mut base = snapshot.base.to_vec();
        let mut applied = snapshot.applied;
        let mut contents = Contents::from_list(&snapshot.contents);
        contents.retain_applied(&applied);
        // What the snapshot does not say a delta held, this peer may still know: keep it, so
        // a donor whose own knowledge has gaps (a checkpoint from before contents were kept)
        // does not spread them. A retraction is not kept: the snapshot's base may hold the
        // delta.
        for (origin, version, content) in self.contents.to_list() {
            if applied.contains(origin, version)
                && contents.get(origin, version).is_none()
                && !self.contents.is_retracted(origin, version)
            {
                contents.insert(origin, version, content);
            }
        }
        let extra: Vec<(PeerId, u64)> = self.applied.difference(&applied).collect();
        let mut exact = true;
        for (origin, version) in extra {
            match self.log.get(origin, version) {
                Some(delta) => {
                    add_into(&mut base, &delta.values);
                    applied.insert(origin, version);
                    if let Some(content) = self.contents.get(origin, version) {
                        contents.insert(origin, version, *content);
                    }
                }
                None => exact = false,
            }
        }
        self.base = base;
        self.applied = applied;
        self.contents = contents;
        self.changed();
        // A restarted peer learns the versions it published before its checkpoint.
        self.published = self.published.max(self.applied.max_of(self.me));
        out.stats.snapshots_installed += 1;
        if !exact {
            out.stats.inexact_merges += 1;
        }
        out.event(Event::BaseReplaced {
            base: self.base.clone().into(),
            exact,
        });
    }
}

/// Whether a snapshot with applied set `theirs` wins over a peer holding `ours` when merging
/// them would drop some of the peer's deltas: the larger set wins, and between sets of one
/// size the larger fingerprint, so of two peers exactly one gives way.
pub fn outranks(theirs: &VersionVector, ours: &VersionVector) -> bool {
    (theirs.len(), theirs.fingerprint()) > (ours.len(), ours.fingerprint())
}

impl Replica {
    /// Resolves the equivocated `(origin, version)` of `proof` to nothing: when a delta was
    /// applied under it, its values (from the proof, or else the log) are taken out of the
    /// base and [`Event::DeltaRetracted`] tells the trainer; the version then counts as applied
    /// with the content [`RETRACTED`], so neither delta is ever applied here again, and the log
    /// forgets it. Returns false when the applied delta's values were nowhere to be found (the
    /// base then keeps it: counted as an inexact merge).
    pub fn retract(&mut self, out: &mut Outbox, proof: &EquivocationProof) -> bool {
        let (origin, version) = (proof.origin, proof.version);
        let mut exact = true;
        if self.applied.contains(origin, version) && !self.is_retracted(origin, version) {
            let held = self.contents.get(origin, version).copied();
            let values = [&proof.first, &proof.second]
                .into_iter()
                .find(|d| Some(d.content) == held && !d.values.is_empty())
                .map(|d| d.values.clone())
                .or_else(|| self.log.get(origin, version).map(|d| d.values.clone()));
            match values {
                Some(values) if values.len() == self.base.len() => {
                    for (b, d) in self.base.iter_mut().zip(values.iter()) {
                        *b -= d;
                    }
                    out.stats.deltas_retracted += 1;
                    out.event(Event::DeltaRetracted {
                        origin,
                        version,
                        values,
                    });
                }
                _ => {
                    exact = false;
                    out.stats.inexact_merges += 1;
                }
            }
        }
        self.applied.insert(origin, version);
        self.contents.insert(origin, version, RETRACTED);
        self.changed();
        self.log.remove(origin, version);
        exact
    }
}

/// `base += delta`, element by element. Lengths are checked by the callers.
fn add_into(base: &mut [f32], delta: &[f32]) {
    for (b, d) in base.iter_mut().zip(delta.iter()) {
        *b += d;
    }
}
