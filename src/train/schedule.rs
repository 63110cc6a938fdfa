//! Learning-rate schedules: constant, or linear warm-up then cosine decay (Loshchilov and
//! Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without
//! restarts; the form nanoGPT and DiLoCo's inner AdamW use).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
    /// The rate for the step that follows `done` steps of `total` (fractional in a time-boxed
    /// run: see [`schedule_position`]), with base rate `base`; None for
    /// [`LrSchedule::Constant`] (leave the optimizer's rate alone).
    pub fn lr_at(&self, base: f64, done: f64, total: u64) -> Option<f64> {
        match *self {
            LrSchedule::Constant => None,
            LrSchedule::WarmupCosine { warmup, floor } => {
                let total = total.max(1) as f64;
                let warm = (warmup * total).round();
                let s = done.max(0.0);
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

/// How far through its schedule a run is before its next step, in steps of `total`: the steps
/// `done`, or, in a run limited to `time_limit` that has run for `elapsed`, the same share of
/// `total` as the time spent is of the limit, whichever is further. A run ends at whichever
/// limit it reaches first, so its schedule follows that one: a run of many epochs cut off by
/// time warms up and decays over its time, not over steps it will never take.
pub fn schedule_position(
    done: u64,
    total: u64,
    time_limit: Option<Duration>,
    elapsed: Duration,
) -> f64 {
    let by_steps = done as f64;
    match time_limit {
        Some(limit) if !limit.is_zero() => {
            let share = (elapsed.as_secs_f64() / limit.as_secs_f64()).min(1.0);
            by_steps.max(share * total as f64)
        }
        _ => by_steps,
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
        let lr = |step: u64| s.lr_at(1.0, step as f64, 100).unwrap_or(f64::NAN);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!(lr(55) < lr(30) && lr(80) < lr(55));
        assert!((lr(100) - 0.1).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.lr_at(1.0, 5.0, 10), None);
    }

    #[test]
    fn a_time_boxed_run_follows_whichever_limit_is_nearer() {
        let limit = Some(Duration::from_secs(40));
        let zero = Some(Duration::ZERO);
        // (steps done of 100, time limit, seconds elapsed, position)
        for (done, time_limit, secs, position) in [
            // Steps alone without a time limit, or when they are further along.
            (30, None, 39, 30.0),
            (30, limit, 4, 30.0),
            // Time when it is further along: 10 s of 40 is a quarter of the steps.
            (3, limit, 10, 25.0),
            // Never past the end, and a zero limit is no limit.
            (3, limit, 80, 100.0),
            (3, zero, 5, 3.0),
        ] {
            let at = schedule_position(done, 100, time_limit, Duration::from_secs(secs));
            assert_eq!(at, position, "{done} steps, {time_limit:?}, {secs} s");
        }
        // So 1000 epochs cut off after 40 s warm up and decay within those 40 s.
        let s = LrSchedule::default();
        let at = |secs| {
            let done = schedule_position(20, 1_000_000, limit, Duration::from_secs(secs));
            s.lr_at(1.0, done, 1_000_000).unwrap_or(f64::NAN)
        };
        assert!(at(1) > 0.4 && at(1) < 0.6, "{}", at(1));
        assert!((at(2) - 1.0).abs() < 1e-9, "{}", at(2));
        assert!((at(40) - DEFAULT_FLOOR).abs() < 1e-9, "{}", at(40));
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
