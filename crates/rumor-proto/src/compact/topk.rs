//! Top-k selection with low-bit values: the quantizer's half of [`Compression::TopK`]
//! (SparseLoCo, 2025; top-k with error feedback: Stich, Cordonnier and Jaggi, 2018,
//! "Sparsified SGD with memory").
//!
//! In each chunk of [`CHUNK`] values (the last may be shorter) the `k = ceil(density · len)`
//! values of largest magnitude are kept, each rounded to `±c · s` with `c ∈ 1..=2^(bits-1)` and
//! one scale `s` per chunk; everything else becomes `+0.0`. The scale has at most
//! [`SCALE_BITS`] significant bits, so every `c · s` is exact in `f32` and the sparse wire form
//! ([`super::sparse`]) can recover `s` and the codes from the values alone.
//!
//! [`Compression::TopK`]: super::Compression::TopK

/// Values per top-k chunk (one scale each).
pub const CHUNK: usize = 4096;

/// Significant bits of a chunk scale: with `|c| ≤ 8` (3 more bits) every product fits the 24
/// bits of an `f32` significand.
pub const SCALE_BITS: u32 = 20;

/// Least-squares refinements of the scale after the first guess `max / 2^(bits-1)` (each
/// lowers the chunk's error or keeps it; see the test that compares them).
pub(super) const FIT_ROUNDS: usize = 3;

/// `s` with its significand cut to [`SCALE_BITS`] bits (towards zero, so `c · s` never passes
/// what the chunk's largest value allowed).
pub(super) fn snap_scale(s: f32) -> f32 {
    f32::from_bits(s.to_bits() & !((1u32 << (24 - SCALE_BITS)) - 1))
}

/// The code of magnitude `a` at scale `s`: `round(a / s)` clamped to `0..=max_code`.
fn code(a: f32, s: f32, max_code: f32) -> f32 {
    (a / s).round().clamp(0.0, max_code)
}

/// The scale for the selected magnitudes `mags` (all finite, largest `max > 0`): `max /
/// max_code`, then `rounds` alternating steps that fix the codes and take the least-squares
/// scale `Σ a·c / Σ c²` for them (Lloyd's iteration on one scalar).
pub(super) fn fit_scale(mags: &[f32], max: f32, max_code: f32, rounds: usize) -> f32 {
    let mut s = max / max_code;
    for _ in 0..rounds {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &a in mags {
            let c = f64::from(code(a, s, max_code));
            num += f64::from(a) * c;
            den += c * c;
        }
        let next = (num / den) as f32;
        if !(den > 0.0 && next.is_normal()) {
            break;
        }
        s = next;
    }
    s
}

/// Quantizes one chunk in place (see the module docs). A chunk that holds NaN or ±∞ is left as
/// it is, so the receivers see the non-finite value and refuse the delta. `scratch` is reused
/// between chunks.
pub(super) fn quantize_chunk(
    chunk: &mut [f32],
    density_bp: u16,
    bits: u8,
    rounds: usize,
    scratch: &mut Vec<(f32, u32)>,
) {
    if chunk.is_empty() || !chunk.iter().all(|v| v.is_finite()) {
        return;
    }
    let len = chunk.len();
    let k = (u64::from(density_bp.clamp(1, 10_000)) * len as u64).div_ceil(10_000) as usize;
    let k = k.clamp(1, len);
    scratch.clear();
    // Chunk indices fit: CHUNK < 2^32.
    scratch.extend(chunk.iter().enumerate().map(|(i, v)| (v.abs(), i as u32)));
    if k < len {
        scratch.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    }
    let selected = &mut scratch[..k];
    let max_code = f32::from(1u8 << (bits.clamp(2, 4) - 1));
    let max = selected.iter().fold(0.0f32, |m, &(a, _)| m.max(a));
    let mags: Vec<f32> = selected.iter().map(|&(a, _)| a).collect();
    let mut s = snap_scale(fit_scale(&mags, max, max_code, rounds));
    if !(s * max_code).is_finite() {
        s = snap_scale(max / max_code);
    }
    let signs: Vec<bool> = selected
        .iter()
        .map(|&(_, i)| chunk[i as usize].is_sign_negative())
        .collect();
    chunk.fill(0.0);
    // A scale below the normal range (values near 1e-38) sends nothing: all stays in the residual.
    if !s.is_normal() {
        return;
    }
    for (&(a, i), negative) in selected.iter().zip(signs) {
        let c = code(a, s, max_code);
        if c >= 1.0 {
            let q = c * s;
            chunk[i as usize] = if negative { -q } else { q };
        }
    }
}
