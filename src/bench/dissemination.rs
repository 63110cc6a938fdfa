//! `rumor bench dissemination`: how many copies of each large delta a peer downloads, and how
//! long it takes for every peer to hold every delta, with eager push against lazy push
//! (`gossip.lazy_push_threshold`; docs/ALGORITHM.md, "Dissemination"), in one run.
//!
//! N in-process peers over real QUIC on loopback train an MLP of 784-330-10 (262,360
//! parameters: a delta of about 1 MB in `f32`) on the synthetic set, one phase of
//! `publish_every` steps each, so each publishes exactly one delta through the real trainer and
//! publish path, then drains. No part of the shell is bypassed: the synthetic delta is a real
//! training delta. The same cluster runs twice, with the threshold off (every delta pushed) and
//! at its configured value.
//!
//! The time to full delivery runs from the first peer's publish to the moment every peer has
//! applied every delta, both read from the peers' live status, which each peer refreshes every
//! 50 ms: the figure is good to about that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::certs;
use crate::cluster::{LocalCluster, PeerEnd};
use crate::config::Config;
use crate::data::{self, DatasetSpec};
use crate::node::{PeerOptions, PeerOutcome};
use crate::run::{peer_options, RunError};

/// The model whose deltas are measured: 262,360 parameters, 1,049,440 bytes in `f32`.
const MODEL: &str = "784-330-10";

/// What `rumor bench dissemination` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DisseminationBench {
    /// Peers in the cluster.
    pub peers: usize,
    /// Parameters of each delta.
    pub params: usize,
    /// Bytes of one delta's values in `f32` (what lazy push should cost per peer and delta).
    pub delta_bytes: u64,
    /// Eager push (`lazy_push_threshold = "off"`), then lazy push.
    pub runs: Vec<DisseminationRun>,
}

/// One run of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct DisseminationRun {
    /// `eager` or `lazy`.
    pub mode: &'static str,
    /// The threshold it ran with (bytes; `u64::MAX`: off).
    pub lazy_push_threshold: u64,
    /// Delta value bytes received per delta applied, mean over peers.
    pub payload_bytes_per_delta: f64,
    /// The same, for the peer that received the most.
    pub max_payload_bytes_per_delta: f64,
    /// UDP bytes received per delta applied, mean over peers (all traffic: the join's
    /// snapshot, membership, digests, deltas).
    pub udp_bytes_per_delta: f64,
    /// Copies received past the first, per delta applied, over all peers.
    pub duplicates_per_delivery: f64,
    /// From the first publish to every peer holding every delta (s; ±50 ms).
    pub full_delivery_seconds: f64,
    /// Summed over peers: deltas announced, pulls, pulls that ran out.
    pub announces: u64,
    /// See `announces`.
    pub pulls: u64,
    /// See `announces`.
    pub pull_timeouts: u64,
    /// Peers that drained consistent.
    pub drained: usize,
}

impl std::fmt::Display for DisseminationBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} peers, one delta each of {} parameters ({} bytes in f32):",
            self.peers, self.params, self.delta_bytes
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "  {:5} push: {:.3} × the delta's bytes received per delta per peer (most {:.3}; \
                 UDP {:.3}), {:.3} duplicates per delivery, every delta everywhere {:.2} s after \
                 the first publish; {} announces, {} pulls, {} pull timeouts; {}/{} drained",
                r.mode,
                r.payload_bytes_per_delta / self.delta_bytes as f64,
                r.max_payload_bytes_per_delta / self.delta_bytes as f64,
                r.udp_bytes_per_delta / self.delta_bytes as f64,
                r.duplicates_per_delivery,
                r.full_delivery_seconds,
                r.announces,
                r.pulls,
                r.pull_timeouts,
                r.drained,
                self.peers
            )?;
        }
        Ok(())
    }
}

fn timed_out(what: &str) -> RunError {
    RunError::Io {
        what: format!("benchmark: {what}"),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    }
}

/// Runs `peers` peers (at least 2) with `config`'s gossip and transport settings twice: eager
/// push, then lazy push at `config`'s threshold (64 KiB when it is off).
///
/// # Errors
/// What certificates, data, peers or sockets fail with; a run in which not every peer applied
/// every delta within 120 s; a peer that failed.
pub async fn dissemination(config: &Config, peers: usize) -> Result<DisseminationBench, RunError> {
    let peers = peers.max(2);
    let lazy = match config.gossip.lazy_push_threshold {
        u64::MAX => Config::default().gossip.lazy_push_threshold,
        t => t,
    };
    let mut runs = Vec::new();
    let mut params = 0;
    for (mode, threshold) in [("eager", u64::MAX), ("lazy", lazy)] {
        let (run, p) = one_run(config, peers, mode, threshold).await?;
        params = p;
        runs.push(run);
    }
    Ok(DisseminationBench {
        peers,
        params,
        delta_bytes: params as u64 * 4,
        runs,
    })
}

/// One cluster of `peers` with `lazy_push_threshold = threshold`: start, wait for every peer to
/// hold every delta, wait for every peer to end. Returns the figures and the parameter count.
async fn one_run(
    config: &Config,
    peers: usize,
    mode: &'static str,
    threshold: u64,
) -> Result<(DisseminationRun, usize), RunError> {
    let (temp, certs_dir) = super::temp_ca(&format!("rumor-bench-{mode}-"))?;
    let data = crate::run::RunData::from(data::load(&DatasetSpec::Synthetic, 1)?);
    let mut base = config.clone();
    base.train.model = crate::workload::ModelChoice::Mlp(MODEL.parse()?);
    base.train.dataset = DatasetSpec::Synthetic;
    base.train.eval_every = 0;
    base.train.delta_compression = crate::model::Compression::None;
    base.gossip.lazy_push_threshold = threshold;
    base.peer.min_peers = peers;
    base.peer.join_timeout = Duration::from_secs(60);
    base.peer.drain_timeout = Duration::from_secs(60);
    let options = (0..peers)
        .map(|i| -> Result<PeerOptions, RunError> {
            let name = format!("{mode}-{i}");
            certs::issue(&certs_dir, &name, 2)?;
            let identity = Arc::new(certs::load_identity(&certs_dir, &name)?);
            let mut c = base.clone();
            c.peer.name = name.clone();
            c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            c.peer.data_dir = temp.path().join(&name);
            c.train.shard = data::ShardSpec {
                index: i,
                count: peers,
            };
            let mut o = peer_options(&c, identity, &data, peers)?;
            // One phase: one delta, published at its end, then the drain.
            o.plan.max_steps = Some(c.train.publish_every.steps().unwrap_or(1));
            Ok(o)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let params = options.first().map_or(0, |o| o.layout.total);
    let mut cluster = LocalCluster::start(options).await;
    let started = Instant::now();
    let mut first_publish = None;
    let full = loop {
        let rows = cluster.statuses();
        if first_publish.is_none() && rows.iter().any(|s| s.version > 0) {
            first_publish = Some(Instant::now());
        }
        if rows.iter().all(|s| s.applied >= peers as u64) {
            break Instant::now();
        }
        if started.elapsed() > Duration::from_secs(120) || cluster.all_ended() {
            cluster.shutdown(Duration::from_secs(10)).await;
            return Err(timed_out(&format!(
                "{mode} push: not every peer applied every delta within 120 s"
            )));
        }
        let _ = cluster.poll(false).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let full_delivery = full.saturating_duration_since(first_publish.unwrap_or(full));
    cluster.wait_all().await;
    let mut outcomes: Vec<PeerOutcome> = Vec::new();
    for (name, end) in cluster.into_ends() {
        match end {
            PeerEnd::Done(result) => {
                outcomes.push((*result).map_err(|e| RunError::peer(&name, e))?);
            }
            PeerEnd::Running | PeerEnd::Killed => {
                return Err(timed_out(&format!("{name} did not end")));
            }
        }
    }
    Ok((figures(mode, threshold, &outcomes, full_delivery), params))
}

/// The figures of one run from its peers' outcomes.
fn figures(
    mode: &'static str,
    threshold: u64,
    outcomes: &[PeerOutcome],
    full_delivery: Duration,
) -> DisseminationRun {
    let per_delta =
        |bytes: u64, o: &PeerOutcome| bytes as f64 / o.stats.deltas_applied.max(1) as f64;
    let payload: Vec<f64> = outcomes
        .iter()
        .map(|o| per_delta(o.stats.delta_payload_bytes_received, o))
        .collect();
    let n = outcomes.len().max(1) as f64;
    let sum = |f: fn(&PeerOutcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    DisseminationRun {
        mode,
        lazy_push_threshold: threshold,
        payload_bytes_per_delta: payload.iter().sum::<f64>() / n,
        max_payload_bytes_per_delta: payload.iter().copied().fold(0.0, f64::max),
        udp_bytes_per_delta: outcomes
            .iter()
            .map(|o| per_delta(o.bytes_received, o))
            .sum::<f64>()
            / n,
        duplicates_per_delivery: sum(|o| o.stats.duplicate_deltas_received) as f64
            / sum(|o| o.stats.deltas_applied).max(1) as f64,
        full_delivery_seconds: full_delivery.as_secs_f64(),
        announces: sum(|o| o.stats.announces_sent),
        pulls: sum(|o| o.stats.pulls_sent),
        pull_timeouts: sum(|o| o.stats.pull_timeouts),
        drained: outcomes.iter().filter(|o| o.drained).count(),
    }
}
