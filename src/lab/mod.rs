//! `rumor lab FILE.toml`: runs a grid of clusters (modes × loss rates × seeds × peer counts ×
//! IID/non-IID × straggler factor) and writes what a person needs to judge convergence under
//! loss and stragglers: `runs.csv`, `summary.json`, `report.md` and plots ([`plot`]).
//!
//! # Runners
//!
//! - `runner = "in-process"` (default): each cell is `rumor up` in this process (peers on
//!   127.0.0.1, loss dropped by each peer's socket, `loss.loss_out`).
//! - `runner = "netns"`: each cell is a cluster of separate hosts ([`netns`]): one `rumor peer`
//!   process per network namespace through `scripts/netns/cluster.sh`, the loss rate dropped by
//!   nftables in every host's kernel. Needs root, `ip` and `nft`; loss rates must be whole
//!   percents. Peers are named `host-1..host-N` there. `centralized` cells have no network and
//!   always run in-process.
//!
//! # Definitions
//!
//! - **Run time axis.** Seconds since the first peer of the run started (the earliest
//!   `time − elapsed_seconds` over the run's `metrics.jsonl` lines).
//! - **Mean accuracy at time t.** Each peer's latest evaluated test accuracy of its base (the
//!   shared model, not its local work) at or before t, averaged over peers; defined once every
//!   peer has evaluated once.
//! - **`time_to_target_seconds`**: the first time the *mean* accuracy reaches
//!   `target_accuracy`; `time_to_target_all_seconds`: the first time *every* peer's latest
//!   accuracy does; `time_to_target_others_seconds`: the same over the peers that are not the
//!   straggler (straggler cells only). `null` when never reached.
//! - **Accuracy spread.** max − min of the peers' latest accuracies: the per-time stand-in for
//!   consensus distance, which is only measured on the final models
//!   (`final_consensus_distance`, `mean_i ‖θ_i − θ̄‖ / ‖θ̄‖`).
//! - **Bytes.** UDP payload bytes sent per peer, from quinn's connection statistics.

pub mod netns;
pub mod plot;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, Mode};
use crate::run::{self, RunError, RunSummary, UpOptions};

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab file could not be read or parsed.
    #[error("lab file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A cell's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A run failed.
    #[error("run {cell}: {source}")]
    Run {
        /// The cell id.
        cell: String,
        /// Why.
        source: Box<RunError>,
    },
    /// The output folder is a file, or has a file among its parents.
    #[error(transparent)]
    NotADirectory(#[from] crate::node::NotADirectory),
    /// An output file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A `runner = "netns"` cell could not run: no root, `ip` or `nft`, no cluster script,
    /// a loss rate nftables cannot drop, or the cluster script failed.
    #[error("run {cell} (netns): {message}")]
    Netns {
        /// The cell id.
        cell: String,
        /// What is wrong.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("plot {file}: {message}")]
    Plot {
        /// The file.
        file: String,
        /// plotters' message.
        message: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// A lab file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    /// Name of the experiment (default output folder `results/NAME`).
    pub name: String,
    /// Test accuracy in [0, 1] that defines time-to-target.
    pub target_accuracy: f32,
    /// Modes to run: `gossip`, `sync` (and `centralized`, as a reference).
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    /// Loss rates: every peer drops this fraction of the datagrams it sends (`--loss`), so
    /// every link loses it.
    #[serde(default = "default_loss")]
    pub loss: Vec<f64>,
    /// Seeds (`train.rng_seed` and `loss.seed`).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Peer counts.
    #[serde(default = "default_peers")]
    pub peers: Vec<usize>,
    /// Dirichlet α of the shards; 0 means IID.
    #[serde(default = "default_alpha")]
    pub non_iid_alpha: Vec<f64>,
    /// Straggler factors applied to `straggler` (1: none).
    #[serde(default = "default_slowdown")]
    pub slowdown: Vec<f64>,
    /// Which peer is slowed down.
    #[serde(default = "default_straggler")]
    pub straggler: String,
    /// Where each cell runs: `in-process` (default; `rumor up` in this process) or `netns`
    /// (one `rumor peer` per network namespace through `netns_script`, kernel loss).
    #[serde(default)]
    pub runner: Runner,
    /// `runner = "netns"`: the cluster script, relative to the current dir (default
    /// `scripts/netns/cluster.sh`).
    #[serde(default = "default_netns_script")]
    pub netns_script: PathBuf,
    /// `runner = "netns"`: longest wait for one cell's peers to finish (the script's
    /// `--timeout`, whole seconds), e.g. `"30m"` (default 1 h).
    #[serde(default = "default_netns_timeout", with = "humantime_serde")]
    pub netns_timeout: Duration,
    /// The rumor configuration every run starts from (same keys as `config/default.toml`).
    #[serde(default)]
    pub config: Config,
}

/// Where the lab runs a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    /// `rumor up` in this process: peers on 127.0.0.1, loss injected by their sockets.
    #[default]
    InProcess,
    /// One `rumor peer` per network namespace (`scripts/netns/cluster.sh`), loss dropped by
    /// nftables in each namespace's kernel.
    Netns,
}

impl Runner {
    /// The lab-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::InProcess => "in-process",
            Runner::Netns => "netns",
        }
    }
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::Gossip, Mode::Sync]
}
fn default_loss() -> Vec<f64> {
    vec![0.0]
}
fn default_seeds() -> Vec<u64> {
    vec![1]
}
fn default_peers() -> Vec<usize> {
    vec![4]
}
fn default_alpha() -> Vec<f64> {
    vec![0.0]
}
fn default_slowdown() -> Vec<f64> {
    vec![1.0]
}
fn default_straggler() -> String {
    "peer-1".into()
}
fn default_netns_script() -> PathBuf {
    PathBuf::from("scripts/netns/cluster.sh")
}
fn default_netns_timeout() -> Duration {
    netns::DEFAULT_TIMEOUT
}

impl LabFile {
    /// Reads and checks a lab file.
    ///
    /// # Errors
    /// [`LabError::File`] when unreadable, not valid TOML for this schema, or with an empty
    /// axis or a target outside (0, 1].
    pub fn from_file(path: &Path) -> Result<Self, LabError> {
        let err = |message: String| LabError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let lab: LabFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if lab.modes.is_empty()
            || lab.loss.is_empty()
            || lab.seeds.is_empty()
            || lab.peers.is_empty()
            || lab.non_iid_alpha.is_empty()
            || lab.slowdown.is_empty()
        {
            return Err(err("every axis needs at least one value".into()));
        }
        if !(lab.target_accuracy > 0.0 && lab.target_accuracy <= 1.0) {
            return Err(err("target_accuracy must lie in (0, 1]".into()));
        }
        if lab.runner == Runner::Netns && lab.netns_timeout.as_secs() == 0 {
            return Err(err("netns_timeout must be at least 1s".into()));
        }
        Ok(lab)
    }

    /// The grid, in a fixed order (mode innermost, so modes of a setting run back to back).
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for &peers in &self.peers {
            for &alpha in &self.non_iid_alpha {
                for &slowdown in &self.slowdown {
                    for &loss in &self.loss {
                        for &seed in &self.seeds {
                            for &mode in &self.modes {
                                out.push(Cell {
                                    mode,
                                    loss,
                                    slowdown,
                                    non_iid_alpha: alpha,
                                    peers,
                                    seed,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// One run of the grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// Training mode.
    pub mode: Mode,
    /// Loss rate both ways.
    pub loss: f64,
    /// Straggler factor.
    pub slowdown: f64,
    /// Dirichlet α (0: IID).
    pub non_iid_alpha: f64,
    /// Peers.
    pub peers: usize,
    /// Seed.
    pub seed: u64,
}

impl Cell {
    /// A file-system friendly id, e.g. `gossip-loss0.10-slow1-iid-n4-s1`.
    pub fn id(&self) -> String {
        let alpha = if self.non_iid_alpha > 0.0 {
            format!("a{}", self.non_iid_alpha)
        } else {
            "iid".into()
        };
        format!(
            "{}-loss{:.2}-slow{}-{alpha}-n{}-s{}",
            self.mode.as_str(),
            self.loss,
            self.slowdown,
            self.peers,
            self.seed
        )
    }

    /// The setting without mode and seed: what one plot compares.
    pub fn group(&self) -> String {
        let alpha = if self.non_iid_alpha > 0.0 {
            format!("a{}", self.non_iid_alpha)
        } else {
            "iid".into()
        };
        format!(
            "loss{:.2}-slow{}-{alpha}-n{}",
            self.loss, self.slowdown, self.peers
        )
    }

    /// Where this cell runs in `lab`: centralized cells have no network and run in-process.
    pub fn runner(&self, lab: &LabFile) -> Runner {
        if self.mode == Mode::Centralized {
            Runner::InProcess
        } else {
            lab.runner
        }
    }

    /// The name of the straggler's peer in this cell's runner (`host-H` in namespaces).
    fn straggler(&self, lab: &LabFile) -> Result<String, LabError> {
        match self.runner(lab) {
            Runner::InProcess => Ok(lab.straggler.clone()),
            Runner::Netns => {
                netns::host_name(&lab.straggler, self.peers).map_err(|message| LabError::Netns {
                    cell: self.id(),
                    message,
                })
            }
        }
    }

    fn config(&self, lab: &LabFile) -> Result<Config, LabError> {
        let mut c = lab.config.clone();
        c.up.mode = self.mode;
        c.up.peers = self.peers;
        match self.runner(lab) {
            // As `--loss`: each sender drops `loss` of its datagrams, so every link loses it.
            Runner::InProcess => c.loss.loss_out = self.loss,
            // Every host's kernel drops `loss` of the UDP datagrams it sends instead.
            Runner::Netns => {
                c.loss.loss_out = 0.0;
                c.loss.loss_in = 0.0;
            }
        }
        c.loss.seed = self.seed;
        c.train.rng_seed = self.seed;
        // Evaluation points save the base; they are evaluated after the run
        // ([`evaluate_deferred`]), so measuring costs the timed run no compute.
        c.train.deferred_eval = true;
        c.train.non_iid_alpha = (self.non_iid_alpha > 0.0).then_some(self.non_iid_alpha);
        if self.slowdown > 1.0 {
            c.train.slowdown.insert(self.straggler(lab)?, self.slowdown);
        }
        c.validate()?;
        Ok(c)
    }
}

/// One line of a peer's `metrics.jsonl` (the fields the lab reads; both modes write them).
#[derive(Clone, Debug, Deserialize)]
struct MetricsLine {
    time: f64,
    elapsed_seconds: f64,
    peer: String,
    step: u64,
    samples: u64,
    test_accuracy: Option<f32>,
    bytes_sent: u64,
    bytes_received: u64,
}

/// One row of `runs.csv`: one peer's evaluation at one time of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// Cell id.
    pub cell: String,
    /// Mode.
    pub mode: String,
    /// Loss rate.
    pub loss: f64,
    /// Straggler factor.
    pub slowdown: f64,
    /// Dirichlet α (0: IID).
    pub non_iid_alpha: f64,
    /// Peers.
    pub peers: usize,
    /// Seed.
    pub seed: u64,
    /// Peer name.
    pub peer: String,
    /// Seconds since the run's first peer started.
    pub t_seconds: f64,
    /// Optimizer steps of this peer.
    pub step: u64,
    /// Samples of this peer.
    pub samples: u64,
    /// Test accuracy of this peer's base.
    pub test_accuracy: f32,
    /// Mean of every peer's latest accuracy at this time (empty until all evaluated).
    pub mean_test_accuracy: Option<f32>,
    /// max − min of the peers' latest accuracies at this time.
    pub accuracy_spread: Option<f32>,
    /// UDP bytes sent by this peer so far.
    pub bytes_sent: u64,
    /// UDP bytes received by this peer so far.
    pub bytes_received: u64,
}

/// One cell of `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CellSummary {
    /// Cell id (also the run's folder under `runs/`).
    pub cell: String,
    /// Mode.
    pub mode: String,
    /// Loss rate.
    pub loss: f64,
    /// Straggler factor.
    pub slowdown: f64,
    /// Dirichlet α (0: IID).
    pub non_iid_alpha: f64,
    /// Peers.
    pub peers: usize,
    /// Seed.
    pub seed: u64,
    /// Where it ran: `in-process` or `netns`.
    pub runner: String,
    /// First time the mean accuracy reached the target (s); null: never.
    pub time_to_target_seconds: Option<f64>,
    /// First time every peer's accuracy reached the target (s); null: never.
    pub time_to_target_all_seconds: Option<f64>,
    /// Straggler cells: first time the mean over the other peers reached the target (s).
    pub time_to_target_others_seconds: Option<f64>,
    /// Mean final test accuracy.
    pub final_mean_test_accuracy: f32,
    /// Lowest final test accuracy.
    pub final_min_test_accuracy: f32,
    /// Consensus distance of the final models.
    pub final_consensus_distance: f64,
    /// Mean UDP bytes sent per peer (quinn statistics).
    pub bytes_sent_per_peer: f64,
    /// Wall time of the run (s).
    pub wall_seconds: f64,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct LabSummary {
    /// The experiment's name.
    pub name: String,
    /// The target accuracy.
    pub target_accuracy: f32,
    /// How `time_to_target_seconds` is defined.
    pub time_to_target_definition: String,
    /// One entry per run.
    pub cells: Vec<CellSummary>,
    /// Files written next to this one.
    pub plots: Vec<String>,
}

/// A run's series, for plots: `(t, value)` points per run.
#[derive(Clone, Debug)]
pub struct Series {
    /// The run.
    pub cell: Cell,
    /// `(t, mean accuracy)`.
    pub mean_accuracy: Vec<(f64, f64)>,
    /// `(t, accuracy spread)`.
    pub spread: Vec<(f64, f64)>,
    /// `(t, mean bytes sent per peer)`.
    pub bytes_per_peer: Vec<(f64, f64)>,
}

/// Options of `rumor lab`.
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Output folder; default `results/NAME`.
    pub out: Option<PathBuf>,
    /// `runner = "netns"`: the rumor binary every namespace runs; default this executable
    /// (`std::env::current_exe`), which is right for the `rumor` binary but not for a test.
    pub bin: Option<PathBuf>,
}

/// Runs the grid of `file` and writes the outputs; returns the summary.
///
/// Every cell's configuration is checked, and for `runner = "netns"` the machine too, before
/// the first cell starts.
///
/// # Errors
/// [`LabError`] naming the file, the cell or the output at fault.
pub async fn run_lab(file: &Path, options: LabOptions) -> Result<LabSummary, LabError> {
    let lab = LabFile::from_file(file)?;
    let cells = lab.cells();
    let mut configs = Vec::with_capacity(cells.len());
    for cell in &cells {
        if cell.runner(&lab) == Runner::Netns {
            let netns_err = |message: String| LabError::Netns {
                cell: cell.id(),
                message,
            };
            netns::loss_percent(cell).map_err(netns_err)?;
            if cell.mode == Mode::Sync && cell.peers < 2 {
                return Err(netns_err(
                    "a sync peer on its own host needs at least one other (peers ≥ 2)".into(),
                ));
            }
        }
        configs.push(cell.config(&lab)?);
    }
    let netns_env = match cells.iter().find(|c| c.runner(&lab) == Runner::Netns) {
        Some(first) => Some(
            netns::check_environment(&lab, options.bin.as_deref()).map_err(|message| {
                LabError::Netns {
                    cell: first.id(),
                    message,
                }
            })?,
        ),
        None => None,
    };
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&lab.name));
    crate::node::check_dir_path("output dir", &out)?;
    std::fs::create_dir_all(out.join("runs"))
        .map_err(io_err(format!("creating {}", out.display())))?;
    let certs_dir = tempfile::Builder::new()
        .prefix("rumor-lab-certs-")
        .tempdir()
        .map_err(io_err("creating a temp dir"))?;
    crate::certs::init_ca(certs_dir.path(), false).map_err(|e| LabError::Run {
        cell: "certificates".into(),
        source: Box::new(RunError::Certs(e)),
    })?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(cells.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    let mut series = Vec::new();
    for (k, (cell, config)) in cells.iter().zip(configs).enumerate() {
        let id = cell.id();
        bar.set_message(id.clone());
        if bar.is_hidden() {
            eprintln!("lab: run {}/{}: {id}", k + 1, cells.len());
        }
        let dir = out.join("runs").join(&id);
        if dir.exists() {
            // A rerun starts clean: metrics files are appended to.
            std::fs::remove_dir_all(&dir).map_err(io_err(format!("clearing {}", dir.display())))?;
        }
        let summary = match (cell.runner(&lab), &netns_env) {
            (Runner::Netns, Some(env)) => {
                let summary = netns::run_cell(env, &lab, cell, &config, &dir).await?;
                let json = serde_json::to_string_pretty(&summary).map_err(|e| LabError::Io {
                    what: "serialising a run summary".into(),
                    source: std::io::Error::other(e),
                })?;
                std::fs::write(dir.join("summary.json"), json + "\n")
                    .map_err(io_err(format!("writing {}/summary.json", dir.display())))?;
                summary
            }
            _ => {
                let up = UpOptions {
                    certs: Some(certs_dir.path().to_path_buf()),
                    out: Some(dir.clone()),
                    no_tui: true,
                    summary_json: Some(dir.join("summary.json")),
                    quiet: true,
                    ..UpOptions::default()
                };
                run::up(config.clone(), up)
                    .await
                    .map_err(|e| LabError::Run {
                        cell: id.clone(),
                        source: Box::new(e),
                    })?
            }
        };
        evaluate_deferred(&config, &dir, &summary).map_err(|e| LabError::Run {
            cell: id.clone(),
            source: Box::new(e),
        })?;
        let (mut r, s, ser) = analyse(&lab, cell, &dir, &summary)?;
        rows.append(&mut r);
        summaries.push(s);
        series.push(ser);
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_csv(&out.join("runs.csv"), &rows)?;
    let plots = plot::write_all(&out, &series, lab.target_accuracy)?;
    let summary = LabSummary {
        name: lab.name.clone(),
        target_accuracy: lab.target_accuracy,
        time_to_target_definition: "seconds from the first peer's start until the mean over \
            peers of each peer's latest evaluated test accuracy (of its base) reaches \
            target_accuracy; time_to_target_all_seconds: until every peer's does"
            .into(),
        cells: summaries,
        plots,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| LabError::Io {
        what: "serialising summary.json".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(out.join("summary.json"), json + "\n")
        .map_err(io_err("writing summary.json"))?;
    std::fs::write(out.join("report.md"), report(&summary)).map_err(io_err("writing report.md"))?;
    Ok(summary)
}

/// Fills in the test accuracy of every evaluation point a run saved for later
/// ([`crate::config::TrainSection::deferred_eval`]): evaluates each saved base on the test set,
/// rewrites the peer's `metrics.jsonl` with the accuracies, and deletes the saved bases.
///
/// # Errors
/// [`RunError`] if the data cannot be loaded, a metrics file cannot be read or written, or a
/// saved base cannot be evaluated.
pub fn evaluate_deferred(
    config: &Config,
    dir: &Path,
    summary: &RunSummary,
) -> Result<(), RunError> {
    let spec = config.model()?;
    let data = run::load_data(config)?;
    for p in &summary.peers {
        let peer_dir = dir.join(&p.name);
        let path = peer_dir.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let Ok(mut value) = serde_json::from_str::<serde_json::Value>(line) else {
                // A torn last line (a killed writer) is dropped, as readers skip it anyway.
                continue;
            };
            if let Some(file) = value.get("eval_snapshot").and_then(|v| v.as_str()) {
                // The recorded path is where the peer wrote it; a namespace or remote host's
                // files were copied into `dir` since, so the copy there comes first.
                let recorded = Path::new(file);
                let copied = recorded
                    .file_name()
                    .map(|name| peer_dir.join("evals").join(name));
                let path = copied.as_deref().filter(|p| p.exists()).unwrap_or(recorded);
                let accuracy = crate::train::evaluate_snapshot(&spec, path, &data.test)?;
                value["test_accuracy"] = serde_json::json!(accuracy);
                if let Some(map) = value.as_object_mut() {
                    map.remove("eval_snapshot");
                }
            }
            out.push_str(&value.to_string());
            out.push('\n');
        }
        std::fs::write(&path, out).map_err(|source| RunError::Io {
            what: format!("rewriting {}", path.display()),
            source,
        })?;
        let evals = peer_dir.join("evals");
        if evals.exists() {
            std::fs::remove_dir_all(&evals).map_err(|source| RunError::Io {
                what: format!("removing {}", evals.display()),
                source,
            })?;
        }
    }
    Ok(())
}

/// Reads a run's metrics files and derives its rows, summary and series.
fn analyse(
    lab: &LabFile,
    cell: &Cell,
    dir: &Path,
    summary: &RunSummary,
) -> Result<(Vec<RunRow>, CellSummary, Series), LabError> {
    let mut lines: Vec<MetricsLine> = Vec::new();
    for p in &summary.peers {
        let path = dir.join(&p.name).join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        lines.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<MetricsLine>(l).ok()),
        );
    }
    let t0 = lines
        .iter()
        .map(|l| l.time - l.elapsed_seconds)
        .fold(f64::INFINITY, f64::min);
    lines.sort_by(|a, b| a.time.total_cmp(&b.time));
    let names: Vec<String> = summary.peers.iter().map(|p| p.name.clone()).collect();
    let mut latest: BTreeMap<String, f32> = BTreeMap::new();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut ser = Series {
        cell: *cell,
        mean_accuracy: Vec::new(),
        spread: Vec::new(),
        bytes_per_peer: Vec::new(),
    };
    let (mut ttt, mut ttt_all, mut ttt_others) = (None, None, None);
    let straggler_name = cell.straggler(lab)?;
    let straggler = (cell.slowdown > 1.0).then_some(straggler_name.as_str());
    let target = lab.target_accuracy;
    for l in &lines {
        let t = l.time - t0;
        sent.insert(l.peer.clone(), l.bytes_sent);
        let bytes = sent.values().sum::<u64>() as f64 / names.len().max(1) as f64;
        ser.bytes_per_peer.push((t, bytes));
        let Some(acc) = l.test_accuracy else { continue };
        latest.insert(l.peer.clone(), acc);
        let all = names.iter().all(|n| latest.contains_key(n));
        let (mean, spread) = if all {
            let v: Vec<f32> = latest.values().copied().collect();
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let max = v.iter().copied().fold(f32::MIN, f32::max);
            let min = v.iter().copied().fold(f32::MAX, f32::min);
            ser.mean_accuracy.push((t, f64::from(mean)));
            ser.spread.push((t, f64::from(max - min)));
            if ttt.is_none() && mean >= target {
                ttt = Some(t);
            }
            if ttt_all.is_none() && min >= target {
                ttt_all = Some(t);
            }
            if let Some(s) = straggler {
                let others: Vec<f32> = latest
                    .iter()
                    .filter(|(n, _)| n.as_str() != s)
                    .map(|(_, a)| *a)
                    .collect();
                if !others.is_empty()
                    && ttt_others.is_none()
                    && others.iter().sum::<f32>() / others.len() as f32 >= target
                {
                    ttt_others = Some(t);
                }
            }
            (Some(mean), Some(max - min))
        } else {
            (None, None)
        };
        rows.push(RunRow {
            cell: cell.id(),
            mode: cell.mode.as_str().into(),
            loss: cell.loss,
            slowdown: cell.slowdown,
            non_iid_alpha: cell.non_iid_alpha,
            peers: cell.peers,
            seed: cell.seed,
            peer: l.peer.clone(),
            t_seconds: t,
            step: l.step,
            samples: l.samples,
            test_accuracy: acc,
            mean_test_accuracy: mean,
            accuracy_spread: spread,
            bytes_sent: l.bytes_sent,
            bytes_received: l.bytes_received,
        });
    }
    let bytes_sent_per_peer = summary.peers.iter().map(|p| p.bytes_sent).sum::<u64>() as f64
        / summary.peers.len().max(1) as f64;
    let s = CellSummary {
        cell: cell.id(),
        mode: cell.mode.as_str().into(),
        loss: cell.loss,
        slowdown: cell.slowdown,
        non_iid_alpha: cell.non_iid_alpha,
        peers: cell.peers,
        seed: cell.seed,
        runner: cell.runner(lab).as_str().into(),
        time_to_target_seconds: ttt,
        time_to_target_all_seconds: ttt_all,
        time_to_target_others_seconds: ttt_others,
        final_mean_test_accuracy: summary.mean_test_accuracy,
        final_min_test_accuracy: summary.min_test_accuracy,
        final_consensus_distance: summary.consensus_distance,
        bytes_sent_per_peer,
        wall_seconds: summary.wall_seconds,
    };
    Ok((rows, s, ser))
}

fn write_csv(path: &Path, rows: &[RunRow]) -> Result<(), LabError> {
    let csv_err = |e: csv::Error| LabError::Io {
        what: format!("writing {}", path.display()),
        source: std::io::Error::other(e),
    };
    let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
    for r in rows {
        w.serialize(r).map_err(csv_err)?;
    }
    w.flush()
        .map_err(io_err(format!("writing {}", path.display())))
}

fn fmt_secs(t: Option<f64>) -> String {
    t.map_or("never".into(), |t| format!("{t:.1}"))
}

/// The Markdown report: per-setting means over seeds, then every run.
pub fn report(s: &LabSummary) -> String {
    let mut out = format!(
        "# Lab report: {}\n\nTarget test accuracy: {:.1}%. Time to target: {}.\n\n",
        s.name,
        s.target_accuracy * 100.0,
        s.time_to_target_definition
    );
    out.push_str("## Per setting (mean over seeds)\n\n");
    out.push_str("| mode | loss | slowdown | non-IID α | peers | seeds | reached | time to target (s) | every peer (s) | others (s) | final mean acc | final min acc | consensus dist | MiB sent/peer |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut groups: BTreeMap<String, Vec<&CellSummary>> = BTreeMap::new();
    let mut order = Vec::new();
    for c in &s.cells {
        let key = format!(
            "{}|{}|{}|{}|{}",
            c.mode, c.loss, c.slowdown, c.non_iid_alpha, c.peers
        );
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(c);
    }
    let mean_opt = |v: Vec<Option<f64>>| -> (usize, Option<f64>) {
        let got: Vec<f64> = v.into_iter().flatten().collect();
        let n = got.len();
        (n, (n > 0).then(|| got.iter().sum::<f64>() / n as f64))
    };
    for key in order {
        let cs = &groups[&key];
        let c0 = cs[0];
        let n = cs.len();
        let (reached, ttt) = mean_opt(cs.iter().map(|c| c.time_to_target_seconds).collect());
        let (all_n, all) = mean_opt(cs.iter().map(|c| c.time_to_target_all_seconds).collect());
        let (others_n, others) =
            mean_opt(cs.iter().map(|c| c.time_to_target_others_seconds).collect());
        // Say how many seeds a mean is over when some never reached the target.
        let with_count = |t: Option<f64>, k: usize| {
            if k < n && t.is_some() {
                format!("{} ({k}/{n})", fmt_secs(t))
            } else {
                fmt_secs(t)
            }
        };
        let mean =
            |f: &dyn Fn(&CellSummary) -> f64| cs.iter().map(|c| f(c)).sum::<f64>() / n as f64;
        out.push_str(&format!(
            "| {} | {:.0}% | {} | {} | {} | {} | {}/{} | {} | {} | {} | {:.2}% | {:.2}% | {:.1e} | {:.1} |\n",
            c0.mode,
            c0.loss * 100.0,
            c0.slowdown,
            if c0.non_iid_alpha > 0.0 { c0.non_iid_alpha.to_string() } else { "IID".into() },
            c0.peers,
            n,
            reached,
            n,
            fmt_secs(ttt),
            with_count(all, all_n),
            if c0.slowdown > 1.0 {
                with_count(others, others_n)
            } else {
                "-".into()
            },
            mean(&|c| f64::from(c.final_mean_test_accuracy)) * 100.0,
            mean(&|c| f64::from(c.final_min_test_accuracy)) * 100.0,
            mean(&|c| c.final_consensus_distance),
            mean(&|c| c.bytes_sent_per_peer) / (1024.0 * 1024.0),
        ));
    }
    out.push_str("\nMeans of time to target are over the seeds that reached it (see `reached`).\n\n## Every run\n\n");
    out.push_str("| run | runner | time to target (s) | every peer (s) | final mean acc | final min acc | consensus dist | MiB sent/peer | wall (s) |\n|---|---|---|---|---|---|---|---|---|\n");
    for c in &s.cells {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}% | {:.2}% | {:.1e} | {:.1} | {:.1} |\n",
            c.cell,
            c.runner,
            fmt_secs(c.time_to_target_seconds),
            fmt_secs(c.time_to_target_all_seconds),
            c.final_mean_test_accuracy * 100.0,
            c.final_min_test_accuracy * 100.0,
            c.final_consensus_distance,
            c.bytes_sent_per_peer / (1024.0 * 1024.0),
            c.wall_seconds
        ));
    }
    out.push_str("\n## Plots\n\n");
    if s.plots.is_empty() {
        out.push_str("No plots: no TrueType font was found (set RUMOR_FONT to a .ttf file).\n");
    }
    for p in &s.plots {
        if p.ends_with(".png") {
            out.push_str(&format!("![{p}]({p})\n\n"));
        }
    }
    out.push_str("Accuracy spread (max − min of the peers' latest test accuracies) is plotted as the per-time stand-in for consensus distance, which is measured on the final models only.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lab_files_parse_and_every_cell_validates() {
        for name in ["loss-sweep", "straggler"] {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/lab/{name}.toml"));
            let lab = LabFile::from_file(&path).unwrap();
            assert_eq!(lab.name, name);
            let cells = lab.cells();
            assert!(!cells.is_empty());
            for c in &cells {
                c.config(&lab).unwrap();
            }
        }
    }

    #[test]
    fn netns_cells_move_loss_to_the_kernel_and_the_straggler_to_its_host() {
        let text = "name = \"t\"\ntarget_accuracy = 0.5\nrunner = \"netns\"\n\
                    modes = [\"gossip\", \"sync\", \"centralized\"]\nloss = [0.1]\n\
                    peers = [3]\nslowdown = [4.0]\n";
        let lab: LabFile = toml::from_str(text).unwrap();
        let cells = lab.cells();
        for cell in &cells[..2] {
            assert_eq!(cell.runner(&lab), Runner::Netns);
            let c = cell.config(&lab).unwrap();
            assert_eq!(c.loss.loss_out, 0.0, "nftables drops, not the socket");
            assert_eq!(
                c.slowdown_of("host-2"),
                4.0,
                "peer-1 trains shard 2: host-2"
            );
            assert_eq!(c.up.mode, cell.mode);
            // What the hosts get through --config reads back the same.
            let back = Config::from_toml(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!(cells[2].runner(&lab), Runner::InProcess, "centralized");
        assert_eq!(cells[2].config(&lab).unwrap().loss.loss_out, 0.1);
        let mut lab = lab;
        lab.straggler = "peer-3".into();
        assert!(matches!(cells[0].config(&lab), Err(LabError::Netns { .. })));
    }

    fn line(peer: &str, t: f64, acc: Option<f32>) -> String {
        serde_json::json!({
            "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": 1, "samples": 64,
            "test_accuracy": acc, "bytes_sent": 10, "bytes_received": 10
        })
        .to_string()
    }

    #[test]
    fn time_to_target_uses_every_peers_latest_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        for (peer, lines) in [
            (
                "peer-0",
                vec![
                    line("peer-0", 1.0, Some(0.5)),
                    line("peer-0", 3.0, Some(0.9)),
                ],
            ),
            (
                "peer-1",
                vec![
                    line("peer-1", 2.0, Some(0.7)),
                    line("peer-1", 5.0, Some(0.85)),
                ],
            ),
        ] {
            std::fs::create_dir_all(dir.path().join(peer)).unwrap();
            std::fs::write(
                dir.path().join(peer).join("metrics.jsonl"),
                lines.join("\n"),
            )
            .unwrap();
        }
        let peer = |name: &str| run::PeerSummary {
            peer_id: String::new(),
            name: name.into(),
            test_accuracy: 0.9,
            version: 1,
            applied: 1,
            bytes_sent: 10,
            bytes_received: 10,
            steps: 1,
            samples: 64,
            drained: true,
        };
        let summary = RunSummary {
            mode: "gossip".into(),
            dataset: "synthetic".into(),
            peers: vec![peer("peer-0"), peer("peer-1")],
            mean_test_accuracy: 0.9,
            min_test_accuracy: 0.9,
            consensus_distance: 0.0,
            wall_seconds: 6.0,
            samples_total: 128,
            lr: 0.001,
            epochs: 1,
        };
        let lab: LabFile = toml::from_str("name = \"t\"\ntarget_accuracy = 0.75\n").unwrap();
        let cell = lab.cells()[0];
        let (rows, s, series) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
        assert_eq!(rows.len(), 4);
        // Mean: t=2 → 0.6, t=3 → 0.8 (reached), t=5 → 0.875; every peer ≥ 0.75 only at t=5.
        assert_eq!(s.time_to_target_seconds, Some(3.0));
        assert_eq!(s.time_to_target_all_seconds, Some(5.0));
        assert_eq!(series.mean_accuracy.len(), 3);
        assert!(report(&LabSummary {
            name: "t".into(),
            target_accuracy: 0.8,
            time_to_target_definition: String::new(),
            cells: vec![s],
            plots: vec![],
        })
        .contains("| gossip |"));
    }
}
