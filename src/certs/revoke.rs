//! The cluster's revocation list: `revoked.json` in the certificate directory, a list of
//! revoked peer certificates signed by the cluster CA, which peers load at start and whenever
//! the file changes (`node::revocation`).
//!
//! # File format
//!
//! ```json
//! {
//!   "format": 1,
//!   "cluster": "rumor-1a2b3c4d",
//!   "sequence": 2,
//!   "entries": [
//!     { "name": "peer-3", "key_id": "<64 hex digits>", "revoked_at": "2025-01-31T12:00:00Z" }
//!   ],
//!   "signature": "<hex>"
//! }
//! ```
//!
//! - `cluster` is the cluster name of the CA ([`super::cluster_name`]); a list of another
//!   cluster is refused.
//! - Each entry names a certificate by its key id: the SHA-256 of its DER (`KeyId`, what the
//!   transport and the protocol know a member by), in lower-case hex; `name` is the peer name it
//!   was issued for (or a label), `revoked_at` an RFC 3339 UTC time, to the second.
//! - `sequence` grows by one with every change; a peer refuses a list whose sequence is lower
//!   than the one it has in force (an older list put back).
//! - `signature` is the CA key's signature over [`statement`]'s canonical encoding of every other
//!   field, in the wire form of member signatures (`net::signing`): the TLS signature scheme as a
//!   big-endian `u16`, then the signature; in hex. It is checked with the CA certificate.
//!
//! A missing file is an empty list. The list only grows: [`revoke`] appends.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rumor_proto::auth::KeyId;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::files::{io_err, read_ca_cert, read_certs, read_key, write_file};
use super::issue::validate_name;
use super::{cluster_name, printable, CertError, CA_CERT_FILE, CA_KEY_FILE, MAX_NAME_LEN};

/// File name of the revocation list inside the certificate directory.
pub const REVOKED_FILE: &str = "revoked.json";

/// The format number of the revocation lists this build writes and reads.
pub const REVOCATION_FORMAT: u32 = 1;

/// Largest revocation list read, in bytes (4 MiB: some 20,000 entries).
pub const MAX_REVOCATION_LIST_BYTES: u64 = 4 * 1024 * 1024;

/// Domain separation of the signed statement: no other rumor signature covers these bytes.
const STATEMENT_DOMAIN: &[u8] = b"rumor revocation list\0";

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The peer name the certificate was issued for, or the label given with `--key-id`
    /// (1-64 of `[A-Za-z0-9._-]`).
    pub name: String,
    /// The certificate's key id: SHA-256 of its DER.
    pub key: KeyId,
    /// When it was revoked, RFC 3339 UTC to the second, as written in the file.
    pub revoked_at: String,
}

/// A revocation list whose signature, cluster and entries were checked (or a new empty one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList {
    /// The cluster name of the CA that signed it.
    pub cluster: String,
    /// Grows by one with every change; 0 for the empty list of a missing file.
    pub sequence: u64,
    /// The revoked certificates, in the order they were revoked; key ids are unique.
    pub entries: Vec<Revoked>,
}

/// What is wrong with a revocation list file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevocationProblem {
    /// Not a revocation list: JSON that does not parse, an unknown field, a field of the wrong
    /// type or form, a duplicate key id, or a file too large.
    #[error("not a valid revocation list: {reason}")]
    Malformed {
        /// What is wrong, e.g. "entry 2: key_id is not 64 hex digits".
        reason: String,
    },
    /// A list of another format than [`REVOCATION_FORMAT`].
    #[error("revocation list format {found}; this build reads format {REVOCATION_FORMAT}")]
    UnsupportedFormat {
        /// The format the file says.
        found: u32,
    },
    /// The list names another cluster than the CA's.
    #[error("it is the revocation list of cluster {theirs:?}; this cluster is {ours:?}")]
    OtherCluster {
        /// The cluster the list names (made printable).
        theirs: String,
        /// This CA's cluster name.
        ours: String,
    },
    /// The signature does not verify with the cluster CA's key: the file was changed after
    /// it was signed, or signed by another CA.
    #[error(
        "its signature does not verify with this cluster's CA ({detail}): the file was edited \
         after it was signed, or another CA signed it"
    )]
    BadSignature {
        /// What the verifier said.
        detail: String,
    },
    /// The list's sequence number is lower than the one of the list in force.
    #[error(
        "its sequence number {found} is lower than the {in_force} of the list in force: an \
         older list was put back (rollback refused)"
    )]
    Rollback {
        /// The sequence number in the file.
        found: u64,
        /// The sequence number of the list in force.
        in_force: u64,
    },
    /// The CA certificate given to check the list does not parse.
    #[error("the cluster CA certificate does not parse, so the list cannot be checked")]
    UnreadableCa,
}

/// The file form (`serde`); [`RevocationList`] is the checked form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFile {
    format: u32,
    cluster: String,
    sequence: u64,
    entries: Vec<EntryFile>,
    signature: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    key_id: String,
    revoked_at: String,
}

impl RevocationList {
    /// The empty list of `cluster` (sequence 0), what a missing file means.
    pub fn empty(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            sequence: 0,
            entries: Vec::new(),
        }
    }

    /// The entry of `key`, if it is revoked.
    pub fn find(&self, key: &KeyId) -> Option<&Revoked> {
        self.entries.iter().find(|e| e.key == *key)
    }

    /// Checks that this list, read from `path`, may replace a list in force with sequence
    /// number `in_force`: its own is not lower.
    ///
    /// # Errors
    /// [`CertError::RevocationList`] with [`RevocationProblem::Rollback`].
    pub fn check_not_older(&self, path: &Path, in_force: u64) -> Result<(), CertError> {
        if self.sequence < in_force {
            return Err(list_error(
                path,
                RevocationProblem::Rollback {
                    found: self.sequence,
                    in_force,
                },
            ));
        }
        Ok(())
    }

    /// The file form, entries as they are, with `signature` (wire form) in hex.
    fn to_file(&self, signature: &[u8]) -> ListFile {
        ListFile {
            format: REVOCATION_FORMAT,
            cluster: self.cluster.clone(),
            sequence: self.sequence,
            entries: self
                .entries
                .iter()
                .map(|e| EntryFile {
                    name: e.name.clone(),
                    key_id: e.key.to_string(),
                    revoked_at: e.revoked_at.clone(),
                })
                .collect(),
            signature: to_hex(signature),
        }
    }
}

/// The bytes the CA signs: a domain tag, then every field but the signature, each string as a
/// big-endian `u32` length and its UTF-8 bytes, numbers big-endian: format (`u32`), cluster,
/// sequence (`u64`), the number of entries (`u32`), and per entry name, key id (as written, hex)
/// and revoked_at.
fn statement(file: &ListFile) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::with_capacity(128 + 160 * file.entries.len());
    out.extend_from_slice(STATEMENT_DOMAIN);
    out.extend_from_slice(&file.format.to_be_bytes());
    text(&mut out, &file.cluster);
    out.extend_from_slice(&file.sequence.to_be_bytes());
    out.extend_from_slice(&(file.entries.len() as u32).to_be_bytes());
    for e in &file.entries {
        text(&mut out, &e.name);
        text(&mut out, &e.key_id);
        text(&mut out, &e.revoked_at);
    }
    out
}

fn list_error(path: &Path, problem: RevocationProblem) -> CertError {
    CertError::RevocationList {
        path: path.to_path_buf(),
        problem,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> CertError {
    list_error(
        path,
        RevocationProblem::Malformed {
            reason: reason.into(),
        },
    )
}

/// Reads and checks the revocation list at `path` against the cluster CA certificate `ca`: the
/// format, the cluster name (the CA's, [`super::cluster_name`]), the CA's signature, then the
/// entries (names, key ids, times, no key id twice). A missing file is the empty list of the
/// CA's cluster.
///
/// # Errors
/// [`CertError::RevocationList`] naming `path` and the [`RevocationProblem`]: malformed (bad
/// JSON, unknown or missing fields, bad entries, over [`MAX_REVOCATION_LIST_BYTES`]),
/// unsupported format, another cluster's list, a signature that does not verify, or a CA that
/// does not parse; [`CertError::Io`] if the file exists but cannot be read.
pub fn load_revocation_list(
    path: &Path,
    ca: &CertificateDer<'_>,
) -> Result<RevocationList, CertError> {
    let ours = cluster_name(ca).ok_or_else(|| list_error(path, RevocationProblem::UnreadableCa))?;
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RevocationList::empty(&ours));
        }
        Err(e) => return Err(io_err(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_REVOCATION_LIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, e))?;
    if bytes.len() as u64 > MAX_REVOCATION_LIST_BYTES {
        return Err(malformed(
            path,
            format!("larger than {MAX_REVOCATION_LIST_BYTES} bytes"),
        ));
    }
    let file: ListFile =
        serde_json::from_slice(&bytes).map_err(|e| malformed(path, e.to_string()))?;
    if file.format != REVOCATION_FORMAT {
        return Err(list_error(
            path,
            RevocationProblem::UnsupportedFormat { found: file.format },
        ));
    }
    if file.cluster != ours {
        return Err(list_error(
            path,
            RevocationProblem::OtherCluster {
                theirs: printable(&file.cluster, MAX_NAME_LEN),
                ours,
            },
        ));
    }
    let signature = from_hex(&file.signature)
        .ok_or_else(|| malformed(path, "signature is not an even number of hex digits"))?;
    let provider = rustls::crypto::ring::default_provider();
    super::signature::verify_statement(&provider, ca.as_ref(), &statement(&file), &signature)
        .map_err(|e| {
            list_error(
                path,
                RevocationProblem::BadSignature {
                    detail: e.to_string(),
                },
            )
        })?;
    let mut entries: Vec<Revoked> = Vec::with_capacity(file.entries.len());
    for (i, e) in file.entries.iter().enumerate() {
        let at = |what: &str| malformed(path, format!("entry {}: {what}", i + 1));
        if validate_name(&e.name).is_err() {
            return Err(at(&format!(
                "name {:?} is not 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -",
                printable(&e.name, MAX_NAME_LEN)
            )));
        }
        let key = parse_key_id_text(&e.key_id)
            .ok_or_else(|| at("key_id is not 64 lower-case hex digits"))?;
        if humantime::parse_rfc3339(&e.revoked_at).is_err() {
            return Err(at("revoked_at is not an RFC 3339 UTC time"));
        }
        if entries.iter().any(|seen| seen.key == key) {
            return Err(at(&format!("key id {key} is listed twice")));
        }
        entries.push(Revoked {
            name: e.name.clone(),
            key,
            revoked_at: e.revoked_at.clone(),
        });
    }
    Ok(RevocationList {
        cluster: file.cluster,
        sequence: file.sequence,
        entries,
    })
}

/// The revocation list a peer whose certificates live in `certs_dir` watches by default:
/// `certs_dir/revoked.json`, provided `certs_dir/ca.pem` is the CA `ca` the peer trusts. `None`
/// when it is not (a peer whose identity was loaded from elsewhere): a list next to another CA
/// is not this cluster's.
pub fn default_revocation_list(certs_dir: &Path, ca: &CertificateDer<'_>) -> Option<PathBuf> {
    let found = read_certs(&certs_dir.join(CA_CERT_FILE)).ok()?;
    (found.first().map(|c| c.as_ref()) == Some(ca.as_ref())).then(|| certs_dir.join(REVOKED_FILE))
}

/// Which certificate [`revoke`] revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeTarget {
    /// The certificate in `DIR/NAME.pem` (its leaf), entered under NAME.
    Name(String),
    /// A certificate known only by its key id (its file is gone), entered under `label`, or
    /// `key-` and the first 16 hex digits of the key id.
    KeyId {
        /// The key id: SHA-256 of the certificate's DER.
        key: KeyId,
        /// The name to enter it under.
        label: Option<String>,
    },
}

/// What [`revoke`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revocation list written (or left alone).
    pub path: PathBuf,
    /// The entry of the certificate: the new one, or the one already there.
    pub entry: Revoked,
    /// The sequence number of the list now.
    pub sequence: u64,
    /// True when the certificate was revoked already; nothing was written then.
    pub already: bool,
}

/// Revokes a certificate of the cluster whose CA is in `dir` (`rumor certs revoke`): reads and
/// checks `dir/revoked.json` ([`load_revocation_list`]; missing: empty), appends the entry,
/// raises the sequence number by one, signs the list with `dir/ca.key` and replaces the file
/// atomically (temporary file, fsync, rename; mode 0644). A certificate already on the list
/// changes nothing ([`Revocation::already`]).
///
/// # Errors
/// [`CertError::BadName`] / [`CertError::ReservedName`] for a bad name or label;
/// [`CertError::NotIssued`] when `dir/NAME.pem` does not exist; [`CertError::Missing`] when it
/// holds no certificate; [`CertError::Io`] when a file cannot be read or written;
/// [`CertError::RevocationList`] when the list in place does not check (it is never
/// overwritten then); [`CertError::CaKeyUnusable`] when `ca.key` cannot sign.
pub fn revoke(dir: &Path, target: &RevokeTarget) -> Result<Revocation, CertError> {
    let (name, key) = match target {
        RevokeTarget::Name(name) => {
            validate_name(name)?;
            let cert_path = dir.join(format!("{name}.pem"));
            let certs = read_certs(&cert_path).map_err(|e| match e {
                CertError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    CertError::NotIssued {
                        name: name.clone(),
                        path: cert_path.clone(),
                    }
                }
                other => other,
            })?;
            let leaf = certs.first().ok_or_else(|| CertError::Missing {
                path: cert_path.clone(),
                expected: "certificate",
            })?;
            (name.clone(), KeyId::of(leaf.as_ref()))
        }
        RevokeTarget::KeyId { key, label } => {
            let name = match label {
                Some(label) => label.clone(),
                None => format!("key-{}", &key.to_string()[..16]),
            };
            validate_name(&name)?;
            (name, *key)
        }
    };
    let ca = read_ca_cert(dir)?;
    let path = dir.join(REVOKED_FILE);
    let mut list = load_revocation_list(&path, &ca)?;
    if let Some(entry) = list.find(&key) {
        return Ok(Revocation {
            path,
            entry: entry.clone(),
            sequence: list.sequence,
            already: true,
        });
    }
    let entry = Revoked {
        name,
        key,
        revoked_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    list.entries.push(entry.clone());
    list.sequence += 1;
    let key_path = dir.join(CA_KEY_FILE);
    let ca_key = read_key(&key_path)?;
    let unusable = |reason: String| CertError::CaKeyUnusable {
        path: key_path.clone(),
        reason,
    };
    let signer = super::signature::key_signer(&ca_key).map_err(unusable)?;
    let unsigned = list.to_file(&[]);
    let signature = super::signature::sign_statement(signer.as_ref(), &statement(&unsigned))
        .map_err(|e| unusable(e.to_string()))?;
    let mut text = serde_json::to_string_pretty(&list.to_file(&signature))
        .map_err(|e| malformed(&path, e.to_string()))?;
    text.push('\n');
    write_file(&path, text.as_bytes(), 0o644, true)?;
    tracing::info!(
        path = %path.display(),
        name = %entry.name,
        key = %entry.key,
        sequence = list.sequence,
        "certificate revoked"
    );
    Ok(Revocation {
        path,
        entry,
        sequence: list.sequence,
        already: false,
    })
}

/// Parses a key id given as 64 hex digits (either case; `--key-id`).
///
/// # Errors
/// [`CertError::BadKeyId`] otherwise.
pub fn parse_key_id(hex: &str) -> Result<KeyId, CertError> {
    parse_key_id_text(&hex.trim().to_ascii_lowercase()).ok_or_else(|| CertError::BadKeyId {
        given: printable(hex, 80),
    })
}

/// A key id from exactly 64 lower-case hex digits, as the list writes them.
fn parse_key_id_text(text: &str) -> Option<KeyId> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let bytes: [u8; 32] = from_hex(text)?.try_into().ok()?;
    Some(KeyId::from_bytes(bytes))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even number of hex digits (either case); `None` otherwise.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{init_cluster_ca, issue, load_identity};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A CA named `cluster` in a fresh directory, with certificates issued to `names`.
    fn cluster(cluster: &str, names: &[&str]) -> Result<tempfile::TempDir, CertError> {
        let dir = tempfile::tempdir().map_err(|e| io_err(Path::new("tempdir"), e))?;
        init_cluster_ca(dir.path(), false, Some(cluster))?;
        for name in names {
            issue(dir.path(), name, 1)?;
        }
        Ok(dir)
    }

    fn ca_of(dir: &Path) -> Result<CertificateDer<'static>, CertError> {
        read_certs(&dir.join(CA_CERT_FILE))?
            .into_iter()
            .next()
            .ok_or(CertError::Missing {
                path: dir.join(CA_CERT_FILE),
                expected: "certificate",
            })
    }

    fn leaf_key(dir: &Path, name: &str) -> Result<KeyId, CertError> {
        let id = load_identity(dir, name)?;
        Ok(KeyId::of(id.chain[0].as_ref()))
    }

    fn problem(result: Result<RevocationList, CertError>) -> Result<RevocationProblem, String> {
        match result {
            Err(CertError::RevocationList { problem, .. }) => Ok(problem),
            other => Err(format!("expected a refused list, got {other:?}")),
        }
    }

    /// Rewrites the JSON of the list at `path` with `change` (an atomic replacement).
    fn edit(path: &Path, change: impl FnOnce(&mut serde_json::Value)) -> TestResult {
        let mut value: serde_json::Value = serde_json::from_slice(&fs::read(path)?)?;
        change(&mut value);
        crate::fsutil::write_atomic(path, &serde_json::to_vec_pretty(&value)?)?;
        Ok(())
    }

    #[test]
    fn a_revoked_certificate_is_listed_signed_and_loads_back() -> TestResult {
        let dir = cluster("home", &["a", "b"])?;
        let ca = ca_of(dir.path())?;
        let path = dir.path().join(REVOKED_FILE);
        assert_eq!(
            load_revocation_list(&path, &ca)?,
            RevocationList::empty("home"),
            "a missing file is the empty list"
        );

        let done = revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        assert!(!done.already);
        assert_eq!(done.sequence, 1);
        assert_eq!(done.path, path);
        assert_eq!(done.entry.name, "a");
        assert_eq!(done.entry.key, leaf_key(dir.path(), "a")?);
        assert!(humantime::parse_rfc3339(&done.entry.revoked_at).is_ok());
        let second = revoke(dir.path(), &RevokeTarget::Name("b".into()))?;
        assert_eq!(second.sequence, 2);

        let list = load_revocation_list(&path, &ca)?;
        assert_eq!(list.cluster, "home");
        assert_eq!(list.sequence, 2);
        assert_eq!(list.entries, vec![done.entry, second.entry]);
        let text = fs::read_to_string(&path)?;
        assert!(
            text.contains(&leaf_key(dir.path(), "b")?.to_string()),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o644);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        Ok(())
    }

    #[test]
    fn revoking_twice_changes_nothing() -> TestResult {
        let dir = cluster("home", &["a"])?;
        let first = revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        let path = dir.path().join(REVOKED_FILE);
        let before = fs::read(&path)?;
        let again = revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        assert!(again.already);
        assert_eq!(
            again.entry, first.entry,
            "the entry already there is reported"
        );
        assert_eq!(again.sequence, 1);
        // By key id too: the same certificate.
        let by_key = revoke(
            dir.path(),
            &RevokeTarget::KeyId {
                key: first.entry.key,
                label: None,
            },
        )?;
        assert!(by_key.already);
        assert_eq!(fs::read(&path)?, before, "the file is untouched");
        Ok(())
    }

    #[test]
    fn a_tampered_list_is_refused() -> TestResult {
        let dir = cluster("home", &["a", "b"])?;
        revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        let ca = ca_of(dir.path())?;
        let path = dir.path().join(REVOKED_FILE);
        let good = fs::read(&path)?;
        let b = leaf_key(dir.path(), "b")?.to_string();
        type Tamper = Box<dyn FnOnce(&mut serde_json::Value)>;
        let tampers: Vec<Tamper> = vec![
            Box::new(|v| v["entries"][0]["name"] = "b".into()),
            Box::new(move |v| v["entries"][0]["key_id"] = b.into()),
            Box::new(|v| v["entries"][0]["revoked_at"] = "2001-01-01T00:00:00Z".into()),
            Box::new(|v| v["entries"] = serde_json::json!([])),
            Box::new(|v| v["sequence"] = 7.into()),
        ];
        for tamper in tampers {
            crate::fsutil::write_atomic(&path, &good)?;
            edit(&path, tamper)?;
            let found = problem(load_revocation_list(&path, &ca))?;
            assert!(
                matches!(found, RevocationProblem::BadSignature { .. }),
                "{found}"
            );
            assert!(found.to_string().contains("does not verify"), "{found}");
        }
        // And revoke refuses to build on a tampered list.
        let err = revoke(dir.path(), &RevokeTarget::Name("b".into()))
            .err()
            .ok_or("revoke signed over a tampered list")?;
        assert!(err.to_string().contains("revoked.json"), "{err}");
        Ok(())
    }

    #[test]
    fn a_list_of_another_ca_is_refused() -> TestResult {
        let home = cluster("home", &["a"])?;
        revoke(home.path(), &RevokeTarget::Name("a".into()))?;
        let path = home.path().join(REVOKED_FILE);
        // Another cluster: refused by name.
        let away = cluster("away", &[])?;
        let found = problem(load_revocation_list(&path, &ca_of(away.path())?))?;
        assert_eq!(
            found,
            RevocationProblem::OtherCluster {
                theirs: "home".into(),
                ours: "away".into()
            }
        );
        assert!(found.to_string().contains("cluster \"home\""), "{found}");
        // Another CA of the same name: refused by signature.
        let twin = cluster("home", &[])?;
        let found = problem(load_revocation_list(&path, &ca_of(twin.path())?))?;
        assert!(
            matches!(found, RevocationProblem::BadSignature { .. }),
            "{found}"
        );
        Ok(())
    }

    #[test]
    fn an_older_list_is_refused_as_a_rollback() -> TestResult {
        let dir = cluster("home", &["a", "b"])?;
        let ca = ca_of(dir.path())?;
        let path = dir.path().join(REVOKED_FILE);
        revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        let old = fs::read(&path)?;
        revoke(dir.path(), &RevokeTarget::Name("b".into()))?;
        let in_force = load_revocation_list(&path, &ca)?;
        in_force.check_not_older(&path, in_force.sequence)?;
        crate::fsutil::write_atomic(&path, &old)?;
        let older = load_revocation_list(&path, &ca)?;
        let err = older
            .check_not_older(&path, in_force.sequence)
            .err()
            .ok_or("an older list was taken")?;
        let CertError::RevocationList { problem, .. } = &err else {
            return Err(format!("unexpected error {err}").into());
        };
        assert_eq!(
            *problem,
            RevocationProblem::Rollback {
                found: 1,
                in_force: 2
            }
        );
        assert!(err.to_string().contains("rollback refused"), "{err}");
        Ok(())
    }

    #[test]
    fn malformed_lists_are_refused_saying_what_is_wrong() -> TestResult {
        let dir = cluster("home", &["a"])?;
        let ca = ca_of(dir.path())?;
        let path = dir.path().join(REVOKED_FILE);
        fs::write(&path, b"not json")?;
        let found = problem(load_revocation_list(&path, &ca))?;
        assert!(
            matches!(found, RevocationProblem::Malformed { .. }),
            "{found}"
        );
        assert!(
            revoke(dir.path(), &RevokeTarget::Name("a".into())).is_err(),
            "revoke wrote over a malformed list"
        );
        assert_eq!(fs::read(&path)?, b"not json");
        fs::remove_file(&path)?;
        revoke(dir.path(), &RevokeTarget::Name("a".into()))?;
        let good = fs::read(&path)?;
        edit(&path, |v| v["extra"] = 1.into())?;
        let found = problem(load_revocation_list(&path, &ca))?;
        assert!(found.to_string().contains("extra"), "{found}");
        crate::fsutil::write_atomic(&path, &good)?;
        edit(&path, |v| v["format"] = 2.into())?;
        assert_eq!(
            problem(load_revocation_list(&path, &ca))?,
            RevocationProblem::UnsupportedFormat { found: 2 }
        );
        crate::fsutil::write_atomic(&path, &good)?;
        edit(&path, |v| v["signature"] = "abc".into())?;
        let found = problem(load_revocation_list(&path, &ca))?;
        assert!(found.to_string().contains("signature"), "{found}");
        Ok(())
    }

    #[test]
    fn revoking_by_name_needs_the_file_and_by_key_id_does_not() -> TestResult {
        let dir = cluster("home", &["a"])?;
        let err = revoke(dir.path(), &RevokeTarget::Name("gone".into()))
            .err()
            .ok_or("revoked a certificate that does not exist")?;
        assert!(matches!(err, CertError::NotIssued { .. }), "{err}");
        assert!(err.to_string().contains("gone.pem"), "{err}");
        assert!(err.to_string().contains("--key-id"), "{err}");

        let key = leaf_key(dir.path(), "a")?;
        fs::remove_file(dir.path().join("a.pem"))?;
        let parsed = parse_key_id(&key.to_string().to_ascii_uppercase())?;
        assert_eq!(parsed, key);
        let done = revoke(
            dir.path(),
            &RevokeTarget::KeyId {
                key: parsed,
                label: None,
            },
        )?;
        assert_eq!(done.entry.name, format!("key-{}", &key.to_string()[..16]));
        let list = load_revocation_list(&dir.path().join(REVOKED_FILE), &ca_of(dir.path())?)?;
        assert!(list.find(&key).is_some());

        for bad in ["", "xyz", &"0".repeat(63), &"g".repeat(64)] {
            assert!(
                matches!(parse_key_id(bad), Err(CertError::BadKeyId { .. })),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_default_list_is_next_to_the_identity_s_ca() -> TestResult {
        let home = cluster("home", &[])?;
        let away = cluster("away", &[])?;
        let ca = ca_of(home.path())?;
        assert_eq!(
            default_revocation_list(home.path(), &ca),
            Some(home.path().join(REVOKED_FILE))
        );
        assert_eq!(default_revocation_list(away.path(), &ca), None);
        assert_eq!(
            default_revocation_list(&home.path().join("none"), &ca),
            None
        );
        Ok(())
    }
}
