//! Unit tests of the core, driven directly and through the simulator. This whole file is
//! compiled only under `#[cfg(test)]` (see `mod tests` in `core/mod.rs`).

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::id::{MessageId, PeerId};
use crate::sim::{NetModel, Sim};
use crate::wire::{DeltaPayload, Digest, MembershipView, MessageKind, Snapshot};

pub(super) const P: usize = 16;

pub(super) fn config() -> CoreConfig {
    CoreConfig {
        param_count: P,
        ..CoreConfig::default()
    }
}

/// Test member `n` (keys of the test CA's member `n`, id bound to them).
pub(super) fn peer(n: u128) -> LocalPeer {
    let (id, keys) = crate::auth::test_keys::member(n as u64);
    LocalPeer {
        id,
        name: format!("p{n}"),
        addr: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(),
        keys,
    }
}

/// Member `n` as the transport reports it: its address and certificate key.
pub(super) fn sender(n: u128) -> Sender {
    let p = peer(n);
    Sender {
        addr: p.addr,
        key: p.keys.key_id(),
    }
}

/// A delta signed by its origin.
pub(super) fn signed_delta(
    origin: u128,
    version: u64,
    weight: f32,
    values: Vec<f32>,
) -> DeltaPayload {
    let o = peer(origin);
    let content = crate::auth::content_hash(&values);
    let statement = crate::auth::statement::delta(o.id, version, weight, &content);
    DeltaPayload {
        weight,
        values: values.into(),
        signature: o.keys.signer.sign(&statement).unwrap(),
    }
}

pub(super) fn delta_envelope(origin: u128, version: u64, ttl: u8, value: f32) -> Envelope {
    let o = peer(origin);
    Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: o.id,
        origin_addr: o.addr,
        version,
        ttl,
        payload: Payload::Delta(signed_delta(origin, version, 0.5, vec![value; P])),
    }
}

/// Member `n`'s record, signed by it.
pub(super) fn member(n: u128) -> MemberRecord {
    let p = peer(n);
    let mut record = MemberRecord {
        peer_id: p.id,
        name: p.name,
        addr: p.addr,
        incarnation: 0,
        heartbeat: 1,
        status: MemberStatus::Alive,
        lifecycle: Lifecycle::Training,
        published: 0,
        credential: crate::auth::Credential::new(Vec::new()),
        signature: Default::default(),
    };
    membership::sign_record(&p.keys, &mut record);
    record
}

/// Member `n`'s signed record saying it left.
pub(super) fn left_record(n: u128) -> MemberRecord {
    let mut record = member(n);
    record.status = MemberStatus::Left;
    record.lifecycle = Lifecycle::Stopped;
    membership::sign_record(&peer(n).keys, &mut record);
    record
}

/// A core (peer 1) that knows peers 2..=n.
/// A one-hop membership view (no push-pull) from peer `sender`, carrying `members`.
pub(super) fn view_from(sender: u128, version: u64, members: Vec<MemberRecord>) -> Envelope {
    Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(sender).id,
        origin_addr: peer(sender).addr,
        version,
        ttl: 1,
        payload: Payload::Membership(MembershipView {
            members,
            push_pull: false,
            reply: false,
        }),
    }
}

pub(super) fn core_with_members(n: u128) -> (Core, Instant) {
    let now = Instant::now();
    let mut core = Core::new(config(), peer(1), vec![0.0; P], vec![], 7, now);
    let view = view_from(2, 1, (2..=n).map(member).collect());
    core.handle_message(now, sender(2), view);
    drain(&mut core);
    (core, now)
}

pub(super) fn drain(core: &mut Core) -> (Vec<Transmit>, Vec<Event>) {
    let mut t = Vec::new();
    let mut e = Vec::new();
    while let Some(x) = core.poll_transmit() {
        t.push(x);
    }
    while let Some(x) = core.poll_event() {
        e.push(x);
    }
    (t, e)
}

#[test]
fn same_envelope_id_twice_is_handled_once() {
    let (mut core, now) = core_with_members(5);
    let env = delta_envelope(2, 1, 3, 1.0);
    core.handle_message(now, sender(2), env.clone());
    core.handle_message(now, sender(3), env);
    assert_eq!(core.stats().duplicates_dropped, 1);
    assert_eq!(core.stats().deltas_applied, 1);
    assert!(core.base().iter().all(|&v| v == 1.0));
    let (transmits, _) = drain(&mut core);
    assert_eq!(transmits.len(), 1, "forwarded once, not twice");
}

#[test]
fn ttl_one_arrives_and_is_not_forwarded() {
    let (mut core, now) = core_with_members(8);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1.0));
    let (transmits, _) = drain(&mut core);
    assert!(
        transmits.is_empty(),
        "a delta arriving with ttl 1 reaches ttl 0 here"
    );
    assert_eq!(core.stats().ttl_expired, 1);
    assert_eq!(core.stats().deltas_applied, 1, "still applied locally");
}

#[test]
fn ttl_zero_is_never_forwarded() {
    let (mut core, now) = core_with_members(8);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 0, 1.0));
    let (transmits, _) = drain(&mut core);
    assert!(transmits.is_empty());
}

#[test]
fn forwarded_ttl_is_decremented_and_skips_origin_and_sender() {
    let (mut core, now) = core_with_members(8);
    core.handle_message(now, sender(3), delta_envelope(2, 1, 3, 1.0));
    let (transmits, _) = drain(&mut core);
    assert_eq!(transmits.len(), 1);
    let t = &transmits[0];
    assert_eq!(t.envelope.ttl, 2);
    assert_eq!(t.to.len(), 3);
    assert!(!t.to.contains(&peer(2).addr) && !t.to.contains(&peer(3).addr));
}

#[test]
fn duplicate_delta_by_another_envelope_is_ignored() {
    let (mut core, now) = core_with_members(4);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 2, 1.0));
    core.handle_message(now, sender(3), delta_envelope(2, 1, 2, 1.0));
    assert_eq!(core.stats().deltas_applied, 1);
    assert_eq!(core.stats().deltas_already_applied, 1);
    assert!(core.base().iter().all(|&v| v == 1.0));
}

#[test]
fn out_of_order_deltas_are_applied_once_and_the_gap_is_reported() {
    let (mut core, now) = core_with_members(4);
    for v in [1, 3, 2, 3, 1] {
        core.handle_message(now, sender(2), delta_envelope(2, v, 1, v as f32));
    }
    let (_, events) = drain(&mut core);
    let gaps: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::GapDetected { missing, .. } => Some(missing.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, vec![vec![2]]);
    assert_eq!(core.stats().deltas_applied, 3);
    assert!(core.base().iter().all(|&v| v == 6.0));
    assert!(!core.applied().has_gaps());
}

#[test]
fn bad_deltas_are_rejected_and_counted() {
    let (mut core, now) = core_with_members(4);
    let mut wrong_shape = delta_envelope(2, 1, 1, 1.0);
    wrong_shape.payload = Payload::Delta(signed_delta(2, 1, 0.5, vec![1.0; P + 1]));
    let mut nan = delta_envelope(2, 2, 1, f32::NAN);
    nan.id = MessageId::from_uuid(uuid::Uuid::new_v4());
    let mut weight = delta_envelope(2, 3, 1, 1.0);
    weight.payload = Payload::Delta(signed_delta(2, 3, 1.5, vec![1.0; P]));
    for env in [wrong_shape, nan, weight] {
        core.handle_message(now, sender(2), env);
    }
    let rejected = &core.stats().deltas_rejected;
    assert_eq!(rejected.get("shape"), Some(&1));
    assert_eq!(rejected.get("non_finite"), Some(&1));
    assert_eq!(rejected.get("weight"), Some(&1));
    assert!(core.base().iter().all(|&v| v == 0.0));
    assert!(core.applied().is_empty());
}

#[test]
fn norm_check_waits_for_enough_samples_then_rejects_outliers() {
    let (mut core, now) = core_with_members(3);
    // Before NORM_MIN_SAMPLES accepted deltas, any finite delta passes, however large.
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1000.0));
    for v in 2..=NORM_MIN_SAMPLES as u64 + 1 {
        core.handle_message(now, sender(2), delta_envelope(2, v, 1, 1.0));
    }
    assert_eq!(core.stats().deltas_applied, NORM_MIN_SAMPLES as u64 + 1);
    let before = core.base().to_vec();
    // Median norm is now 4 (16 values of 1.0); 10x that is 40, one of 50 per value is 200.
    let next = NORM_MIN_SAMPLES as u64 + 2;
    core.handle_message(now, sender(2), delta_envelope(2, next, 1, 50.0));
    assert_eq!(core.stats().deltas_rejected.get("norm"), Some(&1));
    assert_eq!(core.base(), &before[..]);
    assert!(!core.applied().contains(peer(2).id, next));
    // A delta within the factor (9x the median) passes.
    core.handle_message(now, sender(3), delta_envelope(3, 1, 1, 9.0));
    assert!(core.applied().contains(peer(3).id, 1));
    let (_, events) = drain(&mut core);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::DeltaRejected {
            reason: RejectReason::Norm,
            ..
        }
    )));
    // Training converges: many small deltas follow. An early delta delivered late (norm 4·9)
    // still passes, because the reference does not go down.
    for v in 1..=NORM_WINDOW as u64 {
        core.handle_message(now, sender(3), delta_envelope(3, v + 1, 1, 0.01));
    }
    core.handle_message(now, sender(2), delta_envelope(2, next + 1, 1, 9.0));
    assert!(core.applied().contains(peer(2).id, next + 1));
    assert_eq!(core.stats().deltas_rejected.get("norm"), Some(&1));
}

#[test]
fn local_deltas_count_towards_the_norm_reference() {
    let (mut core, now) = core_with_members(2);
    for _ in 0..NORM_MIN_SAMPLES {
        core.publish(now, 0.5, vec![0.01; P]).unwrap();
    }
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1.0));
    assert_eq!(core.stats().deltas_rejected.get("norm"), Some(&1));
}

#[test]
fn norm_check_off_when_factor_is_zero() {
    let now = Instant::now();
    let config = CoreConfig {
        max_delta_norm_factor: 0.0,
        ..config()
    };
    let mut core = Core::new(config, peer(1), vec![0.0; P], vec![], 7, now);
    core.handle_message(now, sender(2), view_from(2, 1, vec![member(2)]));
    for _ in 0..NORM_MIN_SAMPLES {
        core.publish(now, 0.5, vec![0.01; P]).unwrap();
    }
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1e6));
    assert!(core.stats().deltas_rejected.is_empty());
}

#[test]
fn version_far_ahead_of_the_known_one_is_rejected() {
    let (mut core, now) = core_with_members(3);
    let jump = core.config().max_version_jump;
    // Unknown version (nothing applied, record says 0): up to `jump` is accepted.
    core.handle_message(now, sender(2), delta_envelope(2, jump, 1, 1.0));
    assert!(core.applied().contains(peer(2).id, jump));
    core.handle_message(now, sender(3), delta_envelope(3, jump + 1, 1, 1.0));
    core.handle_message(now, sender(2), delta_envelope(2, 2 * jump + 1, 1, 1.0));
    core.handle_message(now, sender(2), delta_envelope(2, u64::MAX, 1, 1.0));
    assert_eq!(core.stats().deltas_rejected.get("version_jump"), Some(&3));
    // Relative to the highest applied version, not the contiguous prefix.
    core.handle_message(now, sender(2), delta_envelope(2, 2 * jump, 1, 1.0));
    assert!(core.applied().contains(peer(2).id, 2 * jump));
    // The gap event lists a bounded number of missing versions.
    let (_, events) = drain(&mut core);
    for e in events {
        if let Event::GapDetected { missing, .. } = e {
            assert!(missing.len() <= replica::MAX_GAP_REPORT);
        }
    }
}

#[test]
fn announced_version_raises_the_known_one() {
    let (mut core, now) = core_with_members(2);
    let jump = core.config().max_version_jump;
    let mut record = member(3);
    record.published = 5 * jump;
    membership::sign_record(&peer(3).keys, &mut record);
    let view = view_from(3, 1, vec![record]);
    core.handle_message(now, sender(3), view);
    core.handle_message(now, sender(3), delta_envelope(3, 5 * jump + 1, 1, 1.0));
    assert!(core.applied().contains(peer(3).id, 5 * jump + 1));
    assert!(core.stats().deltas_rejected.is_empty());
}

#[test]
fn snapshot_install_reapplies_deltas_it_lacks() {
    let (mut core, now) = core_with_members(3);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1.0));
    core.handle_message(now, sender(3), delta_envelope(3, 1, 1, 10.0));
    core.handle_message(now, sender(2), snapshot_from_2(3.0, &[(2, 1), (2, 2)]));
    assert!(core.base().iter().all(|&v| v == 13.0));
    assert!(core.applied().contains(peer(3).id, 1));
    assert!(core.applied().contains(peer(2).id, 2));
    assert_eq!(core.stats().inexact_merges, 0);
}

/// A snapshot that does not say what a delta held (its donor restored a checkpoint from before
/// contents were kept) does not make this peer forget what it knew: otherwise its drain
/// summary could never again equal a peer's that still knows.
#[test]
fn snapshot_install_keeps_contents_the_snapshot_does_not_give() {
    let (mut core, now) = core_with_members(3);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1.0));
    let known = core.contents();
    assert_eq!(known.len(), 1);
    core.handle_message(now, sender(2), snapshot_from_2(3.0, &[(2, 1), (2, 2)]));
    assert!(core.applied().contains(peer(2).id, 2));
    assert_eq!(core.contents(), known);
}

/// A snapshot claiming a version of some origin more than `max_version_jump` above the highest
/// known here is refused and counted, whatever else it holds: an applied set is enumerated in
/// places, so an invented prefix of 2⁴⁰ versions must never be installed.
#[test]
fn a_snapshot_claiming_versions_far_ahead_is_refused() {
    let (mut core, now) = core_with_members(3);
    let jump = core.config().max_version_jump;
    core.handle_message(
        now,
        sender(2),
        snapshot_from_2(3.0, &[(2, 1), (3, 2 * jump)]),
    );
    assert!(core.applied().is_empty());
    assert!(core.base().iter().all(|&v| v == 0.0));
    assert_eq!(core.stats().deltas_rejected.get("version_jump"), Some(&1));
    core.handle_message(now, sender(2), snapshot_from_2(3.0, &[(2, 1), (3, jump)]));
    assert!(core.applied().contains(peer(3).id, jump));
    assert!(core.base().iter().all(|&v| v == 3.0));
    // A contiguous prefix of 2⁴⁰ versions, as a decoder would read it off the wire, then a
    // digest from a member lacking them: without the bound, listing what it lacks would not fit
    // in memory.
    let huge = vector_with_prefix(peer(2).id, 1 << 40);
    let Payload::Snapshot(mut snapshot) = snapshot_from_2(5.0, &[]).payload else {
        unreachable!()
    };
    snapshot.applied = huge;
    core.handle_message(now, sender(2), from_2(Payload::Snapshot(snapshot)));
    assert_eq!(core.stats().deltas_rejected.get("version_jump"), Some(&2));
    assert_eq!(core.applied().max_of(peer(2).id), 1);
    core.handle_message(now, sender(2), empty_digest_from_2());
}

/// A version vector holding `1..=prefix` of `origin`, built the way a decoder builds one.
fn vector_with_prefix(origin: PeerId, prefix: u64) -> VersionVector {
    #[derive(serde::Serialize)]
    struct Entry {
        contiguous: u64,
        exceptions: std::collections::BTreeSet<u64>,
    }
    #[derive(serde::Serialize)]
    struct Vector {
        entries: std::collections::BTreeMap<PeerId, Entry>,
    }
    let vector = Vector {
        entries: [(
            origin,
            Entry {
                contiguous: prefix,
                exceptions: Default::default(),
            },
        )]
        .into(),
    };
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&vector, config).unwrap();
    let (decoded, _): (VersionVector, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(decoded.max_of(origin), prefix);
    decoded
}

/// A one-hop message from peer 2.
fn from_2(payload: Payload) -> Envelope {
    Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(2).id,
        origin_addr: peer(2).addr,
        version: 0,
        ttl: 1,
        payload,
    }
}

fn snapshot_from_2(base: f32, applied: &[(u128, u64)]) -> Envelope {
    let mut vector = VersionVector::new();
    for &(origin, version) in applied {
        vector.insert(peer(origin).id, version);
    }
    from_2(Payload::Snapshot(Snapshot {
        base: vec![base; P].into(),
        applied: vector,
        contents: Vec::new(),
    }))
}

/// With a log of one delta, an install would drop an evicted delta: a snapshot with fewer deltas
/// is refused and changes nothing; one with more is installed, re-applying what the log holds.
#[test]
fn an_inexact_snapshot_is_installed_only_when_it_outranks_this_peer() {
    let now = Instant::now();
    let config = CoreConfig {
        delta_log_bytes: P * 4,
        ..config()
    };
    let mut core = Core::new(config, peer(1), vec![0.0; P], vec![], 7, now);
    core.handle_message(
        now,
        sender(2),
        view_from(2, 1, (2..=3).map(member).collect()),
    );
    core.handle_message(now, sender(3), delta_envelope(3, 1, 1, 1.0));
    core.handle_message(now, sender(3), delta_envelope(3, 2, 1, 10.0));
    drain(&mut core);
    let before = core.base().to_vec();
    core.handle_message(now, sender(2), snapshot_from_2(3.0, &[(2, 1)]));
    assert_eq!(core.stats().snapshots_refused, 1);
    assert_eq!(core.base(), before.as_slice());
    assert_eq!(core.applied().len(), 2);
    core.handle_message(
        now,
        sender(2),
        snapshot_from_2(3.0, &[(2, 1), (2, 2), (2, 3)]),
    );
    assert_eq!(core.stats().inexact_merges, 1);
    // (3, 1) was evicted and is dropped; (3, 2) is re-applied from the log.
    assert!(core.base().iter().all(|&v| v == 13.0));
    assert!(!core.applied().contains(peer(3).id, 1));
    assert!(core.applied().contains(peer(3).id, 2));
    assert_eq!(core.applied().len(), 4);
}

/// Deterministic values for delta `(origin, version)`.
pub(super) fn delta_values(origin: usize, version: u64) -> Vec<f32> {
    (0..P)
        .map(|i| ((origin * 31 + version as usize * 7 + i * 13) % 17) as f32 * 0.013 - 0.1)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any delivery order (with duplicates) of the same deltas gives the same base.
    #[test]
    fn any_delivery_order_gives_the_same_base(
        order in Just((0..24usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..24usize, 0..10),
    ) {
        let origins = 4usize;
        let all: Vec<(usize, u64)> = (0..24).map(|i| (i % origins + 2, (i / origins) as u64 + 1)).collect();
        let run = |seq: &[usize]| {
            let (mut core, now) = core_with_members(origins as u128 + 1);
            for &i in seq {
                let (o, v) = all[i];
                let mut env = delta_envelope(o as u128, v, 1, 0.0);
                env.payload = Payload::Delta(signed_delta(o as u128, v, 0.25, delta_values(o, v)));
                core.handle_message(now, sender(2), env);
            }
            core.base().to_vec()
        };
        let reference = run(&(0..24).collect::<Vec<_>>());
        let mut shuffled = order.clone();
        shuffled.extend(dups);
        let other = run(&shuffled);
        let norm: f64 = reference.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        let diff: f64 = reference.iter().zip(&other).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>().sqrt();
        prop_assert!(diff / norm.max(1e-12) < 1e-5, "relative difference {}", diff / norm);
    }
}

pub(super) fn sim_config() -> CoreConfig {
    CoreConfig {
        param_count: P,
        ..CoreConfig::default()
    }
}

#[test]
fn sim_join_through_one_seed_reaches_everyone() {
    let mut sim = Sim::new(sim_config(), NetModel::default(), 11);
    sim.add_peer(vec![0.0; P], &[]);
    for _ in 1..12 {
        sim.add_peer(vec![5.0; P], &[0]);
    }
    let all_know_all = sim.run_until(Duration::from_secs(30), Duration::from_millis(100), |s| {
        (0..12).all(|i| {
            s.peer(i)
                .is_some_and(|c| c.live_count() == 12 && c.is_joined())
        })
    });
    assert!(
        all_know_all,
        "every peer knows all 12 within 30 s of virtual time"
    );
    // Joiners took the seed's snapshot, so every base is θ₀ of the seed.
    for i in 0..12 {
        assert!(sim.peer(i).unwrap().base().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn sim_deltas_under_loss_converge_and_drain_completes() {
    let net = NetModel {
        loss: 0.2,
        duplicate: 0.1,
        ..NetModel::default()
    };
    let mut sim = Sim::new(sim_config(), net, 3);
    let n = 8;
    assert!(sim.form_cluster(n, Duration::from_secs(60)));
    for round in 1..=5u64 {
        for i in 0..n {
            sim.with_peer(i, |c, now| {
                c.publish(now, 0.125, delta_values(i, round)).unwrap()
            });
        }
        sim.run_for(Duration::from_millis(50));
    }
    for i in 0..n {
        sim.with_peer(i, |c, now| c.start_drain(now));
    }
    let drained = sim.run_until(Duration::from_secs(60), Duration::from_millis(50), |s| {
        (0..n).all(|i| s.peer(i).is_some_and(Core::drain_complete))
    });
    assert!(
        drained,
        "all peers drain within 60 s of virtual time at 20% loss"
    );
    let reference = sim.peer(0).unwrap().base().to_vec();
    for i in 1..n {
        let core = sim.peer(i).unwrap();
        assert_eq!(core.applied().len(), (n * 5) as u64);
        for (a, b) in reference.iter().zip(core.base()) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}

/// A peer restarted without its state (damaged checkpoint) hears of an alive, higher incarnation
/// of itself: it outranks it instead of running under the lower one.
#[test]
fn restarted_peer_outranks_a_higher_incarnation_of_itself() {
    let (mut core, now) = core_with_members(3);
    assert_eq!(core.incarnation(), 0);
    let mut me = member(1);
    me.incarnation = 5;
    membership::sign_record(&peer(1).keys, &mut me);
    let view = view_from(2, 2, vec![me]);
    core.handle_message(now, sender(2), view);
    assert_eq!(core.incarnation(), 6);
    assert_eq!(
        core.stats().refutations,
        0,
        "not a refutation: it was not suspected"
    );
}

/// A peer restarted before its first checkpoint starts at the incarnation its earlier run had;
/// a member still holds that run's record (same incarnation, a heartbeat ahead, the old
/// address). The restarted peer outranks it, so the members take its new record.
#[test]
fn restarted_peer_outranks_its_earlier_run_at_the_same_incarnation() {
    let (mut core, now) = core_with_members(3);
    let mut earlier = member(1);
    earlier.incarnation = core.incarnation();
    earlier.heartbeat = 50;
    earlier.addr = "127.0.0.1:9".parse().unwrap();
    membership::sign_record(&peer(1).keys, &mut earlier);
    core.handle_message(now, sender(2), view_from(2, 2, vec![earlier]));
    assert_eq!(core.incarnation(), 1, "outranked the earlier run's record");

    // Its own record as it is now, heard back, changes nothing.
    let (mut core, now) = core_with_members(3);
    let mut same = member(1);
    same.heartbeat = 0;
    membership::sign_record(&peer(1).keys, &mut same);
    core.handle_message(now, sender(2), view_from(2, 2, vec![same]));
    assert_eq!(core.incarnation(), 0);
}

/// Deltas pushed by anti-entropy to peer 2 of a core, in queue order.
fn deltas_pushed_to(core: &mut Core, to: SocketAddr) -> Vec<(PeerId, u64)> {
    let mut out = Vec::new();
    while let Some(t) = core.poll_transmit() {
        if t.envelope.payload.kind() == MessageKind::Delta && t.to.contains(&to) {
            out.push((t.envelope.origin, t.envelope.version));
        }
    }
    out
}

/// An empty digest from peer 2: it lacks everything.
fn empty_digest_from_2() -> Envelope {
    from_2(Payload::Digest(Digest {
        applied: VersionVector::default(),
        lifecycle: Lifecycle::Training,
        reply: false,
        contents: Vec::new(),
        equivocations: Vec::new(),
    }))
}

/// A delta still on its way to a member is not pushed to it again by anti-entropy, however
/// long it takes; once its send is reported failed, the next digest pushes it at once; once
/// delivered, it is not pushed again.
#[test]
fn anti_entropy_respects_send_outcomes() {
    let (mut core, now) = core_with_members(3);
    core.start_training();
    let v = core.publish(now, 0.5, delta_values(1, 1)).unwrap();
    let to = peer(2).addr;
    assert_eq!(deltas_pushed_to(&mut core, to), vec![(peer(1).id, v)]);
    // Long after the resend window, still no outcome: not pushed again.
    let later = now + Duration::from_secs(30);
    core.handle_timeout(later);
    core.handle_message(later, sender(2), empty_digest_from_2());
    assert!(deltas_pushed_to(&mut core, to).is_empty(), "in flight");
    // The send failed: the next digest pushes it.
    core.send_outcome(later, to, peer(1).id, v, false);
    core.handle_message(later, sender(2), empty_digest_from_2());
    assert_eq!(deltas_pushed_to(&mut core, to), vec![(peer(1).id, v)]);
    assert_eq!(core.stats().delta_sends_failed, 1);
    // Delivered: a stale digest within the resend window does not bring it back.
    core.send_outcome(later, to, peer(1).id, v, true);
    core.handle_message(later, sender(2), empty_digest_from_2());
    assert!(deltas_pushed_to(&mut core, to).is_empty(), "delivered");
    assert_eq!(core.own_deltas_unacked(), 1, "still on its way to peer 3");
    core.send_outcome(later, peer(3).addr, peer(1).id, v, true);
    assert_eq!(core.own_deltas_unacked(), 0);
}

/// The addresses each announcement of peer 1's own record (a `Membership` message holding that
/// record alone, asking for no answer) that satisfies `matches` went to, one sorted list per
/// message.
fn own_announcements(
    transmits: &[Transmit],
    matches: impl Fn(&MemberRecord) -> bool,
) -> Vec<Vec<SocketAddr>> {
    transmits
        .iter()
        .filter_map(|t| match &t.envelope.payload {
            Payload::Membership(view)
                if view.members.len() == 1
                    && view.members[0].peer_id == peer(1).id
                    && !view.push_pull
                    && matches(&view.members[0]) =>
            {
                let mut to = t.to.clone();
                to.sort();
                Some(to)
            }
            _ => None,
        })
        .collect()
}

/// Peers 2 and 3's addresses, sorted.
fn others_of_three() -> Vec<SocketAddr> {
    let mut live = vec![peer(2).addr, peer(3).addr];
    live.sort();
    live
}

/// A publish is announced at once to every live member: the origin's record alone, with the new
/// published version, in a control message (the staleness bound counts on it).
#[test]
fn a_publish_is_announced_to_every_live_member() {
    let (mut core, now) = core_with_members(3);
    core.start_training();
    drain(&mut core);
    let version = core.publish(now, 0.5, vec![0.1; P]).unwrap();
    let (transmits, _) = drain(&mut core);
    let announced = own_announcements(&transmits, |r| r.published == version);
    assert_eq!(announced, vec![others_of_three()], "{transmits:?}");
}

/// Starting to train and starting to drain are announced at once to every live member, not
/// only piggybacked: others' phase clocks wait only for members they know are training.
#[test]
fn starting_to_train_and_to_drain_are_announced_to_every_live_member() {
    let (mut core, now) = core_with_members(3);
    drain(&mut core);
    core.start_training();
    let (transmits, _) = drain(&mut core);
    let training = own_announcements(&transmits, |r| r.lifecycle == Lifecycle::Training);
    assert_eq!(training, vec![others_of_three()], "{transmits:?}");
    core.start_drain(now);
    let (transmits, _) = drain(&mut core);
    let draining = own_announcements(&transmits, |r| r.lifecycle == Lifecycle::Draining);
    assert_eq!(draining, vec![others_of_three()], "{transmits:?}");
}

/// Unseen deltas: versions live, unsuspected members say they published above the highest of
/// theirs applied here; a suspected member's do not count.
#[test]
fn unseen_deltas_count_what_alive_members_published_above_what_is_applied() {
    let (mut core, now) = core_with_members(3);
    assert_eq!(core.unseen_deltas(), 0);
    let announce = |n: u128, published: u64, status: MemberStatus| {
        let mut record = member(n);
        record.heartbeat = 2 + published;
        record.published = published;
        record.status = status;
        membership::sign_record(&peer(n).keys, &mut record);
        record
    };
    core.handle_message(
        now,
        sender(2),
        view_from(2, 1, vec![announce(2, 5, MemberStatus::Alive)]),
    );
    assert_eq!(core.unseen_deltas(), 5);
    core.handle_message(now, sender(2), delta_envelope(2, 3, 1, 0.1));
    assert_eq!(core.unseen_deltas(), 2);
    core.handle_message(
        now,
        sender(2),
        view_from(2, 1, vec![announce(3, 4, MemberStatus::Suspect)]),
    );
    assert_eq!(
        core.unseen_deltas(),
        2,
        "a suspected member is not waited for"
    );
}

/// Phase lead: own versions beyond the slowest other member still training, in its deltas
/// applied here; a member that joined after this peer's first publish is offset, one that
/// drains is not waited for.
#[test]
fn phase_lead_counts_own_versions_beyond_the_slowest_training_member() {
    let (mut core, now) = core_with_members(3);
    core.start_training();
    assert_eq!(core.phase_lead(), 0);
    core.publish(now, 1.0 / 3.0, vec![0.1; P]).unwrap();
    core.publish(now, 1.0 / 3.0, vec![0.1; P]).unwrap();
    assert_eq!(core.phase_lead(), 2, "nothing from members 2 and 3 yet");
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 0.1));
    core.handle_message(now, sender(2), delta_envelope(2, 2, 1, 0.1));
    assert_eq!(core.phase_lead(), 2, "member 3 is still two behind");
    core.handle_message(now, sender(3), delta_envelope(3, 1, 1, 0.1));
    assert_eq!(core.phase_lead(), 1);
    // Member 4 joins now: it is not expected to catch up with the two versions before it.
    core.handle_message(now, sender(2), view_from(2, 2, vec![member(4)]));
    core.publish(now, 0.25, vec![0.1; P]).unwrap();
    assert_eq!(
        core.phase_lead(),
        2,
        "member 3 is now two behind, member 4 one"
    );
    // Member 3 drains: it publishes no more and holds nobody back.
    let mut draining = member(3);
    draining.heartbeat = 5;
    draining.lifecycle = Lifecycle::Draining;
    membership::sign_record(&peer(3).keys, &mut draining);
    core.handle_message(now, sender(3), view_from(3, 2, vec![draining]));
    assert_eq!(core.phase_lead(), 1, "member 2 and member 4 are one behind");
}
