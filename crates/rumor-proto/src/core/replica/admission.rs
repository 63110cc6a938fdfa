//! Admission checks on a delta before it may touch the base: shape, weight, finite values,
//! version, a version jump far beyond what is known of its origin, and an L2 norm far above
//! the norms of recently accepted deltas.
//!
//! A refused delta changes nothing. The norm window is this file's only state.

use std::collections::VecDeque;

use super::super::config::{CoreConfig, NORM_MIN_SAMPLES, NORM_WINDOW};
use super::super::events::RejectReason;

/// The checks and the norm reference they keep. See the module docs.
#[derive(Debug)]
pub struct Admission {
    /// Number of model parameters.
    param_count: usize,
    /// See [`CoreConfig::max_delta_norm_factor`].
    max_norm_factor: f32,
    /// See [`CoreConfig::max_version_jump`].
    max_version_jump: u64,
    /// L2 norms of the last [`NORM_WINDOW`] accepted deltas (a ring).
    norms: VecDeque<f64>,
    /// The highest median of `norms` seen (0 until [`NORM_MIN_SAMPLES`] were accepted).
    norm_reference: f64,
}

impl Admission {
    /// Checks configured by `config`, with an empty norm window.
    pub fn new(config: &CoreConfig) -> Self {
        Self {
            param_count: config.param_count,
            max_norm_factor: config.max_delta_norm_factor,
            max_version_jump: config.max_version_jump,
            norms: VecDeque::with_capacity(NORM_WINDOW),
            norm_reference: 0.0,
        }
    }

    /// Length, weight in (0, 1] and finite values.
    pub fn check_shape(&self, weight: f32, values: &[f32]) -> Result<(), RejectReason> {
        if values.len() != self.param_count {
            return Err(RejectReason::Shape);
        }
        if !(weight.is_finite() && weight > 0.0 && weight <= 1.0) {
            return Err(RejectReason::Weight);
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(RejectReason::NonFinite);
        }
        Ok(())
    }

    /// A snapshot's base: the model's length and finite values.
    pub fn check_base(&self, base: &[f32]) -> Result<(), RejectReason> {
        if base.len() != self.param_count {
            return Err(RejectReason::Shape);
        }
        if !base.iter().all(|v| v.is_finite()) {
            return Err(RejectReason::NonFinite);
        }
        Ok(())
    }

    /// `version` at most `max_version_jump` above `known`, the highest version known of its
    /// origin (applied or announced).
    pub fn check_version_jump(&self, known: u64, version: u64) -> Result<(), RejectReason> {
        let jump = self.max_version_jump;
        if jump > 0 && version > known.saturating_add(jump) {
            return Err(RejectReason::VersionJump);
        }
        Ok(())
    }

    /// `norm` at most `max_delta_norm_factor` times the reference (once there is one).
    pub fn check_norm(&self, norm: f64) -> Result<(), RejectReason> {
        let factor = f64::from(self.max_norm_factor);
        if factor <= 0.0 || self.norm_reference <= 0.0 {
            return Ok(());
        }
        if norm > factor * self.norm_reference {
            return Err(RejectReason::Norm);
        }
        Ok(())
    }

    /// Adds an accepted delta's norm to the window and raises the reference to the window's
    /// median if that is higher.
    ///
    /// The reference never goes down: deltas shrink as training converges, and a delta
    /// published early but delivered late (a straggler, an anti-entropy repair) must still pass,
    /// or the peers that rejected it would never be consistent with those that applied it.
    pub fn record_norm(&mut self, norm: f64) {
        if norm.is_nan() || norm <= 0.0 {
            return;
        }
        if self.norms.len() >= NORM_WINDOW {
            self.norms.pop_front();
        }
        self.norms.push_back(norm);
        if self.norms.len() >= NORM_MIN_SAMPLES {
            let mut sorted: Vec<f64> = self.norms.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            self.norm_reference = self.norm_reference.max(sorted[sorted.len() / 2]);
        }
    }
}

/// The L2 norm of `values`, accumulated in f64.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}
