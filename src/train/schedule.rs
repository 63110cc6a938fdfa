//! Learning-rate schedules: constant, or linear warm-up then cosine decay (Loshchilov and
//! Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without
//! restarts; the form nanoGPT and DiLoCo's inner AdamW use).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the learning rate moves over a run of `total` optimizer steps. The default is
/// [`LrSchedule::WarmupCosine`] with [`DEFAULT_WARMUP`] and [`DEFAULT_FLOOR`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The configured learning rate throughout (`constant`).
    Constant,
    /// Linear warm-up from 0 to the configured rate over the first `warmup` fraction of the
    /// steps, then cosine decay to `floor` × the rate at the last step
    /// (`cosine`, or `cosine:warmup=0.05,floor=0.1`).
    WarmupCosine {
        /// Fraction of the run's steps spent warming up, in [0, 1).
        warmup: f64,
        /// Final rate as a fraction of the configured one, in [0, 1].
        floor: f64,
    },
}

/// Default warm-up fraction of `cosine`.
pub const DEFAULT_WARMUP: f64 = 0.05;
/// Default final-rate fraction of `cosine`.
pub const DEFAULT_FLOOR: f64 = 0.1;

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::WarmupCosine {
            warmup: DEFAULT_WARMUP,
            floor: DEFAULT_FLOOR,
        }
    }
}

impl LrSchedule {
    /// The rate for the step that follows `step` steps done, of `total`, with base rate
    /// `base`; None for [`LrSchedule::Constant`] (leave the optimizer's rate alone).
    pub fn lr_at(&self, base: f64, step: u64, total: u64) -> Option<f64> {
        match *self {
            LrSchedule::Constant => None,
            LrSchedule::WarmupCosine { warmup, floor } => {
                let total = total.max(1) as f64;
                let warm = (warmup * total).round();
                let s = step as f64;
                if s < warm {
                    return Some(base * (s + 1.0) / warm);
                }
                let span = (total - warm).max(1.0);
                let progress = ((s - warm) / span).clamp(0.0, 1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                Some(base * (floor + (1.0 - floor) * cosine))
            }
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrSchedule::Constant => f.write_str("constant"),
            LrSchedule::WarmupCosine { warmup, floor } => {
                write!(f, "cosine:warmup={warmup},floor={floor}")
            }
        }
    }
}

impl FromStr for LrSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "constant" {
            return Ok(LrSchedule::Constant);
        }
        let Some(rest) = s.strip_prefix("cosine") else {
            return Err(format!(
                "`{s}` is not a schedule: use `constant`, `cosine` or \
                 `cosine:warmup=0.05,floor=0.1`"
            ));
        };
        let (mut warmup, mut floor) = (DEFAULT_WARMUP, DEFAULT_FLOOR);
        if let Some(params) = rest.strip_prefix(':') {
            for pair in params.split(',') {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{pair}` in `{s}` is not key=value"))?;
                let value: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{value}` in `{s}` is not a number"))?;
                match key.trim() {
                    "warmup" => warmup = value,
                    "floor" => floor = value,
                    other => {
                        return Err(format!("unknown `{other}` in `{s}` (known: warmup, floor)"))
                    }
                }
            }
        } else if !rest.is_empty() {
            return Err(format!("`{s}` is not a schedule"));
        }
        if !(0.0..1.0).contains(&warmup) {
            return Err(format!("warmup {warmup} must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&floor) {
            return Err(format!("floor {floor} must be in [0, 1]"));
        }
        Ok(LrSchedule::WarmupCosine { warmup, floor })
    }
}

impl Serialize for LrSchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LrSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_linearly_then_decays_to_the_floor() {
        let s: LrSchedule = "cosine:warmup=0.1,floor=0.1".parse().unwrap();
        assert_eq!(
            s,
            LrSchedule::WarmupCosine {
                warmup: 0.1,
                floor: 0.1
            }
        );
        let lr = |step| s.lr_at(1.0, step, 100).unwrap_or(f64::NAN);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!(lr(55) < lr(30) && lr(80) < lr(55));
        assert!((lr(100) - 0.1).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.lr_at(1.0, 5, 10), None);
    }

    #[test]
    fn schedules_parse_print_and_refuse_nonsense() {
        for text in [
            "constant",
            "cosine:warmup=0.05,floor=0.1",
            "cosine:warmup=0,floor=1",
        ] {
            let s: LrSchedule = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            "cosine".parse::<LrSchedule>(),
            Ok(LrSchedule::WarmupCosine {
                warmup: DEFAULT_WARMUP,
                floor: DEFAULT_FLOOR
            })
        );
        for bad in [
            "linear",
            "cosine:warmup=1",
            "cosine:floor=2",
            "cosine:x=1",
            "cosinex",
        ] {
            assert!(bad.parse::<LrSchedule>().is_err(), "{bad}");
        }
    }
}
