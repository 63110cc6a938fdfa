//! Attacks by a member on what others believe, each refused before anything is applied,
//! stored or forwarded, and counted: forged and altered deltas, invented and altered member
//! records, messages speaking for another member, joins aimed at a third address, floods of
//! invented origins, ids minted from one certificate. Compiled only under `#[cfg(test)]`.

use super::tests::{
    config, core_with_members, delta_envelope, drain, member, peer, sender, view_from, P,
};
use super::*;
use crate::auth::test_keys::{member_of, TestCa};
use crate::id::MessageId;
use crate::wire::{JoinRequest, Probe};

fn rejected(core: &Core, reason: &str) -> u64 {
    core.stats()
        .deltas_rejected
        .get(reason)
        .copied()
        .unwrap_or(0)
}

fn refused(core: &Core, reason: &str) -> u64 {
    core.stats()
        .records_refused
        .get(reason)
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_delta_signed_by_another_member_is_refused() {
    let (mut core, now) = core_with_members(3);
    // Member 3 makes a delta in member 2's name and signs it with its own key.
    let mut forged = delta_envelope(2, 1, 1, 1.0);
    let p3 = peer(3);
    let content = crate::auth::content_hash(&[1.0; P]);
    let statement = crate::auth::statement::delta(peer(2).id, 1, 0.5, &content);
    if let Payload::Delta(delta) = &mut forged.payload {
        delta.signature = p3.keys.signer.sign(&statement).unwrap();
    }
    core.handle_message(now, sender(3), forged.clone());
    assert_eq!(rejected(&core, "signature"), 1);
    assert!(core.applied().is_empty());
    assert!(core.base().iter().all(|&x| x == 0.0));
    let (transmits, _) = drain(&mut core);
    assert!(transmits.is_empty(), "nothing forwarded");
    // The genuine delta under the same envelope id still gets in: the forgery took no place in
    // the seen-cache.
    let mut genuine = delta_envelope(2, 1, 1, 1.0);
    genuine.id = forged.id;
    core.handle_message(now, sender(3), genuine);
    assert!(core.applied().contains(peer(2).id, 1));
}

#[test]
fn a_delta_altered_by_a_forwarder_is_refused() {
    let (mut core, now) = core_with_members(3);
    for alter in 0..3 {
        let mut env = delta_envelope(2, 1, 1, 1.0);
        env.id = MessageId::from_u128(100 + alter);
        if let Payload::Delta(delta) = &mut env.payload {
            match alter {
                0 => {
                    let mut values = delta.values.to_vec();
                    values[3] += 1e-3;
                    delta.values = values.into();
                }
                1 => delta.weight = 0.25,
                _ => env.version = 2,
            }
        }
        core.handle_message(now, sender(3), env);
    }
    assert_eq!(rejected(&core, "signature"), 3);
    assert!(core.applied().is_empty());
}

#[test]
fn deltas_under_invented_origins_leave_the_version_vector_unchanged() {
    let (mut core, now) = core_with_members(3);
    core.handle_message(now, sender(2), delta_envelope(2, 1, 1, 1.0));
    let origins = core.applied().origins().len();
    for n in 0..200u128 {
        let mut env = delta_envelope(2, 1, 1, 1.0);
        env.origin = PeerId::from_u128(10_000 + n);
        core.handle_message(now, sender(3), env);
    }
    // Invented ids bound to a real member's key are no better.
    for seed in 0..50u64 {
        let (id, _) = crate::auth::test_keys::member(3);
        let bound = PeerId::bound(&peer(3).keys.key_id(), (seed + 1000).to_be_bytes());
        assert_ne!(id, bound);
        let mut env = delta_envelope(3, 1, 1, 1.0);
        env.origin = bound;
        core.handle_message(now, sender(3), env);
    }
    assert_eq!(rejected(&core, "unknown_origin"), 250);
    assert_eq!(core.applied().origins().len(), origins);
}

#[test]
fn invented_and_altered_member_records_are_refused() {
    let (mut core, now) = core_with_members(3);
    let members = core.members().count();
    // A record for an id its certificate does not own: member 3's credential, a made-up id.
    let mut invented = member(3);
    invented.peer_id = PeerId::from_u128(77);
    // Member 2's id, member 3's credential and signature.
    let mut stolen = member(3);
    stolen.peer_id = peer(2).id;
    stolen.heartbeat = 9;
    // A stranger's certificate (another CA), correctly bound and signed.
    let (stranger_id, stranger_keys) = member_of(&TestCa::new(9), 5);
    let mut stranger = member(5);
    stranger.peer_id = stranger_id;
    membership::sign_record(&stranger_keys, &mut stranger);
    core.handle_message(
        now,
        sender(3),
        view_from(3, 5, vec![invented, stolen, stranger]),
    );
    assert_eq!(refused(&core, "unbound"), 2);
    assert_eq!(refused(&core, "credential"), 1);
    assert_eq!(core.members().count(), members);
}

#[test]
fn a_replayed_record_with_a_changed_field_is_refused() {
    let (mut core, now) = core_with_members(3);
    let jump = core.config().max_version_jump;
    let held = core.members().find(|m| m.peer_id == peer(2).id).cloned();
    // An old record of member 2 with its `published` lifted (to open the version-jump check),
    // another with a new address, another marked `Left`: the signature covers them all.
    let mut lifted = member(2);
    lifted.published = 10 * jump;
    lifted.heartbeat += 1;
    let mut moved = member(2);
    moved.addr = "10.9.9.9:9".parse().unwrap();
    moved.incarnation = 3;
    let mut gone = member(2);
    gone.status = MemberStatus::Left;
    core.handle_message(now, sender(3), view_from(3, 6, vec![lifted, moved, gone]));
    assert_eq!(refused(&core, "signature"), 3);
    let now_held = core.members().find(|m| m.peer_id == peer(2).id).cloned();
    assert_eq!(held, now_held);
    // The version-jump check still holds for member 2.
    core.handle_message(now, sender(3), delta_envelope(2, 5 * jump, 1, 1.0));
    assert_eq!(rejected(&core, "version_jump"), 1);
}

#[test]
fn a_record_equal_to_the_held_one_is_not_verified_again_but_one_changed_under_it_is_refused() {
    let (mut core, now) = core_with_members(3);
    let held = core
        .members()
        .find(|m| m.peer_id == peer(2).id)
        .cloned()
        .unwrap();
    let verified = core.stats().signatures_verified;
    // Member 2's own incarnation and heartbeat with another published version, under the held
    // signature, claimed as a suspicion (so it is checked): refused. So is a bad signature.
    let mut changed = held.clone();
    changed.published += 1;
    changed.status = MemberStatus::Suspect;
    let mut forged = held.clone();
    forged.heartbeat += 1;
    forged.signature.0[0] ^= 1;
    core.handle_message(now, sender(3), view_from(3, 5, vec![changed, forged]));
    assert_eq!(refused(&core, "signature"), 2);
    assert_eq!(
        core.members().find(|m| m.peer_id == held.peer_id),
        Some(&held)
    );
    // The held record again, and a suspicion of it: the same signed statement, not verified
    // again; the suspicion is merged.
    let mut suspect = held.clone();
    suspect.status = MemberStatus::Suspect;
    core.handle_message(now, sender(3), view_from(3, 6, vec![held.clone(), suspect]));
    assert_eq!(core.stats().signatures_verified, verified);
    assert_eq!(refused(&core, "signature"), 2);
    let status = core
        .members()
        .find(|m| m.peer_id == held.peer_id)
        .map(|m| m.status);
    assert_eq!(status, Some(MemberStatus::Suspect));
}

#[test]
fn a_message_speaking_for_another_member_is_dropped() {
    let (mut core, now) = core_with_members(3);
    // Member 3 sends a ping and a view claiming to be member 2.
    let ping = Envelope {
        id: MessageId::from_u128(5),
        origin: peer(2).id,
        origin_addr: peer(2).addr,
        version: 0,
        ttl: 1,
        payload: Payload::Ping(Probe {
            seq: 1,
            updates: vec![],
            applied_hash: 0,
        }),
    };
    core.handle_message(now, sender(3), ping);
    core.handle_message(now, sender(3), view_from(2, 9, vec![member(3)]));
    assert_eq!(core.stats().senders_mismatched, 2);
    let (transmits, _) = drain(&mut core);
    assert!(transmits.is_empty(), "no ack, no answer");
}

#[test]
fn a_join_is_answered_only_over_the_joiners_own_connection() {
    // A seed with no other member answers joins itself.
    let (mut core, now) = core_with_members(1);
    // Member 3 asks for a snapshot in member 4's name: dropped.
    let join_for = |origin: u128| Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(origin).id,
        origin_addr: "10.66.66.66:66".parse().unwrap(),
        version: 0,
        ttl: 1,
        payload: Payload::Join(JoinRequest {
            member: member(4),
            forwarded: false,
        }),
    };
    core.handle_message(now, sender(3), join_for(3));
    assert_eq!(core.stats().senders_mismatched, 1);
    let (transmits, _) = drain(&mut core);
    assert!(transmits.is_empty());
    // Member 4's own join, naming a third address in its envelope: the welcome goes to the
    // connection it came on.
    core.handle_message(now, sender(4), join_for(4));
    let (transmits, _) = drain(&mut core);
    let welcomes: Vec<&Transmit> = transmits
        .iter()
        .filter(|t| matches!(t.envelope.payload, Payload::Welcome(_)))
        .collect();
    assert_eq!(welcomes.len(), 1);
    assert_eq!(welcomes[0].to, vec![peer(4).addr]);
}

#[test]
fn one_certificate_gets_a_bounded_number_of_ids() {
    let now = Instant::now();
    let mut core = Core::new(config(), peer(1), vec![0.0; P], vec![], 7, now);
    let keys = peer(3).keys;
    let records: Vec<MemberRecord> = (0..MAX_IDENTITIES_PER_CERTIFICATE as u64 + 3)
        .map(|seed| {
            let mut record = member(3);
            record.peer_id = PeerId::bound(&keys.key_id(), (seed + 500).to_be_bytes());
            membership::sign_record(&keys, &mut record);
            record
        })
        .collect();
    core.handle_message(now, sender(3), view_from(3, 1, records));
    assert_eq!(refused(&core, "too_many_identities"), 3);
    assert_eq!(core.members().count(), 1 + MAX_IDENTITIES_PER_CERTIFICATE);
}

#[test]
fn a_revoked_certificate_is_refused_and_its_members_go_down() {
    let (mut core, now) = core_with_members(4);
    let key = peer(3).keys.key_id();
    core.revoke(now, key);
    let status = |core: &Core, n: u128| {
        core.members()
            .find(|m| m.peer_id == peer(n).id)
            .map(|m| m.status)
    };
    assert_eq!(status(&core, 3), Some(MemberStatus::Dead));
    drain(&mut core);
    // Its newer records are refused, its messages dropped.
    let mut newer = member(3);
    newer.incarnation = 1;
    membership::sign_record(&peer(3).keys, &mut newer);
    core.handle_message(now, sender(2), view_from(2, 7, vec![newer]));
    assert_eq!(refused(&core, "revoked"), 1);
    assert_eq!(status(&core, 3), Some(MemberStatus::Dead));
    core.handle_message(now, sender(3), view_from(3, 8, vec![member(3)]));
    assert_eq!(core.stats().messages_from_revoked, 1);
    // A delta it published before, arriving through another member, still merges (others may
    // hold it) but is not pushed on.
    core.handle_message(now, sender(2), delta_envelope(3, 1, 3, 1.0));
    assert!(core.applied().contains(peer(3).id, 1));
    let (transmits, _) = drain(&mut core);
    assert!(
        !transmits
            .iter()
            .any(|t| matches!(t.envelope.payload, Payload::Delta(_))),
        "not forwarded"
    );
}

#[test]
fn a_member_asking_again_and_again_gets_one_snapshot_per_interval() {
    // A seed with no other member answers joins itself.
    let (mut core, now) = core_with_members(1);
    let join = |n: u128| Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(4).id,
        origin_addr: peer(4).addr,
        version: n as u64,
        ttl: 1,
        payload: Payload::Join(JoinRequest {
            member: member(4),
            forwarded: false,
        }),
    };
    for n in 0..10 {
        core.handle_message(now, sender(4), join(n));
    }
    let (transmits, _) = drain(&mut core);
    let welcomes = transmits
        .iter()
        .filter(|t| matches!(t.envelope.payload, Payload::Welcome(_)))
        .count();
    assert_eq!(welcomes, 1);
    assert_eq!(core.stats().answers_limited, 9);
    // A second later it may ask again.
    let later = now + core.config().anti_entropy_interval;
    core.handle_message(later, sender(4), join(99));
    let (transmits, _) = drain(&mut core);
    assert!(transmits
        .iter()
        .any(|t| matches!(t.envelope.payload, Payload::Welcome(_))));
}

#[test]
fn a_forwarded_join_is_welcomed_only_at_the_joiners_certificate() {
    // Member 2 (a seed) passes member 4's join on to this peer, which answers at the address
    // member 4 signed, bound to member 4's certificate.
    let (mut core, now) = core_with_members(2);
    let forwarded = Envelope {
        id: MessageId::from_u128(77),
        origin: peer(2).id,
        origin_addr: peer(2).addr,
        version: 0,
        ttl: 1,
        payload: Payload::Join(JoinRequest {
            member: member(4),
            forwarded: true,
        }),
    };
    core.handle_message(now, sender(2), forwarded);
    let (transmits, _) = drain(&mut core);
    let welcome = transmits
        .iter()
        .find(|t| matches!(t.envelope.payload, Payload::Welcome(_)))
        .expect("a welcome");
    assert_eq!(welcome.to, vec![peer(4).addr]);
    assert_eq!(welcome.to_member, Some(peer(4).id));
}
