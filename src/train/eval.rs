//! Deferred evaluation: at an evaluation point a run may write its model to a file instead of
//! evaluating it, so measurement costs the run no compute; the files are evaluated after the
//! run (the lab does this).

use std::path::{Path, PathBuf};

use crate::model::{self, ParamLayout};
use crate::workload::{Metrics, Workload};

/// Writes `base` to `dir/step-NNNNNNNN.f32` (little-endian `f32`s, no header; the directory is
/// created if needed) and returns the path. Not fsync'd: these files only live for the run.
///
/// # Errors
/// The I/O error, if the directory or file cannot be written.
pub fn write_eval_snapshot(dir: &Path, step: u64, base: &[f32]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("step-{step:08}.f32"));
    let mut bytes = Vec::with_capacity(base.len() * 4);
    for v in base {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Evaluates a file written by [`write_eval_snapshot`]: the held-out metrics of `workload`'s
/// model with those parameters (flat, in `layout` order).
///
/// # Errors
/// [`model::ModelError`] if the file cannot be read, its length is not `4 × layout.total`
/// bytes, or evaluation fails.
pub fn evaluate_snapshot(
    workload: &dyn Workload,
    layout: &ParamLayout,
    path: &Path,
) -> Result<Metrics, model::ModelError> {
    let bytes = std::fs::read(path).map_err(|source| model::ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() != layout.total * 4 {
        return Err(model::ModelError::LengthMismatch {
            what: "evaluation snapshot",
            expected: layout.total * 4,
            actual: bytes.len(),
        });
    }
    let base: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    crate::workload::evaluate(workload, layout, &base)
}
