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

mod error;
mod lazyload;

pub use error::{type_name, RDataError};
pub use lazyload::{inflate_blob, LazyLoadDb};

/// Deepest nesting of non-pairlist items (lists in lists, attributes of attributes) accepted.
pub const MAX_DEPTH: usize = 100;

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
const UTF8_MASK: u32 = 1 << 3;
const ASCII_MASK: u32 = 1 << 6;

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
            || (self.native_latin1 && levels & (UTF8_MASK | ASCII_MASK) == 0 && !bytes.is_ascii());
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

#[cfg(test)]
mod tests;
