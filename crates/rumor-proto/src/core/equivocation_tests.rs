//! Equivocation: one member signs two different deltas under one version and sends each to
//! different peers. Found, proved, spread, the origin quarantined, the version resolved to
//! nothing everywhere, and every peer ends with the same model. Compiled only under
//! `#[cfg(test)]`.

use std::time::Duration;

use super::drain_tests::trained_cluster;
use super::tests::{core_with_members, delta_envelope, drain, peer, sender, signed_delta, P};
use super::*;
use crate::id::MessageId;
use crate::sim::Sim;

/// A delta of member `origin` under `version`, all values `value`, signed by it.
fn equivocating(origin: u128, version: u64, value: f32) -> Envelope {
    let mut env = delta_envelope(origin, version, 3, value);
    env.payload = Payload::Delta(signed_delta(origin, version, 0.5, vec![value; P]));
    env
}

#[test]
fn a_second_signed_content_under_an_applied_version_is_resolved_to_nothing() {
    let (mut core, now) = core_with_members(3);
    core.handle_message(now, sender(2), equivocating(2, 1, 1.0));
    assert!(core.base().iter().all(|&x| x == 1.0));
    drain(&mut core);
    core.handle_message(now, sender(3), equivocating(2, 1, -1.0));
    assert_eq!(core.stats().equivocations_detected, 1);
    assert_eq!(core.stats().deltas_retracted, 1);
    // The applied delta is out again; the version counts as applied, with nothing in it.
    assert!(core.base().iter().all(|&x| x == 0.0), "{:?}", core.base());
    assert!(core.applied().contains(peer(2).id, 1));
    let (transmits, events) = drain(&mut core);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DeltaRetracted { version: 1, .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Quarantined { version: 1, .. })));
    // The proof goes to every live member (member 2 is quarantined: not live any more).
    let proofs: Vec<&Transmit> = transmits
        .iter()
        .filter(|t| matches!(t.envelope.payload, Payload::Equivocation(_)))
        .collect();
    assert_eq!(proofs.len(), 1);
    assert_eq!(
        proofs[0].to,
        vec![peer(3).addr],
        "the sender of the second copy too"
    );
    // Neither delta gets in again, and the member's messages are dropped.
    core.handle_message(now, sender(3), equivocating(2, 1, 1.0));
    core.handle_message(now, sender(3), equivocating(2, 1, -1.0));
    assert!(core.base().iter().all(|&x| x == 0.0));
    core.handle_message(now, sender(2), equivocating(2, 2, 1.0));
    assert!(core.stats().messages_from_revoked >= 1);
}

#[test]
fn a_received_proof_retracts_whichever_delta_was_applied_and_a_forged_one_is_refused() {
    let (mut finder, now) = core_with_members(3);
    finder.handle_message(now, sender(2), equivocating(2, 1, 1.0));
    finder.handle_message(now, sender(3), equivocating(2, 1, -1.0));
    let (transmits, _) = drain(&mut finder);
    let proof = transmits
        .iter()
        .find(|t| matches!(t.envelope.payload, Payload::Equivocation(_)))
        .map(|t| t.envelope.clone())
        .expect("a proof was sent");
    // Passed on by member 3, as its own message.
    let mut proof = proof;
    proof.origin = peer(3).id;
    proof.origin_addr = peer(3).addr;
    // A peer that applied the other content takes it out when the proof arrives.
    let (mut other, now) = core_with_members(3);
    other.handle_message(now, sender(2), equivocating(2, 1, -1.0));
    assert!(other.base().iter().all(|&x| x == -1.0));
    other.handle_message(now, sender(3), proof.clone());
    assert_eq!(other.stats().equivocation_proofs_received, 1);
    assert!(other.base().iter().all(|&x| x == 0.0));
    // A "proof" whose second delta is not the origin's signature is refused and changes
    // nothing.
    let (mut third, now) = core_with_members(3);
    third.handle_message(now, sender(2), equivocating(2, 1, 1.0));
    let mut forged = proof;
    forged.id = MessageId::from_u128(4242);
    if let Payload::Equivocation(p) = &mut forged.payload {
        let fake = signed_delta(3, 1, 0.5, vec![-1.0; P]);
        p.second.signature = fake.signature;
    }
    third.handle_message(now, sender(3), forged);
    assert_eq!(third.stats().equivocation_proofs_refused, 1);
    assert!(third.base().iter().all(|&x| x == 1.0));
}

/// Five peers train; member 4 (a real member, admitted everywhere) sends one signed delta under
/// one version to peer 0 and a different one to peer 1. Every honest peer ends with the same
/// model, drained, with the origin quarantined; over 3 seeds. With TTL 3 the copies meet in
/// push gossip; with TTL 1 they are not forwarded, and only anti-entropy (digests' content
/// fingerprints) brings them together.
#[test]
fn sim_an_equivocating_member_is_caught_and_the_cluster_ends_identical() {
    for (seed, ttl) in [(31u64, 3u8), (32, 1), (33, 1)] {
        let n = 5;
        let attacker = 4;
        let mut sim = trained_cluster(seed, n, 2);
        let (attacker_id, attacker_keys) = Sim::identity(attacker);
        let version = 1_000;
        let make = |value: f32| {
            let values = vec![value; P];
            let content = crate::auth::content_hash(&values);
            let statement = crate::auth::statement::delta(attacker_id, version, 0.5, &content);
            Envelope {
                id: MessageId::from_uuid(uuid::Uuid::new_v4()),
                origin: attacker_id,
                origin_addr: Sim::addr(attacker),
                version,
                ttl,
                payload: Payload::Delta(DeltaPayload {
                    weight: 0.5,
                    values: values.into(),
                    signature: attacker_keys.signer.sign(&statement).unwrap(),
                }),
            }
        };
        // Its record must announce the version, or the version-jump check refuses it.
        sim.with_peer(attacker, |c, _| c.raise_published(version));
        sim.run_for(Duration::from_secs(2));
        sim.inject(attacker, 0, &make(0.25));
        sim.inject(attacker, 1, &make(-0.25));
        let sent = sim.now;
        let quarantined =
            |s: &Sim| (0..attacker).all(|i| s.status_of(i, attacker) == Some(MemberStatus::Dead));
        assert!(
            sim.run_until(
                Duration::from_secs(30),
                Duration::from_millis(10),
                quarantined
            ),
            "seed {seed}: every honest peer quarantines the equivocator while training"
        );
        let to_quarantine = sim.now - sent;
        for i in 0..attacker {
            sim.with_peer(i, |c, now| c.start_drain(now));
        }
        let started = sim.now;
        let honest: Vec<usize> = (0..attacker).collect();
        let done = sim.run_until(Duration::from_secs(60), Duration::from_millis(10), |s| {
            honest
                .iter()
                .all(|&i| s.peer(i).is_some_and(|c| c.drain_complete()))
        });
        let reference = sim.peer(0).map(|c| c.base().to_vec()).unwrap();
        for &i in &honest {
            let c = sim.peer(i).unwrap();
            assert!(done, "seed {seed}: every honest peer drains");
            let distance = c
                .base()
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                distance < 1e-5,
                "seed {seed}: peer {i} is {distance} from peer 0"
            );
            assert_eq!(c.applied(), sim.peer(0).unwrap().applied());
            assert_eq!(
                c.members()
                    .find(|m| m.peer_id == attacker_id)
                    .map(|m| m.status),
                Some(MemberStatus::Dead),
                "seed {seed}: peer {i} quarantined the equivocator"
            );
        }
        let detected: u64 = honest
            .iter()
            .map(|&i| sim.peer(i).unwrap().stats().equivocations_detected)
            .sum();
        assert!(detected >= 1, "seed {seed}");
        eprintln!(
            "seed {seed}, ttl {ttl}: {detected} detections, all quarantined {to_quarantine:?} \
             after the sends, drained {:?} after the drain began",
            sim.now - started
        );
    }
}
