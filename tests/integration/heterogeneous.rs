//! Honest peers that differ: one peer moves the model much further per delta than the others
//! (here a learning rate 20 times theirs). Its deltas would fail the others' norm check while
//! it has applied them itself; held to its own, tighter bound, they are scaled down before
//! they leave, and the cluster ends on one model.

use std::time::Duration;

use rumor::model;
use rumor::train::LrSchedule;

use crate::common::{dataset, heavy, start_peers_with, test_config, wait_all};

#[test]
fn a_peer_with_a_far_higher_learning_rate_is_clipped_and_the_cluster_ends_consistent() {
    heavy(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["steady-0", "steady-1", "eager"];
    let mut base = test_config();
    base.train.epochs = 1;
    base.train.lr_schedule = LrSchedule::Constant;
    base.peer.min_peers = names.len();
    // A tighter bar than the default 10, so that on a run short enough for the suite the eager
    // peer's deltas fail it by a wide margin (unclipped, the others refused over a hundred and
    // the drains ran out: checked by turning the clip off).
    base.gossip.max_delta_norm_factor = 2.0;
    let eager_lr = base.train.lr * 20.0;
    let handles = start_peers_with(dir.path(), &names, &base, &dataset(), |i, c| {
        if i == 2 {
            c.train.lr = eager_lr;
        }
    })
    .await;
    let outcomes = wait_all(handles, Duration::from_secs(300)).await;
    for o in &outcomes {
        eprintln!(
            "{}: drained {}, applied {}, clipped {} of {} own deltas, norm refusals {}",
            o.name,
            o.drained,
            o.applied.len(),
            o.stats.own_deltas_clipped,
            o.stats.deltas_published,
            o.stats.deltas_rejected.get("norm").copied().unwrap_or(0)
        );
    }
    let eager = &outcomes[2];
    assert!(
        eager.stats.own_deltas_clipped > 0,
        "the eager peer's deltas were scaled down"
    );
    for o in &outcomes {
        assert_eq!(
            o.stats.deltas_rejected.get("norm").copied().unwrap_or(0),
            0,
            "{}: no delta refused for its norm",
            o.name
        );
        assert!(o.drained, "{} drained", o.name);
        assert_eq!(
            o.applied, outcomes[0].applied,
            "{}: same applied set",
            o.name
        );
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    assert!(distance < 1e-4, "consensus distance {distance}");
}
