//! [`Compression`]: the quantization scheme a publishing peer applies to its deltas
//! (`train.delta_compression`).

use serde::{Deserialize, Serialize};

/// How a publishing peer quantizes its deltas (`train.delta_compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Deltas go out as computed (4 bytes per parameter).
    #[default]
    None,
    /// Round each value to bfloat16 (2 bytes per parameter; 8 significant bits).
    Bf16,
    /// Blocks of [`BLOCK`](super::BLOCK) values share a power-of-two scale; each value is an
    /// integer in [-127, 127] times it (≈ 1 byte per parameter).
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
