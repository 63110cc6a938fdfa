//! When a gossip peer publishes its local progress: every H optimizer steps, or every T of wall
//! time (`train.publish_every = 10` or `"5s"`).
//!
//! A step count keeps every peer's phases equally long in steps, which suits peers of one
//! speed. A period of time suits heterogeneous peers: a slow peer publishes as often as a fast
//! one, each delta carrying the steps it managed (as in asynchronous local SGD with
//! wall-clock communication rounds), so no peer's progress waits on a step count it reaches
//! late.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How often the gossip peer publishes ([`crate::train::TrainPlan::publish_every`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishPeriod {
    /// After this many optimizer steps (H, at least 1). In the barrier baseline, the steps
    /// between barrier rounds.
    Steps(u64),
    /// Once this much wall time has passed since the last publish, checked after each step
    /// (so a delta carries at least one step).
    Interval(Duration),
}

impl Default for PublishPeriod {
    fn default() -> Self {
        PublishPeriod::Steps(10)
    }
}

impl PublishPeriod {
    /// The step count, or None for a period of time.
    pub fn steps(&self) -> Option<u64> {
        match *self {
            PublishPeriod::Steps(h) => Some(h),
            PublishPeriod::Interval(_) => None,
        }
    }

    /// Whether a publish is due after `steps` steps and `elapsed` wall time since the last
    /// one; `factor` stretches the period (flow control's "overdue" is 4 periods). A phase
    /// with no step is never due.
    pub fn due(&self, steps: u64, elapsed: Duration, factor: u32) -> bool {
        if steps == 0 {
            return false;
        }
        match *self {
            PublishPeriod::Steps(h) => steps >= h.max(1).saturating_mul(u64::from(factor)),
            PublishPeriod::Interval(period) => elapsed >= period.saturating_mul(factor),
        }
    }

    /// Checks the period is usable: at least one step, or longer than zero.
    ///
    /// # Errors
    /// A sentence naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            PublishPeriod::Steps(0) => Err("must be at least 1 step".into()),
            PublishPeriod::Interval(d) if d.is_zero() => {
                Err("a period of time must be longer than 0s".into())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for PublishPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishPeriod::Steps(h) => write!(f, "{h}"),
            PublishPeriod::Interval(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl FromStr for PublishPeriod {
    type Err = String;

    /// `10` (steps) or a duration such as `5s`, `500ms`, `1m`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(h) = s.parse::<u64>() {
            return Ok(PublishPeriod::Steps(h));
        }
        humantime::parse_duration(s)
            .map(PublishPeriod::Interval)
            .map_err(|_| {
                format!("`{s}`: expected a number of steps (e.g. 10) or a duration (e.g. \"5s\")")
            })
    }
}

impl Serialize for PublishPeriod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PublishPeriod::Steps(h) => serializer.serialize_u64(*h),
            PublishPeriod::Interval(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for PublishPeriod {
    /// An integer (steps) or a string (steps or a duration).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Steps(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Steps(h) => Ok(PublishPeriod::Steps(h)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_durations() {
        assert_eq!("10".parse(), Ok(PublishPeriod::Steps(10)));
        assert_eq!(
            "5s".parse(),
            Ok(PublishPeriod::Interval(Duration::from_secs(5)))
        );
        assert_eq!(
            "250ms".parse(),
            Ok(PublishPeriod::Interval(Duration::from_millis(250)))
        );
        let err = "often".parse::<PublishPeriod>().unwrap_err();
        assert!(err.contains("`often`") && err.contains("duration"), "{err}");
        assert!(PublishPeriod::Steps(0).validate().is_err());
        assert!(PublishPeriod::Interval(Duration::ZERO).validate().is_err());
    }

    #[test]
    fn due_by_steps_or_by_time() {
        let h = PublishPeriod::Steps(10);
        assert!(!h.due(9, Duration::from_secs(100), 1));
        assert!(h.due(10, Duration::ZERO, 1));
        assert!(!h.due(39, Duration::ZERO, 4));
        assert!(h.due(40, Duration::ZERO, 4));
        let t = PublishPeriod::Interval(Duration::from_secs(5));
        assert!(!t.due(1000, Duration::from_secs(4), 1));
        assert!(t.due(1, Duration::from_secs(5), 1));
        assert!(
            !t.due(0, Duration::from_secs(50), 1),
            "a delta carries a step"
        );
        assert!(!t.due(3, Duration::from_secs(19), 4));
    }

    #[test]
    fn toml_takes_an_integer_or_a_string() {
        #[derive(Deserialize, Serialize)]
        struct T {
            p: PublishPeriod,
        }
        let a: T = toml::from_str("p = 200").unwrap();
        assert_eq!(a.p, PublishPeriod::Steps(200));
        let b: T = toml::from_str("p = \"5s\"").unwrap();
        assert_eq!(b.p, PublishPeriod::Interval(Duration::from_secs(5)));
        let back: T = toml::from_str(&toml::to_string(&b).unwrap()).unwrap();
        assert_eq!(back.p, b.p);
        assert!(toml::from_str::<T>("p = \"soon\"").is_err());
    }
}
