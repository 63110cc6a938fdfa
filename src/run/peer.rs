//! `rumor peer`: one peer of a cluster spread over machines, gossip or sync, until its budget
//! is spent or a signal asks it to leave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use crate::certs;
use crate::config::{Config, ConfigError, Mode};
use crate::metrics::http::MetricsServer;
use crate::model;
use crate::node::{PeerHandle, PeerOptions};

use super::options::{check_batch_fits, load_data, peer_options};
use super::summary::{peer_summary, single_peer_summary, sync_peer_summary};
use super::sync_peer::{self, BoundSyncPeer};
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
    crate::node::probe_data_dir(&config.peer.data_dir)
        .map_err(|source| RunError::peer(&config.peer.name, source))?;
    let data = load_data(&config)?;
    check_batch_fits(&config, &data, [config.train.shard])?;
    // A peer of a cluster spread over machines: the cluster's size is its shard count.
    let shards = config.train.shard.count;
    let mut options = peer_options(&config, identity, &data, shards)?;
    if config.up.mode == Mode::Sync {
        return peer_sync(&config, options, data.name(), summary_json, ready_file).await;
    }
    options.resume = resume;
    let mut handle = PeerHandle::spawn(options);
    let stopper = handle_signals(&handle);
    let metrics_server = match metrics_addr {
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
    let outcome = handle
        .wait()
        .await
        .map_err(|source| RunError::peer(&config.peer.name, source))?;
    stopper.abort();
    let summary = single_peer_summary(
        &config,
        "gossip",
        data.name(),
        peer_summary(&outcome),
        outcome.wall_seconds,
        shards,
        outcome.members.clone(),
    );
    println!(
        "{}: {}, published {}, applied {}, {} consistent",
        outcome.name,
        outcome.metrics,
        outcome.version,
        outcome.applied.len(),
        if outcome.drained { "drained" } else { "NOT" }
    );
    if let Some(path) = summary_json {
        write_json(&path, &summary)?;
    }
    if config.peer.linger {
        if let Some(server) = &metrics_server {
            server.finish();
        }
        info!("the run is over; lingering (serving /status and /metrics) until SIGTERM or Ctrl-C");
        wait_for_signal().await;
    }
    Ok(())
}

/// `rumor peer --mode sync`: binds at `peer.listen`, writes the ready file, runs the sync
/// peer of `options` at index [`Config::sync_index`] of `up.sync_peers`, prints and writes its
/// summary (`dataset` names the data it trained on).
async fn peer_sync(
    config: &Config,
    options: PeerOptions,
    dataset: &str,
    summary_json: Option<PathBuf>,
    ready_file: Option<PathBuf>,
) -> Result<(), RunError> {
    let index = config.sync_index()?;
    let listen = options.listen;
    let bound = BoundSyncPeer::bind(options, listen).await?;
    if let Some(path) = ready_file {
        write_ready(&path, bound.local_addr())?;
    }
    let peer = bound.into_peer(index, config.up.sync_peers.clone(), config.up.sync_timeout);
    info!(name = %peer.name, index, peers = peer.peers.len(), "sync peer started");
    let outcome = sync_peer::run(peer).await?;
    let summary = single_peer_summary(
        config,
        "sync",
        dataset,
        sync_peer_summary(&outcome),
        outcome.wall_seconds,
        config.train.shard.count,
        Vec::new(),
    );
    println!(
        "{}: {}, rounds {}, {} peer-rounds timed out, final average {}",
        outcome.name,
        outcome.metrics,
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

/// Ctrl-C or SIGTERM: leave gracefully and save. SIGUSR1: end training now and drain, as at
/// the end of the budget (Slurm sends it before a job's time limit with `--signal=B:USR1@120`).
fn handle_signals(handle: &PeerHandle) -> tokio::task::JoinHandle<()> {
    let stop = handle.stop_sender();
    let end_training = handle.end_training_flag();
    tokio::spawn(async move {
        tokio::select! {
            () = wait_for_signal() => {
                let _ = stop.send(true);
            }
            () = wait_for_end_of_training_signal() => {
                end_training.store(true, std::sync::atomic::Ordering::SeqCst);
                // A later Ctrl-C or SIGTERM still leaves at once.
                wait_for_signal().await;
                let _ = stop.send(true);
            }
        }
    })
}

/// Waits for SIGUSR1; never returns where it cannot be received (not Unix, or the handler
/// could not be installed, which is logged).
pub(super) async fn wait_for_end_of_training_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                if usr1.recv().await.is_some() {
                    return;
                }
            }
            Err(e) => tracing::warn!("SIGUSR1 cannot end training early: {e}"),
        }
    }
    std::future::pending::<()>().await;
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
