//! What a restarted peer (`rumor peer --resume`) does with what it finds on disk.
//!
//! The shell reads the data dir and reports what it found; [`decide_resume`] says what to do,
//! and the shell carries it out (the file IO is the shell's). A restored peer rejoins with its
//! incarnation raised by one ([`crate::core::Core::restore`]), so its new records outrank the
//! old ones; a peer whose checkpoint is damaged never trains on from θ₀ as if nothing happened:
//! it rejoins from a seed's snapshot, or is refused when it has no seed.

use std::fmt;

/// What the shell found when asked to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFound {
    /// A checkpoint that loaded and passed its checks.
    Loaded {
        /// Whether it holds the model this run uses.
        same_model: bool,
        /// Whether it belongs to this data dir's peer id.
        same_peer: bool,
    },
    /// Checkpoint files that are there but unreadable: a checksum or format error, or a
    /// sidecar whose tensor file is missing.
    Damaged,
    /// No checkpoint at all: the peer stopped before its first one (a cluster engine restarts
    /// a failed peer with the same command line, `--resume` included).
    Absent,
}

/// What to do about a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeDecision {
    /// Restore the checkpoint ([`crate::core::Core::restore`]).
    Restore,
    /// Move the damaged files aside and rejoin through the seeds, taking the base (and the
    /// versions this peer published) from a snapshot: [`crate::core::Core::restore`] from
    /// [`crate::core::RestoredState::lost`].
    QuarantineAndRejoin,
    /// Nothing to restore: start from θ₀ as [`crate::core::RestoredState::lost`] (a raised
    /// incarnation, so records of an earlier run of this peer are outranked) and join through
    /// the seeds as a new peer would; without seeds the peer starts a cluster.
    StartOver,
    /// Do not start.
    Refuse(ResumeRefusal),
}

/// Why a resume is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// The checkpoint is damaged and there is no seed to take a snapshot from.
    DamagedWithoutSeeds,
    /// The checkpoint holds another model than this run's.
    OtherModel,
    /// The checkpoint belongs to another peer id.
    OtherPeer,
}

impl fmt::Display for ResumeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResumeRefusal::DamagedWithoutSeeds => {
                "the checkpoint is damaged and there is no seed to take a snapshot from \
                 (start with --seed, or without --resume to start a new cluster)"
            }
            ResumeRefusal::OtherModel => "the checkpoint holds another model than this run's",
            ResumeRefusal::OtherPeer => "checkpoint belongs to another peer id",
        })
    }
}

/// The resume policy: restore a good checkpoint of this peer and model; rejoin from a
/// snapshot when it is damaged and there are seeds; start over when there is none at all (so
/// an engine's restart never crash-loops on a peer killed before its first checkpoint);
/// refuse otherwise.
pub fn decide_resume(found: CheckpointFound, has_seeds: bool) -> ResumeDecision {
    match found {
        CheckpointFound::Loaded {
            same_model: false, ..
        } => ResumeDecision::Refuse(ResumeRefusal::OtherModel),
        CheckpointFound::Loaded {
            same_peer: false, ..
        } => ResumeDecision::Refuse(ResumeRefusal::OtherPeer),
        CheckpointFound::Loaded { .. } => ResumeDecision::Restore,
        CheckpointFound::Damaged if has_seeds => ResumeDecision::QuarantineAndRejoin,
        CheckpointFound::Damaged => ResumeDecision::Refuse(ResumeRefusal::DamagedWithoutSeeds),
        CheckpointFound::Absent => ResumeDecision::StartOver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_checkpoint_of_this_peer_and_model_is_restored() {
        let found = CheckpointFound::Loaded {
            same_model: true,
            same_peer: true,
        };
        assert_eq!(decide_resume(found, false), ResumeDecision::Restore);
        assert_eq!(decide_resume(found, true), ResumeDecision::Restore);
    }

    #[test]
    fn no_checkpoint_starts_over_with_or_without_seeds() {
        assert_eq!(
            decide_resume(CheckpointFound::Absent, true),
            ResumeDecision::StartOver
        );
        assert_eq!(
            decide_resume(CheckpointFound::Absent, false),
            ResumeDecision::StartOver
        );
    }

    #[test]
    fn another_model_or_peer_is_refused() {
        let other_model = CheckpointFound::Loaded {
            same_model: false,
            same_peer: true,
        };
        let other_peer = CheckpointFound::Loaded {
            same_model: true,
            same_peer: false,
        };
        assert_eq!(
            decide_resume(other_model, true),
            ResumeDecision::Refuse(ResumeRefusal::OtherModel)
        );
        assert_eq!(
            decide_resume(other_peer, true),
            ResumeDecision::Refuse(ResumeRefusal::OtherPeer)
        );
    }

    #[test]
    fn a_damaged_checkpoint_rejoins_through_seeds_or_is_refused() {
        assert_eq!(
            decide_resume(CheckpointFound::Damaged, true),
            ResumeDecision::QuarantineAndRejoin
        );
        assert_eq!(
            decide_resume(CheckpointFound::Damaged, false),
            ResumeDecision::Refuse(ResumeRefusal::DamagedWithoutSeeds)
        );
    }
}
