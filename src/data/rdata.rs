//! A reader, in Rust and without R, for R's serialization format and R's lazy-load databases.
//!
//! An installed R package keeps its data sets in a lazy-load database: `Rdata.rdx` is an index
//! (a serialized named list with components `variables`, `references` and `compressed`), and
//! `Rdata.rdb` holds one blob per object at the `(offset, length)` the index gives (in bytes).
//! With `compressed = TRUE` a blob is a 4-byte big-endian uncompressed length followed by a zlib
//! stream of the serialized object; with `compressed = 2` or `3` a type byte (`Z` zlib, `0`
//! stored, `2` bzip2, `X` xz) sits between the two; bzip2 and xz are not supported. The index is
//! the same kind of blob, or (as R writes it with `saveRDS`) a gzip file.
//!
//! The serialized stream (R's `serialize()`, formats 2 and 3, XDR only): `X\n`, then big-endian
//! `i32`s for the format version, the writing R version and the oldest R version that can read
//! it; version 3 adds the native encoding (an `i32` length and that many bytes). Then one item:
//! a flags word (type in bits 0–7, "is object" bit 8, "has attributes" bit 9, "has tag" bit 10,
//! the `levels` field from bit 12, which for strings holds the encoding) and the item's payload.
//! Attributes follow a vector's payload and come first in a pairlist cell. Symbols enter a
//! reference table that later `REFSXP` items point back into (1-based).
//!
//! Supported: `NULL`, symbols, pairlists and calls (with tags and attributes), strings (`NA`
//! included, in UTF-8, Latin-1 or ASCII), character, integer, logical, double, complex and raw
//! vectors, lists and expression vectors (long-vector lengths included), references, and the
//! singleton environments. Anything else (closures, environments, ALTREP objects, byte code) is
//! an error naming the type. Every length is checked against the bytes left before anything is
//! allocated, and nesting is limited to [`MAX_DEPTH`], so a malformed file gives an error, never
//! a huge allocation or a panic. Sources: R's `src/main/serialize.c` (format) and
//! `src/library/base/R/lazyload.R` (database layout).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::{GzDecoder, ZlibDecoder};

use super::DataError;

/// Deepest nesting of non-pairlist items (lists in lists, attributes of attributes) accepted.
pub const MAX_DEPTH: usize = 100;

/// Most bytes an index (`.rdx`) may decompress to: 64 MiB (a real index is a few hundred bytes).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// `NA` for R's integer and logical vectors (`NA_integer_`, `NA`).
pub const NA_INTEGER: i32 = i32::MIN;

// Serialized item types (SEXPTYPEs and the pseudo-types only used in streams).
const SYMSXP: u8 = 1;
const LISTSXP: u8 = 2;
const LANGSXP: u8 = 6;
const CHARSXP: u8 = 9;
const LGLSXP: u8 = 10;
const INTSXP: u8 = 13;
const REALSXP: u8 = 14;
const CPLXSXP: u8 = 15;
const STRSXP: u8 = 16;
const VECSXP: u8 = 19;
const EXPRSXP: u8 = 20;
const RAWSXP: u8 = 24;
const ALTREP_SXP: u8 = 238;
const BASEENV_SXP: u8 = 241;
const EMPTYENV_SXP: u8 = 242;
const BASENAMESPACE_SXP: u8 = 250;
const MISSINGARG_SXP: u8 = 251;
const UNBOUNDVALUE_SXP: u8 = 252;
const GLOBALENV_SXP: u8 = 253;
const NILVALUE_SXP: u8 = 254;
const REFSXP: u8 = 255;

// Bits of the flags word and of its `levels` field.
const HAS_ATTR: u32 = 1 << 9;
const HAS_TAG: u32 = 1 << 10;
const LATIN1_MASK: u32 = 1 << 2;

/// What is wrong with R data, with the byte offset into the (decompressed) stream where known.
#[derive(Debug, thiserror::Error)]
pub enum RDataError {
    /// The stream ends in the middle of an item.
    #[error("truncated at byte offset {offset}: need {needed} more bytes, {left} left")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
        /// Bytes left in the stream.
        left: usize,
    },

    /// The stream does not start with `X\n` (XDR); ASCII and native binary streams are not read.
    #[error("not an XDR serialization: starts with {found:?}, expected \"X\\n\"")]
    BadFormat {
        /// The first (up to) two bytes, lossily decoded.
        found: String,
    },

    /// The format version is neither 2 nor 3.
    #[error("serialization format version {version} is not supported (only 2 and 3)")]
    BadVersion {
        /// The version found.
        version: i32,
    },

    /// A length field is negative (other than the markers R uses) or does not fit in memory.
    #[error("invalid length {length} at byte offset {offset}")]
    BadLength {
        /// Where the length field starts.
        offset: usize,
        /// The value read.
        length: i64,
    },

    /// A length asks for more data than the stream has left.
    #[error(
        "length {length} at byte offset {offset} needs at least {needed} bytes but only {left} \
         are left"
    )]
    TooLong {
        /// Where the length field starts.
        offset: usize,
        /// The declared number of elements (or bytes).
        length: u64,
        /// The fewest bytes those elements can take.
        needed: u128,
        /// Bytes left in the stream after the length field.
        left: usize,
    },

    /// An ALTREP object (a compact or deferred representation) was met.
    #[error(
        "ALTREP object at byte offset {offset} is not supported (re-save the data with \
         ALTREP expanded, e.g. from R with `saveRDS(x[], ...)`)"
    )]
    Altrep {
        /// Where its flags word starts.
        offset: usize,
    },

    /// An item type this reader does not handle.
    #[error("unsupported R item type {sexptype} ({}) at byte offset {offset}", type_name(*.sexptype))]
    UnsupportedType {
        /// Where its flags word starts.
        offset: usize,
        /// The type code (low 8 bits of the flags word).
        sexptype: u8,
    },

    /// A reference points outside the reference table.
    #[error(
        "reference {index} at byte offset {offset} is out of range (the table holds {table_len})"
    )]
    BadReference {
        /// Where the reference's flags word starts.
        offset: usize,
        /// The 1-based index read.
        index: u32,
        /// Entries in the reference table at that point.
        table_len: usize,
    },

    /// Items nest deeper than [`MAX_DEPTH`].
    #[error("items nest deeper than {MAX_DEPTH} levels at byte offset {offset}")]
    TooDeep {
        /// Where the item that went too deep starts.
        offset: usize,
    },

    /// An item has the wrong shape for where it sits (a tag that is not a symbol, an attribute
    /// list that is not a pairlist, a pairlist that does not end in `NULL`).
    #[error("malformed item at byte offset {offset}: {reason}")]
    Malformed {
        /// Where the offending item starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// A string marked UTF-8 (or in a UTF-8 stream) holds invalid UTF-8.
    #[error("string at byte offset {offset} is not valid UTF-8 (first invalid byte at offset {invalid_at})")]
    NotUtf8 {
        /// Where the string's bytes start.
        offset: usize,
        /// Byte offset of the first invalid byte.
        invalid_at: usize,
    },

    /// The stream continues after its one item.
    #[error("{left} unexpected bytes after the item, from byte offset {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        left: usize,
    },

    /// A compressed blob is corrupt.
    #[error("corrupt compressed data")]
    Decompress(#[source] std::io::Error),

    /// A compressed blob inflates to a different size from the one its header declares.
    #[error("blob declares {declared} uncompressed bytes but holds {actual_desc}")]
    BlobLength {
        /// The length in the blob's 4-byte header.
        declared: u64,
        /// What was found, e.g. `12 bytes` or `more`.
        actual_desc: String,
    },

    /// A blob uses a compression this reader does not handle, or none it recognises.
    #[error("unsupported compression: {what}")]
    Compression {
        /// Which compression, or what the blob starts with.
        what: String,
    },

    /// The lazy-load index does not have the expected structure.
    #[error("bad lazy-load index: {reason}")]
    BadIndex {
        /// What is wrong.
        reason: String,
    },
}

/// A name for an item type code, for messages.
pub fn type_name(sexptype: u8) -> &'static str {
    match sexptype {
        0 => "NILSXP",
        SYMSXP => "SYMSXP (symbol)",
        LISTSXP => "LISTSXP (pairlist)",
        3 => "CLOSXP (closure)",
        4 => "ENVSXP (environment)",
        5 => "PROMSXP (promise)",
        LANGSXP => "LANGSXP (call)",
        7 => "SPECIALSXP",
        8 => "BUILTINSXP",
        CHARSXP => "CHARSXP (string)",
        LGLSXP => "LGLSXP (logical vector)",
        INTSXP => "INTSXP (integer vector)",
        REALSXP => "REALSXP (double vector)",
        CPLXSXP => "CPLXSXP (complex vector)",
        STRSXP => "STRSXP (character vector)",
        17 => "DOTSXP",
        VECSXP => "VECSXP (list)",
        EXPRSXP => "EXPRSXP (expression vector)",
        21 => "BCODESXP (byte code)",
        22 => "EXTPTRSXP (external pointer)",
        23 => "WEAKREFSXP (weak reference)",
        RAWSXP => "RAWSXP (raw vector)",
        25 => "OBJSXP (S4 object)",
        ALTREP_SXP => "ALTREP_SXP",
        239 => "ATTRLISTSXP",
        240 => "ATTRLANGSXP",
        BASEENV_SXP => "BASEENV_SXP",
        EMPTYENV_SXP => "EMPTYENV_SXP",
        243 => "BCREPREF",
        244 => "BCREPDEF",
        245 => "GENERICREFSXP",
        246 => "CLASSREFSXP",
        247 => "PERSISTSXP",
        248 => "PACKAGESXP",
        249 => "NAMESPACESXP",
        BASENAMESPACE_SXP => "BASENAMESPACE_SXP",
        MISSINGARG_SXP => "MISSINGARG_SXP",
        UNBOUNDVALUE_SXP => "UNBOUNDVALUE_SXP",
        GLOBALENV_SXP => "GLOBALENV_SXP",
        NILVALUE_SXP => "NILVALUE_SXP (NULL)",
        REFSXP => "REFSXP (reference)",
        _ => "unknown",
    }
}

/// An R value read from a serialized stream, with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct RObject {
    /// The value itself.
    pub value: RValue,
    /// Attributes in stream order as (name, value), e.g. `("names", <character vector>)`. For a
    /// pairlist these are the attributes of its first cell (those of later cells are dropped).
    pub attributes: Vec<(String, RObject)>,
}

/// The payload of an [`RObject`]. Integer and logical vectors keep R's `NA` as [`NA_INTEGER`];
/// double vectors keep R's `NA` as the NaN bit pattern R uses.
#[derive(Clone, Debug, PartialEq)]
pub enum RValue {
    /// `NULL`.
    Null,
    /// A symbol (a name), e.g. the tag of a list element.
    Symbol(String),
    /// A single string (a bare `CHARSXP`); `None` is `NA_character_`.
    Char(Option<String>),
    /// A pairlist: (tag, value) per cell, in order.
    Pairlist(Vec<(Option<String>, RObject)>),
    /// A call: (tag, value) per cell, the function first.
    Language(Vec<(Option<String>, RObject)>),
    /// A logical vector: 0 false, 1 true, [`NA_INTEGER`] NA.
    Logical(Vec<i32>),
    /// An integer vector.
    Integer(Vec<i32>),
    /// A double vector.
    Real(Vec<f64>),
    /// A complex vector as (real, imaginary) pairs.
    Complex(Vec<(f64, f64)>),
    /// A character vector; `None` is `NA_character_`.
    Strings(Vec<Option<String>>),
    /// A list (generic vector).
    List(Vec<RObject>),
    /// An expression vector.
    Expression(Vec<RObject>),
    /// A raw (byte) vector.
    Raw(Vec<u8>),
    /// One of R's singletons that has no payload: `globalenv`, `baseenv`, `emptyenv`,
    /// `basenamespace`, `unbound` or `missingarg`.
    Singleton(&'static str),
}

impl RObject {
    fn plain(value: RValue) -> Self {
        RObject {
            value,
            attributes: Vec::new(),
        }
    }

    /// The attribute called `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&RObject> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The `names` attribute as strings (`None` for an `NA` name), if there is one and it is a
    /// character vector.
    pub fn names(&self) -> Option<&[Option<String>]> {
        match self.attribute("names").map(|a| &a.value) {
            Some(RValue::Strings(names)) => Some(names),
            _ => None,
        }
    }

    /// A short description of the type, e.g. `character vector of length 3`, for messages.
    pub fn describe(&self) -> String {
        let (what, len) = match &self.value {
            RValue::Null => return "NULL".to_string(),
            RValue::Symbol(s) => return format!("the symbol `{s}`"),
            RValue::Char(_) => return "a bare string".to_string(),
            RValue::Singleton(s) => return format!("the singleton {s}"),
            RValue::Pairlist(v) => ("pairlist", v.len()),
            RValue::Language(v) => ("call", v.len()),
            RValue::Logical(v) => ("logical vector", v.len()),
            RValue::Integer(v) => ("integer vector", v.len()),
            RValue::Real(v) => ("double vector", v.len()),
            RValue::Complex(v) => ("complex vector", v.len()),
            RValue::Strings(v) => ("character vector", v.len()),
            RValue::List(v) => ("list", v.len()),
            RValue::Expression(v) => ("expression vector", v.len()),
            RValue::Raw(v) => ("raw vector", v.len()),
        };
        format!("a {what} of length {len}")
    }
}

/// Reads one serialized R object (`serialize()` output, XDR format 2 or 3) that fills `bytes`.
///
/// Errors: any [`RDataError`]: a bad header, an unsupported type (ALTREP included), a length that
/// exceeds the bytes left, truncation, or bytes left over after the object.
pub fn unserialize(bytes: &[u8]) -> Result<RObject, RDataError> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        refs: Vec::new(),
        depth: 0,
        native_latin1: false,
    };
    let format = reader.take(2)?;
    if format != b"X\n" {
        return Err(RDataError::BadFormat {
            found: String::from_utf8_lossy(format).into_owned(),
        });
    }
    let version = reader.int()?;
    let _writer_version = reader.int()?;
    let _min_reader_version = reader.int()?;
    match version {
        2 => {}
        3 => {
            let at = reader.pos;
            let len = reader.int()?;
            let len = usize::try_from(len).map_err(|_| RDataError::BadLength {
                offset: at,
                length: i64::from(len),
            })?;
            let encoding = reader.take(len)?;
            let encoding = String::from_utf8_lossy(encoding).to_ascii_lowercase();
            reader.native_latin1 = matches!(
                encoding.as_str(),
                "latin1" | "iso-8859-1" | "iso8859-1" | "cp1252"
            );
        }
        _ => return Err(RDataError::BadVersion { version }),
    }
    let object = reader.item()?;
    if reader.pos != bytes.len() {
        return Err(RDataError::TrailingBytes {
            offset: reader.pos,
            left: bytes.len() - reader.pos,
        });
    }
    Ok(object)
}

/// A cursor over a serialized stream plus the reference table.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Symbols, in the order read; `REFSXP` indices are 1-based into this.
    refs: Vec<RObject>,
    /// Current nesting of [`Reader::item`] calls.
    depth: usize,
    /// Whether strings in the native encoding are Latin-1 (else UTF-8 is assumed).
    native_latin1: bool,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RDataError> {
        if n > self.left() {
            return Err(RDataError::Truncated {
                offset: self.pos,
                needed: n,
                left: self.left(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RDataError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A flags word (a bit field, so unsigned).
    fn word(&mut self) -> Result<u32, RDataError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn int(&mut self) -> Result<i32, RDataError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn real(&mut self) -> Result<f64, RDataError> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// A vector length (R's `ReadLENGTH`: an `i32`, or `-1` then two `u32` halves), checked to
    /// leave room for `length × min_bytes` bytes.
    fn length(&mut self, min_bytes: u128) -> Result<usize, RDataError> {
        let offset = self.pos;
        let short = self.int()?;
        let length: u64 = match short {
            -1 => {
                let upper = u64::from(u32::from_be_bytes(self.array()?));
                let lower = u64::from(u32::from_be_bytes(self.array()?));
                (upper << 32) | lower
            }
            n if n >= 0 => n.unsigned_abs().into(),
            n => {
                return Err(RDataError::BadLength {
                    offset,
                    length: i64::from(n),
                })
            }
        };
        let needed = u128::from(length) * min_bytes;
        if needed > self.left() as u128 {
            return Err(RDataError::TooLong {
                offset,
                length,
                needed,
                left: self.left(),
            });
        }
        usize::try_from(length).map_err(|_| RDataError::BadLength {
            offset,
            length: i64::try_from(length).unwrap_or(i64::MAX),
        })
    }

    /// Reads one item (flags word and payload).
    fn item(&mut self) -> Result<RObject, RDataError> {
        let offset = self.pos;
        if self.depth >= MAX_DEPTH {
            return Err(RDataError::TooDeep { offset });
        }
        self.depth += 1;
        let flags = self.word()?;
        let out = self.item_with_flags(flags, offset);
        self.depth -= 1;
        out
    }

    fn item_with_flags(&mut self, flags: u32, offset: usize) -> Result<RObject, RDataError> {
        let sexptype = (flags & 0xff) as u8;
        let levels = flags >> 12;
        let has_attr = flags & HAS_ATTR != 0;
        let singleton = |name| Ok(RObject::plain(RValue::Singleton(name)));
        let value = match sexptype {
            NILVALUE_SXP => return Ok(RObject::plain(RValue::Null)),
            GLOBALENV_SXP => return singleton("globalenv"),
            BASEENV_SXP => return singleton("baseenv"),
            EMPTYENV_SXP => return singleton("emptyenv"),
            BASENAMESPACE_SXP => return singleton("basenamespace"),
            UNBOUNDVALUE_SXP => return singleton("unbound"),
            MISSINGARG_SXP => return singleton("missingarg"),
            REFSXP => {
                let packed = flags >> 8;
                let index = if packed == 0 { self.word()? } else { packed };
                let slot = (index as usize).checked_sub(1);
                return match slot.and_then(|i| self.refs.get(i)) {
                    Some(object) => Ok(object.clone()),
                    None => Err(RDataError::BadReference {
                        offset,
                        index,
                        table_len: self.refs.len(),
                    }),
                };
            }
            ALTREP_SXP => return Err(RDataError::Altrep { offset }),
            SYMSXP => {
                let name = self.item()?;
                let name = match name.value {
                    RValue::Char(Some(s)) => s,
                    RValue::Char(None) => "NA".to_string(),
                    other => {
                        return Err(RDataError::Malformed {
                            offset,
                            reason: format!(
                                "a symbol's name must be a string, found {}",
                                RObject::plain(other).describe()
                            ),
                        })
                    }
                };
                let symbol = RObject::plain(RValue::Symbol(name));
                self.refs.push(symbol.clone());
                return Ok(symbol);
            }
            LISTSXP | LANGSXP => return self.pairlist(flags),
            CHARSXP => {
                let value = RValue::Char(self.string(levels)?);
                if has_attr {
                    // Old streams may carry attributes on strings; R reads and ignores them.
                    self.item()?;
                }
                return Ok(RObject::plain(value));
            }
            LGLSXP => {
                let n = self.length(4)?;
                RValue::Logical((0..n).map(|_| self.int()).collect::<Result<_, _>>()?)
            }
            INTSXP => {
                let n = self.length(4)?;
                RValue::Integer((0..n).map(|_| self.int()).collect::<Result<_, _>>()?)
            }
            REALSXP => {
                let n = self.length(8)?;
                RValue::Real((0..n).map(|_| self.real()).collect::<Result<_, _>>()?)
            }
            CPLXSXP => {
                let n = self.length(16)?;
                RValue::Complex(
                    (0..n)
                        .map(|_| Ok((self.real()?, self.real()?)))
                        .collect::<Result<_, RDataError>>()?,
                )
            }
            STRSXP => {
                // Each element is at least a flags word and a length.
                let n = self.length(8)?;
                let mut strings = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = self.pos;
                    match self.item()?.value {
                        RValue::Char(s) => strings.push(s),
                        other => {
                            return Err(RDataError::Malformed {
                                offset: at,
                                reason: format!(
                                    "a character vector element must be a string, found {}",
                                    RObject::plain(other).describe()
                                ),
                            })
                        }
                    }
                }
                RValue::Strings(strings)
            }
            VECSXP | EXPRSXP => {
                let n = self.length(4)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item()?);
                }
                if sexptype == VECSXP {
                    RValue::List(items)
                } else {
                    RValue::Expression(items)
                }
            }
            RAWSXP => {
                let n = self.length(1)?;
                RValue::Raw(self.take(n)?.to_vec())
            }
            _ => return Err(RDataError::UnsupportedType { offset, sexptype }),
        };
        let attributes = if has_attr {
            self.attributes()?
        } else {
            Vec::new()
        };
        Ok(RObject { value, attributes })
    }

    /// The payload of a `CHARSXP`: a length (`-1` for `NA`) and that many bytes, decoded by the
    /// encoding bits in `levels`.
    fn string(&mut self, levels: u32) -> Result<Option<String>, RDataError> {
        let offset = self.pos;
        let length = self.int()?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| RDataError::BadLength {
            offset,
            length: i64::from(length),
        })?;
        let start = self.pos;
        let bytes = self.take(length)?;
        let latin1 = levels & LATIN1_MASK != 0
            || (self.native_latin1 && levels & (1 << 3 | 1 << 6) == 0 && !bytes.is_ascii());
        if latin1 {
            return Ok(Some(bytes.iter().map(|&b| char::from(b)).collect()));
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(e) => Err(RDataError::NotUtf8 {
                offset: start,
                invalid_at: start + e.valid_up_to(),
            }),
        }
    }

    /// An attribute pairlist: every cell must have a symbol tag.
    fn attributes(&mut self) -> Result<Vec<(String, RObject)>, RDataError> {
        let offset = self.pos;
        let list = self.item()?;
        match list.value {
            RValue::Pairlist(cells) => cells
                .into_iter()
                .map(|(tag, value)| match tag {
                    Some(name) => Ok((name, value)),
                    None => Err(RDataError::Malformed {
                        offset,
                        reason: "an attribute without a name".to_string(),
                    }),
                })
                .collect(),
            RValue::Null => Ok(Vec::new()),
            other => Err(RDataError::Malformed {
                offset,
                reason: format!(
                    "attributes must be a pairlist, found {}",
                    RObject::plain(other).describe()
                ),
            }),
        }
    }

    /// A pairlist or call, read cell by cell (not recursing on the tail, so long lists are
    /// fine): each cell is [attributes] [tag] value, then the next cell's flags or the end.
    fn pairlist(&mut self, mut flags: u32) -> Result<RObject, RDataError> {
        let is_call = (flags & 0xff) as u8 == LANGSXP;
        let mut cells = Vec::new();
        let mut attributes = Vec::new();
        loop {
            let cell_attributes = if flags & HAS_ATTR != 0 {
                self.attributes()?
            } else {
                Vec::new()
            };
            if cells.is_empty() {
                attributes = cell_attributes;
            }
            let tag = if flags & HAS_TAG != 0 {
                let at = self.pos;
                match self.item()?.value {
                    RValue::Symbol(name) => Some(name),
                    RValue::Null => None,
                    other => {
                        return Err(RDataError::Malformed {
                            offset: at,
                            reason: format!(
                                "a pairlist tag must be a symbol, found {}",
                                RObject::plain(other).describe()
                            ),
                        })
                    }
                }
            } else {
                None
            };
            let value = self.item()?;
            cells.push((tag, value));
            let next = self.pos;
            flags = self.word()?;
            let next_type = (flags & 0xff) as u8;
            if next_type == LISTSXP || next_type == LANGSXP {
                continue;
            }
            let end = self.item_with_flags(flags, next)?;
            if end.value != RValue::Null {
                return Err(RDataError::Malformed {
                    offset: next,
                    reason: format!(
                        "a pairlist must end in NULL, found {} (dotted pairs are not supported)",
                        end.describe()
                    ),
                });
            }
            break;
        }
        let value = if is_call {
            RValue::Language(cells)
        } else {
            RValue::Pairlist(cells)
        };
        Ok(RObject { value, attributes })
    }
}

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

#[cfg(test)]
mod tests;
