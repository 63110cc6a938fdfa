//! Value parsers of the command line's flags: each parses a flag the way its config key is
//! parsed and names that key in its error.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::config::LrScaling;
use crate::train::PublishPeriod;

/// The value parser of a flag written as its config key `key` is in the file, parsed with the
/// same [`FromStr`]: `--shard 3/2` says "train.shard: bad shard `3/2`: ...".
pub(super) fn text<T>(
    key: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr,
    T::Err: Display,
{
    move |s: &str| s.parse().map_err(|e| format!("{key}: {e}"))
}

/// The value parser of a whole-number flag whose smallest valid value is `min`. `key` is the
/// config key the flag sets (or the flag itself when it sets none) and names it in the error, so
/// `--batch-size -1` says "train.batch_size must be at least 1, got -1". With
/// `allow_negative_numbers` on the flag, a negative number reaches this parser instead of being
/// taken for an unknown flag.
pub(super) fn whole<T>(
    key: &'static str,
    min: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let v: i128 = s
            .trim()
            .parse()
            .map_err(|_| format!("{key} must be a whole number, got `{s}`"))?;
        if v < i128::from(min) {
            return Err(format!("{key} must be at least {min}, got {v}"));
        }
        u64::try_from(v)
            .ok()
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| format!("{key} is too large: {v}"))
    }
}

/// The value parser of a count flag at least 1, with an optional SI suffix: `4M` is 4,000,000,
/// `500k` 500,000, `1.5G` 1,500,000,000 (`key` names it in the error).
pub(super) fn count(
    key: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    move |s: &str| {
        let t = s.trim();
        let (number, scale) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1e3),
            Some((i, 'M')) => (&t[..i], 1e6),
            Some((i, 'G')) => (&t[..i], 1e9),
            _ => (t, 1.0),
        };
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() && v * scale >= 1.0 && v * scale < 1.8e19 => {
                Ok((v * scale).round() as u64)
            }
            _ => Err(format!(
                "{key} must be a count of at least 1, e.g. 4000000 or 4M, got `{s}`"
            )),
        }
    }
}

/// The value parser of a flag that takes a finite number ≥ 0 (`key` names it in the error).
pub(super) fn non_negative(
    key: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{key} must be a number ≥ 0, got {v}")),
        Err(_) => Err(format!("{key} must be a number, got `{s}`")),
    }
}

/// The value parser of a duration flag such as `30s` or `10m` (`key` names it in the error; a
/// negative duration such as `-1s` reaches it with `allow_hyphen_values`).
pub(super) fn duration(
    key: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |s: &str| {
        humantime::parse_duration(s.trim()).map_err(|e| {
            if s.trim_start().starts_with('-') {
                format!("{key} cannot be negative, got `{s}`")
            } else {
                format!("{key} must be a duration such as 30s or 10m, got `{s}`: {e}")
            }
        })
    }
}

pub(super) fn parse_congestion(s: &str) -> Result<crate::net::Congestion, String> {
    use crate::net::Congestion;
    match s {
        "cubic" => Ok(Congestion::Cubic),
        "newreno" => Ok(Congestion::NewReno),
        "bbr" => Ok(Congestion::Bbr),
        other => Err(format!("`{other}` is not one of cubic, newreno, bbr")),
    }
}

/// Parses `PEER=FACTOR`.
pub(super) fn parse_slowdown(s: &str) -> Result<(String, f64), String> {
    let (name, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not PEER=FACTOR"))?;
    let factor: f64 = factor
        .parse()
        .map_err(|_| format!("`{factor}` is not a number"))?;
    if name.is_empty() || !factor.is_finite() || factor < 1.0 {
        return Err(format!("`{s}`: need a peer name and a factor ≥ 1"));
    }
    Ok((name.to_string(), factor))
}

pub(super) fn parse_lr_scaling(s: &str) -> Result<LrScaling, String> {
    match s {
        "none" => Ok(LrScaling::None),
        "linear" => Ok(LrScaling::Linear),
        "sqrt" => Ok(LrScaling::Sqrt),
        other => Err(format!("`{other}` is not one of none, linear, sqrt")),
    }
}

/// The value parser of `--publish-every`: a whole number of steps, at least 1 (`-1` says
/// "train.publish_every must be at least 1"), or a period of time longer than zero (`5s`).
pub(super) fn publish_period(s: &str) -> Result<PublishPeriod, String> {
    const KEY: &str = "train.publish_every";
    if s.trim().parse::<i128>().is_ok() {
        return whole::<u64>(KEY, 1)(s).map(PublishPeriod::Steps);
    }
    let period: PublishPeriod = s.parse().map_err(|e| format!("{KEY}: {e}"))?;
    period.validate().map_err(|e| format!("{KEY} {e}"))?;
    Ok(period)
}
