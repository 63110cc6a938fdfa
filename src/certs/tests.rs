//! Tests of the certificate directory: round trips, file modes, refusals, TLS verification of
//! issued chains.

use std::fs;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::files::read_certs;
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
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider()).build()?;
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
