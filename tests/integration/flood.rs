//! Hostile input against peers running as child processes of the binary (so each one's memory
//! can be read from `/proc/PID/status`): a member-certified flooder sends 100,000 cheap
//! messages as fast as it can to one peer of three; every chaos kind is sent once to a running
//! peer and seen rejected by its own reason (chaos introduces itself first with its signed
//! record, so its signed deltas are not refused as `unknown_origin` before the check they aim
//! at); several kinds sent one after another with default options are each counted by their
//! reason (not as duplicates of the previous run), and what chaos reports the target counted
//! equals the target's counters; oversized frames are seen refused by size by the sender and by
//! the target. The attacks on signatures and identities are in [`crate::forgery`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumor::chaos::target::TargetCounts;
use rumor::chaos::{run_chaos, ChaosKind, ChaosOptions, ChaosReport};
use rumor::metrics::http::get;

use crate::common::heavy;
use crate::observability::{scrape, value};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Parameters of the test model 784-64-10.
const PARAMS: usize = 784 * 64 + 64 + 64 * 10 + 10;
/// The peers' message size limit in these tests (one delta of the test model is ~203 KB).
const MAX_MESSAGE: usize = 1024 * 1024;
/// Messages of the flood.
const FLOOD: u64 = 100_000;
/// The flooded peer's resident memory may grow by at most this much over its level before the
/// flood, in bytes. Measured (three runs): RSS ~128 MiB before, peak ~136-137 MiB during, the
/// same +8-9 MiB as the two peers that were not flooded, so training's own growth (delta log,
/// buffers). The flood's messages are small, a connection holds at most 256 in flight, the
/// incoming queue 1024, and ~95% are refused by the rate limit before being queued. 64 MiB
/// leaves room for allocator noise and slower machines.
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

/// A child process killed when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) child: KillOnDrop,
    pub(crate) metrics: String,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary as a peer of the test cluster in `dir`, training on `shard` of the
/// synthetic data until the test ends training with [`end_training`] or kills it (dropping the
/// returned [`Peer`]): a budget no machine spends before the test is done acting, however slow
/// the test's own phases (settling, flooding) are on a loaded machine.
pub(crate) fn spawn_peer(
    dir: &Path,
    name: &str,
    shard: &str,
    seed: Option<&str>,
    min_peers: usize,
) -> Peer {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["peer", "--config"])
        .arg(dir.join("flood.toml"))
        .args(["--name", name, "--listen", "127.0.0.1:0", "--certs"])
        .arg(dir.join("certs"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--shard", shard, "--dataset", "synthetic"])
        .args(["--epochs", &u32::MAX.to_string()])
        .args(["--min-peers", &min_peers.to_string()])
        .args(["--metrics-addr", &metrics])
        .arg("--ready-file")
        .arg(dir.join(format!("{name}.addr")))
        .arg("--summary-json")
        .arg(dir.join(format!("{name}.json")))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("{name}.log")))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
    Peer {
        name: name.to_string(),
        child: KillOnDrop(cmd.spawn().expect("spawn peer")),
        metrics,
    }
}

/// Ends `peer`'s training now with SIGUSR1: it publishes its last delta and drains, as at the
/// end of a budget.
pub(crate) fn end_training(peer: &Peer) {
    let status = Command::new("kill")
        .args(["-USR1", &peer.child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -USR1 {} failed", peer.name);
}

pub(crate) fn setup(dir: &Path, names: &[&str]) {
    let certs = dir.join("certs");
    rumor::certs::init_ca(&certs, false).unwrap();
    for n in names {
        rumor::certs::issue(&certs, n, 2).unwrap();
    }
    std::fs::write(
        dir.join("flood.toml"),
        format!(
            "[peer]\njoin_timeout = \"60s\"\ndrain_timeout = \"120s\"\n\
             [train]\neval_every = 0\nmodel = \"784-64-10\"\npublish_every = 20\n\
             [gossip]\nmax_message_bytes = {MAX_MESSAGE}\n"
        ),
    )
    .unwrap();
}

/// Polls `check` every 50 ms until it returns Some, or panics after `limit`.
pub(crate) async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn read_addr(path: PathBuf) -> String {
    poll_until(Duration::from_secs(30), "a peer's address", || {
        let path = path.clone();
        async move {
            let addr = std::fs::read_to_string(path).ok()?.trim().to_string();
            (!addr.is_empty()).then_some(addr)
        }
    })
    .await
}

pub(crate) async fn metrics(peer: &Peer) -> Option<HashMap<String, f64>> {
    get(&peer.metrics, "/metrics", HTTP_TIMEOUT)
        .await
        .ok()
        .map(|t| scrape(&t))
}

pub(crate) async fn steps(peer: &Peer) -> f64 {
    metrics(peer)
        .await
        .map_or(0.0, |m| value(&m, "rumor_train_steps_total{}"))
}

/// (VmRSS, VmHWM) of a process, in bytes.
pub(crate) fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Chaos options for the test model, with fresh ids (the default).
pub(crate) fn chaos_options(target: SocketAddr, kind: ChaosKind, count: u64) -> ChaosOptions {
    ChaosOptions {
        param_count: PARAMS,
        max_message_bytes: MAX_MESSAGE,
        ..ChaosOptions::new(target, kind, count)
    }
}

/// Waits for a peer to exit with success; prints its last scraped rejection counters.
pub(crate) async fn wait_exit(peer: &mut Peer, limit: Duration, dir: &Path) {
    let end = Instant::now() + limit;
    let mut last = HashMap::new();
    loop {
        if let Some(m) = metrics(peer).await {
            last = m;
        }
        let rejected: Vec<(String, f64)> = last
            .iter()
            .filter(|(k, _)| k.starts_with("rumor_deltas_rejected_total") || k.contains("inexact"))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if let Some(status) = peer.child.0.try_wait().expect("wait") {
            eprintln!("{} exits; last counters: {rejected:?}", peer.name);
            assert!(
                status.success(),
                "{} exited with {status}; log tail: {:#?}",
                peer.name,
                log_tail(peer, dir)
            );
            return;
        }
        assert!(
            Instant::now() < end,
            "{} did not exit within {limit:?}",
            peer.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last 15 lines of `peer`'s log, newest first.
fn log_tail(peer: &Peer, dir: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join(format!("{}.log", peer.name))).unwrap_or_default();
    log.lines().rev().take(15).map(str::to_string).collect()
}

/// Whether `peer`'s process still runs (from `/proc`, without reaping it), and its log tail:
/// for a failure that finds a peer unreachable.
pub(crate) fn exit_report(peer: &Peer, dir: &Path) -> String {
    let pid = peer.child.0.id();
    let state = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("State:"))
                .map(|l| l.trim_start_matches("State:").trim().to_string())
        })
        .unwrap_or_else(|| "gone".into());
    format!(
        "process {pid} state: {state}; log tail: {:#?}",
        log_tail(peer, dir)
    )
}

const FLOOD_COUNTERS: [&str; 4] = [
    "rumor_decode_errors_total{}",
    "rumor_duplicates_dropped_total{}",
    "rumor_messages_rate_limited_total{}",
    "rumor_oversize_messages_total{}",
];

#[test]
fn flood_of_100k_messages_is_absorbed_and_the_cluster_stays_consistent() {
    heavy(flood_of_100k_messages());
}

async fn flood_of_100k_messages() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-1", "peer-2", "peer-3"];
    setup(dir.path(), &["peer-1", "peer-2", "peer-3", "flooder"]);
    let mut peers = vec![spawn_peer(dir.path(), names[0], "1/3", None, 3)];
    let seed = read_addr(dir.path().join("peer-1.addr")).await;
    for (i, n) in names[1..].iter().enumerate() {
        peers.push(spawn_peer(
            dir.path(),
            n,
            &format!("{}/3", i + 2),
            Some(&seed),
            3,
        ));
    }
    for p in &peers {
        poll_until(Duration::from_secs(60), "every peer to train", || async {
            (steps(p).await >= 50.0).then_some(())
        })
        .await;
    }

    let target = &peers[0];
    let pids: Vec<u32> = peers.iter().map(|p| p.child.0.id()).collect();
    let before_mem: Vec<(u64, u64)> = pids.iter().map(|&p| memory(p).unwrap()).collect();
    let before = metrics(target).await.unwrap();
    let mut steps_before = Vec::new();
    for p in &peers {
        steps_before.push(steps(p).await);
    }

    // Sample memory and steps while the flood runs.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(vec![0u64; pids.len()]));
    let sampler = {
        let (done, peak, pids) = (done.clone(), peak.clone(), pids.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, &pid) in pids.iter().enumerate() {
                    if let Some((rss, _)) = memory(pid) {
                        let mut peak = peak.lock().unwrap();
                        peak[i] = peak[i].max(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let identity = rumor::certs::load_identity(&dir.path().join("certs"), "flooder").unwrap();
    let target_addr: SocketAddr = seed.parse().unwrap();
    let flood = {
        let options = chaos_options(target_addr, ChaosKind::Flood, FLOOD);
        tokio::spawn(async move { run_chaos(&identity, &options).await })
    };
    // Steps of every peer, read while the flood is still running.
    let mut steps_during = vec![0.0; peers.len()];
    while !flood.is_finished() {
        for (i, p) in peers.iter().enumerate() {
            steps_during[i] = f64::max(steps_during[i], steps(p).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report: ChaosReport = flood.await.unwrap().unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.lock().unwrap().clone();
    let after_mem: Vec<(u64, u64)> = pids.iter().map(|&p| memory(p).unwrap_or((0, 0))).collect();
    eprintln!("{report}");

    // Counters: the flood is visible, about message for message.
    let after = poll_until(
        Duration::from_secs(30),
        "the target to account for the flood",
        || async {
            let m = metrics(target).await?;
            let seen: f64 = FLOOD_COUNTERS
                .iter()
                .map(|k| value(&m, k) - value(&before, k))
                .sum();
            (seen >= 0.95 * report.sent as f64).then_some(m)
        },
    )
    .await;
    for k in FLOOD_COUNTERS {
        eprintln!(
            "target {k}: {} -> {} (+{})",
            value(&before, k),
            value(&after, k),
            value(&after, k) - value(&before, k)
        );
    }
    for (i, p) in peers.iter().enumerate() {
        eprintln!(
            "{}: RSS before {:.1} MiB, peak during {:.1} MiB, after {:.1} MiB; HWM before {:.1} \
             MiB, after {:.1} MiB; steps {} -> {} during the flood",
            p.name,
            mib(before_mem[i].0),
            mib(peak[i]),
            mib(after_mem[i].0),
            mib(before_mem[i].1),
            mib(after_mem[i].1),
            steps_before[i],
            steps_during[i]
        );
    }
    assert_eq!(report.sent, FLOOD);
    for (i, p) in peers.iter().enumerate() {
        assert!(
            steps_during[i] > steps_before[i],
            "{} kept training during the flood",
            p.name
        );
    }
    assert!(
        peak[0] <= before_mem[0].0 + RSS_GROWTH_BOUND,
        "target RSS {:.1} MiB over {:.1} MiB + {:.0} MiB",
        mib(peak[0]),
        mib(before_mem[0].0),
        mib(RSS_GROWTH_BOUND)
    );

    // The cluster drains consistent.
    for p in &peers {
        end_training(p);
    }
    for p in &mut peers {
        wait_exit(p, Duration::from_secs(180), dir.path()).await;
    }
    let distance = crate::common::compare_checkpoints(dir.path(), &names);
    for n in names {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{n}.json"))).unwrap_or_default(),
        )
        .unwrap_or_default();
        let p = &s["peers"][0];
        eprintln!(
            "{n}: drained {}, version {}, applied {}",
            p["drained"], p["version"], p["applied"]
        );
    }
    eprintln!("consensus distance after the flood: {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
}

#[test]
fn each_chaos_kind_is_rejected_by_its_reason_and_the_peer_survives() {
    heavy(each_chaos_kind());
}

async fn each_chaos_kind() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &["peer-1", "chaos"]);
    let mut peer = spawn_peer(dir.path(), "peer-1", "1/1", None, 1);
    let addr: SocketAddr = read_addr(dir.path().join("peer-1.addr"))
        .await
        .parse()
        .unwrap();
    // Enough published deltas (one per 20 steps) for the norm check to have a reference.
    poll_until(Duration::from_secs(60), "the peer to train", || async {
        (steps(&peer).await >= 400.0).then_some(())
    })
    .await;
    let identity = rumor::certs::load_identity(&dir.path().join("certs"), "chaos").unwrap();
    let cases: [(ChaosKind, u64, &str); 9] = [
        (ChaosKind::Junk, 1, "rumor_decode_errors_total{}"),
        (ChaosKind::Truncated, 1, "rumor_decode_errors_total{}"),
        (ChaosKind::Oversized, 1, "rumor_oversize_messages_total{}"),
        (ChaosKind::Duplicate, 2, "rumor_duplicates_dropped_total{}"),
        (ChaosKind::Replay, 2, "rumor_deltas_already_applied_total{}"),
        (
            ChaosKind::Nan,
            1,
            "rumor_deltas_rejected_total{reason=non_finite}",
        ),
        (
            ChaosKind::Shape,
            1,
            "rumor_deltas_rejected_total{reason=shape}",
        ),
        (
            ChaosKind::Norm,
            1,
            "rumor_deltas_rejected_total{reason=norm}",
        ),
        (
            ChaosKind::Version,
            1,
            "rumor_deltas_rejected_total{reason=version_jump}",
        ),
    ];
    for (kind, count, counter) in cases {
        let before = metrics(&peer).await.unwrap();
        let report = run_chaos(&identity, &chaos_options(addr, kind, count))
            .await
            .unwrap();
        let after = poll_until(
            Duration::from_secs(20),
            &format!("{counter} to count {kind:?}"),
            || async {
                let m = metrics(&peer).await?;
                (value(&m, counter) >= value(&before, counter) + 1.0).then_some(m)
            },
        )
        .await;
        eprintln!(
            "chaos {}: sent {}, {} stopped by the target's transport; {counter} {} -> {}",
            kind.as_str(),
            report.sent,
            report.stopped_rate_limited + report.stopped_too_large,
            value(&before, counter),
            value(&after, counter)
        );
        for reason in ["unknown_origin", "signature"] {
            let key = format!("rumor_deltas_rejected_total{{reason={reason}}}");
            assert_eq!(
                value(&after, &key),
                value(&before, &key),
                "{kind:?} is not refused as {reason}: chaos introduced itself and signed"
            );
        }
        assert!(
            peer.child.0.try_wait().unwrap().is_none(),
            "the peer survives {kind:?}"
        );
    }
    // Still training, and nothing applied changed its model: deltas sent as duplicate and
    // replay are zeros.
    let s = steps(&peer).await;
    poll_until(Duration::from_secs(30), "training to go on", || async {
        (steps(&peer).await > s).then_some(())
    })
    .await;
}

/// The counters of a chaos report's "target counted", as (key in [`scrape`]'s format, value).
fn target_figures(t: &TargetCounts) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = [
        ("rumor_decode_errors_total{}", t.decode_errors),
        ("rumor_oversize_messages_total{}", t.oversize_messages),
        (
            "rumor_messages_rate_limited_total{}",
            t.messages_rate_limited,
        ),
        ("rumor_duplicates_dropped_total{}", t.duplicates_dropped),
        ("rumor_deltas_applied_total{}", t.deltas_applied),
        (
            "rumor_deltas_already_applied_total{}",
            t.deltas_already_applied,
        ),
        ("rumor_senders_mismatched_total{}", t.senders_mismatched),
        ("rumor_snapshots_sent_total{}", t.snapshots_sent),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (reason, n) in &t.deltas_rejected {
        out.push((
            format!("rumor_deltas_rejected_total{{reason={reason}}}"),
            *n,
        ));
    }
    for (reason, n) in &t.records_refused {
        out.push((
            format!("rumor_records_refused_total{{reason={reason}}}"),
            *n,
        ));
    }
    for (kind, n) in &t.messages_received {
        out.push((format!("rumor_messages_received_total{{kind={kind}}}"), *n));
    }
    out
}

/// Starts one peer that trains alone and waits until its metrics answer; returns it, its
/// listen address and a member's identity for chaos.
async fn lone_peer(dir: &Path) -> (Peer, SocketAddr, rumor::certs::PeerIdentity) {
    setup(dir, &["peer-1", "chaos"]);
    let peer = spawn_peer(dir, "peer-1", "1/1", None, 1);
    let addr: SocketAddr = read_addr(dir.join("peer-1.addr")).await.parse().unwrap();
    poll_until(Duration::from_secs(60), "the peer's metrics", || async {
        metrics(&peer).await.map(|_| ())
    })
    .await;
    let identity = rumor::certs::load_identity(&dir.join("certs"), "chaos").unwrap();
    (peer, addr, identity)
}

/// Runs chaos with the peer's metrics address; returns its report and the peer's counters
/// before and after (after: once `counter` has grown by `expected`).
pub(crate) async fn chaos_against(
    peer: &Peer,
    identity: &rumor::certs::PeerIdentity,
    options: ChaosOptions,
    counter: &str,
    expected: f64,
) -> (ChaosReport, HashMap<String, f64>, HashMap<String, f64>) {
    let before = metrics(peer).await.unwrap();
    let options = ChaosOptions {
        metrics: Some(peer.metrics.clone()),
        ..options
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run_chaos(identity, &options))
        .await
        .expect("chaos within a minute")
        .unwrap();
    eprintln!("{report}");
    let after = poll_until(
        Duration::from_secs(20),
        &format!("{counter} to grow by {expected}"),
        || async {
            let m = metrics(peer).await?;
            (value(&m, counter) >= value(&before, counter) + expected).then_some(m)
        },
    )
    .await;
    (report, before, after)
}

/// Asserts that every figure chaos reports as counted by the target is the increase of that
/// counter between the test's own scrapes around the run.
pub(crate) fn assert_figures_match(
    report: &ChaosReport,
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
) {
    let t = report
        .target_counted
        .as_ref()
        .unwrap_or_else(|| panic!("no target counts: {:?}", report.target_error));
    assert!(t.settled, "the target's counters settled: {t:?}");
    for (key, figure) in target_figures(t) {
        assert_eq!(
            figure as f64,
            value(after, &key) - value(before, &key),
            "chaos {} reports {key} +{figure}",
            report.kind
        );
    }
}

#[test]
fn chaos_kinds_in_sequence_are_each_rejected_by_reason_and_reported_as_the_target_counted() {
    heavy(chaos_kinds_in_sequence());
}

async fn chaos_kinds_in_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, addr, identity) = lone_peer(dir.path()).await;
    // Each kind after another, twice over, with default options: with ids reused across runs,
    // every kind after the first would be dropped as duplicates.
    let cases: [(ChaosKind, &str); 4] = [
        (ChaosKind::Replay, "rumor_deltas_already_applied_total{}"),
        (
            ChaosKind::Nan,
            "rumor_deltas_rejected_total{reason=non_finite}",
        ),
        (
            ChaosKind::Shape,
            "rumor_deltas_rejected_total{reason=shape}",
        ),
        (
            ChaosKind::Version,
            "rumor_deltas_rejected_total{reason=version_jump}",
        ),
    ];
    const COUNT: u64 = 3;
    for round in 0..2 {
        for (kind, counter) in cases {
            // A replay's first delta is applied, the others are already applied.
            let expected = if kind == ChaosKind::Replay {
                COUNT - 1
            } else {
                COUNT
            };
            let (report, before, after) = chaos_against(
                &peer,
                &identity,
                chaos_options(addr, kind, COUNT),
                counter,
                expected as f64,
            )
            .await;
            let what = format!("round {round}, {kind:?}");
            assert_eq!(report.sent, COUNT, "{what}");
            assert_eq!(report.failed, 0, "{what}");
            assert_eq!(
                value(&after, counter) - value(&before, counter),
                expected as f64,
                "{what}: {counter}"
            );
            let dups = "rumor_duplicates_dropped_total{}";
            assert_eq!(
                value(&after, dups),
                value(&before, dups),
                "{what}: duplicates"
            );
            let t = report.target_counted.as_ref().unwrap();
            assert_eq!(t.duplicates_dropped, 0, "{what}");
            match kind {
                ChaosKind::Replay => {
                    assert_eq!(t.deltas_already_applied, expected, "{what}");
                    assert_eq!(t.deltas_applied, 1, "{what}");
                }
                ChaosKind::Nan => assert_eq!(t.rejected("non_finite"), expected, "{what}"),
                ChaosKind::Shape => assert_eq!(t.rejected("shape"), expected, "{what}"),
                _ => assert_eq!(t.rejected("version_jump"), expected, "{what}"),
            }
            // The introduction is a membership message the target handled.
            assert_eq!(
                t.messages_received.get("membership"),
                Some(&1),
                "{what}: the introduction"
            );
            assert!(
                report
                    .introduction
                    .as_ref()
                    .is_some_and(|i| i.seen_by_target),
                "{what}: {report:?}"
            );
            assert_eq!(
                t.accounted(),
                COUNT + 1,
                "{what}: every message and the introduction accounted for"
            );
            assert_figures_match(&report, &before, &after);
        }
    }
    assert!(
        peer.child.0.try_wait().unwrap().is_none(),
        "the peer survives"
    );
}

#[test]
fn oversized_frames_are_reported_refused_by_size_as_the_target_counted() {
    heavy(oversized_frames_are_refused_by_size());
}

async fn oversized_frames_are_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, addr, identity) = lone_peer(dir.path()).await;
    const COUNT: u64 = 3;
    let counter = "rumor_oversize_messages_total{}";
    let (report, before, after) = chaos_against(
        &peer,
        &identity,
        chaos_options(addr, ChaosKind::Oversized, COUNT),
        counter,
        COUNT as f64,
    )
    .await;
    assert_eq!(report.sent, COUNT);
    assert_eq!(report.stopped_too_large, COUNT, "{report:?}");
    assert_eq!(report.delivered, 0);
    assert_eq!(
        value(&after, counter) - value(&before, counter),
        COUNT as f64
    );
    let t = report.target_counted.as_ref().unwrap();
    assert_eq!(t.oversize_messages, COUNT);
    assert_figures_match(&report, &before, &after);
    let text = report.to_string();
    let line = text
        .lines()
        .find(|l| l.contains("too large"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "{COUNT}               {COUNT}  rumor_oversize_messages_total"
        )),
        "{text}"
    );
    assert!(
        peer.child.0.try_wait().unwrap().is_none(),
        "the peer survives"
    );
}
