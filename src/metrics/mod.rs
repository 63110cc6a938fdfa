//! What a peer publishes about itself for people and machines: a [`StatusSnapshot`] the node
//! refreshes each loop iteration (the core stays owned by the node task; readers only see the
//! snapshot), a bounded [`EventLog`] of recent gossip events for the dashboard, a step-time
//! [`Histogram`], and the Prometheus text rendering of a snapshot ([`render_prometheus`]).
//! [`http`] serves `/metrics` and `/status` and fetches `/status` for `rumor status` and `top`.
//!
//! Counters are rendered from the core's and the transport's stats generically (every numeric
//! field and every map of counters), so a counter added to `CoreStats` appears without edits here.

pub mod health;
pub mod http;
mod peer;

pub use peer::{MemberView, PeerStatus, LIFECYCLES};

/// Re-exported where the dashboards have long found them.
pub use crate::clock::unix_now;
pub use crate::short_id::short_id;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What this peer holds of one origin's deltas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OriginView {
    /// Every version up to this one is applied.
    pub contiguous: u64,
    /// Highest version applied.
    pub max: u64,
    /// Versions below `max` not applied yet.
    pub missing: Vec<u64>,
}

/// Everything `/status` serves and `/metrics` is rendered from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// The peer itself.
    pub peer: PeerStatus,
    /// Its membership view, itself included.
    pub members: Vec<MemberView>,
    /// Its version vector: origin peer id → what it holds.
    pub version_vector: BTreeMap<String, OriginView>,
    /// Protocol counters (`CoreStats` as JSON: numbers and maps of numbers).
    pub core: serde_json::Value,
    /// Transport counters (`TransportStats` as JSON).
    pub transport: serde_json::Value,
    /// Wall time of optimizer steps.
    pub step_seconds: Histogram,
    /// Seconds since the peer started.
    pub uptime_seconds: f64,
}

/// Upper bounds (seconds) of the step-duration histogram's buckets.
pub const STEP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus-style histogram with fixed buckets ([`STEP_BUCKETS`]), in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket upper bounds, seconds.
    pub bounds: Vec<f64>,
    /// Observations at or below each bound (not cumulative); one more slot for +Inf.
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bounds: STEP_BUCKETS.to_vec(),
            counts: vec![0; STEP_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Records `n` observations of `seconds` each (the trainer reports a mean over steps).
    pub fn observe_n(&mut self, seconds: f64, n: u64) {
        if n == 0 || !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let slot = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(slot) {
            *c += n;
        }
        self.sum += seconds * n as f64;
        self.count += n;
    }
}

/// What kind of thing happened, for colouring and filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Joined, member up, lifecycle change.
    Membership,
    /// A member's status worsened (suspect, dead, left).
    Failure,
    /// Deltas applied or published.
    Delta,
    /// Duplicates dropped, TTL expiry, anti-entropy, snapshots.
    Gossip,
    /// Rejected deltas, inexact merges.
    Problem,
    /// An operator action from the dashboard (pause, kill, restart, add).
    Operator,
}

/// One recent event of a peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GossipEvent {
    /// Unix time, seconds.
    pub at: f64,
    /// The peer it happened at.
    pub peer: String,
    /// Its kind.
    pub kind: EventKind,
    /// What happened, one line.
    pub text: String,
}

/// A bounded ring of recent events, shared between a node (writer) and a dashboard (reader).
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<Mutex<VecDeque<GossipEvent>>>,
    capacity: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(256)
    }
}

impl EventLog {
    /// A ring holding at most `capacity` events (the oldest are dropped).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(1024)))),
            capacity: capacity.max(1),
        }
    }

    /// Appends an event stamped now.
    pub fn push(&self, peer: &str, kind: EventKind, text: impl Into<String>) {
        let event = GossipEvent {
            at: unix_now(),
            peer: peer.to_string(),
            kind,
            text: text.into(),
        };
        let mut q = crate::lock::lock(&self.inner);
        while q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(event);
    }

    /// Removes and returns every event, oldest first.
    pub fn drain(&self) -> Vec<GossipEvent> {
        crate::lock::lock(&self.inner).drain(..).collect()
    }

    /// A copy of the events, oldest first.
    pub fn recent(&self) -> Vec<GossipEvent> {
        crate::lock::lock(&self.inner).iter().cloned().collect()
    }
}

/// Counter maps of `CoreStats` and the label their keys get.
fn label_for(map: &str) -> &'static str {
    match map {
        "received" | "sent" => "kind",
        "deltas_rejected" | "records_refused" => "reason",
        _ => "key",
    }
}

/// Metric name of a `CoreStats` field: `received` → `rumor_messages_received_total`.
fn core_metric_name(field: &str) -> String {
    match field {
        "received" | "sent" => format!("rumor_messages_{field}_total"),
        other => format!("rumor_{other}_total"),
    }
}

/// `TransportStats` fields that are gauges, not counters.
const TRANSPORT_GAUGES: [&str; 3] = [
    "connections_open",
    "handshakes_in_progress",
    "buffered_bytes",
];

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders a snapshot in the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let peer = escape_label(&s.peer.name);
    let sample = |out: &mut String, name: &str, labels: &[(&str, &str)], value: f64| {
        let mut l = format!("peer=\"{peer}\"");
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(out, "{name}{{{l}}} {}", fmt_value(value));
    };

    // Protocol counters, generically.
    if let Some(fields) = s.core.as_object() {
        for (field, value) in fields {
            let name = core_metric_name(field);
            if let Some(n) = value.as_f64() {
                metric_header(&mut out, &name, "counter", &format!("core counter {field}"));
                sample(&mut out, &name, &[], n);
            } else if let Some(map) = value.as_object() {
                metric_header(
                    &mut out,
                    &name,
                    "counter",
                    &format!("core counter {field}, by {}", label_for(field)),
                );
                for (key, v) in map {
                    if let Some(n) = v.as_f64() {
                        sample(&mut out, &name, &[(label_for(field), key)], n);
                    }
                }
            }
        }
    }
    // Transport counters, generically.
    if let Some(fields) = s.transport.as_object() {
        for (field, value) in fields {
            let Some(n) = value.as_f64() else { continue };
            if TRANSPORT_GAUGES.contains(&field.as_str()) {
                let name = format!("rumor_{field}");
                metric_header(
                    &mut out,
                    &name,
                    "gauge",
                    &format!("transport gauge {field}"),
                );
                sample(&mut out, &name, &[], n);
            } else {
                let name = format!("rumor_{field}_total");
                metric_header(
                    &mut out,
                    &name,
                    "counter",
                    &format!("transport counter {field}"),
                );
                sample(&mut out, &name, &[], n);
            }
        }
    }
    // Members by status, as this peer sees them.
    let mut by_status: BTreeMap<&str, u64> = ["alive", "suspect", "dead", "left"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for m in &s.members {
        *by_status.entry(m.status.as_str()).or_insert(0) += 1;
    }
    metric_header(
        &mut out,
        "rumor_members",
        "gauge",
        "members known, by status",
    );
    for (status, n) in &by_status {
        sample(&mut out, "rumor_members", &[("status", status)], *n as f64);
    }
    // Lifecycle as a one-hot gauge.
    metric_header(
        &mut out,
        "rumor_lifecycle",
        "gauge",
        "1 for the current lifecycle state",
    );
    for state in LIFECYCLES {
        let v = if s.peer.lifecycle == state { 1.0 } else { 0.0 };
        sample(&mut out, "rumor_lifecycle", &[("state", state.as_str())], v);
    }
    let p = &s.peer;
    let gauges: [(&str, &str, Option<f64>); 7] = [
        (
            "rumor_version",
            "deltas published by this peer",
            Some(p.version as f64),
        ),
        (
            "rumor_applied_deltas",
            "deltas folded into the base, all origins",
            Some(p.applied as f64),
        ),
        (
            "rumor_peers_known",
            "live members known, itself included",
            Some(p.peers_known as f64),
        ),
        (
            "rumor_train_loss",
            "last mean training loss",
            p.train_loss.map(f64::from),
        ),
        (
            "rumor_test_accuracy_ratio",
            "test accuracy of the base, 0..1",
            p.test_accuracy.map(f64::from),
        ),
        (
            "rumor_paused",
            "1 while an operator has paused the peer",
            Some(if p.paused { 1.0 } else { 0.0 }),
        ),
        (
            "rumor_incarnation",
            "this peer's incarnation",
            Some(p.incarnation as f64),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            metric_header(&mut out, name, "gauge", help);
            sample(&mut out, name, &[], v);
        }
    }
    // Every held-out metric of the workload, by name (accuracy, val_loss, perplexity, ...).
    if let Some(metrics) = p.metrics.as_ref().filter(|m| !m.0.is_empty()) {
        metric_header(
            &mut out,
            "rumor_eval",
            "gauge",
            "last held-out evaluation of the base, one series per workload metric",
        );
        for (metric, value) in &metrics.0 {
            sample(&mut out, "rumor_eval", &[("metric", metric)], *value);
        }
    }
    for (name, help, value) in [
        ("rumor_train_steps_total", "optimizer steps taken", p.step),
        (
            "rumor_train_samples_total",
            "training samples processed",
            p.samples,
        ),
    ] {
        metric_header(&mut out, name, "counter", help);
        sample(&mut out, name, &[], value as f64);
    }
    metric_header(
        &mut out,
        "rumor_uptime_seconds",
        "gauge",
        "seconds since the peer started",
    );
    sample(&mut out, "rumor_uptime_seconds", &[], s.uptime_seconds);
    if let Some(age) = p.last_heard_seconds {
        metric_header(
            &mut out,
            "rumor_last_heard_seconds",
            "gauge",
            "seconds since a message last arrived",
        );
        sample(&mut out, "rumor_last_heard_seconds", &[], age);
    }
    // Step duration histogram.
    let h = &s.step_seconds;
    let name = "rumor_step_duration_seconds";
    metric_header(
        &mut out,
        name,
        "histogram",
        "wall time of one optimizer step",
    );
    let mut cumulative = 0u64;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        sample(
            &mut out,
            &format!("{name}_bucket"),
            &[("le", &fmt_value(*bound))],
            cumulative as f64,
        );
    }
    sample(
        &mut out,
        &format!("{name}_bucket"),
        &[("le", "+Inf")],
        h.count as f64,
    );
    sample(&mut out, &format!("{name}_sum"), &[], h.sum);
    sample(&mut out, &format!("{name}_count"), &[], h.count as f64);
    out
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_proto::wire::{Lifecycle, PeerId};

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            peer: PeerStatus {
                name: "peer-0".into(),
                lifecycle: Lifecycle::Training,
                version: 7,
                test_accuracy: Some(0.5),
                metrics: Some(crate::workload::Metrics(vec![
                    ("val_loss".into(), 2.5),
                    ("perplexity".into(), 12.0),
                ])),
                ..PeerStatus::default()
            },
            members: vec![MemberView {
                peer_id: PeerId::nil(),
                name: "peer-1".into(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                status: "suspect".into(),
                lifecycle: "training".into(),
                incarnation: 1,
                heartbeat: 2,
                published: 3,
            }],
            core: serde_json::json!({
                "received": {"delta": 5, "digest": 2},
                "duplicates_dropped": 4,
                "deltas_rejected": {"shape": 1},
                "a_counter_added_later": 9,
            }),
            transport: serde_json::json!({"bytes_sent": 100, "connections_open": 2}),
            ..StatusSnapshot::default()
        }
    }

    #[test]
    fn counters_are_rendered_generically_with_labels() {
        let text = render_prometheus(&snapshot());
        assert!(text.contains("rumor_messages_received_total{peer=\"peer-0\",kind=\"delta\"} 5"));
        assert!(text.contains("rumor_duplicates_dropped_total{peer=\"peer-0\"} 4"));
        assert!(text.contains("rumor_deltas_rejected_total{peer=\"peer-0\",reason=\"shape\"} 1"));
        assert!(text.contains("rumor_a_counter_added_later_total{peer=\"peer-0\"} 9"));
        assert!(text.contains("rumor_bytes_sent_total{peer=\"peer-0\"} 100"));
        assert!(text.contains("# TYPE rumor_connections_open gauge"));
        assert!(text.contains("rumor_members{peer=\"peer-0\",status=\"suspect\"} 1"));
        assert!(text.contains("rumor_members{peer=\"peer-0\",status=\"alive\"} 0"));
        assert!(text.contains("rumor_version{peer=\"peer-0\"} 7"));
        assert!(text.contains("rumor_test_accuracy_ratio{peer=\"peer-0\"} 0.5"));
        assert!(
            text.contains("rumor_eval{peer=\"peer-0\",metric=\"val_loss\"} 2.5"),
            "{text}"
        );
        assert!(
            !text.contains("rumor_train_loss"),
            "absent gauges are not rendered"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut s = snapshot();
        s.step_seconds.observe_n(0.003, 10);
        s.step_seconds.observe_n(10.0, 1);
        let text = render_prometheus(&s);
        assert!(
            text.contains("rumor_step_duration_seconds_bucket{peer=\"peer-0\",le=\"0.0025\"} 0")
        );
        assert!(
            text.contains("rumor_step_duration_seconds_bucket{peer=\"peer-0\",le=\"0.005\"} 10")
        );
        assert!(text.contains("rumor_step_duration_seconds_bucket{peer=\"peer-0\",le=\"2.5\"} 10"));
        assert!(text.contains("rumor_step_duration_seconds_bucket{peer=\"peer-0\",le=\"+Inf\"} 11"));
        assert!(text.contains("rumor_step_duration_seconds_count{peer=\"peer-0\"} 11"));
    }

    #[test]
    fn the_event_log_is_bounded() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push("p", EventKind::Delta, format!("e{i}"));
        }
        let texts: Vec<String> = log.drain().into_iter().map(|e| e.text).collect();
        assert_eq!(texts, ["e2", "e3", "e4"]);
        assert!(log.recent().is_empty());
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let s = snapshot();
        let text = serde_json::to_string(&s).unwrap();
        let back: StatusSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.peer, s.peer);
        assert_eq!(back.members, s.members);
    }
}
