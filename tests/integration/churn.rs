//! Churn over real QUIC with child processes of the binary: a peer killed with SIGKILL
//! mid-training is declared dead while the others keep training; restarted with `--resume` it
//! rejoins; a peer that joins after training started; all end consistent.

use std::path::Path;
use std::time::Duration;

use crate::procs::{read_addr, wait_exit, wait_for, Cluster, KillOnDrop};

#[test]
fn a_killed_peer_is_declared_dead_rejoins_with_resume_and_ends_consistent() {
    let _serial = crate::common::heavy_test_lock();
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-1", "peer-2", "peer-3", "peer-4", "peer-5", "late"];
    let real = Path::new(rumor::data::FASHION_MNIST_DIR).exists();
    if !real {
        eprintln!(
            "NOTE: Fashion-MNIST absent; the churn test uses synthetic data with more epochs"
        );
    }
    // Time-boxed: 30 s of training whatever the machine's speed.
    let cluster = Cluster::create(
        dir.path(),
        &names,
        "[peer]\ncheckpoint_interval = \"1s\"\njoin_timeout = \"60s\"\ndrain_timeout = \"180s\"\n\
         [train]\neval_every = 0\nmodel = \"784-64-10\"\npublish_every = 20\n",
        if real { "fashion-mnist" } else { "synthetic" },
        1000,
        "30s",
    );

    let mut peers: Vec<Option<KillOnDrop>> = Vec::new();
    peers.push(Some(cluster.spawn("peer-1", "1/5", None, 5, false)));
    let seed = read_addr(&dir.path().join("peer-1.addr"));
    for (i, name) in names[1..5].iter().enumerate() {
        peers.push(Some(cluster.spawn(
            name,
            &format!("{}/5", i + 2),
            Some(&seed),
            5,
            false,
        )));
    }
    wait_for(
        Duration::from_secs(120),
        "every peer to train and peer-5 to checkpoint",
        || {
            names[..5].iter().all(|n| cluster.step(n) >= 20)
                && dir.path().join("peer-5").join("checkpoint.json").exists()
        },
    );

    // SIGKILL peer-5 mid-training.
    if let Some(mut victim) = peers[4].take() {
        victim.0.kill().expect("kill -9");
        let _ = victim.0.wait();
    }
    let survivors = &names[..4];
    let steps_at_kill: Vec<u64> = survivors.iter().map(|n| cluster.step(n)).collect();
    wait_for(
        Duration::from_secs(60),
        "every survivor to count 4 live members",
        || {
            survivors.iter().all(|n| {
                cluster
                    .last_metrics(n)
                    .is_some_and(|v| v["live_members"].as_u64() == Some(4))
            })
        },
    );
    let steps_after: Vec<u64> = survivors.iter().map(|n| cluster.step(n)).collect();
    for ((n, before), after) in survivors.iter().zip(&steps_at_kill).zip(&steps_after) {
        assert!(
            after > before,
            "{n} kept training while peer-5 was down: {before} -> {after}"
        );
    }
    let unfinished = survivors.iter().any(|n| {
        cluster
            .last_metrics(n)
            .is_some_and(|v| v["lifecycle"] == "training")
    });
    assert!(
        unfinished,
        "survivors are still training when peer-5 comes back (budget too small)"
    );

    // Restart it from its data dir, and start a late joiner.
    peers[4] = Some(cluster.spawn("peer-5", "5/5", Some(&seed), 1, true));
    peers.push(Some(cluster.spawn("late", "1/5", Some(&seed), 1, false)));

    for (name, child) in names.iter().zip(peers.iter_mut()) {
        if let Some(child) = child.as_mut() {
            wait_exit(child, Duration::from_secs(300), name, dir.path());
        }
    }
    let distance = crate::common::compare_checkpoints(dir.path(), &names);
    eprintln!("consensus distance over 6 peers after churn: {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
    for n in names {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{n}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["peers"][0]["drained"], true, "{n} drained consistent");
    }
}

/// What a cluster engine does to a failed peer: start it again with the same command line.
/// Every peer runs with `--resume` from its first start; one is killed with SIGKILL after it
/// published but before its first checkpoint, and the same command brings it back: it starts
/// over under its peer id (no crash loop on the missing checkpoint), never reuses a version it
/// published, and the cluster ends consistent.
#[test]
fn a_peer_killed_before_its_first_checkpoint_comes_back_with_the_same_flags() {
    let _serial = crate::common::heavy_test_lock();
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-1", "peer-2", "peer-3"];
    // No periodic checkpoint during the run: the kill always comes before the first one.
    let cluster = Cluster::create(
        dir.path(),
        &names,
        "[peer]\ncheckpoint_interval = \"1h\"\njoin_timeout = \"60s\"\ndrain_timeout = \"180s\"\n\
         [train]\neval_every = 0\nmodel = \"784-64-10\"\npublish_every = 20\n",
        "synthetic",
        1000,
        "20s",
    );
    let mut peers: Vec<KillOnDrop> = vec![cluster.spawn("peer-1", "1/3", None, 3, true)];
    let seed = read_addr(&dir.path().join("peer-1.addr"));
    for (i, name) in names[1..].iter().enumerate() {
        peers.push(cluster.spawn(name, &format!("{}/3", i + 2), Some(&seed), 3, true));
    }
    // Killed once it has published (20 steps per delta) and before any checkpoint.
    wait_for(Duration::from_secs(120), "peer-3 to publish", || {
        cluster
            .last_metrics("peer-3")
            .is_some_and(|v| v["version"].as_u64().unwrap_or(0) >= 2)
    });
    assert!(
        !dir.path().join("peer-3").join("checkpoint.json").exists(),
        "peer-3 checkpointed before the kill"
    );
    peers[2].0.kill().expect("kill -9");
    let _ = peers[2].0.wait();
    // The same command line, --resume included.
    peers[2] = cluster.spawn("peer-3", "3/3", Some(&seed), 3, true);

    for (name, child) in names.iter().zip(peers.iter_mut()) {
        wait_exit(child, Duration::from_secs(300), name, dir.path());
    }
    let log = std::fs::read_to_string(dir.path().join("peer-3.log")).unwrap_or_default();
    assert!(
        log.contains("no checkpoint here yet"),
        "peer-3's restart said why it starts over"
    );
    let distance = crate::common::compare_checkpoints(dir.path(), &names);
    eprintln!("consensus distance after a restart before the first checkpoint: {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
    for n in names {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{n}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["peers"][0]["drained"], true, "{n} drained consistent");
    }
}
