//! Delta arithmetic on flat parameter vectors.
//!
//! The merge (`docs/ALGORITHM.md`, "Operations") works on flat `f32` vectors: a delta is `d = w · (work − base)`, and a
//! received delta is added to `base` and `work`. These are plain loops over slices, with lengths
//! checked, so that every peer computes the same bits for the same inputs (no parallel reduction
//! order, no fused multiply-add).

use super::ModelError;

fn check_same_len(what: &'static str, expected: usize, actual: usize) -> Result<(), ModelError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ModelError::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// `y += a * x`, element-wise, in `f32`.
///
/// # Errors
/// [`ModelError::LengthMismatch`] if `x.len() != y.len()`; `y` is then unchanged.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) -> Result<(), ModelError> {
    check_same_len("axpy x", y.len(), x.len())?;
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
    Ok(())
}

/// `w * (a - b)`, element-wise, in `f32`: the delta a peer publishes, with `a = work`,
/// `b = base` and `w = 1 / n` (`docs/ALGORITHM.md`, "Operations").
///
/// # Errors
/// [`ModelError::LengthMismatch`] if `a.len() != b.len()`.
pub fn scaled_difference(a: &[f32], b: &[f32], w: f32) -> Result<Vec<f32>, ModelError> {
    check_same_len("scaled_difference b", a.len(), b.len())?;
    Ok(a.iter().zip(b).map(|(&ai, &bi)| w * (ai - bi)).collect())
}

/// Euclidean norm `sqrt(Σ x_i²)`, accumulated in `f64` (no overflow for any `f32` input;
/// infinite or NaN if an element is).
pub fn l2_norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            v * v
        })
        .sum::<f64>()
        .sqrt()
}

/// Whether every element is finite (no NaN, no ±∞). Deltas from peers must pass this check
/// before they are applied (`docs/ALGORITHM.md`, "Checks on received deltas").
pub fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// Consensus distance of several flat models, the measure of how far apart the peers' models
/// are that runs report:
/// `mean_i ‖b_i − b̄‖ / ‖b̄‖` with `b̄ = mean_i b_i`, all in `f64`.
///
/// Returns 0 for a single model, and 0 when all models are equal. If the models differ but
/// their mean is the zero vector, the relative distance is undefined and the result is
/// `f64::INFINITY`.
///
/// # Errors
/// [`ModelError::Empty`] for no models; [`ModelError::LengthMismatch`] if the models do not all
/// have the length of the first.
pub fn consensus_distance(models: &[&[f32]]) -> Result<f64, ModelError> {
    let Some(first) = models.first() else {
        return Err(ModelError::Empty("consensus_distance: no models"));
    };
    let n = first.len();
    for m in models {
        check_same_len("consensus_distance model", n, m.len())?;
    }
    let count = models.len() as f64;
    let mut mean = vec![0f64; n];
    for m in models {
        for (acc, &v) in mean.iter_mut().zip(m.iter()) {
            *acc += f64::from(v);
        }
    }
    for acc in &mut mean {
        *acc /= count;
    }
    let mean_norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    let spread = models
        .iter()
        .map(|m| {
            m.iter()
                .zip(&mean)
                .map(|(&v, &c)| {
                    let d = f64::from(v) - c;
                    d * d
                })
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / count;
    if spread == 0.0 {
        Ok(0.0)
    } else if mean_norm == 0.0 {
        Ok(f64::INFINITY)
    } else {
        Ok(spread / mean_norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn axpy_and_scaled_difference() -> Result<(), ModelError> {
        let mut y = vec![1.0, 2.0, 3.0];
        axpy(&mut y, 2.0, &[1.0, 0.5, -1.0])?;
        assert_eq!(y, [3.0, 3.0, 1.0]);
        let d = scaled_difference(&[4.0, 2.0], &[2.0, 4.0], 0.5)?;
        assert_eq!(d, [1.0, -1.0]);
        Ok(())
    }

    #[test]
    fn length_mismatches_are_errors() {
        let mut y = vec![1.0, 2.0];
        assert!(matches!(
            axpy(&mut y, 1.0, &[1.0]),
            Err(ModelError::LengthMismatch {
                expected: 2,
                actual: 1,
                ..
            })
        ));
        assert_eq!(y, [1.0, 2.0]);
        assert!(matches!(
            scaled_difference(&[1.0], &[1.0, 2.0], 1.0),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            consensus_distance(&[&[1.0], &[1.0, 2.0]]),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert!(matches!(consensus_distance(&[]), Err(ModelError::Empty(_))));
    }

    #[test]
    fn norms_and_finiteness() {
        assert_eq!(l2_norm(&[3.0, 4.0]), 5.0);
        assert_eq!(l2_norm(&[]), 0.0);
        // f32::MAX squared overflows f32 but not f64.
        assert!(l2_norm(&[f32::MAX, f32::MAX]).is_finite());
        assert!(all_finite(&[0.0, -1.0, 1e30]));
        assert!(!all_finite(&[0.0, f32::NAN]));
        assert!(!all_finite(&[f32::NEG_INFINITY]));
    }

    #[test]
    fn consensus_distance_matches_hand_computation() -> Result<(), ModelError> {
        let m = [1.0f32, -2.0, 3.0];
        assert_eq!(consensus_distance(&[&m])?, 0.0);
        assert_eq!(consensus_distance(&[&m, &m, &m])?, 0.0);
        // [1,0] and [3,0]: mean [2,0], each 1 away, so 1 / 2.
        assert!((consensus_distance(&[&[1.0, 0.0], &[3.0, 0.0]])? - 0.5).abs() < 1e-12);
        // [0,0], [2,0], [1,3]: mean [1,1]; distances √2, √2, 2; (2√2 + 2) / 3 / √2 = (2 + √2) / 3.
        let d = consensus_distance(&[&[0.0, 0.0], &[2.0, 0.0], &[1.0, 3.0]])?;
        assert!((d - (2.0 + 2f64.sqrt()) / 3.0).abs() < 1e-12, "{d}");
        // Differing models with a zero mean.
        assert_eq!(consensus_distance(&[&[1.0], &[-1.0]])?, f64::INFINITY);
        Ok(())
    }

    proptest! {
        #[test]
        fn publish_then_apply_recovers_work(
            pairs in proptest::collection::vec((-100f32..100.0, -100f32..100.0), 0..64)
        ) {
            // With w = 1, base + (work - base) = work up to one rounding per element.
            let (work, base): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let d = scaled_difference(&work, &base, 1.0).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut b = base.clone();
            axpy(&mut b, 1.0, &d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (x, y) in b.iter().zip(&work) {
                prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()));
            }
        }
    }
}
