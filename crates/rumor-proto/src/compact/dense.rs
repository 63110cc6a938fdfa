//! The dense value forms: int8 blocks with a power-of-two scale, bfloat16 and plain `f32`.
//!
//! Each form is exact for the vectors it accepts; [`encode_int8`] and [`encode_bf16`] say `None`
//! for any other vector, so [`super::CompactValues::encode`] can fall through to the next one.
//!
//! int8 format: for each block of [`BLOCK`] values (the last may be shorter) one exponent
//! `e ∈ [`[`MIN_EXPONENT`]`, `[`MAX_EXPONENT`]`]` and one `k ∈ [-127, 127]` per value; the value
//! is `k · 2^e`. A power-of-two scale makes every product exact in `f32`, so re-encoding a
//! decoded vector gives the same bytes back.

use super::error::CompactError;

/// Values per int8 block (one exponent byte each).
pub const BLOCK: usize = 256;
/// Smallest block exponent: `2^-126` is the smallest normal `f32`.
pub const MIN_EXPONENT: i32 = -126;
/// Largest block exponent: `127 · 2^120` is still finite.
pub const MAX_EXPONENT: i32 = 120;

/// Stored exponent byte = `e - EXPONENT_BIAS` as `i8`, so [-126, 120] fits in [-128, 127].
const EXPONENT_BIAS: i32 = -3;

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

/// The largest magnitude in `values` (NaN if any is NaN).
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
pub(super) fn round_bf16(v: f32) -> f32 {
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

/// Rounds one block to `k · 2^e` with the block's smallest fitting exponent; a block holding
/// NaN or ±∞ is left as it is.
pub(super) fn quantize_block_int8(block: &mut [f32]) {
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

/// The int8 form of `values` (block exponents, then the `k`s), or None unless every block is
/// exactly `k · 2^e` with `|k| ≤ 127`.
pub(super) fn encode_int8(values: &[f32]) -> Option<(Vec<u8>, Vec<u8>)> {
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
    Some((exponents, ks))
}

/// Decodes the int8 form.
///
/// # Errors
/// [`CompactError::Blocks`] for the wrong number of exponents, [`CompactError::Range`] for an
/// exponent outside [[`MIN_EXPONENT`], [`MAX_EXPONENT`]] or a `k` of -128.
pub(super) fn decode_int8(exponents: &[u8], values: &[u8]) -> Result<Vec<f32>, CompactError> {
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

/// The bf16 form of `values` (upper 16 bits, little-endian), or None unless every value's low
/// 16 bits are zero.
pub(super) fn encode_bf16(values: &[f32]) -> Option<Vec<u8>> {
    if !values.iter().all(|v| v.to_bits() & 0xFFFF == 0) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() * 2);
    for v in values {
        out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
    }
    Some(out)
}

/// Decodes the bf16 form.
///
/// # Errors
/// [`CompactError::Ragged`] for an odd number of bytes.
pub(super) fn decode_bf16(bytes: &[u8]) -> Result<Vec<f32>, CompactError> {
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

/// The `f32` form: every value little-endian.
pub(super) fn encode_f32(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes the `f32` form.
///
/// # Errors
/// [`CompactError::Ragged`] for a length that is not a multiple of 4.
pub(super) fn decode_f32(bytes: &[u8]) -> Result<Vec<f32>, CompactError> {
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
