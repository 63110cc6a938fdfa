//! Why creating or loading a certificate failed.

use std::path::PathBuf;

use super::{CA_CERT_FILE, CA_KEY_FILE};

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
    #[error("I/O error on {}", path.display())]
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
    /// A list of peer names (`--names`, `--count`) that does not stand for a set of names.
    #[error("bad list of peer names {spec:?}: {reason}")]
    BadNames {
        /// The list as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
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
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// The cluster name is empty, longer than 64 characters or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("bad cluster name {name:?}: expected 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadClusterName {
        /// The rejected name.
        name: String,
    },
    /// A revocation list was refused: what is wrong with it is the problem.
    #[error("revocation list {}: {problem}", path.display())]
    RevocationList {
        /// The list file.
        path: PathBuf,
        /// What is wrong.
        problem: super::RevocationProblem,
    },
    /// The certificate to revoke has no file in the certificate directory.
    #[error(
        "no certificate to revoke for {name:?}: {} does not exist (to revoke a certificate \
         whose file is gone, give its key id with --key-id)",
        path.display()
    )]
    NotIssued {
        /// The peer name asked for.
        name: String,
        /// The file looked for.
        path: PathBuf,
    },
    /// A key id that is not 64 hex digits.
    #[error("bad key id {given:?}: expected the 64 hex digits of the certificate's SHA-256")]
    BadKeyId {
        /// What was given (made printable).
        given: String,
    },
    /// The CA key cannot sign (a key type rustls' ring provider does not sign with).
    #[error("the CA key {} cannot sign: {reason}", path.display())]
    CaKeyUnusable {
        /// The CA key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<crate::fsutil::PathIoError> for CertError {
    fn from(e: crate::fsutil::PathIoError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}
