//! Issuing peer certificates signed by the cluster CA, and the rules for peer names.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::files::{read_string, write_file};
use super::{
    CertError, BACKDATE_MINUTES, CA_CERT_FILE, CA_KEY_FILE, CLUSTER_SERVER_NAME, MAX_NAME_LEN,
};

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
    if super::is_well_formed_name(name, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(CertError::BadName {
            name: name.to_string(),
        })
    }
}
