//! What can go wrong reading R data, and names for R's item types.

use super::{
    ALTREP_SXP, BASEENV_SXP, BASENAMESPACE_SXP, CHARSXP, CPLXSXP, EMPTYENV_SXP, EXPRSXP,
    GLOBALENV_SXP, INTSXP, LANGSXP, LGLSXP, LISTSXP, MAX_DEPTH, MISSINGARG_SXP, NILVALUE_SXP,
    RAWSXP, REALSXP, REFSXP, STRSXP, SYMSXP, UNBOUNDVALUE_SXP, VECSXP,
};

/// What is wrong with R data, with the byte offset into the (decompressed) stream where known.
#[derive(Debug, thiserror::Error)]
pub enum RDataError {
    /// The stream ends in the middle of an item.
    #[error("truncated at byte offset {offset}: need {needed} more bytes, {left} left")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
        /// Bytes left in the stream.
        left: usize,
    },

    /// The stream does not start with `X\n` (XDR); ASCII and native binary streams are not read.
    #[error("not an XDR serialization: starts with {found:?}, expected \"X\\n\"")]
    BadFormat {
        /// The first (up to) two bytes, lossily decoded.
        found: String,
    },

    /// The format version is neither 2 nor 3.
    #[error("serialization format version {version} is not supported (only 2 and 3)")]
    BadVersion {
        /// The version found.
        version: i32,
    },

    /// A length field is negative (other than the markers R uses) or does not fit in memory.
    #[error("invalid length {length} at byte offset {offset}")]
    BadLength {
        /// Where the length field starts.
        offset: usize,
        /// The value read.
        length: i64,
    },

    /// A length asks for more data than the stream has left.
    #[error(
        "length {length} at byte offset {offset} needs at least {needed} bytes but only {left} \
         are left"
    )]
    TooLong {
        /// Where the length field starts.
        offset: usize,
        /// The declared number of elements (or bytes).
        length: u64,
        /// The fewest bytes those elements can take.
        needed: u128,
        /// Bytes left in the stream after the length field.
        left: usize,
    },

    /// An ALTREP object (a compact or deferred representation) was met.
    #[error(
        "ALTREP object at byte offset {offset} is not supported (re-save the data with \
         ALTREP expanded, e.g. from R with `saveRDS(x[], ...)`)"
    )]
    Altrep {
        /// Where its flags word starts.
        offset: usize,
    },

    /// An item type this reader does not handle.
    #[error("unsupported R item type {sexptype} ({}) at byte offset {offset}", type_name(*.sexptype))]
    UnsupportedType {
        /// Where its flags word starts.
        offset: usize,
        /// The type code (low 8 bits of the flags word).
        sexptype: u8,
    },

    /// A reference points outside the reference table.
    #[error(
        "reference {index} at byte offset {offset} is out of range (the table holds {table_len})"
    )]
    BadReference {
        /// Where the reference's flags word starts.
        offset: usize,
        /// The 1-based index read.
        index: u32,
        /// Entries in the reference table at that point.
        table_len: usize,
    },

    /// Items nest deeper than [`MAX_DEPTH`].
    #[error("items nest deeper than {MAX_DEPTH} levels at byte offset {offset}")]
    TooDeep {
        /// Where the item that went too deep starts.
        offset: usize,
    },

    /// An item has the wrong shape for where it sits (a tag that is not a symbol, an attribute
    /// list that is not a pairlist, a pairlist that does not end in `NULL`).
    #[error("malformed item at byte offset {offset}: {reason}")]
    Malformed {
        /// Where the offending item starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// A string marked UTF-8 (or in a UTF-8 stream) holds invalid UTF-8.
    #[error("string at byte offset {offset} is not valid UTF-8 (first invalid byte at offset {invalid_at})")]
    NotUtf8 {
        /// Where the string's bytes start.
        offset: usize,
        /// Byte offset of the first invalid byte.
        invalid_at: usize,
    },

    /// The stream continues after its one item.
    #[error("{left} unexpected bytes after the item, from byte offset {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        left: usize,
    },

    /// A compressed blob is corrupt.
    #[error("corrupt compressed data")]
    Decompress(#[source] std::io::Error),

    /// A compressed blob inflates to a different size from the one its header declares.
    #[error("blob declares {declared} uncompressed bytes but holds {actual_desc}")]
    BlobLength {
        /// The length in the blob's 4-byte header.
        declared: u64,
        /// What was found, e.g. `12 bytes` or `more`.
        actual_desc: String,
    },

    /// A blob uses a compression this reader does not handle, or none it recognises.
    #[error("unsupported compression: {what}")]
    Compression {
        /// Which compression, or what the blob starts with.
        what: String,
    },

    /// The lazy-load index does not have the expected structure.
    #[error("bad lazy-load index: {reason}")]
    BadIndex {
        /// What is wrong.
        reason: String,
    },
}

/// A name for an item type code, for messages.
pub fn type_name(sexptype: u8) -> &'static str {
    match sexptype {
        0 => "NILSXP",
        SYMSXP => "SYMSXP (symbol)",
        LISTSXP => "LISTSXP (pairlist)",
        3 => "CLOSXP (closure)",
        4 => "ENVSXP (environment)",
        5 => "PROMSXP (promise)",
        LANGSXP => "LANGSXP (call)",
        7 => "SPECIALSXP",
        8 => "BUILTINSXP",
        CHARSXP => "CHARSXP (string)",
        LGLSXP => "LGLSXP (logical vector)",
        INTSXP => "INTSXP (integer vector)",
        REALSXP => "REALSXP (double vector)",
        CPLXSXP => "CPLXSXP (complex vector)",
        STRSXP => "STRSXP (character vector)",
        17 => "DOTSXP",
        VECSXP => "VECSXP (list)",
        EXPRSXP => "EXPRSXP (expression vector)",
        21 => "BCODESXP (byte code)",
        22 => "EXTPTRSXP (external pointer)",
        23 => "WEAKREFSXP (weak reference)",
        RAWSXP => "RAWSXP (raw vector)",
        25 => "OBJSXP (S4 object)",
        ALTREP_SXP => "ALTREP_SXP",
        239 => "ATTRLISTSXP",
        240 => "ATTRLANGSXP",
        BASEENV_SXP => "BASEENV_SXP",
        EMPTYENV_SXP => "EMPTYENV_SXP",
        243 => "BCREPREF",
        244 => "BCREPDEF",
        245 => "GENERICREFSXP",
        246 => "CLASSREFSXP",
        247 => "PERSISTSXP",
        248 => "PACKAGESXP",
        249 => "NAMESPACESXP",
        BASENAMESPACE_SXP => "BASENAMESPACE_SXP",
        MISSINGARG_SXP => "MISSINGARG_SXP",
        UNBOUNDVALUE_SXP => "UNBOUNDVALUE_SXP",
        GLOBALENV_SXP => "GLOBALENV_SXP",
        NILVALUE_SXP => "NILVALUE_SXP (NULL)",
        REFSXP => "REFSXP (reference)",
        _ => "unknown",
    }
}
