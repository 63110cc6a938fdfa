//! Delta compression: lossy quantization on the publishing peer, lossless compact encoding on
//! the wire.
//!
//! The two halves are kept apart so that compression never costs exactness:
//!
//! 1. The publishing peer **quantizes** its delta ([`Quantizer`]) to values that a compact
//!    format represents exactly (bf16; int8 with a power-of-two scale per block of [`BLOCK`]
//!    values; or, for [`Compression::TopK`], only the largest values of each chunk of
//!    [`CHUNK`], as 2- or 4-bit integers times one scale per chunk, as in SparseLoCo, 2025),
//!    applies the *quantized* delta to its own base, and carries what quantization left out
//!    into its next delta (error feedback: Seide et al., 2014, "1-bit stochastic gradient
//!    descent"; Karimireddy et al., 2019, "Error feedback fixes SignSGD"; for top-k, Stich,
//!    Cordonnier and Jaggi, 2018, "Sparsified SGD with memory"). Every peer therefore adds the
//!    same bits, and nothing of the local progress is lost, only delayed.
//! 2. The wire **encodes** any `f32` vector losslessly in the densest of four formats that
//!    holds it bit for bit ([`CompactValues::encode`]): sparse (positions and low-bit codes of
//!    the nonzero values, ≈ 1.4 bytes per value sent), int8 blocks (≈ 1 byte per value), bf16
//!    (2 bytes), or plain `f32` (4 bytes). A quantized delta goes out sparse, int8 or bf16;
//!    anything else (a NaN the receiver must see and refuse, an uncompressed delta) as `f32`.
//!    The form is a pure function of the values, so forwarders re-encode a delta to the same
//!    bytes and signatures over the values' hash hold whatever the form.
//!
//! Files: [`Compression`] (the scheme and its text form), [`Quantizer`] (error feedback),
//! `topk` (top-k selection and the chunk scale), `dense` (the int8, bf16 and `f32` forms),
//! `sparse` (the sparse form and the bound on what its decoding allocates), [`CompactValues`]
//! (choosing a form, the byte form) and [`compact_serde`] (the serde adapter the wire messages
//! use).

pub mod compact_serde;
mod compression;
mod dense;
mod error;
mod quantize;
mod sparse;
mod topk;
mod values;

pub use compression::{Compression, CompressionParseError};
pub use dense::{BLOCK, MAX_EXPONENT, MIN_EXPONENT};
pub use error::CompactError;
pub use quantize::Quantizer;
pub use sparse::{with_value_limit, MAX_SPARSE_VALUES};
pub use topk::{CHUNK, SCALE_BITS};
pub use values::CompactValues;

#[cfg(test)]
mod sparse_tests;
#[cfg(test)]
mod tests;
