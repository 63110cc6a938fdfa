//! Watching the cluster's revocation list (`certs::revoke`): loaded when the peer starts, then
//! looked at on the driver's tick, at most once every [`CHECK_INTERVAL`]. The file is read
//! again only when its size, modification or change time, inode or device changed (an atomic
//! replacement always changes the inode).
//!
//! A list that does not check at start stops the peer (the caller returns the error). Later,
//! a list that does not check, or is older than the one in force (a lower sequence number),
//! is a warning and the list in force stays. Revocations are never lifted while the peer runs:
//! entries missing from a newer list stay in force (and the peer says so), as does everything
//! when the file is removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;
use tracing::{info, warn};

use crate::certs::{load_revocation_list, CertError, RevocationList, Revoked};
use crate::net::Transport;
use crate::report::Chain;
use rumor_proto::auth::KeyId;
use rumor_proto::core::Core;

/// Shortest time between two looks at the file, in seconds.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// (inode, device, change time in s, change time's ns) on Unix; zeros elsewhere.
    node: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let node = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev(), meta.ctime(), meta.ctime_nsec())
        };
        #[cfg(not(unix))]
        let node = (0, 0, 0, 0);
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            node,
        }
    }
}

/// What the file looks like now: `Ok(None)` when it does not exist.
fn stamp(path: &Path) -> std::io::Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(Stamp::of(&meta))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The revocation list a peer has in force and the file it watches.
pub struct RevocationWatch {
    path: PathBuf,
    ca: CertificateDer<'static>,
    in_force: RevocationList,
    /// The file as last looked at (`None`: absent).
    seen: Option<Stamp>,
    next_check: Instant,
    /// The last problem warned about, so that an unchanged problem is said once.
    last_warning: Option<String>,
}

impl std::fmt::Debug for RevocationWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationWatch")
            .field("path", &self.path)
            .field("sequence", &self.in_force.sequence)
            .field("entries", &self.in_force.entries.len())
            .finish_non_exhaustive()
    }
}

impl RevocationWatch {
    /// Loads the list at `path`, checked against the cluster CA `ca` (a missing file: empty).
    ///
    /// # Errors
    /// What [`load_revocation_list`] fails with (malformed, another cluster's, a signature
    /// that does not verify), or [`CertError::Io`] when the file cannot be looked at.
    pub fn open(
        path: PathBuf,
        ca: CertificateDer<'static>,
        now: Instant,
    ) -> Result<Self, CertError> {
        // Looked at before it is read: a change in between is read again at the first check.
        let seen = stamp(&path).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        let in_force = load_revocation_list(&path, &ca)?;
        if !in_force.entries.is_empty() {
            info!(
                path = %path.display(),
                sequence = in_force.sequence,
                revoked = in_force.entries.len(),
                "revocation list loaded"
            );
        }
        Ok(Self {
            path,
            ca,
            in_force,
            seen,
            next_check: now + CHECK_INTERVAL,
            last_warning: None,
        })
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The revocations in force.
    pub fn entries(&self) -> &[Revoked] {
        &self.in_force.entries
    }

    /// Looks at the file if [`CHECK_INTERVAL`] passed since the last look, and reloads it if it
    /// changed. Returns the entries that came into force (none most of the time); problems
    /// are logged as warnings and leave the list in force as it was.
    pub fn poll(&mut self, now: Instant) -> Vec<Revoked> {
        if now < self.next_check {
            return Vec::new();
        }
        self.next_check = now + CHECK_INTERVAL;
        let current = match stamp(&self.path) {
            Ok(current) => current,
            Err(e) => {
                self.warn(format!(
                    "cannot look at the revocation list {}: {e}; the list in force (sequence {}) \
                     stays",
                    self.path.display(),
                    self.in_force.sequence
                ));
                return Vec::new();
            }
        };
        if current == self.seen {
            return Vec::new();
        }
        self.seen = current;
        if current.is_none() {
            self.warn(format!(
                "the revocation list {} was removed; its {} revocations stay in force until the \
                 peer restarts",
                self.path.display(),
                self.in_force.entries.len()
            ));
            return Vec::new();
        }
        let loaded = load_revocation_list(&self.path, &self.ca).and_then(|list| {
            list.check_not_older(&self.path, self.in_force.sequence)?;
            Ok(list)
        });
        match loaded {
            Ok(list) => self.take(list),
            Err(e) => {
                self.warn(format!(
                    "{}; the list in force (sequence {}) stays",
                    Chain(&e),
                    self.in_force.sequence
                ));
                Vec::new()
            }
        }
    }

    /// Puts a checked, not older `list` in force: its new entries are returned; entries in
    /// force that it lacks stay.
    fn take(&mut self, list: RevocationList) -> Vec<Revoked> {
        self.last_warning = None;
        let added: Vec<Revoked> = list
            .entries
            .iter()
            .filter(|e| self.in_force.find(&e.key).is_none())
            .cloned()
            .collect();
        let kept: Vec<Revoked> = self
            .in_force
            .entries
            .iter()
            .filter(|e| list.find(&e.key).is_none())
            .cloned()
            .collect();
        if !kept.is_empty() {
            let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
            warn!(
                path = %self.path.display(),
                ?names,
                "the new revocation list no longer lists some certificates; they stay revoked \
                 until the peer restarts"
            );
        }
        info!(
            path = %self.path.display(),
            sequence = list.sequence,
            new = added.len(),
            "revocation list reloaded"
        );
        self.in_force.sequence = list.sequence;
        self.in_force.entries.extend(added.iter().cloned());
        added
    }

    fn warn(&mut self, message: String) {
        if self.last_warning.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.last_warning = Some(message);
        }
    }
}

/// Puts one newly revoked certificate in force on a running peer: the transport refuses it from
/// now on and closes its connections, and the core drops its members and stops forwarding its
/// deltas. Returns true when it is this peer's own certificate, `own` (which the core is not
/// asked to revoke; the caller stops the peer).
pub fn apply(entry: &Revoked, own: KeyId, transport: &Transport, core: &mut Core) -> bool {
    let closed = transport.deny(entry.key, &entry.name);
    let own = own == entry.key;
    if !own {
        core.revoke(Instant::now(), entry.key);
    }
    info!(
        member = %entry.name,
        key = %entry.key.short(),
        revoked_at = %entry.revoked_at,
        connections_closed = closed,
        "certificate revoked: refused from now on, its connections closed, its members down"
    );
    own
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{init_cluster_ca, issue, load_identity, revoke, RevokeTarget, REVOKED_FILE};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn changes_are_picked_up_once_and_bad_lists_leave_the_list_in_force() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_cluster_ca(dir.path(), false, Some("watched"))?;
        for name in ["a", "b"] {
            issue(dir.path(), name, 1)?;
        }
        let ca = load_identity(dir.path(), "a")?.ca;
        let path = dir.path().join(REVOKED_FILE);
        let start = Instant::now();
        let mut watch = RevocationWatch::open(path.clone(), ca, start)?;
        assert!(
            watch.entries().is_empty(),
            "a missing file is an empty list"
        );

        revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        assert!(
            watch.poll(start).is_empty(),
            "not looked at before the interval"
        );
        let later = start + CHECK_INTERVAL;
        let added = watch.poll(later);
        assert_eq!(
            added.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        let later = later + CHECK_INTERVAL;
        assert!(
            watch.poll(later).is_empty(),
            "an unchanged file is not news"
        );

        // A tampered list is refused; the list in force stays.
        let good = fs::read_to_string(&path)?;
        crate::fsutil::write_atomic(&path, good.replace("\"a\"", "\"b\"").as_bytes())?;
        let later = later + CHECK_INTERVAL;
        assert!(watch.poll(later).is_empty());
        assert_eq!(watch.entries().len(), 1);

        // Revoking b over the good list brings b in.
        crate::fsutil::write_atomic(&path, good.as_bytes())?;
        revoke(dir.path(), &RevokeTarget::Name("b".into()))?;
        let later = later + CHECK_INTERVAL;
        let added = watch.poll(later);
        assert_eq!(
            added.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // A removed file lifts nothing.
        fs::remove_file(&path)?;
        let later = later + CHECK_INTERVAL;
        assert!(watch.poll(later).is_empty());
        assert_eq!(watch.entries().len(), 2);
        Ok(())
    }
}
