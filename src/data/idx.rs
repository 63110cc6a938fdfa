//! Reader for IDX files, the format of MNIST and Fashion-MNIST.
//!
//! Real data arrives as four IDX files (train/test × images/labels), gzipped or raw, under either
//! of two common spellings. Files come from outside the process, so everything is validated and
//! every problem is a [`DataError`] naming the file; nothing here panics on bad input, and no
//! allocation is larger than what the file can actually hold (a header claiming 2^32 images is
//! rejected or read incrementally, never pre-allocated).
//!
//! Format (big-endian): a 4-byte magic `0x0000_08DD` (`08` = unsigned bytes, `DD` = number of
//! dimensions), then one `u32` per dimension, then the payload. Images are `0x0000_0803`
//! `[n, rows, cols]`, labels `0x0000_0801` `[n]`.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{check_labels, DataError, Dataset, NUM_CLASSES};

/// Magic number of an IDX file of `u8` images `[n, rows, cols]`.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file of `u8` labels `[n]`.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The first two bytes of every gzip stream; compression is detected by these, not the file name.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `m` bytes holds at
/// most `m × 1032` bytes; larger declared sizes are rejected before reading.
const MAX_DEFLATE_RATIO: u128 = 1032;

/// Decoded IDX image file: `pixels` is row-major `[count, rows, cols]` raw bytes (0..=255).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Pixel rows per image.
    pub rows: usize,
    /// Pixel columns per image.
    pub cols: usize,
    /// `count × rows × cols` bytes, image after image, each image row-major.
    pub pixels: Vec<u8>,
}

/// Paths of the four files of an MNIST-layout dataset directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    /// Training images (`train-images-idx3-ubyte` or a variant).
    pub train_images: PathBuf,
    /// Training labels (`train-labels-idx1-ubyte` or a variant).
    pub train_labels: PathBuf,
    /// Test images (`t10k-images-idx3-ubyte` or a variant).
    pub test_images: PathBuf,
    /// Test labels (`t10k-labels-idx1-ubyte` or a variant).
    pub test_labels: PathBuf,
}

/// The two kinds of IDX file this reader accepts.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IMAGES_MAGIC,
            Kind::Labels => LABELS_MAGIC,
        }
    }

    fn ndims(self) -> usize {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Images => "u8 images [n, rows, cols]",
            Kind::Labels => "u8 labels [n]",
        }
    }
}

/// The file names tried for one dataset file, in order: `{prefix}-{suffix}`, the same with `.gz`,
/// `{prefix}.{suffix}`, the same with `.gz`. E.g. for (`train-images`, `idx3-ubyte`):
/// `train-images-idx3-ubyte`, `train-images-idx3-ubyte.gz`, `train-images.idx3-ubyte`,
/// `train-images.idx3-ubyte.gz`.
pub fn candidate_names(prefix: &str, suffix: &str) -> Vec<String> {
    let dash = format!("{prefix}-{suffix}");
    let dot = format!("{prefix}.{suffix}");
    vec![
        dash.clone(),
        format!("{dash}.gz"),
        dot.clone(),
        format!("{dot}.gz"),
    ]
}

/// Finds the four dataset files under `dir`, accepting every spelling of [`candidate_names`].
///
/// Errors: [`DataError::MissingFile`] for the first file none of whose names exists, naming `dir`,
/// the names tried and `hint` (how to install the data), if given.
pub fn locate(dir: &Path, hint: Option<&'static str>) -> Result<IdxFiles, DataError> {
    let find = |prefix: &str, suffix: &str, what: &'static str| {
        let tried = candidate_names(prefix, suffix);
        match tried
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
        {
            Some(path) => Ok(path),
            None => Err(DataError::MissingFile {
                dir: dir.to_path_buf(),
                what,
                tried,
                hint,
            }),
        }
    };
    Ok(IdxFiles {
        train_images: find("train-images", "idx3-ubyte", "train images")?,
        train_labels: find("train-labels", "idx1-ubyte", "train labels")?,
        test_images: find("t10k-images", "idx3-ubyte", "test images")?,
        test_labels: find("t10k-labels", "idx1-ubyte", "test labels")?,
    })
}

/// Loads train and test sets from an MNIST-layout directory: pixels scaled to `[0, 1]` by /255,
/// `dim = rows × cols`, `classes = 10`.
///
/// Errors: [`DataError::MissingFile`] (see [`locate`]), anything from [`read_images`] and
/// [`read_labels`], [`DataError::CountMismatch`] when an image file and its label file differ in
/// length, [`DataError::DimMismatch`] when train and test images differ in size.
pub fn load_dir(dir: &Path, hint: Option<&'static str>) -> Result<(Dataset, Dataset), DataError> {
    let files = locate(dir, hint)?;
    let train = load_pair(&files.train_images, &files.train_labels)?;
    let test = load_pair(&files.test_images, &files.test_labels)?;
    if train.dim != test.dim {
        return Err(DataError::DimMismatch {
            dir: dir.to_path_buf(),
            train: train.dim,
            test: test.dim,
        });
    }
    Ok((train, test))
}

/// Reads one image file and its label file into a [`Dataset`] (pixels / 255).
///
/// Errors: as [`read_images`] and [`read_labels`], plus [`DataError::CountMismatch`].
pub fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    let dim = images.rows * images.cols;
    let pixels = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Dataset::new(pixels, labels, dim, NUM_CLASSES)
}

/// Reads an IDX image file (gzipped or raw, detected by content).
///
/// Errors, each naming the file: [`DataError::Io`] (unreadable file or corrupt gzip),
/// [`DataError::TruncatedHeader`], [`DataError::BadMagic`] (not `0x00000803`),
/// [`DataError::EmptyFile`] (zero images), [`DataError::BadDims`] (zero rows or columns),
/// [`DataError::Truncated`], [`DataError::Oversized`], [`DataError::TrailingBytes`].
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let (reader, gz, file_len) = open(path)?;
    let (dims, pixels) = parse(reader, Kind::Images, file_len, gz, path)?;
    Ok(images_from(dims, pixels))
}

/// Reads an IDX label file (gzipped or raw, detected by content) and checks every label is
/// `< 10`. Returns `[n]` labels.
///
/// Errors: as [`read_images`] (magic must be `0x00000801`), plus [`DataError::LabelOutOfRange`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let (reader, gz, file_len) = open(path)?;
    let (_, labels) = parse(reader, Kind::Labels, file_len, gz, path)?;
    check_labels(&labels, NUM_CLASSES, &path.display().to_string())?;
    Ok(labels)
}

/// Parses IDX image bytes already in memory (gzipped or raw); `origin` only names the source in
/// errors. Errors: as [`read_images`].
pub fn parse_images(bytes: &[u8], origin: &Path) -> Result<IdxImages, DataError> {
    let (reader, gz) = from_bytes(bytes);
    let (dims, pixels) = parse(reader, Kind::Images, bytes.len() as u64, gz, origin)?;
    Ok(images_from(dims, pixels))
}

/// Parses IDX label bytes already in memory (gzipped or raw) and checks every label is `< 10`;
/// `origin` only names the source in errors. Errors: as [`read_labels`].
pub fn parse_labels(bytes: &[u8], origin: &Path) -> Result<Vec<u8>, DataError> {
    let (reader, gz) = from_bytes(bytes);
    let (_, labels) = parse(reader, Kind::Labels, bytes.len() as u64, gz, origin)?;
    check_labels(&labels, NUM_CLASSES, &origin.display().to_string())?;
    Ok(labels)
}

fn images_from(dims: [u32; 3], pixels: Vec<u8>) -> IdxImages {
    // `parse` has checked that count × rows × cols bytes are present, so each fits in usize.
    IdxImages {
        count: dims[0] as usize,
        rows: dims[1] as usize,
        cols: dims[2] as usize,
        pixels,
    }
}

fn from_bytes(bytes: &[u8]) -> (Box<dyn Read + '_>, bool) {
    if bytes.starts_with(&GZIP_MAGIC) {
        (Box::new(GzDecoder::new(bytes)), true)
    } else {
        (Box::new(bytes), false)
    }
}

/// Opens a file and wraps it in a gzip decoder if it starts with the gzip magic. Returns the
/// reader, whether it is gzipped, and the file size in bytes.
fn open(path: &Path) -> Result<(Box<dyn Read>, bool, u64), DataError> {
    let io_err = crate::fsutil::at(path);
    let mut file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut head = [0u8; 2];
    let got = read_full(&mut file, &mut head).map_err(io_err)?;
    let reader = Cursor::new(head[..got].to_vec()).chain(file);
    if head[..got] == GZIP_MAGIC {
        Ok((Box::new(GzDecoder::new(reader)), true, file_len))
    } else {
        Ok((Box::new(reader), false, file_len))
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Parses one IDX stream of the given kind. `source_len` is the size of the stored (possibly
/// compressed) data and bounds what the header may declare. Returns the dimensions (unused
/// trailing entries zero) and the payload.
fn parse(
    mut reader: Box<dyn Read + '_>,
    kind: Kind,
    source_len: u64,
    gz: bool,
    path: &Path,
) -> Result<([u32; 3], Vec<u8>), DataError> {
    let io_err = crate::fsutil::at(path);
    let ndims = kind.ndims();
    let header_len = 4 + 4 * ndims;
    let mut header = [0u8; 16];
    let got = read_full(&mut reader, &mut header[..header_len]).map_err(io_err)?;
    if got < header_len {
        return Err(DataError::TruncatedHeader {
            path: path.to_path_buf(),
            needed: header_len,
            found: got,
        });
    }
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let magic = word(0);
    if magic != kind.magic() {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: kind.magic(),
            found: magic,
            kind: kind.describe(),
        });
    }
    let mut dims = [0u32; 3];
    for (i, dim) in dims.iter_mut().take(ndims).enumerate() {
        *dim = word(4 + 4 * i);
    }
    if dims[0] == 0 {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if matches!(kind, Kind::Images) && (dims[1] == 0 || dims[2] == 0) {
        return Err(DataError::BadDims {
            path: path.to_path_buf(),
            rows: dims[1],
            cols: dims[2],
        });
    }
    let declared: u128 = dims.iter().take(ndims).map(|&d| u128::from(d)).product();

    // Bound the declared size by what the stored bytes can hold before reading anything more.
    let stored_payload = u128::from(source_len.saturating_sub(header_len as u64));
    if gz {
        let limit = u128::from(source_len) * MAX_DEFLATE_RATIO;
        if declared > limit {
            return Err(DataError::Oversized {
                path: path.to_path_buf(),
                declared,
                limit,
            });
        }
    } else if declared > stored_payload {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared,
            present: stored_payload as u64,
        });
    } else if declared < stored_payload {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            declared,
        });
    }
    let declared_u64 = u64::try_from(declared).map_err(|_| DataError::Oversized {
        path: path.to_path_buf(),
        declared,
        limit: u128::from(u64::MAX),
    })?;
    let declared_usize = usize::try_from(declared).map_err(|_| DataError::Oversized {
        path: path.to_path_buf(),
        declared,
        limit: usize::MAX as u128,
    })?;

    // Raw data: the declared size equals the bytes on disk, so reserving it is safe. Gzip: grow
    // with the data actually decompressed (bounded by `take`), never by the header's claim.
    let mut payload = Vec::new();
    if !gz {
        payload.reserve_exact(declared_usize);
    }
    reader
        .by_ref()
        .take(declared_u64)
        .read_to_end(&mut payload)
        .map_err(io_err)?;
    if payload.len() < declared_usize {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared,
            present: payload.len() as u64,
        });
    }
    // Read to the end: for gzip this also verifies the CRC trailer.
    let mut extra = [0u8; 1];
    if read_full(&mut reader, &mut extra).map_err(io_err)? > 0 {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            declared,
        });
    }
    Ok((dims, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use proptest::prelude::*;
    use std::io::Write;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn image_bytes(count: u32, rows: u32, cols: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
        for d in [count, rows, cols] {
            out.extend_from_slice(&d.to_be_bytes());
        }
        let n = (count * rows * cols) as usize;
        out.extend((0..n).map(fill));
        out
    }

    fn label_bytes(labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        out.extend_from_slice(labels);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).expect("write to Vec");
        enc.finish().expect("finish to Vec")
    }

    /// Writes a small MNIST-layout directory: 5 train and 3 test 2x3 images.
    fn write_dir(dir: &Path, dot_spelling: bool, gz: bool) -> std::io::Result<()> {
        let files: [(&str, &str, Vec<u8>); 4] = [
            (
                "train-images",
                "idx3-ubyte",
                image_bytes(5, 2, 3, |i| (i * 7 % 256) as u8),
            ),
            ("train-labels", "idx1-ubyte", label_bytes(&[0, 1, 9, 3, 4])),
            (
                "t10k-images",
                "idx3-ubyte",
                image_bytes(3, 2, 3, |i| 255 - i as u8),
            ),
            ("t10k-labels", "idx1-ubyte", label_bytes(&[5, 6, 7])),
        ];
        for (prefix, suffix, bytes) in files {
            let sep = if dot_spelling { "." } else { "-" };
            let mut name = format!("{prefix}{sep}{suffix}");
            let data = if gz {
                name.push_str(".gz");
                gzip(&bytes)
            } else {
                bytes
            };
            std::fs::write(dir.join(name), data)?;
        }
        Ok(())
    }

    #[test]
    fn round_trip_all_spellings_gz_and_raw() -> TestResult {
        for dot in [false, true] {
            for gz in [false, true] {
                let tmp = tempfile::tempdir()?;
                write_dir(tmp.path(), dot, gz)?;
                let (train, test) = load_dir(tmp.path(), None)?;
                assert_eq!((train.len(), train.dim, train.classes), (5, 6, 10));
                assert_eq!(train.labels, vec![0, 1, 9, 3, 4]);
                assert_eq!(train.images[1], 7.0 / 255.0);
                assert_eq!(train.images[29], 203.0 / 255.0);
                assert_eq!(test.len(), 3);
                assert_eq!(test.labels, vec![5, 6, 7]);
                assert_eq!(test.images[0], 1.0);
                assert_eq!(test.images[17], (255 - 17) as f32 / 255.0);
            }
        }
        Ok(())
    }

    #[test]
    fn gzip_detected_by_content_not_name() -> TestResult {
        let tmp = tempfile::tempdir()?;
        // Gzipped data without `.gz`, raw data with `.gz`.
        let zipped = tmp.path().join("images-no-suffix");
        std::fs::write(&zipped, gzip(&image_bytes(2, 1, 1, |i| i as u8)))?;
        let raw = tmp.path().join("labels.gz");
        std::fs::write(&raw, label_bytes(&[3, 4]))?;
        assert_eq!(read_images(&zipped)?.pixels, vec![0, 1]);
        assert_eq!(read_labels(&raw)?, vec![3, 4]);
        Ok(())
    }

    #[test]
    fn missing_file_names_dir_and_all_spellings() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let err = locate(tmp.path(), Some("install it somehow")).expect_err("empty dir");
        let msg = err.to_string();
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        for name in candidate_names("train-images", "idx3-ubyte") {
            assert!(msg.contains(&name), "{msg}");
        }
        assert!(msg.contains("install it somehow"), "{msg}");
        Ok(())
    }

    #[test]
    fn truncated_files_are_errors() {
        let origin = Path::new("x-images");
        let full = image_bytes(4, 2, 2, |i| i as u8);
        for cut in [0, 3, 10, 15] {
            let err = parse_images(&full[..cut], origin).expect_err("short header");
            assert!(matches!(err, DataError::TruncatedHeader { .. }), "{err}");
        }
        let err = parse_images(&full[..full.len() - 1], origin).expect_err("short payload");
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("x-images"), "{err}");

        let zipped = gzip(&full[..full.len() - 5]);
        let err = parse_images(&zipped, origin).expect_err("short gz payload");
        assert!(
            matches!(err, DataError::Truncated { present: 11, .. }),
            "{err}"
        );
        // A gzip stream cut in the middle: an error, whatever the decoder reports.
        let zipped = gzip(&full);
        assert!(parse_images(&zipped[..zipped.len() / 2], origin).is_err());
        assert!(parse_images(&zipped[..zipped.len() - 2], origin).is_err());
    }

    #[test]
    fn trailing_bytes_are_errors() {
        let mut bytes = label_bytes(&[1, 2]);
        bytes.push(3);
        let origin = Path::new("l");
        assert!(matches!(
            parse_labels(&bytes, origin),
            Err(DataError::TrailingBytes { .. })
        ));
        assert!(matches!(
            parse_labels(&gzip(&bytes), origin),
            Err(DataError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn bad_magic_is_an_error_naming_the_file() {
        let origin = Path::new("/data/t10k-labels-idx1-ubyte");
        // Labels where images are expected and vice versa.
        let err = parse_images(&label_bytes(&[1, 2, 3, 4, 5, 6, 7, 8]), origin).expect_err("magic");
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    found: LABELS_MAGIC,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
        assert!(msg.contains("0x00000803"), "{msg}");
        let err = parse_labels(&image_bytes(1, 1, 1, |_| 0), origin).expect_err("magic");
        assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
        let err = parse_labels(&gzip(b"not an idx file"), origin).expect_err("magic");
        assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn huge_declared_count_does_not_allocate() {
        let origin = Path::new("huge");
        // 2^32 - 1 images of 28x28 in a 16-byte header plus a few pixels.
        let mut bytes = image_bytes(1, 28, 28, |_| 0);
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = parse_images(&bytes, origin).expect_err("raw huge");
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let err = parse_images(&gzip(&bytes), origin).expect_err("gz huge");
        assert!(matches!(err, DataError::Oversized { .. }), "{err}");
        // Largest possible declared size: u32::MAX in every dimension.
        let mut bytes = image_bytes(1, 1, 1, |_| 0);
        for i in 1..4 {
            bytes[4 * i..4 * i + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        }
        assert!(parse_images(&bytes, origin).is_err());
        assert!(parse_images(&gzip(&bytes), origin).is_err());
        // Labels claiming 2^32 - 1 entries.
        let mut bytes = label_bytes(&[1, 2]);
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            parse_labels(&bytes, origin),
            Err(DataError::Truncated { .. })
        ));
        // Within the deflate bound but far more than is present: read incrementally, then fail.
        // (Pseudo-random pixels, so the gzip file is not tiny and 1000 images stay in bound.)
        let mut bytes = image_bytes(2, 28, 28, |i| {
            ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8
        });
        bytes[4..8].copy_from_slice(&1000u32.to_be_bytes());
        let err = parse_images(&gzip(&bytes), origin).expect_err("gz short");
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    }

    #[test]
    fn zero_sizes_are_errors() {
        let origin = Path::new("z");
        assert!(matches!(
            parse_images(&image_bytes(0, 28, 28, |_| 0), origin),
            Err(DataError::EmptyFile { .. })
        ));
        assert!(matches!(
            parse_images(&image_bytes(3, 0, 28, |_| 0), origin),
            Err(DataError::BadDims { .. })
        ));
        assert!(matches!(
            parse_labels(&label_bytes(&[]), origin),
            Err(DataError::EmptyFile { .. })
        ));
    }

    #[test]
    fn label_out_of_range_is_an_error() {
        let err = parse_labels(&label_bytes(&[0, 9, 10]), Path::new("lbl")).expect_err("label 10");
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    row: 2,
                    label: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("lbl"), "{err}");
    }

    #[test]
    fn count_mismatch_is_an_error() -> TestResult {
        let tmp = tempfile::tempdir()?;
        write_dir(tmp.path(), false, true)?;
        std::fs::write(
            tmp.path().join("t10k-labels-idx1-ubyte.gz"),
            gzip(&label_bytes(&[1, 2])),
        )?;
        let err = load_dir(tmp.path(), None).expect_err("3 images, 2 labels");
        assert!(matches!(err, DataError::CountMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
        Ok(())
    }

    #[test]
    fn train_test_dim_mismatch_is_an_error() -> TestResult {
        let tmp = tempfile::tempdir()?;
        write_dir(tmp.path(), false, false)?;
        std::fs::write(
            tmp.path().join("t10k-images-idx3-ubyte"),
            image_bytes(3, 3, 3, |_| 0),
        )?;
        let err = load_dir(tmp.path(), None).expect_err("dims differ");
        assert!(
            matches!(
                err,
                DataError::DimMismatch {
                    train: 6,
                    test: 9,
                    ..
                }
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn unreadable_path_is_io_error() {
        let err = read_images(Path::new("/nonexistent/rumor/x")).expect_err("missing");
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/rumor/x"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let origin = Path::new("random");
            let _ = parse_images(&bytes, origin);
            let _ = parse_labels(&bytes, origin);
            let _ = parse_images(&gzip(&bytes), origin);
            let _ = parse_labels(&gzip(&bytes), origin);
        }

        #[test]
        fn random_payloads_after_valid_magic_never_panic(
            dims in proptest::array::uniform3(0u32..8),
            huge in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            gz_prefix in any::<bool>(),
        ) {
            let origin = Path::new("random");
            let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
            for d in dims {
                let d = if huge { d.wrapping_mul(0x2000_0001) } else { d };
                bytes.extend_from_slice(&d.to_be_bytes());
            }
            bytes.extend_from_slice(&tail);
            let _ = parse_images(&bytes, origin);
            let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
            labels.extend_from_slice(&dims[0].to_be_bytes());
            labels.extend_from_slice(&tail);
            let _ = parse_labels(&labels, origin);
            if gz_prefix {
                // Gzip magic followed by garbage.
                let mut fake = GZIP_MAGIC.to_vec();
                fake.extend_from_slice(&tail);
                let _ = parse_images(&fake, origin);
            }
            let _ = parse_images(&gzip(&bytes), origin);
        }

        #[test]
        fn valid_files_round_trip(count in 1u32..6, rows in 1u32..5, cols in 1u32..5, gz in any::<bool>()) {
            let bytes = image_bytes(count, rows, cols, |i| (i * 31 % 256) as u8);
            let input = if gz { gzip(&bytes) } else { bytes.clone() };
            let parsed = parse_images(&input, Path::new("ok"));
            prop_assert!(parsed.is_ok());
            if let Ok(img) = parsed {
                prop_assert_eq!((img.count, img.rows, img.cols), (count as usize, rows as usize, cols as usize));
                prop_assert_eq!(&img.pixels[..], &bytes[16..]);
            }
        }
    }
}
