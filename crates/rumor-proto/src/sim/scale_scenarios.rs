//! The merge and the drain at scale: many peers training through loss and churn, then all
//! draining, must end on one applied set and one base. Each runs for the scenario seeds (or the
//! one in `RUMOR_SIM_SEED`) and prints the seed when it fails.

use std::time::{Duration, Instant};

use super::{scenario_seeds, NetModel, Sim};
use crate::core::{CoreConfig, RestoredState};
use crate::version_vector::VersionVector;

pub(super) const P: usize = 8;

/// Deterministic delta values of `peer` in `round`.
fn values(peer: usize, round: usize) -> Vec<f32> {
    (0..P)
        .map(|k| ((peer * 7 + round * 3 + k) % 11) as f32 * 0.01 - 0.05)
        .collect()
}

/// What a running peer would checkpoint: enough to restart it from where it stopped. Without
/// `with_contents` it is a checkpoint from before content hashes were kept, which a restored
/// peer must still be able to drain from.
fn checkpoint(sim: &Sim, index: usize, with_contents: bool) -> Option<RestoredState> {
    sim.peer(index).map(|c| RestoredState {
        base: c.base().to_vec(),
        applied: c.applied().clone(),
        contents: if with_contents {
            c.contents()
        } else {
            Vec::new()
        },
        published: c.published(),
        incarnation: c.incarnation(),
    })
}

/// The churn of one run, by training round: crash some peers (two of them to come back from
/// their checkpoint a few rounds later, two for good), and start new ones that join through
/// peer 0 and train from then on.
pub(super) struct Churn {
    pub crash_at: usize,
    pub crashed: Vec<usize>,
    pub restart_at: usize,
    pub restarted: Vec<usize>,
    pub join_at: usize,
    pub joining: usize,
}

/// The 64-peer loss-and-churn setting: 10% loss, latency up to 20 ms; four peers crash at
/// round 2, two of them come back at round 6; three new peers join at round 4.
pub(super) fn loss_and_churn() -> (NetModel, Churn) {
    let net = NetModel {
        loss: 0.10,
        max_latency: Duration::from_millis(20),
        ..NetModel::default()
    };
    let churn = Churn {
        crash_at: 2,
        crashed: vec![10, 20, 30, 40],
        restart_at: 6,
        restarted: vec![10, 30],
        join_at: 4,
        joining: 3,
    };
    (net, churn)
}

/// Forms a cluster of `peers` through peer 0 on `net`, trains `rounds` rounds (every running,
/// joined peer publishes once per round, `every` apart) through `churn`, then has every running
/// peer drain. Each peer that finishes its drain leaves and stops, as the node does. Fails
/// unless every running peer finishes, all on the same applied set and base.
fn train_churn_and_drain(
    seed: u64,
    peers: usize,
    net: NetModel,
    rounds: usize,
    every: Duration,
    churn: &Churn,
) -> Result<String, String> {
    let config = CoreConfig {
        param_count: P,
        ..CoreConfig::default()
    };
    train_churn_and_drain_with(config, seed, peers, net, rounds, every, churn)
}

/// [`train_churn_and_drain`] with `config` (whose `param_count` must be [`P`]).
pub(super) fn train_churn_and_drain_with(
    config: CoreConfig,
    seed: u64,
    peers: usize,
    net: NetModel,
    rounds: usize,
    every: Duration,
    churn: &Churn,
) -> Result<String, String> {
    let mut sim = Sim::new(config, net, seed);
    if !sim.form_cluster(peers, Duration::from_secs(120)) {
        return Err(format!("the {peers} peers never all knew each other"));
    }
    let started = sim.now;
    let mut saved: Vec<(usize, RestoredState)> = Vec::new();
    for round in 0..rounds {
        if round == churn.crash_at {
            for &i in &churn.crashed {
                // The first peer to come back has a current checkpoint, the other an old one.
                let with_contents = churn.restarted.first() == Some(&i);
                if let Some(state) = checkpoint(&sim, i, with_contents) {
                    saved.push((i, state));
                }
                sim.crash(i);
            }
        }
        if round == churn.restart_at {
            for (i, state) in saved.drain(..) {
                if churn.restarted.contains(&i) {
                    sim.restore_peer(i, state, &[0]);
                }
            }
        }
        if round == churn.join_at {
            for _ in 0..churn.joining {
                sim.add_peer(vec![0.0; P], &[0]);
            }
        }
        for i in sim.running() {
            sim.with_peer(i, |c, now| {
                if !c.is_joined() {
                    return;
                }
                if c.lifecycle() < crate::wire::Lifecycle::Training {
                    c.start_training();
                }
                let weight = 1.0 / c.live_count().max(1) as f32;
                let _ = c.publish(now, weight, values(i, round));
            });
        }
        sim.run_for(every);
    }
    let trained = sim.now.saturating_duration_since(started);
    let draining = sim.running();
    for &i in &draining {
        sim.with_peer(i, |c, now| c.start_drain(now));
    }
    let drain_started = sim.now;
    let mut finished: Vec<Option<(VersionVector, Vec<f32>, Instant)>> = vec![None; sim.peers.len()];
    let mut verified = 0;
    let end = sim.now + Duration::from_secs(300);
    while sim.now < end && draining.iter().any(|&i| finished[i].is_none()) {
        sim.run_for(Duration::from_millis(20));
        for &i in &draining {
            let done = sim.peer(i).and_then(|c| {
                (finished[i].is_none() && c.drain_complete())
                    .then(|| (c.applied().clone(), c.base().to_vec()))
            });
            if let Some((applied, base)) = done {
                verified += sim.peer(i).map_or(0, |c| c.stats().signatures_verified);
                finished[i] = Some((applied, base, sim.now));
                sim.with_peer(i, |c, _| c.leave());
                sim.crash(i);
            }
        }
    }
    let stuck: Vec<usize> = draining
        .iter()
        .copied()
        .filter(|&i| finished[i].is_none())
        .collect();
    if !stuck.is_empty() {
        return Err(format!(
            "{} of {} peers never finished their drain: {stuck:?}",
            stuck.len(),
            draining.len()
        ));
    }
    let ends: Vec<&(VersionVector, Vec<f32>, Instant)> = finished.iter().flatten().collect();
    let (first_applied, first_base, _) = ends[0];
    for (i, (applied, base, _)) in finished
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.as_ref().map(|f| (i, f)))
    {
        if applied != first_applied {
            return Err(format!(
                "peer {i} drained on {} deltas, another on {}",
                applied.len(),
                first_applied.len()
            ));
        }
        let close = base
            .iter()
            .zip(first_base)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0));
        if !close {
            return Err(format!(
                "peer {i} holds another base on the same applied set"
            ));
        }
    }
    let (computed, cached) = sim.signature_checks();
    let last = ends
        .iter()
        .map(|(_, _, at)| *at)
        .max()
        .unwrap_or(drain_started);
    Ok(format!(
        "{} peers drained on one set of {} deltas; trained {trained:?}, drain {:?} (virtual), {} \
         messages delivered, {} lost, {verified} signature checks by the peers that drained, \
         {computed} computed and {cached} answered from the cache by all",
        draining.len(),
        first_applied.len(),
        last.saturating_duration_since(drain_started),
        sim.delivered,
        sim.dropped
    ))
}

pub(super) fn run(name: &str, scenario: impl Fn(u64) -> Result<String, String>) {
    for seed in scenario_seeds() {
        let wall = Instant::now();
        match scenario(seed) {
            Ok(report) => eprintln!("{name} seed {seed}: {report}; {:?} wall", wall.elapsed()),
            Err(e) => {
                panic!("{name} failed with seed {seed} (rerun with RUMOR_SIM_SEED={seed}): {e}")
            }
        }
    }
}

/// 64 peers at 10% loss: two crash for good, two crash and come back from their checkpoints,
/// three new ones join mid-run; then every peer drains to the same applied set.
#[test]
fn sixty_four_peers_with_loss_and_churn_drain_to_one_applied_set() {
    let (net, churn) = loss_and_churn();
    run("64 peers, 10% loss, churn", |seed| {
        train_churn_and_drain(seed, 64, net.clone(), 8, Duration::from_millis(500), &churn)
    });
}

/// 256 peers at 10% loss with the same kind of churn: four crash, two of them come back from
/// their checkpoints, four join mid-run; the drain still ends on one set. While draining, each
/// peer sends full digests to `fanout` members per round and drain beacons to the rest
/// (docs/ALGORITHM.md, *Drain condition*).
///
/// Not run by default: each seed takes 1–2 minutes of wall time and up to 2.4 GB of memory with
/// the simulator's crate at opt-level 3 on a 2-core machine (seeds 1–3: 38.0, 20.1 and 56.9 s
/// of virtual drain, 4.7, 6.7 and 4.2 million messages, 109, 137 and 72 s of wall time, the
/// first two beside other work). Training (8 rounds, 1.3 million messages) takes about 20 s:
/// the peers share one cache of valid signatures (`auth::verify_cache`), so each signed
/// statement costs one Ed25519 verification per run instead of one per peer, and per-message
/// work no longer walks the member table or the applied set. The drain sends a beacon from each
/// peer to each other one per 200 ms (about 300 000 messages per virtual second) and ends once
/// the two peers that crashed for good are declared dead, which takes a SWIM suspicion among
/// 256 members (7–43 s). Before suspected members with matching reports counted towards the
/// drain it never ended: under 10% loss some member was nearly always suspected.
#[test]
#[ignore = "slow: 1–2 minutes of wall time and up to 2.4 GB per seed; run with --ignored"]
fn two_hundred_fifty_six_peers_with_loss_and_churn_drain_to_one_applied_set() {
    let (net, _) = loss_and_churn();
    let churn = Churn {
        crash_at: 2,
        crashed: vec![50, 100, 150, 200],
        restart_at: 5,
        restarted: vec![50, 150],
        join_at: 3,
        joining: 4,
    };
    run("256 peers, 10% loss, churn", |seed| {
        train_churn_and_drain(
            seed,
            256,
            net.clone(),
            8,
            Duration::from_millis(500),
            &churn,
        )
    });
}
