//! A peer's data dir: checked at start (it must be a directory that takes writes, so a full
//! disk or a file in its place is a clear error before the peer joins), and the peer id it
//! keeps across restarts.

use std::io::Write;
use std::path::Path;

use super::error::{check_dir_path, NodeError};
use rumor_proto::wire::PeerId;

/// Reads or creates the peer id stored in `data_dir/peer_id` (a UUIDv7 in text, written
/// atomically).
///
/// # Errors
/// [`NodeError::BadPeerId`] if the file holds no UUID; [`NodeError::DataDir`] if it cannot be
/// read or written.
pub fn load_or_create_peer_id(data_dir: &Path) -> Result<PeerId, NodeError> {
    let path = data_dir.join("peer_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| NodeError::BadPeerId(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = PeerId::from_uuid(uuid::Uuid::now_v7());
            crate::fsutil::write_atomic(&path, id.to_string().as_bytes()).map_err(|e| {
                NodeError::DataDir {
                    path: e.path,
                    source: e.source,
                }
            })?;
            Ok(id)
        }
        Err(source) => Err(NodeError::DataDir { path, source }),
    }
}

/// Checks that `data_dir` exists (creating it) and takes writes: creates a probe file in it,
/// writes a few bytes, fsyncs and removes it. Run at peer start so that an unwritable data dir
/// or a full disk is a clear error before the peer joins, not a warning hours later.
///
/// # Errors
/// [`NodeError::NotADirectory`] when the data dir or a parent is a file;
/// [`NodeError::DataDir`] naming the directory or probe file and the I/O cause.
pub fn probe_data_dir(data_dir: &Path) -> Result<(), NodeError> {
    check_dir_path("data dir", data_dir)?;
    std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let probe = data_dir.join(format!(".write-probe-{}", std::process::id()));
    let err = |source| NodeError::DataDir {
        path: probe.clone(),
        source,
    };
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| {
            f.write_all(b"rumor write probe\n")?;
            f.sync_all()
        })
        .map_err(err);
    let removed = std::fs::remove_file(&probe);
    written?;
    removed.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_that_is_a_file_is_said_plainly() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x")?;
        let err = probe_data_dir(&file).expect_err("a file is not a data dir");
        assert!(matches!(err, NodeError::NotADirectory(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("data dir {} exists and is not a directory", file.display())
        );
        let below = file.join("peer-0");
        let err = probe_data_dir(&below).expect_err("a file as a parent");
        assert_eq!(
            err.to_string(),
            format!(
                "data dir {} cannot be created: {} exists and is not a directory",
                below.display(),
                file.display()
            )
        );
        #[cfg(unix)]
        {
            let dangling = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling)?;
            let err = probe_data_dir(&dangling).expect_err("a dangling link");
            assert!(err.to_string().contains("is not a directory"), "{err}");
        }
        // A missing dir below an existing one is created, as before.
        probe_data_dir(&dir.path().join("a/b"))?;
        assert!(dir.path().join("a/b").is_dir());
        check_dir_path("output dir", dir.path())?;
        Ok(())
    }
}
