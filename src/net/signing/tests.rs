//! Tests of origin signatures with certificates issued by the project's own CA code.

use super::*;
use crate::certs::{init_cluster_ca, issue, issue_with, load_identity, IssueOptions};
use rumor_proto::auth::{content_hash, statement};
use rumor_proto::PeerId;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A fresh CA named `cluster` in a temporary directory with one identity per name.
fn cluster(
    cluster: &str,
    names: &[&str],
) -> Result<(tempfile::TempDir, Vec<PeerIdentity>), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    init_cluster_ca(dir.path(), false, Some(cluster))?;
    let mut ids = Vec::new();
    for name in names {
        issue(dir.path(), name, 1)?;
        ids.push(load_identity(dir.path(), name)?);
    }
    Ok((dir, ids))
}

/// A delta statement of `signer`'s peer id over `values`.
fn delta_statement(signer: &CertSigner, version: u64, values: &[f32]) -> Vec<u8> {
    let origin = PeerId::bound(&signer.credential().key_id(), [7; 8]);
    statement::delta(origin, version, 0.5, &content_hash(values))
}

#[test]
fn a_signature_verifies_under_its_credential_after_admission() -> TestResult {
    let (_dir, ids) = cluster("home", &["a", "b"])?;
    let a = CertSigner::new(&ids[0])?;
    let b = peer_keys(&ids[1])?;
    assert_eq!(a.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    assert_eq!(a.credential().as_bytes(), ids[0].chain[0].as_ref());
    let statement = delta_statement(&a, 1, &[1.0, 2.0, 3.0]);
    let signature = a.sign(&statement)?;
    let scheme = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256).to_be_bytes();
    assert_eq!(
        signature.0.get(..2),
        Some(&scheme[..]),
        "the scheme comes first"
    );
    b.verifier.admit(a.credential())?;
    b.verifier.verify(a.credential(), &statement, &signature)?;
    // A peer checks its own signatures the same way.
    let own = b.signer.sign(&statement)?;
    b.verifier.verify(b.signer.credential(), &statement, &own)?;
    Ok(())
}

#[test]
fn a_changed_statement_does_not_verify() -> TestResult {
    let (_dir, ids) = cluster("home", &["a"])?;
    let keys = peer_keys(&ids[0])?;
    let a = CertSigner::new(&ids[0])?;
    let signature = a.sign(&delta_statement(&a, 1, &[1.0, 2.0]))?;
    for changed in [
        delta_statement(&a, 2, &[1.0, 2.0]),
        delta_statement(&a, 1, &[1.0, 2.5]),
        Vec::new(),
    ] {
        assert_eq!(
            keys.verifier.verify(a.credential(), &changed, &signature),
            Err(AuthError::BadSignature)
        );
    }
    Ok(())
}

#[test]
fn another_members_credential_does_not_verify() -> TestResult {
    let (_dir, ids) = cluster("home", &["a", "b"])?;
    let a = CertSigner::new(&ids[0])?;
    let b = CertSigner::new(&ids[1])?;
    let verifier = ClusterVerifier::new(&ids[0])?;
    let statement = delta_statement(&a, 1, &[1.0]);
    let signature = a.sign(&statement)?;
    verifier.admit(b.credential())?;
    assert_eq!(
        verifier.verify(b.credential(), &statement, &signature),
        Err(AuthError::BadSignature)
    );
    Ok(())
}

#[test]
fn a_credential_from_another_ca_is_refused_naming_that_ca() -> TestResult {
    let (_home, ids) = cluster("home-cluster", &["a"])?;
    let (_away, strangers) = cluster("other-cluster", &["x"])?;
    let verifier = ClusterVerifier::new(&ids[0])?;
    let stranger = CertSigner::new(&strangers[0])?;
    match verifier.admit(stranger.credential()) {
        Err(AuthError::Credential(text)) => {
            assert!(text.contains("\"other-cluster\""), "{text}");
            assert!(text.contains("\"home-cluster\""), "{text}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(
        verifier.cached_admissions(),
        0,
        "refusals are not remembered"
    );
    // Its signatures are still its own: verify says nothing about membership.
    let statement = delta_statement(&stranger, 1, &[1.0]);
    verifier.verify(
        stranger.credential(),
        &statement,
        &stranger.sign(&statement)?,
    )?;
    Ok(())
}

#[test]
fn a_certificate_without_client_auth_or_expired_is_refused() -> TestResult {
    let (dir, ids) = cluster("home", &["a"])?;
    issue_with(
        dir.path(),
        "server-only",
        30,
        IssueOptions {
            client_auth: false,
            ..IssueOptions::default()
        },
    )?;
    issue_with(
        dir.path(),
        "no-eku",
        30,
        IssueOptions {
            extended_key_usage: false,
            ..IssueOptions::default()
        },
    )?;
    issue_with(
        dir.path(),
        "expired",
        30,
        IssueOptions {
            not_after_days_ago: Some(1),
            ..IssueOptions::default()
        },
    )?;
    let verifier = ClusterVerifier::new(&ids[0])?;
    for (name, expected) in [
        ("server-only", "client"),
        ("no-eku", "extended key usage"),
        ("expired", "expired"),
    ] {
        let signer = CertSigner::new(&load_identity(dir.path(), name)?)?;
        match verifier.admit(signer.credential()) {
            Err(AuthError::Credential(text)) => {
                assert!(text.to_lowercase().contains(expected), "{name}: {text}");
            }
            other => return Err(format!("{name}: expected a refusal, got {other:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn garbage_signatures_and_credentials_are_refused_without_panic() -> TestResult {
    let (_dir, ids) = cluster("home", &["a"])?;
    let a = CertSigner::new(&ids[0])?;
    let verifier = ClusterVerifier::new(&ids[0])?;
    let statement = delta_statement(&a, 1, &[1.0]);
    let good = a.sign(&statement)?.0;
    let p256 = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256).to_be_bytes();
    let mut flipped = good.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    let mut other_scheme = good.clone();
    other_scheme[..2].copy_from_slice(&u16::from(SignatureScheme::ED25519).to_be_bytes());
    let mut unknown_scheme = good.clone();
    unknown_scheme[..2].copy_from_slice(&[0xfe, 0xfe]);
    let mut sha1 = good.clone();
    sha1[..2].copy_from_slice(&u16::from(SignatureScheme::ECDSA_SHA1_Legacy).to_be_bytes());
    let bad: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x04],
        p256.to_vec(),
        good[..good.len() / 2].to_vec(),
        good[2..].to_vec(),
        flipped,
        other_scheme,
        unknown_scheme,
        sha1,
        [&p256[..], &[0xff; 600][..]].concat(),
    ];
    for signature in bad {
        assert_eq!(
            verifier.verify(a.credential(), &statement, &Signature(signature.clone())),
            Err(AuthError::BadSignature),
            "{signature:02x?}"
        );
    }
    for credential in [
        Credential::new(Vec::new()),
        Credential::new(b"not a certificate".to_vec()),
        Credential::new(a.credential().as_bytes()[..100].to_vec()),
    ] {
        assert!(matches!(
            verifier.admit(&credential),
            Err(AuthError::Credential(_))
        ));
        assert!(matches!(
            verifier.verify(&credential, &statement, &Signature(good.clone())),
            Err(AuthError::Credential(_))
        ));
    }
    Ok(())
}

#[test]
fn admissions_are_remembered_within_bounds() -> TestResult {
    let (_dir, ids) = cluster("home", &["a", "b", "c"])?;
    let creds = ids
        .iter()
        .map(|id| Ok(CertSigner::new(id)?.credential().clone()))
        .collect::<Result<Vec<_>, NetError>>()?;
    let verifier = ClusterVerifier::new(&ids[0])?;
    verifier.admit(&creds[0])?;
    verifier.admit(&creds[0])?;
    assert_eq!(verifier.cached_admissions(), 1);

    let uncached = ClusterVerifier::new(&ids[0])?.with_cache_limits(ADMIT_CACHE_TTL, 0);
    uncached.admit(&creds[0])?;
    assert_eq!(uncached.cached_admissions(), 0);

    let small = ClusterVerifier::new(&ids[0])?.with_cache_limits(ADMIT_CACHE_TTL, 2);
    for credential in &creds {
        small.admit(credential)?;
    }
    assert_eq!(small.cached_admissions(), 2);
    Ok(())
}

#[test]
fn a_denied_credential_is_refused_even_when_its_admission_is_remembered() -> TestResult {
    let (_dir, ids) = cluster("home", &["a", "b"])?;
    let deny = DenyList::new();
    let keys = peer_keys_denying(&ids[0], deny.clone())?;
    let verifier = ClusterVerifier::new(&ids[0])?.denying(deny.clone());
    let b = CertSigner::new(&ids[1])?;
    verifier.admit(b.credential())?;
    keys.verifier.admit(b.credential())?;
    assert_eq!(verifier.cached_admissions(), 1);

    deny.add(b.credential().key_id(), "b");
    for refused in [
        verifier.admit(b.credential()),
        keys.verifier.admit(b.credential()),
    ] {
        let text = refused
            .err()
            .ok_or("a revoked credential was admitted")?
            .to_string();
        assert!(text.contains("certificate revoked: \"b\""), "{text}");
    }
    assert_eq!(
        verifier.cached_admissions(),
        0,
        "the remembered admission is dropped"
    );
    // Signatures still check (admission is what revocation takes away); others are admitted.
    let statement = delta_statement(&b, 1, &[1.0]);
    verifier.verify(b.credential(), &statement, &b.sign(&statement)?)?;
    verifier.admit(CertSigner::new(&ids[0])?.credential())?;
    Ok(())
}

#[test]
fn the_cache_drops_expired_entries_then_the_soonest_to_expire() {
    let now = Instant::now();
    let keys: Vec<KeyId> = (0u8..4).map(|i| KeyId::of(&[i])).collect();
    let mut cache = AdmitCache::default();
    cache.insert(keys[0], now + Duration::from_secs(30), now, 2);
    cache.insert(keys[1], now + Duration::from_secs(10), now, 2);
    cache.insert(keys[2], now + Duration::from_secs(20), now, 2);
    assert!(cache.admitted(&keys[0], now));
    assert!(!cache.admitted(&keys[1], now), "the soonest to expire went");
    assert!(cache.admitted(&keys[2], now));
    let later = now + Duration::from_secs(25);
    assert!(!cache.admitted(&keys[2], later), "expired");
    cache.insert(keys[3], later + Duration::from_secs(60), later, 2);
    assert!(cache.admitted(&keys[0], later));
    assert!(cache.admitted(&keys[3], later));
    assert_eq!(cache.until.len(), 2);
}
