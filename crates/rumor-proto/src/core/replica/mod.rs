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
pub mod delta_log;

use std::sync::Arc;
use std::time::Instant;

use crate::id::PeerId;
use crate::version_vector::VersionVector;
use crate::wire::{DeltaPayload, Snapshot};

use super::config::CoreConfig;
use super::events::{Event, RejectReason};
use super::outbox::Outbox;
use admission::{l2_norm, Admission};
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
}

impl Replica {
    /// A replica holding `base` with `applied` folded in and `published` versions of its own.
    pub fn new(
        config: &CoreConfig,
        me: PeerId,
        base: Vec<f32>,
        applied: VersionVector,
        published: u64,
    ) -> Self {
        Self {
            me,
            base,
            applied,
            published,
            log: DeltaLog::new(config.delta_log_bytes),
            admission: Admission::new(config),
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

    /// Bytes and entries of the delta log.
    pub fn log_usage(&self) -> (usize, usize) {
        (self.log.bytes(), self.log.len())
    }

    /// A snapshot of the base and the applied set, as sent in `Welcome`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            base: self.base.clone().into(),
            applied: self.applied.clone(),
        }
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
        signature: crate::auth::Signature,
    ) -> Result<(u64, Arc<[f32]>), RejectReason> {
        self.admission.check_shape(weight, &values)?;
        self.admission.record_norm(l2_norm(&values));
        self.published += 1;
        let version = self.published;
        let values: Arc<[f32]> = values.into();
        add_into(&mut self.base, &values);
        self.applied.insert(self.me, version);
        self.log.insert(
            self.me,
            version,
            LoggedDelta {
                weight,
                values: values.clone(),
                logged_at: now,
                signature,
            },
        );
        out.stats.deltas_published += 1;
        Ok((version, values))
    }

    /// A delta `(origin, version)` from the network. `announced` is the version `origin`'s
    /// member record announces; `origin_is_live` whether it is a live member (only members'
    /// deltas shape the norm reference).
    pub fn receive(
        &mut self,
        out: &mut Outbox,
        origin: PeerId,
        version: u64,
        delta: &DeltaPayload,
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
            self.admission.record_norm(norm);
        }
        let before = self.applied.max_of(origin);
        add_into(&mut self.base, &delta.values);
        self.applied.insert(origin, version);
        self.log.insert(
            origin,
            version,
            LoggedDelta {
                weight: delta.weight,
                values: delta.values.clone(),
                logged_at: out.now,
                signature: delta.signature.clone(),
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

    /// A `Snapshot` from the network: installed when it holds deltas this peer lacks.
    pub fn receive_snapshot(&mut self, out: &mut Outbox, mut snapshot: Snapshot) {
        snapshot.applied.normalize();
        if !snapshot.applied.is_subset_of(&self.applied) {
            self.install_snapshot(out, snapshot);
        }
    }

    /// Replaces the base by `snapshot`, then re-applies the deltas this peer holds that the
    /// snapshot lacks (docs/ALGORITHM.md). Deltas no longer in the log are left out of both the
    /// base and the applied set, so anti-entropy can still bring them; such an install counts
    /// as inexact. A snapshot of the wrong length or with non-finite values is refused.
    pub fn install_snapshot(&mut self, out: &mut Outbox, snapshot: Snapshot) {
        if let Err(reason) = self.admission.check_base(&snapshot.base) {
            out.reject(self.me, reason);
            return;
        }
        let mut base = snapshot.base.to_vec();
        let mut applied = snapshot.applied;
        let extra: Vec<(PeerId, u64)> = self.applied.difference(&applied).collect();
        let mut exact = true;
        for (origin, version) in extra {
            match self.log.get(origin, version) {
                Some(delta) => {
                    add_into(&mut base, &delta.values);
                    applied.insert(origin, version);
                }
                None => exact = false,
            }
        }
        self.base = base;
        self.applied = applied;
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

/// `base += delta`, element by element. Lengths are checked by the callers.
fn add_into(base: &mut [f32], delta: &[f32]) {
    for (b, d) in base.iter_mut().zip(delta.iter()) {
        *b += d;
    }
}
