//! `/healthz` and `/readyz` through real HTTP clients (rumor's hyper client and the `rumor
//! health` command a container's health check runs): a peer waiting for `--min-peers 2` is
//! alive but not ready; once the second peer joins both are ready; once training ends and they
//! drain they are still ready, and they exit.

use std::process::Command;
use std::time::Duration;

use rumor::metrics::http::{get, HttpError};

use crate::flood::{end_training, poll_until, read_addr, setup, spawn_peer, wait_exit, Peer};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const T: Duration = Duration::from_secs(10);

/// `rumor health ADDR [--ready]`: (exit status success, stdout + stderr).
fn rumor_health(peer: &Peer, ready: bool) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["health", &peer.metrics]);
    if ready {
        cmd.arg("--ready");
    }
    let out = cmd.output().expect("run rumor health");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn health_and_readiness_follow_the_peer_lifecycle() {
    crate::common::heavy(health_and_readiness());
}

async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &["peer-1", "peer-2"]);
    let mut first = spawn_peer(dir.path(), "peer-1", "1/2", None, 2);
    let seed = read_addr(dir.path().join("peer-1.addr")).await;
    // Alive while it waits for a second member, and not ready.
    poll_until(Duration::from_secs(60), "peer-1's /healthz", || async {
        get(&first.metrics, "/healthz", T).await.ok()
    })
    .await;
    poll_until(Duration::from_secs(60), "peer-1 joining", || async {
        match get(&first.metrics, "/readyz", T).await {
            Err(HttpError::Status { status, body, .. }) => {
                assert_eq!(status.as_u16(), 503, "{body}");
                assert!(body.contains("not ready: "), "{body}");
                body.contains("joining").then_some(())
            }
            other => panic!("/readyz of a peer that waits for --min-peers: {other:?}"),
        }
    })
    .await;
    let (ok, said) = rumor_health(&first, false);
    assert!(ok && said.contains("ok"), "rumor health: {said}");
    let (ok, said) = rumor_health(&first, true);
    assert!(
        !ok && said.contains("503") && said.contains("joining"),
        "rumor health --ready: {said}"
    );

    let mut second = spawn_peer(dir.path(), "peer-2", "2/2", Some(&seed), 2);
    for p in [&first, &second] {
        poll_until(Duration::from_secs(60), "every peer ready", || async {
            get(&p.metrics, "/readyz", T)
                .await
                .ok()
                .filter(|b| b.contains("ready: training"))
        })
        .await;
        let (ok, said) = rumor_health(p, true);
        assert!(ok && said.contains("ready"), "rumor health --ready: {said}");
    }
    for p in [&first, &second] {
        end_training(p);
    }
    for p in [&mut first, &mut second] {
        wait_exit(p, Duration::from_secs(120), dir.path()).await;
    }
    assert!(
        matches!(
            get(&first.metrics, "/healthz", T).await,
            Err(HttpError::Connect { .. })
        ),
        "an exited peer's /healthz is refused"
    );
}

/// `--linger`: once its run is over (drained, saved, summary written) the peer stays up, its
/// `/healthz` answering `finished` and `/readyz` not ready, until SIGTERM ends it with exit 0.
#[test]
fn a_lingering_peer_stays_up_after_its_run_until_sigterm() {
    crate::common::heavy(lingering());
}

async fn lingering() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &["solo"]);
    let metrics = format!("127.0.0.1:{}", crate::flood::free_port());
    let summary = dir.path().join("solo.json");
    let child = Command::new(BIN)
        .args(["peer", "--config"])
        .arg(dir.path().join("flood.toml"))
        .args(["--name", "solo", "--listen", "127.0.0.1:0", "--certs"])
        .arg(dir.path().join("certs"))
        .arg("--data-dir")
        .arg(dir.path().join("solo"))
        .args(["--dataset", "synthetic", "--epochs", "1", "--linger"])
        .args(["--metrics-addr", &metrics])
        .arg("--summary-json")
        .arg(&summary)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn peer");
    let mut peer = Peer {
        name: "solo".into(),
        child: crate::flood::KillOnDrop(child),
        metrics,
    };
    poll_until(Duration::from_secs(120), "the run to end", || async {
        summary.exists().then_some(())
    })
    .await;
    // Past the staleness limit of a loop that stopped: still alive, because finished.
    let after = std::time::Instant::now() + rumor::metrics::health::STALE_AFTER;
    poll_until(
        rumor::metrics::health::STALE_AFTER + Duration::from_secs(30),
        "a /healthz answered past the staleness limit",
        || async {
            if std::time::Instant::now() < after {
                return None;
            }
            Some(get(&peer.metrics, "/healthz", T).await)
        },
    )
    .await
    .map(|body| assert_eq!(body, "finished\n"))
    .expect("/healthz of a lingering peer");
    match get(&peer.metrics, "/readyz", T).await {
        Err(HttpError::Status { body, .. }) => assert!(body.contains("stopped"), "{body}"),
        other => panic!("/readyz of a finished peer: {other:?}"),
    }
    assert!(
        peer.child.0.try_wait().expect("wait").is_none(),
        "the peer lingers"
    );
    let status = Command::new("kill")
        .args(["-TERM", &peer.child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_exit(&mut peer, Duration::from_secs(30), dir.path()).await;
}
