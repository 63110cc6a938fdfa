//! Why compact values could not be decoded: one error type for every wire form.

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
    /// The sparse form is malformed (truncated, trailing bytes, a count, position, scale or
    /// padding out of range).
    #[error("sparse data: {0}")]
    Sparse(String),
    /// A sparse vector declares more values than the decoder accepts.
    #[error("sparse data of {len} values, above the limit of {limit}")]
    TooLong {
        /// Values declared.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}
