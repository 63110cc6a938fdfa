//! What the core's events mean for the shell: deltas applied or taken out go to the trainer,
//! membership changes and refusals go to the log, throttled per member that delivered the
//! message (origins in a message cost nothing to invent; certificates do).

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::trainer::{ToTrainer, TrainerHandle};
use crate::ratelog::RateLimitedLog;
use rumor_proto::core::Event;

/// Membership log lines one member's messages may cause per [`crate::ratelog::LOG_INTERVAL`]:
/// enough for a cluster of peers joining at once, not for a flood of invented records.
const MEMBERSHIP_LINES_PER_MEMBER: u32 = 64;

/// Throttles of the log lines that messages from other members cause, keyed by the member
/// that delivered the message.
pub(super) struct RemoteLogs {
    /// Rejected deltas: one line per member per interval.
    rejects: RateLimitedLog<Arc<str>>,
    /// Member up, down, suspect: a burst per member per interval.
    membership: RateLimitedLog<Arc<str>>,
}

impl Default for RemoteLogs {
    fn default() -> Self {
        Self {
            rejects: RateLimitedLog::new(crate::ratelog::LOG_INTERVAL),
            membership: RateLimitedLog::with_burst(
                crate::ratelog::LOG_INTERVAL,
                MEMBERSHIP_LINES_PER_MEMBER,
            ),
        }
    }
}

/// Carries out, or logs, what the core tells the shell beyond the lifecycle (the driver loop
/// handles those): deltas to the trainer, membership changes and refusals to the log, each
/// throttled per delivering member.
pub(super) fn handle_event(
    event: Event,
    trainer: Option<&TrainerHandle>,
    delivered_by: Option<&Arc<str>>,
    logs: &mut RemoteLogs,
) {
    // Events caused by a timer of this peer (a probe that failed) are keyed "(local)".
    let member: Arc<str> = delivered_by
        .cloned()
        .unwrap_or_else(|| Arc::from("(local)"));
    let mut membership_line = || logs.membership.hit(Instant::now(), &member).is_some();
    match event {
        Event::DeltaApplied { values, .. } => {
            if let Some(t) = trainer {
                let _ = t.commands.send(ToTrainer::ApplyDelta(values));
            }
        }
        Event::DeltaRetracted {
            origin,
            version,
            values,
        } => {
            warn!(%origin, version, "equivocated delta taken out of the base");
            if let Some(t) = trainer {
                let negated: Arc<[f32]> = values.iter().map(|v| -v).collect();
                let _ = t.commands.send(ToTrainer::ApplyDelta(negated));
            }
        }
        Event::Quarantined {
            origin,
            key,
            version,
        } => {
            error!(
                %origin,
                version,
                certificate = %key.short(),
                "member quarantined: it signed two different deltas under one version"
            )
        }
        Event::BaseReplaced { base, exact } => {
            if !exact {
                warn!("snapshot installed inexactly: some deltas were no longer in the log");
            }
            if let Some(t) = trainer {
                let _ = t.commands.send(ToTrainer::ReplaceBase(base));
            }
        }
        Event::Joined { via, members } => info!(%via, members, "joined the cluster"),
        Event::MemberUp(m) if membership_line() => {
            info!(peer = %m.name, addr = %m.addr, "member up")
        }
        Event::MemberDown(m) if membership_line() => {
            info!(peer = %m.name, status = m.status.as_str(), "member down")
        }
        Event::MemberSuspect(m) if membership_line() => {
            info!(peer = %m.name, incarnation = m.incarnation, "member suspected")
        }
        Event::MemberUp(_) | Event::MemberDown(_) | Event::MemberSuspect(_) => {}
        // The lifecycle's events are the driver loop's.
        Event::TrainingStarted { .. }
        | Event::JoinFailed
        | Event::DrainEnded { .. }
        | Event::CheckpointDue => {}
        Event::GapDetected { origin, missing } => {
            debug!(%origin, ?missing, "gap in deltas; anti-entropy will pull them")
        }
        // Every refusal is counted in the core's stats; the log says so at most once per
        // delivering member per interval.
        Event::DeltaRejected { origin, reason } => {
            if let Some(suppressed) = logs.rejects.hit(Instant::now(), &member) {
                warn!(
                    %member,
                    %origin,
                    reason = reason.as_str(),
                    suppressed_since_last_log = suppressed,
                    "delta rejected (logged at most once per member every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                )
            }
        }
        Event::RecordRefused { peer, reason } => {
            if let Some(suppressed) = logs.rejects.hit(Instant::now(), &member) {
                warn!(
                    %member,
                    %peer,
                    reason = reason.as_str(),
                    suppressed_since_last_log = suppressed,
                    "member record refused (logged at most once per member every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                )
            }
        }
        Event::SenderMismatch { claimed } => {
            if let Some(suppressed) = logs.rejects.hit(Instant::now(), &member) {
                warn!(
                    %member,
                    %claimed,
                    suppressed_since_last_log = suppressed,
                    "message dropped: its origin is not the sender's certificate (logged at most \
                     once per member every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                )
            }
        }
    }
}
