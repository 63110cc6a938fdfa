//! Checkpoints of a peer's `base`: a safetensors file plus a JSON sidecar.
//!
//! Layout in the checkpoint directory:
//!
//! - `base-<checksum>.safetensors`: one `f32` tensor per [`ParamEntry`](super::ParamEntry), under
//!   its name and with its shape, written by candle's own safetensors support. `<checksum>` is
//!   the file's FNV-1a 64 in 16 hex digits, so two different contents never share a name.
//! - `checkpoint.json`: `{"format_version": 2, "model": {"kind": .., "config": ..},
//!   "layout": {"entries": [{name, shape, offset, len}..], "total": N}, "param_count": N,
//!   "tensors_file": "base-<checksum>.safetensors", "checksum": {"fnv1a64": "<16 hex digits>"},
//!   "state": <caller's JSON>}`. The checksum covers the exact bytes of the tensor file the
//!   sidecar names; `state` carries the version vector and whatever else the caller needs to
//!   resume. Format 1 (earlier builds) had `"spec": "<MLP widths>"` instead of `model` and
//!   `layout`, and is still read as an MLP; a format-1 sidecar without `tensors_file` names
//!   [`TENSORS_FILE`], `base.safetensors`.
//!
//! Durability: the sidecar is the commit point. A save writes the new tensor file under its new
//! name (temp file, fsync, rename, fsync of the directory), then the new sidecar the same way,
//! and only then deletes the tensor files no sidecar names any more and leftover temp files.
//! Until the sidecar's rename the old sidecar still names the old, untouched tensor file; after
//! it the new sidecar names the new, already durable one. A write killed at any moment therefore
//! leaves either the previous or the new checkpoint loadable, never a mix (the integration test
//! `killed_checkpoint_writer_leaves_a_loadable_checkpoint` kills a writer 20 times to check).
//! FNV-1a detects accidental corruption, not tampering; the data dir is trusted.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{ModelCard, ModelError, ModelSpec, ParamLayout};

/// File name of the tensor file in the layout of earlier builds, whose sidecar has no
/// `tensors_file`; still read, never written.
pub const TENSORS_FILE: &str = "base.safetensors";
/// Prefix of the tensor files this build writes (`base-<checksum>.safetensors`).
pub const TENSORS_PREFIX: &str = "base";
/// Suffix of every tensor file.
pub const TENSORS_SUFFIX: &str = ".safetensors";
/// File name of the JSON sidecar inside a checkpoint directory.
pub const SIDECAR_FILE: &str = "checkpoint.json";
/// The sidecar format this code writes (it also reads format 1, MLP-only).
pub const FORMAT_VERSION: u32 = 2;

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
    /// Format 1 only: the MLP's widths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<ModelSpec>,
    /// Format 2: the model's kind and configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<ModelCard>,
    /// Format 2: the tensors' names and shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<ParamLayout>,
    param_count: usize,
    /// The tensor file this sidecar commits to; absent in the old layout ([`TENSORS_FILE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tensors_file: Option<String>,
    checksum: Checksum,
    state: serde_json::Value,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| crate::fsutil::at(path)(source).into()
}

/// Writes `bytes` to `dir/name` atomically ([`crate::fsutil::write_atomic`]).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ModelError> {
    Ok(crate::fsutil::write_atomic(&dir.join(name), bytes)?)
}

/// Serialises `params` as safetensors bytes, one tensor per layout entry.
fn safetensors_bytes(
    dir: &Path,
    layout: &ParamLayout,
    params: &[f32],
) -> Result<Vec<u8>, ModelError> {
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

/// Saves a checkpoint of `params` (flat, in `layout` order) of the model `card` with caller
/// `state` into `dir`
/// (which must exist): the tensor file `dir/base-<checksum>.safetensors`, then the sidecar
/// `dir/checkpoint.json` naming it, each via temp file, fsync, rename and an fsync of `dir`;
/// then stale tensor and temp files are removed. See the module docs for the format and why a
/// save killed at any moment leaves a loadable checkpoint.
///
/// # Errors
/// [`ModelError::LengthMismatch`] if `params.len()` is not `layout.total`; [`ModelError::Io`] naming the file or directory on any I/O failure
/// (e.g. a full disk: the `source` is `StorageFull`); [`ModelError::Candle`] if serialisation
/// fails; [`ModelError::EncodeSidecar`] if the state does not serialise. On any error the
/// previous checkpoint stays loadable. Failing to remove a stale file is
/// not an error (the next save retries).
pub fn save_checkpoint(
    dir: &Path,
    card: &ModelCard,
    layout: &ParamLayout,
    params: &[f32],
    state: &serde_json::Value,
) -> Result<(), ModelError> {
    let bytes = safetensors_bytes(dir, layout, params)?;
    let checksum = format!("{:016x}", fnv1a64(&bytes));
    let tensors_file = format!("{TENSORS_PREFIX}-{checksum}{TENSORS_SUFFIX}");
    let sidecar = Sidecar {
        format_version: FORMAT_VERSION,
        spec: None,
        model: Some(card.clone()),
        layout: Some(layout.clone()),
        param_count: params.len(),
        tensors_file: Some(tensors_file.clone()),
        checksum: Checksum { fnv1a64: checksum },
        state: state.clone(),
    };
    let json = serde_json::to_vec_pretty(&sidecar).map_err(ModelError::EncodeSidecar)?;
    let sync_dir = || {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    };
    write_atomically(dir, &tensors_file, &bytes)?;
    sync_dir()?;
    // The commit point: from here on the new checkpoint is the one that loads.
    write_atomically(dir, SIDECAR_FILE, &json)?;
    sync_dir()?;
    remove_stale(dir, &tensors_file);
    Ok(())
}

/// Removes tensor files other than `keep` and temp files left by killed saves. Best effort.
fn remove_stale(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_tensors =
            name.starts_with(TENSORS_PREFIX) && name.ends_with(TENSORS_SUFFIX) && name != keep;
        let temp = name.starts_with(".base") || name.starts_with(&format!(".{SIDECAR_FILE}."));
        if stale_tensors || temp {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` may be a tensor file named by a sidecar: a plain file name in the checkpoint
/// directory, `base*.safetensors`.
fn valid_tensors_name(name: &str) -> bool {
    name.starts_with(TENSORS_PREFIX)
        && name.ends_with(TENSORS_SUFFIX)
        && !name.contains(['/', '\\'])
        && !name.contains("..")
}

/// The files that make up the checkpoint in `dir` as far as they exist: the sidecar and every
/// tensor file (named by the sidecar or not), for moving a corrupt checkpoint aside.
///
/// # Errors
/// [`ModelError::Io`] if `dir` cannot be listed.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == SIDECAR_FILE || valid_tensors_name(name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Moves every file of the checkpoint in `dir` (see [`checkpoint_files`]) aside by appending
/// `.corrupt-<unix_seconds>` to its name, so that the next save starts clean and the bad files
/// stay for inspection. Returns the new paths.
///
/// # Errors
/// [`ModelError::Io`] naming the file that could not be renamed (the earlier ones stay moved).
pub fn quarantine_checkpoint(dir: &Path, unix_seconds: u64) -> Result<Vec<PathBuf>, ModelError> {
    let mut moved = Vec::new();
    for path in checkpoint_files(dir)? {
        let mut target = path.clone().into_os_string();
        target.push(format!(".corrupt-{unix_seconds}"));
        let target = PathBuf::from(target);
        std::fs::rename(&path, &target).map_err(io_err(&path))?;
        moved.push(target);
    }
    if !moved.is_empty() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(moved)
}

/// The tensor file the sidecar in `dir` names (for tools and tests).
///
/// # Errors
/// As [`load_checkpoint`] for the sidecar.
pub fn tensors_path(dir: &Path) -> Result<PathBuf, ModelError> {
    let sidecar_path = dir.join(SIDECAR_FILE);
    let sidecar = read_sidecar(&sidecar_path)?;
    sidecar_tensors_path(dir, &sidecar_path, &sidecar)
}

fn read_sidecar(sidecar_path: &Path) -> Result<Sidecar, ModelError> {
    let json = std::fs::read(sidecar_path).map_err(io_err(sidecar_path))?;
    serde_json::from_slice(&json).map_err(|source| ModelError::Sidecar {
        path: sidecar_path.to_path_buf(),
        source,
    })
}

fn sidecar_tensors_path(
    dir: &Path,
    sidecar_path: &Path,
    sidecar: &Sidecar,
) -> Result<PathBuf, ModelError> {
    match &sidecar.tensors_file {
        None => Ok(dir.join(TENSORS_FILE)),
        Some(name) if valid_tensors_name(name) => Ok(dir.join(name)),
        Some(name) => Err(ModelError::CheckpointFormat {
            path: sidecar_path.to_path_buf(),
            reason: format!("tensors_file {name:?} is not a base*.safetensors file name"),
        }),
    }
}

/// A checkpoint as loaded: the model, its parameters and the caller's state.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model's kind and configuration.
    pub card: ModelCard,
    /// The tensors' names and shapes, in flat order.
    pub layout: ParamLayout,
    /// The parameters, flat in `layout` order.
    pub params: Vec<f32>,
    /// The caller's state, as saved.
    pub state: serde_json::Value,
}

/// Loads the checkpoint in `dir` and verifies it: sidecar format version, the model and layout
/// it names (a format-1 MLP spec is converted), checksum of the tensor file the sidecar names
/// (or `base.safetensors` in the old layout), and that the tensor file holds exactly the
/// layout's tensors with their shapes as `f32`.
///
/// # Errors
/// All name the file at fault: [`ModelError::Io`] if a file is missing or unreadable;
/// [`ModelError::Sidecar`] for malformed (e.g. truncated) JSON; [`ModelError::InvalidSpec`];
/// [`ModelError::ChecksumMismatch`] for a corrupt tensor file; [`ModelError::Safetensors`] if it
/// does not decode; [`ModelError::CheckpointFormat`] for a wrong version, missing, extra or
/// misshapen tensor.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint, ModelError> {
    let sidecar_path = dir.join(SIDECAR_FILE);
    let format_err = |path: &PathBuf, reason: String| ModelError::CheckpointFormat {
        path: path.clone(),
        reason,
    };

    let sidecar = read_sidecar(&sidecar_path)?;
    let tensors_path = sidecar_tensors_path(dir, &sidecar_path, &sidecar)?;
    let (card, layout) = match (sidecar.format_version, &sidecar.spec, &sidecar.model) {
        (1, Some(spec), _) => {
            spec.validate()?;
            (ModelCard::mlp(spec), spec.layout())
        }
        (FORMAT_VERSION, _, Some(card)) => match &sidecar.layout {
            Some(layout) => {
                check_layout(&sidecar_path, layout)?;
                (card.clone(), layout.clone())
            }
            None => return Err(format_err(&sidecar_path, "no layout".into())),
        },
        (1 | FORMAT_VERSION, _, _) => {
            return Err(format_err(&sidecar_path, "no model description".into()))
        }
        (other, _, _) => {
            return Err(format_err(
                &sidecar_path,
                format!("format_version {other} (this build reads 1 and {FORMAT_VERSION})"),
            ))
        }
    };
    let spec = &card;
    if sidecar.param_count != layout.total {
        return Err(format_err(
            &sidecar_path,
            format!(
                "param_count {} but model {spec} has {}",
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
                "holds tensors {names:?}, model {spec} needs {:?}",
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
                    "tensor {} is {:?} {:?}, model {spec} needs f32 {:?}",
                    e.name,
                    t.dtype(),
                    t.dims(),
                    e.shape
                ),
            ));
        }
        params.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(Checkpoint {
        card,
        layout,
        params,
        state: sidecar.state,
    })
}

/// A layout read from a file must be what [`ParamLayout`] promises: contiguous entries, each
/// `len` the product of its shape, `total` their sum, names unique and sorted.
fn check_layout(path: &Path, layout: &ParamLayout) -> Result<(), ModelError> {
    let mut offset = 0usize;
    let mut previous: Option<&str> = None;
    for e in &layout.entries {
        let len = e
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let sorted = previous.is_none_or(|p| p < e.name.as_str());
        if e.offset != offset || len != Some(e.len) || !sorted {
            return Err(ModelError::CheckpointFormat {
                path: path.to_path_buf(),
                reason: format!("layout entry {} is not consistent", e.name),
            });
        }
        offset = offset.saturating_add(e.len);
        previous = Some(e.name.as_str());
    }
    if offset != layout.total {
        return Err(ModelError::CheckpointFormat {
            path: path.to_path_buf(),
            reason: format!("layout total {} but entries hold {offset}", layout.total),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Deterministic parameters of the default MLP (values do not matter here).
    fn params_of(spec: &ModelSpec, seed: u64) -> Vec<f32> {
        (0..spec.param_count())
            .map(|i| ((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    fn save_spec(
        dir: &Path,
        spec: &ModelSpec,
        params: &[f32],
        state: &serde_json::Value,
    ) -> Result<(), ModelError> {
        save_checkpoint(dir, &ModelCard::mlp(spec), &spec.layout(), params, state)
    }

    fn save_default(dir: &Path) -> Result<(ModelSpec, Vec<f32>, serde_json::Value), ModelError> {
        let spec = ModelSpec::default();
        let params = params_of(&spec, 11);
        let state = json!({"version": 3, "applied": {"peer-a": [1, 2, 3]}});
        save_spec(dir, &spec, &params, &state)?;
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
        let loaded = load_checkpoint(dir.path())?;
        assert_eq!(loaded.card, ModelCard::mlp(&spec));
        assert_eq!(loaded.layout, spec.layout());
        assert_eq!(loaded.params, params);
        assert_eq!(loaded.state, state);
        // Saving again over an existing checkpoint replaces it, and leaves no temp files.
        let params3: Vec<f32> = params.iter().map(|x| x * 2.0).collect();
        save_spec(dir.path(), &spec, &params3, &json!(null))?;
        let Checkpoint {
            params: params4,
            state: state4,
            ..
        } = load_checkpoint(dir.path())?;
        assert_eq!(params4, params3);
        assert_eq!(state4, json!(null));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let tensors = tensors_path(dir.path())?;
        let tensors = tensors.file_name().ok_or("no name")?.to_string_lossy();
        assert_eq!(names, [tensors.as_ref(), SIDECAR_FILE]);
        Ok(())
    }

    #[test]
    fn flipped_byte_in_tensors_is_a_checksum_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        let path = tensors_path(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        let i = bytes.len() - 100;
        bytes[i] ^= 0x40;
        std::fs::write(&path, &bytes)?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::ChecksumMismatch { path: p, .. }) if *p == path),
            "{err:?}"
        );
        let name = path
            .file_name()
            .ok_or("no name")?
            .to_string_lossy()
            .into_owned();
        assert!(format!("{}", err.ok_or("no error")?).contains(&name));
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
        let tensors = tensors_path(dir.path())?;
        std::fs::remove_file(&tensors)?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::Io { path, .. }) if *path == tensors),
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
        let other: ModelSpec = "784-64-10".parse()?;
        v["layout"] = serde_json::to_value(other.layout())?;
        v["param_count"] = json!(other.param_count());
        std::fs::write(&path, serde_json::to_vec(&v)?)?;
        let tensors = tensors_path(dir.path())?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::CheckpointFormat { path, .. }) if *path == tensors),
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
        let err = save_spec(dir.path(), &spec, &[0.0; 3], &json!({})).err();
        assert!(
            matches!(err, Some(ModelError::LengthMismatch { .. })),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn save_interrupted_before_the_sidecar_leaves_the_previous_checkpoint() -> TestResult {
        // A save killed after its tensor file's rename: the new tensor file and temp leftovers
        // sit beside the old sidecar, which still names the old, intact tensor file.
        let dir = tempfile::tempdir()?;
        let (_, params, state) = save_default(dir.path())?;
        std::fs::write(dir.path().join("base-00000000deadbeef.safetensors"), b"new")?;
        std::fs::write(dir.path().join(".base.scratch.abc"), b"partial")?;
        std::fs::write(dir.path().join(".checkpoint.json.xyz.tmp"), b"{")?;
        let loaded = load_checkpoint(dir.path())?;
        assert_eq!(loaded.params, params);
        assert_eq!(loaded.state, state);
        // The next save removes the leftovers.
        save_default(dir.path())?;
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 2);
        Ok(())
    }

    #[test]
    fn old_layout_without_tensors_file_still_loads() -> TestResult {
        // Format 1: an MLP spec instead of a model card and layout, and no tensors_file.
        let dir = tempfile::tempdir()?;
        let (spec, params, _) = save_default(dir.path())?;
        std::fs::rename(tensors_path(dir.path())?, dir.path().join(TENSORS_FILE))?;
        let sidecar = dir.path().join(SIDECAR_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar)?)?;
        let map = v.as_object_mut().ok_or("not an object")?;
        map.remove("tensors_file");
        map.remove("model");
        map.remove("layout");
        map.insert("format_version".into(), json!(1));
        map.insert("spec".into(), serde_json::to_value(&spec)?);
        std::fs::write(&sidecar, serde_json::to_vec(&v)?)?;
        assert_eq!(load_checkpoint(dir.path())?.card, ModelCard::mlp(&spec));
        assert_eq!(load_checkpoint(dir.path())?.params, params);
        // A save in the new layout replaces it and removes the old tensor file.
        save_default(dir.path())?;
        assert!(!dir.path().join(TENSORS_FILE).exists());
        assert_eq!(load_checkpoint(dir.path())?.params, params);
        Ok(())
    }

    #[test]
    fn sidecar_naming_a_path_outside_the_dir_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        let sidecar = dir.path().join(SIDECAR_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar)?)?;
        v["tensors_file"] = json!("base/../../etc.safetensors");
        std::fs::write(&sidecar, serde_json::to_vec(&v)?)?;
        let err = load_checkpoint(dir.path()).err();
        assert!(
            matches!(&err, Some(ModelError::CheckpointFormat { path, .. }) if *path == sidecar),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn quarantine_moves_every_checkpoint_file_aside() -> TestResult {
        let dir = tempfile::tempdir()?;
        save_default(dir.path())?;
        std::fs::write(dir.path().join("peer_id"), b"x")?;
        let moved = quarantine_checkpoint(dir.path(), 1234)?;
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(moved
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".corrupt-1234")));
        assert!(checkpoint_files(dir.path())?.is_empty());
        assert!(dir.path().join("peer_id").exists());
        assert!(matches!(
            load_checkpoint(dir.path()),
            Err(ModelError::Io { .. })
        ));
        Ok(())
    }
}
