//! Signatures with a certificate's key, in the one wire form rumor uses for them: the TLS
//! `SignatureScheme` as a big-endian `u16`, then the signature bytes as the scheme defines them
//! (ECDSA: DER; Ed25519: 64 bytes; RSA-PSS: the modulus' length). Made and checked through
//! rustls' ring provider and webpki. Members sign their deltas and records with them
//! (`net::signing`), the CA its revocation list ([`super::revoke`]).

use rumor_proto::auth::AuthError;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::SignatureScheme;

/// The schemes a [`CertSigner`] offers its key, in order of preference. rumor's certificates
/// (rcgen's default) are ECDSA P-256, which takes the first.
pub const SIGNING_SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// The schemes a [`ClusterVerifier`] accepts: those of TLS 1.3 a certificate key can sign with
/// (no SHA-1, no PKCS#1 v1.5).
pub const VERIFY_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Length of the scheme prefix of a wire [`Signature`], in bytes.
const SCHEME_LEN: usize = 2;

/// A rustls signer for `key` with the first of [`SIGNING_SCHEMES`] the key supports, through the
/// ring provider.
///
/// # Errors
/// The reason, when the key is not one the ring provider can sign with (unreadable, or a type
/// none of [`SIGNING_SCHEMES`] fits).
pub(crate) fn key_signer(key: &PrivateKeyDer<'_>) -> Result<Box<dyn rustls::sign::Signer>, String> {
    let key = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| format!("it cannot sign: {e}"))?;
    key.choose_scheme(&SIGNING_SCHEMES).ok_or_else(|| {
        format!(
            "its type ({:?}) supports none of the signature schemes {SIGNING_SCHEMES:?}",
            key.algorithm()
        )
    })
}

/// Signs `statement` with `signer`: the scheme as a big-endian `u16`, then the signature bytes
/// as the scheme defines them (the wire form of a [`Signature`]).
///
/// # Errors
/// [`AuthError::Signing`] when the key cannot sign.
pub(crate) fn sign_statement(
    signer: &dyn rustls::sign::Signer,
    statement: &[u8],
) -> Result<Vec<u8>, AuthError> {
    let signature = signer
        .sign(statement)
        .map_err(|e| AuthError::Signing(e.to_string()))?;
    let mut bytes = Vec::with_capacity(SCHEME_LEN + signature.len());
    bytes.extend_from_slice(&u16::from(signer.scheme()).to_be_bytes());
    bytes.extend_from_slice(&signature);
    Ok(bytes)
}

/// Checks `signature` (scheme, then signature, as [`sign_statement`] makes it) over
/// `statement` with the public key of the certificate `der` (any certificate webpki can read,
/// a CA's included), with `provider`'s verification algorithms, one per scheme (TLS 1.3 style).
/// The certificate itself is not judged (chain, dates, usages): callers do that.
///
/// # Errors
/// [`AuthError::BadSignature`] for a signature that is too short, names a scheme outside
/// [`VERIFY_SCHEMES`] or one that does not fit the key, or does not verify;
/// [`AuthError::Credential`] when `der` is no certificate webpki can read.
pub(crate) fn verify_statement(
    provider: &CryptoProvider,
    der: &[u8],
    statement: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    let Some((scheme, signature)) = signature.split_first_chunk::<SCHEME_LEN>() else {
        return Err(AuthError::BadSignature);
    };
    let scheme = SignatureScheme::from(u16::from_be_bytes(*scheme));
    if !VERIFY_SCHEMES.contains(&scheme) {
        return Err(AuthError::BadSignature);
    }
    // TLS 1.3: one verification algorithm per scheme, the provider's first.
    let algorithm = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .and_then(|(_, algorithms)| algorithms.first())
        .ok_or(AuthError::BadSignature)?;
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| AuthError::Credential(format!("certificate does not parse: {e}")))?;
    cert.verify_signature(*algorithm, statement, signature)
        .map_err(|_| AuthError::BadSignature)
}
