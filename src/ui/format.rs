//! How numbers read on screen, the same in every table, line and summary: bytes, percentages,
//! seconds ago.

/// Bytes in B, or KiB/MiB/GiB with one decimal (`1536` → `1.5 KiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A peer's headline evaluation: its accuracy as a percentage when it has one, else its
/// workload's first metric as `name=value` (e.g. `val_loss=2.5674`), else `-`.
pub fn headline(v: &crate::metrics::PeerStatus) -> String {
    match (
        v.test_accuracy,
        v.metrics.as_ref().and_then(|m| m.primary()),
    ) {
        (Some(acc), _) => percent(Some(acc)),
        (None, Some((name, value))) => format!("{name}={value:.4}"),
        (None, None) => "-".into(),
    }
}

/// A fraction in [0, 1] as a percentage with two decimals (`0.8125` → `81.25%`); `-` for none.
pub fn percent(v: Option<f32>) -> String {
    v.map_or("-".into(), |a| format!("{:.2}%", a * 100.0))
}

/// A loss with four decimals; `-` for none.
pub fn loss(v: Option<f32>) -> String {
    v.map_or("-".into(), |l| format!("{l:.4}"))
}

/// Seconds, with one decimal below 10 s (`3.2s`, `42s`); `-` for none.
pub fn seconds_ago(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| {
        if s < 10.0 {
            format!("{s:.1}s")
        } else {
            format!("{s:.0}s")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(percent(Some(0.8125)), "81.25%");
        assert_eq!(percent(None), "-");
    }
}
