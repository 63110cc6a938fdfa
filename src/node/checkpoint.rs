//! A peer's checkpoint: the base (through [`crate::model::checkpoint`]) and, in its sidecar, the
//! peer state needed to resume (id, applied version vector, last published version,
//! incarnation, steps done). Saving and loading are typed apart, so a failed save is never taken
//! for a damaged checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ResumeError;
use crate::model::{self, ModelCard, ModelError, ParamLayout};
use rumor_proto::auth::ContentHash;
use rumor_proto::core::Core;
use rumor_proto::version_vector::VersionVector;
use rumor_proto::wire::PeerId;

/// The state stored beside the base in a checkpoint's sidecar.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The peer's id.
    pub peer_id: PeerId,
    /// The deltas folded into the saved base.
    pub applied: VersionVector,
    /// The last version the peer published.
    pub published: u64,
    /// The incarnation it ran with.
    pub incarnation: u64,
    /// Optimizer steps done when it was saved.
    #[serde(default)]
    pub steps_done: u64,
    /// The content hash (SHA-256, hex) of each applied delta whose content was known, so the
    /// resumed peer can still compare contents for equivocation. Absent in checkpoints from
    /// before signed updates.
    #[serde(default)]
    pub contents: Vec<(PeerId, u64, String)>,
}

impl CheckpointState {
    /// The saved contents as hashes; entries whose hex does not decode to 32 bytes are left
    /// out (their origins are then not compared).
    pub fn content_hashes(&self) -> Vec<(PeerId, u64, ContentHash)> {
        self.contents
            .iter()
            .filter_map(|(origin, version, hex)| Some((*origin, *version, decode_hash(hex)?)))
            .collect()
    }
}

fn encode_hash(hash: &ContentHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hash(hex: &str) -> Option<ContentHash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

/// Why a checkpoint could not be saved. The previous checkpoint stays loadable.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The peer state could not be serialised (a bug, not a property of the files).
    #[error("cannot serialise the checkpoint's peer state")]
    EncodeState(#[source] serde_json::Error),
    /// Writing the files failed (full disk, permissions); the source names the file.
    #[error("cannot write the checkpoint")]
    Write(#[source] ModelError),
}

/// Saves the core's base and state into `dir`, recording `steps_done` optimizer steps.
///
/// # Errors
/// [`SaveError`]; on any error the previous checkpoint stays loadable.
pub fn save(
    dir: &Path,
    model: (&ModelCard, &ParamLayout),
    core: &Core,
    steps_done: u64,
) -> Result<(), SaveError> {
    let state = CheckpointState {
        peer_id: core.id(),
        applied: core.applied().clone(),
        published: core.published(),
        incarnation: core.incarnation(),
        steps_done,
        contents: core
            .contents()
            .iter()
            .map(|(origin, version, hash)| (*origin, *version, encode_hash(hash)))
            .collect(),
    };
    let state = serde_json::to_value(&state).map_err(SaveError::EncodeState)?;
    model::save_checkpoint(dir, model.0, model.1, core.base(), &state).map_err(SaveError::Write)
}

/// Loads a peer's checkpoint from `dir`: its model, its base (flat `f32`, one per parameter)
/// and its state.
///
/// # Errors
/// [`ResumeError::Load`] (files missing, unreadable or damaged; the source names the file) or
/// [`ResumeError::State`] (the sidecar's peer state does not decode).
pub fn load_checkpoint(dir: &Path) -> Result<(ModelCard, Vec<f32>, CheckpointState), ResumeError> {
    let model::checkpoint::Checkpoint {
        card,
        params: base,
        state,
        ..
    } = model::load_checkpoint(dir).map_err(|e| ResumeError::Load {
        dir: dir.to_path_buf(),
        source: Box::new(e),
    })?;
    let state: CheckpointState =
        serde_json::from_value(state).map_err(|source| ResumeError::State {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok((card, base, state))
}
