//! File-system chores done one way across the crate: replacing a file atomically, and I/O errors
//! that name the path they concern.
//!
//! A file is replaced by writing a temporary file in the same directory, fsyncing it and
//! renaming it over the target, so a crash leaves either the old contents or the new, never a
//! torn file. The temporary file is created with mode 0600 (tempfile's default), so a private
//! key is never readable by others, even for a moment.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O error on a named file or directory. Its message names the path; the I/O error itself
/// is its [`source`](std::error::Error::source), so a printer that walks the cause chain says
/// each once.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on {}", path.display())]
pub struct PathIoError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// A closure for `map_err` that names `path` in an [`std::io::Error`]; it can be reused for
/// every operation on the same path.
pub fn at(path: &Path) -> impl Fn(std::io::Error) -> PathIoError + Copy + '_ {
    move |source| PathIoError {
        path: path.to_path_buf(),
        source,
    }
}

/// How [`write_atomic_with`] treats the file it replaces.
#[derive(Clone, Copy, Debug)]
pub struct AtomicWrite {
    /// Unix permission bits of the new file (e.g. `0o600`); `None`: the temporary file's 0600.
    /// Ignored off Unix.
    pub mode: Option<u32>,
    /// Whether an existing file may be replaced; if not, an existing file is an error of kind
    /// [`std::io::ErrorKind::AlreadyExists`] naming it, and nothing is written.
    pub overwrite: bool,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        Self {
            mode: None,
            overwrite: true,
        }
    }
}

/// Replaces `path` with `bytes` atomically: writes `.{name}.XXXXXX.tmp` beside it, fsyncs it
/// and renames it over `path`.
///
/// # Errors
/// [`PathIoError`] naming the directory (temporary file not created), the temporary file
/// (write or fsync failed) or `path` (rename failed). On any error `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathIoError> {
    write_atomic_with(path, bytes, AtomicWrite::default())
}

/// [`write_atomic`] with a file mode and a choice about overwriting.
///
/// # Errors
/// As [`write_atomic`]; with `overwrite` false, an existing `path` gives an error of kind
/// [`std::io::ErrorKind::AlreadyExists`] naming `path`.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    options: AtomicWrite,
) -> Result<(), PathIoError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(at(dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|source| at(tmp.path())(source))?;
    if let Some(mode) = options.mode {
        set_mode(tmp.path(), mode)?;
    }
    let persisted = if options.overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    persisted.map(drop).map_err(|e| at(path)(e.error))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), PathIoError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(at(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), PathIoError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn replaces_a_file_and_leaves_no_temporary_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("peer_id");
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two")?;
        assert_eq!(std::fs::read(&path)?, b"two");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn refuses_to_overwrite_when_asked_not_to() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ca.key");
        let options = AtomicWrite {
            mode: Some(0o600),
            overwrite: false,
        };
        write_atomic_with(&path, b"key", options)?;
        let err = write_atomic_with(&path, b"other", options).expect_err("exists");
        assert_eq!(err.source.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(err.path, path);
        assert_eq!(std::fs::read(&path)?, b"key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        Ok(())
    }

    #[test]
    fn the_message_names_the_path_and_not_the_cause() {
        let e = at(Path::new("/data/x"))(std::io::Error::from_raw_os_error(28));
        assert_eq!(e.to_string(), "I/O error on /data/x");
        assert!(std::error::Error::source(&e).is_some());
    }
}
