//! A peer's data dir: checked at start (it must be a directory that takes writes, so a full
//! disk or a file in its place is a clear error before the peer joins), and the identity seed
//! it keeps across restarts, from which (with the certificate's key) the peer id derives.

use std::io::Write;
use std::path::Path;

use tracing::info;

use super::error::{check_dir_path, NodeError};
use rumor_proto::auth::KeyId;
use rumor_proto::wire::PeerId;

/// The identity seed's file name in the data dir: 8 random bytes as 16 hex digits.
pub const IDENTITY_SEED_FILE: &str = "identity_seed";
/// Where data dirs from before the seed kept the peer id (a UUID in text). Read once to carry
/// the identity over; never written.
pub const LEGACY_PEER_ID_FILE: &str = "peer_id";

/// The peer id of the certificate with key id `key` running from `data_dir`:
/// [`PeerId::bound`] to the seed in `data_dir/identity_seed`, which is created (8 random bytes,
/// written atomically and synced) when missing. So the id lives as long as the data dir and the
/// certificate: a lost data dir is a new seed and a new id, whose versions start afresh without
/// ever reusing one of the old id's.
///
/// A data dir from before the seed (a `peer_id` file with a UUID and no seed) keeps the UUID's
/// last 8 bytes as its seed, so it stays one identity from then on.
///
/// # Errors
/// [`NodeError::BadIdentitySeed`] if the seed file does not hold 16 hex digits;
/// [`NodeError::BadPeerId`] if a legacy `peer_id` file does not hold a UUID;
/// [`NodeError::DataDir`] if a file cannot be read, written or synced.
pub fn load_or_create_peer_id(data_dir: &Path, key: &KeyId) -> Result<PeerId, NodeError> {
    let path = data_dir.join(IDENTITY_SEED_FILE);
    let seed = match std::fs::read_to_string(&path) {
        Ok(text) => parse_seed(&text).ok_or_else(|| NodeError::BadIdentitySeed(path.clone()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = match legacy_seed(data_dir)? {
                Some(seed) => {
                    info!(
                        "carrying the peer id in {} over as identity seed {}",
                        data_dir.join(LEGACY_PEER_ID_FILE).display(),
                        format_seed(seed)
                    );
                    seed
                }
                None => rand::random(),
            };
            write_seed(data_dir, seed)?;
            seed
        }
        Err(source) => return Err(NodeError::DataDir { path, source }),
    };
    Ok(PeerId::bound(key, seed))
}

/// The last 8 bytes of the UUID in a legacy `data_dir/peer_id`, if there is one.
fn legacy_seed(data_dir: &Path) -> Result<Option<[u8; 8]>, NodeError> {
    let path = data_dir.join(LEGACY_PEER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id: PeerId = text
                .trim()
                .parse()
                .map_err(|_| NodeError::BadPeerId(path.clone()))?;
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&id.as_uuid().as_bytes()[8..]);
            Ok(Some(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NodeError::DataDir { path, source }),
    }
}

fn parse_seed(text: &str) -> Option<[u8; 8]> {
    let text = text.trim();
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(u64::to_be_bytes)
}

fn format_seed(seed: [u8; 8]) -> String {
    format!("{:016x}", u64::from_be_bytes(seed))
}

/// Writes the seed file atomically and syncs the data dir, so the id outlives a power loss.
fn write_seed(data_dir: &Path, seed: [u8; 8]) -> Result<(), NodeError> {
    let path = data_dir.join(IDENTITY_SEED_FILE);
    crate::fsutil::write_atomic(&path, format!("{}\n", format_seed(seed)).as_bytes()).map_err(
        |e| NodeError::DataDir {
            path: e.path,
            source: e.source,
        },
    )?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| NodeError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })
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

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn key(n: u8) -> KeyId {
        KeyId::of(&[n; 32])
    }

    #[test]
    fn a_fresh_data_dir_gets_a_seed_kept_across_restarts() -> TestResult {
        let dir = tempfile::tempdir()?;
        let id = load_or_create_peer_id(dir.path(), &key(1))?;
        assert!(key(1).binds(&id), "the id starts with the key's prefix");
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_SEED_FILE))?;
        let seed = parse_seed(&text).ok_or("the seed file holds 16 hex digits")?;
        assert_eq!(id, PeerId::bound(&key(1), seed));
        assert_eq!(
            load_or_create_peer_id(dir.path(), &key(1))?,
            id,
            "same dir, same id"
        );
        // A new certificate in the same data dir: a new id with the same seed.
        let other = load_or_create_peer_id(dir.path(), &key(2))?;
        assert_ne!(other, id);
        assert_eq!(
            other.as_uuid().as_bytes()[8..],
            id.as_uuid().as_bytes()[8..]
        );
        assert!(
            !dir.path().join(LEGACY_PEER_ID_FILE).exists(),
            "no legacy file written"
        );
        Ok(())
    }

    #[test]
    fn a_lost_data_dir_comes_back_as_a_new_id() -> TestResult {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let first = load_or_create_peer_id(a.path(), &key(1))?;
        let second = load_or_create_peer_id(b.path(), &key(1))?;
        assert_ne!(first, second, "a new seed is a new id");
        assert!(key(1).binds(&second));
        Ok(())
    }

    #[test]
    fn a_data_dir_from_before_the_seed_keeps_its_identity() -> TestResult {
        let dir = tempfile::tempdir()?;
        let uuid = uuid::Uuid::from_u128(0x0190_c7a2_1111_7000_8000_a1b2_c3d4_e5f6);
        std::fs::write(dir.path().join(LEGACY_PEER_ID_FILE), format!("{uuid}\n"))?;
        let id = load_or_create_peer_id(dir.path(), &key(1))?;
        assert_eq!(id.as_uuid().as_bytes()[8..], uuid.as_bytes()[8..]);
        assert!(key(1).binds(&id));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(IDENTITY_SEED_FILE))?,
            "8000a1b2c3d4e5f6\n"
        );
        // The seed is what counts from now on, whatever becomes of the old file.
        std::fs::remove_file(dir.path().join(LEGACY_PEER_ID_FILE))?;
        assert_eq!(load_or_create_peer_id(dir.path(), &key(1))?, id);
        Ok(())
    }

    #[test]
    fn corrupt_seed_or_legacy_id_files_are_named() -> TestResult {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(LEGACY_PEER_ID_FILE), b"not a uuid")?;
        let err = load_or_create_peer_id(dir.path(), &key(1)).expect_err("bad legacy id");
        assert!(matches!(err, NodeError::BadPeerId(_)), "{err:?}");
        assert!(!dir.path().join(IDENTITY_SEED_FILE).exists());
        std::fs::write(dir.path().join(IDENTITY_SEED_FILE), b"xyz")?;
        let err = load_or_create_peer_id(dir.path(), &key(1)).expect_err("bad seed");
        assert!(matches!(err, NodeError::BadIdentitySeed(_)), "{err:?}");
        assert!(err.to_string().contains(IDENTITY_SEED_FILE), "{err}");
        Ok(())
    }

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
