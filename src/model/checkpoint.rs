//! Checkpoints of a peer's `base`: a safetensors file plus a JSON sidecar.
//!
//! Layout in the checkpoint directory:
//!
//! - `base.safetensors`: one `f32` tensor per [`ParamEntry`](super::ParamEntry), under its name
//!   and with its shape, written by candle's own safetensors support.
//! - `checkpoint.json`: `{"format_version": 1, "spec": {..}, "param_count": N,
//!   "checksum": {"fnv1a64": "<16 hex digits>"}, "state": <caller's JSON>}`. The checksum covers
//!   the exact bytes of `base.safetensors`; `state` carries the version vector and whatever else
//!   the caller needs to resume.
//!
//! Durability: each file is written to a fresh temp file in the same directory, fsync'd and
//! renamed over its final name; after both renames the directory is fsync'd. The tensor file is
//! renamed first. A crash between the two renames leaves a new tensor file beside the old sidecar;
//! [`load_checkpoint`] then reports [`ModelError::ChecksumMismatch`] rather than loading a mixed
//! state. FNV-1a detects accidental corruption, not tampering; the data dir is trusted.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{ModelError, ModelSpec};

/// File name of the tensor file inside a checkpoint directory.
pub const TENSORS_FILE: &str = "base.safetensors";
/// File name of the JSON sidecar inside a checkpoint directory.
pub const SIDECAR_FILE: &str = "checkpoint.json";
/// The sidecar format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// 64-bit FNV-1a hash of `bytes` (Fowler, Noll and Vo; offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3, as in the IETF draft "The FNV Non-Cryptographic Hash Algorithm").
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Serialize, Deserialize)]
struct Checksum {
    fnv1a64: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    format_version: u32,
    spec: ModelSpec,
    param_count: usize,
    checksum: Checksum,
    state: serde_json::Value,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to a temp file in `dir`, fsyncs it and renames it to `dir/name`.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ModelError> {
    let final_path = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes).map_err(io_err(&tmp_path))?;
    tmp.as_file().sync_all().map_err(io_err(&tmp_path))?;
    tmp.persist(&final_path)
        .map_err(|e| io_err(&final_path)(e.error))?;
    Ok(())
}

/// Serialises `params` as safetensors bytes, one tensor per layout entry.
fn safetensors_bytes(dir: &Path, spec: &ModelSpec, params: &[f32]) -> Result<Vec<u8>, ModelError> {
    let layout = spec.layout();
    layout.check_len("checkpoint params", params)?;
    let mut tensors = HashMap::with_capacity(layout.entries.len());
    for e in &layout.entries {
        let t = Tensor::from_slice(&params[e.range()], e.shape.as_slice(), &Device::Cpu)?;
        tensors.insert(e.name.clone(), t);
    }
    // candle serialises to a path only; write to a scratch temp file in `dir`, read it back.
    let scratch = tempfile::Builder::new()
        .prefix(".base.scratch.")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    candle_core::safetensors::save(&tensors, scratch.path())?;
    std::fs::read(scratch.path()).map_err(io_err(scratch.path()))
}

/// Saves a checkpoint of `params` (flat, `spec.layout()` order) with caller `state` into `dir`
/// (which must exist): `dir/base.safetensors` and `dir/checkpoint.json`, each via temp file,
/// fsync and rename, then an fsync of `dir`. See the module docs for the format.
///
/// # Errors
/// [`ModelError::InvalidSpec`]; [`ModelError::LengthMismatch`] if `params.len()` is not
/// `spec.param_count()`; [`ModelError::Io`] naming the file or directory on any I/O failure;
/// [`ModelError::Candle`] if serialisation fails. The previous checkpoint stays in place unless
/// the error came after the first rename (see the module docs).
pub fn save_checkpoint(
    dir: &Path,
    spec: &ModelSpec,
    params: &[f32],
    state: &serde_json::Value,
) -> Result<(), ModelError> {
    spec.validate()?;
    let bytes = safetensors_bytes(dir, spec, params)?;
    let sidecar = Sidecar {
        format_version: FORMAT_VERSION,
        spec: spec.clone(),
        param_count: params.len(),
        checksum: Checksum {
            fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
        },
        state: state.clone(),
    };
    let sidecar_path = dir.join(SIDECAR_FILE);
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|source| ModelError::Sidecar {
        path: sidecar_path.clone(),
        source,
    })?;
    write_atomically(dir, TENSORS_FILE, &bytes)?;
    write_atomically(dir, SIDECAR_FILE, &json)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Loads the checkpoint in `dir` and verifies it: sidecar format version, spec validity,
/// checksum of the tensor file, and that the tensor file holds exactly the spec's tensors with
/// their shapes as `f32`. Returns `(spec, flat params in layout order, state)`.
///
/// # Errors
/// All name the file at fault: [`ModelError::Io`] if a file is missing or unreadable;
/// [`ModelError::Sidecar`] for malformed (e.g. truncated) JSON; [`ModelError::InvalidSpec`];
/// [`ModelError::ChecksumMismatch`] for a corrupt tensor file; [`ModelError::Safetensors`] if it
/// does not decode; [`ModelError::CheckpointFormat`] for a wrong version, missing, extra or
/// misshapen tensor.
pub fn load_checkpoint(dir: &Path) -> Result<(ModelSpec, Vec<f32>, serde_json::Value), ModelError> {
    let sidecar_path = dir.join(SIDECAR_FILE);
    let tensors_path = dir.join(TENSORS_FILE);
    let format_err = |path: &PathBuf, reason: String| ModelError::CheckpointFormat {
        path: path.clone(),
        reason,
    };

    let json = std::fs::read(&sidecar_path).map_err(io_err(&sidecar_path))?;
    let sidecar: Sidecar = serde_json::from_slice(&json).map_err(|source| ModelError::Sidecar {
        path: sidecar_path.clone(),
        source,
    })?;
    if sidecar.format_version != FORMAT_VERSION {
        return Err(format_err(
            &sidecar_path,
            format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                sidecar.format_version
            ),
        ));
    }
    let spec = sidecar.spec;
    spec.validate()?;
    let layout = spec.layout();
    if sidecar.param_count != layout.total {
        return Err(format_err(
            &sidecar_path,
            format!(
                "param_count {} but spec {spec} has {}",
                sidecar.param_count, layout.total
            ),
        ));
    }

    let bytes = std::fs::read(&tensors_path).map_err(io_err(&tensors_path))?;
    let actual = format!("{:016x}", fnv1a64(&bytes));
    if !actual.eq_ignore_ascii_case(&sidecar.checksum.fnv1a64) {
        return Err(ModelError::ChecksumMismatch {
            path: tensors_path,
            expected: sidecar.checksum.fnv1a64,
            actual,
        });
    }
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|source| {
            ModelError::Safetensors {
                path: tensors_path.clone(),
                source,
            }
        })?;
    if tensors.len() != layout.entries.len() {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        return Err(format_err(
            &tensors_path,
            format!(
                "holds tensors {names:?}, spec {spec} needs {:?}",
                layout.entries.iter().map(|e| &e.name).collect::<Vec<_>>()
            ),
        ));
    }
    let mut params = Vec::with_capacity(layout.total);
    for e in &layout.entries {
        let t = tensors
            .get(&e.name)
            .ok_or_else(|| format_err(&tensors_path, format!("tensor {} missing", e.name)))?;
        if t.dims() != e.shape.as_slice() || t.dtype() != DType::F32 {
            return Err(format_err(
                &tensors_path,
                format!(
                    "tensor {} is {:?} {:?}, spec {spec} needs f32 {:?}",
                    e.name,
                    t.dtype(),
                    t.dims(),
                    e.shape
                ),
            ));
        }
        params.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((spec, params, sidecar.state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::init_params;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn save_default(dir: &Path) -> Result<(ModelSpec, Vec<f32>, serde_json::Value), ModelError> {
        let spec = ModelSpec::default();
        let params = init_params(&spec, 11);
        let state = json!({"version": 3, "applied": {"peer-a": [1, 2, 3]}});
        save_checkpoint(dir, &spec, &params, &state)?;
        Ok((spec, params, state))
    }

    #[test]
    fn fnv1a64_known_values() {
        // Reference values from the FNV specification's test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn checkpoint_round_trip() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (spec, params, state) = save_default(dir.path())?;
        let (spec2, params2, state2) = load_checkpoint(dir.path())?;
        assert_eq!(spec2, spec);
        assert_eq!(params2, params);
        assert_eq!(state2, state);
        // Saving again over an existing checkpoint replaces it, and leaves no temp files.
        let params3: Vec<f32> = params.iter().map(|x| x * 2.0).collect();
        save_checkpoint(dir.path(), &spec, &params3, &json!(null))?;
        let (_, params4, state4) = load_checkpoint(dir.path())?;
        assert_eq!(params4, params3);
        assert_eq!(state4, json!(null));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(names, [TENSORS_FILE, SIDECAR_FILE]);
        Ok(())
    }

    #[test]
    fn flipped_byte_in_tensors_is_a_checksum_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        let path = dir.path().join(TENSORS_FILE);
        let mut bytes = std::fs::read(&path)?;
        let i = bytes.len() - 100;
        bytes[i] ^= 0x40;
        std::fs::write(&path, &bytes)?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::ChecksumMismatch { path: p, .. }) if *p == path),
            "{err:?}"
        );
        assert!(format!("{}", err.ok_or("no error")?).contains(TENSORS_FILE));
        Ok(())
    }

    #[test]
    fn truncated_sidecar_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        let path = dir.path().join(SIDECAR_FILE);
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 2])?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::Sidecar { path: p, .. }) if *p == path),
            "{err:?}"
        );
        assert!(format!("{}", err.ok_or("no error")?).contains(SIDECAR_FILE));
        Ok(())
    }

    #[test]
    fn missing_files_are_io_errors_naming_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::Io { path, .. }) if path.ends_with(SIDECAR_FILE)),
            "{err:?}"
        );
        save_default(dir.path())?;
        std::fs::remove_file(dir.path().join(TENSORS_FILE))?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::Io { path, .. }) if path.ends_with(TENSORS_FILE)),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn sidecar_spec_disagreeing_with_tensors_is_an_error() -> TestResult {
        // The checksum still matches, but the sidecar claims another model.
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        let path = dir.path().join(SIDECAR_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        v["spec"]["hidden"] = json!([64]);
        v["param_count"] = json!("784-64-10".parse::<ModelSpec>()?.param_count());
        std::fs::write(&path, serde_json::to_vec(&v)?)?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::CheckpointFormat { path, .. }) if path.ends_with(TENSORS_FILE)),
            "{err:?}"
        );
        // An unknown format version is refused.
        v["format_version"] = json!(99);
        std::fs::write(&path, serde_json::to_vec(&v)?)?;
        assert!(matches!(
            load_checkpoint(dir.path()),
            Err(ModelError::CheckpointFormat { .. })
        ));
        Ok(())
    }

    #[test]
    fn save_rejects_wrong_length() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spec = ModelSpec::default();
        let err = save_checkpoint(dir.path(), &spec, &[0.0; 3], &json!({})).err();
        assert!(
            matches!(err, Some(ModelError::LengthMismatch { .. })),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }
}
