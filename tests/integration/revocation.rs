//! Revocation on a running cluster: four peers train, the operator revokes one peer's
//! certificate (`rumor certs revoke`, through the library function the CLI calls), and the
//! others, watching the list, drop it within seconds, refuse its handshakes and finish
//! consistent without it.

use std::time::{Duration, Instant};

use rumor::certs::{self, RevokeTarget, REVOKED_FILE};
use rumor::model;
use rumor::node::{PeerHandle, PeerStatus};
use rumor::run::peer_options;

use crate::common::{
    compare_checkpoints, dataset, heavy_test_lock, identities, test_config, within,
};

/// Upper bound for the cluster to be rid of the revoked peer once the list is written: the
/// peers look at the file once a second; the rest is slack for a loaded machine.
const RID_WITHIN: Duration = Duration::from_secs(15);

fn status(h: &PeerHandle) -> PeerStatus {
    rumor::node::lock(&h.status).clone()
}

/// A transport counter from the peer's latest snapshot (0 if absent).
fn transport_counter(h: &PeerHandle, field: &str) -> u64 {
    h.snapshot.borrow().transport[field].as_u64().unwrap_or(0)
}

/// Whether `h` sees the member called `name` as dead or left.
fn sees_down(h: &PeerHandle, name: &str) -> bool {
    status(h)
        .members
        .iter()
        .any(|m| m.name == name && (m.status == "dead" || m.status == "left"))
}

// Each tokio test owns its runtime: holding the std guard across awaits only serialises this
// test against the other heavy tests, which run on other threads. The measured revocation time
// is the reason to take it: another cluster training beside this one would stretch it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peer_is_dropped_by_a_running_cluster_within_seconds() {
    let _heavy = heavy_test_lock();
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let names = ["peer-0", "peer-1", "peer-2", "peer-3"];
    let revoked = "peer-3";
    let ids = identities(&certs_dir, &names);
    let list = certs_dir.join(REVOKED_FILE);
    let data = dataset();
    let n = names.len();

    // Every peer watches the cluster's list, except the one to be revoked: it plays a member
    // that ignores its revocation and keeps talking.
    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut seed = None;
    for (i, name) in names.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = n;
        c.peer.revocation_list = Some(if *name == revoked {
            dir.path().join("never-written.json")
        } else {
            list.clone()
        });
        c.train.shard = format!("{}/{n}", i + 1).parse().unwrap();
        c.train.epochs = 1000;
        c.train.max_train_time = Some(Duration::from_secs(40));
        let opts = peer_options(&c, ids[i].clone(), &data, n).unwrap();
        assert_eq!(opts.revocation_list, c.peer.revocation_list);
        let mut h = PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
            assert!(seed.is_some(), "the seed bound an address");
        }
        handles.push(h);
    }
    within(Duration::from_secs(120), "all four peers train", async {
        while !handles.iter().all(|h| status(h).step > 20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let x = handles.pop().unwrap();
    let others = handles;
    for h in &others {
        assert!(
            !sees_down(h, revoked),
            "{} saw {revoked} down early",
            status(h).name
        );
    }

    let started = Instant::now();
    let done = certs::revoke(&certs_dir, &RevokeTarget::Name(revoked.into())).unwrap();
    let written = Instant::now();
    assert!(!done.already);
    assert_eq!(done.entry.name, revoked);

    // Every other peer has X down; the time of the last one is the revocation time.
    let mut down_after: Vec<Option<Duration>> = vec![None; others.len()];
    within(
        RID_WITHIN,
        "every other peer to have the revoked peer down",
        async {
            while down_after.iter().any(Option::is_none) {
                for (i, h) in others.iter().enumerate() {
                    if down_after[i].is_none() && sees_down(h, revoked) {
                        down_after[i] = Some(written.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let last = down_after.iter().flatten().max().copied().unwrap();
    eprintln!(
        "revocation: list signed and written in {:.1} ms; {revoked} down at each peer after \
         {:?} ms; the last after {:.0} ms (from the file written)",
        written.duration_since(started).as_secs_f64() * 1e3,
        down_after
            .iter()
            .flatten()
            .map(|d| d.as_millis())
            .collect::<Vec<_>>(),
        last.as_secs_f64() * 1e3
    );
    assert!(last < RID_WITHIN);

    // X's connections are closed, and its new handshakes refused at the handshake.
    within(
        RID_WITHIN,
        "the others to close the revoked peer's connections and refuse its handshakes",
        async {
            loop {
                let closed: u64 = others
                    .iter()
                    .map(|h| transport_counter(h, "connections_closed_revoked"))
                    .sum();
                let refused: u64 = others
                    .iter()
                    .map(|h| transport_counter(h, "handshakes_refused_revoked"))
                    .sum();
                if closed >= 1 && refused >= 1 && transport_counter(&x, "connections_open") == 0 {
                    eprintln!(
                        "revocation: {closed} connections closed, {refused} handshakes refused"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert!(!x.is_finished(), "the revoked peer runs on, refused");

    x.request_stop();
    let x_outcome = within(Duration::from_secs(60), "the revoked peer stops", x.wait())
        .await
        .unwrap();
    let x_view: Vec<(&str, &str)> = x_outcome
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.status.as_str()))
        .collect();
    eprintln!("revocation: the revoked peer's own view at exit: {x_view:?}");

    // The other three finish training, drain and agree, without X.
    let mut outcomes = Vec::new();
    for h in others {
        let o = within(
            Duration::from_secs(180),
            "a remaining peer finishes",
            h.wait(),
        )
        .await
        .expect("peer succeeds");
        outcomes.push(o);
    }
    for o in &outcomes {
        assert!(
            o.drained,
            "{} drained consistent before its deadline",
            o.name
        );
        assert_eq!(o.applied, outcomes[0].applied, "same applied set");
        let x_view = o.members.iter().find(|m| m.name == revoked).unwrap();
        assert!(
            x_view.status == "dead" || x_view.status == "left",
            "{} sees {revoked} as {}",
            o.name,
            x_view.status
        );
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    let remaining: Vec<&str> = names.iter().copied().filter(|n| *n != revoked).collect();
    let on_disk = compare_checkpoints(dir.path(), &remaining);
    eprintln!("revocation: consensus distance {distance:e} in memory, {on_disk:e} on disk");
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(
        on_disk < 1e-4,
        "consensus distance of the checkpoints {on_disk}"
    );
}

/// Runs the `rumor` binary with `args`; panics naming `what` if it has not exited within
/// `limit` (it is killed then).
fn rumor_bounded(args: &[&std::ffi::OsStr], limit: Duration, what: &str) -> std::process::Output {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rumor"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rumor");
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for rumor") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).expect("read stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr).expect("read stderr");
    }
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(std::ffi::OsString::from).collect()
}

fn rumor(args: &[std::ffi::OsString], what: &str) -> (bool, String, String) {
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = rumor_bounded(&refs, Duration::from_secs(60), what);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn certs_revoke_from_the_command_line_and_peers_refusing_to_start_on_a_bad_list() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let c = certs.to_str().unwrap();
    for args in [
        vec!["certs", "init", "--dir", c, "--cluster", "revoking"],
        vec!["certs", "issue", "--dir", c, "--name", "a"],
        vec!["certs", "issue", "--dir", c, "--name", "b"],
    ] {
        let (ok, _, err) = rumor(&os(&args), "certs init / issue");
        assert!(ok, "{args:?}: {err}");
    }
    let (ok, out, err) = rumor(
        &os(&["certs", "revoke", "--dir", c, "--name", "a"]),
        "certs revoke",
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("revoked a (key id "), "{out}");
    assert!(out.contains("sequence 1"), "{out}");
    let before = std::fs::read(certs.join(REVOKED_FILE)).unwrap();
    let (ok, out, err) = rumor(
        &os(&["certs", "revoke", "--dir", c, "--name", "a"]),
        "certs revoke again",
    );
    assert!(ok, "{err}");
    assert!(out.contains("was already revoked"), "{out}");
    assert_eq!(std::fs::read(certs.join(REVOKED_FILE)).unwrap(), before);
    let (ok, _, err) = rumor(
        &os(&["certs", "revoke", "--dir", c, "--name", "gone"]),
        "certs revoke of a missing file",
    );
    assert!(!ok);
    assert!(
        err.contains("gone.pem") && err.contains("--key-id"),
        "{err}"
    );
    let (ok, _, err) = rumor(
        &os(&["certs", "revoke", "--dir", c, "--key-id", "xyz"]),
        "certs revoke of a bad key id",
    );
    assert!(!ok);
    assert!(err.contains("bad key id"), "{err}");

    let peer = |name: &str, list: Option<&std::path::Path>| {
        let mut args = os(&[
            "peer",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--certs",
            c,
        ]);
        args.extend(os(&[
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--data-dir",
        ]));
        args.push(dir.path().join(name).into_os_string());
        if let Some(list) = list {
            args.push("--revocation-list".into());
            args.push(list.as_os_str().to_owned());
        }
        args
    };
    // The revoked peer does not start: its own certificate is on the list.
    let (ok, _, err) = rumor(&peer("a", None), "a revoked peer refusing to start");
    assert!(!ok);
    assert!(
        err.contains("this peer's certificate (a) is on the revocation list"),
        "{err}"
    );
    // A list edited after signing stops a peer at start, naming the file and the problem.
    let tampered = dir.path().join("tampered.json");
    let text = String::from_utf8(before).unwrap();
    std::fs::write(
        &tampered,
        text.replace("\"sequence\": 1", "\"sequence\": 9"),
    )
    .unwrap();
    let (ok, _, err) = rumor(
        &peer("b", Some(&tampered)),
        "a peer refusing a tampered list",
    );
    assert!(!ok);
    assert!(
        err.contains("tampered.json") && err.contains("signature does not verify"),
        "{err}"
    );
}
