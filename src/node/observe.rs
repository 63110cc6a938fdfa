//! What the node tells observers, kept out of the node loop: it turns core events, counter
//! changes and membership changes into lines of the [`EventLog`], times optimizer steps into a
//! histogram, and publishes a [`StatusSnapshot`] on a `watch` channel (at most every 100 ms) for
//! the metrics server and dashboards. It reads the core; it never drives it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::{EventKind, EventLog, Histogram, OriginView, StatusSnapshot};
use crate::net::Transport;
use rumor_proto::core::{Core, CoreStats, Event};
use rumor_proto::wire::{Lifecycle, PeerId};

use super::status::PeerStatus;
use super::trainer::TrainProgress;

/// The observer side of a peer: where it writes events and snapshots, and the operator's
/// controls (pause, end of training).
#[derive(Clone)]
pub struct Observers {
    /// Recent events of this peer.
    pub events: EventLog,
    /// The latest snapshot, replaced as the peer runs.
    pub snapshot: Arc<watch::Sender<Arc<StatusSnapshot>>>,
    /// While true the peer's trainer and core are frozen (an operator simulating a stall).
    pub paused: Arc<AtomicBool>,
    /// Set once to end training now, as if the budget were spent: the trainer publishes what it
    /// learned since its last delta and the peer drains (SIGUSR1, e.g. Slurm's warning before a
    /// job's time limit).
    pub end_training: Arc<AtomicBool>,
}

impl Default for Observers {
    fn default() -> Self {
        let (tx, _rx) = watch::channel(Arc::new(StatusSnapshot::default()));
        Self {
            events: EventLog::default(),
            snapshot: Arc::new(tx),
            paused: Arc::new(AtomicBool::new(false)),
            end_training: Arc::new(AtomicBool::new(false)),
        }
    }
}

const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Observer {
    name: String,
    out: Observers,
    started: Instant,
    last_heard: Option<Instant>,
    prev_stats: CoreStats,
    prev_members: HashMap<PeerId, (String, String)>,
    prev_lifecycle: Lifecycle,
    prev_paused: bool,
    histogram: Histogram,
    prev_step: u64,
    last_snapshot: Option<Instant>,
    last_counters: Instant,
}

impl Observer {
    pub(super) fn new(name: &str, out: Observers) -> Self {
        let now = Instant::now();
        Self {
            name: name.to_string(),
            out,
            started: now,
            last_heard: None,
            prev_stats: CoreStats::default(),
            prev_members: HashMap::new(),
            prev_lifecycle: Lifecycle::Starting,
            prev_paused: false,
            histogram: Histogram::default(),
            prev_step: 0,
            last_snapshot: None,
            last_counters: now,
        }
    }

    pub(super) fn paused(&self) -> bool {
        self.out.paused.load(Ordering::SeqCst)
    }

    pub(super) fn end_training_requested(&self) -> bool {
        self.out.end_training.load(Ordering::SeqCst)
    }

    /// A message arrived.
    pub(super) fn heard(&mut self) {
        self.last_heard = Some(Instant::now());
    }

    /// The trainer reported progress: time the steps since the last report.
    pub(super) fn progress(&mut self, p: &TrainProgress) {
        let steps = p.step.saturating_sub(self.prev_step);
        self.prev_step = p.step;
        self.histogram.observe_n(p.step_seconds, steps);
    }

    fn log(&self, kind: EventKind, text: String) {
        self.out.events.push(&self.name, kind, text);
    }

    fn name_of(core: &Core, id: PeerId) -> String {
        core.members().find(|m| m.peer_id == id).map_or_else(
            || crate::short_id::short_id(&id.to_string()),
            |m| m.name.clone(),
        )
    }

    /// A core event, before the node acts on it.
    pub(super) fn event(&mut self, core: &Core, event: &Event) {
        match event {
            Event::Joined { via, members } => self.log(
                EventKind::Membership,
                format!(
                    "joined via {} ({members} members)",
                    Self::name_of(core, *via)
                ),
            ),
            Event::DeltaApplied {
                origin, version, ..
            } => self.log(
                EventKind::Delta,
                format!(
                    "delta from {} v{version} applied",
                    Self::name_of(core, *origin)
                ),
            ),
            Event::BaseReplaced { exact, .. } => self.log(
                if *exact {
                    EventKind::Gossip
                } else {
                    EventKind::Problem
                },
                format!(
                    "base replaced by a snapshot ({})",
                    if *exact { "exact" } else { "INEXACT" }
                ),
            ),
            Event::GapDetected { origin, missing } => self.log(
                EventKind::Gossip,
                format!(
                    "gap: {} missing {} version(s); anti-entropy will pull",
                    Self::name_of(core, *origin),
                    missing.len()
                ),
            ),
            Event::DeltaRejected { origin, reason } => self.log(
                EventKind::Problem,
                format!(
                    "rejected a delta from {}: {}",
                    Self::name_of(core, *origin),
                    reason.as_str()
                ),
            ),
            // Membership changes are reported by `refresh` from the view itself, which also
            // sees status changes that raise no event.
            _ => {}
        }
    }

    fn diff_members(&mut self, core: &Core) {
        let me = core.id();
        for m in core.members() {
            if m.peer_id == me {
                continue;
            }
            let now = (
                m.status.as_str().to_string(),
                m.lifecycle.as_str().to_string(),
            );
            match self.prev_members.get(&m.peer_id) {
                None => self.log(
                    if m.status.as_str() == "alive" {
                        EventKind::Membership
                    } else {
                        EventKind::Failure
                    },
                    format!("member {} is {} ({})", m.name, now.0, m.addr),
                ),
                Some(before) if before.0 != now.0 => self.log(
                    if now.0 == "alive" {
                        EventKind::Membership
                    } else {
                        EventKind::Failure
                    },
                    format!("member {}: {} → {}", m.name, before.0, now.0),
                ),
                Some(before) if before.1 != now.1 => self.log(
                    EventKind::Membership,
                    format!("member {} is {}", m.name, now.1),
                ),
                _ => {}
            }
            self.prev_members.insert(m.peer_id, now);
        }
    }

    fn diff_counters(&mut self, stats: &CoreStats) {
        let p = &self.prev_stats;
        let lines: [(u64, u64, EventKind, &str); 7] = [
            (
                stats.duplicates_dropped,
                p.duplicates_dropped,
                EventKind::Gossip,
                "duplicate(s) dropped",
            ),
            (
                stats.anti_entropy_deltas_sent,
                p.anti_entropy_deltas_sent,
                EventKind::Gossip,
                "delta(s) pushed by anti-entropy",
            ),
            (
                stats.ttl_expired,
                p.ttl_expired,
                EventKind::Gossip,
                "envelope(s) not forwarded: TTL 0",
            ),
            (
                stats.pull_timeouts,
                p.pull_timeouts,
                EventKind::Gossip,
                "pull(s) of announced deltas ran out",
            ),
            (
                stats.snapshots_sent,
                p.snapshots_sent,
                EventKind::Gossip,
                "snapshot(s) sent",
            ),
            (
                stats.inexact_merges,
                p.inexact_merges,
                EventKind::Problem,
                "inexact merge(s)",
            ),
            (
                stats.decode_errors,
                p.decode_errors,
                EventKind::Problem,
                "frame(s) failed to decode",
            ),
        ];
        for (now, before, kind, what) in lines {
            if now > before {
                self.log(kind, format!("{} {what}", now - before));
            }
        }
        self.prev_stats = stats.clone();
    }

    /// Called once per loop iteration: reports changes and publishes a snapshot now and then.
    pub(super) fn refresh(&mut self, core: &Core, transport: &Transport, status: &PeerStatus) {
        let now = Instant::now();
        let lifecycle = core.lifecycle();
        let paused = self.paused();
        let changed = lifecycle != self.prev_lifecycle || paused != self.prev_paused;
        if lifecycle != self.prev_lifecycle {
            self.log(
                EventKind::Membership,
                format!("{} → {}", self.prev_lifecycle.as_str(), lifecycle.as_str()),
            );
            self.prev_lifecycle = lifecycle;
        }
        if paused != self.prev_paused {
            self.log(
                EventKind::Operator,
                if paused { "paused" } else { "resumed" }.to_string(),
            );
            self.prev_paused = paused;
        }
        let due = self
            .last_snapshot
            .is_none_or(|t| now.duration_since(t) >= SNAPSHOT_EVERY);
        if !(due || changed) {
            return;
        }
        self.diff_members(core);
        if now.duration_since(self.last_counters) >= COUNTERS_EVERY {
            self.last_counters = now;
            self.diff_counters(core.stats());
        }
        self.last_snapshot = Some(now);
        let snapshot = self.build(core, transport, status, now);
        self.out.snapshot.send_replace(Arc::new(snapshot));
    }

    fn build(
        &self,
        core: &Core,
        transport: &Transport,
        s: &PeerStatus,
        now: Instant,
    ) -> StatusSnapshot {
        // The snapshot publishes the live record, with what only the observer knows; its
        // members travel beside it.
        let mut peer = s.clone();
        peer.paused = self.paused();
        peer.last_heard_seconds = self.last_heard.map(|t| now.duration_since(t).as_secs_f64());
        let members = std::mem::take(&mut peer.members);
        let version_vector = core
            .applied()
            .origins()
            .iter()
            .map(|(origin, entry)| {
                (
                    origin.to_string(),
                    OriginView {
                        contiguous: entry.contiguous(),
                        max: entry.max(),
                        missing: entry.missing_at_most(1024),
                    },
                )
            })
            .collect();
        StatusSnapshot {
            peer,
            members,
            version_vector,
            core: serde_json::to_value(core.stats()).unwrap_or_default(),
            transport: serde_json::to_value(transport.stats()).unwrap_or_default(),
            step_seconds: self.histogram.clone(),
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
        }
    }
}
