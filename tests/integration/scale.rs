//! Many peers on few cores: 16 in-process peers over real QUIC on this machine's cores, with
//! the default model and settings, end drained with one model. CPU starvation may slow such a
//! cluster; it must never leave it inconsistent.

use std::time::Duration;

use rumor::model;

use crate::common::{dataset, heavy, start_peers, wait_all};

const PEERS: usize = 16;

#[test]
fn sixteen_peers_on_few_cores_end_drained_and_consistent() {
    heavy(sixteen_peers());
}

async fn sixteen_peers() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..PEERS).map(|i| format!("peer-{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // The shipped defaults (not the suite's faster gossip intervals): the setting a user's
    // `rumor up --peers 16` runs with.
    let mut base = rumor::config::Config::default();
    base.train.eval_every = 0;
    base.train.epochs = 1;
    base.peer.min_peers = PEERS;
    base.peer.join_timeout = Duration::from_secs(120);
    // Long enough for a starved cluster to finish its drain: the test is about the end state,
    // not about how fast it comes.
    base.peer.drain_timeout = Duration::from_secs(120);
    let handles = start_peers(dir.path(), &name_refs, &base, &dataset()).await;
    let outcomes = wait_all(handles, Duration::from_secs(600)).await;
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    let drained = outcomes.iter().filter(|o| o.drained).count();
    let sent: Vec<f64> = outcomes
        .iter()
        .map(|o| o.transport.bytes_sent as f64 / (1024.0 * 1024.0))
        .collect();
    eprintln!(
        "{drained}/{PEERS} drained, consensus distance {distance:e}, accuracy {:.2}%, MiB sent \
         per peer {:.1}..{:.1}",
        outcomes[0].accuracy() * 100.0,
        sent.iter().cloned().fold(f64::MAX, f64::min),
        sent.iter().cloned().fold(f64::MIN, f64::max)
    );
    for o in &outcomes {
        assert!(o.drained, "{} drained before its deadline", o.name);
        assert_eq!(
            o.applied, outcomes[0].applied,
            "{}: same applied set",
            o.name
        );
        assert!(o.version > 0, "{} published", o.name);
    }
    assert!(distance < 1e-4, "consensus distance {distance}");
}
