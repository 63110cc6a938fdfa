//! What the subcommands do: build peers from a [`Config`], run `up` (many local peers or the
//! centralized baseline), one `peer`, and `compare`. The binary's `main` only parses and calls
//! these; errors come back typed so the binary prints them once with their causes.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::certs::{self, PeerIdentity};
use crate::config::{Config, ConfigError, Mode};
use crate::data::{self, Dataset, TrainTest};
use crate::metrics::http::MetricsServer;
use crate::model::{self, ModelSpec, Trainer};
use crate::node::trainer::TrainPlan;
use crate::node::{lock, NodeError, PeerHandle, PeerOptions, PeerOutcome, PeerStatus};
use crate::ui::dashboard::{self, Slot, SlotEnd};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration or flags.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates missing or invalid.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// The dataset could not be loaded or sharded.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// A peer failed.
    #[error("peer {name} failed")]
    Peer {
        /// The peer's name.
        name: String,
        /// What went wrong.
        source: Box<NodeError>,
    },
    /// The metrics server could not start, or a peer's `/status` could not be fetched.
    #[error(transparent)]
    Http(#[from] crate::metrics::http::HttpError),
    /// An output directory is a file, or has a file among its parents.
    #[error(transparent)]
    NotADirectory(#[from] crate::node::NotADirectory),
    /// A file could not be written or a temp dir made.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// One peer's entry in a summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Peer id.
    pub peer_id: String,
    /// Display name.
    pub name: String,
    /// Test accuracy of the final base, in [0, 1].
    pub test_accuracy: f32,
    /// Deltas this peer published.
    pub version: u64,
    /// Deltas folded into its base.
    pub applied: u64,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples processed.
    pub samples: u64,
    /// Whether its drain ended consistent before the deadline.
    pub drained: bool,
}

/// The summary `up` prints and writes with `--summary-json` (and, for one peer, `rumor peer
/// --summary-json`, which the lab reads back).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// `gossip`, `sync` or `centralized`.
    pub mode: String,
    /// Which dataset was used.
    pub dataset: String,
    /// One entry per peer.
    pub peers: Vec<PeerSummary>,
    /// Mean of the peers' test accuracies.
    pub mean_test_accuracy: f32,
    /// Lowest test accuracy.
    pub min_test_accuracy: f32,
    /// `mean_i ‖base_i − mean‖ / ‖mean‖` over the final bases.
    pub consensus_distance: f64,
    /// Wall time of the whole run (s).
    pub wall_seconds: f64,
    /// Samples processed by all peers together.
    pub samples_total: u64,
    /// Effective learning rate of each peer.
    pub lr: f64,
    /// Epochs of the budget.
    pub epochs: u32,
}

/// What `rumor peer --summary-json` writes: the run summary of one peer plus the members it
/// knew at exit.
#[derive(Clone, Debug, Serialize)]
pub struct SinglePeerSummary {
    /// The same fields as `up`'s summary, for this peer alone (consensus distance 0).
    #[serde(flatten)]
    pub run: RunSummary,
    /// The members it knew at exit.
    pub members: Vec<crate::node::MemberSummary>,
}

/// The summary `peer` writes: `up`'s fields for this one peer (consensus distance 0), with the
/// learning rate of a cluster of `peers`, and the members it knew (`wall_seconds` in s).
fn single_peer_summary(
    config: &Config,
    mode: &str,
    dataset: &str,
    peer: PeerSummary,
    wall_seconds: f64,
    peers: usize,
    members: Vec<crate::node::MemberSummary>,
) -> SinglePeerSummary {
    let t = &config.train;
    SinglePeerSummary {
        run: summarize(
            mode,
            dataset,
            vec![peer],
            0.0,
            Duration::from_secs_f64(wall_seconds),
            t.lr * t.lr_scaling.factor(peers),
            t.epochs,
        ),
        members,
    }
}

fn peer_summary(o: &PeerOutcome) -> PeerSummary {
    PeerSummary {
        peer_id: o.peer_id.to_string(),
        name: o.name.clone(),
        test_accuracy: o.test_accuracy,
        version: o.version,
        applied: o.applied.len(),
        bytes_sent: o.bytes_sent,
        bytes_received: o.bytes_received,
        steps: o.steps,
        samples: o.samples,
        drained: o.drained,
    }
}

/// Loads the dataset of `config`, saying which one was chosen, and checks that the model of
/// `config` fits it.
///
/// # Errors
/// What loading fails with; [`RunError::Config`] for `train.model` when the model's input size is
/// not the dataset's features per sample or it has fewer outputs than the dataset has classes.
pub fn load_data(config: &Config) -> Result<TrainTest, RunError> {
    let spec = config.dataset()?;
    let data = data::load(&spec, config.train.rng_seed)?;
    info!(dataset = %data.name, "{}", data.description);
    check_model_fits(&config.model()?, &data)?;
    Ok(data)
}

/// A model that does not fit the data fails at start, naming both, instead of at the first step
/// with a length mismatch deep in the trainer.
fn check_model_fits(model: &ModelSpec, data: &TrainTest) -> Result<(), ConfigError> {
    let dim = data.train.dim;
    let side = (dim as f64).sqrt().round() as usize;
    let image = if side * side == dim {
        format!(" ({side}×{side})")
    } else {
        String::new()
    };
    if model.input != dim {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} takes {} inputs, but dataset {} has {dim} features per sample{image}",
                model.input, data.name
            ),
        });
    }
    if model.classes < data.train.classes {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} has {} outputs, but dataset {} has {} classes",
                model.classes, data.name, data.train.classes
            ),
        });
    }
    Ok(())
}

/// A batch larger than a shard would train zero steps per epoch (the last incomplete batch is
/// dropped), so it fails at start: `shards` are the shards that will train, each checked by its
/// size; the error names the batch size and the smallest shard that is too small for it.
fn check_batch_fits(
    config: &Config,
    data: &TrainTest,
    shards: impl IntoIterator<Item = data::ShardSpec>,
) -> Result<(), RunError> {
    let batch = config.train.batch_size;
    let mut smallest: Option<(usize, data::ShardSpec)> = None;
    for shard in shards {
        let rows = if shard.count == 1 {
            data.train.len()
        } else {
            data::shard_indices(
                &data.train.labels,
                data.train.classes,
                shard,
                config.partition()?,
                config.train.rng_seed,
            )?
            .len()
        };
        if smallest.is_none_or(|(least, _)| rows < least) {
            smallest = Some((rows, shard));
        }
    }
    match smallest {
        Some((rows, shard)) if rows < batch => {
            let of = if shard.count == 1 {
                format!("the {rows} training samples of {}", data.name)
            } else {
                format!(
                    "shard {}/{} ({rows} of the {} training samples of {})",
                    shard.index + 1,
                    shard.count,
                    data.train.len(),
                    data.name
                )
            };
            Err(RunError::Config(ConfigError::Invalid {
                key: "train.batch_size",
                message: format!(
                    "a batch of {batch} samples is larger than {of}, so no step would ever run; \
                     use a batch size of at most {rows}"
                ),
            }))
        }
        _ => Ok(()),
    }
}

/// The peer options for shard `shard` of `config` (identity and data already loaded).
pub fn peer_options(
    config: &Config,
    identity: Arc<PeerIdentity>,
    data: &TrainTest,
    test: Arc<Dataset>,
    peers: usize,
) -> Result<PeerOptions, RunError> {
    let spec = config.model()?;
    let shard_spec = config.shard()?;
    let partition = config.partition()?;
    let indices = data::shard_indices(
        &data.train.labels,
        data.train.classes,
        shard_spec,
        partition,
        config.train.rng_seed,
    )?;
    let shard = Arc::new(data.train.subset(&indices));
    let t = &config.train;
    let lr = t.lr * t.lr_scaling.factor(peers);
    let plan = TrainPlan {
        spec: spec.clone(),
        epochs: t.epochs,
        batch_size: t.batch_size,
        lr,
        weight_decay: t.weight_decay,
        publish_every: t.publish_every,
        eval_every: t.eval_every,
        order_seed: t.rng_seed ^ (0x9e37_79b9 * (shard_spec.index as u64 + 1)),
        start_step: 0,
        max_train_time: t.max_train_time,
        slowdown: config.slowdown_of(&config.peer.name),
        max_unacked_deltas: t.max_unacked_deltas,
        delta_compression: t.delta_compression,
        low_priority: t.low_priority,
        eval_snapshots: t.deferred_eval.then(|| config.peer.data_dir.join("evals")),
    };
    let p = &config.peer;
    Ok(PeerOptions {
        name: p.name.clone(),
        listen: p.listen,
        advertise: p.advertise,
        seeds: p.seeds.clone(),
        identity,
        data_dir: p.data_dir.clone(),
        resume: false,
        initial: model::init_params(&spec, t.rng_seed),
        plan,
        shard,
        test,
        core: config.core_config(spec.param_count()),
        transport: config.transport_config(),
        min_peers: p.min_peers,
        join_timeout: p.join_timeout,
        drain_timeout: p.drain_timeout,
        checkpoint_interval: p.checkpoint_interval,
        max_inflight_per_peer: config.transport.max_inflight_per_peer,
        send_timeout: config.transport.send_timeout,
        rng_seed: t.rng_seed.wrapping_add(shard_spec.index as u64 * 7919),
        train: true,
        loss: config.loss_config(shard_spec.index),
    })
}

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

/// Writes `addr` to `path` atomically (temp file, then rename): scripts wait for it.
fn write_ready(path: &Path, addr: SocketAddr) -> Result<(), RunError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("writing {}", path.display())))
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
fn sync_failure(e: crate::sync::SyncError) -> NodeError {
    NodeError::Sync(Box::new(e))
}

/// A sync peer's entry in a summary (rounds stand in for versions and applied deltas).
fn sync_peer_summary(o: &crate::sync::SyncOutcome) -> PeerSummary {
    PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: o.name.clone(),
        test_accuracy: o.test_accuracy,
        version: o.rounds,
        applied: o.rounds,
        bytes_sent: o.transport.bytes_sent,
        bytes_received: o.transport.bytes_received,
        steps: o.steps,
        samples: o.samples,
        drained: o.complete,
    }
}

fn handle_signals(handle: &PeerHandle) -> tokio::task::JoinHandle<()> {
    let stop = handle.stop_sender();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    })
}

async fn wait_for_signal() {
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

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Io {
        what: "serialising the summary".into(),
        source: std::io::Error::other(e),
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    std::fs::write(path, text + "\n").map_err(io_err(format!("writing {}", path.display())))
}

/// Options of `rumor up` that are not in the config file.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Existing certificates directory with a CA (peer-0.. certificates issued when missing).
    pub certs: Option<PathBuf>,
    /// Parent of the peers' data dirs; default a temp dir.
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
            tokio::task::spawn_blocking(move || centralized(&config, &data, no_tui))
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

/// The temp dir, certificates dir (a throwaway CA unless `--certs`) and data-dir parent of a
/// local run. The temp dir is removed when the returned guard drops.
fn up_workspace(options: &UpOptions) -> Result<(tempfile::TempDir, PathBuf, PathBuf), RunError> {
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
    Ok((temp, certs_dir, out))
}

/// Options of local peer `i` of `up`: `peer-i` on 127.0.0.1 (any port), shard `i+1/n`, its
/// certificate issued by the CA in `certs_dir` when missing. Seeds and `min_peers` are the caller's.
fn local_peer_options(
    config: &Config,
    certs_dir: &Path,
    out: &Path,
    data: &TrainTest,
    test: &Arc<Dataset>,
    i: usize,
) -> Result<PeerOptions, RunError> {
    let n = config.up.peers;
    let name = format!("peer-{i}");
    if !certs_dir.join(format!("{name}.pem")).exists() {
        certs::issue(certs_dir, &name, 30)?;
    }
    let identity = Arc::new(certs::load_identity(certs_dir, &name)?);
    let mut c = config.clone();
    c.peer.name = name.clone();
    c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.peer.advertise = None;
    c.peer.seeds = Vec::new();
    c.peer.data_dir = out.join(&name);
    c.train.shard = format!("{}/{}", i + 1, n);
    peer_options(&c, identity, data, test.clone(), n)
}

async fn up_gossip(
    config: &Config,
    options: &UpOptions,
    data: TrainTest,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let n = config.up.peers;
    let (_temp, certs_dir, out) = up_workspace(options)?;
    let test = Arc::new(data.test.clone());
    let mut handles: Vec<PeerHandle> = Vec::with_capacity(n);
    let mut all_options: Vec<PeerOptions> = Vec::with_capacity(n);
    let mut seed: Option<SocketAddr> = None;
    for i in 0..n {
        let mut opts = local_peer_options(config, &certs_dir, &out, &data, &test, i)?;
        opts.seeds = seed.into_iter().collect();
        opts.min_peers = n;
        all_options.push(opts.clone());
        let mut handle = PeerHandle::spawn(opts);
        if i == 0 {
            seed = handle.bound_addr().await;
        }
        handles.push(handle);
    }
    info!(peers = n, "all peers started");
    let mut servers = Vec::new();
    if options.metrics {
        for h in &handles {
            let server =
                MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), h.snapshot.clone())
                    .await?;
            println!(
                "{}: metrics on http://{}/metrics, status on http://{}/status",
                lock(&h.status).name,
                server.local_addr(),
                server.local_addr()
            );
            servers.push(server);
        }
    }
    let tty = std::io::stdout().is_terminal() && !options.no_tui && !options.quiet;
    if tty {
        let outcomes = up_dashboard(
            config,
            &data,
            &test,
            &certs_dir,
            &out,
            all_options,
            handles,
            started,
        )
        .await?;
        drop(servers);
        return finish_gossip(config, &data, outcomes, started, n);
    }

    // Live table until every peer is done.
    let statuses: Vec<_> = handles.iter().map(|h| h.status.clone()).collect();
    let stops: Vec<_> = handles.iter().map(PeerHandle::stop_sender).collect();
    let quiet = options.quiet;
    let display = tokio::spawn(async move {
        let mut last_plain = Instant::now();
        if quiet {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rows: Vec<PeerStatus> = statuses.iter().map(|s| lock(s).clone()).collect();
            if tty {
                print!("\x1b[2J\x1b[H{}", render_table(&rows, started.elapsed()));
                let _ = std::io::stdout().flush();
            } else if last_plain.elapsed() >= Duration::from_secs(5) {
                last_plain = Instant::now();
                for r in &rows {
                    println!("{}", plain_line(r, started.elapsed()));
                }
            }
        }
    });
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        for s in stops {
            let _ = s.send(true);
        }
    });
    let mut outcomes = Vec::with_capacity(n);
    let mut first_error = None;
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.wait().await {
            Ok(o) => outcomes.push(o),
            Err(source) => {
                // The first error is returned (and printed once by the caller); later ones are
                // only logged.
                if first_error.is_some() {
                    warn!("peer-{i} failed: {}", crate::report::Chain(&source));
                }
                first_error.get_or_insert(RunError::Peer {
                    name: format!("peer-{i}"),
                    source: Box::new(source),
                });
            }
        }
    }
    display.abort();
    signals.abort();
    drop(servers);
    if let Some(e) = first_error {
        return Err(e);
    }
    finish_gossip(config, &data, outcomes, started, n)
}

/// The dashboard path of `up`: peers as slots an operator can pause, kill, restart and add to.
/// Killed peers that were not restarted are left out of the summary (and said so).
#[allow(clippy::too_many_arguments)]
async fn up_dashboard(
    config: &Config,
    data: &TrainTest,
    test: &Arc<Dataset>,
    certs_dir: &Path,
    out: &Path,
    all_options: Vec<PeerOptions>,
    handles: Vec<PeerHandle>,
    started: Instant,
) -> Result<Vec<PeerOutcome>, RunError> {
    let n = handles.len();
    let slots: Vec<Slot> = all_options
        .into_iter()
        .zip(handles)
        .map(|(o, h)| Slot::new(o, h))
        .collect();
    let config = config.clone();
    let data_for_add = data.clone();
    let test = test.clone();
    let certs_dir = certs_dir.to_path_buf();
    let out = out.to_path_buf();
    // A new peer takes the shard of peer (index mod n): the cluster's shards stay the same.
    let add: dashboard::AddPeer = Box::new(move |index, seeds| {
        let name = format!("peer-{index}");
        if !certs_dir.join(format!("{name}.pem")).exists() {
            certs::issue(&certs_dir, &name, 30).map_err(|e| e.to_string())?;
        }
        let identity =
            Arc::new(certs::load_identity(&certs_dir, &name).map_err(|e| e.to_string())?);
        let mut c = config.clone();
        c.peer.name = name.clone();
        c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.peer.advertise = None;
        c.peer.seeds = seeds;
        c.peer.data_dir = out.join(&name);
        c.peer.min_peers = 1;
        c.train.shard = format!("{}/{}", index % n + 1, n);
        peer_options(&c, identity, &data_for_add, test.clone(), n).map_err(|e| e.to_string())
    });
    let slots = dashboard::run(slots, add, started)
        .await
        .map_err(io_err("running the dashboard"))?;
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for slot in slots {
        match slot.end {
            SlotEnd::Done(end) => match *end {
                Ok(o) => outcomes.push(o),
                Err(source) => {
                    warn!(
                        "{} failed: {}",
                        slot.options.name,
                        crate::report::Chain(&source)
                    );
                    first_error.get_or_insert(RunError::Peer {
                        name: slot.options.name.clone(),
                        source: Box::new(source),
                    });
                }
            },
            SlotEnd::Killed | SlotEnd::Running => {
                println!("{}: killed, left out of the summary", slot.options.name)
            }
        }
    }
    if outcomes.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    } else if let Some(e) = first_error {
        warn!("{}", crate::report::Chain(&e));
    }
    Ok(outcomes)
}

fn finish_gossip(
    config: &Config,
    data: &TrainTest,
    outcomes: Vec<PeerOutcome>,
    started: Instant,
    n: usize,
) -> Result<RunSummary, RunError> {
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let consensus_distance = model::consensus_distance(&bases)?;
    let peers: Vec<PeerSummary> = outcomes.iter().map(peer_summary).collect();
    Ok(summarize(
        "gossip",
        &data.name,
        peers,
        consensus_distance,
        started.elapsed(),
        config.train.lr * config.train.lr_scaling.factor(n),
        config.train.epochs,
    ))
}

/// `rumor up --mode sync`: the barrier baseline ([`crate::sync`]) with the same peers, shards,
/// learning rate, certificates and loss injection as gossip.
async fn up_sync(
    config: &Config,
    options: &UpOptions,
    data: TrainTest,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let n = config.up.peers;
    let (_temp, certs_dir, out) = up_workspace(options)?;
    let test = Arc::new(data.test.clone());
    let peer_err = |name: &str, e: crate::node::NodeError| RunError::Peer {
        name: name.to_string(),
        source: Box::new(e),
    };
    // Bind every transport first so each peer knows every address.
    let mut bound = Vec::with_capacity(n);
    for i in 0..n {
        let opts = local_peer_options(config, &certs_dir, &out, &data, &test, i)?;
        let name = opts.name.clone();
        let (transport, incoming) = crate::net::Transport::bind_lossy(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &opts.identity,
            opts.transport.clone(),
            opts.loss.clone(),
        )
        .await
        .map_err(|e| peer_err(&name, e.into()))?;
        bound.push((opts, transport, incoming));
    }
    let addrs: Vec<SocketAddr> = bound.iter().map(|(_, t, _)| t.local_addr()).collect();
    let mut tasks = Vec::with_capacity(n);
    for (i, (opts, transport, incoming)) in bound.into_iter().enumerate() {
        let peer = crate::sync::SyncPeer {
            name: opts.name.clone(),
            index: i,
            peers: addrs.clone(),
            transport,
            incoming,
            initial: opts.initial,
            plan: opts.plan,
            shard: opts.shard,
            test: opts.test,
            data_dir: opts.data_dir,
            timeout: config.up.sync_timeout,
        };
        tasks.push((opts.name, tokio::spawn(crate::sync::run_sync_peer(peer))));
    }
    info!(peers = n, "sync peers started");
    let mut outcomes = Vec::with_capacity(n);
    for (name, task) in tasks {
        let result = task.await.map_err(|e| RunError::Io {
            what: format!("sync peer {name}"),
            source: std::io::Error::other(e),
        })?;
        let o = result.map_err(|e| RunError::Peer {
            name: name.clone(),
            source: Box::new(sync_failure(e)),
        })?;
        outcomes.push(o);
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let consensus_distance = model::consensus_distance(&bases)?;
    let peers = outcomes.iter().map(sync_peer_summary).collect();
    Ok(summarize(
        "sync",
        &data.name,
        peers,
        consensus_distance,
        started.elapsed(),
        config.train.lr * config.train.lr_scaling.factor(n),
        config.train.epochs,
    ))
}

/// One summary of a cluster from the summaries its peers wrote one by one (`rumor peer
/// --summary-json`, each with one peer): the peers' entries in the given order, accuracies and
/// sample totals recomputed over all of them, `consensus_distance` as measured by the caller
/// (e.g. [`compare`] on the peers' checkpoints), wall time the longest peer's (s), mode,
/// dataset, learning rate and epochs from the first part. `None` when `parts` is empty.
pub fn combine_summaries(parts: Vec<RunSummary>, consensus_distance: f64) -> Option<RunSummary> {
    let first = parts.first()?.clone();
    let wall = parts.iter().map(|p| p.wall_seconds).fold(0.0f64, f64::max);
    let peers = parts.into_iter().flat_map(|p| p.peers).collect();
    Some(summarize(
        &first.mode,
        &first.dataset,
        peers,
        consensus_distance,
        Duration::try_from_secs_f64(wall).unwrap_or_default(),
        first.lr,
        first.epochs,
    ))
}

fn summarize(
    mode: &str,
    dataset: &str,
    peers: Vec<PeerSummary>,
    consensus_distance: f64,
    wall: Duration,
    lr: f64,
    epochs: u32,
) -> RunSummary {
    let accs: Vec<f32> = peers.iter().map(|p| p.test_accuracy).collect();
    let mean = accs.iter().sum::<f32>() / accs.len().max(1) as f32;
    let min = accs.iter().copied().fold(f32::INFINITY, f32::min);
    RunSummary {
        mode: mode.into(),
        dataset: dataset.into(),
        samples_total: peers.iter().map(|p| p.samples).sum(),
        peers,
        mean_test_accuracy: mean,
        min_test_accuracy: if min.is_finite() { min } else { 0.0 },
        consensus_distance,
        wall_seconds: wall.as_secs_f64(),
        lr,
        epochs,
    }
}

/// The centralized baseline: one model on all the training data, the same sample budget
/// (`epochs` passes over the whole set) and batch size, learning rate `up.centralized_lr`.
pub fn centralized(
    config: &Config,
    data: &TrainTest,
    no_tui: bool,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let spec: ModelSpec = config.model()?;
    let t = &config.train;
    let lr = config.up.centralized_lr;
    let initial = model::init_params(&spec, t.rng_seed);
    let mut trainer = Trainer::new(&spec, &initial, lr, t.weight_decay)?;
    let train = &data.train;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut step = 0u64;
    let mut samples = 0u64;
    let steps_per_epoch = train.len().div_ceil(t.batch_size.max(1));
    let bars = crate::ui::progress::drawn(!no_tui);
    let pb = crate::ui::progress::bar(
        steps_per_epoch as u64 * u64::from(t.epochs),
        "centralized",
        !no_tui,
    );
    for epoch in 0..t.epochs {
        let order = data::epoch_order(train.len(), u64::from(epoch), t.rng_seed);
        let mut loss_sum = 0.0f64;
        for (i, chunk) in order.chunks_exact(t.batch_size.max(1)).enumerate() {
            train.gather_batch(chunk, &mut images, &mut labels);
            let loss = trainer.train_step(&images, &labels)?;
            trainer.check_loss(step + 1, loss)?;
            loss_sum += f64::from(loss);
            step += 1;
            samples += chunk.len() as u64;
            pb.inc(1);
            if step % 20 == 0 {
                pb.set_message(format!(
                    "epoch {}/{} loss {:.4}",
                    epoch + 1,
                    t.epochs,
                    loss_sum / (i + 1) as f64
                ));
            }
            if t.eval_every > 0 && step % t.eval_every == 0 {
                let acc = model::evaluate(
                    &spec,
                    &trainer.work()?,
                    &data.test.images,
                    &data.test.labels,
                )?;
                let line = format!(
                    "[{:>6.1}s] centralized epoch {}/{} step {}/{} loss {:.4} test accuracy {:.2}%",
                    started.elapsed().as_secs_f64(),
                    epoch + 1,
                    t.epochs,
                    i + 1,
                    steps_per_epoch,
                    loss_sum / (i + 1) as f64,
                    acc * 100.0
                );
                if bars {
                    pb.println(line);
                } else {
                    println!("{line}");
                }
            }
        }
    }
    pb.finish_and_clear();
    let params = trainer.work()?;
    trainer.check_finite(step, "the model parameters", &params)?;
    let acc = model::evaluate(&spec, &params, &data.test.images, &data.test.labels)?;
    let peer = PeerSummary {
        peer_id: uuid::Uuid::nil().to_string(),
        name: "centralized".into(),
        test_accuracy: acc,
        version: 0,
        applied: 0,
        bytes_sent: 0,
        bytes_received: 0,
        steps: step,
        samples,
        drained: true,
    };
    Ok(summarize(
        "centralized",
        &data.name,
        vec![peer],
        0.0,
        started.elapsed(),
        lr,
        t.epochs,
    ))
}

/// Renders the live table of `up`.
pub fn render_table(rows: &[PeerStatus], elapsed: Duration) -> String {
    let mut out = format!(
        "rumor up — {} peers — {:.0}s\n\n{:<10} {:<22} {:<10} {:>7} {:>8} {:>7} {:>9} {:>6} {:>10} {:>10}\n",
        rows.len(),
        elapsed.as_secs_f64(),
        "peer",
        "address",
        "state",
        "version",
        "applied",
        "step",
        "accuracy",
        "peers",
        "sent",
        "received"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<10} {:<22} {:<10} {:>7} {:>8} {:>7} {:>9} {:>6} {:>10} {:>10}\n",
            r.name,
            r.addr.map_or("-".to_string(), |a| a.to_string()),
            r.lifecycle.as_str(),
            r.version,
            r.applied,
            r.step,
            r.test_accuracy
                .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
            r.peers_known,
            human_bytes(r.bytes_sent),
            human_bytes(r.bytes_received),
        ));
    }
    out
}

fn plain_line(r: &PeerStatus, elapsed: Duration) -> String {
    format!(
        "[{:>6.1}s] {} {} version {} applied {} step {} accuracy {} peers {} sent {} received {}",
        elapsed.as_secs_f64(),
        r.name,
        r.lifecycle.as_str(),
        r.version,
        r.applied,
        r.step,
        r.test_accuracy
            .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
        r.peers_known,
        human_bytes(r.bytes_sent),
        human_bytes(r.bytes_received)
    )
}

/// Bytes in KiB/MiB/GiB with one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn print_summary(s: &RunSummary) {
    println!(
        "\nsummary: mode {} dataset {} epochs {} lr {}",
        s.mode, s.dataset, s.epochs, s.lr
    );
    println!(
        "{:<12} {:>9} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "peer", "accuracy", "version", "applied", "sent", "received", "drained"
    );
    for p in &s.peers {
        println!(
            "{:<12} {:>8.2}% {:>8} {:>8} {:>10} {:>10} {:>8}",
            p.name,
            p.test_accuracy * 100.0,
            p.version,
            p.applied,
            human_bytes(p.bytes_sent),
            human_bytes(p.bytes_received),
            p.drained
        );
    }
    println!(
        "mean accuracy {:.2}%  min {:.2}%  consensus distance {:.3e}  wall {:.1}s  samples {}",
        s.mean_test_accuracy * 100.0,
        s.min_test_accuracy * 100.0,
        s.consensus_distance,
        s.wall_seconds,
        s.samples_total
    );
}

/// Consensus distance (`mean_i ‖base_i − mean‖ / ‖mean‖`) of the bases checkpointed in
/// `dirs` (peers' data dirs).
///
/// # Errors
/// [`RunError::Model`] if a checkpoint cannot be loaded or the bases differ in length.
pub fn checkpoint_consensus(dirs: &[PathBuf]) -> Result<f64, RunError> {
    let mut bases = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let (_, base, _) = model::load_checkpoint(dir)?;
        bases.push(base);
    }
    let refs: Vec<&[f32]> = bases.iter().map(Vec::as_slice).collect();
    Ok(model::consensus_distance(&refs)?)
}

/// `rumor compare`: consensus distance between saved checkpoints.
pub fn compare(dirs: &[PathBuf], json: bool) -> Result<f64, RunError> {
    let d = checkpoint_consensus(dirs)?;
    if json {
        println!("{}", serde_json::json!({ "consensus_distance": d }));
    } else {
        println!(
            "consensus distance over {} checkpoints: {d:.6e}",
            dirs.len()
        );
    }
    Ok(d)
}
