//! Mutual TLS: a peer whose certificate comes from another CA can neither join nor get a
//! single message applied.

use std::sync::Arc;
use std::time::Duration;

use rumor::net::{Transport, TransportConfig};
use rumor::node::PeerHandle;
use rumor::run::peer_options;
use rumor::wire::{self, DeltaPayload, Envelope, Payload};

use crate::common::{dataset, identities, test_config, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_from_another_ca_cannot_join_or_get_a_message_applied() {
    let dir = tempfile::tempdir().unwrap();
    let good = identities(&dir.path().join("cluster"), &["good"]);
    let rogue = identities(&dir.path().join("other"), &["rogue"]);
    let data = dataset();
    let test = Arc::new(data.test.clone());

    // The legitimate peer waits for a second member that never comes.
    let mut c = test_config();
    c.peer.name = "good".into();
    c.peer.data_dir = dir.path().join("good");
    c.peer.min_peers = 2;
    c.peer.join_timeout = Duration::from_secs(120);
    c.train.epochs = 1;
    let opts = peer_options(&c, good[0].clone(), &data, test.clone(), 2).unwrap();
    let param_count = opts.core.param_count;
    let mut good_peer = PeerHandle::spawn(opts);
    let good_addr = good_peer.bound_addr().await.unwrap();

    // The rogue tries to join through it.
    let mut r = test_config();
    r.peer.name = "rogue".into();
    r.peer.data_dir = dir.path().join("rogue");
    r.peer.seeds = vec![good_addr];
    r.peer.join_timeout = Duration::from_secs(3);
    r.train.epochs = 1;
    let ropts = peer_options(&r, rogue[0].clone(), &data, test, 2).unwrap();
    let rogue_peer = PeerHandle::spawn(ropts);
    let rogue_result = within(Duration::from_secs(30), "rogue gives up", rogue_peer.wait()).await;
    assert!(
        matches!(rogue_result, Err(rumor::node::NodeError::JoinTimeout(..))),
        "the rogue never joins: {rogue_result:?}"
    );

    // It also sends a delta directly over its own transport.
    let (transport, _rx) = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &rogue[0],
        TransportConfig::default(),
    )
    .await
    .unwrap();
    let envelope = Envelope {
        id: uuid::Uuid::new_v4(),
        origin: uuid::Uuid::new_v4(),
        origin_addr: transport.local_addr(),
        version: 1,
        ttl: 1,
        payload: Payload::Delta(DeltaPayload {
            weight: 0.5,
            values: vec![1.0; param_count].into(),
        }),
    };
    let frame = wire::encode(&envelope, 16 << 20).unwrap();
    let sent = transport.send(good_addr, frame.into()).await;
    assert!(sent.is_err(), "the server refuses the handshake");
    transport.close().await;

    good_peer.request_stop();
    let outcome = within(Duration::from_secs(30), "good peer stops", good_peer.wait())
        .await
        .unwrap();
    assert_eq!(outcome.members.len(), 1, "only itself in the view");
    assert_eq!(outcome.stats.deltas_applied, 0);
    assert!(
        outcome.stats.received.is_empty(),
        "no message reached the core: {:?}",
        outcome.stats.received
    );
    assert!(
        outcome.transport.handshakes_rejected >= 2,
        "{:?}",
        outcome.transport
    );
    assert!(outcome.applied.is_empty());
}
