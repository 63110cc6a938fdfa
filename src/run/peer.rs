//! `rumor peer`: one peer of a cluster spread over machines, gossip or sync, until its budget
//! is spent or a signal asks it to leave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use crate::certs::{self, PeerIdentity};
use crate::config::{Config, ConfigError, Mode};
use crate::data::TrainTest;
use crate::metrics::http::MetricsServer;
use crate::model;
use crate::node::{NodeError, PeerHandle};

use super::options::{check_batch_fits, load_data, peer_options};
use super::summary::{peer_summary, single_peer_summary, sync_peer_summary};
use super::{write_json, write_ready, RunError};

/// `rumor peer`: runs one peer to completion; with `metrics_addr`, serves `/metrics` and
/// `/status` there while it runs. `up.mode = "sync"` runs one peer of the barrier baseline
/// ([`crate::sync`]) with the addresses of `up.sync_peers` instead.
///
/// # Errors
/// [`RunError::Config`] for mode `centralized`, or for `sync` with `resume`, a metrics address,
/// or no resolvable index in `up.sync_peers`; otherwise what loading the certificates, the data
/// or the model, binding, training or writing the summary fails with.
pub async fn peer(
    config: Config,
    resume: bool,
    summary_json: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
) -> Result<(), RunError> {
    let mode_err = |message: &str| {
        RunError::Config(ConfigError::Invalid {
            key: "up.mode",
            message: message.into(),
        })
    };
    match config.up.mode {
        Mode::Gossip => {}
        Mode::Centralized => {
            return Err(mode_err(
                "`rumor peer` runs gossip or sync; centralized is `rumor up --mode centralized`",
            ))
        }
        Mode::Sync if resume => {
            return Err(mode_err("a sync peer cannot --resume"));
        }
        Mode::Sync if metrics_addr.is_some() => {
            return Err(mode_err("a sync peer does not serve --metrics-addr"));
        }
        Mode::Sync => {
            // Checked before loading anything, so a bad peer list fails at once.
            config.sync_index()?;
        }
    }
    model::set_compute_threads(config.train.threads);
    let identity = Arc::new(certs::load_identity(&config.peer.certs, &config.peer.name)?);
    crate::node::probe_data_dir(&config.peer.data_dir).map_err(|source| RunError::Peer {
        name: config.peer.name.clone(),
        source: Box::new(source),
    })?;
    let data = load_data(&config)?;
    check_batch_fits(&config, &data, [config.shard()?])?;
    if config.up.mode == Mode::Sync {
        return peer_sync(&config, identity, data, summary_json, ready_file).await;
    }
    let test = Arc::new(data.test.clone());
    let shard = config.shard()?;
    let mut options = peer_options(&config, identity, &data, test, shard.count)?;
    options.resume = resume;
    let mut handle = PeerHandle::spawn(options);
    let stopper = handle_signals(&handle);
    let _metrics = match metrics_addr {
        Some(addr) => {
            let server = MetricsServer::start(addr, handle.snapshot.clone()).await?;
            info!(addr = %server.local_addr(), "serving /metrics and /status");
            Some(server)
        }
        None => None,
    };
    if let Some(path) = ready_file {
        if let Some(addr) = handle.bound_addr().await {
            write_ready(&path, addr)?;
        }
    }
    let outcome = handle.wait().await.map_err(|source| RunError::Peer {
        name: config.peer.name.clone(),
        source: Box::new(source),
    })?;
    stopper.abort();
    let summary = single_peer_summary(
        &config,
        "gossip",
        &data.name,
        peer_summary(&outcome),
        outcome.wall_seconds,
        shard.count,
        outcome.members.clone(),
    );
    println!(
        "{}: test accuracy {:.2}%, published {}, applied {}, {} consistent",
        outcome.name,
        outcome.test_accuracy * 100.0,
        outcome.version,
        outcome.applied.len(),
        if outcome.drained { "drained" } else { "NOT" }
    );
    if let Some(path) = summary_json {
        write_json(&path, &summary)?;
    }
    Ok(())
}

/// `rumor peer --mode sync`: binds, writes the ready file, runs one [`crate::sync::SyncPeer`]
/// at index [`Config::sync_index`] of `up.sync_peers`, prints and writes its summary.
async fn peer_sync(
    config: &Config,
    identity: Arc<PeerIdentity>,
    data: TrainTest,
    summary_json: Option<PathBuf>,
    ready_file: Option<PathBuf>,
) -> Result<(), RunError> {
    let index = config.sync_index()?;
    let shard = config.shard()?;
    let test = Arc::new(data.test.clone());
    let opts = peer_options(config, identity, &data, test, shard.count)?;
    let name = opts.name.clone();
    let (transport, incoming) = crate::net::Transport::bind_lossy(
        opts.listen,
        &opts.identity,
        opts.transport.clone(),
        opts.loss.clone(),
    )
    .await
    .map_err(|e| RunError::Peer {
        name: name.clone(),
        source: Box::new(e.into()),
    })?;
    if let Some(path) = ready_file {
        write_ready(&path, transport.local_addr())?;
    }
    info!(%name, index, peers = config.up.sync_peers.len(), "sync peer started");
    let peer = crate::sync::SyncPeer {
        name: name.clone(),
        index,
        peers: config.up.sync_peers.clone(),
        transport,
        incoming,
        initial: opts.initial,
        plan: opts.plan,
        shard: opts.shard,
        test: opts.test,
        data_dir: opts.data_dir,
        timeout: config.up.sync_timeout,
    };
    let outcome = crate::sync::run_sync_peer(peer)
        .await
        .map_err(|e| RunError::Peer {
            name: name.clone(),
            source: Box::new(sync_failure(e)),
        })?;
    let summary = single_peer_summary(
        config,
        "sync",
        &data.name,
        sync_peer_summary(&outcome),
        outcome.wall_seconds,
        shard.count,
        Vec::new(),
    );
    println!(
        "{}: test accuracy {:.2}%, rounds {}, {} peer-rounds timed out, final average {}",
        outcome.name,
        outcome.test_accuracy * 100.0,
        outcome.rounds,
        outcome.timeouts,
        if outcome.complete {
            "complete"
        } else {
            "INCOMPLETE"
        }
    );
    if let Some(path) = summary_json {
        write_json(&path, &summary)?;
    }
    Ok(())
}

/// A sync peer's failure as a peer error, the sync error as its source.
pub(super) fn sync_failure(e: crate::sync::SyncError) -> NodeError {
    NodeError::Sync(Box::new(e))
}

fn handle_signals(handle: &PeerHandle) -> tokio::task::JoinHandle<()> {
    let stop = handle.stop_sender();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    })
}

/// Waits for Ctrl-C or SIGTERM.
pub(super) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
