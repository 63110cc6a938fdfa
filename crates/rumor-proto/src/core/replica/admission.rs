//! Admission checks on a delta before it may touch the base: shape, weight, finite values,
//! version, a version jump far beyond what is known of its origin, and an L2 norm far above
//! the norms of recently accepted deltas.
//!
//! A refused delta changes nothing. The norm windows are this file's only state: one of every
//! accepted delta (the check's reference), one of other members' deltas (the bound a peer clips
//! its own deltas to before publishing, [`clip_to_norm`]).

use std::collections::VecDeque;

use super::super::config::{CoreConfig, NORM_MIN_SAMPLES, NORM_WINDOW, OWN_NORM_SHARE};
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
    /// L2 norms of the last [`NORM_WINDOW`] deltas accepted from other live members (a ring):
    /// what this peer's own deltas are measured against.
    others_norms: VecDeque<f64>,
    /// The median of `others_norms` (0 while it is empty), kept current: the shell reads the
    /// bound after every input.
    others_median: f64,
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
            others_norms: VecDeque::with_capacity(NORM_WINDOW),
            others_median: 0.0,
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

    /// The largest L2 norm this peer lets its own next delta have: [`OWN_NORM_SHARE`] ×
    /// `max_delta_norm_factor` (at least 1) × the median of the norms of the last
    /// [`NORM_WINDOW`] deltas accepted from other live members. `None` while the check is off
    /// or no such delta was accepted yet.
    ///
    /// Others' deltas only, from the first one: a receiver's window holds the others' deltas
    /// and this peer's own, already held to this bound, so its median is not far below this one
    /// unless this peer's deltas are the smallest (and then they are not clipped); its reference
    /// is the highest median it has seen, at least its current one. Neither the reference here
    /// (it only rises, while a receiver that joined late holds a lower one) nor a window with
    /// this peer's own large deltas in it (a peer with a third of the deltas can own the median
    /// early on) would keep that margin. And the bound exists from the first delta heard, before
    /// receivers hold the [`NORM_MIN_SAMPLES`] their check waits for.
    pub fn own_norm_bound(&self) -> Option<f64> {
        let factor = f64::from(self.max_norm_factor);
        if factor <= 0.0 || self.others_median <= 0.0 {
            return None;
        }
        // Never below the median itself, or clipping would shrink the typical delta, and with
        // it the median, round after round.
        let share = (OWN_NORM_SHARE * factor).max(1.0);
        Some(share * self.others_median)
    }

    /// Adds an accepted delta's norm to the window and raises the reference to the window's
    /// median if that is higher; `from_others`: received from another live member (else
    /// published here), which also counts towards [`Admission::own_norm_bound`].
    ///
    /// The reference never goes down: deltas shrink as training converges, and a delta
    /// published early but delivered late (a straggler, an anti-entropy repair) must still pass,
    /// or the peers that rejected it would never be consistent with those that applied it.
    pub fn record_norm(&mut self, norm: f64, from_others: bool) {
        if norm.is_nan() || norm <= 0.0 {
            return;
        }
        push_bounded(&mut self.norms, norm);
        if from_others {
            push_bounded(&mut self.others_norms, norm);
            self.others_median = median(&self.others_norms);
        }
        if self.norms.len() >= NORM_MIN_SAMPLES {
            self.norm_reference = self.norm_reference.max(median(&self.norms));
        }
    }
}

/// Appends to a ring of at most [`NORM_WINDOW`] norms.
fn push_bounded(ring: &mut VecDeque<f64>, norm: f64) {
    if ring.len() >= NORM_WINDOW {
        ring.pop_front();
    }
    ring.push_back(norm);
}

/// The median of a non-empty ring of norms (the upper one of an even count).
fn median(ring: &VecDeque<f64>) -> f64 {
    let mut sorted: Vec<f64> = ring.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The L2 norm of `values`, accumulated in f64.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Scales `values` down so that their L2 norm is at most `bound` (norm clipping, as in
/// gradient clipping: Pascanu et al., 2013, "On the difficulty of training recurrent neural
/// networks"; with the bound a multiple of a running median of norms, as in adaptive clipping:
/// Andrew et al., 2021, "Differentially private learning with adaptive clipping"). Returns the
/// norm before, when it was above `bound` and the values were scaled; `None` (values untouched)
/// otherwise, also for a bound that is not finite and positive.
pub fn clip_to_norm(values: &mut [f32], bound: f64) -> Option<f64> {
    if !(bound.is_finite() && bound > 0.0) {
        return None;
    }
    let norm = l2_norm(values);
    if norm.is_nan() || norm <= bound {
        return None;
    }
    // Rounding each product to f32 can leave the norm a hair above the bound: aim just below.
    let scale = (bound / norm * (1.0 - 1e-6)) as f32;
    for v in values.iter_mut() {
        *v *= scale;
    }
    Some(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(factor: f32) -> Admission {
        Admission::new(&CoreConfig {
            param_count: 4,
            max_delta_norm_factor: factor,
            ..CoreConfig::default()
        })
    }

    #[test]
    fn own_bound_is_a_share_of_the_receivers_bar_at_the_median_of_others_deltas() {
        let mut a = admission(10.0);
        a.record_norm(50.0, false);
        assert_eq!(a.own_norm_bound(), None, "own deltas do not set the bound");
        a.record_norm(1.0, true);
        assert_eq!(a.own_norm_bound(), Some(OWN_NORM_SHARE * 10.0));
        for _ in 0..NORM_MIN_SAMPLES {
            a.record_norm(1.0, true);
        }
        // Deltas shrink (a decaying learning rate): the reference stays, the own bound follows.
        for _ in 0..NORM_WINDOW {
            a.record_norm(0.1, true);
        }
        assert!(a.check_norm(9.0).is_ok(), "the reference never goes down");
        let bound = a.own_norm_bound().unwrap_or_default();
        assert!(
            (bound - OWN_NORM_SHARE * 10.0 * 0.1).abs() < 1e-12,
            "{bound}"
        );
        assert_eq!(admission(0.0).own_norm_bound(), None, "the check is off");
        let mut low = admission(1.5);
        low.record_norm(2.0, true);
        assert_eq!(low.own_norm_bound(), Some(2.0), "never below the median");
    }

    #[test]
    fn clipping_scales_a_delta_down_to_the_bound_and_leaves_smaller_ones_alone() {
        let mut values = vec![3.0f32, 4.0, 0.0, 0.0];
        assert_eq!(clip_to_norm(&mut values, 5.0), None);
        assert_eq!(values, [3.0, 4.0, 0.0, 0.0]);
        assert_eq!(clip_to_norm(&mut values, 1.0), Some(5.0));
        let norm = l2_norm(&values);
        assert!(norm <= 1.0 && norm > 0.999_99, "{norm}");
        assert!(
            (values[0] / values[1] - 0.75).abs() < 1e-6,
            "direction kept: {values:?}"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut v = vec![3.0f32, 4.0];
            assert_eq!(clip_to_norm(&mut v, bad), None, "bound {bad}");
            assert_eq!(v, [3.0, 4.0]);
        }
    }

    #[test]
    fn a_clipped_own_delta_passes_a_receiver_that_saw_the_same_deltas() {
        let (mut origin, mut receiver) = (admission(10.0), admission(10.0));
        for i in 0..40 {
            let n = 1.0 + f64::from(i % 5) * 0.1;
            origin.record_norm(n, true);
            receiver.record_norm(n, true);
        }
        let mut huge = vec![100.0f32; 4];
        let bound = origin.own_norm_bound().unwrap_or_default();
        assert!(receiver.check_norm(l2_norm(&huge)).is_err());
        assert!(clip_to_norm(&mut huge, bound).is_some());
        assert!(receiver.check_norm(l2_norm(&huge)).is_ok());
    }
}
