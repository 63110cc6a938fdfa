//! Identities: who a peer is ([`PeerId`]) and which message a frame carries ([`MessageId`]).
//!
//! Both are UUIDs on the wire, but they answer different questions — a peer id names a member and
//! the origin of its deltas for the life of its data dir; a message id names one envelope for the
//! seen-cache's dedup — so each has its own type and the compiler keeps them apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A peer's identity, bound to its certificate: the first bytes are those of the certificate's
/// key id, the last 8 a random seed created once and kept in the peer's data dir (`PeerId::bound`
/// and `PeerId::key_prefix` are defined with the key ids, in `auth`). It names the origin of every delta the
/// peer publishes, so it outlives restarts (a restart raises the incarnation, not the id); a peer
/// that lost its data dir, or got a new certificate, is a new id. Encoded exactly as a UUID
/// (16 bytes in bincode).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(Uuid);

impl PeerId {
    /// Wraps a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// A fresh random (v4) id, bound to no certificate (tests of unbound ids only).
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The all-zero id. No peer has it (no certificate's SHA-256 starts with eight zero bytes
    /// in practice); a status shows it while a peer's id is not known yet.
    pub const fn nil() -> Self {
        Self(Uuid::nil())
    }

    /// A fixed id, for tests and simulations (`PeerId::from_u128(3)`).
    pub const fn from_u128(n: u128) -> Self {
        Self(Uuid::from_u128(n))
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The last 8 hex digits, as logs and tables show a peer (v7 ids made close together share
    /// their leading, time-based digits; the last ones tell peers apart).
    pub fn short(&self) -> String {
        let text = self.0.simple().to_string();
        text[text.len() - 8..].to_string()
    }
}

impl From<Uuid> for PeerId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for PeerId {
    /// The hyphenated UUID (36 characters).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for PeerId {
    type Err = uuid::Error;

    /// Parses any UUID text form (hyphenated, simple, URN, braced).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(Self)
    }
}

/// One envelope's identity, for dedup in the seen-cache. Unique per message (v4 from the core's
/// seeded RNG); a forwarder keeps it, so every copy of a message carries the same id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// Wraps a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// A fixed id, for tests (`MessageId::from_u128(7)`).
    pub const fn from_u128(n: u128) -> Self {
        Self(Uuid::from_u128(n))
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_encodes_as_its_uuid() {
        let uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        let config = bincode::config::standard();
        let wrapped = bincode::serde::encode_to_vec(PeerId::from_uuid(uuid), config);
        let bare = bincode::serde::encode_to_vec(uuid, config);
        assert_eq!(wrapped.ok(), bare.ok());
    }

    #[test]
    fn peer_id_text_round_trips() {
        let id = PeerId::from_u128(42);
        assert_eq!(id.to_string().parse::<PeerId>().ok(), Some(id));
        assert_eq!(id.short(), "0000002a");
    }
}
