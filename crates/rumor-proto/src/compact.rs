//! Delta compression: lossy quantization on the publishing peer, lossless compact encoding on
//! the wire.
//!
//! The two halves are kept apart so that compression never costs exactness:
//!
//! 1. The publishing peer **quantizes** its delta ([`Quantizer`]) to values that a compact
//!    format represents exactly (bf16, or int8 with a power-of-two scale per block of
//!    [`BLOCK`] values), applies the *quantized* delta to its own base, and carries what
//!    quantization left out into its next delta (error feedback: Seide et al., 2014, "1-bit
//!    stochastic gradient descent"; Karimireddy et al., 2019, "Error feedback fixes SignSGD").
//!    Every peer therefore adds the same bits, and nothing of the local progress is lost, only
//!    delayed by one publish.
//! 2. The wire **encodes** any `f32` vector losslessly in the densest of three formats that
//!    holds it bit for bit ([`CompactValues::encode`]): int8 blocks (≈ 1 byte per value), bf16
//!    (2 bytes), or plain `f32` (4 bytes). A quantized delta goes out as int8 or bf16; anything
//!    else (a NaN the receiver must see and refuse, an uncompressed delta) as `f32`.
//!
//! int8 format: for each block of [`BLOCK`] values (the last may be shorter) one exponent
//! `e ∈ [`[`MIN_EXPONENT`]`, `[`MAX_EXPONENT`]`]` and one `k ∈ [-127, 127]` per value; the value
//! is `k · 2^e`. A power-of-two scale makes every product exact in `f32`, so re-encoding a
//! decoded vector gives the same bytes back.

use serde::{Deserialize, Serialize};

/// Values per int8 block (one exponent byte each).
pub const BLOCK: usize = 256;
/// Smallest block exponent: `2^-126` is the smallest normal `f32`.
pub const MIN_EXPONENT: i32 = -126;
/// Largest block exponent: `127 · 2^120` is still finite.
pub const MAX_EXPONENT: i32 = 120;

/// How a publishing peer quantizes its deltas (`train.delta_compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Deltas go out as computed (4 bytes per parameter).
    #[default]
    None,
    /// Round each value to bfloat16 (2 bytes per parameter; 8 significant bits).
    Bf16,
    /// Blocks of [`BLOCK`] values share a power-of-two scale; each value is an integer in
    /// [-127, 127] times it (≈ 1 byte per parameter).
    Int8,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Bf16 => "bf16",
            Compression::Int8 => "int8",
        })
    }
}

/// `2^e` for `e` in [-126, 127], built from its bits (exact; `powi` is not for small `e`).
fn pow2(e: i32) -> f32 {
    debug_assert!((-126..=127).contains(&e));
    f32::from_bits(((e + 127) as u32) << 23)
}

/// The smallest exponent `e ≥ MIN_EXPONENT` with `max_abs ≤ 127 · 2^e`, or None when no
/// exponent up to [`MAX_EXPONENT`] fits (or `max_abs` is not finite).
fn block_exponent(max_abs: f32) -> Option<i32> {
    if !max_abs.is_finite() {
        return None;
    }
    if max_abs <= 127.0 * pow2(MIN_EXPONENT) {
        return Some(MIN_EXPONENT);
    }
    // A first guess from the logarithm, then corrected to the exact smallest fit.
    let mut e = ((max_abs / 127.0).log2().ceil() as i32).clamp(MIN_EXPONENT, MAX_EXPONENT);
    while e < MAX_EXPONENT && max_abs > 127.0 * pow2(e) {
        e += 1;
    }
    while e > MIN_EXPONENT && max_abs <= 127.0 * pow2(e - 1) {
        e -= 1;
    }
    (max_abs <= 127.0 * pow2(e)).then_some(e)
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| {
        if v.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(v.abs())
        }
    })
}

/// Rounds `v` to the nearest bfloat16 (ties to even); NaN and ±∞ pass unchanged.
fn round_bf16(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    let r = f32::from_bits(rounded);
    // Rounding up the largest finite values would overflow to infinity: truncate instead.
    if r.is_finite() {
        r
    } else {
        f32::from_bits(bits & 0xFFFF_0000)
    }
}

/// Quantization with error feedback, for one publishing peer.
///
/// [`Quantizer::quantize`] turns `delta + residual` into the nearest values of the compact
/// format and keeps the difference as the new residual, so the sum of everything published
/// tracks the sum of the exact deltas within one quantum per value.
#[derive(Clone, Debug, Default)]
pub struct Quantizer {
    compression: Compression,
    residual: Vec<f32>,
}

impl Quantizer {
    /// A quantizer for `compression` (with [`Compression::None`] it passes deltas through).
    pub fn new(compression: Compression) -> Self {
        Self {
            compression,
            residual: Vec::new(),
        }
    }

    /// The scheme in use.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// What quantization has left out so far and will add to the next delta (len 0 before the
    /// first call).
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// Quantizes `delta` in place: adds the carried residual, rounds to the format, and keeps
    /// the rounding error for the next call. Values of a block that holds NaN or ±∞ are left as
    /// they are (the receivers refuse such a delta) and carry no residual. A delta of another
    /// length than the last one starts from a zero residual.
    pub fn quantize(&mut self, delta: &mut [f32]) {
        if self.compression == Compression::None {
            return;
        }
        if self.residual.len() != delta.len() {
            self.residual = vec![0.0; delta.len()];
        }
        for (d, r) in delta.iter_mut().zip(&self.residual) {
            *d += *r;
        }
        let exact: Vec<f32> = delta.to_vec();
        match self.compression {
            Compression::None => {}
            Compression::Bf16 => delta.iter_mut().for_each(|v| *v = round_bf16(*v)),
            Compression::Int8 => {
                for block in delta.chunks_mut(BLOCK) {
                    quantize_block_int8(block);
                }
            }
        }
        for ((r, q), x) in self.residual.iter_mut().zip(delta.iter()).zip(&exact) {
            let left = x - q;
            *r = if left.is_finite() { left } else { 0.0 };
        }
    }
}

fn quantize_block_int8(block: &mut [f32]) {
    let Some(e) = block_exponent(max_abs(block)) else {
        return;
    };
    let (scale, inverse) = (pow2(e), pow2(-e));
    for v in block.iter_mut() {
        // Through i8 so a negative value that rounds to 0 gives +0.0, as decoding does.
        let k = (*v * inverse).round().clamp(-127.0, 127.0) as i8;
        *v = f32::from(k) * scale;
    }
}

/// A flat `f32` vector in its densest exact wire form (see the module docs). Decoding gives back
/// the encoded vector bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CompactValues {
    /// Little-endian `f32`s, 4 bytes each.
    F32(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The upper 16 bits of each `f32`, little-endian, 2 bytes each.
    Bf16(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One exponent per block of [`BLOCK`] values, then one signed byte per value.
    Int8 {
        /// Block exponents, `ceil(len / BLOCK)` of them, each in
        /// [[`MIN_EXPONENT`], [`MAX_EXPONENT`]].
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
        if let Some(c) = encode_int8(values) {
            return c;
        }
        if values.iter().all(|v| v.to_bits() & 0xFFFF == 0) {
            let mut out = Vec::with_capacity(values.len() * 2);
            for v in values {
                out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
            return CompactValues::Bf16(out);
        }
        let mut out = Vec::with_capacity(values.len() * 4);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        CompactValues::F32(out)
    }

    /// The `f32` values.
    ///
    /// # Errors
    /// [`CompactError`] if the data is ragged, has the wrong number of int8 block exponents, or
    /// holds an exponent outside [[`MIN_EXPONENT`], [`MAX_EXPONENT`]] or a `k` of -128.
    pub fn decode(&self) -> Result<Vec<f32>, CompactError> {
        match self {
            CompactValues::F32(bytes) => {
                if bytes.len() % 4 != 0 {
                    return Err(CompactError::Ragged {
                        format: "f32",
                        bytes: bytes.len(),
                    });
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
            CompactValues::Bf16(bytes) => {
                if bytes.len() % 2 != 0 {
                    return Err(CompactError::Ragged {
                        format: "bf16",
                        bytes: bytes.len(),
                    });
                }
                Ok(bytes
                    .chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                    .collect())
            }
            CompactValues::Int8 { exponents, values } => {
                let expected = values.len().div_ceil(BLOCK);
                if exponents.len() != expected {
                    return Err(CompactError::Blocks {
                        values: values.len(),
                        expected,
                        found: exponents.len(),
                    });
                }
                let mut out = Vec::with_capacity(values.len());
                for (block, &e) in values.chunks(BLOCK).zip(exponents) {
                    let e = i32::from(e as i8) + EXPONENT_BIAS;
                    if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&e) {
                        return Err(CompactError::Range(format!("block exponent {e}")));
                    }
                    let scale = pow2(e);
                    for &k in block {
                        let k = k as i8;
                        if k == i8::MIN {
                            return Err(CompactError::Range("value -128".into()));
                        }
                        out.push(f32::from(k) * scale);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Bytes of value data carried (exponents included).
    pub fn data_bytes(&self) -> usize {
        match self {
            CompactValues::F32(b) | CompactValues::Bf16(b) => b.len(),
            CompactValues::Int8 { exponents, values } => exponents.len() + values.len(),
        }
    }
}

impl CompactValues {
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
                let blocks = count.div_ceil(BLOCK);
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

/// Stored exponent byte = `e - EXPONENT_BIAS` as `i8`, so [-126, 120] fits in [-128, 127].
const EXPONENT_BIAS: i32 = -3;

fn encode_int8(values: &[f32]) -> Option<CompactValues> {
    let mut exponents = Vec::with_capacity(values.len().div_ceil(BLOCK));
    let mut ks = Vec::with_capacity(values.len());
    for block in values.chunks(BLOCK) {
        let e = block_exponent(max_abs(block))?;
        let (scale, inverse) = (pow2(e), pow2(-e));
        for &v in block {
            let k = v * inverse;
            if k.fract() != 0.0 || k.abs() > 127.0 {
                return None;
            }
            let k = k as i8;
            // Decoding gives `k · 2^e`; -0.0 (whose k is 0) would come back as +0.0.
            if (f32::from(k) * scale).to_bits() != v.to_bits() {
                return None;
            }
            ks.push(k as u8);
        }
        exponents.push(((e - EXPONENT_BIAS) as i8) as u8);
    }
    Some(CompactValues::Int8 {
        exponents,
        values: ks,
    })
}

/// Serde adapter for a delta's `Arc<[f32]>`: written as [`CompactValues`], read back to `f32`.
pub mod compact_serde {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::CompactValues;

    /// Writes `values` in their densest exact form.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(values: &Arc<[f32]>, s: S) -> Result<S::Ok, S::Error> {
        CompactValues::encode(values).serialize(s)
    }

    /// Reads compact values and decodes them.
    ///
    /// # Errors
    /// The deserializer's error, or a custom one carrying [`super::CompactError`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[f32]>, D::Error> {
        let compact = CompactValues::deserialize(d)?;
        compact
            .decode()
            .map(Arc::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(c: &CompactValues) -> &'static str {
        match c {
            CompactValues::F32(_) => "f32",
            CompactValues::Bf16(_) => "bf16",
            CompactValues::Int8 { .. } => "int8",
        }
    }

    #[test]
    fn int8_quantized_values_encode_as_int8_and_decode_bit_exact() {
        let mut q = Quantizer::new(Compression::Int8);
        let mut d: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.37).sin() * 1e-3)
            .collect();
        q.quantize(&mut d);
        let c = CompactValues::encode(&d);
        assert_eq!(kind(&c), "int8");
        assert_eq!(c.data_bytes(), 1000 + 4);
        let back = c.decode().unwrap();
        assert!(back.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits()));
        // Re-encoding what was decoded gives the same bytes.
        assert_eq!(CompactValues::encode(&back), c);
    }

    #[test]
    fn bf16_quantized_values_encode_as_bf16() {
        let mut q = Quantizer::new(Compression::Bf16);
        let mut d: Vec<f32> = (0..300).map(|i| (i as f32).cos() * 1e6 + 0.5).collect();
        q.quantize(&mut d);
        let c = CompactValues::encode(&d);
        assert_eq!(kind(&c), "bf16");
        let back = c.decode().unwrap();
        assert!(back.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn unquantized_values_and_nan_stay_f32_exactly() {
        let d = vec![0.1f32, -3.3, f32::NAN, 7e-20];
        let mut q = Quantizer::new(Compression::Int8);
        let mut quantized = d.clone();
        q.quantize(&mut quantized);
        // The block holds NaN: left as it is, so the receiver sees the NaN and refuses it.
        assert!(quantized[2].is_nan());
        assert_eq!(q.residual()[2], 0.0);
        let c = CompactValues::encode(&d);
        assert_eq!(kind(&c), "f32");
        let back = c.decode().unwrap();
        assert_eq!(back[0], 0.1);
        assert!(back[2].is_nan());
    }

    #[test]
    fn byte_form_round_trips_and_checks_the_count() {
        let mut q = Quantizer::new(Compression::Int8);
        let mut d: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 1e-4).collect();
        q.quantize(&mut d);
        for values in [d.clone(), vec![0.1, 0.2, 0.3]] {
            let bytes = CompactValues::encode(&values).to_bytes();
            let back = CompactValues::decode_bytes(&bytes, values.len()).unwrap();
            assert_eq!(back, values);
            assert!(CompactValues::decode_bytes(&bytes, values.len() + 1).is_err());
        }
        assert!(CompactValues::decode_bytes(&[], 0).is_err());
        assert!(CompactValues::decode_bytes(&[9, 0, 0, 0, 0], 1).is_err());
    }

    #[test]
    fn negative_zero_is_kept() {
        let c = CompactValues::encode(&[-0.0, 1.0]);
        let back = c.decode().unwrap();
        assert_eq!(back[0].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn malformed_compact_values_are_errors() {
        assert!(CompactValues::F32(vec![0; 5]).decode().is_err());
        assert!(CompactValues::Bf16(vec![0; 3]).decode().is_err());
        let blocks = CompactValues::Int8 {
            exponents: vec![0, 0],
            values: vec![1; 10],
        };
        assert!(matches!(blocks.decode(), Err(CompactError::Blocks { .. })));
        let range = CompactValues::Int8 {
            exponents: vec![127],
            values: vec![1; 10],
        };
        assert!(matches!(range.decode(), Err(CompactError::Range(_))));
        let k = CompactValues::Int8 {
            exponents: vec![0],
            values: vec![0x80],
        };
        assert!(matches!(k.decode(), Err(CompactError::Range(_))));
    }

    #[test]
    fn error_feedback_keeps_the_running_sum_within_one_quantum() {
        let mut q = Quantizer::new(Compression::Int8);
        let mut exact_sum = vec![0.0f64; 512];
        let mut sent_sum = vec![0.0f64; 512];
        for round in 0..50 {
            let d: Vec<f32> = (0..512)
                .map(|i| (((i * 7 + round * 13) % 101) as f32 - 50.0) * 1e-5)
                .collect();
            let mut sent = d.clone();
            q.quantize(&mut sent);
            for i in 0..512 {
                exact_sum[i] += f64::from(d[i]);
                sent_sum[i] += f64::from(sent[i]);
            }
        }
        for i in 0..512 {
            // What is still owed is exactly the residual (up to f32 rounding of the sums).
            let owed = exact_sum[i] - sent_sum[i];
            assert!(
                (owed - f64::from(q.residual()[i])).abs() < 1e-6,
                "value {i}"
            );
            assert!(q.residual()[i].abs() <= 5e-4 / 127.0 * 2.0, "value {i}");
        }
    }

    proptest! {
        #[test]
        fn any_vector_round_trips_bit_exact(values in proptest::collection::vec(any::<f32>(), 0..700)) {
            let c = CompactValues::encode(&values);
            let back = c.decode().unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in back.iter().zip(&values) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }

        #[test]
        fn quantized_vectors_encode_compactly(values in proptest::collection::vec(-1e3f32..1e3, 1..700), bf16 in any::<bool>()) {
            let scheme = if bf16 { Compression::Bf16 } else { Compression::Int8 };
            let mut q = Quantizer::new(scheme);
            let mut d = values.clone();
            q.quantize(&mut d);
            let c = CompactValues::encode(&d);
            let limit = if bf16 { 2 * d.len() } else { d.len() + d.len().div_ceil(BLOCK) };
            prop_assert!(c.data_bytes() <= limit, "{} bytes for {} values", c.data_bytes(), d.len());
            let back = c.decode().unwrap();
            for (a, b) in back.iter().zip(&d) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
