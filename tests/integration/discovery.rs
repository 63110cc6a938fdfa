//! `--seed dns:NAME:PORT` for real: peers run in mount namespaces of their own whose
//! `/etc/hosts` maps one name to four loopback addresses (127.0.0.2-5, one port), as a headless
//! Service's name maps to its pods. Two peers start, find each other through the name while one
//! address never answers, and wait for a third (`--min-peers 3`); a third peer that appears
//! later at another of the name's addresses is found by the resolution they repeat, all three
//! train, and they end consistent. Needs root and `unshare` (util-linux) for the private
//! `/etc/hosts`; skipped with the reason printed otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::flood::{end_training, poll_until, steps, wait_exit, KillOnDrop, Peer};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const NAME: &str = "seeds.rumor.test";

fn skip_reason() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not root (a private /etc/hosts needs a mount namespace)".into());
    }
    let unshare = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshare {
        return Some("`unshare --mount` does not work here (util-linux)".into());
    }
    None
}

/// A peer listening at `ip:port` whose only seed is `dns:NAME:port`, in a mount namespace
/// whose /etc/hosts is `hosts`.
fn spawn_dns_peer(dir: &Path, name: &str, shard: &str, ip: &str, port: u16) -> Peer {
    let metrics = format!("127.0.0.1:{}", crate::flood::free_port());
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("peer log");
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(dir.join("hosts"))
        .arg(BIN)
        .args(["peer", "--config"])
        .arg(dir.join("flood.toml"))
        .args(["--name", name, "--certs"])
        .arg(dir.join("certs"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--listen", &format!("{ip}:{port}")])
        .args(["--seed", &format!("dns:{NAME}:{port}")])
        .args(["--shard", shard, "--dataset", "synthetic"])
        .args(["--epochs", &u32::MAX.to_string(), "--min-peers", "3"])
        .args(["--metrics-addr", &metrics])
        .arg("--summary-json")
        .arg(dir.join(format!("{name}.json")))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn peer");
    Peer {
        name: name.to_string(),
        child: KillOnDrop(child),
        metrics,
    }
}

async fn members(peer: &Peer) -> f64 {
    crate::flood::metrics(peer).await.map_or(0.0, |m| {
        crate::observability::value(&m, "rumor_members{status=alive}")
    })
}

#[test]
fn dns_seeds_find_peers_that_start_later_past_a_dead_address() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED dns seeds test: {reason}");
        return;
    }
    crate::common::heavy(dns_seeds());
}

async fn dns_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-1", "peer-2", "peer-3"];
    crate::flood::setup(dir.path(), &names);
    // 127.0.0.5 is one of the name's addresses where no peer ever runs.
    std::fs::write(
        dir.path().join("hosts"),
        format!(
            "127.0.0.1 localhost\n127.0.0.2 {NAME}\n127.0.0.3 {NAME}\n127.0.0.4 {NAME}\n\
             127.0.0.5 {NAME}\n"
        ),
    )
    .unwrap();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        probe.local_addr().unwrap().port()
    };
    let mut peers = vec![
        spawn_dns_peer(dir.path(), "peer-1", "1/3", "127.0.0.2", port),
        spawn_dns_peer(dir.path(), "peer-2", "2/3", "127.0.0.3", port),
    ];
    for p in &peers {
        poll_until(
            Duration::from_secs(60),
            "the first two to know each other",
            || async { (members(p).await >= 2.0).then_some(()) },
        )
        .await;
    }
    // Short of --min-peers: nobody trains yet.
    for p in &peers {
        assert_eq!(steps(p).await, 0.0, "{} waits for a third member", p.name);
    }
    peers.push(spawn_dns_peer(
        dir.path(),
        "peer-3",
        "3/3",
        "127.0.0.4",
        port,
    ));
    for p in &peers {
        poll_until(Duration::from_secs(60), "all three to train", || async {
            (members(p).await >= 3.0 && steps(p).await >= 20.0).then_some(())
        })
        .await;
    }
    for p in &peers {
        end_training(p);
    }
    for p in &mut peers {
        wait_exit(p, Duration::from_secs(120), dir.path()).await;
    }
    let distance = crate::common::compare_checkpoints(dir.path(), &names);
    eprintln!("consensus distance of three peers found by DNS: {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
}
