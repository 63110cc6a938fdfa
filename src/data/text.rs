//! Text for character-level language models: where it comes from, its vocabulary, and how its
//! training tokens are split between peers.
//!
//! A text is a sequence of Unicode scalar values (`char`s). Its [`Vocabulary`] is the sorted set
//! of distinct characters; a character's id (a token, `u32`) is its index in that set. A
//! [`TextData`] holds a text encoded this way, split 90/10 into contiguous training and
//! validation parts (the first 90% of characters train, the last 10% validate).
//!
//! Sources ([`TextSource`]): a UTF-8 file ([`read_text_file`]), Jane Austen's six novels read
//! from the Debian package `r-cran-janeaustenr` ([`load_austen`], through [`super::rdata`]), or a
//! seeded synthetic English-like text ([`synthetic_text`]); `auto` takes Austen when installed
//! and the synthetic text otherwise, and says which and why.
//!
//! Sharding ([`TextSharding`], [`text_shard`]): every training token goes to exactly one peer,
//! either as one contiguous slice per peer or as fixed-size blocks dealt round-robin.

mod synthetic;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use synthetic::synthetic_text;

use super::rdata::{LazyLoadDb, RValue};
use super::DataError;

/// Where the Debian package `r-cran-janeaustenr` keeps its lazy-load database
/// (`Rdata.rdb`, `Rdata.rdx`).
pub const AUSTEN_DIR: &str = "/usr/lib/R/site-library/janeaustenr/data";

/// The commands that install Jane Austen's novels (the package's files only, without R), quoted
/// in error messages.
pub const AUSTEN_INSTALL_HINT: &str = "install it with `apt-get download r-cran-janeaustenr && \
                                       dpkg-deb -x r-cran-janeaustenr_*.deb /`";

/// The files of the lazy-load database in [`AUSTEN_DIR`].
pub const AUSTEN_FILES: [&str; 2] = ["Rdata.rdb", "Rdata.rdx"];

/// The novels as (object name in the database, title), in publication order, which is the
/// order [`load_austen`] joins them in.
pub const AUSTEN_NOVELS: [(&str, &str); 6] = [
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
];

/// Length in characters of the synthetic text that `auto` and `synthetic` use.
pub const SYNTHETIC_TEXT_CHARS: usize = 2_000_000;

/// Tokens per block for `interleaved` sharding when no block size is given.
pub const DEFAULT_INTERLEAVE_BLOCK: usize = 1024;

/// Fewest characters each of the training and validation parts must get.
pub const MIN_PART_CHARS: usize = 2;

/// Reads a UTF-8 text file whole.
///
/// Errors: [`DataError::Io`] if it cannot be read (a missing file included), naming the path;
/// [`DataError::EmptyText`] if it has zero bytes; [`DataError::NotUtf8`] with the byte offset of
/// the first invalid byte if it is not UTF-8.
pub fn read_text_file(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(crate::fsutil::at(path))?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if text.is_empty() {
        return Err(DataError::EmptyText {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// The distinct characters of a text in increasing order; a character's token id is its index.
///
/// Serializes (e.g. in checkpoints, as JSON) as one string of those characters in order, and
/// deserializes only from a strictly increasing string (see [`Vocabulary::from_sorted`]), so
/// that ids keep their meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Vocabulary {
    /// Strictly increasing.
    chars: Vec<char>,
}

impl Vocabulary {
    /// The vocabulary of `text`: its distinct characters, sorted. Empty for an empty text.
    pub fn from_text(text: &str) -> Self {
        let mut seen = [false; 128];
        let mut others = Vec::new();
        for ch in text.chars() {
            match seen.get_mut(ch as usize) {
                Some(flag) => *flag = true,
                None => others.push(ch),
            }
        }
        others.sort_unstable();
        others.dedup();
        let mut chars: Vec<char> = (0u8..128)
            .filter(|&b| seen[usize::from(b)])
            .map(char::from)
            .collect();
        chars.extend(others);
        Vocabulary { chars }
    }

    /// A vocabulary from its characters in order, as stored by serialization.
    ///
    /// Errors: [`DataError::BadVocabulary`] naming the first character that is not greater than
    /// the one before it.
    pub fn from_sorted(chars: &str) -> Result<Self, DataError> {
        let chars: Vec<char> = chars.chars().collect();
        if let Some(i) = chars.windows(2).position(|w| w[0] >= w[1]) {
            return Err(DataError::BadVocabulary {
                ch: chars[i + 1],
                index: i + 1,
            });
        }
        Ok(Vocabulary { chars })
    }

    /// Number of distinct characters (the size of a model's embedding and output layers).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True for the vocabulary of an empty text.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `ch`, if it is in the vocabulary.
    pub fn id(&self, ch: char) -> Option<u32> {
        // Ids fit in u32: there are fewer than 2^21 chars.
        self.chars.binary_search(&ch).ok().map(|i| i as u32)
    }

    /// The character with id `id`, if any.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// Encodes `text` as one id per character.
    ///
    /// Errors: [`DataError::UnknownChar`] naming the first character not in the vocabulary and
    /// its character index.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        text.chars()
            .enumerate()
            .map(|(index, ch)| self.id(ch).ok_or(DataError::UnknownChar { ch, index }))
            .collect()
    }

    /// Encodes `text`, skipping characters not in the vocabulary (for user prompts); returns the
    /// ids and how many characters were skipped.
    pub fn encode_lossy(&self, text: &str) -> (Vec<u32>, usize) {
        let mut skipped = 0;
        let ids = text
            .chars()
            .filter_map(|ch| {
                let id = self.id(ch);
                skipped += usize::from(id.is_none());
                id
            })
            .collect();
        (ids, skipped)
    }

    /// Decodes ids back to text; an id outside the vocabulary becomes U+FFFD (`�`).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| self.char(id).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

impl fmt::Display for Vocabulary {
    /// The characters in id order, as one string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.chars
            .iter()
            .try_for_each(|ch| fmt::Write::write_char(f, *ch))
    }
}

impl From<Vocabulary> for String {
    fn from(v: Vocabulary) -> String {
        v.chars.into_iter().collect()
    }
}

impl TryFrom<String> for Vocabulary {
    type Error = DataError;

    fn try_from(s: String) -> Result<Self, DataError> {
        Vocabulary::from_sorted(&s)
    }
}

/// A text encoded with its own vocabulary and split 90/10 into training and validation tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TextData {
    /// Short name of the source actually used: `austen`, `synthetic` or `text:FILE`.
    pub name: String,
    /// One line saying where the text came from, its size, and (for `auto`) why it was chosen.
    pub description: String,
    /// The distinct characters of the whole text (training and validation parts).
    pub vocab: Vocabulary,
    /// The first 90% of the characters (rounded down), as ids, `[train_len]`.
    pub train: Vec<u32>,
    /// The remaining characters, as ids, `[validation_len]`.
    pub validation: Vec<u32>,
}

impl TextData {
    /// Builds the vocabulary of `text`, encodes it, and splits it: the first
    /// `floor(0.9 × chars)` characters train, the rest validate. `name` and `description` are
    /// stored as given; `name` also names the text in errors.
    ///
    /// Errors: [`DataError::TextTooShort`] if either part would get fewer than
    /// [`MIN_PART_CHARS`] characters (fewer than 11 characters in all).
    pub fn from_text(name: &str, description: &str, text: &str) -> Result<Self, DataError> {
        let vocab = Vocabulary::from_text(text);
        let ids = vocab.encode(text)?;
        let chars = ids.len();
        let train_len = chars / 10 * 9 + chars % 10 * 9 / 10;
        let validation_len = chars - train_len;
        if train_len < MIN_PART_CHARS || validation_len < MIN_PART_CHARS {
            return Err(DataError::TextTooShort {
                origin: name.to_string(),
                chars,
                train: train_len,
                validation: validation_len,
                min: MIN_PART_CHARS,
            });
        }
        let mut train = ids;
        let validation = train.split_off(train_len);
        Ok(TextData {
            name: name.to_string(),
            description: description.to_string(),
            vocab,
            train,
            validation,
        })
    }

    /// Sizes for a description: `N characters, V distinct; T train / W validation tokens`.
    fn summary(&self) -> String {
        format!(
            "{} characters, {} distinct; {} train / {} validation tokens",
            self.train.len() + self.validation.len(),
            self.vocab.len(),
            self.train.len(),
            self.validation.len()
        )
    }
}

/// How a peer's training tokens are chosen: `contiguous`, `interleaved` or `interleaved:BLOCK`.
///
/// Parses from those strings ([`FromStr`] errors with [`DataError::BadTextSharding`]);
/// [`fmt::Display`] prints `contiguous` or `interleaved:BLOCK` (always with the block size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextSharding {
    /// Peer `k` of `n` gets the `k`-th of `n` near-equal contiguous slices.
    Contiguous,
    /// The tokens are cut into blocks of `block` tokens (the last may be shorter); block `b`
    /// goes to peer `b % n`, and a peer's blocks are concatenated in order.
    Interleaved {
        /// Tokens per block, at least 1.
        block: usize,
    },
}

impl FromStr for TextSharding {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DataError::BadTextSharding {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        match s {
            "contiguous" => Ok(TextSharding::Contiguous),
            "interleaved" => Ok(TextSharding::Interleaved {
                block: DEFAULT_INTERLEAVE_BLOCK,
            }),
            _ => match s.strip_prefix("interleaved:") {
                Some(block) => match block.parse::<usize>() {
                    Ok(0) => Err(bad("the block size must be at least 1")),
                    Ok(block) => Ok(TextSharding::Interleaved { block }),
                    Err(_) => Err(bad("the block size is not a whole number")),
                },
                None => Err(bad("unknown form")),
            },
        }
    }
}

impl fmt::Display for TextSharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextSharding::Contiguous => f.write_str("contiguous"),
            TextSharding::Interleaved { block } => write!(f, "interleaved:{block}"),
        }
    }
}

/// The index ranges of `len` training tokens that make up shard `index` (0-based) of `count`,
/// in order. Across `index = 0..count` the ranges cover `0..len` exactly once.
///
/// A shard is empty when there are fewer tokens than shards (contiguous) or fewer blocks than
/// shards (interleaved); callers check that their shard is long enough for a context window.
///
/// Errors: [`DataError::ZeroShards`], [`DataError::ShardIndexOutOfRange`],
/// [`DataError::BadTextSharding`] for an interleaved block size of 0.
pub fn text_shard_ranges(
    len: usize,
    index: usize,
    count: usize,
    sharding: TextSharding,
) -> Result<Vec<Range<usize>>, DataError> {
    if count == 0 {
        return Err(DataError::ZeroShards);
    }
    if index >= count {
        return Err(DataError::ShardIndexOutOfRange { index, count });
    }
    match sharding {
        TextSharding::Contiguous => {
            // (index × len) / count in u128: cannot overflow.
            let cut = |k: usize| (k as u128 * len as u128 / count as u128) as usize;
            let range = cut(index)..cut(index + 1);
            Ok(Vec::from([range]))
        }
        TextSharding::Interleaved { block: 0 } => Err(DataError::BadTextSharding {
            value: sharding.to_string(),
            reason: "the block size must be at least 1".to_string(),
        }),
        TextSharding::Interleaved { block } => {
            let blocks = len.div_ceil(block);
            Ok((index..blocks)
                .step_by(count)
                .map(|b| b * block..(b * block + block).min(len))
                .collect())
        }
    }
}

/// The training tokens of shard `index` (0-based) of `count`: [`text_shard_ranges`] of
/// `train.len()`, concatenated. Same errors.
pub fn text_shard(
    train: &[u32],
    index: usize,
    count: usize,
    sharding: TextSharding,
) -> Result<Vec<u32>, DataError> {
    let ranges = text_shard_ranges(train.len(), index, count, sharding)?;
    let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
    for range in ranges {
        out.extend_from_slice(&train[range]);
    }
    Ok(out)
}

/// Which text to load: `auto | austen | synthetic | text:FILE`.
///
/// Parses from those strings ([`FromStr`] errors with [`DataError::BadTextSource`], naming the
/// bad value and the accepted forms; `text:` with an empty path is an error); [`fmt::Display`]
/// prints the same forms back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextSource {
    /// Jane Austen from [`AUSTEN_DIR`] if its files are present, else the synthetic text.
    Auto,
    /// Jane Austen from [`AUSTEN_DIR`]; an error if it is not installed.
    Austen,
    /// The seeded synthetic text ([`synthetic_text`], [`SYNTHETIC_TEXT_CHARS`] characters).
    Synthetic,
    /// A UTF-8 text file.
    File(PathBuf),
}

impl FromStr for TextSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TextSource::Auto),
            "austen" => Ok(TextSource::Austen),
            "synthetic" => Ok(TextSource::Synthetic),
            _ => match s.strip_prefix("text:") {
                Some(path) if !path.is_empty() => Ok(TextSource::File(PathBuf::from(path))),
                _ => Err(DataError::BadTextSource {
                    value: s.to_string(),
                }),
            },
        }
    }
}

impl fmt::Display for TextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextSource::Auto => f.write_str("auto"),
            TextSource::Austen => f.write_str("austen"),
            TextSource::Synthetic => f.write_str("synthetic"),
            TextSource::File(path) => write!(f, "text:{}", path.display()),
        }
    }
}

/// Loads, encodes and splits the text named by `source`.
///
/// `Auto` uses Jane Austen from [`AUSTEN_DIR`] when both of its files are present, else
/// [`SYNTHETIC_TEXT_CHARS`] characters of synthetic text; `name` and `description` say which was
/// chosen and why. `synthetic_seed` seeds the synthetic generator (ignored for real text).
///
/// Errors: from [`load_austen`] (for `Austen`, a missing file is [`DataError::MissingFile`]
/// quoting [`AUSTEN_INSTALL_HINT`]; with `Auto`, files that are present but malformed are an
/// error, not a silent fallback), from [`read_text_file`], and [`DataError::TextTooShort`].
pub fn load_text(source: &TextSource, synthetic_seed: u64) -> Result<TextData, DataError> {
    match source {
        TextSource::Auto => load_text_auto(Path::new(AUSTEN_DIR), synthetic_seed),
        TextSource::Austen => austen_data(Path::new(AUSTEN_DIR), ""),
        TextSource::Synthetic => synthetic_data(synthetic_seed, "requested"),
        TextSource::File(path) => {
            let text = read_text_file(path)?;
            let name = source.to_string();
            let mut data = TextData::from_text(&name, "", &text)?;
            data.description = format!("text file {}: {}", path.display(), data.summary());
            Ok(data)
        }
    }
}

/// `Auto` against an arbitrary directory (the public entry point passes [`AUSTEN_DIR`]).
fn load_text_auto(dir: &Path, synthetic_seed: u64) -> Result<TextData, DataError> {
    match locate_austen(dir) {
        Ok(()) => austen_data(dir, " (auto: janeaustenr files found)"),
        Err(missing) => synthetic_data(
            synthetic_seed,
            &format!("auto: no Jane Austen text, {missing}"),
        ),
    }
}

fn austen_data(dir: &Path, why: &str) -> Result<TextData, DataError> {
    let text = load_austen(dir)?;
    let mut data = TextData::from_text("austen", "", &text)?;
    data.description = format!(
        "Jane Austen's six novels (R package janeaustenr) from {}{why}: {}",
        dir.display(),
        data.summary()
    );
    Ok(data)
}

fn synthetic_data(seed: u64, why: &str) -> Result<TextData, DataError> {
    let text = synthetic_text(seed, SYNTHETIC_TEXT_CHARS);
    let mut data = TextData::from_text("synthetic", "", &text)?;
    data.description = format!(
        "synthetic English-like text, seed {seed} ({why}): {}; not real text",
        data.summary()
    );
    Ok(data)
}

/// Checks that both database files are in `dir`.
///
/// Errors: [`DataError::MissingFile`] listing the missing ones, with [`AUSTEN_INSTALL_HINT`].
pub fn locate_austen(dir: &Path) -> Result<(), DataError> {
    let missing: Vec<String> = AUSTEN_FILES
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(DataError::MissingFile {
        dir: dir.to_path_buf(),
        what: "Jane Austen (r-cran-janeaustenr)",
        tried: missing,
        hint: Some(AUSTEN_INSTALL_HINT),
    })
}

/// Jane Austen's six novels from the lazy-load database in `dir` (normally [`AUSTEN_DIR`]), in
/// the order of [`AUSTEN_NOVELS`]: each novel's lines joined by `\n`, novels separated by a blank
/// line (`\n\n`), no newline at the end. About 4 M characters.
///
/// Errors: [`DataError::MissingFile`] (with [`AUSTEN_INSTALL_HINT`]) if `Rdata.rdb` or
/// `Rdata.rdx` is missing; [`DataError::Io`], [`DataError::RData`] or
/// [`DataError::RObjectMissing`] if the database cannot be read; [`DataError::RObjectType`] if a
/// novel is not a character vector without `NA`.
pub fn load_austen(dir: &Path) -> Result<String, DataError> {
    locate_austen(dir)?;
    let db = LazyLoadDb::open(dir, "Rdata")?;
    let mut text = String::new();
    for (i, (object, _title)) in AUSTEN_NOVELS.iter().enumerate() {
        let novel = db.get(object)?;
        let wrong = |found: String| DataError::RObjectType {
            path: db.rdb.clone(),
            name: object.to_string(),
            expected: "a character vector without NA (one element per line)",
            found,
        };
        let RValue::Strings(lines) = &novel.value else {
            return Err(wrong(novel.describe()));
        };
        if i > 0 {
            text.push_str("\n\n");
        }
        for (n, line) in lines.iter().enumerate() {
            let line = line
                .as_deref()
                .ok_or_else(|| wrong(format!("NA at line {}", n + 1)))?;
            if n > 0 {
                text.push('\n');
            }
            text.push_str(line);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
