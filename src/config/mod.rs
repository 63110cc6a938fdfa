//! Configuration: a TOML file (`config/default.toml` documents every key) whose values command
//! line flags override. Unknown keys and out-of-range values are errors that name the key.
//!
//! The schema's sections are in `sections`, range checks in `validate`, errors in `error`.

mod error;
mod sections;
#[cfg(test)]
mod tests;
mod text;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Partition;
use crate::net::TransportConfig;
use error::{check, invalid};
use rumor_proto::core::swim::SwimConfig;
use rumor_proto::core::CoreConfig;

pub use error::ConfigError;
pub use sections::{
    LinkLossSection, LossSection, LrScaling, Mode, PeerSection, TrainSection, UpSection,
};

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// One peer's identity, addresses and lifecycle limits.
    pub peer: PeerSection,
    /// Data, model and optimisation.
    pub train: TrainSection,
    /// Dissemination, anti-entropy, admission checks and the join backoff: the protocol's own
    /// settings type, read as it is (`param_count`, `swim` and `lifecycle` are filled in by
    /// [`Config::core_config`]).
    pub gossip: CoreConfig,
    /// Failure detection (SWIM with Lifeguard): the protocol's own settings type.
    pub membership: SwimConfig,
    /// QUIC transport and the node's sender: the transport's own settings type, read as it is
    /// (`max_message_bytes` and derived byte budgets are filled in by
    /// [`Config::transport_config`]).
    pub transport: TransportConfig,
    /// `rumor up`.
    pub up: UpSection,
    /// Loss injection under QUIC (experiments).
    pub loss: LossSection,
}

impl Config {
    /// Reads `path` (TOML). Errors: unreadable file, unknown key, wrong type, invalid value.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// toml's error (unknown key, wrong type, bad value), whose message names the key and
    /// position.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// IID, or Dirichlet with `train.non_iid_alpha`.
    pub fn partition(&self) -> Result<Partition, ConfigError> {
        match self.train.non_iid_alpha {
            None => Ok(Partition::Iid),
            Some(alpha) if alpha.is_finite() && alpha > 0.0 => Ok(Partition::Dirichlet { alpha }),
            Some(alpha) => Err(invalid(
                "train.non_iid_alpha",
                format!("must be a positive number, got {alpha}"),
            )),
        }
    }

    /// The protocol settings of a peer that trains a model of `param_count` parameters:
    /// `[gossip]` with that count, `[membership]` and the lifecycle policy of `[peer]`.
    pub fn core_config(&self, param_count: usize) -> CoreConfig {
        CoreConfig {
            swim: self.membership.clone(),
            param_count,
            lifecycle: self.peer.lifecycle(),
            ..self.gossip.clone()
        }
    }

    /// The loss injection of the peer with shard index `index` (0-based; mixed into the seed so
    /// peers drop different datagrams).
    pub fn loss_config(&self, index: usize) -> crate::net::lossy::LossConfig {
        use crate::net::lossy::{LinkLoss, LossConfig};
        let l = &self.loss;
        LossConfig {
            default: LinkLoss {
                loss_in: l.loss_in,
                loss_out: l.loss_out,
            },
            links: l
                .links
                .iter()
                .map(|k| {
                    (
                        k.addr,
                        LinkLoss {
                            loss_in: k.loss_in,
                            loss_out: k.loss_out,
                        },
                    )
                })
                .collect(),
            seed: l.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// `rumor peer --mode sync`: this peer's index in `up.sync_peers` (`up.sync_index`, else the
    /// position of `peer.advertise`, else of `peer.listen`, in the list).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `up.sync_peers` has fewer than two addresses or this
    /// peer's address is not in it and no index is set.
    pub fn sync_index(&self) -> Result<usize, ConfigError> {
        let peers = &self.up.sync_peers;
        check(
            peers.len() >= 2,
            "up.sync_peers",
            "sync mode needs every sync peer's address (at least two)",
        )?;
        if let Some(i) = self.up.sync_index {
            check(
                i < peers.len(),
                "up.sync_index",
                "is not an index into up.sync_peers",
            )?;
            return Ok(i);
        }
        let own = self.peer.advertise.unwrap_or(self.peer.listen);
        peers.iter().position(|a| *a == own).ok_or_else(|| {
            invalid(
                "up.sync_index",
                format!("unset, and this peer's address {own} is not in up.sync_peers"),
            )
        })
    }

    /// The slowdown factor of the peer called `name` (1: none).
    pub fn slowdown_of(&self, name: &str) -> f64 {
        self.train.slowdown.get(name).copied().unwrap_or(1.0)
    }

    /// The transport settings of this configuration as a transport applies them:
    /// `[transport]` with `max_message_bytes` from `gossip.max_message_bytes` and, where
    /// `transport.max_buffered_bytes_per_connection` is 0, the budget derived from the model
    /// (a member's 0 then stays 0: twice the connection's budget, see
    /// [`TransportConfig::buffered_bytes_budgets`]), for a model of `param_count` parameters.
    pub fn transport_config(&self, param_count: usize) -> TransportConfig {
        let mut t = self.transport.clone();
        t.max_message_bytes = self.gossip.max_message_bytes;
        if t.max_buffered_bytes_per_connection == 0 {
            t.max_buffered_bytes_per_connection = self.derived_connection_budget(param_count);
        }
        t
    }

    /// The byte budget of unfinished received messages of one connection derived from the
    /// model, in bytes. A sender has at most `transport.max_inflight_per_peer` deltas or
    /// snapshots in flight to one destination, each about 4 bytes per parameter, plus control
    /// messages; a connection's budget holds that twice over, and at least one message of
    /// `gossip.max_message_bytes`.
    fn derived_connection_budget(&self, param_count: usize) -> u64 {
        let message = self.gossip.max_message_bytes as u64;
        let params = param_count as u64;
        let frame = params * 4 + 4096;
        ((self.transport.max_inflight_per_peer as u64 + 2) * frame * 2).max(message)
    }
}
