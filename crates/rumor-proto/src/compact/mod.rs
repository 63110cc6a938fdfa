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
//! Files: [`Compression`] (the scheme and its text form), [`Quantizer`] (error feedback),
//! `dense` (the int8, bf16 and `f32` forms), [`CompactValues`] (choosing a form, the byte form)
//! and [`compact_serde`] (the serde adapter the wire messages use).

pub mod compact_serde;
mod compression;
mod dense;
mod quantize;
mod sparse;
mod topk;
mod values;

pub use compression::{Compression, CompressionParseError};
pub use dense::{BLOCK, MAX_EXPONENT, MIN_EXPONENT};
pub use quantize::Quantizer;
pub use sparse::{with_value_limit, MAX_SPARSE_VALUES};
pub use topk::{CHUNK, SCALE_BITS};
pub use values::{CompactError, CompactValues};

#[cfg(test)]
mod sparse_tests;
#[cfg(test)]
mod tests;
