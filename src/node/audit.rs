//! The audit log (`peer.audit_log`, `--audit-log FILE`; off by default): one line per delta this
//! peer applies or publishes, `ORIGIN VERSION CONTENT_HASH`, the origin's peer id, the version
//! and the SHA-256 of the delta's values in hex ([`rumor_proto::auth::content_hash`]). Two lines
//! with one origin and version but different hashes, in one log or across peers' logs, are two
//! deltas published under one version.
//!
//! Lines are buffered and written at least once per [`FLUSH_INTERVAL`] and at exit. A delta this
//! peer publishes is written at once, before it is sent, so a crash never loses the record of a
//! delta that left. Write failures are logged through a [`WarnLimiter`], never fatal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

use super::metrics_file::terminate_torn_line;
use super::warn_limiter::WarnLimiter;
use rumor_proto::auth::{content_hash, ContentHash};
use rumor_proto::wire::PeerId;

/// Longest time a line stays in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Buffered bytes that cause a write before [`FLUSH_INTERVAL`] is up.
const MAX_BUFFERED: usize = 256 * 1024;

/// The audit log of one peer; does nothing when not configured or not openable.
pub(super) struct AuditLog {
    file: Option<std::fs::File>,
    path: PathBuf,
    buffer: Vec<u8>,
    last_flush: Instant,
    warnings: WarnLimiter,
}

impl AuditLog {
    /// Opens `path` for appending (creating it), or a log that writes nothing when `path` is
    /// `None` or cannot be opened (warned).
    pub(super) fn open(path: Option<&Path>) -> Self {
        let mut me = Self {
            file: None,
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            buffer: Vec::new(),
            last_flush: Instant::now(),
            warnings: WarnLimiter::default(),
        };
        let Some(path) = path else { return me };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
        {
            Ok(mut file) => {
                // A line torn by a crash is ended, so the next one starts clean.
                if let Err(e) = terminate_torn_line(&mut file) {
                    me.warnings.failed("audit log", &e);
                }
                me.file = Some(file);
            }
            Err(e) => warn!(
                "cannot open the audit log {}: {e}; applied deltas are not recorded",
                path.display()
            ),
        }
        me
    }

    /// The content hash of `values` when the log is on (hashing costs a pass over the delta).
    pub(super) fn hash(&self, values: &[f32]) -> Option<ContentHash> {
        self.file.as_ref().map(|_| content_hash(values))
    }

    /// Records a delta applied from the network.
    pub(super) fn applied(&mut self, origin: PeerId, version: u64, values: &[f32]) {
        if let Some(hash) = self.hash(values) {
            self.line(origin, version, &hash);
            if self.buffer.len() >= MAX_BUFFERED {
                self.flush();
            }
        }
    }

    /// Records a delta this peer publishes, written at once (before it is sent).
    pub(super) fn published(&mut self, origin: PeerId, version: u64, hash: &ContentHash) {
        if self.file.is_some() {
            self.line(origin, version, hash);
            self.flush();
        }
    }

    /// Writes the buffer when [`FLUSH_INTERVAL`] has passed since the last write.
    pub(super) fn flush_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_flush) >= FLUSH_INTERVAL {
            self.flush();
        }
    }

    /// Writes the buffered lines, in one append. On failure they are dropped (warned, at most
    /// once a minute) and a newline ends whatever part went out.
    pub(super) fn flush(&mut self) {
        self.last_flush = Instant::now();
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if self.buffer.is_empty() {
            return;
        }
        match file.write_all(&self.buffer) {
            Ok(()) => self.warnings.recovered("audit log"),
            Err(e) => {
                let e = crate::fsutil::at(&self.path)(e);
                self.warnings.failed("audit log", &crate::report::Chain(&e));
                let _ = file.write_all(b"\n");
            }
        }
        self.buffer.clear();
    }

    fn line(&mut self, origin: PeerId, version: u64, hash: &ContentHash) {
        use std::fmt::Write as _;
        let mut text = format!("{origin} {version} ");
        for byte in hash {
            let _ = write!(text, "{byte:02x}");
        }
        text.push('\n');
        self.buffer.extend_from_slice(text.as_bytes());
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn lines_name_origin_version_and_hash() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        let (a, b) = (PeerId::from_u128(1), PeerId::from_u128(2));
        let mut log = AuditLog::open(Some(&path));
        let own = log.hash(&[1.0, 2.0]).ok_or("the log is on")?;
        log.published(a, 7, &own);
        // Own publishes are written at once; applied deltas wait for a flush.
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text, format!("{a} 7 {}\n", hex(&own)));
        log.applied(b, 3, &[0.5]);
        assert_eq!(std::fs::read_to_string(&path)?, text);
        log.flush_if_due(Instant::now() + FLUSH_INTERVAL);
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], format!("{b} 3 {}", hex(&content_hash(&[0.5]))));
        Ok(())
    }

    #[test]
    fn dropping_the_log_flushes_it_and_a_torn_line_is_ended() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"torn")?;
        let mut log = AuditLog::open(Some(&path));
        log.applied(PeerId::from_u128(1), 1, &[1.0]);
        drop(log);
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert_eq!(lines[0], "torn");
        assert!(lines[1].starts_with(&PeerId::from_u128(1).to_string()));
        Ok(())
    }

    #[test]
    fn off_or_unopenable_logs_write_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut off = AuditLog::open(None);
        assert!(off.hash(&[1.0]).is_none());
        off.applied(PeerId::from_u128(1), 1, &[1.0]);
        off.flush();
        // A directory where the file should be: warned, and the peer runs on.
        let mut broken = AuditLog::open(Some(dir.path()));
        broken.published(PeerId::from_u128(1), 1, &[0; 32]);
        broken.flush();
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    fn hex(hash: &ContentHash) -> String {
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}
