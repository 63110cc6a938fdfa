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
//! | `revoked.json` | the revocation list, signed by the CA ([`revoke`]) | 0644 |
//!
//! Keys are ECDSA P-256 with SHA-256 signatures. Peers do not identify each other by certificate
//! name (the peer id travels in the envelope); every peer certificate carries the shared DNS name
//! [`CLUSTER_SERVER_NAME`], which is what a connecting peer checks.
//!
//! Files are written to a temporary file in the same directory and renamed into place, so a
//! crash never leaves a half-written key. Nothing is overwritten unless asked (`--force`): the
//! peer name `ca` (in any case) is refused because its files would be the CA's, and
//! [`load_identity`] refuses the CA's certificate or key as a peer's identity.
//!
//! The code is split by idea: `ca` makes the CA and names clusters, `issue` signs peer
//! certificates and checks peer names, `names` expands `--names`/`--count` lists, `identity` loads a peer's identity and refuses the CA
//! as one, `revoke` writes and checks the CA-signed revocation list, and `files` reads PEM
//! files and writes them atomically.

mod ca;
mod error;
mod files;
mod identity;
mod issue;
mod names;
mod revoke;
pub mod signature;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use ca::init_legacy_ca;
pub use ca::{cluster_name, init_ca, init_cluster_ca, validate_cluster_name, CreatedCa};
pub(crate) use ca::{display_name, printable};
pub use error::CertError;
pub use identity::{load_identity, PeerIdentity};
pub use issue::{is_reserved_name, issue, issue_with, reissue, validate_name, IssueOptions};
pub use names::{counted_names, expand_names, MAX_NAMES};
pub use revoke::{
    default_revocation_list, load_revocation_list, parse_key_id, revoke, Revocation,
    RevocationList, RevocationProblem, RevokeTarget, Revoked, MAX_REVOCATION_LIST_BYTES,
    REVOCATION_FORMAT, REVOKED_FILE,
};

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

/// Whether `name` is 1 to `max_len` characters, each of `[A-Za-z0-9._-]`: the rule for peer and
/// cluster names.
fn is_well_formed_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How far into the past `not_before` is set, in minutes, to tolerate clock skew between peers.
const BACKDATE_MINUTES: i64 = 5;
