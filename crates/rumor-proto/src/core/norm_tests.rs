//! The norm check and the bound a peer holds its own deltas to: an honest peer whose deltas are
//! far larger than the others' (a higher learning rate, more steps per delta, a smaller view)
//! must never leave the cluster split between members that applied them and members that
//! refused them.

use std::time::Duration;

use super::drain_tests::{finish_drains, publish_last_and_drain, trained_cluster};
use super::tests::delta_values;
use super::*;
use crate::sim::Sim;

/// `n` peers publish `ordinary` rounds of ordinary deltas, then `big` rounds in which peer
/// `n - 1`'s deltas are 40 times the others' (scaled to its own bound when `clip` is set); then
/// every peer publishes its last delta and drains. Returns each peer's applied-set size at the
/// end of its drain (`None`: still draining after 5 s) and the norm refusals counted over the
/// cluster.
fn one_peer_with_large_deltas(
    seed: u64,
    n: usize,
    (ordinary, big): (u64, u64),
    clip: bool,
) -> (Vec<Option<u64>>, u64) {
    let mut sim: Sim = trained_cluster(seed, n, ordinary);
    let mut clipped = 0;
    for round in ordinary + 1..=ordinary + big {
        for i in 0..n {
            sim.with_peer(i, |c, now| {
                let scale = if i == n - 1 { 40.0 } else { 1.0 };
                let mut values: Vec<f32> =
                    delta_values(i, round).iter().map(|v| v * scale).collect();
                if clip {
                    if let Some(bound) = c.own_delta_norm_bound() {
                        clipped += u64::from(clip_to_norm(&mut values, bound).is_some());
                    }
                }
                c.publish(now, 1.0 / n as f32, values).unwrap();
            });
        }
        sim.run_for(Duration::from_millis(100));
    }
    if clip {
        // Every large delta but those published before anything was heard.
        assert!(
            clipped >= big - 1,
            "seed {seed}: {clipped} of {big} clipped"
        );
    }
    for i in 0..n {
        publish_last_and_drain(&mut sim, i, n, ordinary + big);
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
/// Once after ordinary rounds on 4 peers, once from the first round on 3 peers (where the
/// large peer's own deltas would own the median of a window that counted them).
#[test]
fn sim_a_peer_with_far_larger_deltas_is_clipped_and_the_cluster_drains_on_one_set() {
    for seed in [61u64, 62, 63] {
        for (n, rounds) in [(4usize, (6u64, 3u64)), (3, (0, 12))] {
            let (finished, refused) = one_peer_with_large_deltas(seed, n, rounds, true);
            assert_eq!(
                refused, 0,
                "seed {seed}, {n} peers: no norm refusal when clipped"
            );
            let all = n as u64 * (rounds.0 + rounds.1 + 1);
            assert!(
                finished.iter().all(|&f| f == Some(all)),
                "seed {seed}, {n} peers: every peer drains with all {all} deltas: {finished:?}"
            );

            let (finished, refused) = one_peer_with_large_deltas(seed, n, rounds, false);
            assert!(
                refused > 0,
                "seed {seed}, {n} peers: unclipped, the others refuse them"
            );
            assert!(
                finished.iter().any(Option::is_none),
                "seed {seed}, {n} peers: unclipped, the cluster cannot drain: {finished:?}"
            );
        }
    }
}
