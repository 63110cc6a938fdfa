//! The cluster CA: creating it (under a cluster name) and reading the cluster name back from a
//! CA certificate, made safe to print because it may come from a stranger.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::files::{io_err, write_file};
use super::{
    CertError, BACKDATE_MINUTES, CA_CERT_FILE, CA_KEY_FILE, CA_ORGANIZATION, CA_VALIDITY_DAYS,
    MAX_CLUSTER_NAME_LEN,
};

/// A CA created by [`init_cluster_ca`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedCa {
    /// The path of `ca.pem`.
    pub path: PathBuf,
    /// The cluster name written into the CA's subject.
    pub cluster: String,
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
    create_ca(dir, false, super::LEGACY_CA_COMMON_NAME, "rumor")
}

/// Checks a cluster name: 1..=64 characters of `[A-Za-z0-9._-]`.
///
/// # Errors
/// [`CertError::BadClusterName`] otherwise.
pub fn validate_cluster_name(name: &str) -> Result<(), CertError> {
    if super::is_well_formed_name(name, MAX_CLUSTER_NAME_LEN) {
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
/// A CA made before cluster names existed yields
/// [`LEGACY_CA_COMMON_NAME`](super::LEGACY_CA_COMMON_NAME).
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
