//! Unit tests of lazy push (announce, pull, answer, time out) and its counters, on one core
//! driven by hand. Every delta here counts as large: the threshold is 0 bytes.

use std::time::Duration;

use super::tests::{delta_envelope, drain, member, peer, sender, view_from, P};
use super::*;
use crate::id::MessageId;
use crate::wire::{Digest, Have, HaveEntry, MessageKind, Want, WantEntry};

fn lazy_config() -> CoreConfig {
    CoreConfig {
        param_count: P,
        lazy_push_threshold: 0,
        ..CoreConfig::default()
    }
}

/// Peer 1 knowing peers 2..=n, every delta pushed lazily.
fn lazy_core(n: u128) -> (Core, Instant) {
    let now = Instant::now();
    let mut core = Core::new(lazy_config(), peer(1), vec![0.0; P], vec![], 7, now);
    core.handle_message(
        now,
        sender(2),
        view_from(2, 1, (2..=n).map(member).collect()),
    );
    core.start_training();
    drain(&mut core);
    (core, now)
}

/// A message from member `n` with `payload`.
fn from(n: u128, payload: Payload) -> Envelope {
    Envelope {
        id: MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: peer(n).id,
        origin_addr: peer(n).addr,
        version: 0,
        ttl: 1,
        payload,
    }
}

fn have(origin: u128, version: u64, ttl: u8) -> Payload {
    Payload::Have(Have {
        entries: vec![HaveEntry {
            origin: peer(origin).id,
            version,
            bytes: (P * 4) as u64,
            ttl,
        }],
    })
}

fn want(origin: u128, versions: &[u64]) -> Payload {
    Payload::Want(Want {
        entries: versions
            .iter()
            .map(|&version| WantEntry {
                origin: peer(origin).id,
                version,
            })
            .collect(),
    })
}

/// The transmits of `kind` queued by `core`.
fn sent(core: &mut Core, kind: MessageKind) -> Vec<Transmit> {
    drain(core)
        .0
        .into_iter()
        .filter(|t| t.envelope.payload.kind() == kind)
        .collect()
}

/// The `(origin, version, ttl)` of the entries of a `Have`.
fn entries(t: &Transmit) -> Vec<(PeerId, u64, u8)> {
    match &t.envelope.payload {
        Payload::Have(have) => have
            .entries
            .iter()
            .map(|e| (e.origin, e.version, e.ttl))
            .collect(),
        _ => Vec::new(),
    }
}

/// A large delta published here is announced, not pushed; a member that asks gets it, one hop,
/// over the connection it asked on.
#[test]
fn a_published_large_delta_is_announced_and_sent_to_who_asks() {
    let (mut core, now) = lazy_core(3);
    let v = core.publish(now, 0.5, vec![0.01; P]).unwrap();
    let (transmits, _) = drain(&mut core);
    assert!(
        transmits
            .iter()
            .all(|t| t.envelope.payload.kind() != MessageKind::Delta),
        "no bytes pushed: {transmits:?}"
    );
    let haves: Vec<&Transmit> = transmits
        .iter()
        .filter(|t| t.envelope.payload.kind() == MessageKind::Have)
        .collect();
    assert_eq!(haves.len(), 1);
    assert_eq!(haves[0].to.len(), 2, "fanout 3, two other members");
    assert_eq!(entries(haves[0]), vec![(peer(1).id, v, 1)]);
    assert_eq!(core.stats().announces_sent, 2);

    core.handle_message(now, sender(2), from(2, want(1, &[v, v])));
    let deltas = sent(&mut core, MessageKind::Delta);
    assert_eq!(deltas.len(), 1, "asked twice in one want, sent once");
    assert_eq!(deltas[0].to, vec![peer(2).addr]);
    assert_eq!(deltas[0].envelope.ttl, 1);
    assert_eq!(
        (deltas[0].envelope.origin, deltas[0].envelope.version),
        (peer(1).id, v)
    );
}

/// A `Have` of a missing delta starts one pull; other announcers become alternatives; the
/// delta, once applied, is announced on with one hop less to members other than its origin,
/// its sender and those that announced it, and the pull is over.
#[test]
fn a_have_is_pulled_once_and_the_delta_announced_on() {
    let (mut core, now) = lazy_core(6);
    core.handle_message(now, sender(2), from(2, have(3, 1, 3)));
    let wants = sent(&mut core, MessageKind::Want);
    assert_eq!(wants.len(), 1);
    assert_eq!(wants[0].to, vec![peer(2).addr]);
    assert_eq!(core.pulls_in_progress(), 1);
    core.handle_message(now, sender(4), from(4, have(3, 1, 2)));
    assert!(sent(&mut core, MessageKind::Want).is_empty(), "pulled once");
    assert_eq!(core.stats().pulls_sent, 1);

    core.handle_message(now, sender(2), delta_envelope(3, 1, 1, 0.02));
    assert_eq!(core.applied().len(), 1);
    assert_eq!(core.pulls_in_progress(), 0);
    let haves = sent(&mut core, MessageKind::Have);
    assert_eq!(haves.len(), 1);
    assert_eq!(entries(&haves[0]), vec![(peer(3).id, 1, 2)], "ttl 3 - 1");
    let mut to = haves[0].to.clone();
    to.sort();
    assert_eq!(to, vec![peer(5).addr, peer(6).addr]);
    // Announced again: applied, nothing to pull.
    core.handle_message(now, sender(5), from(5, have(3, 1, 1)));
    assert!(sent(&mut core, MessageKind::Want).is_empty());
}

/// A pull that runs out asks the next announcer; with none left it is dropped (anti-entropy
/// announces the delta again). A delta that arrives another way ends its pull.
#[test]
fn a_pull_that_runs_out_asks_the_next_announcer() {
    let (mut core, now) = lazy_core(4);
    core.handle_message(now, sender(2), from(2, have(3, 1, 1)));
    core.handle_message(now, sender(4), from(4, have(3, 1, 1)));
    drain(&mut core);
    let timeout = core.config().pull_timeout;
    core.handle_timeout(now + timeout - Duration::from_millis(1));
    assert!(sent(&mut core, MessageKind::Want).is_empty(), "not yet");
    let deadline = now + timeout + Duration::from_millis(1);
    core.handle_timeout(deadline);
    let wants = sent(&mut core, MessageKind::Want);
    assert_eq!(wants.len(), 1);
    assert_eq!(wants[0].to, vec![peer(4).addr]);
    assert_eq!(core.stats().pull_timeouts, 1);
    let later = deadline + core.config().pull_timeout + Duration::from_secs(1);
    core.handle_timeout(later);
    assert_eq!(core.stats().pull_timeouts, 2);
    assert_eq!(core.pulls_in_progress(), 0);
    assert!(sent(&mut core, MessageKind::Want).is_empty());

    core.handle_message(later, sender(2), from(2, have(3, 2, 1)));
    assert_eq!(core.pulls_in_progress(), 1);
    core.handle_message(later, sender(4), delta_envelope(3, 2, 1, 0.02));
    assert_eq!(core.pulls_in_progress(), 0, "applied by another path");
}

/// A digest whose sender lacks a large delta is answered with a `Have` (one hop), not the
/// bytes; a `Want` past the requester's budget, or for a delta not held, is not answered.
#[test]
fn anti_entropy_announces_large_deltas_and_wants_are_bounded() {
    let now = Instant::now();
    let config = CoreConfig {
        anti_entropy_max_bytes: P * 4 + 1,
        ..lazy_config()
    };
    let mut core = Core::new(config, peer(1), vec![0.0; P], vec![], 7, now);
    core.handle_message(now, sender(2), view_from(2, 1, vec![member(2), member(3)]));
    core.start_training();
    let v1 = core.publish(now, 0.5, vec![0.01; P]).unwrap();
    let v2 = core.publish(now, 0.5, vec![0.02; P]).unwrap();
    drain(&mut core);
    let digest = Payload::Digest(Digest {
        applied: Default::default(),
        lifecycle: Lifecycle::Training,
        reply: false,
        contents: Vec::new(),
        equivocations: Vec::new(),
    });
    core.handle_message(now, sender(2), from(2, digest));
    let (transmits, _) = drain(&mut core);
    assert!(transmits
        .iter()
        .all(|t| t.envelope.payload.kind() != MessageKind::Delta));
    let haves: Vec<Vec<(PeerId, u64, u8)>> = transmits
        .iter()
        .filter(|t| t.envelope.payload.kind() == MessageKind::Have)
        .map(entries)
        .collect();
    assert_eq!(
        haves,
        vec![vec![(peer(1).id, v1, 1)]],
        "as many as the budget lets it pull"
    );

    core.handle_message(now, sender(2), from(2, want(1, &[v1, v2, 9])));
    assert_eq!(sent(&mut core, MessageKind::Delta).len(), 1);
    assert_eq!(core.stats().answers_limited, 1);
    assert_eq!(core.stats().wants_not_held, 1);
}

/// `Have` and `Want` are control messages: one whose origin is not bound to the connection's
/// certificate is dropped; one out of its bounds is a decode error. Neither is answered.
#[test]
fn have_and_want_need_their_origins_connection_and_bounds() {
    let (mut core, now) = lazy_core(3);
    core.publish(now, 0.5, vec![0.01; P]).unwrap();
    drain(&mut core);
    core.handle_message(now, sender(3), from(2, have(3, 1, 1)));
    core.handle_message(now, sender(3), from(2, want(1, &[1])));
    assert_eq!(core.stats().senders_mismatched, 2);
    core.handle_message(now, sender(2), from(2, have(3, 0, 1)));
    let too_many = Payload::Want(Want {
        entries: vec![
            WantEntry {
                origin: peer(1).id,
                version: 1,
            };
            crate::wire::MAX_LAZY_ENTRIES + 1
        ],
    });
    core.handle_message(now, sender(2), from(2, too_many));
    assert_eq!(core.stats().decode_errors, 2);
    assert!(drain(&mut core).0.is_empty());
    assert_eq!(core.pulls_in_progress(), 0);
}

/// Every delta envelope received counts its value bytes; copies of an applied delta count as
/// duplicates, whether dropped by envelope id or as already applied.
#[test]
fn delta_bytes_and_duplicates_are_counted() {
    let (mut core, now) = lazy_core(3);
    let first = delta_envelope(3, 1, 1, 0.02);
    let bytes = crate::core::encoded_bytes(&[0.02; P]);
    core.handle_message(now, sender(2), first.clone());
    core.handle_message(now, sender(2), first);
    core.handle_message(now, sender(2), delta_envelope(3, 1, 1, 0.02));
    let stats = core.stats();
    assert_eq!(stats.delta_payload_bytes_received, 3 * bytes);
    assert_eq!(stats.duplicate_deltas_received, 2);
    assert_eq!(stats.deltas_applied, 1);
}

/// Announcements of deltas that would be refused are not pulled, and one announcer can hold
/// only part of the pull table.
#[test]
fn announcements_that_cannot_be_honest_are_not_pulled() {
    use crate::core::dissemination::lazy::MAX_PULLS_PER_ANNOUNCER;
    let (mut core, now) = lazy_core(3);
    let jump = core.config().max_version_jump;
    core.handle_message(now, sender(2), from(2, have(3, jump + 1, 1)));
    core.handle_message(now, sender(2), from(2, have(9, 1, 1)));
    assert_eq!(core.pulls_in_progress(), 0, "too far ahead; unknown origin");
    let many = |origin: u128, first: u64| {
        Payload::Have(Have {
            entries: (first..first + crate::wire::MAX_LAZY_ENTRIES as u64)
                .map(|version| HaveEntry {
                    origin: peer(origin).id,
                    version,
                    bytes: 64,
                    ttl: 1,
                })
                .collect(),
        })
    };
    core.handle_message(now, sender(2), from(2, many(3, 1)));
    core.handle_message(now, sender(2), from(2, many(2, 1)));
    assert_eq!(core.pulls_in_progress(), MAX_PULLS_PER_ANNOUNCER);
    core.handle_message(now, sender(3), from(3, many(2, 1)));
    assert_eq!(
        core.pulls_in_progress(),
        2 * MAX_PULLS_PER_ANNOUNCER,
        "another announcer still gets its share"
    );
}
