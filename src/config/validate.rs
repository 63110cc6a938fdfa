//! Range checks of a whole configuration, each error naming its key, run before anything starts.

use std::time::Duration;

use super::error::{check, invalid};
use super::{Config, ConfigError};

impl Config {
    /// Checks ranges. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A file's model and shard were checked when parsed; these catch values set in code.
        self.train
            .model
            .validate()
            .map_err(|e| invalid("train.model", e))?;
        self.train
            .shard
            .validate()
            .map_err(|e| invalid("train.shard", e))?;
        self.partition()?;
        let t = &self.train;
        if !t.device.built_in() {
            let feature = if t.device == crate::train::DeviceChoice::Metal {
                "metal"
            } else {
                "cuda"
            };
            return Err(invalid(
                "train.device",
                format!(
                    "{}: this build has no {feature} support; rebuild with --features {feature}",
                    t.device
                ),
            ));
        }
        check(t.epochs >= 1, "train.epochs", "must be at least 1")?;
        check(t.batch_size >= 1, "train.batch_size", "must be at least 1")?;
        t.publish_every
            .validate()
            .map_err(|e| invalid("train.publish_every", e))?;
        check(
            t.outer_lr.is_finite() && t.outer_lr > 0.0,
            "train.outer_lr",
            "must be a positive number",
        )?;
        check(
            t.outer_momentum.is_finite() && (0.0..1.0).contains(&t.outer_momentum),
            "train.outer_momentum",
            "must be in [0, 1)",
        )?;
        check(t.threads >= 1, "train.threads", "must be at least 1")?;
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            "must be a positive number",
        )?;
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            "must be a non-negative number",
        )?;
        check(
            t.max_staleness.is_finite() && t.max_staleness >= 0.0,
            "train.max_staleness",
            "must be a non-negative number (deltas per other live member)",
        )?;
        let g = &self.gossip;
        check(g.fanout >= 1, "gossip.fanout", "must be at least 1")?;
        check(g.max_ttl >= 1, "gossip.max_ttl", "must be at least 1")?;
        check(
            g.seen_retention >= Duration::from_secs(90),
            "gossip.seen_retention",
            "must be at least 90s",
        )?;
        check(
            g.seen_capacity >= 1,
            "gossip.seen_capacity",
            "must be at least 1",
        )?;
        check(
            g.max_message_bytes >= 64 * 1024,
            "gossip.max_message_bytes",
            "must be at least 65536",
        )?;
        check(
            !g.gossip_interval.is_zero()
                && !g.anti_entropy_interval.is_zero()
                && !g.drain_anti_entropy_interval.is_zero(),
            "gossip.*_interval",
            "intervals must be above zero",
        )?;
        check(
            g.pull_timeout >= Duration::from_millis(10),
            "gossip.pull_timeout",
            "must be at least 10ms",
        )?;
        check(
            g.lazy_push_threshold == u64::MAX || g.lazy_push_threshold < g.max_message_bytes as u64,
            "gossip.lazy_push_threshold",
            "must be below gossip.max_message_bytes (no delta above it can be sent), or \"off\"",
        )?;
        check(
            g.max_delta_norm_factor.is_finite()
                && (g.max_delta_norm_factor == 0.0 || g.max_delta_norm_factor >= 2.0),
            "gossip.max_delta_norm_factor",
            "must be 0 (off) or a number ≥ 2 (a peer scales its own deltas down to half this \
             factor times the median norm: below 2 that would shrink its ordinary deltas)",
        )?;
        check(
            self.peer.min_peers >= 1,
            "peer.min_peers",
            "must be at least 1",
        )?;
        check(
            self.transport.incoming_queue >= 1,
            "transport.incoming_queue",
            "must be at least 1",
        )?;
        let t = &self.transport;
        for (ok, key) in [
            (t.max_handshakes >= 1, "transport.max_handshakes"),
            (
                t.max_handshakes_per_ip >= 1,
                "transport.max_handshakes_per_ip",
            ),
            (
                t.max_connections_per_member >= 1,
                "transport.max_connections_per_member",
            ),
        ] {
            check(ok, key, "must be at least 1")?;
        }
        check(
            t.handshake_timeout >= Duration::from_millis(1),
            "transport.handshake_timeout",
            "must be at least 1ms",
        )?;
        check(
            t.stream_timeout >= t.send_timeout,
            "transport.stream_timeout",
            &format!(
                "must be at least transport.send_timeout ({}), or receivers would stop \
                 messages their senders still wait for",
                humantime::format_duration(t.send_timeout)
            ),
        )?;
        for (value, key) in [
            (
                t.max_buffered_bytes_per_connection,
                "transport.max_buffered_bytes_per_connection",
            ),
            (
                t.max_buffered_bytes_per_member,
                "transport.max_buffered_bytes_per_member",
            ),
        ] {
            check(
                value == 0 || value >= g.max_message_bytes as u64,
                key,
                &format!(
                    "must be 0 (derived from the model) or hold one message of \
                     gossip.max_message_bytes ({} bytes)",
                    g.max_message_bytes
                ),
            )?;
        }
        check(
            self.transport.max_streams_per_connection >= 1,
            "transport.max_streams_per_connection",
            "must be at least 1",
        )?;
        check(
            self.transport.max_inflight_per_peer >= 1,
            "transport.max_inflight_per_peer",
            "must be at least 1",
        )?;
        check(
            !self.transport.send_timeout.is_zero(),
            "transport.send_timeout",
            "must be above zero",
        )?;
        check(
            self.transport.max_ack_delay < Duration::from_millis(1 << 14),
            "transport.max_ack_delay",
            "must be below 16384ms (RFC 9000 §18.2)",
        )?;
        check(self.up.peers >= 1, "up.peers", "must be at least 1")?;
        check(
            self.up.centralized_lr.is_finite() && self.up.centralized_lr > 0.0,
            "up.centralized_lr",
            "must be a positive number",
        )?;
        for (name, f) in &self.train.slowdown {
            check(
                f.is_finite() && *f >= 1.0,
                "train.slowdown",
                &format!("factor of {name} must be a number ≥ 1, got {f}"),
            )?;
        }
        check(
            !self.up.sync_timeout.is_zero(),
            "up.sync_timeout",
            "must be above zero",
        )?;
        if let Some(i) = self.up.sync_index {
            check(
                i < self.up.sync_peers.len(),
                "up.sync_index",
                &format!(
                    "{i} is not an index into up.sync_peers ({} addresses)",
                    self.up.sync_peers.len()
                ),
            )?;
        }
        self.loss_config(0)
            .validate()
            .map_err(|m| invalid("loss", m))?;
        if let Some(params) = self.train.model.param_count() {
            check(
                params * 4 + 4096 <= g.max_message_bytes,
                "gossip.max_message_bytes",
                "is smaller than one delta of this model",
            )?;
        }
        Ok(())
    }
}
