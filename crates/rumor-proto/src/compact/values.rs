//! [`CompactValues`]: a flat `f32` vector in the densest of its exact wire forms, and its
//! self-describing byte form for framings without serde.

use serde::{Deserialize, Serialize};

use super::dense;

/// A flat `f32` vector in its densest exact wire form (see the module docs). Decoding gives back
/// the encoded vector bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CompactValues {
    /// Little-endian `f32`s, 4 bytes each.
    F32(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The upper 16 bits of each `f32`, little-endian, 2 bytes each.
    Bf16(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One exponent per block of [`BLOCK`](super::BLOCK) values, then one signed byte per
    /// value.
    Int8 {
        /// Block exponents, `ceil(len / BLOCK)` of them, each in
        /// [[`MIN_EXPONENT`](super::MIN_EXPONENT), [`MAX_EXPONENT`](super::MAX_EXPONENT)].
        #[serde(with = "serde_bytes")]
        exponents: Vec<u8>,
        /// The `k` of every value, as `i8` bytes, each in [-127, 127].
        #[serde(with = "serde_bytes")]
        values: Vec<u8>,
    },
}

/// Why compact values could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    /// A byte string's length is not a multiple of its value size.
    #[error("{format} data of {bytes} bytes is not a whole number of values")]
    Ragged {
        /// `f32` or `bf16`.
        format: &'static str,
        /// Length of the data (bytes).
        bytes: usize,
    },
    /// The int8 form has the wrong number of block exponents.
    #[error("int8 data with {values} values needs {expected} block exponents, found {found}")]
    Blocks {
        /// Values carried.
        values: usize,
        /// Exponents expected (`ceil(values / BLOCK)`).
        expected: usize,
        /// Exponents found.
        found: usize,
    },
    /// A block exponent or a value is out of range.
    #[error("int8 data out of range: {0}")]
    Range(String),
}

impl CompactValues {
    /// The densest exact form of `values`: int8 when every block is `k · 2^e` with
    /// `|k| ≤ 127`, else bf16 when every value's low 16 bits are zero, else `f32`.
    pub fn encode(values: &[f32]) -> Self {
        if let Some((exponents, values)) = dense::encode_int8(values) {
            return CompactValues::Int8 { exponents, values };
        }
        if let Some(bytes) = dense::encode_bf16(values) {
            return CompactValues::Bf16(bytes);
        }
        CompactValues::F32(dense::encode_f32(values))
    }

    /// The `f32` values.
    ///
    /// # Errors
    /// [`CompactError`] if the data is ragged, has the wrong number of int8 block exponents, or
    /// holds an exponent outside [[`MIN_EXPONENT`](super::MIN_EXPONENT),
    /// [`MAX_EXPONENT`](super::MAX_EXPONENT)] or a `k` of -128.
    pub fn decode(&self) -> Result<Vec<f32>, CompactError> {
        match self {
            CompactValues::F32(bytes) => dense::decode_f32(bytes),
            CompactValues::Bf16(bytes) => dense::decode_bf16(bytes),
            CompactValues::Int8 { exponents, values } => dense::decode_int8(exponents, values),
        }
    }

    /// Bytes of value data carried (exponents included).
    pub fn data_bytes(&self) -> usize {
        match self {
            CompactValues::F32(b) | CompactValues::Bf16(b) => b.len(),
            CompactValues::Int8 { exponents, values } => exponents.len() + values.len(),
        }
    }

    /// A self-describing byte form for framings that do not use serde: one format byte
    /// (0 = f32, 1 = bf16, 2 = int8) then the data (for int8 the block exponents, then the
    /// values). The value count travels outside, in the caller's header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.data_bytes());
        match self {
            CompactValues::F32(b) => {
                out.push(0);
                out.extend_from_slice(b);
            }
            CompactValues::Bf16(b) => {
                out.push(1);
                out.extend_from_slice(b);
            }
            CompactValues::Int8 { exponents, values } => {
                out.push(2);
                out.extend_from_slice(exponents);
                out.extend_from_slice(values);
            }
        }
        out
    }

    /// Reads [`CompactValues::to_bytes`] output holding `count` values and decodes it.
    ///
    /// # Errors
    /// [`CompactError`] for an unknown format byte, a length that does not match `count`, or
    /// out-of-range int8 data.
    pub fn decode_bytes(bytes: &[u8], count: usize) -> Result<Vec<f32>, CompactError> {
        let Some((&format, data)) = bytes.split_first() else {
            return Err(CompactError::Range("no format byte".into()));
        };
        let compact = match format {
            0 => CompactValues::F32(data.to_vec()),
            1 => CompactValues::Bf16(data.to_vec()),
            2 => {
                let blocks = count.div_ceil(super::BLOCK);
                if data.len() != blocks + count {
                    return Err(CompactError::Blocks {
                        values: count,
                        expected: blocks,
                        found: data.len().saturating_sub(count),
                    });
                }
                CompactValues::Int8 {
                    exponents: data[..blocks].to_vec(),
                    values: data[blocks..].to_vec(),
                }
            }
            other => return Err(CompactError::Range(format!("format byte {other}"))),
        };
        let values = compact.decode()?;
        if values.len() != count {
            return Err(CompactError::Range(format!(
                "{} values where {count} were announced",
                values.len()
            )));
        }
        Ok(values)
    }
}
