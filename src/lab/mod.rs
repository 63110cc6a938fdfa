//! `rumor lab FILE.toml`: runs a grid of clusters (modes × loss rates × seeds × peer counts ×
//! IID/non-IID × straggler factor × the values of any configuration keys under `[sweep]`) and
//! writes what a person needs to judge convergence under
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
//! - **The target.** A metric of the workload, a value and a direction: `target_accuracy = 0.84`
//!   (accuracy, higher is better) or `[target] metric = "val_loss", value = 1.6` (a loss: lower
//!   is better; `direction` may say so for a metric whose name does not).
//! - **Mean value at time t.** Each peer's latest evaluated value of the target metric for its
//!   base (the shared model, not its local work) at or before t, averaged over peers; defined
//!   once every peer has evaluated once.
//! - **`time_to_target_seconds`**: the first time the *mean* value reaches the target;
//!   `time_to_target_all_seconds`: the first time *every* peer's latest value does (the worst
//!   one); `time_to_target_others_seconds`: the same over the peers that are not the
//!   straggler (straggler cells only). `null` when never reached.
//! - **Spread.** max − min of the peers' latest values: the per-time stand-in for
//!   consensus distance, which is only measured on the final models
//!   (`final_consensus_distance`, `mean_i ‖θ_i − θ̄‖ / ‖θ̄‖`).
//! - **Bytes.** UDP payload bytes sent per peer, from quinn's connection statistics.
//!   `bytes_to_target_per_peer`: the mean over the peers of the bytes each had sent on its first
//!   `metrics.jsonl` line at or after `time_to_target_seconds` (nothing interpolated).
//! - **All-reduce.** What a per-step fp32 ring all-reduce of the same model would send per peer:
//!   `2·(N−1)/N · 4 · P` bytes a step (N the cell's peers, 1 for `centralized`; P the model's
//!   parameters, from the run summary), times the steps per peer to the target or over the run.
//!   The `allreduce_ratio_*` divide it by what the run sent (null for one peer: all-reduce sends
//!   nothing). See `src/lab/communication.rs`.

mod analysis;
mod communication;
mod file;
pub mod netns;
pub mod plot;

pub use analysis::{report, CellSummary, FailedRun, LabSummary, RunRow, Series};
pub use communication::{allreduce_bytes_per_step, Communication};
pub use file::{Cell, LabFile, Runner};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, Mode};
use crate::run::{self, RunError, RunSummary, UpOptions};

use analysis::{analyse, write_csv};

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
    /// A `[sweep]` setting does not apply to the configuration.
    #[error("run {cell}: {message}")]
    Sweep {
        /// The cell id.
        cell: String,
        /// What is wrong.
        message: String,
    },
    /// A run failed.
    #[error("run {cell} failed")]
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
    #[error("{what} failed")]
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

/// Maps an I/O error to [`LabError::Io`] saying `what` was being written.
fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
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

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs the grid of `file` and writes the outputs; returns the summary.
///
/// Every cell's configuration is checked, and for `runner = "netns"` the machine too, before
/// the first cell starts. A run that fails once started (a shard smaller than a batch, a
/// namespace host that does not finish) is printed, listed in the summary's `failed` and the
/// report, and the grid goes on.
///
/// # Errors
/// [`LabError`] naming the file, the cell or the output at fault, for anything found before
/// the first run or while writing the outputs.
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
    let mut failed = Vec::new();
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
        let ran = async {
            let summary = match (cell.runner(&lab), &netns_env) {
                (Runner::Netns, Some(env)) => {
                    let summary = netns::run_cell(env, &lab, cell, &config, &dir).await?;
                    let json =
                        serde_json::to_string_pretty(&summary).map_err(|e| LabError::Io {
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
            analyse(&lab, cell, &dir, &summary)
        };
        // A run that fails is reported and the grid goes on: one bad cell (a shard smaller
        // than a batch at some α, say) must not cost the others.
        match ran.await {
            Ok((mut r, s, ser)) => {
                rows.append(&mut r);
                summaries.push(s);
                series.push(ser);
            }
            Err(e) => {
                let error = error_chain(&e);
                bar.suspend(|| eprintln!("lab: {error}"));
                failed.push(FailedRun { cell: id, error });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_csv(&out.join("runs.csv"), &rows)?;
    let target = lab.target().map_err(|message| LabError::File {
        path: out.clone(),
        message,
    })?;
    let plots = plot::write_all(&out, &series, &summaries, &target)?;
    let summary = LabSummary {
        name: lab.name.clone(),
        time_to_target_definition: format!(
            "seconds from the first peer's start until the mean over peers of each peer's \
             latest evaluated {} (of its base) reaches the target; time_to_target_all_seconds: \
             until every peer's does",
            target.metric
        ),
        target,
        cells: summaries,
        failed,
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
    let data = run::load_data(config)?;
    // Every peer evaluates on the same held-out data, so one workload serves them all.
    let workload = run::workload_for(config, &data, crate::data::ShardSpec::WHOLE)?;
    let (layout, _) = crate::workload::describe_params(workload.as_ref(), config.train.rng_seed)?;
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
                let metrics = crate::train::evaluate_snapshot(workload.as_ref(), &layout, path)?;
                if let Some(accuracy) = metrics.get("accuracy") {
                    value["test_accuracy"] = serde_json::json!(accuracy);
                }
                value["metrics"] = serde_json::json!(metrics);
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
