//! The binary as users run it: certificates, two `rumor peer` processes, `rumor compare`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rumor(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run rumor")
}

fn wait_for_file(path: &Path, limit: Duration) -> String {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not appear within {limit:?}", path.display());
}

fn wait_exit(child: &mut KillOnDrop, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < end, "peer did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn peer_cmd(
    dir: &Path,
    name: &str,
    shard: &str,
    seed: Option<&str>,
) -> (KillOnDrop, PathBuf, PathBuf) {
    let ready = dir.join(format!("{name}.addr"));
    let summary = dir.join(format!("{name}.json"));
    let data_dir = dir.join(name);
    let mut cmd = Command::new(BIN);
    cmd.args(["peer", "--name", name, "--listen", "127.0.0.1:0", "--certs"])
        .arg(dir.join("certs"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args([
            "--shard",
            shard,
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--min-peers",
            "2",
        ])
        .args([
            "--join-timeout",
            "30s",
            "--drain-timeout",
            "30s",
            "--eval-every",
            "0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--summary-json")
        .arg(&summary)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
    (KillOnDrop(cmd.spawn().expect("spawn peer")), ready, summary)
}

#[test]
fn certs_peers_and_compare_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_s = certs.to_str().unwrap();
    assert!(rumor(&["certs", "init", "--dir", certs_s]).status.success());
    assert!(
        !rumor(&["certs", "init", "--dir", certs_s]).status.success(),
        "init refuses to overwrite a CA"
    );
    for name in ["peer-a", "peer-b"] {
        assert!(rumor(&["certs", "issue", "--dir", certs_s, "--name", name])
            .status
            .success());
    }
    let bad = rumor(&["certs", "issue", "--dir", certs_s, "--name", "no/slash"]);
    assert!(!bad.status.success());

    let (mut a, a_ready, a_summary) = peer_cmd(dir.path(), "peer-a", "1/2", None);
    let seed = wait_for_file(&a_ready, Duration::from_secs(30));
    let (mut b, _, b_summary) = peer_cmd(dir.path(), "peer-b", "2/2", Some(&seed));
    assert!(wait_exit(&mut a, Duration::from_secs(180)).success());
    assert!(wait_exit(&mut b, Duration::from_secs(180)).success());

    for path in [&a_summary, &b_summary] {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(v["peers"].as_array().unwrap().len(), 1);
        assert!(v["peers"][0]["test_accuracy"].as_f64().unwrap() > 0.3);
        let members = v["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "each peer knows both: {members:?}");
    }
    let out = rumor(&[
        "compare",
        "--json",
        "--checkpoints",
        dir.path().join("peer-a").to_str().unwrap(),
        dir.path().join("peer-b").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["consensus_distance"].as_f64().unwrap();
    assert!(d < 1e-4, "consensus distance {d}");
}

#[test]
fn bad_flags_and_config_are_clear_errors() {
    let out = rumor(&["peer", "--shard", "3/2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.shard"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[gossip]\nfanuot = 3\n").unwrap();
    let out = rumor(&["up", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fanuot"), "{err}");

    let out = rumor(&["up", "--dataset", "idx:/nonexistent/dir", "--no-tui"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

#[test]
fn sigterm_makes_a_peer_leave_save_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    rumor::certs::init_ca(&certs, false).unwrap();
    rumor::certs::issue(&certs, "solo", 2).unwrap();
    let data_dir = dir.path().join("solo");
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "peer",
                "--name",
                "solo",
                "--listen",
                "127.0.0.1:0",
                "--certs",
            ])
            .arg(&certs)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--dataset",
                "synthetic",
                "--epochs",
                "1000",
                "--eval-every",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let metrics = data_dir.join("metrics.jsonl");
    wait_for_file(&metrics, Duration::from_secs(60));
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_exit(&mut child, Duration::from_secs(30)).success(),
        "exit 0 after SIGTERM"
    );
    let (_, base, _) = rumor::model::load_checkpoint(&data_dir).expect("checkpoint saved");
    assert!(!base.is_empty());
}
