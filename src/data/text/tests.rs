//! Tests for text loading, vocabularies, splitting, sharding and the Austen reader.
//!
//! Compiled only under `#[cfg(test)]` (the parent declares `#[cfg(test)] mod tests;`): every
//! `unwrap`/`expect` here runs on data the test itself built, and a failure fails the test.

use std::collections::HashSet;
use std::io::Write;

use super::*;

const MULTIBYTE: &str = "héllo wörld — ✓ 日本";

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("create temp file");
    file.write_all(bytes).expect("write temp file");
    file.flush().expect("flush temp file");
    file
}

#[test]
fn reads_multibyte_utf8() -> Result<(), DataError> {
    let file = write_temp(MULTIBYTE.as_bytes());
    assert_eq!(read_text_file(file.path())?, MULTIBYTE);
    Ok(())
}

#[test]
fn vocabulary_encodes_and_decodes() -> Result<(), DataError> {
    let vocab = Vocabulary::from_text(MULTIBYTE);
    let mut expected: Vec<char> = MULTIBYTE
        .chars()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    expected.sort_unstable();
    assert_eq!(vocab.chars(), expected.as_slice());
    assert_eq!(vocab.len(), expected.len());
    let ids = vocab.encode(MULTIBYTE)?;
    assert_eq!(ids.len(), MULTIBYTE.chars().count());
    assert!(ids.iter().all(|&id| (id as usize) < vocab.len()));
    assert_eq!(vocab.decode(&ids), MULTIBYTE);
    assert_eq!(vocab.id(' '), Some(0));
    assert_eq!(vocab.char(0), Some(' '));

    let err = vocab.encode("hél?o").expect_err("unknown char");
    assert!(
        matches!(err, DataError::UnknownChar { ch: '?', index: 3 }),
        "{err}"
    );
    assert!(err.to_string().contains("'?'"), "{err}");
    assert_eq!(vocab.encode_lossy("hé? 日x"), (vocab.encode("hé 日")?, 2));
    assert_eq!(vocab.decode(&[0, 9999]), " \u{fffd}");
    assert!(Vocabulary::from_text("").is_empty());
    Ok(())
}

#[test]
fn vocabulary_serializes_as_its_characters() -> Result<(), Box<dyn std::error::Error>> {
    let vocab = Vocabulary::from_text("banana — ✓");
    let json = serde_json::to_string(&vocab)?;
    assert_eq!(json, "\" abn—✓\"");
    assert_eq!(vocab.to_string(), " abn—✓");
    let back: Vocabulary = serde_json::from_str(&serde_json::to_string(&vocab)?)?;
    assert_eq!(back, vocab);
    let err = serde_json::from_str::<Vocabulary>("\"ba\"").expect_err("unsorted");
    assert!(err.to_string().contains("bad vocabulary"), "{err}");
    assert!(serde_json::from_str::<Vocabulary>("\"aa\"").is_err());
    Ok(())
}

#[test]
fn tiny_file_splits_90_10() -> Result<(), DataError> {
    let file = write_temp("abcdefghijklmnopqrst".as_bytes());
    let text = read_text_file(file.path())?;
    let data = TextData::from_text("tiny", "a tiny file", &text)?;
    assert_eq!(data.train.len(), 18);
    assert_eq!(data.validation.len(), 2);
    assert_eq!(data.vocab.decode(&data.train), "abcdefghijklmnopqr");
    assert_eq!(data.vocab.decode(&data.validation), "st");
    assert_eq!(data.vocab.len(), 20);

    let smallest = TextData::from_text("eleven", "", "abcdefghijk")?;
    assert_eq!((smallest.train.len(), smallest.validation.len()), (9, 2));
    let err = TextData::from_text("ten", "", "abcdefghij").expect_err("too short");
    assert!(
        matches!(
            err,
            DataError::TextTooShort {
                chars: 10,
                train: 9,
                validation: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("ten:"), "{err}");
    Ok(())
}

#[test]
fn empty_file_is_an_error_naming_it() {
    let file = write_temp(b"");
    let err = read_text_file(file.path()).expect_err("empty file");
    assert!(matches!(err, DataError::EmptyText { .. }), "{err}");
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn invalid_utf8_names_file_and_offset() {
    let file = write_temp(b"ok \xc3\xa9 then \xff bad");
    let err = read_text_file(file.path()).expect_err("invalid utf-8");
    // "ok " is 3 bytes, "é" 2, " then " 6: the 0xff is byte 11.
    assert!(
        matches!(err, DataError::NotUtf8 { offset: 11, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    assert!(msg.contains("offset 11"), "{msg}");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let path = Path::new("/nonexistent/rumor-text/novel.txt");
    let err = read_text_file(path).expect_err("missing file");
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/rumor-text/novel.txt"),
        "{err}"
    );
    let err = load_text(&TextSource::File(path.to_path_buf()), 0).expect_err("missing");
    assert!(err.to_string().contains("novel.txt"), "{err}");
}

#[test]
fn sharding_covers_every_token_once() -> Result<(), DataError> {
    let modes = [
        TextSharding::Contiguous,
        TextSharding::Interleaved { block: 1 },
        TextSharding::Interleaved { block: 7 },
        TextSharding::Interleaved { block: 1024 },
    ];
    for len in [0, 1, 5, 100, 1023, 1024, 1025, 10_007] {
        let train: Vec<u32> = (0..len as u32).collect();
        for sharding in modes {
            for count in [1, 2, 3, 7, 16] {
                let mut seen = vec![0u32; len];
                let mut sizes = Vec::new();
                for index in 0..count {
                    let shard = text_shard(&train, index, count, sharding)?;
                    sizes.push(shard.len());
                    for &t in &shard {
                        seen[t as usize] += 1;
                    }
                    // Within a shard, tokens keep their order.
                    assert!(shard.windows(2).all(|w| w[0] < w[1]));
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{sharding} len {len} count {count}"
                );
                if sharding == TextSharding::Contiguous {
                    let (min, max) = (sizes.iter().min(), sizes.iter().max());
                    assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
                }
            }
        }
    }
    let train: Vec<u32> = (0..10).collect();
    let blocks = TextSharding::Interleaved { block: 2 };
    assert_eq!(text_shard(&train, 0, 2, blocks)?, [0, 1, 4, 5, 8, 9]);
    assert_eq!(text_shard(&train, 1, 2, blocks)?, [2, 3, 6, 7]);
    assert_eq!(
        text_shard(&train, 1, 3, TextSharding::Contiguous)?,
        [3, 4, 5]
    );
    assert!(matches!(
        text_shard(&train, 0, 0, blocks),
        Err(DataError::ZeroShards)
    ));
    assert!(matches!(
        text_shard(&train, 2, 2, blocks),
        Err(DataError::ShardIndexOutOfRange { index: 2, count: 2 })
    ));
    assert!(matches!(
        text_shard(&train, 0, 1, TextSharding::Interleaved { block: 0 }),
        Err(DataError::BadTextSharding { .. })
    ));
    Ok(())
}

#[test]
fn sharding_parses_and_round_trips() {
    let cases = [
        ("contiguous", TextSharding::Contiguous),
        (
            "interleaved",
            TextSharding::Interleaved {
                block: DEFAULT_INTERLEAVE_BLOCK,
            },
        ),
        ("interleaved:64", TextSharding::Interleaved { block: 64 }),
    ];
    for (text, sharding) in cases {
        assert_eq!(text.parse::<TextSharding>().ok(), Some(sharding));
        assert_eq!(
            sharding.to_string().parse::<TextSharding>().ok(),
            Some(sharding)
        );
    }
    assert_eq!(
        TextSharding::Interleaved { block: 64 }.to_string(),
        "interleaved:64"
    );
    for bad in [
        "",
        "Contiguous",
        "interleaved:",
        "interleaved:0",
        "interleaved:-1",
        "blocks",
    ] {
        let err = bad.parse::<TextSharding>().expect_err(bad);
        assert!(matches!(err, DataError::BadTextSharding { .. }), "{err}");
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
}

#[test]
fn text_source_parses_and_round_trips() {
    let cases = [
        ("auto", TextSource::Auto),
        ("austen", TextSource::Austen),
        ("synthetic", TextSource::Synthetic),
        (
            "text:/tmp/a.txt",
            TextSource::File(PathBuf::from("/tmp/a.txt")),
        ),
        (
            "text:rel/b.txt",
            TextSource::File(PathBuf::from("rel/b.txt")),
        ),
    ];
    for (text, source) in cases {
        let parsed: TextSource = text.parse().expect("valid source");
        assert_eq!(parsed, source);
        assert_eq!(source.to_string(), text);
    }
    for bad in ["", "text:", "text", "Austen", "file:x", " auto"] {
        let err = bad.parse::<TextSource>().expect_err(bad);
        let msg = err.to_string();
        assert!(matches!(err, DataError::BadTextSource { .. }), "{msg}");
        assert!(msg.contains(&format!("`{bad}`")), "{msg}");
        for form in ["auto", "austen", "synthetic", "text:FILE"] {
            assert!(msg.contains(form), "{msg}");
        }
    }
}

#[test]
fn synthetic_text_is_deterministic_and_structured() {
    let a = synthetic_text(7, 50_000);
    assert_eq!(a, synthetic_text(7, 50_000));
    assert_eq!(a.chars().count(), 50_000);
    assert_ne!(a, synthetic_text(8, 50_000));
    assert_eq!(synthetic_text(7, 1_000), a[..1_000]);
    assert_eq!(synthetic_text(7, 0), "");
    assert!(a.is_ascii());
    assert!(a.lines().all(|l| l.len() <= 72), "a line is too long");
    for needle in [". ", "\n\n", ", "] {
        assert!(a.contains(needle), "no {needle:?}");
    }
    assert!(a.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    let vocab = Vocabulary::from_text(&a);
    assert!(
        (30..=70).contains(&vocab.len()),
        "{} characters",
        vocab.len()
    );
    // First-order structure: far fewer distinct word pairs than a uniform choice would give.
    let words: Vec<String> = a
        .split_whitespace()
        .map(|w| w.trim_end_matches([',', '.', '?', '!']).to_lowercase())
        .collect();
    let pairs: HashSet<(&str, &str)> = words.windows(2).map(|w| (&*w[0], &*w[1])).collect();
    println!(
        "{} distinct word pairs in {} words",
        pairs.len(),
        words.len()
    );
    assert!(
        pairs.len() * 4 < words.len(),
        "{} pairs in {} words",
        pairs.len(),
        words.len()
    );
}

#[test]
fn synthetic_source_loads() -> Result<(), DataError> {
    let data = load_text(&TextSource::Synthetic, 3)?;
    assert_eq!(data.name, "synthetic");
    assert_eq!(
        data.train.len() + data.validation.len(),
        SYNTHETIC_TEXT_CHARS
    );
    assert_eq!(data.validation.len(), SYNTHETIC_TEXT_CHARS / 10);
    assert!(data.description.contains("seed 3"), "{}", data.description);
    Ok(())
}

#[test]
fn auto_falls_back_to_synthetic_and_says_why() -> Result<(), Box<dyn std::error::Error>> {
    let empty = tempfile::tempdir()?;
    let data = load_text_auto(empty.path(), 5)?;
    println!("{}", data.description);
    assert_eq!(data.name, "synthetic");
    for needle in [
        "auto",
        "apt-get download r-cran-janeaustenr",
        "Rdata.rdb",
        &empty.path().display().to_string(),
    ] {
        assert!(data.description.contains(needle), "{}", data.description);
    }
    let err = load_austen(empty.path()).expect_err("not installed");
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains(AUSTEN_INSTALL_HINT), "{err}");
    Ok(())
}

#[test]
fn real_austen_if_installed() -> Result<(), DataError> {
    let dir = Path::new(AUSTEN_DIR);
    if let Err(missing) = locate_austen(dir) {
        println!("skipped: Jane Austen is not installed: {missing}");
        return Ok(());
    }
    let text = load_austen(dir)?;
    let chars = text.chars().count();
    let vocab = Vocabulary::from_text(&text);
    println!(
        "Jane Austen: {chars} characters, {} bytes, {} distinct characters: {:?}",
        text.len(),
        vocab.len(),
        vocab.to_string()
    );
    assert!(chars > 3_500_000, "{chars} characters");
    assert!(text.contains("It is a truth universally acknowledged"));
    assert!(text.starts_with("SENSE AND SENSIBILITY"), "{}", &text[..40]);
    let data = load_text(&TextSource::Austen, 0)?;
    println!("{}", data.description);
    assert_eq!(data.name, "austen");
    assert_eq!(data.vocab, vocab);
    let auto = load_text(&TextSource::Auto, 0)?;
    assert_eq!(auto.name, "austen");
    assert!(auto.description.contains("auto"), "{}", auto.description);
    Ok(())
}
