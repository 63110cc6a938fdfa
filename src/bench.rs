//! `rumor bench membership`: N real peers over QUIC on loopback, no training, measuring how fast
//! a join is seen by all, how fast a crash is detected by all, false positives, and the idle
//! traffic of the failure detector (quinn's UDP byte counters). The peers run under the local
//! cluster supervisor ([`crate::cluster`]).
//!
//! `rumor bench signing` ([`signing`]): what signing and checking deltas and member records
//! costs one peer's CPU.
//!
//! `rumor bench training` ([`training`]): steps per second of a gossiping peer against the bare
//! training loop.
//!
//! `rumor bench dissemination` ([`dissemination`]): bytes of each large delta a peer downloads,
//! and the time until every peer holds every delta, with eager push against lazy push.

pub mod dissemination;
pub mod signing;
pub mod training;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::certs;
use crate::cluster::LocalCluster;
use crate::config::Config;
use crate::data::{self, DatasetSpec};
use crate::node::{PeerOptions, PeerStatus};
use crate::run::{peer_options, RunError};

/// What `rumor bench membership` prints.
#[derive(Clone, Debug, Serialize)]
pub struct MembershipBench {
    /// Peers in the cluster (the joiner included).
    pub peers: usize,
    /// From starting the last peer to every peer listing all of them as live (s).
    pub join_seen_by_all_seconds: f64,
    /// From killing one peer to every survivor listing it as dead (s).
    pub crash_detected_by_all_seconds: f64,
    /// Live peers that some peer declared dead during the run.
    pub false_positives: usize,
    /// UDP bytes sent per peer per second over the idle window, mean over peers (B/s).
    pub idle_bytes_per_second_per_peer: f64,
    /// Length of the idle window (s).
    pub idle_window_seconds: f64,
    /// Probe interval in force (ms).
    pub probe_interval_ms: u64,
}

/// A temp dir (removed when dropped) holding a new CA in `certs/`, for a benchmark's peers.
///
/// # Errors
/// [`RunError::Io`] if the dir cannot be made; what [`certs::init_ca`] fails with.
fn temp_ca(prefix: &str) -> Result<(tempfile::TempDir, std::path::PathBuf), RunError> {
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| RunError::Io {
            what: "creating a temp dir".into(),
            source,
        })?;
    let certs_dir = temp.path().join("certs");
    certs::init_ca(&certs_dir, false)?;
    Ok((temp, certs_dir))
}

async fn wait_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<Duration, RunError> {
    let started = Instant::now();
    loop {
        if check() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(RunError::Io {
                what: format!("benchmark: {what} did not happen within {limit:?}"),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the membership benchmark with `peers` peers (at least 3) and `config`'s membership
/// settings; `idle_window` is how long idle traffic is measured.
///
/// Errors: certificates or sockets that cannot be set up, or a phase that does not complete
/// within 120 s.
pub async fn membership(
    config: &Config,
    peers: usize,
    idle_window: Duration,
) -> Result<MembershipBench, RunError> {
    let peers = peers.max(3);
    let (temp, certs_dir) = temp_ca("rumor-bench-")?;
    let data = crate::run::RunData::from(data::load(&DatasetSpec::Synthetic, 1)?);
    let options = |i: usize, seed: Option<SocketAddr>| -> Result<PeerOptions, RunError> {
        let name = format!("bench-{i}");
        certs::issue(&certs_dir, &name, 2)?;
        let identity = Arc::new(certs::load_identity(&certs_dir, &name)?);
        let mut c = config.clone();
        c.peer.name = name.clone();
        c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = temp.path().join(&name);
        c.peer.join_timeout = Duration::from_secs(120);
        let mut opts = peer_options(&c, identity, &data, 1)?;
        opts.core.lifecycle.min_peers = None;
        Ok(opts)
    };
    // The first peer seeds the others.
    let first = (0..peers - 1)
        .map(|i| options(i, None))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cluster = LocalCluster::start(first).await;
    let seed = cluster.seed();
    let n0 = peers - 1;
    wait_until(
        Duration::from_secs(120),
        "the first peers to form a cluster",
        || cluster.statuses().iter().all(|s| s.peers_known == n0),
    )
    .await?;

    // Join: the last peer through the seed.
    cluster.add(options(peers - 1, seed)?);
    let join = wait_until(
        Duration::from_secs(120),
        "the join to be seen by all",
        || cluster.statuses().iter().all(|s| s.peers_known == peers),
    )
    .await?;

    let mut false_positive_pairs = std::collections::HashSet::new();
    let mut note_dead = |rows: &[PeerStatus], victim: Option<rumor_proto::PeerId>| {
        for r in rows {
            for m in &r.members {
                if m.status == "dead" && Some(m.peer_id) != victim {
                    false_positive_pairs.insert(m.peer_id);
                }
            }
        }
    };

    // Idle traffic is the steady state's: the window opens once piggybacked changes have died
    // out and every member has probed every other at least once, so the connections a new
    // member needs are open (each QUIC handshake is a few KB, a one-time cost that would
    // otherwise fall into the window or not depending on the probe order). SWIM probes
    // round-robin over a shuffled list that takes in a new member when it is refilled, so two
    // rounds of `peers - 1` probe periods cover every pair.
    let probe_rounds = config.membership.probe_interval * 2 * (peers as u32 - 1);
    tokio::time::sleep(probe_rounds.max(Duration::from_secs(3))).await;
    let before: Vec<u64> = cluster.statuses().iter().map(|s| s.bytes_sent).collect();
    let window_start = Instant::now();
    while window_start.elapsed() < idle_window {
        tokio::time::sleep(Duration::from_millis(100)).await;
        note_dead(&cluster.statuses(), None);
    }
    let window = window_start.elapsed().as_secs_f64();
    let after: Vec<u64> = cluster.statuses().iter().map(|s| s.bytes_sent).collect();
    let idle = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .sum::<f64>()
        / peers as f64
        / window;

    // Crash: kill a non-seed peer abruptly.
    let victim_index = peers / 2;
    let victim = cluster.peers()[victim_index].status().peer_id;
    cluster.kill(victim_index);
    let crashed_at = Instant::now();
    let survivors: Vec<usize> = (0..peers).filter(|&i| i != victim_index).collect();
    let mut detected = None;
    while crashed_at.elapsed() < Duration::from_secs(120) {
        let rows = cluster.statuses();
        note_dead(&rows, Some(victim));
        let all = survivors.iter().all(|&i| {
            rows[i]
                .members
                .iter()
                .any(|m| m.peer_id == victim && m.status == "dead")
        });
        if all {
            detected = Some(crashed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let detected = detected.ok_or_else(|| RunError::Io {
        what: "benchmark: the crash was not detected by all within 120 s".into(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    })?;
    cluster.shutdown(Duration::from_secs(10)).await;
    Ok(MembershipBench {
        peers,
        join_seen_by_all_seconds: join.as_secs_f64(),
        crash_detected_by_all_seconds: detected.as_secs_f64(),
        false_positives: false_positive_pairs.len(),
        idle_bytes_per_second_per_peer: idle,
        idle_window_seconds: window,
        probe_interval_ms: config.membership.probe_interval.as_millis() as u64,
    })
}
