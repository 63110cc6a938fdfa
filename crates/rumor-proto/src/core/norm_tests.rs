//! The norm check and the bound a peer holds its own deltas to: an honest peer whose deltas are
//! far larger than the others' (a higher learning rate, more steps per delta, a smaller view)
//! must never leave the cluster split between members that applied them and members that
//! refused them.

use std::time::Duration;

use super::drain_tests::{finish_drains, publish_last_and_drain, trained_cluster};
use super::tests::delta_values;
use super::*;
use crate::sim::Sim;

/// After a few ordinary rounds on 4 peers, peer 3 publishes `big` deltas 40 times the others'
/// size, scaled to its own bound when `clip` is set; then every peer publishes its last delta
/// and drains. Returns each peer's applied-set size at the end of its drain (`None`: still
/// draining after 5 s) and the norm refusals counted over the cluster.
fn one_peer_with_large_deltas(seed: u64, clip: bool) -> (Vec<Option<u64>>, u64) {
    let (n, rounds, big) = (4usize, 6u64, 3u64);
    let mut sim: Sim = trained_cluster(seed, n, rounds);
    for round in rounds + 1..=rounds + big {
        sim.with_peer(n - 1, |c, now| {
            let mut values: Vec<f32> = delta_values(n - 1, round)
                .iter()
                .map(|v| v * 40.0)
                .collect();
            if clip {
                let bound = c.own_delta_norm_bound();
                assert!(bound.is_some(), "seed {seed}: the peer has a bound");
                let clipped = clip_to_norm(&mut values, bound.unwrap_or_default());
                assert!(clipped.is_some(), "seed {seed}: round {round} is clipped");
            }
            c.publish(now, 1.0 / n as f32, values).unwrap();
        });
        sim.run_for(Duration::from_millis(100));
    }
    for i in 0..n {
        // The others' last deltas take the rounds peer 3 spent on its large ones.
        let last = if i == n - 1 { rounds + big } else { rounds };
        publish_last_and_drain(&mut sim, i, n, last);
    }
    let refused: u64 = (0..n)
        .filter_map(|i| sim.peer(i))
        .map(|c| c.stats().deltas_rejected.get("norm").copied().unwrap_or(0))
        .sum();
    let finished = finish_drains(&mut sim, Duration::from_secs(5));
    (
        finished
            .iter()
            .map(|f| f.map(|(_, applied)| applied))
            .collect(),
        refused,
    )
}

/// Clipped to its own bound, the large peer's deltas pass every member's check, and every peer
/// drains with every delta. Unclipped, the same deltas are refused by the others while their
/// origin holds them, and nobody can finish its drain: the split the bound exists to prevent.
#[test]
fn sim_a_peer_with_far_larger_deltas_is_clipped_and_the_cluster_drains_on_one_set() {
    for seed in [61u64, 62, 63] {
        let (finished, refused) = one_peer_with_large_deltas(seed, true);
        assert_eq!(refused, 0, "seed {seed}: no norm refusals when clipped");
        // 4 peers × 7 deltas, and peer 3's 3 large ones.
        let all = 4 * 7 + 3;
        assert!(
            finished.iter().all(|&f| f == Some(all)),
            "seed {seed}: every peer drains with all {all} deltas: {finished:?}"
        );

        let (finished, refused) = one_peer_with_large_deltas(seed, false);
        assert!(
            refused > 0,
            "seed {seed}: unclipped, the others refuse them"
        );
        assert!(
            finished.iter().any(Option::is_none),
            "seed {seed}: unclipped, the cluster cannot drain: {finished:?}"
        );
    }
}
