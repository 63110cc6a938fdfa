//! Datasets for the peers: what rows a peer trains on and where they came from.
//!
//! Every peer must see the same rows in the same layout, and must be able to work out its own
//! shard without talking to anyone. This module owns that: it loads real data (IDX files such as
//! Fashion-MNIST, see [`idx`]), falls back to a seeded synthetic set when no real data is
//! installed (see [`synthetic`]), and splits rows into disjoint shards and per-epoch orders that
//! depend only on a shared seed (see [`shard`]).
//!
//! Layout everywhere: images are row-major `[len, dim]` `f32` in `[0, 1]`, labels are `[len]`
//! `u8` in `0..classes`.
//!
//! Text for character-level language models lives in [`text`]: a UTF-8 file, Jane Austen's
//! novels (read from the R package's lazy-load database by [`rdata`]) or a seeded synthetic
//! text, encoded as `u32` character ids and split 90/10 into training and validation tokens.

pub mod idx;
pub mod rdata;
pub mod shard;
pub mod synthetic;
pub mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use shard::{epoch_order, shard_indices, Partition, ShardSpec};
pub use synthetic::{SYNTHETIC_TEST_LEN, SYNTHETIC_TRAIN_LEN};

/// Number of values in one image: 28 × 28 grey pixels.
pub const IMAGE_DIM: usize = 784;

/// Number of label classes (Fashion-MNIST, MNIST and the synthetic set all have 10).
pub const NUM_CLASSES: usize = 10;

/// Where the Debian package `dataset-fashion-mnist` installs the gzipped IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The command that installs Fashion-MNIST on Debian, quoted in error messages.
pub const FASHION_MNIST_INSTALL_HINT: &str =
    "install it with `apt-get install dataset-fashion-mnist`";

/// Everything that can go wrong while loading, validating or sharding data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read; this includes a corrupt gzip stream.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying I/O or decompression error.
        #[source]
        source: std::io::Error,
    },

    /// None of the accepted spellings of a required IDX file exists in the directory.
    #[error(
        "no {what} file in {}: tried {}{}",
        .dir.display(),
        .tried.join(", "),
        .hint.map(|h| format!("; {h}")).unwrap_or_default()
    )]
    MissingFile {
        /// The directory that was searched.
        dir: PathBuf,
        /// Which file was wanted, e.g. `train images`.
        what: &'static str,
        /// The file names that were tried, in order.
        tried: Vec<String>,
        /// How to obtain the files, if known (e.g. the apt-get command for Fashion-MNIST).
        hint: Option<&'static str>,
    },

    /// The file ends before its IDX header (magic plus dimension sizes) is complete.
    #[error(
        "{}: too short for an IDX header: need {needed} bytes, found {found}",
        .path.display()
    )]
    TruncatedHeader {
        /// The file being parsed.
        path: PathBuf,
        /// Header length in bytes for this kind of file.
        needed: usize,
        /// Bytes actually present (after decompression).
        found: usize,
    },

    /// The IDX magic number is not the one for the expected kind of file.
    #[error(
        "{}: bad IDX magic 0x{found:08x}, expected 0x{expected:08x} ({kind})",
        .path.display()
    )]
    BadMagic {
        /// The file being parsed.
        path: PathBuf,
        /// The magic number this kind of file must start with.
        expected: u32,
        /// The first four bytes of the file, big-endian.
        found: u32,
        /// A description of the expected kind, e.g. `u8 images [n, rows, cols]`.
        kind: &'static str,
    },

    /// An IDX image file declares zero rows or zero columns per image.
    #[error("{}: invalid image size {rows}x{cols} pixels", .path.display())]
    BadDims {
        /// The file being parsed.
        path: PathBuf,
        /// Declared rows per image.
        rows: u32,
        /// Declared columns per image.
        cols: u32,
    },

    /// An IDX file declares zero items.
    #[error("{}: declares zero items", .path.display())]
    EmptyFile {
        /// The file being parsed.
        path: PathBuf,
    },

    /// The file holds fewer payload bytes than its header declares.
    #[error(
        "{}: truncated: header declares {declared} payload bytes but only {present} are present",
        .path.display()
    )]
    Truncated {
        /// The file being parsed.
        path: PathBuf,
        /// Payload bytes implied by the header (count × rows × cols for images).
        declared: u128,
        /// Payload bytes actually present (after decompression).
        present: u64,
    },

    /// The header declares more payload than a file of this size could possibly hold.
    #[error(
        "{}: header declares {declared} payload bytes, more than this file can hold \
         (at most {limit}); the header is corrupt",
        .path.display()
    )]
    Oversized {
        /// The file being parsed.
        path: PathBuf,
        /// Payload bytes implied by the header.
        declared: u128,
        /// Upper bound on the payload given the file size (for gzip, the deflate ratio limit).
        limit: u128,
    },

    /// The file continues after the payload its header declares.
    #[error(
        "{}: unexpected bytes after the {declared} payload bytes the header declares",
        .path.display()
    )]
    TrailingBytes {
        /// The file being parsed.
        path: PathBuf,
        /// Payload bytes implied by the header.
        declared: u128,
    },

    /// An image file and its label file hold different numbers of items.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Number of images in it.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Number of labels in it.
        labels: usize,
    },

    /// A label is not in `0..classes`.
    #[error("{origin}: label {label} at row {row} is out of range (expected 0..{classes})")]
    LabelOutOfRange {
        /// Where the label came from: a file path or the name of the function that got it.
        origin: String,
        /// 0-based row of the bad label.
        row: usize,
        /// The label value.
        label: u8,
        /// Number of classes; valid labels are `0..classes`.
        classes: usize,
    },

    /// Train and test images in one directory have different sizes.
    #[error(
        "{}: train images have {train} pixels but test images have {test}",
        .dir.display()
    )]
    DimMismatch {
        /// The dataset directory.
        dir: PathBuf,
        /// Values per train image.
        train: usize,
        /// Values per test image.
        test: usize,
    },

    /// Image and label buffers do not describe the same number of rows.
    #[error("images hold {images} values but {labels} labels × dim {dim} need {}", .labels * .dim)]
    BadShape {
        /// Length of the image buffer (values, not rows).
        images: usize,
        /// Number of labels (rows).
        labels: usize,
        /// Values per row.
        dim: usize,
    },

    /// A dataset spec string is not one of the accepted forms.
    #[error(
        "unknown dataset `{value}`: expected one of `auto`, `synthetic`, `fashion-mnist`, `idx:DIR` \
         (images) or `austen`, `text:FILE` (text)"
    )]
    BadDatasetSpec {
        /// The string that failed to parse.
        value: String,
    },

    /// A shard spec string is not of the form `K/N` with `1 <= K <= N`.
    #[error("bad shard `{value}`: {reason}; expected K/N with 1 <= K <= N, e.g. `2/5`")]
    BadShardSpec {
        /// The string that failed to parse.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A partition string is not `iid` or `dirichlet:ALPHA`.
    #[error(
        "bad partition `{value}`: {reason}; expected `iid` or `dirichlet:ALPHA` with ALPHA > 0"
    )]
    BadPartition {
        /// The string that failed to parse.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The Dirichlet concentration is zero, negative, NaN or infinite.
    #[error("Dirichlet alpha must be finite and > 0, got {alpha}")]
    BadAlpha {
        /// The rejected concentration.
        alpha: f64,
    },

    /// The shard count is zero.
    #[error("shard count must be at least 1")]
    ZeroShards,

    /// The 0-based shard index is not below the shard count.
    #[error("shard index {index} (0-based) is out of range for {count} shards")]
    ShardIndexOutOfRange {
        /// The 0-based index given.
        index: usize,
        /// The shard count given.
        count: usize,
    },

    /// The partition leaves some shard with fewer rows than it needs (none, or fewer than one
    /// batch of a Dirichlet partition, after [`shard::MAX_DIRICHLET_DRAWS`] draws).
    #[error(
        "shard {}/{count} would hold fewer than {min_rows} rows: {rows} rows cannot be split into \
         {count} shards of at least {min_rows} rows with this partition (use fewer shards, more \
         data, a larger Dirichlet alpha or a smaller batch)",
        .index + 1
    )]
    ShardTooSmall {
        /// 0-based index of the (first) shard that is too small.
        index: usize,
        /// The shard count.
        count: usize,
        /// Total rows being split.
        rows: usize,
        /// The fewest rows a shard may hold.
        min_rows: usize,
    },

    /// A text file is not valid UTF-8.
    #[error(
        "{}: not valid UTF-8: the first invalid byte is at byte offset {offset}",
        .path.display()
    )]
    NotUtf8 {
        /// The file being read.
        path: PathBuf,
        /// 0-based byte offset of the first byte that is not part of a valid UTF-8 sequence.
        offset: usize,
    },

    /// A text file holds no characters (zero bytes).
    #[error("{}: the text file is empty (0 characters)", .path.display())]
    EmptyText {
        /// The file being read.
        path: PathBuf,
    },

    /// A text is too short to give both its training and its validation part enough characters.
    #[error(
        "{origin}: text of {chars} characters is too short: splitting it 90/10 gives \
         {train} training and {validation} validation characters, need at least {min} in each"
    )]
    TextTooShort {
        /// Where the text came from: a file path or the name of the source.
        origin: String,
        /// Length of the text in characters (Unicode scalar values).
        chars: usize,
        /// Characters the training part would get.
        train: usize,
        /// Characters the validation part would get.
        validation: usize,
        /// Fewest characters each part needs.
        min: usize,
    },

    /// A character to encode is not in the vocabulary.
    #[error(
        "character {ch:?} (U+{:04X}) at character index {index} is not in the vocabulary",
        u32::from(*.ch)
    )]
    UnknownChar {
        /// The character.
        ch: char,
        /// 0-based index, in characters, of its first occurrence in the text being encoded.
        index: usize,
    },

    /// A stored vocabulary string is not strictly increasing (sorted, without repeats).
    #[error(
        "bad vocabulary: character {ch:?} at index {index} is not greater than the one before it \
         (a vocabulary is its distinct characters in increasing order)"
    )]
    BadVocabulary {
        /// The offending character.
        ch: char,
        /// Its 0-based index, in characters, in the stored string.
        index: usize,
    },

    /// A text source string is not one of the accepted forms.
    #[error(
        "unknown text source `{value}`: expected one of `auto`, `austen`, `synthetic`, `text:FILE`"
    )]
    BadTextSource {
        /// The string that failed to parse.
        value: String,
    },

    /// A text sharding string is not one of the accepted forms.
    #[error(
        "bad text sharding `{value}`: {reason}; expected `contiguous`, `interleaved` or \
         `interleaved:BLOCK` with BLOCK >= 1 tokens"
    )]
    BadTextSharding {
        /// The string (or value) that failed to parse.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An R data file (a lazy-load database `.rdb`/`.rdx`, or a serialized object inside it)
    /// is malformed or uses a feature this reader does not support.
    #[error("{}: cannot read R data ({what})", .path.display())]
    RData {
        /// The file being read.
        path: PathBuf,
        /// What was being read, e.g. `the index` or `object emma`.
        what: String,
        /// What is wrong, with the byte offset in the decompressed stream where known.
        #[source]
        source: rdata::RDataError,
    },

    /// An R lazy-load database does not hold an object that was asked for.
    #[error("{}: no object `{name}` in this R lazy-load database (it holds: {})", .path.display(), .available.join(", "))]
    RObjectMissing {
        /// The index file (`.rdx`).
        path: PathBuf,
        /// The object that was asked for.
        name: String,
        /// The objects the index lists.
        available: Vec<String>,
    },

    /// An R object has a different type from the one expected.
    #[error("{}: R object `{name}` is {found}, expected {expected}", .path.display())]
    RObjectType {
        /// The database file (`.rdb`).
        path: PathBuf,
        /// The object's name.
        name: String,
        /// What it was expected to be, e.g. `a character vector without NA`.
        expected: &'static str,
        /// What it is.
        found: String,
    },
}

impl From<crate::fsutil::PathIoError> for DataError {
    fn from(e: crate::fsutil::PathIoError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// A labelled set: `images` is row-major `[len, dim]` `f32` in `[0, 1]`, `labels` is `[len]` in
/// `0..classes`.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixel values, row-major `[len, dim]`, each in `[0, 1]`.
    pub images: Vec<f32>,
    /// Class of each row, `[len]`, each in `0..classes`.
    pub labels: Vec<u8>,
    /// Values per row (784 for 28 × 28 images).
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Builds a dataset after checking the shapes: `images.len() == labels.len() * dim` and every
    /// label `< classes`. Errors: [`DataError::BadShape`], [`DataError::LabelOutOfRange`].
    /// Pixel values are not checked.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u8>,
        dim: usize,
        classes: usize,
    ) -> Result<Self, DataError> {
        if labels.len().checked_mul(dim) != Some(images.len()) {
            return Err(DataError::BadShape {
                images: images.len(),
                labels: labels.len(),
                dim,
            });
        }
        check_labels(&labels, classes, "Dataset::new")?;
        Ok(Dataset {
            images,
            labels,
            dim,
            classes,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of one row, `[dim]`.
    ///
    /// # Panics
    /// If `row >= self.len()`.
    pub fn image(&self, row: usize) -> &[f32] {
        &self.images[row * self.dim..(row + 1) * self.dim]
    }

    /// A new dataset holding the given rows in the given order (repeats allowed).
    ///
    /// # Panics
    /// If any index is `>= self.len()`; indices come from this process (shards, epoch orders).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        self.gather_batch(indices, &mut images, &mut labels);
        Dataset {
            images,
            labels,
            dim: self.dim,
            classes: self.classes,
        }
    }

    /// Clears `images_out` and `labels_out`, then fills them with the given rows in order:
    /// `images_out` becomes `[indices.len(), dim]` row-major, `labels_out` `[indices.len()]`.
    /// Reusing the buffers across batches avoids reallocating.
    ///
    /// # Panics
    /// If any index is `>= self.len()`.
    pub fn gather_batch(
        &self,
        indices: &[usize],
        images_out: &mut Vec<f32>,
        labels_out: &mut Vec<u8>,
    ) {
        images_out.clear();
        labels_out.clear();
        images_out.reserve(indices.len() * self.dim);
        labels_out.reserve(indices.len());
        for &row in indices {
            images_out.extend_from_slice(self.image(row));
            labels_out.push(self.labels[row]);
        }
    }
}

/// Train and test sets plus a human-readable description of where they came from.
#[derive(Clone, Debug)]
pub struct TrainTest {
    /// Rows to train on (before sharding).
    pub train: Dataset,
    /// Held-out rows for measuring accuracy.
    pub test: Dataset,
    /// Short name of the data actually used: `fashion-mnist`, `synthetic` or `idx:DIR`.
    pub name: String,
    /// One line saying where the data came from, its size, and (for `auto`) why it was chosen.
    pub description: String,
}

/// Which data to load: `auto | synthetic | fashion-mnist | idx:DIR` for image models,
/// `auto | synthetic | austen | text:FILE` for text models (`auto` and `synthetic` mean the
/// kind of data the model trains on; [`DatasetSpec::text_source`]).
///
/// Parses from those strings ([`FromStr`] errors with [`DataError::BadDatasetSpec`], naming the
/// bad value and the accepted forms); [`fmt::Display`] prints the same forms back.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetSpec {
    /// Fashion-MNIST from [`FASHION_MNIST_DIR`] if its files are present, else synthetic.
    Auto,
    /// The seeded synthetic set ([`synthetic`]).
    Synthetic,
    /// Fashion-MNIST from [`FASHION_MNIST_DIR`]; an error if it is not installed.
    FashionMnist,
    /// IDX files (MNIST layout and names) from the given directory.
    Idx(PathBuf),
    /// Jane Austen's six novels (text; [`text::AUSTEN_DIR`]).
    Austen,
    /// Any UTF-8 text file (text).
    Text(PathBuf),
}

impl DatasetSpec {
    /// What a text model reads for this spec; None for image-only data.
    pub fn text_source(&self) -> Option<text::TextSource> {
        match self {
            DatasetSpec::Auto => Some(text::TextSource::Auto),
            DatasetSpec::Synthetic => Some(text::TextSource::Synthetic),
            DatasetSpec::Austen => Some(text::TextSource::Austen),
            DatasetSpec::Text(path) => Some(text::TextSource::File(path.clone())),
            DatasetSpec::FashionMnist | DatasetSpec::Idx(_) => None,
        }
    }

    /// True for data only a text model reads (`austen`, `text:FILE`).
    pub fn is_text_only(&self) -> bool {
        matches!(self, DatasetSpec::Austen | DatasetSpec::Text(_))
    }
}

impl FromStr for DatasetSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DatasetSpec::Auto),
            "synthetic" => Ok(DatasetSpec::Synthetic),
            "fashion-mnist" => Ok(DatasetSpec::FashionMnist),
            "austen" => Ok(DatasetSpec::Austen),
            _ => match (s.strip_prefix("idx:"), s.strip_prefix("text:")) {
                (Some(dir), _) if !dir.is_empty() => Ok(DatasetSpec::Idx(PathBuf::from(dir))),
                (_, Some(file)) if !file.is_empty() => Ok(DatasetSpec::Text(PathBuf::from(file))),
                _ => Err(DataError::BadDatasetSpec {
                    value: s.to_string(),
                }),
            },
        }
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSpec::Auto => f.write_str("auto"),
            DatasetSpec::Synthetic => f.write_str("synthetic"),
            DatasetSpec::FashionMnist => f.write_str("fashion-mnist"),
            DatasetSpec::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DatasetSpec::Austen => f.write_str("austen"),
            DatasetSpec::Text(file) => write!(f, "text:{}", file.display()),
        }
    }
}

/// Loads the data named by `spec`.
///
/// `Auto` uses [`FASHION_MNIST_DIR`] when its four files are present, else the synthetic set; the
/// returned `name`/`description` say which was chosen and why. `synthetic_seed` seeds the synthetic
/// generator (ignored for real data). Real data has `dim = rows × cols` of its files (784 for
/// MNIST-style files) and 10 classes; synthetic data has [`SYNTHETIC_TRAIN_LEN`] train and
/// [`SYNTHETIC_TEST_LEN`] test rows of dim [`IMAGE_DIM`].
///
/// Errors: any [`DataError`] from [`idx::load_dir`] — a missing file ([`DataError::MissingFile`],
/// for Fashion-MNIST mentioning `apt-get install dataset-fashion-mnist`), or a malformed one. With
/// `Auto`, files that are present but malformed are an error, not a silent fallback.
pub fn load(spec: &DatasetSpec, synthetic_seed: u64) -> Result<TrainTest, DataError> {
    match spec {
        DatasetSpec::Auto => load_auto(Path::new(FASHION_MNIST_DIR), synthetic_seed),
        DatasetSpec::Synthetic => Ok(synthetic_train_test(synthetic_seed, "requested")),
        DatasetSpec::FashionMnist => {
            load_idx_named(Path::new(FASHION_MNIST_DIR), "fashion-mnist", "", true)
        }
        DatasetSpec::Idx(dir) => load_idx_named(dir, &format!("idx:{}", dir.display()), "", false),
        DatasetSpec::Austen | DatasetSpec::Text(_) => Err(DataError::BadDatasetSpec {
            value: format!("{spec} (text, not images)"),
        }),
    }
}

/// `Auto` against an arbitrary directory (the public entry point passes [`FASHION_MNIST_DIR`]).
fn load_auto(dir: &Path, synthetic_seed: u64) -> Result<TrainTest, DataError> {
    match idx::locate(dir, Some(FASHION_MNIST_INSTALL_HINT)) {
        Ok(_) => load_idx_named(
            dir,
            "fashion-mnist",
            " (auto: Fashion-MNIST files found)",
            true,
        ),
        Err(missing) => Ok(synthetic_train_test(
            synthetic_seed,
            &format!("auto: no real data, {missing}"),
        )),
    }
}

fn load_idx_named(
    dir: &Path,
    name: &str,
    why: &str,
    fashion: bool,
) -> Result<TrainTest, DataError> {
    let hint = fashion.then_some(FASHION_MNIST_INSTALL_HINT);
    let (train, test) = idx::load_dir(dir, hint)?;
    let what = if fashion { "Fashion-MNIST" } else { "IDX data" };
    let description = format!(
        "{what} from {}{why}: {} train / {} test rows, {} values per image, {} classes",
        dir.display(),
        train.len(),
        test.len(),
        train.dim,
        train.classes
    );
    Ok(TrainTest {
        train,
        test,
        name: name.to_string(),
        description,
    })
}

fn synthetic_train_test(seed: u64, why: &str) -> TrainTest {
    let (train, test) = synthetic::generate(seed, SYNTHETIC_TRAIN_LEN, SYNTHETIC_TEST_LEN);
    let description = format!(
        "synthetic data, seed {seed} ({why}): {} train / {} test rows, {} values per image, \
         {} classes; not real images",
        train.len(),
        test.len(),
        train.dim,
        train.classes
    );
    TrainTest {
        train,
        test,
        name: "synthetic".to_string(),
        description,
    }
}

/// Checks that every label is `< classes`; `origin` names the source in the error.
pub(crate) fn check_labels(labels: &[u8], classes: usize, origin: &str) -> Result<(), DataError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, &label)| usize::from(label) >= classes)
    {
        Some((row, &label)) => Err(DataError::LabelOutOfRange {
            origin: origin.to_string(),
            row,
            label,
            classes,
        }),
        None => Ok(()),
    }
}

/// A ChaCha8 generator keyed by (`seed`, `domain`, `extra`): different domains (sharding, epoch
/// orders, synthetic data) and different `extra` values (epochs) give independent streams.
pub(crate) fn seeded_rng(seed: u64, domain: [u8; 8], extra: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&domain);
    key[16..24].copy_from_slice(&extra.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests;
