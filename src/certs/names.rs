//! Many peer names at once, for `rumor certs issue --names` and `--count`: a cluster engine
//! (Slurm, a StatefulSet, compose) runs peers named by rank, and their certificates are issued
//! together before the job starts.

use super::{validate_name, CertError};

/// The most names one `--names` or `--count` may give: far above any cluster rumor runs, low
/// enough that a typo (`peer-0..peer-1000000`) fails at once instead of writing a million keys.
pub const MAX_NAMES: usize = 4096;

/// The names a `--names` list stands for, in order, each checked with [`validate_name`].
///
/// `spec` is a comma-separated list whose items are either one name (`alice`) or a range of
/// names with one prefix and numeric suffixes, both ends included: `peer-0..peer-7` is `peer-0`
/// to `peer-7`, `n08..n11` is `n08` to `n11` (a suffix written with leading zeros keeps its
/// width).
///
/// # Errors
/// [`CertError::BadNames`] for an empty item, a range whose ends differ in prefix, lack a
/// numeric suffix or run backwards, a name given twice, or more than [`MAX_NAMES`] names; the
/// errors of [`validate_name`] for a name that is not a peer name.
pub fn expand_names(spec: &str) -> Result<Vec<String>, CertError> {
    let bad = |reason: String| CertError::BadNames {
        spec: spec.to_string(),
        reason,
    };
    let mut names: Vec<String> = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad("an empty name in the list".into()));
        }
        match item.split_once("..") {
            None => names.push(item.to_string()),
            Some((first, last)) => {
                let (prefix, from, width) = split_number(first)
                    .ok_or_else(|| bad(format!("{first:?} does not end in a number")))?;
                let (last_prefix, to, _) = split_number(last)
                    .ok_or_else(|| bad(format!("{last:?} does not end in a number")))?;
                if prefix != last_prefix {
                    return Err(bad(format!(
                        "the ends of {item:?} have different prefixes ({prefix:?}, \
                         {last_prefix:?})"
                    )));
                }
                if to < from {
                    return Err(bad(format!("{item:?} runs backwards")));
                }
                if to - from >= MAX_NAMES as u64 {
                    return Err(bad(format!("{item:?} is more than {MAX_NAMES} names")));
                }
                names.extend((from..=to).map(|n| format!("{prefix}{n:0width$}")));
            }
        }
        if names.len() > MAX_NAMES {
            return Err(bad(format!("more than {MAX_NAMES} names")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for name in &names {
        validate_name(name)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(bad(format!(
                "{name:?} is given twice (names are compared without case)"
            )));
        }
    }
    Ok(names)
}

/// `count` names `{prefix}-0` to `{prefix}-{count-1}`: the names `--name auto` gives the peers
/// of a Slurm job under the default prefix `peer`.
///
/// # Errors
/// [`CertError::BadNames`] for a count of 0 or above [`MAX_NAMES`]; the errors of
/// [`validate_name`] for a prefix that makes bad names.
pub fn counted_names(prefix: &str, count: usize) -> Result<Vec<String>, CertError> {
    if count == 0 || count > MAX_NAMES {
        return Err(CertError::BadNames {
            spec: format!("--count {count}"),
            reason: format!("the count must be 1 to {MAX_NAMES}"),
        });
    }
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        validate_name(name)?;
    }
    Ok(names)
}

/// `peer-07` → (`peer-`, 7, 2): the prefix, the number its trailing digits give, and how many
/// digits they are. None without trailing digits or when they overflow.
fn split_number(name: &str) -> Option<(&str, u64, usize)> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (prefix, number) = name.split_at(name.len() - digits);
    let width = if number.starts_with('0') && digits > 1 {
        digits
    } else {
        0
    };
    Some((prefix, number.parse().ok()?, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_widths_expand_in_order() {
        assert_eq!(
            expand_names("peer-0..peer-3").unwrap(),
            ["peer-0", "peer-1", "peer-2", "peer-3"]
        );
        assert_eq!(
            expand_names("a, n08..n11 ,b").unwrap(),
            ["a", "n08", "n09", "n10", "n11", "b"]
        );
        assert_eq!(expand_names("x9..x10").unwrap(), ["x9", "x10"]);
        assert_eq!(counted_names("rumor", 2).unwrap(), ["rumor-0", "rumor-1"]);
    }

    #[test]
    fn bad_lists_name_what_is_wrong() {
        for (spec, says) in [
            ("a,,b", "empty name"),
            ("peer-3..peer-1", "backwards"),
            ("peer-0..node-3", "different prefixes"),
            ("peer..peer-3", "does not end in a number"),
            ("a,b,A", "given twice"),
            ("p0..p100000", "more than 4096"),
        ] {
            let e = expand_names(spec).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(spec), "{spec}: {e}");
        }
        assert!(matches!(
            expand_names("ok,ca"),
            Err(CertError::ReservedName { .. })
        ));
        assert!(matches!(
            expand_names("bad/name"),
            Err(CertError::BadName { .. })
        ));
        assert!(counted_names("peer", 0).is_err());
    }
}
