//! Observability of running peers: `/metrics` parsed as Prometheus text while messages flow,
//! `rumor status` and `rumor top` against a live 3-peer cluster, and the operator's pause.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumor::metrics::http::{fetch_status, get, MetricsServer};
use rumor::node::PeerHandle;
use rumor::run::peer_options;

use crate::common::{dataset, identities, test_config, within};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples of a scrape, keyed by `name{label=value,...}` with labels sorted, `peer` left out.
pub(crate) fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "peer")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

pub(crate) fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// Polls `check` every 50 ms until it returns Some, or panics after `limit`.
async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move_as_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-0", "peer-1"];
    let ids = identities(&dir.path().join("certs"), &names);
    let data = dataset();
    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    let mut server = None;
    let mut before = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = 2;
        c.train.shard = format!("{}/2", i + 1).parse().unwrap();
        c.train.epochs = 1;
        c.train.eval_every = 20;
        let opts = peer_options(&c, ids[i].clone(), &data, 2).unwrap();
        let mut h = PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
            let s = MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), h.snapshot.clone())
                .await
                .unwrap();
            // Before the second peer exists no delta can have arrived.
            before = scrape(
                &get(&s.local_addr().to_string(), "/metrics", HTTP_TIMEOUT)
                    .await
                    .unwrap(),
            );
            server = Some(s);
        }
        handles.push(h);
    }
    let addr = server.as_ref().unwrap().local_addr().to_string();
    let delta_key = "rumor_messages_received_total{kind=delta}";
    assert_eq!(value(&before, delta_key), 0.0);
    let after = poll_until(
        Duration::from_secs(120),
        "peer-0 counts received deltas",
        || {
            let addr = addr.clone();
            async move {
                let s = scrape(&get(&addr, "/metrics", HTTP_TIMEOUT).await.ok()?);
                (value(&s, delta_key) > 0.0
                    && value(&s, "rumor_deltas_applied_total{}") > 0.0
                    && value(&s, "rumor_train_steps_total{}") > 0.0
                    && s.contains_key("rumor_test_accuracy_ratio{}"))
                .then_some(s)
            }
        },
    )
    .await;
    for key in [
        "rumor_bytes_received_total{}",
        "rumor_bytes_sent_total{}",
        "rumor_deltas_published_total{}",
    ] {
        assert!(
            value(&after, key) > value(&before, key),
            "{key} moved: {} -> {}",
            value(&before, key),
            value(&after, key)
        );
    }
    assert_eq!(value(&after, "rumor_members{status=alive}"), 2.0);
    assert!(value(&after, "rumor_step_duration_seconds_count{}") > 0.0);
    let acc = value(&after, "rumor_test_accuracy_ratio{}");
    assert!((0.0..=1.0).contains(&acc), "accuracy ratio {acc}");
    // The dashboard's event ring heard the same story.
    let events: Vec<String> = handles[0]
        .events
        .recent()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("delta from peer-1 v")),
        "{events:?}"
    );
    // The observer samples the lifecycle every 50 ms, so a seed whose second peer joins
    // within its first 50 ms goes from "starting" straight to "training" in the ring.
    assert!(
        events
            .iter()
            .any(|e| e == "joining → training" || e == "starting → training"),
        "{events:?}"
    );
    for h in handles {
        h.request_stop();
        within(Duration::from_secs(120), "peer stops", h.wait())
            .await
            .expect("peer succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_top_show_every_peer_of_a_three_peer_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-0", "peer-1", "peer-2"];
    let ids = identities(&dir.path().join("certs"), &names);
    let data = dataset();
    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut servers = Vec::new();
    let mut keep = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for (i, name) in names.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = 3;
        c.train.shard = format!("{}/3", i + 1).parse().unwrap();
        // A budget far longer than the test: the peers are stopped once checked.
        c.train.epochs = 1000;
        let opts = peer_options(&c, ids[i].clone(), &data, 3).unwrap();
        let mut h = PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
        }
        let s = MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), h.snapshot.clone())
            .await
            .unwrap();
        servers.push(s.local_addr().to_string());
        keep.push(s);
        handles.push(h);
    }
    // Wait until every peer trains and sees the other two.
    for addr in &servers {
        poll_until(
            Duration::from_secs(60),
            "every peer trains with 3 members",
            || async {
                let s = fetch_status(addr, HTTP_TIMEOUT).await.ok()?;
                (s.peer.lifecycle.as_str() == "training"
                    && s.members.len() == 3
                    && s.members
                        .iter()
                        .all(|m| m.status == "alive" && m.lifecycle == "training"))
                .then_some(())
            },
        )
        .await;
    }

    let addr0 = servers[0].clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["status", &addr0])
            .output()
            .expect("run rumor status")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rumor status failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("peer-0"), "{text}");
    assert!(text.lines().next().unwrap().contains("training"), "{text}");
    for name in names {
        let line = text
            .lines()
            .find(|l| {
                // Member lines: name, id, address, status, lifecycle, ...
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&name) && f.get(2).is_some_and(|a| a.starts_with("127.0.0.1:"))
            })
            .unwrap_or_else(|| panic!("no member line for {name} in {text}"));
        assert!(line.contains("alive"), "{line}");
        assert!(line.contains("training"), "{line}");
    }

    // `top` with stdout not a terminal prints the cluster table once and exits.
    let addrs = servers.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg("top")
            .args(&addrs)
            .output()
            .expect("run rumor top")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("training")),
            "{name} training in {text}"
        );
    }

    // A paused peer says so, and its steps stop.
    handles[2].set_paused(true);
    let addr2 = servers[2].clone();
    let frozen = poll_until(Duration::from_secs(30), "peer-2 reports paused", || async {
        let s = fetch_status(&addr2, HTTP_TIMEOUT).await.ok()?;
        s.peer.paused.then_some(s.peer.step)
    })
    .await;
    // A step in flight may finish after the flag is set; then it stays put.
    let settled = poll_until(Duration::from_secs(30), "peer-2's steps settle", || async {
        let a = fetch_status(&addr2, HTTP_TIMEOUT).await.ok()?.peer.step;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = fetch_status(&addr2, HTTP_TIMEOUT).await.ok()?.peer.step;
        (a == b).then_some(b)
    })
    .await;
    assert!(
        settled <= frozen + 10,
        "paused at {frozen}, still at {settled}"
    );
    handles[2].set_paused(false);

    for h in handles {
        h.request_stop();
        within(Duration::from_secs(120), "peer stops", h.wait())
            .await
            .expect("peer succeeds");
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rumor_peer_serves_its_status_on_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    identities(&certs, &["peer-a"]);
    // A free port: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let peer = KillOnDrop(
        std::process::Command::new(BIN)
            .args([
                "peer",
                "--name",
                "peer-a",
                "--listen",
                "127.0.0.1:0",
                "--certs",
            ])
            .arg(&certs)
            .arg("--data-dir")
            .arg(dir.path().join("peer-a"))
            .args([
                "--dataset",
                "synthetic",
                "--epochs",
                "1000",
                "--min-peers",
                "1",
            ])
            .args(["--metrics-addr", &metrics])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn peer"),
    );
    let end = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let out = std::process::Command::new(BIN)
            .args(["status", &metrics, "--timeout", "5s"])
            .output()
            .expect("run rumor status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.lines().next().is_some_and(|l| l.contains("training")) {
            break text;
        }
        assert!(
            Instant::now() < end,
            "peer-a never reported training: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with("peer-a"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "no colours when stdout is not a terminal"
    );

    // Nothing listening: a clear error, not a hang.
    drop(peer);
    let out = std::process::Command::new(BIN)
        .args(["status", &metrics, "--timeout", "5s"])
        .output()
        .expect("run rumor status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&metrics), "{err}");
}
