//! The sparse wire form: only the nonzero values, each a low-bit code times a scale per chunk.
//!
//! It holds exactly the vectors whose nonzero values are, in each chunk of [`CHUNK`], `±c · s`
//! for one scale `s > 0` and integers `c ∈ 1..=8` — what the top-k quantizer
//! ([`super::topk`]) publishes. [`encode`] recovers `s` and the codes from the values alone
//! and checks that decoding gives every value back bit for bit (a `-0.0`, NaN or ±∞ never
//! does), so the form stays lossless and a pure function of the values.
//!
//! Layout of `data`, for each chunk in order (`ceil(len / CHUNK)` of them, the last may be
//! shorter):
//!
//! - header: LEB128 `count << 1 | wide`, `count` ≤ the chunk's length the values sent;
//!   `wide` = 4-bit codes, else 2-bit. An empty chunk is the header `0` alone.
//! - scale: `s` as a little-endian `f32`, finite and > 0.
//! - positions: `count` LEB128 numbers: the first value's offset in the chunk, then for each
//!   next one its distance from the previous minus one (so positions increase by
//!   construction), every position below the chunk's length.
//! - codes: `count` codes of 2 or 4 bits, least significant bits first, padded with zero bits
//!   to a whole byte. A code is `sign << (bits-1) | (c - 1)`; the value is `c · s`, negated
//!   when `sign` is set.
//!
//! Decoding allocates the declared `len` values only, and only after checking that `len` is
//! within the decoder's limit ([`with_value_limit`]) and that `data` holds at least one byte
//! per chunk.

use std::cell::Cell;

use super::error::CompactError;
use super::topk::CHUNK;

/// Most values a sparse vector may declare wherever no smaller limit is in force: as many as
/// the largest int8 frame (`wire::ABSOLUTE_MAX_BODY`, 256 MiB) could carry; the wire module
/// asserts the two agree.
pub const MAX_SPARSE_VALUES: usize = 256 * 1024 * 1024;

/// Largest code magnitude of a 4-bit code.
const MAX_CODE: f32 = 8.0;

thread_local! {
    /// The limit [`decode`] applies on this thread (see [`with_value_limit`]).
    static VALUE_LIMIT: Cell<usize> = const { Cell::new(MAX_SPARSE_VALUES) };
}

/// Runs `f` with sparse vectors decoded on this thread limited to `limit` values (at most
/// [`MAX_SPARSE_VALUES`]). A dense vector costs at least a byte per value, so a frame of `n`
/// bytes cannot make its reader allocate more than `n` values; the wire decoder passes its
/// body limit here so that a sparse vector, which costs far less per value, cannot either.
pub fn with_value_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    /// Puts the previous limit back, also when `f` unwinds.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            VALUE_LIMIT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(VALUE_LIMIT.with(|l| l.replace(limit.min(MAX_SPARSE_VALUES))));
    f()
}

/// The sparse form of `values` (the `data` of the layout above), or None when some chunk's
/// nonzero values are not `±c · s` with `c ≤ 8` (or hold `-0.0`, NaN or ±∞).
pub(super) fn encode(values: &[f32]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut entries: Vec<(u32, f32)> = Vec::new();
    for chunk in values.chunks(CHUNK) {
        entries.clear();
        for (i, &v) in chunk.iter().enumerate() {
            if v.to_bits() == 0 {
                continue;
            }
            // -0.0 would decode as +0.0; NaN and ±∞ are no multiple of a finite scale.
            if v == 0.0 || !v.is_finite() {
                return None;
            }
            // Chunk offsets fit: CHUNK < 2^32.
            entries.push((i as u32, v));
        }
        let count = entries.len();
        if count == 0 {
            out.push(0);
            continue;
        }
        let (scale, wide) = chunk_scale(&entries)?;
        write_varint(&mut out, ((count as u32) << 1) | u32::from(wide));
        out.extend_from_slice(&scale.to_le_bytes());
        let mut previous: Option<u32> = None;
        for &(i, _) in &entries {
            write_varint(&mut out, previous.map_or(i, |p| i - p - 1));
            previous = Some(i);
        }
        let bits = if wide { 4 } else { 2 };
        let start = out.len();
        out.resize(start + (count * bits).div_ceil(8), 0);
        for (n, &(_, v)) in entries.iter().enumerate() {
            // `chunk_scale` checked that this is a whole c in 1..=2^(bits-1).
            let c = (v.abs() / scale).round() as u8;
            let sign = u8::from(v < 0.0);
            let code = (sign << (bits - 1)) | (c - 1);
            let bit = n * bits;
            out[start + bit / 8] |= code << (bit % 8);
        }
    }
    Some(out)
}

/// A scale `s` and whether 4-bit codes are needed such that every entry is `±c · s` exactly
/// with `c ∈ 1..=8`, or None. `s` is tried as the smallest magnitude divided by 1, 2, …, 8 and
/// the first that fits wins (the largest scale, hence the smallest codes).
fn chunk_scale(entries: &[(u32, f32)]) -> Option<(f32, bool)> {
    let smallest = entries
        .iter()
        .fold(f32::INFINITY, |m, &(_, v)| m.min(v.abs()));
    'divisor: for j in 1..=8u8 {
        let s = smallest / f32::from(j);
        if !(s.is_finite() && s > 0.0) {
            continue;
        }
        let mut largest = 0.0f32;
        for &(_, v) in entries {
            let c = (v.abs() / s).round();
            if !(1.0..=MAX_CODE).contains(&c)
                || decode_value(c, s, v < 0.0).to_bits() != v.to_bits()
            {
                continue 'divisor;
            }
            largest = largest.max(c);
        }
        return Some((s, largest > 2.0));
    }
    None
}

/// The value of code magnitude `c` at scale `s`, as both the encoder's check and the decoder
/// compute it.
fn decode_value(c: f32, s: f32, negative: bool) -> f32 {
    let v = c * s;
    if negative {
        -v
    } else {
        v
    }
}

/// Decodes `len` values from `data` (layout in the module docs).
///
/// # Errors
/// [`CompactError::TooLong`] when `len` is above the limit in force, [`CompactError::Sparse`]
/// for data that ends early or goes on after the last chunk, a count above its chunk's
/// length, a position out of range, a scale that is not finite and positive, a long-form
/// number or nonzero padding bits.
pub(super) fn decode(len: usize, data: &[u8]) -> Result<Vec<f32>, CompactError> {
    let limit = VALUE_LIMIT.with(Cell::get);
    if len > limit {
        return Err(CompactError::TooLong { len, limit });
    }
    let chunks = len.div_ceil(CHUNK);
    if data.len() < chunks {
        return Err(bad(format!(
            "{} bytes cannot hold the headers of {chunks} chunks",
            data.len()
        )));
    }
    let mut out = vec![0.0f32; len];
    let mut reader = Reader { data, at: 0 };
    let mut positions: Vec<usize> = Vec::new();
    for (c, chunk) in out.chunks_mut(CHUNK).enumerate() {
        let header = reader.varint()?;
        let (count, wide) = ((header >> 1) as usize, header & 1 == 1);
        if count > chunk.len() {
            return Err(bad(format!(
                "chunk {c} sends {count} values, more than its {}",
                chunk.len()
            )));
        }
        if count == 0 {
            if wide {
                return Err(bad(format!("chunk {c}: empty, yet marked 4-bit")));
            }
            continue;
        }
        let s = f32::from_le_bytes(reader.array()?);
        if !(s.is_finite() && s > 0.0) {
            return Err(bad(format!(
                "chunk {c}: scale {s} is not finite and positive"
            )));
        }
        positions.clear();
        for n in 0..count {
            let step = reader.varint()? as usize;
            let at = match positions.last() {
                None => step,
                Some(&p) => p + step + 1,
            };
            if at >= chunk.len() {
                return Err(bad(format!(
                    "chunk {c}: value {n} at position {at}, past its {} values",
                    chunk.len()
                )));
            }
            positions.push(at);
        }
        let bits = if wide { 4 } else { 2 };
        let codes = reader.take((count * bits).div_ceil(8))?;
        let mask = (1u8 << bits) - 1;
        for (n, &at) in positions.iter().enumerate() {
            let bit = n * bits;
            let code = (codes[bit / 8] >> (bit % 8)) & mask;
            let magnitude = f32::from((code & (mask >> 1)) + 1);
            chunk[at] = decode_value(magnitude, s, code >> (bits - 1) == 1);
        }
        let used = count * bits;
        if used % 8 != 0 && codes[used / 8] >> (used % 8) != 0 {
            return Err(bad(format!("chunk {c}: nonzero padding bits")));
        }
    }
    if reader.at != data.len() {
        return Err(bad(format!(
            "{} bytes after the last chunk",
            data.len() - reader.at
        )));
    }
    Ok(out)
}

fn bad(message: String) -> CompactError {
    CompactError::Sparse(message)
}

/// Appends `v` as unsigned LEB128 (7 bits a byte, low first, high bit = more follows).
fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over untrusted bytes: every read checks the length first.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(bad(format!(
                "ends early: {n} bytes needed at byte {} of {}",
                self.at,
                self.data.len()
            )));
        };
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CompactError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A LEB128 number below 2^21 in its shortest form (positions and headers are far
    /// smaller; a longer number is malformed).
    fn varint(&mut self) -> Result<u32, CompactError> {
        let mut v = 0u32;
        for i in 0..3 {
            let [b] = self.array()?;
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(bad("number in long form".into()));
                }
                return Ok(v);
            }
        }
        Err(bad("number above 2^21".into()))
    }
}
