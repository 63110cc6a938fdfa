//! The cluster CA and peer certificates (rcgen), and loading them for mutual TLS.
//!
//! The trust boundary of a rumor cluster is one certificate authority. `rumor certs init` creates it
//! in a directory (by convention `certs/`); `rumor certs issue NAME` signs a peer certificate with
//! it. Every peer certificate is usable both as a TLS server and as a TLS client certificate,
//! because every peer both accepts and opens QUIC connections.
//!
//! Each CA carries a cluster name in its subject (common name), given with `--cluster` or
//! generated (`rumor-` and 8 hex digits), so that a refused handshake can say which cluster a
//! stranger's certificate belongs to ([`cluster_name`]). CAs made before cluster names existed
//! have the common name [`LEGACY_CA_COMMON_NAME`]; they load and work as before.
//!
//! Files in the directory (all PEM):
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `ca.pem` | the CA certificate | 0644 |
//! | `ca.key` | the CA private key, PKCS#8 | 0600 |
//! | `{name}.pem` | the peer certificate, then the CA certificate | 0644 |
//! | `{name}.key` | the peer private key, PKCS#8 | 0600 |
//!
//! Keys are ECDSA P-256 with SHA-256 signatures. Peers do not identify each other by certificate
//! name (the peer id travels in the envelope); every peer certificate carries the shared DNS name
//! [`CLUSTER_SERVER_NAME`], which is what a connecting peer checks.
//!
//! Files are written to a temporary file in the same directory and renamed into place, so a
//! crash never leaves a half-written key. Nothing is overwritten unless asked (`--force`): the
//! peer name `ca` (in any case) is refused because its files would be the CA's, and
//! [`load_identity`] refuses the CA's certificate or key as a peer's identity.

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// The DNS name every peer certificate carries and every client connects to.
///
/// Peers share it so that a connecting peer can verify any member's certificate without knowing
/// the member's name in advance.
pub const CLUSTER_SERVER_NAME: &str = "rumor.cluster";

/// File name of the CA certificate inside the certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";

/// File name of the CA private key inside the certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Longest accepted peer name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Validity of the cluster CA, in days (about ten years).
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// Longest accepted cluster name, in characters.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// The common name of every CA made before cluster names existed; such CAs all look alike.
pub const LEGACY_CA_COMMON_NAME: &str = "rumor cluster CA";

/// Organization name in the subject of every rumor CA.
const CA_ORGANIZATION: &str = "rumor cluster CA";

/// How far into the past `not_before` is set, in minutes, to tolerate clock skew between peers.
const BACKDATE_MINUTES: i64 = 5;

/// Errors of certificate creation and loading.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file that would be created already exists and overwriting was not asked for.
    #[error("{} already exists (use --force to overwrite)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading, writing or renaming a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The peer name is empty, longer than 64 characters or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("bad peer name {name:?}: expected 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// The peer name would give the CA's own file names (`ca`, compared without case because
    /// case-insensitive file systems would map `CA.pem` onto `ca.pem`).
    #[error(
        "peer name {name:?} is reserved for the cluster CA, whose files are {CA_CERT_FILE} and \
         {CA_KEY_FILE} (names are compared without case); issue and use a peer certificate \
         with another name"
    )]
    ReservedName {
        /// The rejected name.
        name: String,
    },
    /// The files of a peer identity hold the CA's certificate or key, or a CA certificate: a
    /// peer must run on a certificate issued to it, never on the authority itself.
    #[error("{} cannot be a peer's identity: {reason}", path.display())]
    NotPeerIdentity {
        /// The certificate or key file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested validity is zero days, or the validity window is not representable.
    #[error("bad validity: {reason}")]
    BadValidity {
        /// What is wrong.
        reason: String,
    },
    /// A PEM file holds no item of the expected kind (certificate or private key).
    #[error("{}: no {expected} found", path.display())]
    Missing {
        /// The file read.
        path: PathBuf,
        /// What was looked for, e.g. "certificate".
        expected: &'static str,
    },
    /// rcgen failed to parse a key or certificate, or to sign one.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The cluster name is empty, longer than 64 characters or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("bad cluster name {name:?}: expected 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadClusterName {
        /// The rejected name.
        name: String,
    },
}

/// What to put in a peer certificate beyond the defaults; for tests and tooling.
///
/// [`issue`] uses [`IssueOptions::default`]: client authentication allowed, valid from now.
/// Tests use the other settings to build certificates a server must refuse.
#[derive(Clone, Copy, Debug)]
pub struct IssueOptions {
    /// Include the `clientAuth` extended key usage (next to `serverAuth`). Without it the
    /// certificate can only serve, and a peer's server refuses it as a client certificate.
    pub client_auth: bool,
    /// If set, the certificate expired this many days ago: its validity window of `days` days
    /// ends `n` days before now.
    pub not_after_days_ago: Option<u32>,
    /// Write the extended key usage extension at all. Without it (false) the certificate names
    /// no usage, which X.509 reads as "any usage" and webpki accepts; rumor refuses it
    /// (`net::tls`). `client_auth` is ignored then.
    pub extended_key_usage: bool,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            client_auth: true,
            not_after_days_ago: None,
            extended_key_usage: true,
        }
    }
}

/// A CA created by [`init_cluster_ca`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedCa {
    /// The path of `ca.pem`.
    pub path: PathBuf,
    /// The cluster name written into the CA's subject.
    pub cluster: String,
}

/// Everything a peer needs for mutual TLS: the cluster CA, its own chain and key.
pub struct PeerIdentity {
    /// The cluster CA certificate, the only trust anchor.
    pub ca: CertificateDer<'static>,
    /// The peer certificate first, then the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the peer certificate.
    pub key: PrivateKeyDer<'static>,
    /// The peer name the certificate was issued for.
    pub name: String,
}

impl Clone for PeerIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Debug for PeerIdentity {
    /// Shows the name and the chain length, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("name", &self.name)
            .field("chain_len", &self.chain.len())
            .field("key", &"[elided]")
            .finish()
    }
}

/// Creates the cluster CA in `dir` under a generated cluster name; see [`init_cluster_ca`].
/// Returns the path of `ca.pem`.
///
/// # Errors
/// As [`init_cluster_ca`].
pub fn init_ca(dir: &Path, force: bool) -> Result<PathBuf, CertError> {
    init_cluster_ca(dir, force, None).map(|created| created.path)
}

/// Creates the cluster CA in `dir`: `ca.pem` (certificate) and `ca.key` (PKCS#8 PEM, mode 0600).
///
/// The CA's subject is CN = the cluster name, O = "rumor cluster CA". `cluster` is the name;
/// `None` generates one, `rumor-` and 8 random hex digits, so two CAs made without a name still
/// differ. Creates `dir` if needed. Refuses to overwrite an existing `ca.pem` or `ca.key`
/// unless `force`. The CA is valid for [`CA_VALIDITY_DAYS`] days.
///
/// # Errors
/// [`CertError::BadClusterName`] unless `cluster` is 1..=64 characters of `[A-Za-z0-9._-]`;
/// [`CertError::Exists`] if a CA file exists and `force` is false; [`CertError::Io`] on file
/// system failures; [`CertError::Rcgen`] if key generation or signing fails.
pub fn init_cluster_ca(
    dir: &Path,
    force: bool,
    cluster: Option<&str>,
) -> Result<CreatedCa, CertError> {
    let cluster = match cluster {
        Some(name) => {
            validate_cluster_name(name)?;
            name.to_string()
        }
        None => format!("rumor-{:08x}", rand::random::<u32>()),
    };
    let path = create_ca(dir, force, &cluster, CA_ORGANIZATION)?;
    tracing::info!(path = %path.display(), %cluster, "created cluster CA");
    Ok(CreatedCa { path, cluster })
}

/// Writes a self-signed CA with subject CN = `common_name`, O = `organization` into `dir`;
/// returns the path of `ca.pem`. See [`init_cluster_ca`].
fn create_ca(
    dir: &Path,
    force: bool,
    common_name: &str,
    organization: &str,
) -> Result<PathBuf, CertError> {
    fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(CertError::Exists { path: path.clone() });
            }
        }
    }

    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(BACKDATE_MINUTES);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);

    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, force)?;
    Ok(cert_path)
}

/// Creates a CA as rumor made them before cluster names existed (CN "rumor cluster CA",
/// O "rumor"), for tests that check such CAs keep working.
#[cfg(test)]
pub(crate) fn init_legacy_ca(dir: &Path) -> Result<PathBuf, CertError> {
    create_ca(dir, false, LEGACY_CA_COMMON_NAME, "rumor")
}

/// Checks a cluster name: 1..=64 characters of `[A-Za-z0-9._-]`.
///
/// # Errors
/// [`CertError::BadClusterName`] otherwise.
pub fn validate_cluster_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadClusterName {
            name: name.to_string(),
        })
    }
}

/// The cluster name of a CA certificate: the first common name of its subject, or the whole
/// subject (RFC 4514 form) when it has none. `None` if `ca` does not parse as X.509.
///
/// A CA made before cluster names existed yields [`LEGACY_CA_COMMON_NAME`].
pub fn cluster_name(ca: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca.as_ref()).ok()?;
    Some(display_name(cert.subject()))
}

/// How rumor names a CA in messages: its first common name, else the whole distinguished name.
///
/// The name may come from a stranger's certificate, so it is made safe to print: characters
/// outside printable ASCII become `?` and it is cut at [`MAX_DISPLAY_NAME_LEN`] characters.
pub(crate) fn display_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let raw = name
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| name.to_string(), str::to_string);
    printable(&raw, MAX_DISPLAY_NAME_LEN)
}

/// Longest CA name shown in a message, in characters; longer names end in `...`.
const MAX_DISPLAY_NAME_LEN: usize = 128;

/// `text` with every character outside printable ASCII replaced by `?`, cut at `max`
/// characters (then ending in `...`).
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// Issues a peer certificate signed by the CA in `dir`: `{name}.pem` (leaf then CA) and
/// `{name}.key` (PKCS#8 PEM, mode 0600).
///
/// The certificate is usable for server and client auth (EKU serverAuth + clientAuth, key usage
/// digitalSignature); its SANs are DNS [`CLUSTER_SERVER_NAME`] and DNS `name`. It is valid for
/// `days` days from now (backdated by five minutes for clock skew). An existing certificate or
/// key of the same name is left alone and is an error; [`reissue`] replaces it. Returns the path
/// of `{name}.pem`.
///
/// # Errors
/// [`CertError::BadName`] unless `name` is 1..=64 characters of `[A-Za-z0-9._-]`;
/// [`CertError::ReservedName`] for `ca` in any case; [`CertError::BadValidity`] if `days` is 0;
/// [`CertError::Exists`] if `{name}.pem` or `{name}.key` exists; [`CertError::Io`] /
/// [`CertError::Missing`] if the CA files cannot be read; [`CertError::Rcgen`] if they do not
/// parse or signing fails.
pub fn issue(dir: &Path, name: &str, days: u32) -> Result<PathBuf, CertError> {
    issue_inner(dir, name, days, IssueOptions::default(), false)
}

/// Like [`issue`], but an existing `{name}.pem` and `{name}.key` are replaced by the new ones
/// (`rumor certs issue --force`). The CA's files are never replaced: `ca` stays reserved.
///
/// # Errors
/// As [`issue`], except [`CertError::Exists`].
pub fn reissue(dir: &Path, name: &str, days: u32) -> Result<PathBuf, CertError> {
    issue_inner(dir, name, days, IssueOptions::default(), true)
}

/// Like [`issue`], with [`IssueOptions`]; meant for tests and tooling that need certificates a
/// peer must refuse (expired, or without clientAuth). Existing files are not overwritten.
///
/// # Errors
/// As [`issue`].
pub fn issue_with(
    dir: &Path,
    name: &str,
    days: u32,
    options: IssueOptions,
) -> Result<PathBuf, CertError> {
    issue_inner(dir, name, days, options, false)
}

fn issue_inner(
    dir: &Path,
    name: &str,
    days: u32,
    options: IssueOptions,
    overwrite: bool,
) -> Result<PathBuf, CertError> {
    validate_name(name)?;
    if days == 0 {
        return Err(CertError::BadValidity {
            reason: "validity must be at least one day".into(),
        });
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    if !overwrite {
        // Checked before anything is generated; the writes below refuse to clobber as well, in
        // case a file appears meanwhile.
        for path in [&cert_path, &key_path] {
            if path.symlink_metadata().is_ok() {
                return Err(CertError::Exists { path: path.clone() });
            }
        }
    }

    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_pem = read_string(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read_string(&ca_key_path)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;

    let now = OffsetDateTime::now_utc();
    let (not_before, not_after) = match options.not_after_days_ago {
        None => (
            now - Duration::minutes(BACKDATE_MINUTES),
            now + Duration::days(i64::from(days)),
        ),
        Some(ago) => {
            let not_after = now - Duration::days(i64::from(ago));
            (not_after - Duration::days(i64::from(days)), not_after)
        }
    };

    let mut params =
        CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string(), name.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "rumor");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if !options.extended_key_usage {
        Vec::new()
    } else if options.client_auth {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let mut chain_pem = cert.pem();
    if !chain_pem.ends_with('\n') {
        chain_pem.push('\n');
    }
    chain_pem.push_str(&ca_pem);

    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, overwrite)?;
    write_file(&cert_path, chain_pem.as_bytes(), 0o644, overwrite)?;
    tracing::info!(path = %cert_path.display(), name, days, "issued peer certificate");
    Ok(cert_path)
}

/// Reads `ca.pem`, `{name}.pem` and `{name}.key` from `dir`.
///
/// The CA certificate is the first certificate in `ca.pem`; the chain is every certificate in
/// `{name}.pem`, leaf first. The chain is not verified here (the TLS handshake does that), but
/// an identity that is the CA itself is refused: the leaf may not be the CA certificate, carry
/// the CA's public key or be a CA (basicConstraints CA=true), and the key may not be the CA's.
///
/// # Errors
/// [`CertError::BadName`] for an invalid `name`; [`CertError::ReservedName`] for `ca` in any
/// case; [`CertError::Io`] if a file cannot be read or is not valid PEM; [`CertError::Missing`]
/// if a file holds no certificate or no private key; [`CertError::NotPeerIdentity`] when the
/// certificate or key is the CA's, or the certificate is a CA, or does not parse.
pub fn load_identity(dir: &Path, name: &str) -> Result<PeerIdentity, CertError> {
    validate_name(name)?;
    let ca_path = dir.join(CA_CERT_FILE);
    let ca = read_certs(&ca_path)?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::Missing {
            path: ca_path.clone(),
            expected: "certificate",
        })?;
    let chain_path = dir.join(format!("{name}.pem"));
    let chain = read_certs(&chain_path)?;
    if chain.is_empty() {
        return Err(CertError::Missing {
            path: chain_path,
            expected: "certificate",
        });
    }
    let key_path = dir.join(format!("{name}.key"));
    let key = read_key(&key_path)?;
    refuse_ca_as_identity(&ca, &chain[0], &chain_path, &key, &key_path)?;
    Ok(PeerIdentity {
        ca,
        chain,
        key,
        name: name.to_string(),
    })
}

/// Refuses an identity that is the cluster CA rather than a peer issued by it: `leaf` equal to
/// `ca`, a leaf with the CA's public key, a leaf that is itself a CA, or a `key` whose public
/// half is the CA's. The first two and the last mean the files were copied from `ca.pem` /
/// `ca.key`; a peer holding the CA key could sign certificates for anyone.
fn refuse_ca_as_identity(
    ca: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    leaf_path: &Path,
    key: &PrivateKeyDer<'_>,
    key_path: &Path,
) -> Result<(), CertError> {
    let refuse = |path: &Path, reason: &str| CertError::NotPeerIdentity {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if leaf.as_ref() == ca.as_ref() {
        return Err(refuse(
            leaf_path,
            "it is the cluster CA certificate itself; issue a peer certificate with \
             `rumor certs issue --name NAME`",
        ));
    }
    let (_, leaf_cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| refuse(leaf_path, &format!("its certificate does not parse: {e}")))?;
    let ca_spki = x509_parser::parse_x509_certificate(ca.as_ref())
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec());
    if ca_spki.as_deref() == Some(leaf_cert.public_key().raw) {
        return Err(refuse(
            leaf_path,
            "its certificate carries the cluster CA's public key",
        ));
    }
    let is_ca = leaf_cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|ext| ext.value.ca);
    if is_ca {
        return Err(refuse(
            leaf_path,
            "it is a CA certificate (basicConstraints CA=true), not a peer certificate",
        ));
    }
    // A key type rcgen cannot read is left to the TLS handshake, which checks the key matches
    // the certificate.
    if let (Ok(pair), Some(ca_spki)) = (KeyPair::try_from(key), ca_spki) {
        if pair.subject_public_key_info() == ca_spki {
            return Err(refuse(
                key_path,
                "it is the cluster CA's private key (copied from ca.key?); a peer needs the \
                 key issued with its own certificate",
            ));
        }
    }
    Ok(())
}

/// Whether `name` would give the CA's file names (`ca.pem`, `ca.key`), compared without case:
/// on a case-insensitive file system `CA.pem` is `ca.pem`.
pub fn is_reserved_name(name: &str) -> bool {
    let ca_stem = CA_CERT_FILE.trim_end_matches(".pem");
    name.eq_ignore_ascii_case(ca_stem)
}

/// Checks a peer name: 1..=64 characters of `[A-Za-z0-9._-]`, and not the CA's (`ca`, in any
/// case).
///
/// # Errors
/// [`CertError::BadName`] for a malformed name; [`CertError::ReservedName`] for the CA's.
pub fn validate_name(name: &str) -> Result<(), CertError> {
    if is_reserved_name(name) {
        return Err(CertError::ReservedName {
            name: name.to_string(),
        });
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName {
            name: name.to_string(),
        })
    }
}

fn io_err(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| io_err(path, source))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let file = fs::File::open(path).map_err(|source| io_err(path, source))?;
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| io_err(path, source))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let file = fs::File::open(path).map_err(|source| io_err(path, source))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| io_err(path, source))?
        .ok_or_else(|| CertError::Missing {
            path: path.to_path_buf(),
            expected: "private key",
        })
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename.
/// With `overwrite` false an existing `path` is an error ([`CertError::Exists`]).
fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<(), CertError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // NamedTempFile is created with mode 0600, so a key is never readable by others.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| io_err(dir, source))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|source| io_err(tmp.path(), source))?;
    set_mode(tmp.path(), mode)?;
    let persisted = if overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    match persisted {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(CertError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path, e.error)),
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| io_err(path, source))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), CertError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use std::sync::Arc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Verifies `id`'s chain as a client certificate against `ca`, as a peer's server would.
    fn verify_as_client(
        ca: &CertificateDer<'static>,
        id: &PeerIdentity,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider()).build()?;
        verifier.verify_client_cert(&id.chain[0], &id.chain[1..], UnixTime::now())?;
        Ok(())
    }

    /// Verifies `id`'s chain as a server certificate for [`CLUSTER_SERVER_NAME`].
    fn verify_as_server(
        ca: &CertificateDer<'static>,
        id: &PeerIdentity,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
                .build()?;
        let name = ServerName::try_from(CLUSTER_SERVER_NAME)?;
        verifier.verify_server_cert(&id.chain[0], &id.chain[1..], &name, &[], UnixTime::now())?;
        Ok(())
    }

    #[test]
    fn init_issue_load_round_trip() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ca_path = init_ca(dir.path(), false)?;
        assert_eq!(ca_path, dir.path().join("ca.pem"));
        let cert_path = issue(dir.path(), "peer-1", 30)?;
        assert_eq!(cert_path, dir.path().join("peer-1.pem"));

        let id = load_identity(dir.path(), "peer-1")?;
        assert_eq!(id.name, "peer-1");
        assert_eq!(id.chain.len(), 2, "leaf then CA");
        assert_eq!(id.chain[1], id.ca);
        assert!(matches!(id.key, PrivateKeyDer::Pkcs8(_)));

        verify_as_client(&id.ca, &id)?;
        verify_as_server(&id.ca, &id)?;
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() -> TestResult {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        issue(dir.path(), "a", 1)?;
        for file in ["ca.key", "a.key"] {
            let mode = fs::metadata(dir.path().join(file))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        let mode = fs::metadata(dir.path().join("a.pem"))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        Ok(())
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        let first = fs::read(dir.path().join("ca.pem"))?;
        assert!(matches!(
            init_ca(dir.path(), false),
            Err(CertError::Exists { .. })
        ));
        assert_eq!(fs::read(dir.path().join("ca.pem"))?, first);
        init_ca(dir.path(), true)?;
        assert_ne!(fs::read(dir.path().join("ca.pem"))?, first);
        Ok(())
    }

    #[test]
    fn bad_names_are_rejected() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        let long = "x".repeat(65);
        for name in ["", "a/b", "a b", "../x", "é", "a\0", long.as_str()] {
            assert!(
                matches!(issue(dir.path(), name, 1), Err(CertError::BadName { .. })),
                "{name:?} accepted"
            );
            assert!(matches!(
                load_identity(dir.path(), name),
                Err(CertError::BadName { .. })
            ));
        }
        let longest = "y".repeat(64);
        for name in ["A.b_c-9", "-", longest.as_str()] {
            issue(dir.path(), name, 1)?;
            let id = load_identity(dir.path(), name)?;
            verify_as_server(&id.ca, &id)?;
        }
        assert!(matches!(
            issue(dir.path(), "ok", 0),
            Err(CertError::BadValidity { .. })
        ));
        Ok(())
    }

    #[test]
    fn ca_name_is_reserved_in_any_case() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        let ca_pem = fs::read(dir.path().join("ca.pem"))?;
        let ca_key = fs::read(dir.path().join("ca.key"))?;
        for name in ["ca", "CA", "Ca", "cA"] {
            for result in [issue(dir.path(), name, 1), reissue(dir.path(), name, 1)] {
                let err = result.expect_err("the CA's name must be refused");
                assert!(
                    matches!(err, CertError::ReservedName { .. }),
                    "{name}: {err}"
                );
                assert!(err.to_string().contains("reserved"), "{err}");
            }
            let err = load_identity(dir.path(), name).expect_err("refused");
            assert!(matches!(err, CertError::ReservedName { .. }), "{err}");
        }
        assert_eq!(fs::read(dir.path().join("ca.pem"))?, ca_pem);
        assert_eq!(fs::read(dir.path().join("ca.key"))?, ca_key);
        // Names that merely start with "ca" are fine.
        issue(dir.path(), "cab", 1)?;
        issue(dir.path(), "ca-1", 1)?;
        Ok(())
    }

    #[test]
    fn issue_refuses_to_overwrite_unless_forced() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        issue(dir.path(), "a", 1)?;
        let pem = fs::read(dir.path().join("a.pem"))?;
        let key = fs::read(dir.path().join("a.key"))?;
        let err = issue(dir.path(), "a", 1).expect_err("exists");
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(dir.path().join("a.pem"))?, pem);
        assert_eq!(fs::read(dir.path().join("a.key"))?, key);
        // A key without its certificate is not replaced either.
        fs::write(dir.path().join("b.key"), "precious")?;
        let err = issue(dir.path(), "b", 1).expect_err("key exists");
        assert!(
            matches!(&err, CertError::Exists { path } if path.ends_with("b.key")),
            "{err}"
        );
        assert!(!dir.path().join("b.pem").exists());
        assert_eq!(fs::read_to_string(dir.path().join("b.key"))?, "precious");
        reissue(dir.path(), "a", 1)?;
        assert_ne!(fs::read(dir.path().join("a.key"))?, key);
        let id = load_identity(dir.path(), "a")?;
        verify_as_server(&id.ca, &id)?;
        Ok(())
    }

    #[test]
    fn the_ca_is_refused_as_a_peer_identity() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        let ca_pem = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca.key");
        // The CA's files copied under a peer name.
        fs::copy(&ca_pem, dir.path().join("copy.pem"))?;
        fs::copy(&ca_key, dir.path().join("copy.key"))?;
        let err = load_identity(dir.path(), "copy").expect_err("the CA itself");
        assert!(matches!(err, CertError::NotPeerIdentity { .. }), "{err}");
        assert!(err.to_string().contains("CA certificate itself"), "{err}");
        // A real peer certificate with the CA's key.
        issue(dir.path(), "stolen", 1)?;
        fs::copy(&ca_key, dir.path().join("stolen.key"))?;
        let err = load_identity(dir.path(), "stolen").expect_err("the CA key");
        assert!(
            matches!(&err, CertError::NotPeerIdentity { path, .. } if path.ends_with("stolen.key")),
            "{err}"
        );
        assert!(err.to_string().contains("CA's private key"), "{err}");
        // Another CA's certificate: a CA, not a peer.
        let other = tempfile::tempdir()?;
        init_ca(other.path(), false)?;
        fs::copy(other.path().join("ca.pem"), dir.path().join("rogue.pem"))?;
        fs::copy(other.path().join("ca.key"), dir.path().join("rogue.key"))?;
        let err = load_identity(dir.path(), "rogue").expect_err("a CA");
        assert!(
            err.to_string().contains("basicConstraints CA=true"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn missing_ca_is_an_io_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert!(matches!(
            issue(dir.path(), "a", 1),
            Err(CertError::Io { .. })
        ));
        assert!(matches!(
            load_identity(dir.path(), "a"),
            Err(CertError::Io { .. })
        ));
        fs::write(dir.path().join("ca.pem"), "not pem")?;
        fs::write(dir.path().join("ca.key"), "not pem")?;
        assert!(issue(dir.path(), "a", 1).is_err());
        assert!(matches!(
            load_identity(dir.path(), "a"),
            Err(CertError::Missing { .. })
        ));
        Ok(())
    }

    #[test]
    fn refused_certificates_fail_client_verification() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_ca(dir.path(), false)?;
        issue_with(
            dir.path(),
            "expired",
            10,
            IssueOptions {
                not_after_days_ago: Some(1),
                ..IssueOptions::default()
            },
        )?;
        issue_with(
            dir.path(),
            "server-only",
            10,
            IssueOptions {
                client_auth: false,
                ..IssueOptions::default()
            },
        )?;
        let expired = load_identity(dir.path(), "expired")?;
        let server_only = load_identity(dir.path(), "server-only")?;
        assert!(verify_as_client(&expired.ca, &expired).is_err());
        assert!(verify_as_client(&server_only.ca, &server_only).is_err());
        verify_as_server(&server_only.ca, &server_only)?;

        let other = tempfile::tempdir()?;
        init_ca(other.path(), false)?;
        issue(other.path(), "stranger", 10)?;
        let stranger = load_identity(other.path(), "stranger")?;
        assert!(verify_as_client(&expired.ca, &stranger).is_err());
        Ok(())
    }

    #[test]
    fn every_ca_gets_its_own_cluster_name() -> TestResult {
        let (a, b, named) = (
            tempfile::tempdir()?,
            tempfile::tempdir()?,
            tempfile::tempdir()?,
        );
        let first = init_cluster_ca(a.path(), false, None)?;
        let second = init_cluster_ca(b.path(), false, None)?;
        assert_ne!(first.cluster, second.cluster);
        for created in [&first, &second] {
            let hex = created
                .cluster
                .strip_prefix("rumor-")
                .ok_or("no rumor- prefix")?;
            assert!(
                hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
                "{}",
                created.cluster
            );
        }
        let ca_a = read_certs(&first.path)?.remove(0);
        let ca_b = read_certs(&second.path)?.remove(0);
        assert_eq!(cluster_name(&ca_a).as_deref(), Some(first.cluster.as_str()));
        assert_eq!(
            cluster_name(&ca_b).as_deref(),
            Some(second.cluster.as_str())
        );
        let (_, parsed_a) = x509_parser::parse_x509_certificate(ca_a.as_ref())?;
        let (_, parsed_b) = x509_parser::parse_x509_certificate(ca_b.as_ref())?;
        assert_ne!(parsed_a.subject().as_raw(), parsed_b.subject().as_raw());

        let created = init_cluster_ca(named.path(), false, Some("prod-eu.1"))?;
        assert_eq!(created.cluster, "prod-eu.1");
        issue(named.path(), "peer", 1)?;
        let id = load_identity(named.path(), "peer")?;
        assert_eq!(cluster_name(&id.ca).as_deref(), Some("prod-eu.1"));
        verify_as_client(&id.ca, &id)?;

        let long = "c".repeat(65);
        for bad in ["", "a b", "x/y", "é", long.as_str()] {
            let dir = tempfile::tempdir()?;
            assert!(
                matches!(
                    init_cluster_ca(dir.path(), false, Some(bad)),
                    Err(CertError::BadClusterName { .. })
                ),
                "{bad:?} accepted"
            );
            assert!(!dir.path().join(CA_CERT_FILE).exists());
        }
        Ok(())
    }

    #[test]
    fn a_ca_from_before_cluster_names_still_works() -> TestResult {
        let dir = tempfile::tempdir()?;
        init_legacy_ca(dir.path())?;
        issue(dir.path(), "old", 1)?;
        let id = load_identity(dir.path(), "old")?;
        assert_eq!(cluster_name(&id.ca).as_deref(), Some(LEGACY_CA_COMMON_NAME));
        verify_as_client(&id.ca, &id)?;
        verify_as_server(&id.ca, &id)?;
        Ok(())
    }

    #[test]
    fn printable_names_are_safe_to_log() {
        assert_eq!(printable("plain name-1", 64), "plain name-1");
        assert_eq!(printable("a\nb\u{1b}[0mé", 64), "a?b?[0m?");
        assert_eq!(printable("abcdef", 3), "abc...");
    }
}
