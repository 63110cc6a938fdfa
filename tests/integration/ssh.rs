//! The ssh path of `scripts/netns/cluster.sh`, run for real without machines:
//! `scripts/netns/ssh-hosts.sh` starts an sshd in each of three network namespaces on a bridge
//! the root namespace is also on, and cluster.sh drives them through `--hosts-file`, with 20%
//! kernel loss on one host and a freeze/resume of another; then a run that times out with a
//! peer frozen, whose trap must clean the hosts all the same. Skipped, with the reason printed,
//! without root, `ip`, `nft`, `sshd` or `ssh`. A guard takes the hosts down even on failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const HOSTS: usize = 3;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/netns")
        .join(name)
}

fn stdout_of(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn works(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if stdout_of(&["id", "-u"]).trim() != "0" {
        return Some("not root".into());
    }
    if !works(&["ip", "netns", "list"]) {
        return Some("`ip netns` unavailable (install iproute2)".into());
    }
    if !works(&["nft", "list", "tables"]) {
        return Some("`nft` unavailable (apt-get install -y nftables)".into());
    }
    if !works(&["sh", "-c", "command -v sshd || test -x /usr/sbin/sshd"]) {
        return Some("no sshd (apt-get install -y openssh-server)".into());
    }
    if !works(&["sh", "-c", "command -v ssh && command -v ssh-keygen"]) {
        return Some("no ssh client (apt-get install -y openssh-client)".into());
    }
    None
}

/// The ssh hosts of one run; dropping it runs `ssh-hosts.sh down`, which kills whatever runs in
/// the namespaces and deletes them, their veths and the bridge.
struct SshHosts {
    dir: PathBuf,
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        let _ = Command::new(script("ssh-hosts.sh"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// Whether `pid` is a live process (a zombie waiting for its parent's reaping is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

use crate::common::held_within as wait_for;

fn remote_dirs() -> BTreeSet<String> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("rumor-remote-"))
                .collect()
        })
        .unwrap_or_default()
}

/// What cluster.sh's trap must have removed on the "remote" hosts: peers (and ssh sessions)
/// gone, so each namespace runs only its sshd; the nftables table; the remote run dir.
fn assert_hosts_clean(tag: &str, sshd: &[u32], dirs_before: &BTreeSet<String>) {
    for (i, pid) in sshd.iter().enumerate() {
        let ns = format!("{tag}h{}", i + 1);
        let only_sshd = wait_for(Duration::from_secs(10), || {
            stdout_of(&["ip", "netns", "pids", &ns])
                .split_whitespace()
                .collect::<Vec<_>>()
                == [pid.to_string().as_str()]
        });
        assert!(
            only_sshd,
            "processes left in {ns} besides sshd {pid}: {}",
            stdout_of(&["ip", "netns", "pids", &ns])
        );
        let tables = stdout_of(&["ip", "netns", "exec", &ns, "nft", "list", "tables"]);
        assert!(
            tables.trim().is_empty(),
            "nft tables left in {ns}: {tables}"
        );
    }
    let new_dirs: Vec<_> = remote_dirs().difference(dirs_before).cloned().collect();
    assert!(new_dirs.is_empty(), "remote dirs left behind: {new_dirs:?}");
}

/// cluster.sh in ssh mode against the hosts in `lab` (killed after 200 s).
fn cluster_over_ssh(lab: &Path, out: &Path, args: &[&str]) -> std::process::ExitStatus {
    Command::new("timeout")
        .args(["-k", "5", "200"])
        .arg(script("cluster.sh"))
        .env(
            "RUMOR_SSH_OPTS",
            format!("-F {}", lab.join("ssh_config").display()),
        )
        .env("RUMOR_REMOTE_BIN", BIN)
        .arg("--hosts-file")
        .arg(lab.join("hosts"))
        .args(["--bin", BIN, "--dataset", "synthetic"])
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap()
}

#[test]
fn cluster_script_over_ssh_with_kernel_loss_on_one_host_finishes_consistent() {
    let _serial = crate::common::heavy_test_lock();
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED ssh cluster test: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lab = tmp.path().join("ssh-hosts");
    let hosts = SshHosts { dir: lab.clone() };
    let began = Instant::now();
    let up = Command::new("timeout")
        .arg("60")
        .arg(script("ssh-hosts.sh"))
        .arg("up")
        .arg(&lab)
        .arg(HOSTS.to_string())
        .status()
        .unwrap();
    assert!(up.success(), "ssh-hosts.sh up failed: {up}");
    eprintln!("ssh hosts up in {:?}", began.elapsed());
    let tag = std::fs::read_to_string(lab.join("tag")).unwrap();
    let tag = tag.trim().to_string();
    let sshd: Vec<u32> = (1..=HOSTS)
        .map(|i| {
            std::fs::read_to_string(lab.join(format!("sshd-{i}.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let dirs_before = remote_dirs();

    let out = tmp.path().join("out");
    let began = Instant::now();
    let status = cluster_over_ssh(
        &lab,
        &out,
        &[
            "--loss",
            "3=20",
            "--timeout",
            "120",
            "--epochs",
            "1",
            "--events",
            "sleep 1; freeze 2; sleep 1; resume 2",
        ],
    );
    eprintln!("cluster.sh over ssh took {:?}", began.elapsed());
    assert_hosts_clean(&tag, &sshd, &dirs_before);
    assert!(status.success(), "cluster.sh over ssh failed: {status}");
    let compare: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let d = compare["consensus_distance"].as_f64().unwrap();
    assert!(d < 1e-4, "consensus distance {d}");
    let nft = std::fs::read_to_string(out.join("host-3/nft.txt")).unwrap();
    assert!(nft.contains("numgen random mod 100 < 20"), "{nft}");
    for h in 1..=HOSTS {
        let dir = out.join(format!("host-{h}"));
        assert!(dir.join("summary.json").exists(), "host-{h} summary");
        assert!(dir.join("metrics.jsonl").exists(), "host-{h} metrics");
        assert!(
            !dir.join("certs").exists(),
            "host-{h} certs were copied back"
        );
        assert!(
            rumor::model::load_checkpoint(&dir).is_ok(),
            "host-{h} checkpoint"
        );
    }

    // A run that gives up (peers still training, one of them frozen): the trap must resume and
    // kill the remote peers and remove the tables and dirs all the same.
    let began = Instant::now();
    let status = cluster_over_ssh(
        &lab,
        &tmp.path().join("out-2"),
        &["--timeout", "1", "--epochs", "1000", "--events", "freeze 2"],
    );
    eprintln!("a run that times out took {:?}", began.elapsed());
    assert_eq!(
        status.code(),
        Some(1),
        "cluster.sh should report the timeout"
    );
    assert_hosts_clean(&tag, &sshd, &dirs_before);

    drop(hosts);
    let namespaces: Vec<String> = stdout_of(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&tag))
        .map(String::from)
        .collect();
    assert!(namespaces.is_empty(), "namespaces left: {namespaces:?}");
    let links: Vec<String> = stdout_of(&["ip", "-o", "link"])
        .lines()
        .filter(|l| l.contains(&format!(": {tag}")))
        .map(String::from)
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");
    assert!(
        wait_for(Duration::from_secs(5), || !sshd.iter().any(|p| alive(*p))),
        "sshd left running: {sshd:?}"
    );
    assert!(!lab.exists(), "ssh-hosts.sh down left {}", lab.display());
}
