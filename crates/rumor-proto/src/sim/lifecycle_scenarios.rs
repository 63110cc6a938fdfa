//! Scenarios of the peer lifecycle policy over the simulator: the `min_peers` gate, the join
//! timeout, the drain deadline and resume. Each runs for seeds 1, 2 and 3 (or the one in
//! `RUMOR_SIM_SEED`) and names the seed when it fails. The policy runs in the core, so these
//! cover what the node's driver only carries out.

use std::time::Duration;

use super::{scenario_seeds, NetModel, Sim};
use crate::core::{
    decide_resume, CheckpointFound, CoreConfig, Event, LifecycleConfig, RestoredState,
    ResumeDecision, ResumeRefusal,
};
use crate::wire::{Lifecycle, MemberStatus};

const P: usize = 8;

fn config(lifecycle: LifecycleConfig) -> CoreConfig {
    CoreConfig {
        param_count: P,
        lifecycle,
        ..CoreConfig::default()
    }
}

/// Every peer in `peers` is training.
fn training(s: &Sim, peers: &[usize]) -> bool {
    peers.iter().all(|&i| {
        s.peer(i)
            .is_some_and(|c| c.lifecycle() == Lifecycle::Training)
    })
}

/// The events of peer `i` that `pick` keeps.
fn events_of<T>(s: &Sim, i: usize, pick: impl Fn(&Event) -> Option<T>) -> Vec<T> {
    s.events[i].iter().filter_map(pick).collect()
}

fn training_started(s: &Sim, i: usize) -> Vec<(usize, bool)> {
    events_of(s, i, |e| match e {
        Event::TrainingStarted {
            members,
            short_of_min_peers,
        } => Some((*members, *short_of_min_peers)),
        _ => None,
    })
}

fn drain_ended(s: &Sim, i: usize) -> Vec<bool> {
    events_of(s, i, |e| match e {
        Event::DrainEnded { drained } => Some(*drained),
        _ => None,
    })
}

fn join_failed(s: &Sim, i: usize) -> usize {
    events_of(s, i, |e| matches!(e, Event::JoinFailed).then_some(())).len()
}

#[test]
fn min_peers_gate_holds_training_until_enough_members_are_live() {
    for seed in scenario_seeds() {
        let policy = LifecycleConfig {
            min_peers: Some(4),
            join_timeout: Some(Duration::from_secs(120)),
            ..LifecycleConfig::default()
        };
        let mut sim = Sim::new(config(policy), NetModel::default(), seed);
        sim.add_peer(vec![0.0; P], &[]);
        sim.add_peer(vec![0.0; P], &[0]);
        sim.add_peer(vec![0.0; P], &[0]);
        for _ in 0..100 {
            sim.run_for(Duration::from_millis(100));
            for i in 0..3 {
                assert_eq!(
                    sim.peer(i).map(|c| c.lifecycle()),
                    Some(Lifecycle::Joining),
                    "seed {seed}: peer {i} must not train with 3 of 4 members"
                );
            }
        }
        sim.add_peer(vec![0.0; P], &[0]);
        let all = [0, 1, 2, 3];
        assert!(
            sim.run_until(Duration::from_secs(10), Duration::from_millis(100), |s| {
                training(s, &all)
            }),
            "seed {seed}: all four train once the fourth is live"
        );
        for i in all {
            let started = training_started(&sim, i);
            assert_eq!(started.len(), 1, "seed {seed}: peer {i} starts once");
            assert!(
                started[0].0 >= 4 && !started[0].1,
                "seed {seed}: {started:?}"
            );
        }
    }
}

#[test]
fn join_timeout_fails_an_unwelcomed_peer_and_starts_a_joined_one_short() {
    for seed in scenario_seeds() {
        let policy = LifecycleConfig {
            min_peers: Some(3),
            join_timeout: Some(Duration::from_secs(5)),
            ..LifecycleConfig::default()
        };
        let mut sim = Sim::new(config(policy), NetModel::default(), seed);
        sim.add_peer(vec![0.0; P], &[]);
        sim.add_peer(vec![0.0; P], &[0]);
        // Its only seed (index 9) is never started: no one answers.
        sim.add_peer(vec![0.0; P], &[9]);
        sim.run_for(Duration::from_millis(4900));
        for i in 0..3 {
            assert!(
                training_started(&sim, i).is_empty(),
                "seed {seed}: peer {i}"
            );
            assert_eq!(join_failed(&sim, i), 0, "seed {seed}: peer {i}");
        }
        sim.run_for(Duration::from_millis(200));
        assert_eq!(
            join_failed(&sim, 2),
            1,
            "seed {seed}: the lone peer fails once"
        );
        assert!(sim.peer(2).is_some_and(|c| !c.is_joined()));
        assert!(training_started(&sim, 2).is_empty(), "seed {seed}");
        for i in 0..2 {
            assert_eq!(join_failed(&sim, i), 0, "seed {seed}: peer {i} joined");
            assert_eq!(
                training_started(&sim, i),
                vec![(2, true)],
                "seed {seed}: peer {i} trains with the 2 members known"
            );
        }
        assert!(training(&sim, &[0, 1]));
    }
}

#[test]
fn drain_deadline_stops_a_drain_that_cannot_complete() {
    for seed in scenario_seeds() {
        let policy = LifecycleConfig {
            min_peers: Some(4),
            drain_timeout: Some(Duration::from_secs(10)),
            ..LifecycleConfig::default()
        };
        let mut config = config(policy);
        // No failure detection within the test: the cut-off peer stays a live member.
        config.swim.probe_interval = Duration::from_secs(600);
        config.swim.probe_timeout = Duration::from_secs(300);
        let all = [0, 1, 2, 3];
        for partitioned in [false, true] {
            let mut sim = Sim::new(config.clone(), NetModel::default(), seed);
            sim.add_peer(vec![0.0; P], &[]);
            for _ in 1..4 {
                sim.add_peer(vec![0.0; P], &[0]);
            }
            assert!(
                sim.run_until(Duration::from_secs(10), Duration::from_millis(100), |s| {
                    training(s, &all)
                }),
                "seed {seed}: everyone trains"
            );
            for i in all {
                sim.with_peer(i, |c, now| c.publish(now, 0.25, vec![0.01; P]));
            }
            sim.run_for(Duration::from_secs(3));
            if partitioned {
                sim.partition(&[3], &[0, 1, 2]);
            }
            for i in all {
                sim.with_peer(i, |c, now| c.start_drain(now));
            }
            if partitioned {
                sim.run_for(Duration::from_millis(9900));
                for i in all {
                    assert!(drain_ended(&sim, i).is_empty(), "seed {seed}: peer {i}");
                }
                sim.run_for(Duration::from_millis(200));
                for i in all {
                    assert_eq!(
                        drain_ended(&sim, i),
                        vec![false],
                        "seed {seed}: peer {i} stops at the deadline, not drained"
                    );
                }
            } else {
                sim.run_for(Duration::from_secs(10));
                for i in all {
                    assert_eq!(
                        drain_ended(&sim, i),
                        vec![true],
                        "seed {seed}: peer {i} drains before the deadline"
                    );
                }
            }
        }
    }
}

#[test]
fn resume_restores_with_a_raised_incarnation_or_rejoins_from_a_snapshot() {
    for seed in scenario_seeds() {
        for damaged in [false, true] {
            resume_scenario(seed, damaged);
        }
        assert_eq!(
            decide_resume(CheckpointFound::Damaged, false),
            ResumeDecision::Refuse(ResumeRefusal::DamagedWithoutSeeds),
            "a damaged checkpoint without seeds is refused"
        );
    }
}

/// Peer 2 publishes 3 deltas, crashes and restarts from its checkpoint (or, `damaged`, from
/// nothing through the seeds); it must keep its published versions and outrank its old self.
fn resume_scenario(seed: u64, damaged: bool) {
    let policy = LifecycleConfig {
        min_peers: Some(3),
        ..LifecycleConfig::default()
    };
    let mut sim = Sim::new(config(policy), NetModel::default(), seed);
    sim.add_peer(vec![0.0; P], &[]);
    sim.add_peer(vec![0.0; P], &[0]);
    sim.add_peer(vec![0.0; P], &[0]);
    let all = [0, 1, 2];
    assert!(
        sim.run_until(Duration::from_secs(10), Duration::from_millis(100), |s| {
            training(s, &all)
        })
    );
    for _ in 0..3 {
        sim.with_peer(2, |c, now| c.publish(now, 0.5, vec![0.1; P]));
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(2));
    let old = sim
        .peer(2)
        .map(|c| (c.snapshot(), c.published(), c.incarnation()));
    let Some((snapshot, published, incarnation)) = old else {
        panic!("seed {seed}: peer 2 is running");
    };
    assert_eq!(published, 3);
    sim.crash(2);
    sim.run_for(Duration::from_secs(1));
    let found = if damaged {
        CheckpointFound::Damaged
    } else {
        CheckpointFound::Loaded {
            same_model: true,
            same_peer: true,
        }
    };
    let state = match decide_resume(found, true) {
        ResumeDecision::Restore => RestoredState {
            base: snapshot.base.to_vec(),
            applied: snapshot.applied.clone(),
            contents: snapshot.contents.clone(),
            published,
            incarnation,
        },
        ResumeDecision::QuarantineAndRejoin | ResumeDecision::StartOver => {
            RestoredState::lost(vec![0.0; P])
        }
        ResumeDecision::Refuse(why) => panic!("seed {seed}: refused: {why}"),
    };
    sim.restore_peer(2, state, &[0]);
    let rejoined = sim.run_until(Duration::from_secs(30), Duration::from_millis(100), |s| {
        s.peer(2)
            .is_some_and(|c| c.is_joined() && c.published() == 3)
            && (0..2).all(|i| s.status_of(i, 2) == Some(MemberStatus::Alive))
    });
    assert!(
        rejoined,
        "seed {seed} damaged {damaged}: peer 2 rejoins knowing its versions"
    );
    let core = sim
        .peer(2)
        .map(|c| (c.incarnation(), c.applied().clone(), c.base().to_vec()));
    let Some((new_incarnation, applied, base)) = core else {
        panic!("seed {seed}: peer 2 is running");
    };
    // Restored at one above its checkpoint (higher still if it must refute a suspicion that a
    // probe of its crashed self left behind); lost state starts at 1 and outranks its old self.
    assert!(
        new_incarnation > incarnation,
        "seed {seed} damaged {damaged}: incarnation {new_incarnation} after {incarnation}"
    );
    assert_eq!(applied, snapshot.applied, "seed {seed} damaged {damaged}");
    let same_base = base
        .iter()
        .zip(snapshot.base.iter())
        .all(|(a, b)| (a - b).abs() <= 1e-6);
    assert!(
        same_base,
        "seed {seed} damaged {damaged}: the base is kept or retaken"
    );
    // Its next delta is version 4 and reaches everyone.
    let next = sim.with_peer(2, |c, now| c.publish(now, 0.5, vec![0.1; P]));
    assert_eq!(next, Some(Ok(4)), "seed {seed} damaged {damaged}");
    let id = sim.peer(2).map(|c| c.id());
    assert!(
        sim.run_until(Duration::from_secs(10), Duration::from_millis(100), |s| {
            id.is_some_and(|id| {
                (0..3).all(|i| s.peer(i).is_some_and(|c| c.applied().contains(id, 4)))
            })
        })
    );
}

/// Four peers that each started alone (no seed reachable when they started, as the pods of a
/// StatefulSet may find only themselves in DNS at first) and wait for `min_peers = 4`: once
/// discovery hands each the four addresses, they merge into one cluster and all train.
#[test]
fn peers_that_started_apart_merge_through_discovered_addresses() {
    for seed in scenario_seeds() {
        let policy = LifecycleConfig {
            min_peers: Some(4),
            join_timeout: Some(Duration::from_secs(120)),
            ..LifecycleConfig::default()
        };
        let mut sim = Sim::new(config(policy), NetModel::default(), seed);
        let all = [0, 1, 2, 3];
        for _ in all {
            sim.add_peer(vec![0.0; P], &[]);
        }
        sim.run_for(Duration::from_secs(2));
        for i in all {
            assert_eq!(
                sim.peer(i).map(|c| c.live_count()),
                Some(1),
                "seed {seed}: peer {i} is alone"
            );
        }
        let addrs: Vec<_> = all.iter().map(|&i| Sim::addr(i)).collect();
        for i in all {
            sim.with_peer(i, |c, now| c.discovered(now, &addrs));
        }
        assert!(
            sim.run_until(Duration::from_secs(10), Duration::from_millis(100), |s| {
                training(s, &all)
                    && all
                        .iter()
                        .all(|&i| s.peer(i).is_some_and(|c| c.live_count() == 4))
            }),
            "seed {seed}: one cluster of four trains"
        );
        // Known addresses get no more join requests.
        let before: Vec<u64> = all
            .iter()
            .map(|&i| sim.peer(i).map_or(0, |c| c.stats().discovery_introductions))
            .collect();
        for i in all {
            sim.with_peer(i, |c, now| c.discovered(now, &addrs));
        }
        let after: Vec<u64> = all
            .iter()
            .map(|&i| sim.peer(i).map_or(0, |c| c.stats().discovery_introductions))
            .collect();
        assert_eq!(before, after, "seed {seed}");
    }
}
