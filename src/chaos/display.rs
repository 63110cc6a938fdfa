//! The text form of a [`ChaosReport`]: one line of what was sent, then a table of what chaos
//! saw beside what the target counted, then notes on what the figures can and cannot say.

use std::fmt::{self, Display, Formatter};

use super::{ChaosKind, ChaosReport};

/// Rows of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Sent,
    Delivered,
    RateLimited,
    TooLarge,
    StoppedOther,
    Failed,
    Decode,
    Duplicates,
    Handled,
    Applied,
    AlreadyApplied,
    Rejected,
    Bytes,
}

/// The rows where a kind's messages are expected to end up, and the rejection reason it aims
/// at, if any.
fn expected(kind: &str) -> (&'static [Row], Option<&'static str>) {
    let Ok(kind) = <ChaosKind as clap::ValueEnum>::from_str(kind, false) else {
        return (&[], None);
    };
    match kind {
        ChaosKind::Junk | ChaosKind::Truncated => (&[Row::Decode], None),
        ChaosKind::Oversized => (&[Row::TooLarge], None),
        ChaosKind::Duplicate => (&[Row::Duplicates], None),
        ChaosKind::Replay => (&[Row::AlreadyApplied], None),
        ChaosKind::Nan => (&[Row::Rejected], Some("non_finite")),
        ChaosKind::Shape => (&[Row::Rejected], Some("shape")),
        ChaosKind::Norm => (&[Row::Rejected], Some("norm")),
        ChaosKind::Version => (&[Row::Rejected], Some("version_jump")),
        ChaosKind::Flood => (&[Row::Decode, Row::Duplicates, Row::RateLimited], None),
    }
}

/// What "delivered" can and cannot say.
const NOTE: &str = "'delivered' means the target's QUIC acknowledged every byte before any stop; \
    its application may still have dropped the message (rate limit, decode error, duplicate, \
    rejection). A stream stopped after that acknowledgement looks delivered to the sender, as \
    most rate-limited ones do. Oversized frames are held open until refused, so each refusal \
    by size shows.";

/// Text width the notes are wrapped to.
const WIDTH: usize = 100;

/// Writes `text` after "  " and `lead`, wrapped at spaces to [`WIDTH`] columns, the
/// continuation lines indented under the text; ends with a newline.
fn wrap(f: &mut Formatter<'_>, lead: &str, text: &str) -> fmt::Result {
    wrap_items(f, lead, text.split_whitespace().map(str::to_string))
}

/// [`wrap`] of items that are never split (a space between two).
fn wrap_items(
    f: &mut Formatter<'_>,
    lead: &str,
    items: impl Iterator<Item = String>,
) -> fmt::Result {
    let indent = 2 + lead.len();
    let mut line = format!("  {lead}");
    let mut empty = true;
    for item in items {
        if !empty && line.len() + 1 + item.len() > WIDTH {
            writeln!(f, "{line}")?;
            line = " ".repeat(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(&item);
        empty = false;
    }
    writeln!(f, "{line}")
}

/// Width of the label column.
const LABEL: usize = 46;

/// One row of the table.
struct Line {
    row: Row,
    label: String,
    saw: Option<u64>,
    counted: Option<u64>,
    counter: String,
    /// The rejection reason the kind aims at.
    aimed: bool,
}

impl Line {
    fn new(row: Row, label: &str, saw: Option<u64>, counted: Option<u64>, counter: &str) -> Self {
        Self {
            row,
            label: label.to_string(),
            saw,
            counted,
            counter: counter.to_string(),
            aimed: false,
        }
    }
}

impl Display for ChaosReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let seed = match self.rng_seed {
            Some(seed) => format!("rng seed {seed}"),
            None => "fresh ids from the OS RNG".to_string(),
        };
        writeln!(
            f,
            "chaos {} -> {}: {} messages ({} bytes) in {:.2} s ({:.0} msgs/s), {seed}",
            self.kind, self.target, self.sent, self.bytes, self.elapsed_s, self.rate
        )?;
        let t = self.target_counted.as_ref();
        let (expect, expected_reason) = expected(&self.kind);
        writeln!(
            f,
            "  {:<LABEL$} {:>10} {:>15}",
            "", "chaos saw", "target counted"
        )?;
        let mut lines = vec![
            Line::new(Row::Sent, "sent", Some(self.sent), None, ""),
            Line::new(
                Row::Delivered,
                "delivered (acked by its QUIC, not stopped)",
                Some(self.delivered),
                None,
                "",
            ),
            Line::new(
                Row::RateLimited,
                "stopped / dropped: rate limit",
                Some(self.stopped_rate_limited),
                t.map(|t| t.messages_rate_limited),
                "rumor_messages_rate_limited_total",
            ),
            Line::new(
                Row::TooLarge,
                "stopped / dropped: too large",
                Some(self.stopped_too_large),
                t.map(|t| t.oversize_messages),
                "rumor_oversize_messages_total",
            ),
        ];
        if self.stopped_other > 0 {
            lines.push(Line::new(
                Row::StoppedOther,
                "stopped: another code",
                Some(self.stopped_other),
                None,
                "",
            ));
        }
        lines.push(Line::new(
            Row::Failed,
            "failed (no connection, lost, stream error)",
            Some(self.failed),
            None,
            "",
        ));
        if let Some(t) = t {
            let core = [
                (
                    Row::Decode,
                    "decode errors",
                    t.decode_errors,
                    "rumor_decode_errors_total",
                ),
                (
                    Row::Duplicates,
                    "duplicates dropped",
                    t.duplicates_dropped,
                    "rumor_duplicates_dropped_total",
                ),
                (
                    Row::Handled,
                    "handled by its core (all kinds)",
                    t.messages_received.values().sum(),
                    "rumor_messages_received_total",
                ),
                (
                    Row::Applied,
                    "deltas applied",
                    t.deltas_applied,
                    "rumor_deltas_applied_total",
                ),
                (
                    Row::AlreadyApplied,
                    "deltas already applied",
                    t.deltas_already_applied,
                    "rumor_deltas_already_applied_total",
                ),
            ];
            for (row, label, counted, counter) in core {
                lines.push(Line::new(row, label, None, Some(counted), counter));
            }
            // Every reason that moved, and the one this kind aims at.
            let mut reasons: Vec<&str> = t
                .deltas_rejected
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, _)| r.as_str())
                .collect();
            if let Some(reason) = expected_reason {
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
            reasons.sort_unstable();
            for reason in reasons {
                let mut line = Line::new(
                    Row::Rejected,
                    &format!("deltas rejected: {reason}"),
                    None,
                    Some(t.rejected(reason)),
                    &format!("rumor_deltas_rejected_total{{reason=\"{reason}\"}}"),
                );
                line.aimed = expected_reason == Some(reason);
                lines.push(line);
            }
        }
        lines.push(Line::new(
            Row::Bytes,
            "bytes (chaos: frames; target: UDP received)",
            Some(self.bytes),
            t.map(|t| t.bytes_received),
            "rumor_bytes_received_total",
        ));
        for line in lines {
            let cell = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
            let aimed = line.aimed || (line.row != Row::Rejected && expect.contains(&line.row));
            let mark = if aimed { "  <- expected" } else { "" };
            // The counter's name only beside a figure of the target's.
            let counter = if line.counted.is_some() {
                line.counter.as_str()
            } else {
                ""
            };
            let text = format!(
                "  {:<LABEL$} {:>10} {:>15}  {counter}{mark}",
                line.label,
                cell(line.saw),
                cell(line.counted),
            );
            writeln!(f, "{}", text.trim_end())?;
        }
        if let Some(t) = t {
            if !t.other.is_empty() {
                let moved: Vec<String> = t.other.iter().map(|(k, v)| format!("{k} +{v}")).collect();
                let last = moved.len() - 1;
                let items = moved.iter().enumerate().map(|(i, m)| {
                    if i < last {
                        format!("{m},")
                    } else {
                        m.clone()
                    }
                });
                wrap_items(f, "other target counters that moved: ", items)?;
            }
            let repeats_on_purpose = matches!(self.kind.as_str(), "duplicate" | "flood");
            if self.rng_seed.is_some() && t.duplicates_dropped > 0 && !repeats_on_purpose {
                wrap(
                    f,
                    "hint: ",
                    "the target dropped duplicates: a run with the same --rng-seed and kind as \
                     an earlier one repeats its envelope ids; leave --rng-seed out for fresh ones.",
                )?;
            }
            let reached = self.sent - self.failed;
            let settled = if t.settled {
                format!("counters settled {:.1} s after the last send", t.waited_s)
            } else {
                format!(
                    "counters still moving {:.1} s after the last send (settle timeout): what \
                     it counted later is missing",
                    t.waited_s
                )
            };
            wrap(
                f,
                "target: ",
                &format!(
                    "{} messages accounted for (rate limit, size, decode, duplicate, handled), \
                     {reached} of chaos's reached it; {settled}. The counters include all its \
                     traffic during the run.",
                    t.accounted()
                ),
            )?;
        } else if let Some(e) = &self.target_error {
            wrap(
                f,
                "target counted: ",
                &format!("unknown, the scrape after the run failed: {e}"),
            )?;
        } else {
            wrap(
                f,
                "target counted: ",
                "not scraped; pass --metrics ADDR (the target's --metrics-addr) to see what it \
                 did with each message.",
            )?;
        }
        wrap(f, "note: ", NOTE)?;
        Ok(())
    }
}
