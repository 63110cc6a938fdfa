//! Durability: a damaged checkpoint does not crash a resuming peer nor silently send it back to
//! θ₀; a checkpoint writer killed at random moments always leaves a loadable checkpoint; an
//! unwritable or full data dir is a clear error at start.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rumor::model::{self, checkpoint, ModelCard, ModelSpec};
use rumor::node::{NodeError, PeerHandle};
use rumor::run::peer_options;

use crate::common::{heavy_test_lock, identities, test_config, within};

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(limit, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// Each tokio test owns its runtime: holding the std guard across awaits only serialises this
// test against the other heavy tests, which run on other threads.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_resuming_from_a_corrupt_checkpoint_rejoins_from_a_snapshot() {
    let _heavy = heavy_test_lock();
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let ids = identities(&dir.path().join("certs"), &names);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let config = |i: usize, seed: Option<SocketAddr>, train_secs: u64| {
        let mut c = test_config();
        c.peer.name = names[i].to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(names[i]);
        c.peer.min_peers = 3;
        c.train.shard = format!("{}/3", i + 1).parse().unwrap();
        c.train.epochs = 1000;
        c.train.max_train_time = Some(Duration::from_secs(train_secs));
        c
    };
    let status = |h: &PeerHandle| rumor::node::lock(&h.status).clone();

    // a and c train for 20 s; b is stopped after a few published deltas.
    let mut a =
        PeerHandle::spawn(peer_options(&config(0, None, 20), ids[0].clone(), &data, 3).unwrap());
    let seed = a.bound_addr().await.unwrap();
    let b = PeerHandle::spawn(
        peer_options(&config(1, Some(seed), 1000), ids[1].clone(), &data, 3).unwrap(),
    );
    let c = PeerHandle::spawn(
        peer_options(&config(2, Some(seed), 20), ids[2].clone(), &data, 3).unwrap(),
    );
    wait_until(Duration::from_secs(60), "b publishes 3 deltas", || {
        status(&b).version >= 3
    })
    .await;
    b.request_stop();
    let first = within(Duration::from_secs(30), "b stops", b.wait())
        .await
        .expect("b stops cleanly");
    let b_dir = dir.path().join("b");
    assert!(first.version >= 3);

    // Flip a byte in the middle of its tensor file.
    let tensors = checkpoint::tensors_path(&b_dir).unwrap();
    let mut bytes = std::fs::read(&tensors).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&tensors, &bytes).unwrap();
    let err = rumor::node::load_checkpoint(&b_dir).unwrap_err();
    assert!(err.is_damaged(), "{err:?}");
    let name = tensors.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        rumor::report::Chain(&err).to_string().contains(&name),
        "the error names the file: {err}"
    );

    // Restart it with --resume: it must rejoin, not crash and not start from θ₀.
    let mut opts = peer_options(&config(1, Some(seed), 4), ids[1].clone(), &data, 3).unwrap();
    opts.resume = true;
    let b2 = PeerHandle::spawn(opts);
    let second = within(Duration::from_secs(120), "restarted b finishes", b2.wait())
        .await
        .expect("restarted b runs to the end");
    let oa = within(Duration::from_secs(120), "a finishes", a.wait())
        .await
        .unwrap();
    let oc = within(Duration::from_secs(120), "c finishes", c.wait())
        .await
        .unwrap();

    assert_eq!(second.peer_id, first.peer_id, "b kept its peer id");
    let moved: Vec<String> = std::fs::read_dir(&b_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert!(
        moved.iter().any(|n| n.starts_with(&name))
            && moved.iter().any(|n| n.starts_with("checkpoint.json")),
        "the bad files were moved aside: {moved:?}"
    );
    assert!(second.stats.snapshots_installed >= 1, "it took a snapshot");
    assert!(second.stats.deltas_published >= 1, "it trained again");
    // Its versions continue after the ones it published before: none is reused.
    let first_new = second.version + 1 - second.stats.deltas_published;
    assert!(
        first_new > first.version,
        "first version after the restart {first_new} must exceed {} published before",
        first.version
    );
    let outcomes = [&oa, &second, &oc];
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    eprintln!(
        "b published {} before, {} after the restart (versions {first_new}..={}); \
         consensus distance {distance:e}",
        first.version, second.stats.deltas_published, second.version
    );
    for o in outcomes {
        assert!(o.drained, "{} drained consistent", o.name);
        assert_eq!(o.applied, oa.applied, "{} has the same applied set", o.name);
        assert_eq!(o.applied.max_of(first.peer_id), second.version);
    }
    assert!(distance < 1e-4, "consensus distance {distance:e}");
    // The restarted peer wrote a fresh, loadable checkpoint at exit.
    let (_, base, state) = rumor::node::load_checkpoint(&b_dir).unwrap();
    assert_eq!(base, second.base);
    assert_eq!(state.published, second.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_checkpoint_without_seeds_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(&dir.path().join("certs"), &["solo"]);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let mut c = test_config();
    c.peer.name = "solo".into();
    c.peer.data_dir = dir.path().join("solo");
    std::fs::create_dir_all(&c.peer.data_dir).unwrap();
    std::fs::write(
        c.peer.data_dir.join(checkpoint::SIDECAR_FILE),
        b"{\"format_version\": 1, ",
    )
    .unwrap();
    let mut opts = peer_options(&c, ids[0].clone(), &data, 1).unwrap();
    opts.resume = true;
    let result = within(
        Duration::from_secs(30),
        "peer fails",
        PeerHandle::spawn(opts).wait(),
    )
    .await;
    let err = result.expect_err("no silent start from θ₀");
    let text = rumor::report::Chain(&err).to_string();
    assert!(matches!(err, NodeError::Resume(_)), "{err:?}");
    assert!(
        text.contains(checkpoint::SIDECAR_FILE) && text.contains("seed"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Killed writer.

const WRITER_DIR_ENV: &str = "RUMOR_TEST_CHECKPOINT_WRITER_DIR";

/// The spec the writer uses: the default MLP, so one save writes about 400 KB.
fn writer_spec() -> ModelSpec {
    ModelSpec::default()
}

/// The child side of [`killed_checkpoint_writer_leaves_a_loadable_checkpoint`]: when the
/// environment names a directory, saves checkpoints into it forever, generation after generation
/// (every parameter and the state's `gen` equal to the generation), continuing after the
/// generation already there. Does nothing in a normal test run.
#[test]
#[ignore = "child process of killed_checkpoint_writer_leaves_a_loadable_checkpoint"]
fn checkpoint_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let spec = writer_spec();
    let mut generation = model::load_checkpoint(&dir)
        .ok()
        .and_then(|c| c.state["gen"].as_u64())
        .unwrap_or(0);
    loop {
        generation += 1;
        let params = vec![generation as f32; spec.param_count()];
        model::save_checkpoint(
            &dir,
            &ModelCard::mlp(&spec),
            &spec.layout(),
            &params,
            &serde_json::json!({ "gen": generation }),
        )
        .unwrap();
    }
}

/// Loads the checkpoint in `dir` and checks it is one whole generation; returns it.
fn whole_generation(dir: &Path) -> u64 {
    let model::checkpoint::Checkpoint {
        card,
        params,
        state,
        ..
    } = model::load_checkpoint(dir).expect("the checkpoint loads");
    assert_eq!(card, ModelCard::mlp(&writer_spec()));
    let generation = state["gen"].as_u64().expect("state has gen");
    assert!(
        params.iter().all(|&p| p == generation as f32),
        "tensor file and sidecar of one generation ({generation})"
    );
    generation
}

#[test]
fn killed_checkpoint_writer_leaves_a_loadable_checkpoint() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut last = 0u64;
    let mut mid_write = 0;
    let kills = 20;
    for round in 0..kills {
        let mut child = std::process::Command::new(&exe)
            .args([
                "durability::checkpoint_writer_child",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(WRITER_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the writer");
        // Wait until it has written a generation of its own, then kill it at a random moment
        // (the delay only picks the moment; nothing waits on it).
        let deadline = Instant::now() + Duration::from_secs(60);
        while model::load_checkpoint(dir.path())
            .ok()
            .and_then(|c| c.state["gen"].as_u64())
            .is_none_or(|g| g <= last)
        {
            assert!(
                Instant::now() < deadline,
                "round {round}: the writer makes no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the writer died"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .count();
        if leftovers > 2 {
            mid_write += 1;
        }
        let generation = whole_generation(dir.path());
        assert!(
            generation > last,
            "round {round}: generation {generation} after {last}"
        );
        last = generation;
    }
    eprintln!(
        "{kills} kills, {mid_write} left a save's files behind; last generation {last}, always loadable"
    );
}

// ---------------------------------------------------------------------------------------------
// Data dir problems at start.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_under_a_regular_file_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(&dir.path().join("certs"), &["p"]);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut c = test_config();
    c.peer.name = "p".into();
    c.peer.data_dir = file.join("sub");
    let opts = peer_options(&c, ids[0].clone(), &data, 1).unwrap();
    let result = within(
        Duration::from_secs(30),
        "peer fails",
        PeerHandle::spawn(opts).wait(),
    )
    .await;
    match result {
        Err(e @ NodeError::NotADirectory(_)) => {
            let text = e.to_string();
            assert!(
                text.contains(&file.join("sub").display().to_string()),
                "{text}"
            );
            assert!(
                text.contains(&format!("{} exists and is not a directory", file.display())),
                "the message names the file in the way: {text}"
            );
            eprintln!("{text}");
        }
        other => panic!("expected a data dir error, got {other:?}"),
    }
}

#[test]
fn data_dir_in_proc_is_a_clear_error() {
    let err = rumor::node::probe_data_dir(Path::new("/proc/rumor-test-data-dir")).unwrap_err();
    assert!(matches!(err, NodeError::DataDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/proc/rumor-test-data-dir"),
        "{err}"
    );
}

/// A full disk, on a 64 KiB tmpfs when this process may mount one (root); skipped otherwise
/// with the reason printed.
#[test]
fn full_disk_is_a_clear_error_at_start_and_a_failed_save_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::piped())
        .output();
    match &mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs ({}); the ENOSPC message is covered by the unit test \
                 of the data dir hint",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount: {e}");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);

    // A small model's checkpoint fits; then fill the disk.
    let spec: ModelSpec = "784-8-10".parse().unwrap();
    let params: Vec<f32> = (0..spec.param_count()).map(|i| i as f32 * 1e-6).collect();
    let card = ModelCard::mlp(&spec);
    model::save_checkpoint(
        &mnt,
        &card,
        &spec.layout(),
        &params,
        &serde_json::json!({"gen": 1}),
    )
    .unwrap();
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        use std::io::Write;
        if f.write_all(&chunk).and_then(|_| f.sync_all()).is_err() {
            break;
        }
    }
    drop(f);

    let err = rumor::node::probe_data_dir(&mnt).unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        matches!(&err, NodeError::DataDir { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
        "{err:?}"
    );
    assert!(text.contains("disk is full"), "{text}");

    // A save on the full disk fails with an error naming the file, and the previous checkpoint
    // still loads.
    let bigger: Vec<f32> = params.iter().map(|p| p + 1.0).collect();
    let save = model::save_checkpoint(
        &mnt,
        &card,
        &spec.layout(),
        &bigger,
        &serde_json::json!({"gen": 2}),
    );
    assert!(save.is_err(), "the disk is full");
    let loaded = model::load_checkpoint(&mnt).unwrap();
    assert_eq!(loaded.params, params);
    assert_eq!(loaded.state["gen"], 1);
}
