//! The outer optimizer: what a gossip peer publishes for the local progress of one phase.
//!
//! DiLoCo (Douillard et al. 2023, "DiLoCo: Distributed Low-Communication Training of Language
//! Models") runs H inner AdamW steps per worker, averages the workers' pseudo-gradients
//! `θ_prev − θ_local` and applies them with an outer SGD step with Nesterov momentum (outer lr
//! 0.7, momentum 0.9 in the paper). rumor has no round to average in: every peer publishes
//! its own scaled progress `g_i = w · (work_i − base_i)` when its phase ends, and every peer adds
//! every published delta. So the outer step runs **at the origin, on its own progress**:
//!
//! ```text
//! u_i ← μ · u_i + g_i
//! d_i = η · (g_i + μ · u_i)        (Nesterov; the delta that is published and added everywhere)
//! ```
//!
//! Momentum is linear in the pseudo-gradient, so when the peers publish in lockstep the sum of
//! the peers' outer steps equals DiLoCo's outer step on the summed pseudo-gradient, with one
//! momentum buffer per peer instead of one shared one: `Σ_i u_i` obeys the same recursion as
//! the shared buffer. Without lockstep each peer's momentum still sums only its own progress,
//! so a straggler's stale pseudo-gradient is not amplified by others' momentum. The merge is
//! untouched: `d_i` is an ordinary delta, signed, quantized with error feedback and added by
//! every peer once, so invariant (I) of docs/ALGORITHM.md holds as before.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::ModelError;

/// Which outer optimizer a gossip peer (and the barrier baseline's round update) uses
/// (`train.outer_optimizer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OuterKind {
    /// Publish the scaled progress as it is (an outer SGD step with lr 1: local SGD / FedAvg).
    #[default]
    None,
    /// SGD with Nesterov momentum over the peer's pseudo-gradients (DiLoCo's outer optimizer).
    Nesterov,
}

impl fmt::Display for OuterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OuterKind::None => "none",
            OuterKind::Nesterov => "nesterov",
        })
    }
}

impl FromStr for OuterKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "none" => Ok(OuterKind::None),
            "nesterov" => Ok(OuterKind::Nesterov),
            other => Err(format!("`{other}`: expected none or nesterov")),
        }
    }
}

/// The outer optimizer's settings (`train.outer_optimizer`, `train.outer_lr`,
/// `train.outer_momentum`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OuterSettings {
    /// Which optimizer.
    pub kind: OuterKind,
    /// Outer learning rate η (dimensionless; ignored by [`OuterKind::None`]).
    pub lr: f32,
    /// Momentum μ in [0, 1) (ignored by [`OuterKind::None`]).
    pub momentum: f32,
}

impl Default for OuterSettings {
    fn default() -> Self {
        Self {
            kind: OuterKind::None,
            lr: 1.0,
            momentum: 0.0,
        }
    }
}

/// One peer's outer optimizer state. See the module docs.
#[derive(Clone, Debug)]
pub struct OuterOptimizer {
    settings: OuterSettings,
    /// The momentum buffer `u` (flat, P values); empty until the first Nesterov step.
    momentum: Vec<f32>,
}

impl OuterOptimizer {
    /// A fresh optimizer (zero momentum).
    pub fn new(settings: OuterSettings) -> Self {
        Self {
            settings,
            momentum: Vec::new(),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> OuterSettings {
        self.settings
    }

    /// Turns the scaled progress `g` (flat, P values: `w · (work − base)`) into the delta to
    /// publish, in place, and advances the momentum.
    ///
    /// # Errors
    /// [`ModelError`] when `g`'s length differs from the momentum buffer's (the model changed
    /// under the optimizer).
    pub fn step(&mut self, progress: &mut [f32]) -> Result<(), ModelError> {
        match self.settings.kind {
            OuterKind::None => Ok(()),
            OuterKind::Nesterov => {
                if self.momentum.is_empty() {
                    self.momentum = vec![0.0; progress.len()];
                }
                if self.momentum.len() != progress.len() {
                    return Err(ModelError::LengthMismatch {
                        what: "outer optimizer momentum",
                        expected: self.momentum.len(),
                        actual: progress.len(),
                    });
                }
                let (lr, mu) = (self.settings.lr, self.settings.momentum);
                for (g, u) in progress.iter_mut().zip(self.momentum.iter_mut()) {
                    *u = mu * *u + *g;
                    *g = lr * (*g + mu * *u);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nesterov(lr: f32, momentum: f32) -> OuterOptimizer {
        OuterOptimizer::new(OuterSettings {
            kind: OuterKind::Nesterov,
            lr,
            momentum,
        })
    }

    #[test]
    fn none_publishes_the_progress_unchanged() {
        let mut o = OuterOptimizer::new(OuterSettings::default());
        let mut g = vec![1.0, -2.0];
        o.step(&mut g).unwrap();
        assert_eq!(g, vec![1.0, -2.0]);
    }

    #[test]
    fn nesterov_matches_the_textbook_recursion() {
        // PyTorch's SGD(nesterov=True) on the pseudo-gradient -g: buf = μ buf + g;
        // step = lr (g + μ buf).
        let mut o = nesterov(0.7, 0.9);
        let gs = [0.5f32, 0.25, -0.1];
        let mut buf = 0.0f32;
        for g in gs {
            buf = 0.9 * buf + g;
            let want = 0.7 * (g + 0.9 * buf);
            let mut v = vec![g];
            o.step(&mut v).unwrap();
            assert!((v[0] - want).abs() < 1e-7, "{} vs {want}", v[0]);
        }
    }

    #[test]
    fn per_peer_momentum_sums_to_the_shared_one_in_lockstep() {
        // Two peers' outer steps add up to one outer step on the summed progress.
        let (mut a, mut b, mut shared) =
            (nesterov(0.7, 0.9), nesterov(0.7, 0.9), nesterov(0.7, 0.9));
        let rounds = [
            ([0.3f32, -0.2], [0.1f32, 0.4]),
            ([0.05, 0.1], [-0.2, 0.0]),
            ([0.2, 0.2], [0.2, -0.3]),
        ];
        for (ga, gb) in rounds {
            let (mut da, mut db) = (ga.to_vec(), gb.to_vec());
            a.step(&mut da).unwrap();
            b.step(&mut db).unwrap();
            let mut sum: Vec<f32> = ga.iter().zip(gb).map(|(x, y)| x + y).collect();
            shared.step(&mut sum).unwrap();
            for i in 0..2 {
                assert!((da[i] + db[i] - sum[i]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn a_changed_length_is_an_error() {
        let mut o = nesterov(0.7, 0.9);
        o.step(&mut [1.0, 2.0]).unwrap();
        assert!(o.step(&mut [1.0]).is_err());
    }
}
