//! The durable published version: a ledger in the data dir ([`LEDGER_FILE`]) holding, for each
//! peer id this data dir has published under, the highest version that id may have sent.
//!
//! Every peer merges each `(origin, version)` once, so an origin must never send two different
//! deltas under one version. The checkpoint alone cannot promise that: a peer killed after a
//! send and before its next save resumes from a checkpoint older than its last publish, and its
//! next deltas would reuse versions already sent, with other contents. Peers that hold the old
//! delta drop the new one as already applied, the others apply it, and the bases part silently.
//!
//! So before [`Core::publish`] the driver calls [`VersionLedger::reserve`] with the version the
//! core will use (`core.published() + 1`). When that version is above what the ledger holds,
//! the ledger reserves a block of [`RESERVE_BLOCK`] versions starting at it: the new ledger is
//! written to a temporary file, fsynced, renamed over the old one and the directory fsynced,
//! and only then may the delta be published. If that fails the peer stops
//! ([`NodeError::VersionLedger`]): a peer that cannot keep its versions durable cannot promise
//! they are unique. On every start with a data dir the driver raises the core's published
//! version to the ledger's ([`Core::raise_published`]), so the next version is above any the
//! peer may have sent, whatever the checkpoint says.
//!
//! Versions reserved but never sent leave a hole in the origin's versions. A hole does not
//! block the drain nor count as inconsistent (every peer lacks the same versions, and the drain
//! compares applied sets); it makes each peer store that origin's later versions as exceptions
//! in its version vector. Reserving in blocks trades at most `RESERVE_BLOCK - 1` more skipped
//! versions per crash (one hole however wide) for one fsync per block instead of one per
//! publish: on a disk shared with other writers one reservation took about 10 ms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::NodeError;
use rumor_proto::wire::PeerId;

#[cfg(doc)]
use rumor_proto::core::Core;

/// The ledger's file name in the data dir. Text, one `PEER_ID VERSION` line per peer id.
pub const LEDGER_FILE: &str = "published_version";

/// Versions reserved per write of the ledger: a reservation covers the version asked for and
/// the `RESERVE_BLOCK - 1` after it, so a peer syncs the ledger once per this many publishes.
/// Far below the receivers' `max_version_jump`, so the first version after a crash is accepted.
pub const RESERVE_BLOCK: u64 = 32;

/// The published version ledger of one data dir, for the peer id running from it.
#[derive(Debug)]
pub struct VersionLedger {
    /// `data_dir/published_version`.
    path: PathBuf,
    /// The peer id whose versions are reserved.
    me: PeerId,
    /// The highest version reserved, per peer id this data dir has published under (another id
    /// after a new certificate: kept, so that id never reuses its versions if it comes back).
    entries: BTreeMap<PeerId, u64>,
}

impl VersionLedger {
    /// Reads the ledger in `data_dir` for peer id `me` (none yet: nothing reserved).
    ///
    /// # Errors
    /// [`NodeError::VersionLedger`] naming the file when it cannot be read or does not parse
    /// (the source is then of kind `InvalidData`).
    pub fn open(data_dir: &Path, me: PeerId) -> Result<Self, NodeError> {
        let path = data_dir.join(LEDGER_FILE);
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).map_err(|source| NodeError::VersionLedger {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(NodeError::VersionLedger { path, source }),
        };
        Ok(Self { path, me, entries })
    }

    /// The highest version this peer id may have sent (0: none reserved yet).
    pub fn reserved(&self) -> u64 {
        self.entries.get(&self.me).copied().unwrap_or(0)
    }

    /// Makes sure `version` is reserved, durably, before the caller publishes under it: when it
    /// is above [`VersionLedger::reserved`], writes `version + RESERVE_BLOCK - 1` and syncs the
    /// file and the directory before returning.
    ///
    /// # Errors
    /// [`NodeError::VersionLedger`] naming the file (or the data dir, when syncing it failed).
    /// Nothing is reserved then, and the caller must not publish `version`.
    pub fn reserve(&mut self, version: u64) -> Result<(), NodeError> {
        if version <= self.reserved() {
            return Ok(());
        }
        let mut entries = self.entries.clone();
        entries.insert(self.me, version.saturating_add(RESERVE_BLOCK - 1));
        write_durably(&self.path, &entries)?;
        self.entries = entries;
        Ok(())
    }
}

/// Parses `PEER_ID VERSION` lines (blank lines allowed); the highest version wins for an id
/// listed twice.
fn parse(text: &str) -> Result<BTreeMap<PeerId, u64>, std::io::Error> {
    let bad = |line: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected `PEER_ID VERSION` lines, found {line:?}"),
        )
    };
    let mut entries = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(id), Some(version), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad(line));
        };
        let id: PeerId = id.parse().map_err(|_| bad(line))?;
        let version: u64 = version.parse().map_err(|_| bad(line))?;
        let slot = entries.entry(id).or_insert(0);
        *slot = version.max(*slot);
    }
    Ok(entries)
}

/// Replaces the ledger at `path` with `entries`: temporary file, fsync, rename, fsync of the
/// directory, so that once this returns the new versions survive a crash or power loss.
fn write_durably(path: &Path, entries: &BTreeMap<PeerId, u64>) -> Result<(), NodeError> {
    let text: String = entries
        .iter()
        .map(|(id, version)| format!("{id} {version}\n"))
        .collect();
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| NodeError::VersionLedger {
        path: e.path,
        source: e.source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| NodeError::VersionLedger {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_data_dir_without_a_ledger_has_nothing_reserved() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ledger = VersionLedger::open(dir.path(), PeerId::from_u128(1))?;
        assert_eq!(ledger.reserved(), 0);
        assert!(
            !dir.path().join(LEDGER_FILE).exists(),
            "opening writes nothing"
        );
        Ok(())
    }

    #[test]
    fn reservations_come_in_blocks_and_survive_a_reopen() -> TestResult {
        let dir = tempfile::tempdir()?;
        let me = PeerId::from_u128(1);
        let mut ledger = VersionLedger::open(dir.path(), me)?;
        ledger.reserve(1)?;
        assert_eq!(ledger.reserved(), RESERVE_BLOCK);
        let before = std::fs::read(dir.path().join(LEDGER_FILE))?;
        // Versions inside the block need no write.
        ledger.reserve(RESERVE_BLOCK)?;
        assert_eq!(std::fs::read(dir.path().join(LEDGER_FILE))?, before);
        ledger.reserve(RESERVE_BLOCK + 1)?;
        assert_eq!(ledger.reserved(), 2 * RESERVE_BLOCK);
        let again = VersionLedger::open(dir.path(), me)?;
        assert_eq!(again.reserved(), 2 * RESERVE_BLOCK);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LEDGER_FILE))?,
            format!("{me} {}\n", 2 * RESERVE_BLOCK)
        );
        // Only the ledger is left: no temporary file.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn each_peer_id_keeps_its_own_versions() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (old, new) = (PeerId::from_u128(1), PeerId::from_u128(2));
        VersionLedger::open(dir.path(), old)?.reserve(40)?;
        let mut ledger = VersionLedger::open(dir.path(), new)?;
        assert_eq!(ledger.reserved(), 0, "a new id starts from nothing");
        ledger.reserve(1)?;
        assert_eq!(
            VersionLedger::open(dir.path(), old)?.reserved(),
            40 + RESERVE_BLOCK - 1
        );
        assert_eq!(
            VersionLedger::open(dir.path(), new)?.reserved(),
            RESERVE_BLOCK
        );
        Ok(())
    }

    #[test]
    fn a_garbled_ledger_is_an_error_naming_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, b"not a ledger\n")?;
        let err = VersionLedger::open(dir.path(), PeerId::from_u128(1)).expect_err("garbled");
        assert!(
            matches!(&err, NodeError::VersionLedger { source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn a_failed_write_reserves_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let me = PeerId::from_u128(1);
        let mut ledger = VersionLedger::open(dir.path(), me)?;
        // A directory in the ledger's place: the rename over it fails (even for root).
        let path = dir.path().join(LEDGER_FILE);
        std::fs::create_dir(&path)?;
        std::fs::write(path.join("x"), b"x")?;
        let err = ledger.reserve(1).expect_err("cannot replace a directory");
        assert!(matches!(err, NodeError::VersionLedger { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("stops"), "{text}");
        assert_eq!(ledger.reserved(), 0);
        Ok(())
    }

    /// The cost of one reservation on this machine's disk (run with `--ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn reservation_cost() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LEDGER_FILE);
        let me = PeerId::from_u128(1);
        let mut times = Vec::new();
        for version in 1..=200u64 {
            let started = std::time::Instant::now();
            write_durably(&path, &BTreeMap::from([(me, version)]))?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        eprintln!(
            "one reservation (write, fsync, rename, fsync dir): mean {mean:.2} ms, median {:.2} \
             ms, p99 {:.2} ms, max {:.2} ms",
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1]
        );
        Ok(())
    }
}
