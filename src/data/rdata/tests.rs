//! Tests for the R reader on streams built byte by byte here.
//!
//! Compiled only under `#[cfg(test)]` (the parent declares `#[cfg(test)] mod tests;`): every
//! `unwrap`/`expect` here runs on data the test itself built, and a failure fails the test.

use std::io::Write;
use std::path::Path;

use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;

use super::*;
use crate::data::DataError;

/// Builds an XDR serialization stream.
struct Stream(Vec<u8>);

impl Stream {
    /// `X\n`, then version 3 with native encoding UTF-8 (or version 2).
    fn new(version: i32) -> Self {
        let mut s = Stream(b"X\n".to_vec());
        s.int(version).int(0x0004_0201).int(0x0003_0500);
        if version == 3 {
            s.int(5);
            s.0.extend_from_slice(b"UTF-8");
        }
        s
    }

    fn int(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn flags(&mut self, sexptype: u8, attr: bool, tag: bool, levels: u32) -> &mut Self {
        let word = u32::from(sexptype)
            | if attr { HAS_ATTR } else { 0 }
            | if tag { HAS_TAG } else { 0 }
            | levels << 12;
        self.0.extend_from_slice(&word.to_be_bytes());
        self
    }

    /// A UTF-8 `CHARSXP`.
    fn chars(&mut self, s: &str) -> &mut Self {
        self.flags(CHARSXP, false, false, 1 << 3)
            .int(s.len() as i32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn na_chars(&mut self) -> &mut Self {
        self.flags(CHARSXP, false, false, 0).int(-1)
    }

    fn symbol(&mut self, name: &str) -> &mut Self {
        self.flags(SYMSXP, false, false, 0).chars(name)
    }

    /// A character vector (no attributes).
    fn strings(&mut self, items: &[&str], attr: bool) -> &mut Self {
        self.flags(STRSXP, attr, false, 0).int(items.len() as i32);
        for item in items {
            self.chars(item);
        }
        self
    }

    fn nil(&mut self) -> &mut Self {
        self.flags(NILVALUE_SXP, false, false, 0)
    }
}

fn strings(items: &[&str]) -> RValue {
    RValue::Strings(items.iter().map(|s| Some(s.to_string())).collect())
}

#[test]
fn character_vector_without_attributes() -> Result<(), RDataError> {
    for version in [2, 3] {
        let mut s = Stream::new(version);
        s.strings(&["It is a truth", "universally acknowledged — ✓"], false);
        let object = unserialize(&s.0)?;
        assert_eq!(
            object.value,
            strings(&["It is a truth", "universally acknowledged — ✓"])
        );
        assert!(object.attributes.is_empty());
        assert_eq!(object.names(), None);
    }
    Ok(())
}

#[test]
fn character_vector_with_names_and_na() -> Result<(), RDataError> {
    let mut s = Stream::new(3);
    s.flags(STRSXP, true, false, 0)
        .int(2)
        .chars("one")
        .na_chars();
    // Attributes: pairlist (names = c("a", "b")).
    s.flags(LISTSXP, false, true, 0)
        .symbol("names")
        .strings(&["a", "b"], false)
        .nil();
    let object = unserialize(&s.0)?;
    assert_eq!(
        object.value,
        RValue::Strings(vec![Some("one".to_string()), None])
    );
    let names = object.names().expect("names attribute");
    assert_eq!(names, &[Some("a".to_string()), Some("b".to_string())]);
    assert_eq!(object.attributes.len(), 1);
    Ok(())
}

#[test]
fn references_point_back_at_symbols() -> Result<(), RDataError> {
    // list(x = 1L, y = 2.5) with names, then a pairlist tagged `names` twice by reference.
    let mut s = Stream::new(3);
    s.flags(VECSXP, true, false, 0).int(2);
    s.flags(INTSXP, false, false, 0).int(1).int(7);
    s.flags(REALSXP, false, false, 0).int(1);
    s.0.extend_from_slice(&2.5f64.to_be_bytes());
    s.flags(LISTSXP, false, true, 0)
        .symbol("names")
        .strings(&["x", "y"], false);
    // Second attribute `dim`-like cell tagged by a reference to symbol 1 (`names` again is odd
    // in R, but exercises REFSXP with the index packed in the flags).
    s.flags(LISTSXP, false, true, 0);
    s.0.extend_from_slice(&((1u32 << 8) | u32::from(REFSXP)).to_be_bytes());
    s.flags(LGLSXP, false, false, 0).int(1).int(1);
    s.nil();
    let object = unserialize(&s.0)?;
    let RValue::List(items) = &object.value else {
        panic!("expected a list, got {object:?}");
    };
    assert_eq!(items[0].value, RValue::Integer(vec![7]));
    assert_eq!(items[1].value, RValue::Real(vec![2.5]));
    assert_eq!(object.attributes.len(), 2);
    assert_eq!(object.attributes[1].0, "names");
    assert_eq!(object.attributes[1].1.value, RValue::Logical(vec![1]));
    Ok(())
}

#[test]
fn bad_reference_is_an_error() {
    let mut s = Stream::new(3);
    s.0.extend_from_slice(&((3u32 << 8) | u32::from(REFSXP)).to_be_bytes());
    let err = unserialize(&s.0).expect_err("dangling reference");
    assert!(
        matches!(err, RDataError::BadReference { index: 3, .. }),
        "{err}"
    );
}

#[test]
fn every_truncation_is_an_error() -> Result<(), RDataError> {
    let mut s = Stream::new(3);
    s.flags(STRSXP, true, false, 0)
        .int(2)
        .chars("alpha")
        .chars("beta");
    s.flags(LISTSXP, false, true, 0)
        .symbol("names")
        .strings(&["a", "b"], false)
        .nil();
    unserialize(&s.0)?;
    for cut in 0..s.0.len() {
        let err = unserialize(&s.0[..cut]).expect_err("truncated stream");
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                RDataError::Truncated { .. }
                    | RDataError::TooLong { .. }
                    | RDataError::BadFormat { .. }
            ),
            "cut at {cut}: {msg}"
        );
    }
    let mut extra = s.0.clone();
    extra.push(0);
    assert!(matches!(
        unserialize(&extra),
        Err(RDataError::TrailingBytes { left: 1, .. })
    ));
    Ok(())
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    for sexptype in [STRSXP, INTSXP, REALSXP, VECSXP, LGLSXP, RAWSXP, CPLXSXP] {
        let mut s = Stream::new(3);
        s.flags(sexptype, false, false, 0).int(i32::MAX);
        let err = unserialize(&s.0).expect_err("huge length");
        assert!(matches!(err, RDataError::TooLong { .. }), "{err}");
        // Long-vector form: -1, then upper and lower halves.
        let mut s = Stream::new(3);
        s.flags(sexptype, false, false, 0)
            .int(-1)
            .int(0x7fff_ffff)
            .int(-1);
        let err = unserialize(&s.0).expect_err("huge long length");
        assert!(matches!(err, RDataError::TooLong { .. }), "{err}");
    }
    let mut s = Stream::new(3);
    s.flags(INTSXP, false, false, 0).int(-5);
    let err = unserialize(&s.0).expect_err("negative length");
    assert!(
        matches!(err, RDataError::BadLength { length: -5, .. }),
        "{err}"
    );
    let mut s = Stream::new(3);
    s.flags(CHARSXP, false, false, 0).int(1000);
    let err = unserialize(&s.0).expect_err("long string");
    assert!(matches!(err, RDataError::Truncated { .. }), "{err}");
}

#[test]
fn unsupported_things_are_named() {
    let mut s = Stream::new(3);
    s.flags(ALTREP_SXP, false, false, 0);
    let err = unserialize(&s.0).expect_err("altrep");
    assert!(matches!(err, RDataError::Altrep { offset: 23 }), "{err}");
    assert!(err.to_string().contains("ALTREP"), "{err}");

    let mut s = Stream::new(3);
    s.flags(3, false, false, 0);
    let err = unserialize(&s.0).expect_err("closure");
    assert!(err.to_string().contains("CLOSXP"), "{err}");

    let err = unserialize(b"A\n1\n").expect_err("ascii format");
    assert!(matches!(err, RDataError::BadFormat { .. }), "{err}");
    let mut s = Stream(b"X\n".to_vec());
    s.int(4).int(0).int(0);
    assert!(matches!(
        unserialize(&s.0),
        Err(RDataError::BadVersion { version: 4 })
    ));

    let mut s = Stream::new(3);
    s.flags(CHARSXP, false, false, 1 << 3).int(2);
    s.0.extend_from_slice(&[0xc3, 0x28]);
    let err = unserialize(&s.0).expect_err("bad utf-8");
    assert!(matches!(err, RDataError::NotUtf8 { .. }), "{err}");
}

#[test]
fn latin1_strings_are_converted() -> Result<(), RDataError> {
    let mut s = Stream::new(3);
    s.flags(CHARSXP, false, false, LATIN1_MASK).int(4);
    s.0.extend_from_slice(b"caf\xe9");
    assert_eq!(
        unserialize(&s.0)?.value,
        RValue::Char(Some("café".to_string()))
    );
    Ok(())
}

#[test]
fn nesting_is_bounded() {
    let mut s = Stream::new(3);
    for _ in 0..(MAX_DEPTH + 5) {
        s.flags(VECSXP, false, false, 0).int(1);
    }
    s.nil();
    let err = unserialize(&s.0).expect_err("too deep");
    assert!(matches!(err, RDataError::TooDeep { .. }), "{err}");
}

#[test]
fn long_pairlists_do_not_recurse() -> Result<(), RDataError> {
    let mut s = Stream::new(3);
    let n = 10 * MAX_DEPTH;
    for i in 0..n {
        s.flags(LISTSXP, false, false, 0)
            .flags(INTSXP, false, false, 0)
            .int(1)
            .int(i as i32);
    }
    s.nil();
    let RValue::Pairlist(cells) = unserialize(&s.0)?.value else {
        panic!("expected a pairlist");
    };
    assert_eq!(cells.len(), n);
    Ok(())
}

fn zlib_blob(raw: &[u8]) -> Vec<u8> {
    let mut out = (raw.len() as u32).to_be_bytes().to_vec();
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(raw).expect("write to memory");
    out.extend(enc.finish().expect("finish in memory"));
    out
}

#[test]
fn blobs_inflate_and_check_their_length() -> Result<(), RDataError> {
    let raw = b"hello, lazy-load database".repeat(10);
    let blob = zlib_blob(&raw);
    assert_eq!(inflate_blob(&blob, 1)?, raw);
    let mut typed = blob[..4].to_vec();
    typed.push(b'Z');
    typed.extend_from_slice(&blob[4..]);
    assert_eq!(inflate_blob(&typed, 3)?, raw);
    let mut lying = blob.clone();
    lying[3] = lying[3].wrapping_add(1);
    assert!(matches!(
        inflate_blob(&lying, 1),
        Err(RDataError::BlobLength { .. })
    ));
    let mut shorter = blob.clone();
    shorter[3] = shorter[3].wrapping_sub(1);
    assert!(matches!(
        inflate_blob(&shorter, 1),
        Err(RDataError::BlobLength { .. })
    ));
    assert!(matches!(
        inflate_blob(&blob[..blob.len() / 2], 1),
        Err(RDataError::Decompress(_) | RDataError::BlobLength { .. })
    ));
    assert!(matches!(
        inflate_blob(&[0, 0], 1),
        Err(RDataError::Truncated { .. })
    ));
    let mut bz = blob[..4].to_vec();
    bz.push(b'2');
    assert!(matches!(
        inflate_blob(&bz, 2),
        Err(RDataError::Compression { .. })
    ));
    Ok(())
}

/// Writes `dir/Rdata.rdx` (gzip, as R does) and `dir/Rdata.rdb` holding `objects`.
fn write_db(dir: &Path, objects: &[(&str, Vec<u8>)]) {
    let mut rdb = Vec::new();
    let mut entries = Vec::new();
    for (name, raw) in objects {
        let blob = zlib_blob(raw);
        entries.push((*name, rdb.len() as i32, blob.len() as i32));
        rdb.extend(blob);
    }
    let mut s = Stream::new(3);
    s.flags(VECSXP, true, false, 0).int(3);
    s.flags(VECSXP, true, false, 0).int(entries.len() as i32);
    for (_, offset, len) in &entries {
        s.flags(INTSXP, false, false, 0)
            .int(2)
            .int(*offset)
            .int(*len);
    }
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| *n).collect();
    s.flags(LISTSXP, false, true, 0)
        .symbol("names")
        .strings(&names, false)
        .nil();
    s.flags(VECSXP, false, false, 0).int(0); // references
    s.flags(LGLSXP, false, false, 0).int(1).int(1); // compressed = TRUE
    s.flags(LISTSXP, false, true, 0);
    s.0.extend_from_slice(&((1u32 << 8) | u32::from(REFSXP)).to_be_bytes());
    s.strings(&["variables", "references", "compressed"], false)
        .nil();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&s.0).expect("write to memory");
    let rdx = gz.finish().expect("finish in memory");
    std::fs::write(dir.join("Rdata.rdx"), rdx).expect("write temp file");
    std::fs::write(dir.join("Rdata.rdb"), rdb).expect("write temp file");
}

#[test]
fn lazy_load_database_round_trip() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut a = Stream::new(3);
    a.strings(&["first line", "second line"], false);
    let mut b = Stream::new(2);
    b.flags(INTSXP, false, false, 0).int(3).int(1).int(2).int(3);
    write_db(dir.path(), &[("alpha", a.0), ("beta", b.0)]);
    let db = LazyLoadDb::open(dir.path(), "Rdata")?;
    assert_eq!(db.names(), ["alpha", "beta"]);
    assert_eq!(db.compressed, 1);
    assert_eq!(
        db.get("alpha")?.value,
        strings(&["first line", "second line"])
    );
    assert_eq!(db.get("beta")?.value, RValue::Integer(vec![1, 2, 3]));
    let err = db.get("gamma").expect_err("missing object");
    assert!(matches!(err, DataError::RObjectMissing { .. }), "{err}");
    assert!(err.to_string().contains("alpha, beta"), "{err}");

    // An index pointing past the end of the .rdb.
    let mut broken = db.clone();
    broken.variables[0].1 = 1 << 40;
    let err = broken.get("alpha").expect_err("offset past the end");
    assert!(matches!(err, DataError::RData { .. }), "{err}");
    assert!(err.to_string().contains("Rdata.rdb"), "{err}");

    // A corrupt index names the .rdx.
    std::fs::write(dir.path().join("Rdata.rdx"), b"\x1f\x8bgarbage")?;
    let err = LazyLoadDb::open(dir.path(), "Rdata").expect_err("corrupt index");
    assert!(err.to_string().contains("Rdata.rdx"), "{err}");
    Ok(())
}
