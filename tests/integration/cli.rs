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

/// Starts a lone peer on synthetic data with a budget no test outlasts, and waits until it
/// trains: (the process, its data dir, its summary file).
fn solo_peer(dir: &Path) -> (KillOnDrop, PathBuf, PathBuf) {
    let certs = dir.join("certs");
    rumor::certs::init_ca(&certs, false).unwrap();
    rumor::certs::issue(&certs, "solo", 2).unwrap();
    let data_dir = dir.join("solo");
    let summary = dir.join("solo.json");
    let child = KillOnDrop(
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
            .arg("--summary-json")
            .arg(&summary)
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
    wait_for_file(&data_dir.join("metrics.jsonl"), Duration::from_secs(60));
    (child, data_dir, summary)
}

fn signal(child: &KillOnDrop, name: &str) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn sigterm_makes_a_peer_leave_save_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, data_dir, _) = solo_peer(dir.path());
    signal(&child, "TERM");
    assert!(
        wait_exit(&mut child, Duration::from_secs(30)).success(),
        "exit 0 after SIGTERM"
    );
    let base = rumor::model::load_checkpoint(&data_dir)
        .expect("checkpoint saved")
        .params;
    assert!(!base.is_empty());
}

#[test]
fn sigusr1_ends_training_and_the_peer_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, data_dir, summary) = solo_peer(dir.path());
    signal(&child, "USR1");
    assert!(
        wait_exit(&mut child, Duration::from_secs(60)).success(),
        "exit 0 after SIGUSR1"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary written"))
            .expect("summary is JSON");
    let peer = &summary["peers"][0];
    // Drained (the end of a budget), not left; its last delta was published.
    assert_eq!(peer["drained"], true, "{summary}");
    assert!(peer["version"].as_u64().unwrap_or(0) >= 1, "{summary}");
    rumor::model::load_checkpoint(&data_dir).expect("checkpoint saved");
}

/// Runs `rumor args`, killed if it outlives `limit`: (success, stdout, stderr).
fn run_bounded(args: &[&str], limit: Duration) -> (bool, String, String) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rumor");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut child = KillOnDrop(child);
    let status = wait_exit(&mut child, limit);
    (
        status.success(),
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Asserts that the run failed and that its error (the `error:` line and its `caused by:`
/// lines) says `needle` exactly once.
fn fails_saying_once(args: &[&str], needle: &str) -> String {
    let (ok, _, stderr) = run_bounded(args, Duration::from_secs(120));
    assert!(!ok, "{args:?} succeeded:\n{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("caused by:"))
        .collect();
    let times = said.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        times, 1,
        "{args:?}: {needle:?} said {times} times in:\n{stderr}"
    );
    stderr
}

fn init_certs(dir: &Path, names: &[&str]) -> PathBuf {
    let certs = dir.join("certs");
    rumor::certs::init_ca(&certs, false).unwrap();
    for name in names {
        rumor::certs::issue(&certs, name, 2).unwrap();
    }
    certs
}

#[test]
fn certs_issue_never_overwrites_the_ca_or_a_peer_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_s = certs.to_str().unwrap();
    assert!(rumor(&["certs", "init", "--dir", certs_s]).status.success());
    let ca_pem = std::fs::read(certs.join("ca.pem")).unwrap();
    let ca_key = std::fs::read(certs.join("ca.key")).unwrap();
    for name in ["ca", "CA", "Ca"] {
        let stderr = fails_saying_once(
            &["certs", "issue", "--dir", certs_s, "--name", name],
            "is reserved",
        );
        assert!(stderr.contains("ca.pem"), "{stderr}");
        fails_saying_once(
            &[
                "certs", "issue", "--dir", certs_s, "--name", name, "--force",
            ],
            "is reserved",
        );
    }
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_pem);
    assert_eq!(std::fs::read(certs.join("ca.key")).unwrap(), ca_key);

    let issue = ["certs", "issue", "--dir", certs_s, "--name", "peer-a"];
    assert!(rumor(&issue).status.success());
    let key = std::fs::read(certs.join("peer-a.key")).unwrap();
    let stderr = fails_saying_once(&issue, "already exists (use --force to overwrite)");
    assert!(stderr.contains("peer-a"), "{stderr}");
    assert_eq!(std::fs::read(certs.join("peer-a.key")).unwrap(), key);
    let mut forced = issue.to_vec();
    forced.push("--force");
    assert!(rumor(&forced).status.success());
    assert_ne!(std::fs::read(certs.join("peer-a.key")).unwrap(), key);
}

#[test]
fn a_peer_refuses_the_ca_as_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let certs = init_certs(dir.path(), &[]);
    std::fs::copy(certs.join("ca.pem"), certs.join("copy.pem")).unwrap();
    std::fs::copy(certs.join("ca.key"), certs.join("copy.key")).unwrap();
    let data_dir = dir.path().join("data");
    for (name, needle) in [
        ("ca", "peer name \"ca\" is reserved"),
        (
            "copy",
            "cannot be a peer's identity: it is the cluster CA certificate itself",
        ),
    ] {
        fails_saying_once(
            &[
                "peer",
                "--name",
                name,
                "--certs",
                certs.to_str().unwrap(),
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--dataset",
                "synthetic",
            ],
            needle,
        );
    }
}

#[test]
fn a_batch_larger_than_a_shard_fails_at_start() {
    let shard = rumor::data::SYNTHETIC_TRAIN_LEN / 2;
    let up = |mode: &'static str| {
        vec![
            "up",
            "--mode",
            mode,
            "--peers",
            "2",
            "--dataset",
            "synthetic",
            "--batch-size",
            "100000",
            "--no-tui",
        ]
    };
    for mode in ["gossip", "sync"] {
        let stderr = fails_saying_once(&up(mode), "a batch of 100000 examples is larger than");
        assert!(
            stderr.contains(&format!(
                "shard 1/2 ({shard} training examples of synthetic)"
            )),
            "{mode}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("at most {shard}")),
            "{mode}: {stderr}"
        );
        assert!(stderr.contains("train.batch_size"), "{stderr}");
    }
    let stderr = fails_saying_once(
        &up("centralized"),
        "a batch of 100000 examples is larger than",
    );
    let all = rumor::data::SYNTHETIC_TRAIN_LEN;
    assert!(
        stderr.contains(&format!("the {all} training examples of synthetic")),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let certs = init_certs(dir.path(), &["solo"]);
    let stderr = fails_saying_once(
        &[
            "peer",
            "--name",
            "solo",
            "--certs",
            certs.to_str().unwrap(),
            "--data-dir",
            dir.path().join("solo").to_str().unwrap(),
            "--dataset",
            "synthetic",
            "--shard",
            "2/2",
            "--batch-size",
            "100000",
        ],
        "a batch of 100000 examples is larger than",
    );
    assert!(stderr.contains("shard 2/2"), "{stderr}");
}

#[test]
fn a_diverging_run_stops_with_an_error_naming_the_learning_rate() {
    let common = [
        "--peers",
        "2",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--eval-every",
        "0",
        "--join-timeout",
        "30s",
        "--no-tui",
    ];
    for (mode, lr_flag, lr_said) in [
        ("gossip", "--lr", "learning rate 2e9"),
        ("sync", "--lr", "learning rate 2e9"),
        ("centralized", "--centralized-lr", "learning rate 1e9"),
    ] {
        let mut args = vec!["up", "--mode", mode, lr_flag, "1e9"];
        args.extend(common);
        let stderr = fails_saying_once(&args, "training diverged at step");
        assert!(stderr.contains(lr_said), "{mode}: {stderr}");
        assert!(stderr.contains("non-finite"), "{mode}: {stderr}");
        assert!(stderr.contains("probably too high"), "{mode}: {stderr}");
        // The default schedule was still warming up: the rate of that step is named too.
        assert!(
            stderr.contains("at that step of its schedule"),
            "{mode}: {stderr}"
        );
        assert!(!stderr.contains("local delta refused"), "{mode}: {stderr}");
        assert!(!stderr.contains("trainer: trainer"), "{mode}: {stderr}");
    }

    let dir = tempfile::tempdir().unwrap();
    let certs = init_certs(dir.path(), &["solo"]);
    let stderr = fails_saying_once(
        &[
            "peer",
            "--name",
            "solo",
            "--certs",
            certs.to_str().unwrap(),
            "--data-dir",
            dir.path().join("solo").to_str().unwrap(),
            "--dataset",
            "synthetic",
            "--lr",
            "1e9",
            "--eval-every",
            "0",
        ],
        "training diverged at step",
    );
    assert!(stderr.contains("learning rate 1e9"), "{stderr}");
}

#[test]
fn a_model_that_does_not_fit_the_dataset_fails_at_start() {
    fails_saying_once(
        &[
            "up",
            "--dataset",
            "synthetic",
            "--model",
            "100-10",
            "--no-tui",
        ],
        "model 100-10 takes 100 inputs, but dataset synthetic has 784 features per sample (28×28)",
    );
    fails_saying_once(
        &[
            "up",
            "--dataset",
            "synthetic",
            "--model",
            "784-32-5",
            "--no-tui",
        ],
        "model 784-32-5 has 5 outputs, but dataset synthetic has 10 classes",
    );
}

#[test]
fn negative_numbers_reach_the_check_of_their_key() {
    for cmd in ["up", "peer"] {
        for (flag, needle) in [
            (
                "--batch-size",
                "train.batch_size must be at least 1, got -1",
            ),
            ("--lr", "config key `train.lr`: must be a positive number"),
            (
                "--non-iid",
                "config key `train.non_iid_alpha`: must be a positive number",
            ),
        ] {
            let (ok, _, stderr) = run_bounded(&[cmd, flag, "-1"], Duration::from_secs(30));
            assert!(!ok, "{cmd} {flag} -1 succeeded");
            assert!(stderr.contains(needle), "{cmd} {flag} -1: {stderr}");
            assert!(!stderr.contains("unexpected argument"), "{stderr}");
        }
    }
}

#[test]
fn a_data_dir_or_output_dir_that_is_a_file_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = init_certs(dir.path(), &["solo"]);
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let file_s = file.to_str().unwrap();
    fails_saying_once(
        &[
            "peer",
            "--name",
            "solo",
            "--certs",
            certs.to_str().unwrap(),
            "--data-dir",
            file_s,
            "--dataset",
            "synthetic",
        ],
        &format!("data dir {file_s} exists and is not a directory"),
    );
    fails_saying_once(
        &["up", "--dataset", "synthetic", "--no-tui", "--out", file_s],
        &format!("output dir {file_s} exists and is not a directory"),
    );
    let lab = dir.path().join("lab.toml");
    std::fs::write(
        &lab,
        "name = \"x\"\ntarget_accuracy = 0.5\nmodes = [\"centralized\"]\n",
    )
    .unwrap();
    fails_saying_once(
        &["lab", lab.to_str().unwrap(), "--out", file_s],
        &format!("output dir {file_s} exists and is not a directory"),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

/// The error and its `caused by:` lines, without those prefixes.
fn error_report(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("error: ")
                .or_else(|| l.trim_start().strip_prefix("caused by: "))
        })
        .map(str::to_string)
        .collect()
}

/// Item 9 of issue 11: a missing checkpoint printed the same sentence four times down its
/// `caused by` chain. Every common failure must say each thing once and name what is wrong.
#[test]
fn an_error_says_each_sentence_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = init_certs(dir.path(), &["solo"]);
    let certs_s = certs.to_str().unwrap();
    let data_s = dir.path().join("data");
    let data_s = data_s.to_str().unwrap();
    let bad_key = dir.path().join("bad.toml");
    std::fs::write(&bad_key, "[gossip]\nfanuot = 3\n").unwrap();
    let missing_config = dir.path().join("missing.toml");
    let peer = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["peer", "--certs", certs_s, "--data-dir", data_s];
        args.extend_from_slice(extra);
        if !extra.contains(&"--dataset") {
            args.extend_from_slice(&["--dataset", "synthetic"]);
        }
        args.into_iter().map(str::to_string).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            peer(&["--name", "auto", "--shard", "1/1"]),
            "no cluster engine found",
        ),
        (peer(&["--name", "stranger"]), "stranger.pem"),
        (
            peer(&["--name", "solo", "--dataset", "idx:/nonexistent/rumor"]),
            "/nonexistent/rumor",
        ),
        (peer(&["--name", "solo", "--shard", "3/2"]), "train.shard"),
        (
            vec![
                "peer".into(),
                "--config".into(),
                bad_key.display().to_string(),
            ],
            "fanuot",
        ),
        (
            vec![
                "peer".into(),
                "--config".into(),
                missing_config.display().to_string(),
            ],
            "missing.toml",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = run_bounded(&args, Duration::from_secs(120));
        assert!(!ok, "{args:?} succeeded:\n{stderr}");
        let report = error_report(&stderr);
        assert!(!report.is_empty(), "{args:?}: no error line in:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not named in:\n{stderr}"
        );
        for (i, a) in report.iter().enumerate() {
            for b in &report[i + 1..] {
                assert!(
                    !a.contains(b.as_str()) && !b.contains(a.as_str()),
                    "{args:?}: {b:?} repeats {a:?} in:\n{stderr}"
                );
            }
        }
    }
}
