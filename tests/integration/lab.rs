//! The convergence lab: gossip under injected packet loss, the sync baseline, kernel loss in
//! network namespaces through `scripts/netns/cluster.sh`, and a tiny `rumor lab` grid.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumor::config::Mode;
use rumor::data::{self, DatasetSpec};
use rumor::model;
use rumor::net::Congestion;
use rumor::node::PeerHandle;
use rumor::run::{self, peer_options, UpOptions};

use crate::common::{identities, test_config, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_at_20_percent_loss_finish_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-0", "peer-1", "peer-2", "peer-3"];
    let ids = identities(&dir.path().join("certs"), &names);
    let data = rumor::run::RunData::from(data::load(&DatasetSpec::Synthetic, 42).unwrap());
    let n = names.len();
    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for (i, name) in names.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = n;
        c.peer.drain_timeout = Duration::from_secs(120);
        c.train.shard = format!("{}/{n}", i + 1).parse().unwrap();
        c.train.epochs = 1;
        // Every link loses 20% of its datagrams (each sender drops 20% of what it sends).
        c.loss.loss_out = 0.2;
        c.loss.seed = 5;
        c.transport.congestion = Congestion::Bbr;
        let opts = peer_options(&c, ids[i].clone(), &data, n).unwrap();
        let mut h = PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
        }
        handles.push(h);
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(
            within(Duration::from_secs(400), "lossy peer finishes", h.wait())
                .await
                .expect("peer succeeds"),
        );
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    let dropped: u64 = outcomes
        .iter()
        .map(|o| o.transport.datagrams_dropped_out)
        .sum();
    let sent: u64 = outcomes.iter().map(|o| o.transport.datagrams_sent).sum();
    eprintln!("consensus distance {distance:e}; dropped {dropped} of {sent} datagrams sent");
    for o in &outcomes {
        assert!(o.drained, "{} drained consistent", o.name);
        assert_eq!(o.applied, outcomes[0].applied, "same applied set");
    }
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(dropped > 0, "the lossy sockets dropped datagrams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_averages_to_one_model_under_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config();
    c.train.dataset = "synthetic".parse().unwrap();
    c.train.epochs = 1;
    c.up.mode = Mode::Sync;
    c.up.peers = 3;
    c.loss.loss_out = 0.1;
    c.transport.congestion = Congestion::Bbr;
    let options = UpOptions {
        out: Some(dir.path().join("peers")),
        no_tui: true,
        quiet: true,
        ..UpOptions::default()
    };
    let summary = within(Duration::from_secs(300), "sync run", run::up(c, options))
        .await
        .unwrap();
    eprintln!(
        "sync: mean accuracy {} consensus {:e}",
        summary.mean_test_accuracy, summary.consensus_distance
    );
    assert_eq!(summary.mode, "sync");
    assert_eq!(summary.peers.len(), 3);
    assert!(
        summary.peers.iter().all(|p| p.drained),
        "final average complete"
    );
    assert_eq!(summary.consensus_distance, 0.0, "bit-identical averages");
    assert!(summary.mean_test_accuracy > 0.5, "it learned");
    assert!(summary.peers.iter().all(|p| p.bytes_sent > 0));
    assert!(dir.path().join("peers/peer-0/metrics.jsonl").exists());
}

/// Held by every test here that runs `cluster.sh`: [`leftovers`] sees every `rmr*` namespace on
/// the machine, so a cluster still running in a parallel test would read as left behind.
static CLUSTER_SCRIPT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why the namespace test cannot run here, if it cannot.
fn namespace_skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    if !Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("`ip netns` unavailable (install iproute2)".into());
    }
    if !Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("`nft` unavailable (apt-get install -y nftables)".into());
    }
    None
}

fn leftovers() -> (String, String) {
    let out = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    let ns: String = out(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with("rmr"))
        .collect();
    let links: String = out(&["ip", "-o", "link"])
        .lines()
        .filter(|l| l.contains(": rmr"))
        .collect();
    (ns, links)
}

#[test]
fn namespace_cluster_with_kernel_loss_on_one_host_finishes_consistent() {
    if let Some(reason) = namespace_skip_reason() {
        eprintln!("SKIPPED namespace test: {reason}");
        return;
    }
    let _one_cluster = CLUSTER_SCRIPT.blocking_lock();
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns/cluster.sh");
    let status = Command::new("timeout")
        .arg("400")
        .arg(&script)
        .args(["--bin", env!("CARGO_BIN_EXE_rumor")])
        .args(["--hosts", "3", "--loss", "3=20", "--timeout", "300"])
        // Host 2 is frozen once it trains, and enough epochs that it still trains when it is
        // resumed: one epoch of the synthetic set can end, drain included, within a second.
        .args(["--dataset", "synthetic", "--epochs", "10"])
        .args(["--peer-args", "--congestion bbr"])
        .args(["--events", "wait_training 2; freeze 2; sleep 1; resume 2"])
        .arg("--out")
        .arg(out.path())
        .status()
        .unwrap();
    let (ns, links) = leftovers();
    assert!(ns.is_empty(), "namespaces left behind: {ns}");
    assert!(links.is_empty(), "links left behind: {links}");
    assert!(status.success(), "the cluster script failed: {status}");
    let compare: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("compare.json")).unwrap())
            .unwrap();
    let d = compare["consensus_distance"].as_f64().unwrap();
    assert!(d < 1e-4, "consensus distance {d}");
    let nft = std::fs::read_to_string(out.path().join("host-3/nft.txt")).unwrap();
    assert!(nft.contains("numgen random mod 100 < 20"), "{nft}");
    for h in 1..=3 {
        let dir = out.path().join(format!("host-{h}"));
        assert!(dir.join("metrics.jsonl").exists(), "host-{h} metrics");
        assert!(
            rumor::model::load_checkpoint(&dir).is_ok(),
            "host-{h} checkpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_lab_grid_writes_csv_summary_report_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let (out, summary) = run_lab_in(
        dir.path(),
        r#"
name = "tiny"
target_accuracy = 0.6
modes = ["gossip", "sync"]
loss = [0.0, 0.1]
seeds = [1]
peers = [2]

[config.train]
dataset = "synthetic"
epochs = 1
eval_every = 10

[config.peer]
join_timeout = "30s"
drain_timeout = "60s"

[config.gossip]
gossip_interval = "200ms"
anti_entropy_interval = "500ms"
drain_anti_entropy_interval = "100ms"

[config.transport]
congestion = "bbr"
"#,
    )
    .await;
    assert_eq!(summary.cells.len(), 4);
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains("t_seconds") && header.contains("mean_value") && header.contains("metric")
    );
    // The communication columns come last.
    assert!(
        header.ends_with(
            "allreduce_bytes,bytes_to_target_per_peer,allreduce_bytes_per_peer,\
             allreduce_ratio_to_target,allreduce_ratio_total"
        ),
        "{header}"
    );
    assert!(csv.lines().count() > 8, "rows per run and time");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    for c in cells {
        for key in [
            "mode",
            "loss",
            "slowdown",
            "non_iid_alpha",
            "peers",
            "seed",
            "time_to_target_seconds",
            "final_mean",
            "final_worst",
            "final_consensus_distance",
            "bytes_sent_per_peer",
            "parameters",
            "bytes_to_target_per_peer",
            "allreduce_bytes_per_peer",
            "allreduce_ratio_to_target",
            "allreduce_ratio_total",
        ] {
            assert!(c.get(key).is_some(), "cell lacks {key}: {c}");
        }
        assert!(c["bytes_sent_per_peer"].as_f64().unwrap() > 0.0);
        // Two peers: all-reduce sends the model (4 bytes a parameter) once a step.
        let expected =
            4.0 * c["parameters"].as_f64().unwrap() * c["steps_per_peer"].as_f64().unwrap();
        assert_eq!(
            c["allreduce_bytes_per_peer"].as_f64(),
            Some(expected),
            "{c}"
        );
        assert!(c["allreduce_ratio_total"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["final_consensus_distance"].as_f64().unwrap() < 1e-4);
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| gossip |") && report.contains("| sync |"));
    assert!(report.contains("| MiB to target/peer |"), "{report}");
    let plots = &summary.plots;
    if plots.is_empty() {
        eprintln!("NOTE: no TrueType font on this machine; plots were skipped");
    } else {
        for p in plots {
            let meta = std::fs::metadata(out.join(p)).unwrap();
            assert!(meta.len() > 0, "{p} is empty");
        }
        assert!(plots.iter().any(|p| p.ends_with(".png")));
        assert!(plots.iter().any(|p| p.ends_with(".svg")));
        assert!(
            plots.iter().any(|p| p == "quality-vs-bytes.png"),
            "{plots:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_lab_runs_gossip_and_sync_cells_with_kernel_loss() {
    if let Some(reason) = namespace_skip_reason() {
        eprintln!("SKIPPED netns lab test: {reason}");
        return;
    }
    let _one_cluster = CLUSTER_SCRIPT.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netns.toml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns/cluster.sh");
    std::fs::write(
        &file,
        format!(
            r#"
name = "netns-tiny"
target_accuracy = 0.6
runner = "netns"
netns_script = "{}"
netns_timeout = "120s"
modes = ["gossip", "sync"]
loss = [0.2]
seeds = [1]
peers = [3]

[config.train]
dataset = "synthetic"
epochs = 1
eval_every = 10

[config.peer]
join_timeout = "30s"
drain_timeout = "60s"

[config.gossip]
gossip_interval = "200ms"
anti_entropy_interval = "500ms"
drain_anti_entropy_interval = "100ms"

[config.transport]
congestion = "bbr"
initial_rtt = "50ms"
"#,
            script.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let result = within(
        Duration::from_secs(300),
        "netns lab",
        rumor::lab::run_lab(
            &file,
            rumor::lab::LabOptions {
                out: Some(out.clone()),
                bin: Some(env!("CARGO_BIN_EXE_rumor").into()),
            },
        ),
    )
    .await;
    eprintln!("netns lab took {:.1}s", started.elapsed().as_secs_f64());
    let (ns, links) = leftovers();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(ns.is_empty(), "namespaces left behind: {ns}");
    assert!(links.is_empty(), "links left behind: {links}");
    assert!(!tables.contains("rumor_lab"), "nft tables left: {tables}");
    let summary = result.unwrap();
    assert_eq!(summary.cells.len(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        assert_eq!(c["runner"], "netns", "{c}");
        assert_eq!(c["peers"], 3, "{c}");
        assert!(c["bytes_sent_per_peer"].as_f64().unwrap() > 0.0, "{c}");
        // Gossip converges to one model whatever the loss (measured on the hosts'
        // checkpoints). Sync ends on one average only when no barrier timed out, which 20%
        // loss does not guarantee (seen once on a loaded machine: 0.24), so for sync the
        // distance is only reported.
        let d = c["final_consensus_distance"].as_f64().unwrap();
        if c["mode"] == "gossip" {
            assert!(d < 1e-4, "gossip consensus distance {d}");
        } else {
            assert!(d.is_finite(), "{c}");
            eprintln!("sync consensus distance under 20% kernel loss: {d}");
        }
        assert!(c["final_mean"].as_f64().unwrap() > 0.5, "{c}");
    }
    let cell_dir = out.join("runs").join(summary.cells[0].cell.clone());
    // The kernel of every host dropped 20% of its UDP datagrams, not the peers' sockets.
    for h in 1..=3 {
        let nft = std::fs::read_to_string(cell_dir.join(format!("host-{h}/nft.txt"))).unwrap();
        assert!(
            nft.contains("numgen random mod 100 < 20"),
            "host-{h}: {nft}"
        );
    }
    let config = std::fs::read_to_string(cell_dir.join("rumor.toml")).unwrap();
    let config = rumor::config::Config::from_toml(&config).unwrap();
    assert_eq!(
        config.loss.loss_out, 0.0,
        "loss is the kernel's, not the socket's"
    );
    for cell in &summary.cells {
        for h in 1..=3 {
            let path = out.join(format!("runs/{}/host-{h}/summary.json", cell.cell));
            let host: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(
                host["mode"],
                cell.mode.as_str(),
                "host-{h} of {}",
                cell.cell
            );
        }
    }
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("t_seconds") && header.contains("mean_value") && header.contains("metric")
    );
    for mode in ["gossip", "sync"] {
        let rows = lines
            .clone()
            .filter(|l| l.starts_with(&format!("{mode}-")))
            .count();
        assert!(rows >= 3, "{mode}: {rows} rows in runs.csv");
    }
    assert!(csv.contains(",host-1,") && csv.contains(",host-3,"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| netns |"), "{report}");
}

#[tokio::test]
async fn netns_lab_without_its_script_fails_before_any_cell_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\ntarget_accuracy = 0.5\nrunner = \"netns\"\nnetns_script = \"/nonexistent/cluster.sh\"\nmodes = [\"gossip\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = rumor::lab::run_lab(
        &file,
        rumor::lab::LabOptions {
            out: Some(out.clone()),
            bin: Some(env!("CARGO_BIN_EXE_rumor").into()),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gossip-loss0.00") && err.contains("netns"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/cluster.sh"), "{err}");
    assert!(!out.join("runs.csv").exists());
    // A loss rate nftables cannot drop is refused before anything starts, naming the cell.
    std::fs::write(
        &file,
        "name = \"bad\"\ntarget_accuracy = 0.5\nrunner = \"netns\"\nloss = [0.025]\nmodes = [\"gossip\"]\n",
    )
    .unwrap();
    let err = rumor::lab::run_lab(&file, rumor::lab::LabOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run gossip-loss") && err.contains("whole percent"),
        "{err}"
    );
}

/// A run that fails once started (here: 8 shards of the 20,000 synthetic samples are smaller
/// than a batch of 4,000) is listed with its reason, and the other run still happens and is
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_listed_and_the_grid_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (out, summary) = run_lab_in(
        dir.path(),
        r#"
name = "partly"
target_accuracy = 0.5
modes = ["gossip"]
seeds = [1]
peers = [2, 8]

[config.train]
dataset = "synthetic"
epochs = 1
batch_size = 4000
eval_every = 0

[config.peer]
join_timeout = "30s"
drain_timeout = "60s"
"#,
    )
    .await;
    assert_eq!(summary.cells.len(), 1, "the 2-peer run is reported");
    assert_eq!(summary.cells[0].peers, 2);
    assert_eq!(summary.failed.len(), 1);
    assert!(
        summary.failed[0].cell.contains("n8"),
        "{:?}",
        summary.failed
    );
    assert!(
        summary.failed[0].error.contains("train.batch_size"),
        "{:?}",
        summary.failed
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Failed runs"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["failed"].as_array().map(Vec::len), Some(1));
}

/// Writes the lab file `text` into `dir`, runs it in this process with its outputs in
/// `dir/out` (at most 10 minutes), and returns that folder and the summary.
async fn run_lab_in(dir: &Path, text: &str) -> (std::path::PathBuf, rumor::lab::LabSummary) {
    let file = dir.join("lab.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.join("out");
    let summary = within(
        Duration::from_secs(600),
        "the lab",
        rumor::lab::run_lab(
            &file,
            rumor::lab::LabOptions {
                out: Some(out.clone()),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    (out, summary)
}
