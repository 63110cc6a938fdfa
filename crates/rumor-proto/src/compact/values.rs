//! [`CompactValues`]: a flat `f32` vector in the densest of its exact wire forms, and its
//! self-describing byte form for framings without serde.

use serde::{Deserialize, Serialize};

use super::error::CompactError;
use super::{dense, sparse};

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
    /// Only the nonzero values, each a 2- or 4-bit code times one scale per chunk of
    /// [`CHUNK`](super::CHUNK) values, at LEB128-coded positions (layout in `sparse.rs`).
    Sparse {
        /// Values in the vector, zeros included.
        len: u64,
        /// The chunks: header, scale, positions and codes of each.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

impl CompactValues {
    /// The densest exact form of `values`: sparse when it holds them and is smaller than the
    /// dense form, else int8 when every block is `k · 2^e` with `|k| ≤ 127`, else bf16 when
    /// every value's low 16 bits are zero, else `f32`. A pure function of the values' bits.
    pub fn encode(values: &[f32]) -> Self {
        let sparse = sparse::encode(values).map(|data| CompactValues::Sparse {
            len: values.len() as u64,
            data,
        });
        // No dense form is smaller than int8's: a sparse form below that wins outright.
        let int8_bytes = values.len() + values.len().div_ceil(super::BLOCK);
        match sparse {
            Some(s) if s.data_bytes() < int8_bytes => s,
            sparse => {
                let dense = Self::encode_dense(values);
                match sparse {
                    Some(s) if s.data_bytes() < dense.data_bytes() => s,
                    _ => dense,
                }
            }
        }
    }

    /// The densest of the dense forms: int8, bf16, or `f32`.
    fn encode_dense(values: &[f32]) -> Self {
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
    /// [`MAX_EXPONENT`](super::MAX_EXPONENT)] or a `k` of -128, or if the sparse form is
    /// malformed or declares more values than the limit in force
    /// ([`with_value_limit`](super::with_value_limit)).
    pub fn decode(&self) -> Result<Vec<f32>, CompactError> {
        match self {
            CompactValues::F32(bytes) => dense::decode_f32(bytes),
            CompactValues::Bf16(bytes) => dense::decode_bf16(bytes),
            CompactValues::Int8 { exponents, values } => dense::decode_int8(exponents, values),
            CompactValues::Sparse { len, data } => {
                let len = usize::try_from(*len).map_err(|_| CompactError::TooLong {
                    len: usize::MAX,
                    limit: super::MAX_SPARSE_VALUES,
                })?;
                sparse::decode(len, data)
            }
        }
    }

    /// Bytes of value data carried (exponents, scales and positions included).
    pub fn data_bytes(&self) -> usize {
        match self {
            CompactValues::F32(b) | CompactValues::Bf16(b) => b.len(),
            CompactValues::Int8 { exponents, values } => exponents.len() + values.len(),
            CompactValues::Sparse { data, .. } => data.len(),
        }
    }

    /// A self-describing byte form for framings that do not use serde: one format byte
    /// (0 = f32, 1 = bf16, 2 = int8, 3 = sparse) then the data (for int8 the block exponents,
    /// then the values; for sparse its value count as a little-endian `u64`, then its data).
    /// The value count travels outside, in the caller's header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.data_bytes());
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
            CompactValues::Sparse { len, data } => {
                out.push(3);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(data);
            }
        }
        out
    }

    /// Reads [`CompactValues::to_bytes`] output holding `count` values and decodes it.
    ///
    /// # Errors
    /// [`CompactError`] for an unknown format byte, a length that does not match `count`,
    /// out-of-range int8 data or malformed sparse data.
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
            3 => {
                let Some((len, data)) = data.split_first_chunk::<8>() else {
                    return Err(CompactError::Sparse("no value count".into()));
                };
                let len = u64::from_le_bytes(*len);
                if len != count as u64 {
                    return Err(CompactError::Range(format!(
                        "{len} values where {count} were announced"
                    )));
                }
                CompactValues::Sparse {
                    len,
                    data: data.to_vec(),
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
