//! `runner = "netns"`: one lab cell as a cluster of separate hosts, through
//! `scripts/netns/cluster.sh` (one network namespace and one `rumor peer` process per peer,
//! joined by a bridge, the cell's loss rate dropped by nftables in each host's kernel).
//!
//! The cell's whole rumor configuration goes to every host as a TOML file (`--config`); the
//! script's own flags (name `host-H`, listen address, certificates, data dir, shard `H/N`,
//! seeds, `--min-peers N`, and for sync the ordered peer list) override it. Host `H` trains
//! shard `H/N`, as in-process peer `peer-(H−1)` does, so a straggler named `peer-K` in the lab
//! file is slowed down as `host-(K+1)`.
//!
//! After the script returns, every host's `summary.json`, `metrics.jsonl` and checkpoint are
//! read from `DIR/host-H/`; the consensus distance is measured on the checkpoints, the bytes
//! sent come from the peers' quinn statistics (their summaries and metrics lines).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Cell, LabError, LabFile};
use crate::config::{Config, Mode};
use crate::run::{self, RunSummary};

/// What a namespace cell needs from the machine, checked once before any cell runs.
#[derive(Clone, Debug)]
pub(super) struct NetnsEnv {
    /// `cluster.sh`.
    pub script: PathBuf,
    /// The rumor binary every namespace runs.
    pub bin: PathBuf,
}

/// The loss rate of `cell` as the whole percent `cluster.sh --loss H=P` takes.
///
/// # Errors
/// A message when the rate is not a whole percent in [0, 100] (nftables draws from 0..100).
pub(super) fn loss_percent(cell: &Cell) -> Result<u32, String> {
    let p = cell.loss * 100.0;
    let rounded = p.round();
    if !(0.0..=100.0).contains(&rounded) || (p - rounded).abs() > 1e-6 {
        return Err(format!(
            "loss {} is not a whole percent in [0, 1]; nftables drops whole percents",
            cell.loss
        ));
    }
    Ok(rounded as u32)
}

/// The name the peer called `name` in the lab file has in a namespace cluster of `peers`
/// hosts: `peer-K` (an in-process name, shard K+1) is `host-(K+1)`; `host-H` stays.
///
/// # Errors
/// A message when `name` is neither form or out of range.
pub(super) fn host_name(name: &str, peers: usize) -> Result<String, String> {
    let parse = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|k| k.parse::<usize>().ok())
    };
    if let Some(k) = parse("peer-").filter(|k| *k < peers) {
        return Ok(format!("host-{}", k + 1));
    }
    if let Some(h) = parse("host-").filter(|h| (1..=peers).contains(h)) {
        return Ok(format!("host-{h}"));
    }
    Err(format!(
        "straggler `{name}` names no peer of a {peers}-host namespace cluster \
         (use peer-0..peer-{} or host-1..host-{peers})",
        peers.saturating_sub(1)
    ))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks that namespace cells can run here: the script and binary exist, this process is
/// root, and `ip netns` and `nft` work.
///
/// # Errors
/// A message saying what is missing.
pub(super) fn check_environment(lab: &LabFile, bin: Option<&Path>) -> Result<NetnsEnv, String> {
    let script = lab.netns_script.clone();
    if !script.is_file() {
        return Err(format!(
            "the cluster script {} does not exist (netns_script is relative to the current \
             dir, {})",
            script.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "unknown".into())
        ));
    }
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the rumor binary (current_exe): {e}"))?,
    };
    if !bin.is_file() {
        return Err(format!("the rumor binary {} does not exist", bin.display()));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run `id -u` to check for root: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("network namespaces and nftables need root; run `rumor lab` as root".into());
    }
    if !succeeds("ip", &["netns", "list"]) {
        return Err("`ip netns list` failed: install iproute2".into());
    }
    if !succeeds("nft", &["list", "tables"]) {
        return Err("`nft list tables` failed: install nftables".into());
    }
    Ok(NetnsEnv { script, bin })
}

/// Runs one cell through the cluster script with its output in `dir` (`DIR/host-H/` per host,
/// `DIR/rumor.toml` the config every peer got, `DIR/cluster.log` the script's output) and
/// returns the cluster's summary (peers `host-1..host-N` in host order).
///
/// # Errors
/// [`LabError::Netns`] naming the cell when the config cannot be written, the script cannot
/// start or fails (with the tail of its log), or a host left no summary or checkpoint, or one
/// that ran another mode.
pub(super) async fn run_cell(
    env: &NetnsEnv,
    lab: &LabFile,
    cell: &Cell,
    config: &Config,
    dir: &Path,
) -> Result<RunSummary, LabError> {
    let fail = |message: String| LabError::Netns {
        cell: cell.id(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let config_path = dir.join("rumor.toml");
    let text = toml::to_string(config).map_err(|e| fail(format!("serialising the config: {e}")))?;
    std::fs::write(&config_path, text)
        .map_err(|e| fail(format!("writing {}: {e}", config_path.display())))?;
    let percent = loss_percent(cell).map_err(fail)?;
    let log_path = dir.join("cluster.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| fail(format!("creating the log: {e}")))?;
    let log_err = log
        .try_clone()
        .map_err(|e| fail(format!("opening the log: {e}")))?;
    let mode = match cell.mode {
        Mode::Sync => "sync",
        _ => "gossip",
    };
    let mut cmd = Command::new("bash");
    cmd.arg(&env.script)
        .arg("--hosts")
        .arg(cell.peers.to_string())
        .arg("--bin")
        .arg(&env.bin)
        .arg("--config")
        .arg(&config_path)
        .arg("--mode")
        .arg(mode)
        .arg("--timeout")
        .arg(lab.netns_timeout.as_secs().max(1).to_string())
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if percent > 0 {
        for h in 1..=cell.peers {
            cmd.arg("--loss").arg(format!("{h}={percent}"));
        }
    }
    let script = env.script.display().to_string();
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .map_err(|e| fail(format!("waiting for {script}: {e}")))?
        .map_err(|e| fail(format!("cannot start {}: {e}", env.script.display())))?;
    if !status.success() {
        return Err(fail(format!(
            "{} failed ({status}); the end of {}:\n{}",
            env.script.display(),
            log_path.display(),
            tail(&log_path, 15)
        )));
    }
    let hosts: Vec<PathBuf> = (1..=cell.peers)
        .map(|h| dir.join(format!("host-{h}")))
        .collect();
    let mut parts = Vec::with_capacity(hosts.len());
    for host in &hosts {
        let path = host.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        let part: RunSummary = serde_json::from_str(&text)
            .map_err(|e| fail(format!("parsing {}: {e}", path.display())))?;
        if part.mode != cell.mode.as_str() {
            return Err(fail(format!(
                "{} says mode {}, not {}: the peers did not run the cell's mode",
                path.display(),
                part.mode,
                cell.mode.as_str()
            )));
        }
        parts.push(part);
    }
    let distance = run::checkpoint_consensus(&hosts)
        .map_err(|e| fail(format!("comparing the hosts' checkpoints: {e}")))?;
    run::combine_summaries(parts, distance).ok_or_else(|| fail("no host summaries".into()))
}

/// The last `lines` lines of a file (empty if unreadable).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Upper bound on one namespace cell's wait for its peers, unless the lab file says otherwise.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn straggler_names_map_to_hosts_by_shard() {
        assert_eq!(host_name("peer-0", 3).unwrap(), "host-1");
        assert_eq!(host_name("peer-2", 3).unwrap(), "host-3");
        assert_eq!(host_name("host-2", 3).unwrap(), "host-2");
        assert!(host_name("peer-3", 3).is_err());
        assert!(host_name("host-0", 3).is_err());
        assert!(host_name("alice", 3).is_err());
    }

    #[test]
    fn loss_rates_must_be_whole_percents() {
        let lab: LabFile = toml::from_str("name = \"t\"\ntarget_accuracy = 0.5\n").unwrap();
        let mut cell = lab.cells()[0].clone();
        cell.loss = 0.2;
        assert_eq!(loss_percent(&cell).unwrap(), 20);
        cell.loss = 0.07;
        assert_eq!(loss_percent(&cell).unwrap(), 7);
        cell.loss = 0.025;
        assert!(loss_percent(&cell).is_err());
    }
}
