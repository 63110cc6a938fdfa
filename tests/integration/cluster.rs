//! Peers over real QUIC on loopback: join through one seed, train, drain, agree.

use std::net::SocketAddr;
use std::time::Duration;

use rumor::model;
use rumor::node::PeerHandle;
use rumor::run::peer_options;

use crate::common::{dataset, identities, start_peers, test_config, wait_all, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_from_one_seed_train_and_agree() {
    four_peers_train_and_agree(|_| {}).await;
}

/// The outer optimizer (Nesterov momentum at each origin) and top-k sparse 2-bit deltas with
/// error feedback change what is published, never whether the peers end on one model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_with_nesterov_and_topk_deltas_agree() {
    four_peers_train_and_agree(|c| {
        c.train.outer_optimizer = rumor::train::OuterKind::Nesterov;
        c.train.publish_every = rumor::train::PublishPeriod::Steps(20);
        c.train.delta_compression = model::Compression::TOPK_DEFAULT;
    })
    .await;
}

/// Four peers join through one seed with `adjust`ed test settings, train one epoch, drain,
/// and must agree: same applied set, consensus distance < 1e-4, no delta refused.
async fn four_peers_train_and_agree(adjust: impl FnOnce(&mut rumor::config::Config)) {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-0", "peer-1", "peer-2", "peer-3"];
    let data = dataset();
    let n = names.len();
    let mut base = test_config();
    base.peer.min_peers = n;
    base.train.epochs = 1;
    adjust(&mut base);
    let handles = start_peers(dir.path(), &names, &base, &data).await;
    let outcomes = wait_all(handles, Duration::from_secs(300)).await;
    let accs: Vec<f32> = outcomes.iter().map(|o| o.accuracy()).collect();
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    eprintln!("accuracies {accs:?}, consensus distance {distance:e}");
    for o in &outcomes {
        assert!(
            o.drained,
            "{} drained consistent before its deadline",
            o.name
        );
        assert_eq!(o.members.len(), n, "{} knows every peer", o.name);
        assert_eq!(o.applied, outcomes[0].applied, "same applied set");
        assert!(o.version > 0, "{} published", o.name);
        assert!(o.transport.bytes_sent > 0);
        // Legitimate training never trips the delta checks (norm, version jump, ...) nor the
        // transport's rate limits.
        assert!(
            o.stats.deltas_rejected.is_empty(),
            "{} rejected deltas: {:?}",
            o.name,
            o.stats.deltas_rejected
        );
        assert_eq!(
            o.transport.messages_rate_limited, 0,
            "{} rate-limited",
            o.name
        );
    }
    let spread = accs.iter().cloned().fold(f32::MIN, f32::max)
        - accs.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread <= 0.01, "accuracies within 1 point: {accs:?}");
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(
        accs[0] > 0.5,
        "the shared model learned something: {accs:?}"
    );
    // Checkpoints on disk agree too.
    let saved: Vec<Vec<f32>> = names
        .iter()
        .map(|n| model::load_checkpoint(&dir.path().join(n)).unwrap().params)
        .collect();
    let refs: Vec<&[f32]> = saved.iter().map(Vec::as_slice).collect();
    assert!(model::consensus_distance(&refs).unwrap() < 1e-4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_continues_from_the_checkpoint_without_reusing_versions() {
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(&dir.path().join("certs"), &["solo"]);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let mut c = test_config();
    c.peer.name = "solo".into();
    c.peer.data_dir = dir.path().join("solo");
    c.train.epochs = 1;
    let opts = peer_options(&c, ids[0].clone(), &data, 1).unwrap();
    let first = within(
        Duration::from_secs(120),
        "first run",
        PeerHandle::spawn(opts).wait(),
    )
    .await
    .unwrap();
    assert!(first.version > 0);
    let saved = model::load_checkpoint(&dir.path().join("solo"))
        .unwrap()
        .params;
    assert_eq!(saved, first.base, "the checkpoint holds the final base");

    // The budget grows by one epoch: the resumed peer trains only that epoch.
    c.train.epochs = 2;
    let mut opts = peer_options(&c, ids[0].clone(), &data, 1).unwrap();
    opts.resume = true;
    let second = within(
        Duration::from_secs(120),
        "resumed run",
        PeerHandle::spawn(opts).wait(),
    )
    .await
    .unwrap();
    assert_eq!(
        second.peer_id, first.peer_id,
        "same peer id from the data dir"
    );
    assert_eq!(
        second.version,
        2 * first.version,
        "versions continue, none reused"
    );
    assert_eq!(second.applied.len(), 2 * first.version);
    assert!(first.applied.is_subset_of(&second.applied));
    assert!(
        second.accuracy() >= first.accuracy() - 0.05,
        "training continued from the saved base: {} then {}",
        first.accuracy(),
        second.accuracy()
    );
}

/// `--resume` on a data dir without a checkpoint (a peer stopped before its first one, started
/// again by an engine with the same flags) starts over and trains; it is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_a_checkpoint_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(&dir.path().join("certs"), &["fresh"]);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let mut c = test_config();
    c.peer.name = "fresh".into();
    c.peer.data_dir = dir.path().join("fresh");
    let mut opts = peer_options(&c, ids[0].clone(), &data, 1).unwrap();
    opts.resume = true;
    let outcome = within(
        Duration::from_secs(120),
        "the peer to train and finish",
        PeerHandle::spawn(opts).wait(),
    )
    .await
    .expect("a resume without a checkpoint starts over");
    assert!(outcome.version >= 1, "it trained and published");
    assert!(outcome.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_dropped_without_suspicion() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let ids = identities(&dir.path().join("certs"), &names);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for (i, name) in names.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = 3;
        c.train.shard = format!("{}/3", i + 1).parse().unwrap();
        c.train.epochs = 1000;
        let opts = peer_options(&c, ids[i].clone(), &data, 3).unwrap();
        let mut h = PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
        }
        handles.push(h);
    }
    let status = |h: &PeerHandle| rumor::node::lock(&h.status).clone();
    within(Duration::from_secs(60), "all train", async {
        while !handles.iter().all(|h| status(h).step > 20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let leaver = handles.remove(1);
    let version_before = status(&leaver).version;
    leaver.request_stop();
    let outcome = within(Duration::from_secs(30), "leaver exits", leaver.wait())
        .await
        .unwrap();
    assert!(
        outcome.version >= version_before,
        "it published its last delta"
    );
    assert!(
        dir.path().join("b").join("checkpoint.json").exists(),
        "it saved"
    );
    within(Duration::from_secs(10), "the others mark it left", async {
        while !handles.iter().all(|h| {
            status(h)
                .members
                .iter()
                .any(|m| m.name == "b" && m.status == "left")
        }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for h in &handles {
        let s = status(h);
        assert_eq!(s.suspicions_raised, 0, "{} never suspected anyone", s.name);
        assert_eq!(s.peers_known, 2);
    }
    for h in handles {
        h.request_stop();
        within(Duration::from_secs(30), "peer stops", h.wait())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_seed_does_not_stop_a_join_through_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(&dir.path().join("certs"), &["a", "b"]);
    let data = rumor::run::RunData::from(
        rumor::data::load(&rumor::data::DatasetSpec::Synthetic, 42).unwrap(),
    );
    // An address nobody listens on: bind a UDP socket, note its port, close it.
    let dead: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let mut c = test_config();
    c.peer.name = "a".into();
    c.peer.data_dir = dir.path().join("a");
    c.peer.min_peers = 2;
    c.train.shard = "1/2".parse().unwrap();
    c.train.epochs = 1;
    let mut a = PeerHandle::spawn(peer_options(&c, ids[0].clone(), &data, 2).unwrap());
    let seed = a.bound_addr().await.unwrap();
    let mut c = test_config();
    c.peer.name = "b".into();
    c.peer.data_dir = dir.path().join("b");
    c.peer.seeds = vec![dead, seed];
    c.peer.min_peers = 2;
    c.train.shard = "2/2".parse().unwrap();
    c.train.epochs = 1;
    let b = PeerHandle::spawn(peer_options(&c, ids[1].clone(), &data, 2).unwrap());
    let ob = within(Duration::from_secs(120), "b finishes", b.wait())
        .await
        .unwrap();
    let oa = within(Duration::from_secs(120), "a finishes", a.wait())
        .await
        .unwrap();
    assert_eq!(ob.members.len(), 2);
    assert!(ob.stats.join_attempts >= 2, "the dead seed was tried first");
    assert_eq!(oa.applied, ob.applied);
}
