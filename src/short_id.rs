//! The short form of a peer id that tables, dashboards and log lines show.

/// The last 8 hex digits of a peer id given in any textual form (UUIDv7 ids share their
/// leading, time-based digits, so the last ones tell peers apart).
pub fn short_id(id: &str) -> String {
    let hex: Vec<char> = id.chars().filter(char::is_ascii_hexdigit).collect();
    hex[hex.len().saturating_sub(8)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::short_id;

    #[test]
    fn keeps_the_last_eight_hex_digits() {
        assert_eq!(short_id("0190f0a1-7c2b-7d3e-8f40-123456789abc"), "56789abc");
        assert_eq!(short_id("abc"), "abc");
    }
}
