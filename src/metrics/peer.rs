//! A peer's own record ([`PeerStatus`]) and a member as it sees it ([`MemberView`]): one typed
//! type each, kept live by the peer driver and published, unchanged, inside a
//! [`StatusSnapshot`](super::StatusSnapshot). Their JSON form is the `/status` format: ids and
//! addresses as text, the lifecycle as its lower-case name, empty text for what is not known yet.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use rumor_proto::wire::{Lifecycle, PeerId};

/// Every lifecycle state, in the order a peer goes through them.
pub const LIFECYCLES: [Lifecycle; 5] = [
    Lifecycle::Starting,
    Lifecycle::Joining,
    Lifecycle::Training,
    Lifecycle::Draining,
    Lifecycle::Stopped,
];

/// One peer's own record: live in the process that runs it (the peer driver refreshes it), and
/// the `peer` part of every snapshot it publishes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Display name.
    pub name: String,
    /// Peer id (nil until started; empty text in JSON).
    #[serde(with = "peer_id_text")]
    pub peer_id: PeerId,
    /// Advertised address (None until bound; empty text in JSON).
    #[serde(with = "addr_text")]
    pub addr: Option<SocketAddr>,
    /// Lifecycle state (`starting`, `joining`, `training`, `draining`, `stopped` in JSON).
    #[serde(with = "lifecycle_text")]
    pub lifecycle: Lifecycle,
    /// True while an operator has paused the peer (trainer and core frozen). Set in snapshots;
    /// the live record leaves it false (ask the peer's handle instead).
    #[serde(default)]
    pub paused: bool,
    /// Deltas published by this peer (its version).
    pub version: u64,
    /// Deltas folded into its base, all origins.
    pub applied: u64,
    /// Live members known, itself included.
    pub peers_known: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Samples processed.
    pub samples: u64,
    /// Last mean training loss.
    pub train_loss: Option<f32>,
    /// Last test accuracy of the base, in [0, 1] (image classifiers).
    pub test_accuracy: Option<f32>,
    /// Last held-out metrics of the base, by name (every workload's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::workload::Metrics>,
    /// UDP bytes sent (quinn counters), in bytes.
    pub bytes_sent: u64,
    /// UDP bytes received, in bytes.
    pub bytes_received: u64,
    /// Envelopes dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Seconds since a message last arrived (None: never). Set in snapshots; the live record
    /// leaves it None.
    pub last_heard_seconds: Option<f64>,
    /// The peer's incarnation.
    #[serde(default)]
    pub incarnation: u64,
    /// The members this peer knows, itself included (live record only: a snapshot carries
    /// them as its `members`, and this list is empty there and absent from JSON).
    #[serde(skip)]
    pub members: Vec<MemberView>,
    /// Suspicions this peer raised (live record only; a snapshot has it among its `core`
    /// counters).
    #[serde(skip)]
    pub suspicions_raised: u64,
    /// Members this peer declared dead (live record only; a snapshot has it among its `core`
    /// counters).
    #[serde(skip)]
    pub members_declared_dead: u64,
}

impl Default for PeerStatus {
    fn default() -> Self {
        Self::new("")
    }
}

impl PeerStatus {
    /// The record of a peer called `name` that has not started yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            peer_id: PeerId::nil(),
            addr: None,
            lifecycle: Lifecycle::Starting,
            paused: false,
            version: 0,
            applied: 0,
            peers_known: 0,
            step: 0,
            samples: 0,
            train_loss: None,
            test_accuracy: None,
            metrics: None,
            bytes_sent: 0,
            bytes_received: 0,
            duplicates_dropped: 0,
            last_heard_seconds: None,
            incarnation: 0,
            members: Vec::new(),
            suspicions_raised: 0,
            members_declared_dead: 0,
        }
    }

    /// The peer id as text, empty until the peer started.
    pub fn peer_id_text(&self) -> String {
        peer_id_text::text(&self.peer_id)
    }

    /// The advertised address as text, empty until the peer bound it.
    pub fn addr_text(&self) -> String {
        addr_text::text(&self.addr)
    }
}

/// A member as a peer sees it: in its live record and in its snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Peer id.
    pub peer_id: PeerId,
    /// Display name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Liveness as this peer believes it (`alive`, `suspect`, `dead`, `left`).
    pub status: String,
    /// The member's lifecycle state, as it last said.
    pub lifecycle: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// The deltas it has published (its version).
    pub published: u64,
}

impl From<&rumor_proto::wire::MemberRecord> for MemberView {
    fn from(m: &rumor_proto::wire::MemberRecord) -> Self {
        Self {
            peer_id: m.peer_id,
            name: m.name.clone(),
            addr: m.addr,
            status: m.status.as_str().to_string(),
            lifecycle: m.lifecycle.as_str().to_string(),
            incarnation: m.incarnation,
            heartbeat: m.heartbeat,
            published: m.published,
        }
    }
}

/// A peer id as text, the nil id (not started) as empty text.
mod peer_id_text {
    use rumor_proto::wire::PeerId;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn text(id: &PeerId) -> String {
        if *id == PeerId::nil() {
            String::new()
        } else {
            id.to_string()
        }
    }

    pub(super) fn serialize<S: Serializer>(id: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(id))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(PeerId::nil());
        }
        text.parse()
            .map_err(|_| D::Error::custom(format!("not a peer id: {text:?}")))
    }
}

/// An address as text, none (not bound) as empty text.
mod addr_text {
    use std::net::SocketAddr;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn text(addr: &Option<SocketAddr>) -> String {
        addr.map(|a| a.to_string()).unwrap_or_default()
    }

    pub(super) fn serialize<S: Serializer>(
        addr: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(addr))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("not an address: {text:?}")))
    }
}

/// A lifecycle state as its lower-case name; empty text (a peer not started) reads as
/// `starting`.
mod lifecycle_text {
    use rumor_proto::wire::Lifecycle;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(l: &Lifecycle, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(l.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lifecycle, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(Lifecycle::Starting);
        }
        super::LIFECYCLES
            .into_iter()
            .find(|l| l.as_str() == text)
            .ok_or_else(|| D::Error::custom(format!("not a lifecycle state: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> PeerStatus {
        PeerStatus {
            name: "peer-0".into(),
            peer_id: "6f1c2d3e-0000-4000-8000-000000000001".parse().unwrap(),
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 7000))),
            lifecycle: Lifecycle::Training,
            paused: true,
            version: 3,
            applied: 9,
            peers_known: 4,
            step: 120,
            samples: 7680,
            train_loss: Some(0.25),
            test_accuracy: Some(0.5),
            bytes_sent: 1000,
            bytes_received: 2000,
            duplicates_dropped: 5,
            last_heard_seconds: Some(0.125),
            incarnation: 2,
            suspicions_raised: 7,
            ..PeerStatus::default()
        }
    }

    #[test]
    fn a_peer_serializes_in_the_status_format() {
        let json = serde_json::to_string(&started()).unwrap();
        assert_eq!(
            json,
            r#"{"name":"peer-0","peer_id":"6f1c2d3e-0000-4000-8000-000000000001","addr":"127.0.0.1:7000","lifecycle":"training","paused":true,"version":3,"applied":9,"peers_known":4,"step":120,"samples":7680,"train_loss":0.25,"test_accuracy":0.5,"bytes_sent":1000,"bytes_received":2000,"duplicates_dropped":5,"last_heard_seconds":0.125,"incarnation":2}"#
        );
        let back: PeerStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            PeerStatus {
                suspicions_raised: 0,
                ..started()
            }
        );
    }

    #[test]
    fn a_peer_not_started_shows_empty_id_and_address() {
        let json = serde_json::to_value(PeerStatus::new("p")).unwrap();
        assert_eq!(json["peer_id"], "");
        assert_eq!(json["addr"], "");
        assert_eq!(json["lifecycle"], "starting");
        let old = r#"{"name":"","peer_id":"","addr":"","lifecycle":"","version":0,"applied":0,"peers_known":0,"step":0,"samples":0,"train_loss":null,"test_accuracy":null,"bytes_sent":0,"bytes_received":0,"duplicates_dropped":0,"last_heard_seconds":null}"#;
        let back: PeerStatus = serde_json::from_str(old).unwrap();
        assert_eq!(back, PeerStatus::default());
        assert!(serde_json::from_str::<PeerStatus>(
            &old.replace(r#""lifecycle":"""#, r#""lifecycle":"flying""#)
        )
        .is_err());
    }
}
