//! R's lazy-load databases: the index (`.rdx`), and blobs in the database file (`.rdb`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::{GzDecoder, ZlibDecoder};

use super::{unserialize, RDataError, RObject, RValue, NA_INTEGER};
use crate::data::DataError;

/// Most bytes an index (`.rdx`) may decompress to: 64 MiB (a real index is a few hundred bytes).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Inflates a lazy-load blob: a 4-byte big-endian uncompressed length, then (for
/// `compressed == 2` or `3`) a type byte, then the compressed bytes. `compressed` is the index's
/// `compressed` component: 0 (the blob is the serialized bytes as is), 1 (zlib), 2 or 3 (type
/// byte: `Z` zlib, `0` stored; bzip2 and xz are not supported).
///
/// Errors: [`RDataError::Truncated`] for a blob shorter than its header,
/// [`RDataError::Decompress`] for a corrupt zlib stream, [`RDataError::BlobLength`] when the
/// stream inflates to a size other than the declared one, [`RDataError::Compression`] for
/// bzip2/xz or an unknown type byte or `compressed` value.
pub fn inflate_blob(blob: &[u8], compressed: i32) -> Result<Vec<u8>, RDataError> {
    if compressed == 0 {
        return Ok(blob.to_vec());
    }
    let header = blob.get(..4).ok_or(RDataError::Truncated {
        offset: 0,
        needed: 4,
        left: blob.len(),
    })?;
    let declared = u64::from(u32::from_be_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let body = match compressed {
        1 => &blob[4..],
        2 | 3 => {
            let kind = blob.get(4).copied().ok_or(RDataError::Truncated {
                offset: 4,
                needed: 1,
                left: 0,
            })?;
            match kind {
                b'Z' => &blob[5..],
                b'0' => {
                    let stored = &blob[5..];
                    if stored.len() as u64 != declared {
                        return Err(RDataError::BlobLength {
                            declared,
                            actual_desc: format!("{} bytes", stored.len()),
                        });
                    }
                    return Ok(stored.to_vec());
                }
                b'2' => {
                    return Err(RDataError::Compression {
                        what: "bzip2 (type byte '2')".to_string(),
                    })
                }
                b'X' => {
                    return Err(RDataError::Compression {
                        what: "xz (type byte 'X')".to_string(),
                    })
                }
                other => {
                    return Err(RDataError::Compression {
                        what: format!("unknown type byte 0x{other:02x}"),
                    })
                }
            }
        }
        other => {
            return Err(RDataError::Compression {
                what: format!("the index says compressed = {other}"),
            })
        }
    };
    read_limited(ZlibDecoder::new(body), declared)
}

/// Reads exactly `declared` bytes from `reader`, failing if it yields fewer or more.
fn read_limited(reader: impl Read, declared: u64) -> Result<Vec<u8>, RDataError> {
    let mut out = Vec::new();
    reader
        .take(declared.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(RDataError::Decompress)?;
    if out.len() as u64 != declared {
        let actual_desc = if out.len() as u64 > declared {
            "more".to_string()
        } else {
            format!("{} bytes", out.len())
        };
        return Err(RDataError::BlobLength {
            declared,
            actual_desc,
        });
    }
    Ok(out)
}

/// Decompresses an index file: gzip (what R's `saveRDS` writes), a length-prefixed zlib blob,
/// or an uncompressed stream.
fn inflate_index(bytes: &[u8]) -> Result<Vec<u8>, RDataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes)
            .take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(RDataError::Decompress)?;
        if out.len() as u64 > MAX_INDEX_BYTES {
            return Err(RDataError::BadIndex {
                reason: format!("inflates to more than {MAX_INDEX_BYTES} bytes"),
            });
        }
        return Ok(out);
    }
    if bytes.starts_with(b"X\n") {
        return Ok(bytes.to_vec());
    }
    if bytes.get(4) == Some(&0x78) {
        return inflate_blob(bytes, 1);
    }
    let what = if bytes.starts_with(b"BZh") {
        "bzip2".to_string()
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz".to_string()
    } else {
        let head: Vec<String> = bytes.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("unrecognised index file starting with {}", head.join(" "))
    };
    Err(RDataError::Compression { what })
}

/// An opened lazy-load database: the parsed index of `BASE.rdx`, read from `BASE.rdb` on demand.
#[derive(Clone, Debug)]
pub struct LazyLoadDb {
    /// The index file (`BASE.rdx`).
    pub rdx: PathBuf,
    /// The database file (`BASE.rdb`).
    pub rdb: PathBuf,
    /// (object name, byte offset, byte length in `rdb`), in index order.
    pub variables: Vec<(String, u64, u64)>,
    /// The index's `compressed` component (see [`inflate_blob`]).
    pub compressed: i32,
}

impl LazyLoadDb {
    /// Reads and parses `dir/BASE.rdx`; `BASE.rdb` is only opened by [`LazyLoadDb::get`].
    ///
    /// Errors: [`DataError::Io`] if the index cannot be read, [`DataError::RData`] (naming the
    /// `.rdx` path) if it is malformed or lacks `variables` or `compressed`.
    pub fn open(dir: &Path, base: &str) -> Result<Self, DataError> {
        let rdx = dir.join(format!("{base}.rdx"));
        let rdb = dir.join(format!("{base}.rdb"));
        let bytes = std::fs::read(&rdx).map_err(crate::fsutil::at(&rdx))?;
        let bad = |source| DataError::RData {
            path: rdx.clone(),
            what: "the index".to_string(),
            source,
        };
        let index = inflate_index(&bytes)
            .and_then(|raw| unserialize(&raw))
            .map_err(bad)?;
        let (variables, compressed) = parse_index(&index).map_err(bad)?;
        Ok(LazyLoadDb {
            rdx,
            rdb,
            variables,
            compressed,
        })
    }

    /// The object names in index order.
    pub fn names(&self) -> Vec<String> {
        self.variables.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Reads the object called `name` from the `.rdb` file.
    ///
    /// Errors: [`DataError::RObjectMissing`] if the index does not list it, [`DataError::Io`] if
    /// the `.rdb` cannot be read or is shorter than the index says, [`DataError::RData`] (naming
    /// the `.rdb` and the object) if its blob is malformed.
    pub fn get(&self, name: &str) -> Result<RObject, DataError> {
        let Some(&(_, offset, length)) = self.variables.iter().find(|(n, _, _)| n == name) else {
            return Err(DataError::RObjectMissing {
                path: self.rdx.clone(),
                name: name.to_string(),
                available: self.names(),
            });
        };
        let at = crate::fsutil::at(&self.rdb);
        let mut file = File::open(&self.rdb).map_err(at)?;
        let file_len = file.metadata().map_err(at)?.len();
        let bad = |source| DataError::RData {
            path: self.rdb.clone(),
            what: format!("object {name} at byte offset {offset}"),
            source,
        };
        if offset.checked_add(length).is_none_or(|end| end > file_len) {
            return Err(bad(RDataError::BadIndex {
                reason: format!(
                    "the index places it at bytes {offset}..{} but the file has {file_len}",
                    offset.saturating_add(length)
                ),
            }));
        }
        file.seek(SeekFrom::Start(offset)).map_err(at)?;
        let mut blob = Vec::new();
        file.take(length).read_to_end(&mut blob).map_err(at)?;
        inflate_blob(&blob, self.compressed)
            .and_then(|raw| unserialize(&raw))
            .map_err(bad)
    }
}

/// Pulls `variables` (name → (offset, length)) and `compressed` out of a parsed index.
#[allow(clippy::type_complexity)]
fn parse_index(index: &RObject) -> Result<(Vec<(String, u64, u64)>, i32), RDataError> {
    let bad = |reason: String| RDataError::BadIndex { reason };
    let component = |name: &str| -> Result<&RObject, RDataError> {
        let RValue::List(items) = &index.value else {
            return Err(bad(format!("expected a list, found {}", index.describe())));
        };
        let names = index
            .names()
            .ok_or_else(|| bad("the index list has no names".to_string()))?;
        names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .and_then(|i| items.get(i))
            .ok_or_else(|| bad(format!("no `{name}` component")))
    };
    let variables = component("variables")?;
    let compressed = match &component("compressed")?.value {
        RValue::Logical(v) | RValue::Integer(v) if v.len() == 1 && v[0] != NA_INTEGER => v[0],
        RValue::Real(v) if v.len() == 1 && v[0].fract() == 0.0 && v[0].abs() < 16.0 => v[0] as i32,
        _ => {
            return Err(bad(format!(
                "`compressed` must be one logical or number, found {}",
                component("compressed")?.describe()
            )))
        }
    };
    let RValue::List(entries) = &variables.value else {
        return Err(bad(format!(
            "`variables` must be a list, found {}",
            variables.describe()
        )));
    };
    let names = match variables.names() {
        Some(names) => names,
        None if entries.is_empty() => &[],
        None => return Err(bad("`variables` has no names".to_string())),
    };
    if names.len() != entries.len() {
        return Err(bad(format!(
            "`variables` has {} names for {} entries",
            names.len(),
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (name, entry) in names.iter().zip(entries) {
        let name = name
            .clone()
            .ok_or_else(|| bad("an NA name in `variables`".to_string()))?;
        let pair: Option<(f64, f64)> = match &entry.value {
            RValue::Integer(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Some((f64::from(v[0]), f64::from(v[1])))
            }
            RValue::Real(v) if v.len() == 2 => Some((v[0], v[1])),
            _ => None,
        };
        let valid = |x: f64| x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53);
        match pair {
            Some((offset, length)) if valid(offset) && valid(length) => {
                out.push((name, offset as u64, length as u64));
            }
            _ => {
                return Err(bad(format!(
                    "entry `{name}` must be two non-negative whole numbers (offset, length), \
                     found {}",
                    entry.describe()
                )))
            }
        }
    }
    Ok((out, compressed))
}
