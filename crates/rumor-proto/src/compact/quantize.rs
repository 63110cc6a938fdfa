//! [`Quantizer`]: rounds a publishing peer's deltas to values a compact wire form holds exactly,
//! and carries what rounding left out into the next delta (error feedback).

use super::dense::{quantize_block_int8, round_bf16, BLOCK};
use super::topk::{self, CHUNK};
use super::Compression;

/// Quantization with error feedback, for one publishing peer.
///
/// [`Quantizer::quantize`] turns `delta + residual` into the nearest values of the compact
/// format and keeps the difference as the new residual, so the sum of everything published
/// tracks the sum of the exact deltas: for bf16 and int8 within one quantum per value, for
/// top-k within what is still waiting in the residual (values not yet among a chunk's largest).
#[derive(Clone, Debug, Default)]
pub struct Quantizer {
    /// The scheme applied to every delta.
    compression: Compression,
    /// What was left out so far, one value per parameter (empty before the first delta).
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

    /// Quantizes `delta` in place: adds the carried residual, rounds to the format (for
    /// [`Compression::TopK`]: keeps the largest values of each chunk, at low precision), and
    /// keeps what was left out for the next call. Values of a block (chunk) that holds NaN or
    /// ±∞ are left as they are (the receivers refuse such a delta) and carry no residual. A
    /// delta of another length than the last one starts from a zero residual.
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
            Compression::TopK { density_bp, bits } => {
                let mut scratch = Vec::with_capacity(CHUNK);
                for chunk in delta.chunks_mut(CHUNK) {
                    topk::quantize_chunk(chunk, density_bp, bits, topk::FIT_ROUNDS, &mut scratch);
                }
            }
        }
        for ((r, q), x) in self.residual.iter_mut().zip(delta.iter()).zip(&exact) {
            let left = x - q;
            *r = if left.is_finite() { left } else { 0.0 };
        }
    }
}
