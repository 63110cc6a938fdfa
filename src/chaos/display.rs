//! The text form of a [`ChaosReport`]: one line of what was sent, then a table of what chaos
//! saw beside what the target counted, then notes on what the figures can and cannot say.

use std::fmt::{self, Display, Formatter};

use super::{ChaosKind, ChaosReport, VictimSource};

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
    Mismatched,
    FromRevoked,
    Equivocations,
    Duplicates,
    Handled,
    Applied,
    AlreadyApplied,
    Rejected,
    Refused,
    WelcomesSent,
    SnapshotsSent,
    Bytes,
}

/// Where a kind's messages are expected to end up in the target's counters.
#[derive(Default)]
struct Expectation {
    /// The rows its messages are counted in.
    rows: &'static [Row],
    /// The delta rejection reason it aims at, if any.
    rejected: Option<&'static str>,
    /// The record refusal reasons it aims at.
    refused: &'static [&'static str],
    /// Rows chaos's messages must not move (other traffic may).
    none_from_chaos: &'static [Row],
}

/// Where the messages of `report`'s kind are expected to end up.
fn expected(report: &ChaosReport) -> Expectation {
    let Ok(kind) = <ChaosKind as clap::ValueEnum>::from_str(&report.kind, false) else {
        return Expectation::default();
    };
    let rejected = |rows, reason| Expectation {
        rows,
        rejected: Some(reason),
        ..Expectation::default()
    };
    let rows = |rows| Expectation {
        rows,
        ..Expectation::default()
    };
    let nothing_applied = |reason| Expectation {
        none_from_chaos: &[Row::Applied],
        ..rejected(&[Row::Rejected], reason)
    };
    match kind {
        ChaosKind::Junk | ChaosKind::Truncated => rows(&[Row::Decode]),
        ChaosKind::Oversized => rows(&[Row::TooLarge]),
        ChaosKind::Duplicate => rows(&[Row::Duplicates]),
        ChaosKind::Replay => rows(&[Row::AlreadyApplied]),
        ChaosKind::Nan => rejected(&[Row::Rejected], "non_finite"),
        ChaosKind::Shape => rejected(&[Row::Rejected], "shape"),
        ChaosKind::Norm => rejected(&[Row::Rejected], "norm"),
        ChaosKind::Version => rejected(&[Row::Rejected], "version_jump"),
        ChaosKind::Flood => rows(&[Row::Decode, Row::Duplicates, Row::RateLimited]),
        ChaosKind::Forge => match report.victim.as_ref().map(|v| v.source) {
            Some(VictimSource::MadeUp) => nothing_applied("unknown_origin"),
            _ => nothing_applied("signature"),
        },
        ChaosKind::Alter => nothing_applied("signature"),
        ChaosKind::Origins => nothing_applied("unknown_origin"),
        ChaosKind::Impersonate => rows(&[Row::Mismatched]),
        ChaosKind::Reflect => Expectation {
            rows: &[Row::Mismatched],
            none_from_chaos: &[Row::WelcomesSent, Row::SnapshotsSent],
            ..Expectation::default()
        },
        ChaosKind::Invent => Expectation {
            rows: &[Row::Refused],
            refused: &["too_many_identities", "unbound"],
            none_from_chaos: &[Row::Applied],
            ..Expectation::default()
        },
        ChaosKind::Tamper => Expectation {
            rows: &[Row::Refused],
            refused: &["signature"],
            ..Expectation::default()
        },
        // The first copy is applied, or detected where the other delta is applied already; the
        // next copies are already applied.
        ChaosKind::Equivocate => rows(&[Row::Applied, Row::AlreadyApplied, Row::Equivocations]),
    }
}

/// What "delivered" can and cannot say.
const NOTE: &str = "'delivered' means the target's QUIC acknowledged every byte before any stop; \
    its application may still have dropped the message (rate limit, decode error, sender \
    mismatch, duplicate, rejection). A stream stopped after that acknowledgement looks \
    delivered to the sender, as most rate-limited ones do. Oversized frames are held open \
    until refused, so each refusal by size shows.";

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
    /// The reason (of a rejection or refusal) the kind aims at.
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

/// Rows for each reason of a reason-labelled counter that moved, and for those the kind aims at;
/// `label` and `counter` name the counter.
fn reason_lines(
    row: Row,
    moved: &std::collections::BTreeMap<String, u64>,
    aimed: &[&str],
    label: &str,
    counter: &str,
) -> Vec<Line> {
    let mut reasons: Vec<&str> = moved
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, _)| r.as_str())
        .collect();
    for reason in aimed {
        if !reasons.contains(reason) {
            reasons.push(reason);
        }
    }
    reasons.sort_unstable();
    reasons
        .into_iter()
        .map(|reason| {
            let mut line = Line::new(
                row,
                &format!("{label}: {reason}"),
                None,
                Some(moved.get(reason).copied().unwrap_or(0)),
                &format!("{counter}{{reason=\"{reason}\"}}"),
            );
            line.aimed = aimed.contains(&reason);
            line
        })
        .collect()
}

impl ChaosReport {
    /// The lines about who chaos spoke as: its id and introduction, and the victim's id.
    fn write_identity(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(i) = &self.introduction {
            let taken = if i.seen_by_target {
                format!(
                    "seen in the target's /status {:.2} s after it was sent",
                    i.waited_s
                )
            } else {
                format!(
                    "not confirmed (no --metrics): waited {:.2} s after the target's QUIC \
                     acknowledged it",
                    i.waited_s
                )
            };
            wrap(
                f,
                "as: ",
                &format!(
                    "{}, introduced first (its own signed record, left and stopped, heartbeat {}, \
                     published {}, base version {}; {} bytes, not counted as sent); {taken}.",
                    self.origin, i.heartbeat, i.published, i.base_version, i.bytes
                ),
            )?;
        }
        if let Some(v) = &self.victim {
            let source = match v.source {
                VictimSource::TargetStatus => {
                    "the target's own id, from its /status: a known origin".to_string()
                }
                VictimSource::MadeUp => "a made-up id bound to no member's certificate (no \
                    --metrics to read the target's own): an unknown origin"
                    .to_string(),
            };
            wrap(f, "in the name of: ", &format!("{}, {source}.", v.peer_id))?;
        }
        if let Some(e) = &self.equivocation {
            wrap(
                f,
                "equivocation: ",
                &format!(
                    "one delta under version {}, content hash {} ({} values +{}, {} values -{}, \
                     signs drawn from the target's address); a run with the same --rng-seed \
                     against another peer signs different content under the same version.",
                    e.version, e.content_hash, e.positive, e.epsilon, e.negative, e.epsilon
                ),
            )?;
        }
        Ok(())
    }

    /// The line comparing the target's view before and after the run.
    fn write_view(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (Some(a), Some(b)) = (&self.target_before, &self.target_after) else {
            return Ok(());
        };
        wrap(
            f,
            "target view (/status): ",
            &format!(
                "members {} -> {} (live {} -> {}; ids of chaos's certificate {} -> {}), origins \
                 in its version vector {} -> {}, versions applied (its own included) {} -> {}.",
                a.members,
                b.members,
                a.live,
                b.live,
                a.chaos_identities,
                b.chaos_identities,
                a.origins,
                b.origins,
                a.applied,
                b.applied
            ),
        )
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
        self.write_identity(f)?;
        let t = self.target_counted.as_ref();
        let expect = expected(self);
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
                    Row::Mismatched,
                    "dropped: sender not its origin's certificate",
                    t.senders_mismatched,
                    "rumor_senders_mismatched_total",
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
            // Shown when they moved, or when the kind aims at them.
            let rare = [
                (
                    Row::FromRevoked,
                    "dropped: certificate revoked or quarantined",
                    t.messages_from_revoked,
                    "rumor_messages_from_revoked_total",
                ),
                (
                    Row::Equivocations,
                    "deltas detected as equivocations",
                    t.equivocations_detected,
                    "rumor_equivocations_detected_total",
                ),
            ];
            for (row, label, counted, counter) in rare {
                if counted > 0 || expect.rows.contains(&row) {
                    lines.push(Line::new(row, label, None, Some(counted), counter));
                }
            }
            // Every reason that moved, and those this kind aims at.
            let aimed: Vec<&str> = expect.rejected.into_iter().collect();
            lines.extend(reason_lines(
                Row::Rejected,
                &t.deltas_rejected,
                &aimed,
                "deltas rejected",
                "rumor_deltas_rejected_total",
            ));
            lines.extend(reason_lines(
                Row::Refused,
                &t.records_refused,
                expect.refused,
                "records refused",
                "rumor_records_refused_total",
            ));
            if expect.none_from_chaos.contains(&Row::WelcomesSent) {
                lines.push(Line::new(
                    Row::WelcomesSent,
                    "welcomes sent",
                    None,
                    Some(t.sent("welcome")),
                    "rumor_messages_sent_total{kind=\"welcome\"}",
                ));
                lines.push(Line::new(
                    Row::SnapshotsSent,
                    "snapshots sent",
                    None,
                    Some(t.snapshots_sent),
                    "rumor_snapshots_sent_total",
                ));
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
            let by_reason = matches!(line.row, Row::Rejected | Row::Refused);
            let aimed = line.aimed || (!by_reason && expect.rows.contains(&line.row));
            let mark = if aimed {
                "  <- expected"
            } else if expect.none_from_chaos.contains(&line.row) {
                "  <- none from chaos"
            } else {
                ""
            };
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
        self.write_view(f)?;
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
            let introduced = u64::from(self.introduction.is_some());
            let reached = self.sent - self.failed + introduced;
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
                    "{} messages accounted for (rate limit, size, decode, sender revoked or \
                     mismatched, unknown origin or bad signature, equivocation, duplicate, \
                     handled), {reached} of chaos's \
                     reached it (the introduction included); {settled}. The counters include \
                     all its traffic during the run.",
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

#[cfg(test)]
mod tests {
    use super::super::target::TargetCounts;
    use super::super::{Introduction, Victim};
    use super::*;
    use rumor_proto::PeerId;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The report of `kind` with the target's counts `counts`, as text.
    fn text_of(kind: ChaosKind, victim: Option<VictimSource>, counts: TargetCounts) -> String {
        ChaosReport {
            kind: kind.as_str().into(),
            target: "127.0.0.1:7000".into(),
            origin: "00000000-0000-0000-726d-726368616f73".into(),
            introduction: Some(Introduction {
                heartbeat: 1_700_000_000_000,
                published: 12,
                base_version: 9,
                bytes: 700,
                seen_by_target: true,
                waited_s: 0.1,
            }),
            victim: victim.map(|source| Victim {
                peer_id: PeerId::from_u128(7),
                addr: None,
                source,
            }),
            sent: 3,
            delivered: 3,
            target_counted: Some(counts),
            ..ChaosReport::default()
        }
        .to_string()
    }

    /// The line of `text` that starts with `start`, trimmed at the start.
    fn line_of<'a>(text: &'a str, start: &str) -> Result<&'a str, String> {
        text.lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(start))
            .ok_or_else(|| format!("no line {start:?} in\n{text}"))
    }

    #[test]
    fn the_text_report_marks_what_each_attack_aims_at() -> TestResult {
        let mut counts = TargetCounts {
            metrics: "127.0.0.1:9100".into(),
            settled: true,
            ..TargetCounts::default()
        };
        counts.deltas_rejected.insert("unknown_origin".into(), 3);
        counts.messages_received.insert("membership".into(), 1);
        // A forgery in a made-up name aims at unknown_origin, and applies nothing.
        let text = text_of(ChaosKind::Forge, Some(VictimSource::MadeUp), counts.clone());
        assert!(line_of(&text, "deltas rejected: unknown_origin")?.ends_with("<- expected"));
        assert!(line_of(&text, "deltas applied")?.ends_with("<- none from chaos"));
        assert!(line_of(
            &text,
            "in the name of: 00000000-0000-0000-0000-000000000007"
        )?
        .contains("made-up"));
        assert!(line_of(&text, "as: 00000000-0000-0000-726d-726368616f73")?.contains("introduced"));
        assert!(
            line_of(&text, "target:")?.contains("4 messages accounted for"),
            "{text}"
        );
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("4 of chaos's reached it (the introduction included)"),
            "{text}"
        );
        // In the target's own name, signature is the aim: shown although it did not move.
        let text = text_of(ChaosKind::Forge, Some(VictimSource::TargetStatus), counts);
        assert!(line_of(&text, "deltas rejected: signature")?.contains(" 0  rumor_deltas"));
        assert!(line_of(&text, "deltas rejected: signature")?.ends_with("<- expected"));
        assert!(!line_of(&text, "deltas rejected: unknown_origin")?.ends_with("<- expected"));

        let mut counts = TargetCounts::default();
        counts.records_refused.insert("unbound".into(), 3);
        let text = text_of(ChaosKind::Invent, None, counts);
        assert!(line_of(&text, "records refused: unbound")?.ends_with("<- expected"));
        let capped = line_of(&text, "records refused: too_many_identities")?;
        assert!(capped.contains("rumor_records_refused_total{reason=\"too_many_identities\"}"));
        assert!(!text.contains("in the name of"), "{text}");

        let counts = TargetCounts {
            senders_mismatched: 3,
            ..TargetCounts::default()
        };
        let text = text_of(ChaosKind::Reflect, Some(VictimSource::TargetStatus), counts);
        assert!(line_of(&text, "dropped: sender not")?.ends_with("<- expected"));
        assert!(line_of(&text, "welcomes sent")?.ends_with("<- none from chaos"));
        assert!(line_of(&text, "snapshots sent")?.ends_with("<- none from chaos"));
        // The wrapped lines fit (the first, one line of figures, is not wrapped).
        assert!(
            text.lines()
                .skip(1)
                .all(|l| l.len() <= 100 || l.contains("_total")),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn the_text_report_of_equivocate_names_its_version_and_content() -> TestResult {
        let counts = TargetCounts {
            equivocations_detected: 1,
            ..TargetCounts::default()
        };
        assert_eq!(counts.accounted(), 1, "a detected equivocation is a fate");
        let mut report: ChaosReport = ChaosReport {
            kind: "equivocate".into(),
            target: "127.0.0.1:7001".into(),
            rng_seed: Some(7),
            sent: 1,
            delivered: 1,
            target_counted: Some(counts),
            ..ChaosReport::default()
        };
        report.equivocation = Some(super::super::EquivocationSent {
            version: 9,
            content_hash: "ab".repeat(32),
            epsilon: 1e-3,
            positive: 6,
            negative: 4,
        });
        let text = report.to_string();
        let line = line_of(&text, "equivocation: one delta under version 9")?;
        assert!(line.contains("content hash"), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert!(
            line_of(&text, "deltas detected as equivocations")?.ends_with("<- expected"),
            "{text}"
        );
        assert!(line_of(&text, "deltas applied")?.ends_with("<- expected"));
        // Not a row of other kinds' reports unless it moved.
        let text = text_of(ChaosKind::Nan, None, TargetCounts::default());
        assert!(!text.contains("deltas detected as equivocations"), "{text}");
        assert!(!text.contains("dropped: certificate revoked"), "{text}");
        assert!(
            text.lines()
                .skip(1)
                .all(|l| l.len() <= 100 || l.contains("_total")),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn the_text_report_puts_the_targets_counts_beside_the_senders() {
        let mut report = ChaosReport {
            kind: "nan".into(),
            target: "127.0.0.1:7000".into(),
            sent: 3,
            delivered: 3,
            bytes: 1200,
            ..ChaosReport::default()
        };
        let text = report.to_string();
        assert!(text.contains("pass --metrics ADDR"), "{text}");
        let mut counts = TargetCounts {
            metrics: "127.0.0.1:9100".into(),
            settled: true,
            bytes_received: 2000,
            ..TargetCounts::default()
        };
        counts.deltas_rejected.insert("non_finite".into(), 3);
        counts.messages_received.insert("delta".into(), 3);
        report.target_counted = Some(counts);
        let text = report.to_string();
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .to_string()
        };
        assert!(line("deltas rejected: non_finite")
            .ends_with("3  rumor_deltas_rejected_total{reason=\"non_finite\"}  <- expected"));
        assert!(line("handled by its core").contains(" 3  rumor_messages_received_total"));
        assert!(line("bytes").contains("1200            2000"), "{text}");
        assert!(
            line("target:").contains("3 messages accounted for"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() <= 100 || l.contains("_total")),
            "{text}"
        );
    }
}
