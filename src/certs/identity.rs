//! A peer's identity for mutual TLS (the cluster CA, its chain and key), loaded from the
//! certificate directory; the CA itself is refused as a peer's identity.

use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::files::{read_ca_cert, read_certs, read_key};
use super::issue::validate_name;
use super::CertError;

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
    let ca = read_ca_cert(dir)?;
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
