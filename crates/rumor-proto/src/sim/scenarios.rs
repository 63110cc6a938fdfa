//! Membership and merge scenarios, as scripts of steps over the simulator. Each runs for
//! several seeds (or the one in `RUMOR_SIM_SEED`) and prints the seed when it fails.

use std::time::{Duration, Instant};

use super::{NetModel, Sim, Step};
use crate::core::CoreConfig;
use crate::wire::MemberStatus;

const P: usize = 8;

fn seeds() -> Vec<u64> {
    match std::env::var("RUMOR_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3],
    }
}

fn run(name: &str, net: NetModel, steps: &[Step]) {
    for seed in seeds() {
        let config = CoreConfig {
            param_count: P,
            ..CoreConfig::default()
        };
        let mut sim = Sim::new(config, net.clone(), seed);
        let started = Instant::now();
        if let Err(e) = sim.run_script(steps) {
            panic!(
                "scenario `{name}` failed with seed {seed} (rerun with RUMOR_SIM_SEED={seed}): {e}"
            );
        }
        eprintln!(
            "scenario `{name}` seed {seed}: ok, {} messages delivered, {} dropped, {:?} wall",
            sim.delivered,
            sim.dropped,
            started.elapsed()
        );
    }
}

fn everyone_knows_everyone(s: &Sim) -> bool {
    let running = s.running();
    running.iter().all(|&i| {
        s.peer(i)
            .is_some_and(|c| c.is_joined() && c.live_count() == running.len())
    })
}

fn no_one_declared_dead(s: &Sim) -> bool {
    s.running().iter().all(|&i| {
        s.peer(i)
            .is_some_and(|c| c.members().all(|m| m.status != MemberStatus::Dead))
    })
}

fn applied_sets_equal(s: &Sim) -> bool {
    let running = s.running();
    let Some(first) = running.first().and_then(|&i| s.peer(i)) else {
        return false;
    };
    running.iter().all(|&i| {
        s.peer(i).is_some_and(|c| {
            c.applied() == first.applied()
                && c.base()
                    .iter()
                    .zip(first.base())
                    .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0))
        })
    })
}

#[test]
fn join_through_one_seed_reaches_all_of_32_peers() {
    run(
        "join 32",
        NetModel::default(),
        &[
            Step::AddPeers {
                count: 1,
                seeds: vec![],
            },
            Step::AddPeers {
                count: 31,
                seeds: vec![0],
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(30),
                what: "all 32 peers know all 32",
                check: everyone_knows_everyone,
            },
            Step::ExpectAlways {
                duration: Duration::from_secs(30),
                what: "no false positive in a healthy cluster",
                check: no_one_declared_dead,
            },
        ],
    );
}

#[test]
fn a_crashed_peer_is_declared_dead_by_all_others() {
    fn crashed_is_dead_everywhere(s: &Sim) -> bool {
        s.running()
            .iter()
            .all(|&i| s.status_of(i, 3) == Some(MemberStatus::Dead))
    }
    run(
        "crash",
        NetModel::default(),
        &[
            Step::AddPeers {
                count: 1,
                seeds: vec![],
            },
            Step::AddPeers {
                count: 9,
                seeds: vec![0],
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(30),
                what: "all 10 know all 10",
                check: everyone_knows_everyone,
            },
            Step::Crash(3),
            Step::ExpectWithin {
                limit: Duration::from_secs(60),
                what: "every survivor declares peer 3 dead",
                check: crashed_is_dead_everywhere,
            },
        ],
    );
}

#[test]
fn a_slow_peer_under_20_percent_loss_is_never_declared_dead() {
    let slow = NetModel {
        loss: 0.2,
        duplicate: 0.0,
        min_latency: Duration::from_millis(50),
        max_latency: Duration::from_millis(400),
    };
    run(
        "slow host",
        NetModel::default(),
        &[
            Step::AddPeers {
                count: 1,
                seeds: vec![],
            },
            Step::AddPeers {
                count: 15,
                seeds: vec![0],
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(30),
                what: "all 16 know all 16",
                check: everyone_knows_everyone,
            },
            Step::SlowHost(5, slow),
            Step::ExpectAlways {
                duration: Duration::from_secs(300),
                what: "no peer is ever declared dead",
                check: no_one_declared_dead,
            },
        ],
    );
}

#[test]
fn a_healed_partition_of_16_reconverges_membership_and_applied_sets() {
    let left: Vec<usize> = (0..8).collect();
    let right: Vec<usize> = (8..16).collect();
    let all: Vec<usize> = (0..16).collect();
    run(
        "partition",
        NetModel::default(),
        &[
            Step::AddPeers {
                count: 1,
                seeds: vec![],
            },
            Step::AddPeers {
                count: 15,
                seeds: vec![0],
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(30),
                what: "all 16 know all 16",
                check: everyone_knows_everyone,
            },
            Step::Publish {
                peers: all.clone(),
                rounds: 3,
                every: Duration::from_millis(200),
            },
            Step::Partition(left.clone(), right.clone()),
            Step::Publish {
                peers: all,
                rounds: 20,
                every: Duration::from_secs(2),
            },
            Step::Heal,
            Step::ExpectWithin {
                limit: Duration::from_secs(120),
                what: "membership reconverges: all 16 alive everywhere",
                check: everyone_knows_everyone,
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(120),
                what: "applied sets and bases reconverge",
                check: applied_sets_equal,
            },
        ],
    );
}

#[test]
fn two_hundred_peers_join_through_one_seed_in_seconds() {
    let started = Instant::now();
    run(
        "join 200",
        NetModel::default(),
        &[
            Step::AddPeers {
                count: 1,
                seeds: vec![],
            },
            Step::AddPeers {
                count: 199,
                seeds: vec![0],
            },
            Step::ExpectWithin {
                limit: Duration::from_secs(60),
                what: "all 200 peers know all 200",
                check: everyone_knows_everyone,
            },
        ],
    );
    eprintln!(
        "200 simulated peers, 3 seeds: {:?} of wall time",
        started.elapsed()
    );
}
