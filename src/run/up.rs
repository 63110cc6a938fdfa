//! `rumor up`: a whole cluster on this machine — gossip peers under the local cluster
//! supervisor (with the dashboard on a terminal), the barrier baseline, or the centralized
//! baseline — and its summary.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::certs;
use crate::cluster::{AddPeerError, LocalCluster, PeerEnd, PeerFactory};
use crate::config::{Config, Mode};
use crate::data;
use crate::metrics::http::MetricsServer;
use crate::model;
use crate::node::{PeerOptions, PeerOutcome};
use crate::ui::dashboard;
use crate::ui::peer_table::plain_line;

use super::centralized::{centralized, CENTRALIZED_PEER};
use super::options::{check_batch_fits, load_data, local_peer_options, RunData};
use super::peer::{wait_for_end_of_training_signal, wait_for_signal};
use super::summary::{
    peer_summary, print_summary, summarize, sync_peer_summary, PeerSummary, RunSummary,
};
use super::sync_peer::{self, BoundSyncPeer};
use super::{io_err, write_json, RunError};

/// Options of `rumor up` that are not in the config file.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Existing certificates directory with a CA (peer-0.. certificates issued when missing).
    pub certs: Option<PathBuf>,
    /// Parent of the peers' data dirs; default a temp dir. The centralized run writes its
    /// `metrics.jsonl` under `centralized/` here, and none without it.
    pub out: Option<PathBuf>,
    /// Plain lines instead of the redrawn table.
    pub no_tui: bool,
    /// Where to write the summary JSON.
    pub summary_json: Option<PathBuf>,
    /// Serve each peer's `/metrics` and `/status` on 127.0.0.1 (any free port) and print where.
    pub metrics: bool,
    /// Print nothing (no live table, no plain lines, no summary): for the lab.
    pub quiet: bool,
}

/// `rumor up`: runs the gossip cluster or the centralized baseline and returns the summary.
pub async fn up(config: Config, options: UpOptions) -> Result<RunSummary, RunError> {
    model::set_compute_threads(config.train.threads);
    if let Some(out) = &options.out {
        crate::node::check_dir_path("output dir", out)?;
    }
    let data = load_data(&config)?;
    match config.up.mode {
        Mode::Centralized => check_batch_fits(&config, &data, [data::ShardSpec::WHOLE])?,
        Mode::Gossip | Mode::Sync => {
            let n = config.up.peers;
            check_batch_fits(
                &config,
                &data,
                (0..n).map(|index| data::ShardSpec { index, count: n }),
            )?
        }
    }
    let summary = match config.up.mode {
        Mode::Gossip => up_gossip(&config, &options, data).await?,
        Mode::Sync => up_sync(&config, &options, data).await?,
        Mode::Centralized => {
            let config = config.clone();
            let no_tui = options.no_tui;
            // Its metrics go where a peer's would: a folder named after it under `out`.
            let data_dir = options.out.as_ref().map(|o| o.join(CENTRALIZED_PEER));
            tokio::task::spawn_blocking(move || {
                centralized(&config, &data, no_tui, data_dir.as_deref())
            })
            .await
            .map_err(|e| RunError::Io {
                what: "centralized training task".into(),
                source: std::io::Error::other(e),
            })??
        }
    };
    if !options.quiet {
        print_summary(&summary);
    }
    if let Some(path) = &options.summary_json {
        write_json(path, &summary)?;
    }
    Ok(summary)
}

/// The local peers of a run: the options of peers `peer-0` .. `peer-{n-1}` (n = `up.peers`,
/// see [`local_peer_options`]), and where their certificates (a throwaway CA unless
/// `--certs`) and data dirs are. The temp dir is removed when this drops.
struct LocalPeers {
    _temp: tempfile::TempDir,
    certs_dir: PathBuf,
    out: PathBuf,
    options: Vec<PeerOptions>,
}

impl LocalPeers {
    /// Makes the temp dir and the certificates, and builds every peer's options.
    ///
    /// # Errors
    /// [`RunError::Io`] if the temp dir cannot be made; what [`certs::init_ca`] and
    /// [`local_peer_options`] fail with.
    fn new(config: &Config, options: &UpOptions, data: &RunData) -> Result<Self, RunError> {
        let temp = tempfile::Builder::new()
            .prefix("rumor-up-")
            .tempdir()
            .map_err(io_err("creating a temp dir"))?;
        let certs_dir = match &options.certs {
            Some(dir) => dir.clone(),
            None => {
                let dir = temp.path().join("certs");
                certs::init_ca(&dir, false)?;
                dir
            }
        };
        let out = options
            .out
            .clone()
            .unwrap_or_else(|| temp.path().join("peers"));
        let options = (0..config.up.peers)
            .map(|i| local_peer_options(config, &certs_dir, &out, data, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            _temp: temp,
            certs_dir,
            out,
            options,
        })
    }
}

/// The summary of a local run of `up.peers` peers in `mode` that ended with `bases` (their
/// models) and `peers` (their summaries), started at `started`.
///
/// # Errors
/// [`RunError::Model`] if the models differ in length.
fn local_summary(
    mode: &str,
    config: &Config,
    data: &RunData,
    bases: &[&[f32]],
    peers: Vec<PeerSummary>,
    started: Instant,
) -> Result<RunSummary, RunError> {
    let consensus_distance = model::consensus_distance(bases)?;
    let t = &config.train;
    Ok(summarize(
        mode,
        data.name(),
        peers,
        consensus_distance,
        started.elapsed(),
        t.lr * t.lr_scaling.factor(config.up.peers),
        t.epochs,
    ))
}

/// `rumor up` in gossip mode: `up.peers` local peers under a [`LocalCluster`], shown on the
/// dashboard on a terminal, else as plain progress lines every 5 s (nothing when quiet).
async fn up_gossip(
    config: &Config,
    options: &UpOptions,
    data: RunData,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let n = config.up.peers;
    let LocalPeers {
        _temp,
        certs_dir,
        out,
        options: mut all_options,
    } = LocalPeers::new(config, options, &data)?;
    for o in &mut all_options {
        o.core.lifecycle.min_peers = Some(n);
    }
    let mut cluster = LocalCluster::start(all_options).await;
    info!(peers = n, "all peers started");
    let mut servers = Vec::new();
    if options.metrics {
        for peer in cluster.peers() {
            let Some(h) = peer.handle() else { continue };
            let server =
                MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), h.snapshot.clone())
                    .await?;
            println!(
                "{}: metrics on http://{}/metrics, status on http://{}/status",
                peer.name(),
                server.local_addr(),
                server.local_addr()
            );
            servers.push(server);
        }
    }
    let tty = std::io::stdout().is_terminal() && !options.no_tui && !options.quiet;
    let outcomes = if tty {
        // Peers an operator adds take the shard of peer (index mod n): the shards stay the same.
        let config = config.clone();
        let data = data.clone();
        let certs_dir = certs_dir.clone();
        let out = out.clone();
        let factory: PeerFactory = Box::new(move |index, seeds| {
            let mut o = local_peer_options(&config, &certs_dir, &out, &data, index)
                .map_err(|e| AddPeerError::Options(Box::new(e)))?;
            o.seeds = seeds;
            o.core.lifecycle.min_peers = Some(1);
            Ok(o)
        });
        let cluster = dashboard::run(cluster.with_factory(factory), started)
            .await
            .map_err(io_err("running the dashboard"))?;
        collect_outcomes(cluster, Driver::Operator)?
    } else {
        watch_plain(&mut cluster, started, options.quiet).await;
        collect_outcomes(cluster, Driver::Plain)?
    };
    drop(servers);
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let peers = outcomes.iter().map(peer_summary).collect();
    local_summary("gossip", config, &data, &bases, peers, started)
}

/// Runs `cluster` to its end without a screen: a plain line per peer every 5 s unless `quiet`;
/// Ctrl-C or SIGTERM asks every peer to leave, SIGUSR1 to end training and drain.
async fn watch_plain(cluster: &mut LocalCluster, started: Instant, quiet: bool) {
    let stops = cluster.stop_senders();
    let ends = cluster.end_training_flags();
    let signals = tokio::spawn(async move {
        tokio::select! {
            () = wait_for_signal() => {}
            () = wait_for_end_of_training_signal() => {
                for flag in ends {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                wait_for_signal().await;
            }
        }
        for s in stops {
            let _ = s.send(true);
        }
    });
    let mut last_plain = Instant::now();
    while !cluster.all_ended() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.poll(false).await;
        if !quiet && last_plain.elapsed() >= Duration::from_secs(5) {
            last_plain = Instant::now();
            for peer in cluster.peers() {
                println!("{}", plain_line(&peer.last, started.elapsed()));
            }
        }
    }
    signals.abort();
}

/// Who drove a run, which decides what a failed or killed peer means for its outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// No operator: every peer must succeed; the first failure is the run's error (printed once
    /// by the caller), later ones are only logged.
    Plain,
    /// An operator on the dashboard: killed peers that were not restarted are left out of the
    /// summary (and said so); a failure is an error only when no peer succeeded.
    Operator,
}

/// The outcomes of the cluster's peers, as `driver` wants them judged.
fn collect_outcomes(cluster: LocalCluster, driver: Driver) -> Result<Vec<PeerOutcome>, RunError> {
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for (name, end) in cluster.into_ends() {
        match end {
            PeerEnd::Done(end) => match *end {
                Ok(o) => outcomes.push(o),
                Err(source) => {
                    if driver == Driver::Operator || first_error.is_some() {
                        warn!("{name} failed: {}", crate::report::Chain(&source));
                    }
                    first_error.get_or_insert(RunError::Peer {
                        name,
                        source: Box::new(source),
                    });
                }
            },
            PeerEnd::Killed | PeerEnd::Running => {
                if driver == Driver::Operator {
                    println!("{name}: killed, left out of the summary");
                }
            }
        }
    }
    match (driver, first_error) {
        (_, None) => Ok(outcomes),
        (Driver::Plain, Some(e)) => Err(e),
        (Driver::Operator, Some(e)) if outcomes.is_empty() => Err(e),
        (Driver::Operator, Some(e)) => {
            warn!("{}", crate::report::Chain(&e));
            Ok(outcomes)
        }
    }
}

/// `rumor up --mode sync`: the barrier baseline ([`crate::sync`]) with the same peers, shards,
/// learning rate, certificates and loss injection as gossip.
async fn up_sync(
    config: &Config,
    options: &UpOptions,
    data: RunData,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let local = LocalPeers::new(config, options, &data)?;
    // Bind every transport first so each peer knows every address.
    let mut bound = Vec::with_capacity(local.options.len());
    for o in local.options {
        bound.push(BoundSyncPeer::bind(o, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    let addrs: Vec<SocketAddr> = bound.iter().map(BoundSyncPeer::local_addr).collect();
    let tasks: Vec<_> = bound
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let peer = b.into_peer(i, addrs.clone(), config.up.sync_timeout);
            (peer.name.clone(), tokio::spawn(sync_peer::run(peer)))
        })
        .collect();
    info!(peers = tasks.len(), "sync peers started");
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (name, task) in tasks {
        let outcome = task.await.map_err(|e| RunError::Io {
            what: format!("sync peer {name}"),
            source: std::io::Error::other(e),
        })??;
        outcomes.push(outcome);
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let peers = outcomes.iter().map(sync_peer_summary).collect();
    local_summary("sync", config, &data, &bases, peers, started)
}
