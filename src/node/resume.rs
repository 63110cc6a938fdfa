//! How a peer starts from what its data dir holds (`--resume`): load the checkpoint, let the
//! protocol decide ([`decide_resume`]), move a damaged checkpoint aside, and restore the state
//! under this peer's id.

use tracing::{error, info};

use super::trainer::TrainPlan;
use super::{load_checkpoint, NodeError, PeerOptions, ResumeError};
use crate::model;
use crate::report::Chain;
use rumor_proto::core::{
    decide_resume, CheckpointFound, RestoredState, ResumeDecision, ResumeRefusal,
};
use rumor_proto::wire::PeerId;

/// With `--resume`, what the data dir holds decides how this peer starts: the decision is
/// the protocol's ([`decide_resume`]), the file IO (loading, moving a damaged checkpoint aside)
/// is done here. Sets `plan.start_step` from a restored checkpoint.
///
/// Errors: [`NodeError::Resume`] when the resume is refused, or the IO error that kept the
/// checkpoint from being read or moved aside.
pub(super) fn resume_state(
    options: &PeerOptions,
    peer_id: PeerId,
    plan: &mut TrainPlan,
) -> Result<Option<RestoredState>, NodeError> {
    let loaded = if options.resume {
        match load_checkpoint(&options.data_dir) {
            Ok(checkpoint) => Some(Ok(checkpoint)),
            Err(e) if e.is_damaged() => Some(Err(e)),
            Err(e) if e.is_absent() => return start_over(options),
            Err(e) => return Err(NodeError::Resume(e)),
        }
    } else {
        None
    };
    let restored = match loaded {
        None => None,
        Some(loaded) => {
            let found = match &loaded {
                Ok((spec, _, state)) => CheckpointFound::Loaded {
                    same_model: *spec == options.workload.card(),
                    // Written from this data dir (the id's seed), maybe under another key.
                    same_peer: same_seed(state.peer_id, peer_id),
                },
                Err(_) => CheckpointFound::Damaged,
            };
            match (decide_resume(found, has_seeds(options)), loaded) {
                (ResumeDecision::Restore, Ok((_, base, state))) => {
                    plan.start_step = state.steps_done;
                    info!(
                        published = state.published,
                        applied = state.applied.len(),
                        "resuming from checkpoint"
                    );
                    // The versions in the checkpoint are its id's: a new certificate is a new
                    // id, which starts at 0 (raised later to its own ledger entry, if any).
                    let published = if state.peer_id == peer_id {
                        state.published
                    } else {
                        info!(
                            checkpoint_peer_id = %state.peer_id,
                            %peer_id,
                            "the checkpoint was written under another peer id of this data dir \
                             (a new certificate, or ids from before they were bound to one): \
                             its base and applied deltas are restored, its published versions \
                             are not, and this id publishes from version 0"
                        );
                        0
                    };
                    Some(RestoredState {
                        contents: state.content_hashes(),
                        base,
                        applied: state.applied,
                        published,
                        incarnation: state.incarnation,
                    })
                }
                (ResumeDecision::QuarantineAndRejoin, Err(e)) => {
                    // Never train on from θ₀ as if nothing happened: move the bad files aside
                    // and rejoin through the seeds, taking the base (and the versions this peer
                    // published, from the snapshot's applied set and the members' records of
                    // it) from a peer's snapshot.
                    let ts = crate::clock::unix_now_secs();
                    let moved = model::checkpoint::quarantine_checkpoint(&options.data_dir, ts)?;
                    error!(
                        moved = ?moved,
                        "checkpoint unreadable: {}; moved it aside, rejoining from a peer's snapshot",
                        Chain(&e)
                    );
                    Some(RestoredState::lost(options.initial.clone()))
                }
                (ResumeDecision::Refuse(ResumeRefusal::OtherModel), Ok((spec, _, _))) => {
                    return Err(NodeError::Resume(ResumeError::OtherModel {
                        found: spec,
                        wanted: options.workload.card(),
                    }))
                }
                (ResumeDecision::Refuse(ResumeRefusal::OtherPeer), _) => {
                    return Err(NodeError::Resume(ResumeError::OtherPeer))
                }
                (ResumeDecision::Refuse(_), Err(e)) => {
                    return Err(NodeError::Resume(ResumeError::DamagedWithoutSeed(
                        Box::new(e),
                    )))
                }
                // A loaded checkpoint is never quarantined or refused as damaged, and a damaged
                // one never restored: `decide_resume` is given what was found.
                (
                    ResumeDecision::Restore
                    | ResumeDecision::QuarantineAndRejoin
                    | ResumeDecision::StartOver
                    | ResumeDecision::Refuse(ResumeRefusal::DamagedWithoutSeeds),
                    _,
                ) => return Err(NodeError::Resume(ResumeError::DecisionMismatch)),
            }
        }
    };
    Ok(restored)
}

/// `--resume` with no checkpoint in the data dir: the protocol's decision for
/// [`CheckpointFound::Absent`], carried out.
fn start_over(options: &PeerOptions) -> Result<Option<RestoredState>, NodeError> {
    match decide_resume(CheckpointFound::Absent, has_seeds(options)) {
        ResumeDecision::StartOver => {
            info!(
                data_dir = %options.data_dir.display(),
                "--resume: no checkpoint here yet (the peer stopped before its first one); \
                 starting over from the initial model and joining through the seeds, under \
                 this data dir's peer id"
            );
            Ok(Some(RestoredState::lost(options.initial.clone())))
        }
        _ => Err(NodeError::Resume(ResumeError::DecisionMismatch)),
    }
}

/// Whether the peer has seeds to rejoin through (static or by DNS name).
fn has_seeds(options: &PeerOptions) -> bool {
    !options.seeds.is_empty() || !options.dns_seeds.is_empty()
}

/// Whether two peer ids share their data dir seed (their last 8 bytes, [`PeerId::bound`]).
fn same_seed(a: PeerId, b: PeerId) -> bool {
    a.as_uuid().as_bytes()[8..] == b.as_uuid().as_bytes()[8..]
}
