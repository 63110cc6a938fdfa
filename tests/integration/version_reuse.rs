//! A peer killed with SIGKILL right after a publish, with a checkpoint older than that publish,
//! never publishes two different deltas under one `(origin, version)`: restarted with `--resume`
//! it continues above every version it may have sent (its published version ledger), and the
//! audit logs of every peer, its own from both lives included, agree.
//!
//! The victim is the peer that started the cluster, and its restart has the same flags, so no
//! seed: it trains on its own at once, before anything from the other peers could tell it which
//! versions it had sent (a peer restarted through a seed learns them from the seed's snapshot,
//! unless its last delta never reached that seed). Without the ledger it would reuse the
//! versions above its checkpoint, which its own log shows with other contents.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use rumor::metrics::StatusSnapshot;

use crate::procs::{read_addr, wait_exit, wait_for, Cluster, KillOnDrop};

/// An address with a free TCP port on 127.0.0.1 (bound, read, released), for `--metrics-addr`.
fn free_metrics_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!(
        "127.0.0.1:{}",
        listener.local_addr().expect("its address").port()
    )
}

/// The peer's `/status` at `addr`, or `None` while it does not answer.
fn status(runtime: &tokio::runtime::Runtime, addr: &str) -> Option<StatusSnapshot> {
    runtime
        .block_on(rumor::metrics::http::fetch_status(
            addr,
            Duration::from_secs(2),
        ))
        .ok()
}

/// The `published` version recorded in the checkpoint in `data_dir`, if there is one.
fn checkpoint_published(data_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir.join("checkpoint.json")).ok()?;
    let sidecar: serde_json::Value = serde_json::from_str(&text).ok()?;
    sidecar["state"]["published"].as_u64()
}

/// One audit log line: origin, version, content hash.
type AuditLine = (String, u64, String);

/// The whole lines of an audit log from byte `from` on; a line torn by the kill (a hash that is
/// not 64 hex digits) is counted and left out.
fn audit_lines(path: &Path, from: usize) -> (Vec<AuditLine>, usize) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[from.min(bytes.len())..]).into_owned();
    let mut lines = Vec::new();
    let mut torn = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [origin, version, hash]
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                match version.parse() {
                    Ok(v) => lines.push((origin.to_string(), v, hash.to_string())),
                    Err(_) => torn += 1,
                }
            }
            _ => torn += 1,
        }
    }
    (lines, torn)
}

#[test]
fn a_peer_killed_after_a_publish_never_reuses_a_version() {
    let _serial = crate::common::heavy_test_lock();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let names = ["victim", "peer-2", "peer-3"];
    // One checkpoint 5 s after start, the next 10 s after: the kill falls between them, after
    // publishes the first one does not hold.
    let cluster = Cluster::create(
        dir.path(),
        &names,
        "[peer]\ncheckpoint_interval = \"5s\"\njoin_timeout = \"60s\"\ndrain_timeout = \"60s\"\n\
         [train]\neval_every = 0\nmodel = \"784-64-10\"\npublish_every = 20\n",
        "synthetic",
        1000,
        "10s",
    );
    let audit = |name: &str| dir.path().join(format!("{name}.audit"));
    let flags = |name: &str, metrics: Option<&str>| {
        let mut extra: Vec<OsString> = vec!["--audit-log".into(), audit(name).into()];
        if let Some(addr) = metrics {
            extra.extend(["--metrics-addr".into(), addr.into()]);
        }
        extra
    };

    let metrics = free_metrics_addr();
    let mut victim = cluster.spawn_with(
        "victim",
        "1/3",
        None,
        3,
        false,
        flags("victim", Some(&metrics)),
    );
    let seed = read_addr(&dir.path().join("victim.addr"));
    let mut others: Vec<KillOnDrop> = names[1..]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            cluster.spawn_with(
                name,
                &format!("{}/3", i + 2),
                Some(&seed),
                3,
                false,
                flags(name, None),
            )
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let victim_dir = dir.path().join("victim");
    let mut last = None;
    wait_for(
        Duration::from_secs(60),
        "the victim's first checkpoint, and 2 published versions, some above it",
        || {
            let Some(checkpointed) = checkpoint_published(&victim_dir) else {
                return false;
            };
            last = status(&runtime, &metrics);
            last.as_ref()
                .is_some_and(|s| s.peer.version >= 2 && s.peer.version > checkpointed)
        },
    );
    let before = last.map(|s| s.peer.version).unwrap_or_default();
    // Kill it as soon as its published count rises again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        if let Some(s) = status(&runtime, &metrics).filter(|s| s.peer.version > before) {
            victim.0.kill().expect("kill -9"); // SIGKILL
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 30s waiting for the victim to publish after version {before}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = victim.0.wait();
    let victim_id = seen.peer.peer_id.to_string();

    // What it sent before the kill, and the checkpoint it restarts from.
    let killed_log_len = std::fs::metadata(audit("victim"))
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let (first_life, _) = audit_lines(&audit("victim"), 0);
    let sent_before: BTreeSet<u64> = first_life
        .iter()
        .filter(|(origin, _, _)| *origin == victim_id)
        .map(|&(_, v, _)| v)
        .collect();
    let last_sent = sent_before.last().copied().unwrap_or(0);
    let checkpointed = checkpoint_published(&victim_dir).expect("the victim's checkpoint");
    assert!(
        checkpointed < last_sent,
        "the checkpoint (published {checkpointed}) must be older than the last publish \
         ({last_sent}) for the restart to start behind; a checkpoint fell between the last \
         publish and the kill"
    );

    // Restart it with the same flags and --resume; training on its own, it needs no quorum.
    let metrics = free_metrics_addr();
    let mut restarted = cluster.spawn_with(
        "victim",
        "1/3",
        None,
        1,
        true,
        flags("victim", Some(&metrics)),
    );
    wait_exit(
        &mut restarted,
        Duration::from_secs(120),
        "victim",
        dir.path(),
    );
    for (name, child) in names[1..].iter().zip(others.iter_mut()) {
        wait_exit(child, Duration::from_secs(120), name, dir.path());
    }

    // Every (origin, version) in every log, with the hashes seen for it and where.
    let mut seen_as: BTreeMap<(String, u64), BTreeMap<String, BTreeSet<&str>>> = BTreeMap::new();
    let mut total = 0;
    let mut torn = 0;
    for name in names {
        let (lines, t) = audit_lines(&audit(name), 0);
        total += lines.len();
        torn += t;
        eprintln!("{name}: {} audit lines", lines.len());
        for (origin, version, hash) in lines {
            seen_as
                .entry((origin, version))
                .or_default()
                .entry(hash)
                .or_default()
                .insert(name);
        }
    }
    let (second_life, _) = audit_lines(&audit("victim"), killed_log_len);
    let sent_after: BTreeSet<u64> = second_life
        .iter()
        .filter(|(origin, _, _)| *origin == victim_id)
        .map(|&(_, v, _)| v)
        .collect();
    let conflicts: Vec<_> = seen_as.iter().filter(|(_, h)| h.len() > 1).collect();
    eprintln!(
        "{total} audit lines ({torn} torn), {} distinct (origin, version); victim published {} \
         versions up to {last_sent} before the kill (checkpoint at {checkpointed}), {} after the \
         restart ({:?}..={:?}); {} versions with two contents; {:.1}s",
        seen_as.len(),
        sent_before.len(),
        sent_after.len(),
        sent_after.first(),
        sent_after.last(),
        conflicts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        conflicts.is_empty(),
        "versions published with two contents (origin, version → hash → logs): {:#?}",
        &conflicts[..conflicts.len().min(5)]
    );
    let first_new = sent_after.first().copied();
    assert!(
        first_new.is_some(),
        "the victim published nothing after its restart"
    );
    assert!(
        first_new > Some(last_sent),
        "the first version after the restart ({first_new:?}) reuses one sent before ({last_sent})"
    );
}
