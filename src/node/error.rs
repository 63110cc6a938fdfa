//! Why a peer stops with an error: one enum for the peer driver, with the failures of resuming
//! from a checkpoint and of the trainer typed beside it, so that callers decide by variant (a
//! damaged checkpoint is quarantined, a failed save is not) rather than by reading messages.
//!
//! As everywhere in the crate, an error caused by another returns it as its source and does not
//! repeat it in its own message (see [`crate::report`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{self, ModelCard, ModelError};

/// Why a peer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No address to advertise could be found (listening on every interface without
    /// `--advertise`).
    #[error(transparent)]
    Advertise(#[from] crate::net::discovery::AdvertiseError),
    /// The data dir could not be created or written (checked at start by creating, writing and
    /// fsyncing a probe file in it). A full disk has a source of kind `StorageFull` and a
    /// message that says the disk is full.
    #[error("data dir {} is not usable{}", path.display(), storage_hint(source))]
    DataDir {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data dir, or one of its parents, exists as something other than a directory.
    #[error(transparent)]
    NotADirectory(#[from] NotADirectory),
    /// The peer id file exists but does not hold a UUID.
    #[error("peer id file {} is corrupt (expected a UUID)", .0.display())]
    BadPeerId(PathBuf),
    /// The identity seed file exists but does not hold 16 hex digits.
    #[error("identity seed file {} is corrupt (expected 16 hex digits)", .0.display())]
    BadIdentitySeed(PathBuf),
    /// The published version ledger (`data_dir/published_version`) cannot be read, holds
    /// something else than `PEER_ID VERSION` lines, or cannot be written and synced. The peer
    /// stops rather than publish a delta whose version it could not keep durable: after a crash
    /// it could publish another delta under the same version.
    #[error(
        "published version ledger {} is not usable{}; the peer stops rather than risk \
         publishing two deltas under one version",
        path.display(),
        storage_hint(source)
    )]
    VersionLedger {
        /// The ledger file, or the data dir when syncing it failed.
        path: PathBuf,
        /// The I/O error (kind `InvalidData` for a ledger that does not parse).
        #[source]
        source: std::io::Error,
    },
    /// The transport could not start.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The revocation list could not be loaded at start: unreadable, malformed, another
    /// cluster's, or its signature does not verify with the cluster CA (the peer does not
    /// start).
    #[error(transparent)]
    RevocationList(#[from] crate::certs::CertError),
    /// This peer's own certificate is on the cluster's revocation list: every member refuses
    /// it.
    #[error(
        "this peer's certificate ({name}) is on the revocation list {}: every member refuses \
         it; issue a new certificate (`rumor certs issue --force --name {name}`)",
        path.display()
    )]
    OwnCertificateRevoked {
        /// The peer's name.
        name: String,
        /// The revocation list.
        path: PathBuf,
    },
    /// No seed welcomed this peer before the join timeout. The text says, per seed, what became
    /// of the last join request: e.g. "seed 127.0.0.1:7000 refused this peer's certificate (TLS
    /// alert certificate_unknown): ...", "seed 127.0.0.1:7000 presented a certificate from
    /// another cluster CA, ...", "seed 127.0.0.1:7000 did not answer (...)".
    #[error("no seed accepted us within {0:?}: {1}")]
    JoinTimeout(Duration, String),
    /// `--resume` with no usable checkpoint, or a checkpoint of another model or peer.
    #[error("cannot resume")]
    Resume(#[source] ResumeError),
    /// The model failed (shapes, candle, divergence).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The trainer thread failed or could not start.
    #[error(transparent)]
    Trainer(#[from] TrainerError),
    /// A task of the peer (the peer itself, or its final evaluation) panicked or was cancelled.
    #[error("the {what} task ended abnormally")]
    Task {
        /// Which task: "peer", "evaluation".
        what: &'static str,
        /// tokio's report.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The synchronous baseline (`--mode sync`) failed; its own error is the source.
    #[error("the synchronous training run failed")]
    Sync(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a peer could not resume from the checkpoint in its data dir.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The checkpoint files are missing, unreadable or damaged; the source says which file and
    /// how ([`ResumeError::is_damaged`] tells the damaged ones apart).
    #[error("cannot load the checkpoint in {}", dir.display())]
    Load {
        /// The data dir.
        dir: PathBuf,
        /// What went wrong, naming the file (boxed: a `ModelError` is large).
        #[source]
        source: Box<ModelError>,
    },
    /// The checkpoint loads but the peer state in its sidecar does not decode.
    #[error("the peer state in the checkpoint in {} is not valid", dir.display())]
    State {
        /// The data dir.
        dir: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The checkpoint is damaged and the peer has no seed to take a snapshot from instead.
    #[error(
        "the checkpoint is damaged and there is no seed to take a snapshot from (start with \
         --seed, or without --resume to start a new cluster)"
    )]
    DamagedWithoutSeed(#[source] Box<ResumeError>),
    /// The checkpoint holds another model than this run uses.
    #[error("checkpoint holds model {found}, this run uses {wanted}")]
    OtherModel {
        /// The checkpoint's model.
        found: ModelCard,
        /// This run's model.
        wanted: ModelCard,
    },
    /// The checkpoint was written by a peer with another id.
    #[error("checkpoint belongs to another peer id")]
    OtherPeer,
    /// The resume policy returned a decision that does not fit what was found on disk (a bug:
    /// restoring a damaged checkpoint, or quarantining a good one).
    #[error("the resume decision does not fit the checkpoint found")]
    DecisionMismatch,
}

impl ResumeError {
    /// Whether there is no checkpoint at all: its sidecar file does not exist.
    pub fn is_absent(&self) -> bool {
        match self {
            Self::Load { source, .. } => match source.as_ref() {
                ModelError::Io { path, source } => {
                    source.kind() == std::io::ErrorKind::NotFound
                        && path
                            .file_name()
                            .is_some_and(|n| n == model::checkpoint::SIDECAR_FILE)
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the checkpoint's files are damaged (corrupt, truncated, inconsistent, half
    /// missing), as opposed to absent altogether or unreadable for another reason. A damaged
    /// checkpoint is moved aside and the peer rejoins from a snapshot when it has a seed.
    pub fn is_damaged(&self) -> bool {
        use ModelError as M;
        match self {
            Self::Load { source, .. } => match source.as_ref() {
                M::ChecksumMismatch { .. }
                | M::Sidecar { .. }
                | M::Safetensors { .. }
                | M::CheckpointFormat { .. }
                | M::InvalidSpec(..)
                | M::LengthMismatch { .. } => true,
                // The sidecar is there but its tensor file is not.
                M::Io { path, source } => {
                    source.kind() == std::io::ErrorKind::NotFound
                        && path
                            .file_name()
                            .is_some_and(|n| n != model::checkpoint::SIDECAR_FILE)
                }
                _ => false,
            },
            Self::State { .. } | Self::DamagedWithoutSeed(_) => true,
            Self::OtherModel { .. } | Self::OtherPeer | Self::DecisionMismatch => false,
        }
    }
}

/// Why the trainer thread stopped the peer.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// The operating system refused to start the thread.
    #[error("cannot start the trainer thread")]
    Spawn(#[source] std::io::Error),
    /// Training failed (divergence, tensor error, bad data).
    #[error("training failed")]
    Failed(#[source] ModelError),
}

/// A directory that cannot be used or created because a file (or anything else that is not a
/// directory) is in its place, or in the place of one of its parents. Said plainly, where
/// `create_dir_all` would only say "File exists" or "Not a directory".
#[derive(Debug, thiserror::Error)]
#[error("{what} {} {}", path.display(), in_the_way(path, blocker))]
pub struct NotADirectory {
    /// What the directory is for, e.g. "data dir".
    pub what: &'static str,
    /// The directory wanted.
    pub path: PathBuf,
    /// What is in the way: `path` itself or one of its parents.
    pub blocker: PathBuf,
}

fn in_the_way(path: &Path, blocker: &Path) -> String {
    if path == blocker {
        "exists and is not a directory".into()
    } else {
        format!(
            "cannot be created: {} exists and is not a directory",
            blocker.display()
        )
    }
}

/// Checks that `path` is a directory or can be created as one: neither it nor any of its
/// parents exists as a file (or a dangling link). `what` names the directory in the error.
/// Missing paths are fine; other failures are left to whoever creates the directory.
///
/// # Errors
/// [`NotADirectory`] naming `path` and what is in the way.
pub fn check_dir_path(what: &'static str, path: &Path) -> Result<(), NotADirectory> {
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let blocked = match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => true,
            // Absent (look further up), or a link to nothing, which is in the way.
            Err(_) => p.symlink_metadata().is_ok(),
        };
        if blocked {
            return Err(NotADirectory {
                what,
                path: path.to_path_buf(),
                blocker: p.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// A hint appended to I/O errors that an operator can act on.
fn storage_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            " (the disk is full: free space or pick another --data-dir)"
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            " (not writable by this user: fix permissions or pick another --data-dir)"
        }
        std::io::ErrorKind::NotADirectory => " (a path component is a file, not a directory)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_in_the_data_dir_reads_as_a_full_disk() {
        let e = NodeError::DataDir {
            path: PathBuf::from("/data/peer"),
            source: std::io::Error::from_raw_os_error(28), // ENOSPC
        };
        let text = e.to_string();
        assert!(text.contains("/data/peer"), "{text}");
        assert!(text.contains("disk is full"), "{text}");
        let e = NodeError::DataDir {
            path: PathBuf::from("/data/peer"),
            source: std::io::Error::from_raw_os_error(30), // EROFS
        };
        assert!(e.to_string().contains("not writable"), "{e}");
    }

    #[test]
    fn a_missing_checkpoint_is_said_once_down_its_chain() {
        let e = NodeError::Resume(ResumeError::Load {
            dir: PathBuf::from("/d"),
            source: Box::new(ModelError::Io {
                path: PathBuf::from("/d").join(model::checkpoint::SIDECAR_FILE),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        });
        let said = crate::report::messages(&e);
        assert_eq!(said.len(), 4, "{said:?}");
        for (i, a) in said.iter().enumerate() {
            for b in &said[i + 1..] {
                assert!(
                    !a.contains(b.as_str()) && !b.contains(a.as_str()),
                    "{said:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_checkpoint_is_not_a_damaged_one() {
        // A sidecar missing altogether means "no checkpoint", not "damaged".
        let missing = ResumeError::Load {
            dir: PathBuf::from("/d"),
            source: Box::new(ModelError::Io {
                path: PathBuf::from("/d").join(model::checkpoint::SIDECAR_FILE),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        };
        assert!(!missing.is_damaged());
        let torn = ResumeError::Load {
            dir: PathBuf::from("/d"),
            source: Box::new(ModelError::CheckpointFormat {
                path: PathBuf::from("/d/x"),
                reason: "truncated".into(),
            }),
        };
        assert!(torn.is_damaged());
        assert!(!ResumeError::OtherPeer.is_damaged());
    }
}
