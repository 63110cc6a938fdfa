//! The lab file (`rumor lab FILE.toml`): its schema, its defaults, and the grid of cells it
//! expands to, each with the configuration of its run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};

use super::{netns, LabError};
use crate::workload::Direction;

/// A lab file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    /// Name of the experiment (default output folder `results/NAME`).
    pub name: String,
    /// Test accuracy in (0, 1] that defines time-to-target (shorthand for a `[target]` on
    /// `accuracy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_accuracy: Option<f32>,
    /// The metric and value that define time-to-target, e.g. `{ metric = "val_loss", value =
    /// 1.6 }` (a loss is reached from above: `direction` defaults by the metric's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
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
    /// Further axes: a configuration key, written `section.key` as in the config file, and the
    /// values to try, e.g. `"train.publish_every" = [10, 50, 200]`. Every combination of the
    /// values is a setting of its own, run in every mode, for every seed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, Vec<toml::Value>>,
}

/// `[target]` of a lab file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The metric, as the workload names it (`accuracy`, `val_loss`, `perplexity`, ...).
    pub metric: String,
    /// The value to reach.
    pub value: f64,
    /// `higher` or `lower` is better; absent: `higher` for accuracy, `lower` for a metric named
    /// like a loss (`*loss`, `perplexity`, `mse`, `*error`).
    #[serde(default)]
    pub direction: Option<Direction>,
}

/// The target of a lab: time-to-target is the first time the metric reaches `value` in
/// `direction`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabTarget {
    /// The metric.
    pub metric: String,
    /// The value to reach.
    pub value: f64,
    /// Which way is better.
    pub direction: Direction,
}

impl LabTarget {
    /// True when `value` reached the target.
    pub fn reached(&self, value: f64) -> bool {
        self.direction.reached(value, self.value)
    }

    /// The worse of two values in this target's direction.
    pub fn worse(&self, a: f64, b: f64) -> f64 {
        match self.direction {
            Direction::Higher => a.min(b),
            Direction::Lower => a.max(b),
        }
    }

    /// `accuracy ≥ 0.84`, `val_loss ≤ 1.6`.
    pub fn describe(&self) -> String {
        let op = match self.direction {
            Direction::Higher => "≥",
            Direction::Lower => "≤",
        };
        format!("{} {op} {}", self.metric, self.value)
    }
}

/// Which way a metric improves, judged by its name; None when the name does not say.
fn direction_of(metric: &str) -> Option<Direction> {
    if metric == "accuracy" {
        Some(Direction::Higher)
    } else if metric.ends_with("loss")
        || metric.ends_with("error")
        || metric == "perplexity"
        || metric == "mse"
    {
        Some(Direction::Lower)
    } else {
        None
    }
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
    /// The lab's target, from `target_accuracy` or `[target]` (exactly one of them).
    ///
    /// # Errors
    /// A message naming what is wrong: both or neither given, an accuracy outside (0, 1], a
    /// value that is not finite, or a metric whose direction its name does not say and the
    /// file does not give.
    pub fn target(&self) -> Result<LabTarget, String> {
        let target = match (&self.target_accuracy, &self.target) {
            (Some(acc), None) => LabTarget {
                metric: "accuracy".into(),
                value: f64::from(*acc),
                direction: Direction::Higher,
            },
            (None, Some(t)) => LabTarget {
                metric: t.metric.clone(),
                value: t.value,
                direction: t
                    .direction
                    .or_else(|| direction_of(&t.metric))
                    .ok_or_else(|| {
                        format!(
                            "target metric {:?}: say direction = \"higher\" or \"lower\"",
                            t.metric
                        )
                    })?,
            },
            (Some(_), Some(_)) => {
                return Err("give target_accuracy or [target], not both".into());
            }
            (None, None) => {
                return Err(
                    "no target: give target_accuracy = 0.84 or [target] with metric \
                            and value"
                        .into(),
                );
            }
        };
        if !target.value.is_finite() {
            return Err(format!("target value {} is not finite", target.value));
        }
        if target.metric == "accuracy" && !(target.value > 0.0 && target.value <= 1.0) {
            return Err("target accuracy must lie in (0, 1]".into());
        }
        Ok(target)
    }

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
            || lab.sweep.values().any(Vec::is_empty)
        {
            return Err(err("every axis needs at least one value".into()));
        }
        for settings in lab.sweep_settings() {
            let config = apply_settings(&lab.config, &settings).map_err(err)?;
            config.validate().map_err(|e| err(format!("sweep: {e}")))?;
        }
        lab.target().map_err(err)?;
        if lab.runner == Runner::Netns && lab.netns_timeout.as_secs() == 0 {
            return Err(err("netns_timeout must be at least 1s".into()));
        }
        Ok(lab)
    }

    /// Every combination of the `[sweep]` values, in key order (one empty setting without a
    /// sweep).
    pub fn sweep_settings(&self) -> Vec<Vec<(String, toml::Value)>> {
        let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (key, values) in &self.sweep {
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut s = prefix.clone();
                        s.push((key.clone(), v.clone()));
                        s
                    })
                })
                .collect();
        }
        out
    }

    /// The grid, in a fixed order (mode innermost, so modes of a setting run back to back).
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for &peers in &self.peers {
            for &alpha in &self.non_iid_alpha {
                for &slowdown in &self.slowdown {
                    for &loss in &self.loss {
                        for settings in self.sweep_settings() {
                            for &seed in &self.seeds {
                                for &mode in &self.modes {
                                    out.push(Cell {
                                        mode,
                                        loss,
                                        slowdown,
                                        non_iid_alpha: alpha,
                                        peers,
                                        seed,
                                        settings: settings.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// `config` with each `(section.key, value)` of a sweep setting replaced, through the same
/// parsing as a config file (so a value is checked as that key's value).
///
/// # Errors
/// A message naming the key: not `section.key`, not a key of the configuration, or a value
/// that key does not take.
pub fn apply_settings(
    config: &Config,
    settings: &[(String, toml::Value)],
) -> Result<Config, String> {
    let mut tree = toml::Value::try_from(config).map_err(|e| e.to_string())?;
    for (key, value) in settings {
        let (section, field) = key
            .split_once('.')
            .ok_or_else(|| format!("sweep key `{key}`: write it as section.key, e.g. train.lr"))?;
        let table = tree
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| format!("sweep key `{key}`: no section [{section}]"))?;
        table.insert(field.to_string(), value.clone());
    }
    tree.try_into().map_err(|e: toml::de::Error| {
        format!("sweep {}: {}", describe_settings(settings), e.message())
    })
}

/// `key=value` pairs of a setting, e.g. `train.publish_every=50, train.outer_optimizer=nesterov`.
pub fn describe_settings(settings: &[(String, toml::Value)]) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A sweep value as written without quotes (`nesterov`, `50`, `0.7`).
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The part of a cell id a setting adds: `-publish_every50-outer_optimizernesterov`, with
/// characters a file name should not hold replaced by `_`.
fn settings_id(settings: &[(String, toml::Value)]) -> String {
    settings
        .iter()
        .map(|(k, v)| {
            let field = k.rsplit('.').next().unwrap_or(k);
            let text: String = value_text(v)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("-{field}{text}")
        })
        .collect()
}

/// One run of the grid.
#[derive(Clone, Debug, PartialEq)]
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
    /// The `[sweep]` values of this cell, by key (empty without a sweep).
    pub settings: Vec<(String, toml::Value)>,
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
            "{}-loss{:.2}-slow{}-{alpha}-n{}{}-s{}",
            self.mode.as_str(),
            self.loss,
            self.slowdown,
            self.peers,
            settings_id(&self.settings),
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
            "loss{:.2}-slow{}-{alpha}-n{}{}",
            self.loss,
            self.slowdown,
            self.peers,
            settings_id(&self.settings)
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
    pub(super) fn straggler(&self, lab: &LabFile) -> Result<String, LabError> {
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

    pub(super) fn config(&self, lab: &LabFile) -> Result<Config, LabError> {
        let mut c =
            apply_settings(&lab.config, &self.settings).map_err(|message| LabError::Sweep {
                cell: self.id(),
                message,
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lab_files_parse_and_every_cell_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            seen += 1;
            let lab = LabFile::from_file(&path).unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(lab.name, stem);
            lab.target().unwrap();
            let cells = lab.cells();
            assert!(!cells.is_empty());
            for c in &cells {
                c.config(&lab).unwrap();
            }
        }
        assert!(seen >= 4, "the shipped lab files");
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

    #[test]
    fn a_sweep_is_a_further_axis_checked_as_config_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let write = |sweep: &str| {
            std::fs::write(
                &path,
                format!(
                    "name = \"t\"\ntarget_accuracy = 0.5\nmodes = [\"gossip\", \"sync\"]\n\
                     [sweep]\n{sweep}\n"
                ),
            )
            .unwrap();
        };
        write(
            "\"train.publish_every\" = [10, \"5s\"]\n\
             \"train.outer_optimizer\" = [\"none\", \"nesterov\"]",
        );
        let lab = LabFile::from_file(&path).unwrap();
        let cells = lab.cells();
        assert_eq!(cells.len(), 2 * 2 * 2, "2 × 2 settings × 2 modes");
        let ids: std::collections::BTreeSet<String> = cells.iter().map(Cell::id).collect();
        assert_eq!(ids.len(), cells.len(), "ids are distinct: {ids:?}");
        let c = cells
            .iter()
            .find(|c| {
                c.id().contains("outer_optimizernesterov") && c.id().contains("publish_every5s")
            })
            .unwrap();
        let config = c.config(&lab).unwrap();
        assert_eq!(
            config.train.outer_optimizer,
            crate::train::OuterKind::Nesterov
        );
        assert_eq!(
            config.train.publish_every,
            crate::train::PublishPeriod::Interval(Duration::from_secs(5))
        );
        assert_eq!(
            describe_settings(&c.settings),
            "train.outer_optimizer=nesterov, train.publish_every=5s"
        );
        for (sweep, want) in [
            ("\"train.outer_optimizer\" = [\"adam\"]", "adam"),
            ("\"train.no_such_key\" = [1]", "no_such_key"),
            ("\"publish_every\" = [1]", "section.key"),
            ("\"train.outer_lr\" = [-1.0]", "train.outer_lr"),
            ("\"train.lr\" = []", "at least one value"),
        ] {
            write(sweep);
            let err = LabFile::from_file(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{sweep}: {err}");
        }
    }
}
