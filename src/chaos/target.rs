//! What the target counted: its `/metrics` scraped before and after a run (with the client
//! `rumor status` and `rumor top` use), and the deltas of its counters; and what its `/status`
//! shows of its view ([`TargetView`]): its own id, its members, the origins it applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use rumor_proto::auth::KeyId;
use rumor_proto::wire::MemberRecord;
use rumor_proto::PeerId;

use crate::metrics::http::{fetch_status, get, HttpError};
use crate::metrics::StatusSnapshot;

/// Longest wait for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time between scrapes while waiting for the target's counters to settle.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Counters unchanged for this long settle a run even when they do not account for every
/// message (some were lost without being counted, or other traffic moved the totals).
const SETTLE_QUIET: Duration = Duration::from_secs(2);

/// The counters of one scrape: `name` or `name{label="value",...}` (labels sorted, the
/// `peer` label left out) → value. Only samples of metrics declared `counter` are kept.
pub type Counters = BTreeMap<String, f64>;

/// Parses Prometheus text (version 0.0.4) into its counter samples. Lines that do not parse
/// are skipped.
pub fn parse_counters(text: &str) -> Counters {
    let mut counter_names = std::collections::HashSet::new();
    let mut out = Counters::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some("counter")) = (words.next(), words.next()) {
                counter_names.insert(name.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        if !counter_names.contains(name) {
            continue;
        }
        out.insert(sample_key(name, &labels), value);
    }
    out
}

/// `name{label="value",...}` with the labels sorted and `peer` left out; `name` alone without
/// labels.
fn sample_key(name: &str, labels: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = labels.iter().filter(|(k, _)| k != "peer").collect();
    if kept.is_empty() {
        return name.to_string();
    }
    kept.sort();
    let inner: Vec<String> = kept
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Label names and values of one sample, in their order.
type Labels = Vec<(String, String)>;

/// Splits `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then_some((name, labels, value))
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and what follows the
/// closing brace.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// Scrapes the counters at `addr` (`host:port` or `http://host:port`).
///
/// # Errors
/// [`HttpError`] when the target's metrics address cannot be reached or answers an error.
pub async fn scrape(addr: &str) -> Result<Counters, HttpError> {
    Ok(parse_counters(
        &get(addr, "/metrics", SCRAPE_TIMEOUT).await?,
    ))
}

/// What the target counted during a chaos run: the increase of its counters between the
/// scrape before the first message and the one after the last. They include all the target's
/// traffic in that time, not only chaos's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TargetCounts {
    /// The metrics address scraped.
    pub metrics: String,
    /// True when the counters accounted for every message the target acknowledged or stopped
    /// and stopped moving, or stood still for two seconds; false when the settle timeout ended
    /// the wait first.
    pub settled: bool,
    /// Seconds spent after the last send waiting for the counters to settle.
    pub waited_s: f64,
    /// Messages dropped by the target's per-connection rate limits
    /// (`rumor_messages_rate_limited_total`).
    pub messages_rate_limited: u64,
    /// Streams dropped for exceeding the target's size limit (`rumor_oversize_messages_total`).
    pub oversize_messages: u64,
    /// Frames that failed to decode (`rumor_decode_errors_total`).
    pub decode_errors: u64,
    /// Envelopes dropped as already seen (`rumor_duplicates_dropped_total`).
    pub duplicates_dropped: u64,
    /// Messages its core handled, by kind (`rumor_messages_received_total`).
    pub messages_received: BTreeMap<String, u64>,
    /// Deltas added to its base from other peers (`rumor_deltas_applied_total`).
    pub deltas_applied: u64,
    /// Deltas whose origin and version were already applied
    /// (`rumor_deltas_already_applied_total`).
    pub deltas_already_applied: u64,
    /// Deltas refused, by reason (`rumor_deltas_rejected_total`).
    pub deltas_rejected: BTreeMap<String, u64>,
    /// Member records refused, by reason (`rumor_records_refused_total`): `unbound`,
    /// `credential`, `signature`, `too_many_identities`.
    pub records_refused: BTreeMap<String, u64>,
    /// Messages dropped because their origin is not bound to the certificate of the connection
    /// they came on (`rumor_senders_mismatched_total`).
    pub senders_mismatched: u64,
    /// Deltas found to be a second, different, validly signed delta under a version it had
    /// applied: equivocations, each answered with a proof and a quarantine
    /// (`rumor_equivocations_detected_total`).
    pub equivocations_detected: u64,
    /// Messages dropped because the certificate of the connection they came on is revoked or
    /// quarantined (`rumor_messages_from_revoked_total`).
    pub messages_from_revoked: u64,
    /// Messages it queued for sending, by kind, once per destination
    /// (`rumor_messages_sent_total`).
    pub messages_sent: BTreeMap<String, u64>,
    /// Snapshots it sent because a peer lacked deltas no longer in its log
    /// (`rumor_snapshots_sent_total`; a welcome's snapshot is counted as a `welcome` sent).
    pub snapshots_sent: u64,
    /// UDP payload bytes it received over all its connections (`rumor_bytes_received_total`).
    pub bytes_received: u64,
    /// Every other counter that moved, by its key (`name` or `name{label="value"}`).
    pub other: BTreeMap<String, u64>,
}

/// Counter names read into the named fields of [`TargetCounts`].
const RATE_LIMITED: &str = "rumor_messages_rate_limited_total";
const OVERSIZE: &str = "rumor_oversize_messages_total";
const DECODE_ERRORS: &str = "rumor_decode_errors_total";
const DUPLICATES: &str = "rumor_duplicates_dropped_total";
const RECEIVED: &str = "rumor_messages_received_total";
const APPLIED: &str = "rumor_deltas_applied_total";
const ALREADY_APPLIED: &str = "rumor_deltas_already_applied_total";
const REJECTED: &str = "rumor_deltas_rejected_total";
const REFUSED: &str = "rumor_records_refused_total";
const MISMATCHED: &str = "rumor_senders_mismatched_total";
const EQUIVOCATIONS: &str = "rumor_equivocations_detected_total";
const FROM_REVOKED: &str = "rumor_messages_from_revoked_total";
const SENT: &str = "rumor_messages_sent_total";
const SNAPSHOTS_SENT: &str = "rumor_snapshots_sent_total";
const BYTES_RECEIVED: &str = "rumor_bytes_received_total";

/// `name{label="value"}` → (`name`, `value`) for a sample with exactly one label.
fn split_one_label(key: &str) -> Option<(&str, &str)> {
    let (name, rest) = key.split_once('{')?;
    let inner = rest.strip_suffix('}')?;
    let (_, value) = inner.split_once('=')?;
    let value = value.strip_prefix('"')?.strip_suffix('"')?;
    (!value.contains("\",")).then_some((name, value))
}

impl TargetCounts {
    /// The increase of each counter from `before` to `after` (a counter that went down, e.g.
    /// after a restart, counts its value in `after`).
    pub fn between(metrics: &str, before: &Counters, after: &Counters) -> Self {
        let mut out = Self {
            metrics: metrics.to_string(),
            ..Self::default()
        };
        for (key, now) in after {
            let then = before.get(key).copied().unwrap_or(0.0);
            let delta = if *now >= then { now - then } else { *now };
            // Counters are integers; the rounding only guards against float text.
            let delta = if delta.is_finite() && delta > 0.0 {
                delta.round() as u64
            } else {
                0
            };
            match key.as_str() {
                RATE_LIMITED => out.messages_rate_limited = delta,
                OVERSIZE => out.oversize_messages = delta,
                DECODE_ERRORS => out.decode_errors = delta,
                DUPLICATES => out.duplicates_dropped = delta,
                APPLIED => out.deltas_applied = delta,
                ALREADY_APPLIED => out.deltas_already_applied = delta,
                BYTES_RECEIVED => out.bytes_received = delta,
                MISMATCHED => out.senders_mismatched = delta,
                EQUIVOCATIONS => out.equivocations_detected = delta,
                FROM_REVOKED => out.messages_from_revoked = delta,
                SNAPSHOTS_SENT => out.snapshots_sent = delta,
                _ => match split_one_label(key) {
                    Some((RECEIVED, kind)) => {
                        out.messages_received.insert(kind.to_string(), delta);
                    }
                    Some((REJECTED, reason)) => {
                        out.deltas_rejected.insert(reason.to_string(), delta);
                    }
                    Some((REFUSED, reason)) => {
                        out.records_refused.insert(reason.to_string(), delta);
                    }
                    Some((SENT, kind)) => {
                        out.messages_sent.insert(kind.to_string(), delta);
                    }
                    _ if delta > 0 => {
                        out.other.insert(key.clone(), delta);
                    }
                    _ => {}
                },
            }
        }
        out
    }

    /// Messages the target accounted for, each in exactly one counter: dropped by its transport
    /// (rate limit, size), failed to decode, dropped for a sender whose certificate is revoked
    /// or quarantined or not bound to its origin, refused as a delta of an unknown origin or
    /// with a bad signature, found to be an equivocation (all three before the duplicate
    /// check), dropped as a duplicate, or handled by its core.
    pub fn accounted(&self) -> u64 {
        self.messages_rate_limited
            + self.oversize_messages
            + self.decode_errors
            + self.messages_from_revoked
            + self.senders_mismatched
            + self.equivocations_detected
            + self.rejected("unknown_origin")
            + self.rejected("signature")
            + self.duplicates_dropped
            + self.messages_received.values().sum::<u64>()
    }

    /// Deltas rejected for `reason` (0 when the target never counted one).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.deltas_rejected.get(reason).copied().unwrap_or(0)
    }

    /// Member records refused for `reason` (0 when the target never counted one).
    pub fn refused(&self, reason: &str) -> u64 {
        self.records_refused.get(reason).copied().unwrap_or(0)
    }

    /// Messages of `kind` (`welcome`, `ack`, ...) it queued for sending (0 when none).
    pub fn sent(&self, kind: &str) -> u64 {
        self.messages_sent.get(kind).copied().unwrap_or(0)
    }

    /// The counters compared to decide that they stopped moving (bytes left out: keep-alives
    /// move them; and what it sent: its own gossip and probes do).
    fn settle_view(&self) -> Self {
        Self {
            bytes_received: 0,
            messages_sent: BTreeMap::new(),
            other: BTreeMap::new(),
            settled: false,
            waited_s: 0.0,
            ..self.clone()
        }
    }
}

/// Scrapes `metrics` until the target's counters since `before` account for `expected`
/// messages and stop moving, or stand still for 2 s (`SETTLE_QUIET`), or `timeout` passes.
///
/// # Errors
/// The last scrape's [`HttpError`] when no scrape succeeded before the timeout.
pub async fn settle(
    metrics: &str,
    before: &Counters,
    expected: u64,
    timeout: Duration,
) -> Result<TargetCounts, HttpError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last: Option<(TargetCounts, Instant)> = None;
    loop {
        match scrape(metrics).await {
            Ok(after) => {
                let now = Instant::now();
                let mut counts = TargetCounts::between(metrics, before, &after);
                // Settled: unchanged since the previous scrape, and every message accounted
                // for or nothing moved for a while.
                let (settled, since) = match &last {
                    Some((prev, since)) if prev.settle_view() == counts.settle_view() => {
                        let quiet = now.duration_since(*since) >= SETTLE_QUIET;
                        (counts.accounted() >= expected || quiet, *since)
                    }
                    _ => (false, now),
                };
                counts.waited_s = started.elapsed().as_secs_f64();
                if settled || now >= deadline {
                    counts.settled = settled;
                    return Ok(counts);
                }
                last = Some((counts, since));
            }
            Err(e) if Instant::now() >= deadline => {
                return last.map(|(counts, _)| counts).ok_or(e);
            }
            Err(e) => tracing::debug!(
                "chaos: scrape failed, trying again: {}",
                crate::report::Chain(&e)
            ),
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// What the target's `/status` shows of its view, read before and after a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetView {
    /// The target's own peer id.
    pub peer_id: PeerId,
    /// The target's advertised address, once bound.
    pub addr: Option<SocketAddr>,
    /// Member records it holds, of any status, itself included.
    pub members: usize,
    /// Live members (alive or suspect), itself included.
    pub live: usize,
    /// Records whose id is bound to chaos's certificate (chaos's own id included).
    pub chaos_identities: usize,
    /// Origins in its version vector.
    pub origins: usize,
    /// Versions in its applied set, all origins, its own published ones included
    /// (`peer.applied`).
    pub applied: u64,
}

impl TargetView {
    /// The view in `status`, counting the ids bound to `chaos_key`.
    pub fn from_status(status: &StatusSnapshot, chaos_key: &KeyId) -> Self {
        let members = &status.members;
        Self {
            peer_id: status.peer.peer_id,
            addr: status.peer.addr,
            members: members.len(),
            live: members
                .iter()
                .filter(|m| m.status == "alive" || m.status == "suspect")
                .count(),
            chaos_identities: members
                .iter()
                .filter(|m| chaos_key.binds(&m.peer_id))
                .count(),
            origins: status.version_vector.len(),
            applied: status.peer.applied,
        }
    }
}

/// Reads the target's `/status` at `addr` (`host:port` or `http://host:port`).
///
/// # Errors
/// [`HttpError`] when the address cannot be reached, answers an error or no status snapshot.
pub async fn status(addr: &str) -> Result<StatusSnapshot, HttpError> {
    fetch_status(addr, SCRAPE_TIMEOUT).await
}

/// Polls the target's `/status` until it holds `record`'s id with at least its heartbeat (the
/// target's core took the record), for at most `timeout`. Returns how long that took, or
/// `None` when it did not show within the timeout (a scrape that fails is tried again).
pub async fn wait_for_record(
    addr: &str,
    record: &MemberRecord,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        match status(addr).await {
            Ok(s) => {
                let held = s
                    .members
                    .iter()
                    .any(|m| m.peer_id == record.peer_id && m.heartbeat >= record.heartbeat);
                if held {
                    return Some(started.elapsed());
                }
            }
            Err(e) => tracing::debug!(
                "chaos: status read failed, trying again: {}",
                crate::report::Chain(&e)
            ),
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{render_prometheus, PeerStatus, StatusSnapshot};

    fn snapshot(rejected_shape: u64, decode: u64, bytes: u64) -> StatusSnapshot {
        StatusSnapshot {
            peer: PeerStatus {
                name: "pe\"er".into(),
                ..PeerStatus::default()
            },
            core: serde_json::json!({
                "received": {"delta": 5, "membership": 1},
                "decode_errors": decode,
                "deltas_rejected": {"shape": rejected_shape, "norm": 0, "signature": decode},
                "records_refused": {"unbound": rejected_shape * 3},
                "senders_mismatched": decode + 1,
                "sent": {"welcome": decode},
                "snapshots_sent": 0,
                "a_new_counter": decode * 2,
            }),
            transport: serde_json::json!({
                "bytes_received": bytes,
                "oversize_messages": 1,
                "connections_open": 3,
            }),
            ..StatusSnapshot::default()
        }
    }

    #[test]
    fn counters_are_parsed_from_the_peers_own_rendering() {
        let c = parse_counters(&render_prometheus(&snapshot(2, 7, 100)));
        assert_eq!(c.get("rumor_decode_errors_total"), Some(&7.0));
        assert_eq!(
            c.get("rumor_deltas_rejected_total{reason=\"shape\"}"),
            Some(&2.0)
        );
        assert_eq!(
            c.get("rumor_messages_received_total{kind=\"delta\"}"),
            Some(&5.0)
        );
        assert_eq!(c.get("rumor_bytes_received_total"), Some(&100.0));
        // Gauges and histograms are not counters.
        assert!(!c.keys().any(|k| k.starts_with("rumor_connections_open")));
        assert!(!c.keys().any(|k| k.starts_with("rumor_step_duration")));
        assert_eq!(
            parse_sample("x{a=\"q\\\"z\",b=\"c\"} 3 1700000000"),
            Some((
                "x",
                vec![("a".into(), "q\"z".into()), ("b".into(), "c".into())],
                3.0
            ))
        );
        assert_eq!(parse_sample("broken{a=\"1\" 3"), None);
    }

    #[test]
    fn deltas_are_split_into_named_fields_and_the_rest() {
        let before = parse_counters(&render_prometheus(&snapshot(2, 7, 100)));
        let after = parse_counters(&render_prometheus(&snapshot(5, 8, 350)));
        let d = TargetCounts::between("m:1", &before, &after);
        assert_eq!(d.rejected("shape"), 3);
        assert_eq!(d.rejected("norm"), 0);
        assert_eq!(d.decode_errors, 1);
        assert_eq!(d.bytes_received, 250);
        assert_eq!(d.oversize_messages, 0);
        assert_eq!(d.messages_received.get("delta"), Some(&0));
        assert_eq!(d.refused("unbound"), 9);
        assert_eq!(d.refused("signature"), 0);
        assert_eq!(d.senders_mismatched, 1);
        assert_eq!(d.sent("welcome"), 1);
        assert_eq!(d.snapshots_sent, 0);
        assert_eq!(d.other.get("rumor_a_new_counter_total"), Some(&2));
        assert_eq!(d.other.len(), 1, "{:?}", d.other);
        // A decode error, a mismatched sender, a delta refused for its signature.
        assert_eq!(d.accounted(), 3);
    }
}
