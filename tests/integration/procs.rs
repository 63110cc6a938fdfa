//! Peers as child processes of the built binary, for the tests that kill them with SIGKILL and
//! restart them from their data dirs (churn, version reuse): spawning with the flags these tests
//! share, waiting for files and exits with a limit that names what was awaited.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rumor");

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peers sharing a certificate dir (`dir/certs`), a config file and a training budget; each
/// peer NAME keeps its data dir in `dir/NAME`, its address in `dir/NAME.addr`, its summary in
/// `dir/NAME.json` and its log in `dir/NAME.log` (appended to across restarts).
pub struct Cluster {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub dataset: &'static str,
    pub epochs: u32,
    /// `--max-train-time`, e.g. "30s".
    pub train_time: &'static str,
}

impl Cluster {
    /// A cluster in `dir`: a CA and one certificate per name in `dir/certs`, and `toml` written
    /// as its config file `dir/cluster.toml`.
    pub fn create(
        dir: &Path,
        names: &[&str],
        toml: &str,
        dataset: &'static str,
        epochs: u32,
        train_time: &'static str,
    ) -> Self {
        let certs = dir.join("certs");
        rumor::certs::init_ca(&certs, false).expect("create the CA");
        for n in names {
            rumor::certs::issue(&certs, n, 2).expect("issue a peer certificate");
        }
        let config = dir.join("cluster.toml");
        std::fs::write(&config, toml).expect("write the cluster config");
        Self {
            dir: dir.to_path_buf(),
            config,
            dataset,
            epochs,
            train_time,
        }
    }

    pub fn spawn(
        &self,
        name: &str,
        shard: &str,
        seed: Option<&str>,
        min_peers: usize,
        resume: bool,
    ) -> KillOnDrop {
        self.spawn_with(name, shard, seed, min_peers, resume, Vec::new())
    }

    /// [`Cluster::spawn`] with `extra` flags appended.
    pub fn spawn_with(
        &self,
        name: &str,
        shard: &str,
        seed: Option<&str>,
        min_peers: usize,
        resume: bool,
        extra: Vec<OsString>,
    ) -> KillOnDrop {
        let mut cmd = Command::new(BIN);
        cmd.args(["peer", "--config"])
            .arg(&self.config)
            .args(["--name", name, "--listen", "127.0.0.1:0", "--certs"])
            .arg(self.dir.join("certs"))
            .arg("--data-dir")
            .arg(self.dir.join(name))
            .args(["--shard", shard, "--dataset", self.dataset])
            .args([
                "--epochs",
                &self.epochs.to_string(),
                "--max-train-time",
                self.train_time,
            ])
            .args(["--min-peers", &min_peers.to_string()])
            .arg("--ready-file")
            .arg(self.dir.join(format!("{name}.addr")))
            .arg("--summary-json")
            .arg(self.dir.join(format!("{name}.json")))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(format!("{name}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        if resume {
            cmd.arg("--resume");
        }
        KillOnDrop(cmd.spawn().expect("spawn peer"))
    }

    /// The last line of a peer's metrics.jsonl.
    pub fn last_metrics(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join(name).join("metrics.jsonl")).ok()?;
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    }

    pub fn step(&self, name: &str) -> u64 {
        self.last_metrics(name)
            .and_then(|v| v["step"].as_u64())
            .unwrap_or(0)
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// The address a peer wrote to its ready file `path`.
pub fn read_addr(path: &Path) -> String {
    let mut addr = String::new();
    wait_for(Duration::from_secs(30), "the seed's address", || {
        addr = std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_string();
        !addr.is_empty()
    });
    addr
}

/// Waits for `child` (peer `name` of the cluster in `dir`) to exit successfully; panics with
/// its log's tail otherwise, or after `limit`.
pub fn wait_exit(child: &mut KillOnDrop, limit: Duration, name: &str, dir: &Path) {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            assert!(
                status.success(),
                "{name} exited with {status}; log tail: {tail:#?}"
            );
            return;
        }
        assert!(Instant::now() < end, "{name} did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
