//! Drain tests through the simulator: when peers may stop, what they hold when they do, and
//! how they agree after partitions and evicted logs. Compiled only under `#[cfg(test)]`.

use std::time::Duration;

use super::tests::{delta_values, sim_config, P};
use super::*;
use crate::sim::{NetModel, Sim};

/// A peer cut off just before the drain is declared dead by the others; without the settle
/// period they would finish at once, without its last delta. With it, the heal one second
/// into the drain lets it refute, and every peer finishes with the same applied set.
#[test]
fn sim_drain_waits_for_a_member_falsely_declared_dead() {
    for seed in [5u64, 6, 7] {
        let mut sim = Sim::new(sim_config(), NetModel::default(), seed);
        let n = 4;
        assert!(sim.form_cluster(n, Duration::from_secs(30)));
        for i in 0..n {
            sim.with_peer(i, |c, _| c.start_training());
            sim.with_peer(i, |c, now| {
                c.publish(now, 0.25, delta_values(i, 1)).unwrap()
            });
        }
        sim.run_for(Duration::from_secs(1));
        sim.partition(&[0, 1, 2], &[3]);
        sim.with_peer(3, |c, now| {
            c.publish(now, 0.25, delta_values(3, 2)).unwrap()
        });
        let declared = sim.run_until(Duration::from_secs(120), Duration::from_millis(100), |s| {
            (0..3).all(|i| s.status_of(i, 3) == Some(crate::wire::MemberStatus::Dead))
        });
        assert!(declared, "seed {seed}: the cut-off peer is declared dead");
        for i in 0..n {
            sim.with_peer(i, |c, now| c.start_drain(now));
        }
        sim.run_for(Duration::from_secs(1));
        assert!(
            (0..3).all(|i| !sim.peer(i).unwrap().drain_complete()),
            "seed {seed}: nobody finishes within the settle period"
        );
        sim.heal();
        // Each peer's applied set when it first may stop.
        let mut finished: Vec<Option<u64>> = vec![None; n];
        let all = sim.run_until(Duration::from_secs(60), Duration::from_millis(50), |s| {
            for (i, f) in finished.iter_mut().enumerate() {
                if let Some(c) = s.peer(i) {
                    if f.is_none() && c.drain_complete() {
                        *f = Some(c.applied().len());
                    }
                }
            }
            finished.iter().all(Option::is_some)
        });
        assert!(
            all,
            "seed {seed}: every peer finishes its drain: {finished:?}"
        );
        assert!(
            finished.iter().all(|&f| f == Some(n as u64 + 1)),
            "seed {seed}: every peer stops with all {} deltas: {finished:?}",
            n + 1
        );
    }
}

/// Forms a lossless cluster of `n` peers through peer 0, starts training everywhere and has each
/// peer publish `rounds` deltas, 100 ms apart.
pub(super) fn trained_cluster(seed: u64, n: usize, rounds: u64) -> Sim {
    let mut sim = Sim::new(sim_config(), NetModel::default(), seed);
    assert!(
        sim.form_cluster(n, Duration::from_secs(30)),
        "seed {seed}: the cluster forms"
    );
    for i in 0..n {
        sim.with_peer(i, |c, _| c.start_training());
    }
    for round in 1..=rounds {
        for i in 0..n {
            sim.with_peer(i, |c, now| {
                c.publish(now, 1.0 / n as f32, delta_values(i, round))
                    .unwrap()
            });
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim
}

/// Peer `i` of `n` publishes its last delta (round `rounds + 1`) and starts its drain, as the
/// trainer does when its budget is spent.
pub(super) fn publish_last_and_drain(sim: &mut Sim, i: usize, n: usize, rounds: u64) {
    sim.with_peer(i, |c, now| {
        c.publish(now, 1.0 / n as f32, delta_values(i, rounds + 1))
            .unwrap();
        c.start_drain(now);
    });
}

/// Runs until every peer has finished its drain, doing what the node does then (leave, stop);
/// returns each peer's virtual time and applied-set size when it finished, or `None` for a peer
/// still draining after `limit`.
pub(super) fn finish_drains(sim: &mut Sim, limit: Duration) -> Vec<Option<(Instant, u64)>> {
    let n = sim.peers.len();
    let mut finished: Vec<Option<(Instant, u64)>> = vec![None; n];
    let end = sim.now + limit;
    while sim.now < end && finished.iter().any(Option::is_none) {
        sim.run_for(Duration::from_millis(10));
        for (i, f) in finished.iter_mut().enumerate() {
            let done = sim
                .peer(i)
                .and_then(|c| (f.is_none() && c.drain_complete()).then(|| c.applied().len()));
            if let Some(applied) = done {
                *f = Some((sim.now, applied));
                sim.with_peer(i, |c, _| c.leave());
                sim.crash(i);
            }
        }
    }
    finished
}

/// With no loss and no failure a drain ends within a second of the applied sets agreeing (no
/// fixed settle time), with every peer holding every delta; peers that finish first leave, and
/// that does not hold the others back.
#[test]
fn sim_lossless_drain_ends_within_a_second_of_agreement() {
    for seed in [21u64, 22, 23] {
        let n = 4;
        let rounds = 3;
        let mut sim = trained_cluster(seed, n, rounds);
        // Peers run out of training budget at different times, each publishing its last delta
        // as it starts draining (as the trainer does).
        for i in 0..n {
            publish_last_and_drain(&mut sim, i, n, rounds);
            sim.run_for(Duration::from_millis(300));
        }
        // The instant every peer is draining with the same applied set (virtual time).
        let agreed = sim.run_until(Duration::from_secs(10), Duration::from_millis(10), |s| {
            let first = s.peer(0).map(|c| c.applied().clone());
            (0..n).all(|i| {
                s.peer(i).is_some_and(|c| {
                    c.lifecycle() == Lifecycle::Draining && Some(c.applied()) == first.as_ref()
                })
            })
        });
        assert!(agreed, "seed {seed}: the applied sets agree");
        let agreed_at = sim.now;
        let finished = finish_drains(&mut sim, Duration::from_secs(30));
        for (i, f) in finished.iter().enumerate() {
            let (at, applied) = f.unwrap_or_else(|| panic!("seed {seed}: peer {i} never finished"));
            let after = at.saturating_duration_since(agreed_at);
            eprintln!("seed {seed}: peer {i} finished {after:?} after agreement");
            assert!(
                after <= Duration::from_secs(1),
                "seed {seed}: peer {i} finished {after:?} after the applied sets agreed"
            );
            assert_eq!(applied, n as u64 * (rounds + 1), "seed {seed}: peer {i}");
        }
    }
}

/// Once every member drains, a peer reports holdings that changed at once (at most four times
/// a drain round) instead of at its next round. Three peers drain first; the last one starts
/// its drain, with its last delta, 180 ms before their next round: every peer finishes within
/// half a round (100 ms) of that, where waiting for the rounds took over 180 ms.
#[test]
fn sim_the_last_delta_of_a_run_is_reported_without_waiting_for_a_round() {
    for seed in [41u64, 42, 43] {
        let n = 4;
        let rounds = 3;
        let mut sim = trained_cluster(seed, n, rounds);
        for i in 0..n - 1 {
            publish_last_and_drain(&mut sim, i, n, rounds);
        }
        // Their rounds fall every 200 ms from now: the last peer starts 20 ms after the second.
        sim.run_for(Duration::from_millis(420));
        assert!(
            (0..n - 1).all(|i| sim.peer(i).is_some_and(|c| !c.drain_complete())),
            "seed {seed}: nobody finishes while a member still trains"
        );
        publish_last_and_drain(&mut sim, n - 1, n, rounds);
        let started = sim.now;
        let finished = finish_drains(&mut sim, Duration::from_secs(10));
        for (i, f) in finished.iter().enumerate() {
            let (at, applied) = f.unwrap_or_else(|| panic!("seed {seed}: peer {i} never finished"));
            let after = at.saturating_duration_since(started);
            assert!(
                after <= Duration::from_millis(100),
                "seed {seed}: peer {i} finished {after:?} after the last peer began its drain"
            );
            assert_eq!(applied, n as u64 * (rounds + 1), "seed {seed}: peer {i}");
        }
    }
}

/// A peer cut off for 2 s (shorter than the old settle time, too short to be declared dead) just
/// as everyone starts draining, with its last delta not yet out: the others suspect it but do not
/// finish without it, and after the heal every peer finishes with every delta.
#[test]
fn sim_drain_waits_for_a_briefly_cut_off_member() {
    for seed in [31u64, 32, 33] {
        let n = 4;
        let rounds = 3;
        let mut sim = trained_cluster(seed, n, rounds);
        sim.partition(&[0, 1, 2], &[3]);
        for i in 0..n {
            publish_last_and_drain(&mut sim, i, n, rounds);
        }
        let mut ended_early = false;
        for _ in 0..20 {
            sim.run_for(Duration::from_millis(100));
            ended_early |= (0..n).any(|i| sim.peer(i).is_some_and(Core::drain_complete));
        }
        assert!(
            !ended_early,
            "seed {seed}: nobody finishes while peer 3 is cut off"
        );
        assert!(
            (0..3).all(|i| sim.status_of(i, 3) != Some(crate::wire::MemberStatus::Dead)),
            "seed {seed}: 2 s is too short to declare peer 3 dead"
        );
        sim.heal();
        let finished = finish_drains(&mut sim, Duration::from_secs(60));
        assert!(
            finished
                .iter()
                .all(|f| f.is_some_and(|(_, applied)| applied == n as u64 * (rounds + 1))),
            "seed {seed}: every peer finishes with all {} deltas: {finished:?}",
            n as u64 * (rounds + 1)
        );
    }
}

/// Peers whose delta logs hold only 8 deltas, one of them cut off for 20 s while everyone
/// trains, so that after the heal most gaps can be filled only by snapshots, each of which drops
/// what the receiver can no longer re-apply; drains start 0 to 3 s after the heal, 150 ms
/// apart. Every peer finishes its drain, and all with the same applied set and base. (Before
/// snapshots had to outrank an inexact install, 4 of 48 such runs ended with a peer drained on
/// another set, and the peers traded losses until as few as 246 of 840 deltas were left.)
#[test]
fn sim_drained_peers_agree_when_logs_evict_what_a_partition_missed() {
    for (seed, after_heal) in (41u64..57).zip([0u64, 2, 5, 30].into_iter().cycle()) {
        let n = 4;
        let config = CoreConfig {
            delta_log_bytes: P * 4 * 8,
            ..sim_config()
        };
        let net = NetModel {
            loss: 0.05,
            max_latency: Duration::from_millis(40),
            ..NetModel::default()
        };
        let mut sim = Sim::new(config, net, seed);
        assert!(
            sim.form_cluster(n, Duration::from_secs(30)),
            "seed {seed}: forms"
        );
        for i in 0..n {
            sim.with_peer(i, |c, _| c.start_training());
        }
        let mut round = 0u64;
        let mut train = |sim: &mut Sim, rounds: u64| {
            for _ in 0..rounds {
                round += 1;
                for i in 0..n {
                    sim.with_peer(i, |c, now| {
                        c.publish(now, 1.0 / n as f32, delta_values(i, round))
                            .unwrap()
                    });
                }
                sim.run_for(Duration::from_millis(100));
            }
        };
        train(&mut sim, 10);
        sim.partition(&[0, 1, 2], &[3]);
        train(&mut sim, 200);
        sim.heal();
        train(&mut sim, after_heal);
        for i in 0..n {
            sim.with_peer(i, |c, now| c.start_drain(now));
            sim.run_for(Duration::from_millis(150));
        }
        let mut finished: Vec<Option<(VersionVector, Vec<f32>)>> = vec![None; n];
        let end = sim.now + Duration::from_secs(120);
        while sim.now < end && finished.iter().any(Option::is_none) {
            sim.run_for(Duration::from_millis(10));
            for (i, f) in finished.iter_mut().enumerate() {
                let done = sim.peer(i).and_then(|c| {
                    (f.is_none() && c.drain_complete())
                        .then(|| (c.applied().clone(), c.base().to_vec()))
                });
                if let Some(state) = done {
                    *f = Some(state);
                    sim.with_peer(i, |c, _| c.leave());
                    sim.crash(i);
                }
            }
        }
        let done: Vec<&(VersionVector, Vec<f32>)> = finished.iter().flatten().collect();
        let sizes: Vec<u64> = done.iter().map(|(a, _)| a.len()).collect();
        assert_eq!(done.len(), n, "seed {seed}: every peer drains: {sizes:?}");
        for (applied, base) in &done {
            assert_eq!(
                applied, &done[0].0,
                "seed {seed}: drained on other sets: {sizes:?}"
            );
            let distance: f32 = base
                .iter()
                .zip(&done[0].1)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(distance < 1e-4, "seed {seed}: bases differ by {distance}");
        }
    }
}

/// Beyond `fanout` + 1 peers, a drain round sends full digests to `fanout` members and drain
/// beacons to the others; beacons that say draining with this peer's summary count as
/// agreement, and one that differs is answered with a full digest.
#[test]
fn drain_beacons_stand_in_for_digests_beyond_fanout() {
    use super::tests::{core_with_members, drain, peer, sender};
    use crate::wire::{DrainBeacon, Lifecycle, MessageId, MessageKind};
    let (mut core, now) = core_with_members(8);
    core.start_training();
    core.start_drain(now);
    core.handle_timeout(now);
    let (sent, _) = drain(&mut core);
    let fanout = core.config().fanout;
    let sent_to = |kind: MessageKind| -> usize {
        sent.iter()
            .filter(|t| t.envelope.payload.kind() == kind)
            .map(|t| t.to.len())
            .sum()
    };
    assert_eq!(sent_to(MessageKind::Digest), fanout);
    assert_eq!(sent_to(MessageKind::DrainBeacon), 7 - fanout);
    let summary = core.replica.drain_summary();
    let beacon = |n: u128, summary: [u8; 16]| Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(n).id,
        origin_addr: peer(n).addr,
        version: 0,
        ttl: 1,
        payload: Payload::DrainBeacon(DrainBeacon {
            lifecycle: Lifecycle::Draining,
            summary,
        }),
    };
    for n in 2..8 {
        core.handle_message(now, sender(n), beacon(n, summary));
    }
    assert!(!core.drain_complete(), "member 8 has not reported");
    drain(&mut core);
    core.handle_message(now, sender(8), beacon(8, [7; 16]));
    assert!(!core.drain_complete(), "member 8 holds something else");
    let answered = drain(&mut core)
        .0
        .into_iter()
        .any(|t| t.envelope.payload.kind() == MessageKind::Digest && t.to == vec![peer(8).addr]);
    assert!(answered, "a differing beacon is answered with a digest");
    core.handle_message(now, sender(8), beacon(8, summary));
    assert!(
        core.drain_complete(),
        "every member reported the same holdings"
    );
}

/// A digest from member `n`: it is `lifecycle` and holds `applied`.
fn digest_from(
    n: u128,
    applied: &crate::version_vector::VersionVector,
    lifecycle: Lifecycle,
) -> Envelope {
    use super::tests::peer;
    Envelope {
        id: crate::id::MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(n).id,
        origin_addr: peer(n).addr,
        version: 0,
        ttl: 1,
        payload: Payload::Digest(crate::wire::Digest {
            applied: applied.clone(),
            lifecycle,
            reply: true,
            contents: Vec::new(),
            equivocations: Vec::new(),
        }),
    }
}

/// Member `n` reports, at `at`, that it is `lifecycle` and holds exactly what `core` holds; the
/// core's answers are drained.
fn hear_report(core: &mut Core, at: Instant, n: u128, lifecycle: Lifecycle) {
    let applied = core.applied().clone();
    core.handle_message(
        at,
        super::tests::sender(n),
        digest_from(n, &applied, lifecycle),
    );
    super::tests::drain(core);
}

/// Member `n`'s signed record with `status`, as a third member would gossip it.
fn record_with(n: u128, status: crate::wire::MemberStatus) -> crate::wire::MemberRecord {
    let mut record = super::tests::member(n);
    record.status = status;
    membership::sign_record(&super::tests::peer(n).keys, &mut record);
    record
}

/// A suspected member blocks the drain only until it reports this peer's applied set: under
/// loss some member of a large cluster is nearly always suspected, so requiring none would keep
/// every peer draining. With a member declared dead (the drain must settle), a suspect's
/// matching report counts only while it is at most `drain_settle` old: one cut off since could
/// hold the dead member's last delta.
#[test]
fn a_suspected_member_with_a_matching_report_does_not_block_the_drain() {
    use super::tests::{core_with_members, sender, view_from};
    use crate::wire::MemberStatus;

    // No member dead: a matching report is enough, however old.
    let (mut core, now) = core_with_members(3);
    core.start_training();
    core.publish(now, 1.0 / 3.0, vec![0.1; P]).unwrap();
    core.start_drain(now);
    core.handle_message(
        now,
        sender(2),
        view_from(2, 1, vec![record_with(3, MemberStatus::Suspect)]),
    );
    assert_eq!(
        core.membership
            .get(&super::tests::peer(3).id)
            .map(|m| m.status),
        Some(MemberStatus::Suspect)
    );
    hear_report(&mut core, now, 2, Lifecycle::Draining);
    hear_report(&mut core, now, 3, Lifecycle::Training);
    assert!(
        !core.drain_complete(),
        "a suspect still training blocks the drain"
    );
    hear_report(&mut core, now, 3, Lifecycle::Draining);
    assert!(
        core.drain_complete(),
        "a suspect that reports this peer's set does not"
    );

    // Member 4 declared dead: the drain settles, and the suspect's report must stay fresh.
    let settle = super::tests::config().drain_settle;
    let (mut core, now) = core_with_members(4);
    core.start_training();
    core.publish(now, 0.25, vec![0.1; P]).unwrap();
    core.start_drain(now);
    core.handle_message(
        now,
        sender(2),
        view_from(
            2,
            1,
            vec![
                record_with(3, MemberStatus::Suspect),
                record_with(4, MemberStatus::Dead),
            ],
        ),
    );
    hear_report(&mut core, now, 2, Lifecycle::Draining);
    hear_report(&mut core, now, 3, Lifecycle::Draining);
    let later = now + settle + Duration::from_millis(100);
    hear_report(&mut core, later, 2, Lifecycle::Draining);
    assert!(
        !core.drain_complete(),
        "a suspect's report older than drain_settle does not count while a member is dead"
    );
    let mut at = later;
    while at <= later + settle + Duration::from_millis(200) {
        hear_report(&mut core, at, 2, Lifecycle::Draining);
        hear_report(&mut core, at, 3, Lifecycle::Draining);
        at += Duration::from_millis(200);
    }
    assert!(
        core.drain_complete(),
        "fresh matching reports from the suspect let it settle"
    );
}
