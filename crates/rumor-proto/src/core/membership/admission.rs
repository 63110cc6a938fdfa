//! Which member records are believed: a record is merged only when its id is bound to its
//! credential, the credential is a member's, and the member signed what the record says.
//!
//! Checking costs a SHA-256 of the credential and one signature verification; a record whose
//! signed part and signature equal the held one's costs neither (retransmits, suspicions of a
//! known record), and admitted credentials are cached, so X.509 work is done once per member.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::auth::{KeyId, Verifier, KEY_PREFIX_LEN};
use crate::id::PeerId;
use crate::wire::MemberRecord;

/// Most peer ids one certificate may have in the member table. An honest peer has one, and a
/// new one only when it loses its data dir; a member minting ids to grow others' tables and
/// version vectors is refused past this.
pub const MAX_IDENTITIES_PER_CERTIFICATE: usize = 4;

/// Credentials remembered as admitted; the cache is emptied when it fills (they are checked
/// again on their next new record).
const MAX_CACHED_CREDENTIALS: usize = 8192;

/// Why a member record was refused. Refused records change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RecordRefusal {
    /// The peer id does not start with its credential's key prefix: a record speaking for an
    /// id its certificate does not own.
    Unbound,
    /// The credential is not a member's (another CA, expired, revoked, unreadable).
    Credential,
    /// The signature does not verify: forged, or altered on the way (a changed field).
    Signature,
    /// The certificate already has [`MAX_IDENTITIES_PER_CERTIFICATE`] ids in the table.
    TooManyIdentities,
    /// The certificate was revoked, or its holder quarantined for equivocation.
    Revoked,
}

impl RecordRefusal {
    /// Lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordRefusal::Unbound => "unbound",
            RecordRefusal::Credential => "credential",
            RecordRefusal::Signature => "signature",
            RecordRefusal::TooManyIdentities => "too_many_identities",
            RecordRefusal::Revoked => "revoked",
        }
    }
}

/// The checks and their caches. See the module docs.
#[derive(Default)]
pub struct RecordAdmission {
    admitted: HashSet<KeyId>,
    revoked: HashSet<KeyId>,
    ids_per_key: HashMap<[u8; KEY_PREFIX_LEN], BTreeSet<PeerId>>,
}

impl RecordAdmission {
    /// Checks `record` against `held`, this peer's current record of the same id (if any).
    /// Returns whether a signature had to be verified (false: the held record vouched for it).
    ///
    /// Errors: the [`RecordRefusal`].
    pub fn check(
        &mut self,
        verifier: &dyn Verifier,
        held: Option<&MemberRecord>,
        record: &MemberRecord,
    ) -> Result<bool, RecordRefusal> {
        let key = record.credential.key_id();
        if self.revoked.contains(&key) {
            return Err(RecordRefusal::Revoked);
        }
        if held.is_some_and(|held| same_statement(held, record)) {
            return Ok(false);
        }
        if !key.binds(&record.peer_id) {
            return Err(RecordRefusal::Unbound);
        }
        if !self.admitted.contains(&key) {
            verifier
                .admit(&record.credential)
                .map_err(|_| RecordRefusal::Credential)?;
            if self.admitted.len() >= MAX_CACHED_CREDENTIALS {
                self.admitted.clear();
            }
            self.admitted.insert(key);
        }
        verifier
            .verify(&record.credential, &record.statement(), &record.signature)
            .map_err(|_| RecordRefusal::Signature)?;
        let ids = self.ids_per_key.entry(key.prefix()).or_default();
        if !ids.contains(&record.peer_id) {
            if ids.len() >= MAX_IDENTITIES_PER_CERTIFICATE {
                return Err(RecordRefusal::TooManyIdentities);
            }
            ids.insert(record.peer_id);
        }
        Ok(true)
    }
}

impl RecordAdmission {
    /// Stops believing `key`'s records from now on. Returns false when it was revoked already.
    pub fn revoke(&mut self, key: KeyId) -> bool {
        self.admitted.remove(&key);
        self.revoked.insert(key)
    }

    /// Whether `key` was revoked.
    pub fn is_revoked(&self, key: &KeyId) -> bool {
        self.revoked.contains(key)
    }

    /// Whether the certificate `peer` is bound to was revoked (by key prefix).
    pub fn is_revoked_peer(&self, peer: &PeerId) -> bool {
        self.revoked.iter().any(|key| key.binds(peer))
    }
}

/// Whether two records of one id carry the same signed statement and signature (so checking
/// one checked the other).
fn same_statement(held: &MemberRecord, record: &MemberRecord) -> bool {
    held.signature == record.signature
        && held.credential == record.credential
        && held.statement() == record.statement()
}
