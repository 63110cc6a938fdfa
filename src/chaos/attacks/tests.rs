//! Each kind builds what it says, checked two ways: decoded with [`wire::decode`] (and the
//! signatures checked with the test keys), and fed to a real protocol core as the target, which
//! must count it under the reason the kind aims at.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rumor_proto::auth::test_keys;
use rumor_proto::auth::Credential;
use rumor_proto::core::{Core, CoreConfig, LocalPeer, Sender, MAX_IDENTITIES_PER_CERTIFICATE};
use rumor_proto::wire::{DecodeError, Limits};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Parameters of the test model.
const P: usize = 10;
const TARGET_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);
const CHAOS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7100);
const LIMITS: Limits = Limits {
    max_body: 64 * 1024,
    max_ttl: 6,
};

fn options(kind: ChaosKind, count: u64, seed: Option<u64>) -> ChaosOptions {
    ChaosOptions {
        param_count: P,
        max_message_bytes: LIMITS.max_body,
        concurrency: 1,
        rng_seed: seed,
        ..ChaosOptions::new(TARGET_ADDR, kind, count)
    }
}

/// Test member `n`'s keys and id.
fn member(n: u64) -> (PeerId, PeerKeys) {
    test_keys::member(n)
}

/// A generator for chaos as test member 2, with test member 1 (the target) as the victim when
/// `victim_known`.
fn generator(
    kind: ChaosKind,
    count: u64,
    seed: Option<u64>,
    victim_known: bool,
) -> Result<Generator, ChaosError> {
    let (target, _) = member(1);
    let victim = victim_known.then_some(Victim {
        peer_id: target,
        addr: Some(TARGET_ADDR),
        source: VictimSource::TargetStatus,
    });
    let (_, keys) = member(2);
    Generator::new(
        &options(kind, count, seed),
        CHAOS_ADDR,
        keys,
        "chaos",
        1_000,
        victim,
    )
}

/// A real core as the target (test member 1), and chaos's connection as it sees it.
struct Target {
    core: Core,
    from: Sender,
    now: Instant,
}

impl Target {
    fn new() -> Self {
        let (id, keys) = member(1);
        let (_, chaos_keys) = member(2);
        let now = Instant::now();
        let config = CoreConfig {
            param_count: P,
            max_message_bytes: LIMITS.max_body,
            ..CoreConfig::default()
        };
        let me = LocalPeer {
            id,
            name: "target".into(),
            addr: TARGET_ADDR,
            keys,
        };
        Self {
            core: Core::new(config, me, vec![0.0; P], Vec::new(), 7, now),
            from: Sender {
                addr: CHAOS_ADDR,
                key: chaos_keys.key_id(),
            },
            now,
        }
    }

    fn take(&mut self, frame: &[u8]) {
        // A frame that does not decode is counted; nothing else to do with the error.
        let _ = self.core.handle_bytes(self.now, self.from, frame);
    }

    /// Takes the introduction, then the first `n` messages of `g`.
    fn run(&mut self, g: &mut Generator, n: u64) -> Result<Vec<Vec<u8>>, ChaosError> {
        self.take(&Generator::encode(&g.introduction())?);
        let mut frames = Vec::new();
        for i in 0..n {
            let frame = g.message(i)?;
            self.take(&frame);
            frames.push(frame);
        }
        Ok(frames)
    }

    fn rejected(&self, reason: &str) -> u64 {
        let stats = self.core.stats();
        stats.deltas_rejected.get(reason).copied().unwrap_or(0)
    }

    fn refused(&self, reason: &str) -> u64 {
        let stats = self.core.stats();
        stats.records_refused.get(reason).copied().unwrap_or(0)
    }

    fn received(&self, kind: &str) -> u64 {
        self.core.stats().received.get(kind).copied().unwrap_or(0)
    }

    /// Kinds of the messages the core wants sent, drained.
    fn sent_kinds(&mut self) -> Vec<&'static str> {
        std::iter::from_fn(|| self.core.poll_transmit())
            .map(|t| t.envelope.payload.kind().as_str())
            .collect()
    }
}

fn delta_of(envelope: &Envelope) -> Option<&DeltaPayload> {
    match &envelope.payload {
        Payload::Delta(d) => Some(d),
        _ => None,
    }
}

/// Whether `envelope`'s delta signature verifies under `credential`.
fn verifies(envelope: &Envelope, credential: &Credential) -> bool {
    let (_, keys) = member(1);
    delta_of(envelope).is_some_and(|d| {
        let statement = statement::delta(
            envelope.origin,
            envelope.version,
            d.weight,
            &content_hash(&d.values),
        );
        keys.verifier
            .verify(credential, &statement, &d.signature)
            .is_ok()
    })
}

fn credential_of(n: u64) -> Credential {
    member(n).1.signer.credential().clone()
}

#[test]
fn the_introduction_is_chaos_own_signed_record_left_and_stopped() -> TestResult {
    let g = generator(ChaosKind::Nan, 5, Some(1), true)?;
    let intro = wire::decode(&Generator::encode(&g.introduction())?, LIMITS)?;
    let (_, keys) = member(2);
    assert_eq!(intro.origin, chaos_id(&keys.key_id()));
    assert!(keys.key_id().binds(&intro.origin));
    let Payload::Membership(view) = &intro.payload else {
        return Err("the introduction is a membership view".into());
    };
    assert!(!view.push_pull);
    assert_eq!(view.members.len(), 1);
    let record = &view.members[0];
    assert_eq!(record, g.record());
    assert_eq!(record.peer_id, intro.origin);
    assert_eq!(record.status, MemberStatus::Left);
    assert_eq!(record.lifecycle, Lifecycle::Stopped);
    assert_eq!(record.heartbeat, 1_000);
    assert_eq!(record.published, g.base_version() + 5);
    assert!((1..BASE_VERSION_END).contains(&g.base_version()));
    keys.verifier
        .verify(&record.credential, &record.statement(), &record.signature)?;
    // The target takes it: a member it never probes nor counts live.
    let mut target = Target::new();
    target.run(&mut generator(ChaosKind::Junk, 0, Some(1), true)?, 0)?;
    let held: Vec<&MemberRecord> = target
        .core
        .members()
        .filter(|m| m.peer_id == intro.origin)
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].status, MemberStatus::Left);
    assert_eq!(target.core.live_count(), 1);
    assert!(target.core.stats().records_refused.is_empty());
    // A later run (a higher heartbeat) supersedes it.
    let (_, keys) = member(2);
    let mut later = Generator::new(
        &options(ChaosKind::Junk, 0, Some(9)),
        CHAOS_ADDR,
        keys,
        "chaos",
        2_000,
        None,
    )?;
    target.run(&mut later, 0)?;
    let record = target.core.members().find(|m| m.peer_id == intro.origin);
    assert_eq!(record.map(|r| r.heartbeat), Some(2_000));
    Ok(())
}

#[test]
fn without_the_introduction_every_delta_is_an_unknown_origin() -> TestResult {
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Nan, 3, Some(1), true)?;
    for i in 0..3 {
        let frame = g.message(i)?;
        target.take(&frame);
    }
    assert_eq!(target.rejected("unknown_origin"), 3);
    assert_eq!(target.rejected("non_finite"), 0);
    Ok(())
}

#[test]
fn each_earlier_kind_reaches_the_check_it_aims_at() -> TestResult {
    const N: u64 = 3;
    for kind in [
        ChaosKind::Junk,
        ChaosKind::Truncated,
        ChaosKind::Duplicate,
        ChaosKind::Replay,
        ChaosKind::Nan,
        ChaosKind::Shape,
        ChaosKind::Norm,
        ChaosKind::Version,
        ChaosKind::Flood,
    ] {
        let mut target = Target::new();
        let mut g = generator(kind, N, None, true)?;
        let frames = target.run(&mut g, N)?;
        let stats = target.core.stats().clone();
        let what = format!("{kind:?}: {stats:?}");
        assert_eq!(target.rejected("unknown_origin"), 0, "{what}");
        assert_eq!(target.rejected("signature"), 0, "{what}");
        assert_eq!(stats.senders_mismatched, 0, "{what}");
        assert!(stats.records_refused.is_empty(), "{what}");
        match kind {
            ChaosKind::Junk => assert_eq!(stats.decode_errors, N, "{what}"),
            ChaosKind::Truncated => {
                assert_eq!(stats.decode_errors, N, "{what}");
                assert!(matches!(
                    wire::decode(&frames[0], LIMITS),
                    Err(DecodeError::LengthMismatch { .. })
                ));
            }
            ChaosKind::Duplicate => {
                assert_eq!((stats.deltas_applied, stats.duplicates_dropped), (1, N - 1));
                assert!(target.core.applied().contains(g.origin(), g.base_version()));
            }
            ChaosKind::Replay => {
                assert_eq!(
                    (stats.deltas_applied, stats.deltas_already_applied),
                    (1, N - 1),
                    "{what}"
                );
                let a = wire::decode(&frames[0], LIMITS)?;
                let b = wire::decode(&frames[1], LIMITS)?;
                assert!(a.id != b.id && a.origin == b.origin && a.version == b.version);
            }
            ChaosKind::Nan => assert_eq!(target.rejected("non_finite"), N, "{what}"),
            ChaosKind::Shape => assert_eq!(target.rejected("shape"), N, "{what}"),
            ChaosKind::Norm => {
                // A fresh core has no norm reference yet: the deltas pass every check before
                // the norm's (signature, shape, version) and are applied.
                assert_eq!(stats.deltas_applied, N, "{what}");
                let e = wire::decode(&frames[0], LIMITS)?;
                assert!(delta_of(&e).is_some_and(|d| d.values.iter().all(|v| *v == 1e6)));
                assert!(verifies(&e, &credential_of(2)));
            }
            ChaosKind::Version => {
                assert_eq!(target.rejected("version_jump"), N, "{what}");
                let e = wire::decode(&frames[0], LIMITS)?;
                assert_eq!(
                    e.version,
                    g.record().published.max(BASE_VERSION_END) + VERSION_JUMP
                );
            }
            ChaosKind::Flood => {
                assert_eq!(stats.decode_errors, 2, "{what}");
                assert_eq!(
                    target.received("membership"),
                    2,
                    "introduction and one: {what}"
                );
                assert!(wire::decode(&frames[1], LIMITS)?.origin == g.origin());
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn forge_signs_a_delta_in_the_victims_name_with_chaos_key() -> TestResult {
    const N: u64 = 3;
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Forge, N, None, true)?;
    let frames = target.run(&mut g, N)?;
    let e = wire::decode(&frames[0], LIMITS)?;
    let (victim, _) = member(1);
    assert_eq!(e.origin, victim);
    assert!(e.version >= FORGE_VERSION_BASE);
    assert!(verifies(&e, &credential_of(2)), "chaos's own signature");
    assert!(!verifies(&e, &credential_of(1)), "not the victim's");
    assert_eq!(target.rejected("signature"), N);
    assert_eq!(target.core.stats().deltas_applied, 0);
    assert!(!target.core.applied().origins().contains_key(&victim));

    // Without the victim's id (no metrics address), an id of another key: unknown.
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Forge, N, None, false)?;
    let frames = target.run(&mut g, N)?;
    assert_eq!(g.victim().source, VictimSource::MadeUp);
    let e = wire::decode(&frames[0], LIMITS)?;
    assert_eq!(e.origin, g.victim().peer_id);
    assert!(!member(2).1.key_id().binds(&e.origin));
    assert_eq!(target.rejected("unknown_origin"), N);
    assert_eq!(target.core.stats().deltas_applied, 0);
    Ok(())
}

#[test]
fn alter_changes_one_value_of_a_delta_chaos_signed() -> TestResult {
    const N: u64 = 3;
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Alter, N, None, true)?;
    let frames = target.run(&mut g, N)?;
    let e = wire::decode(&frames[0], LIMITS)?;
    assert_eq!(e.origin, g.origin());
    let changed = delta_of(&e).map(|d| d.values.iter().filter(|v| **v != 0.0).count());
    assert_eq!(changed, Some(1));
    assert!(!verifies(&e, &credential_of(2)));
    // Undo the change: the signature is chaos's.
    let mut undone = e.clone();
    if let Payload::Delta(d) = &mut undone.payload {
        d.values = vec![0.0; P].into();
    }
    assert!(verifies(&undone, &credential_of(2)));
    assert_eq!(target.rejected("signature"), N);
    assert_eq!(target.core.stats().deltas_applied, 0);
    Ok(())
}

#[test]
fn impersonate_and_reflect_speak_for_the_victim_and_get_no_answer() -> TestResult {
    const N: u64 = 3;
    for kind in [ChaosKind::Impersonate, ChaosKind::Reflect] {
        let mut target = Target::new();
        let mut g = generator(kind, N, None, true)?;
        let frames = target.run(&mut g, N)?;
        let e = wire::decode(&frames[0], LIMITS)?;
        let (victim, _) = member(1);
        assert_eq!(e.origin, victim, "{kind:?}");
        assert_eq!(e.origin_addr, TARGET_ADDR, "{kind:?}");
        match (&e.payload, kind) {
            (Payload::Ping(_), ChaosKind::Impersonate) => {}
            (Payload::Join(join), ChaosKind::Reflect) => {
                assert_eq!(join.member.peer_id, victim);
                assert!(!join.forwarded);
            }
            (other, _) => return Err(format!("{kind:?} built {:?}", other.kind()).into()),
        }
        let stats = target.core.stats().clone();
        assert_eq!(stats.senders_mismatched, N, "{kind:?}: {stats:?}");
        assert_eq!(stats.snapshots_sent, 0);
        let sent = target.sent_kinds();
        assert!(
            !sent
                .iter()
                .any(|k| ["ack", "welcome", "snapshot"].contains(k)),
            "{kind:?} answered: {sent:?}"
        );
    }
    Ok(())
}

#[test]
fn invent_is_refused_unbound_and_past_the_identity_cap() -> TestResult {
    let mut target = Target::new();
    let key = member(2).1.key_id();
    let bound = |t: &Target| t.core.members().filter(|m| key.binds(&m.peer_id)).count();
    let mut g = generator(ChaosKind::Invent, 4, Some(1), true)?;
    let frames = target.run(&mut g, 4)?;
    let e = wire::decode(&frames[0], LIMITS)?;
    let Payload::Membership(view) = &e.payload else {
        return Err("invent sends membership views".into());
    };
    assert_eq!(view.members.len(), 2);
    assert!(!key.binds(&view.members[0].peer_id));
    assert!(key.binds(&view.members[1].peer_id));
    assert_ne!(view.members[1].peer_id, g.origin());
    // Chaos's own id and three invented ones fill the cap; the fourth is refused.
    assert_eq!(target.refused("unbound"), 4);
    assert_eq!(target.refused("too_many_identities"), 1);
    assert_eq!(bound(&target), MAX_IDENTITIES_PER_CERTIFICATE);
    let members = target.core.members().count();
    // Another run: nothing more gets in.
    let mut g = generator(ChaosKind::Invent, 3, Some(2), true)?;
    target.run(&mut g, 3)?;
    assert_eq!(target.refused("unbound"), 7);
    assert_eq!(target.refused("too_many_identities"), 4);
    assert_eq!(target.core.members().count(), members);
    assert_eq!(
        target.core.live_count(),
        1,
        "invented members are never live"
    );
    Ok(())
}

#[test]
fn tamper_changes_a_field_of_chaos_signed_record() -> TestResult {
    const N: u64 = 4;
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Tamper, N, None, true)?;
    let frames = target.run(&mut g, N)?;
    let own = g.record().clone();
    for (i, frame) in frames.iter().enumerate() {
        let e = wire::decode(frame, LIMITS)?;
        let Payload::Membership(view) = &e.payload else {
            return Err("tamper sends membership views".into());
        };
        let r = &view.members[0];
        assert_eq!((r.peer_id, &r.signature), (own.peer_id, &own.signature));
        assert!(r.heartbeat > own.heartbeat);
        if i % 2 == 0 {
            assert_eq!(r.published, own.published + TAMPER_LIFT);
        } else {
            assert_ne!(r.addr, own.addr);
        }
    }
    assert_eq!(target.refused("signature"), N);
    let held = target.core.members().find(|m| m.peer_id == own.peer_id);
    assert_eq!(held, Some(&own));
    Ok(())
}

#[test]
fn origins_are_fresh_and_unknown_and_the_version_vector_keeps_its_size() -> TestResult {
    const N: u64 = 8;
    let mut target = Target::new();
    let mut g = generator(ChaosKind::Origins, N, None, true)?;
    let origins = target.core.applied().origins().len();
    let frames = target.run(&mut g, N)?;
    let key = member(2).1.key_id();
    let mut seen = HashSet::new();
    for frame in &frames {
        let e = wire::decode(frame, LIMITS)?;
        assert!(seen.insert(e.origin), "a fresh origin every message");
        assert_ne!(e.origin, g.origin());
        assert!(verifies(&e, &credential_of(2)));
    }
    let bound = seen.iter().filter(|o| key.binds(o)).count();
    assert_eq!(bound, N as usize / 2);
    assert_eq!(target.rejected("unknown_origin"), N);
    assert_eq!(target.core.applied().origins().len(), origins);
    Ok(())
}

/// The envelopes (id, origin) of the first `n` messages of one run.
fn envelopes(
    kind: ChaosKind,
    seed: Option<u64>,
    n: u64,
) -> Result<Vec<(MessageId, PeerId)>, Box<dyn std::error::Error>> {
    let mut g = generator(kind, n, seed, true)?;
    let mut out = Vec::new();
    for i in 0..n {
        let e = wire::decode(&g.message(i)?, LIMITS)?;
        out.push((e.id, e.origin));
    }
    Ok(out)
}

const DECODABLE: [ChaosKind; 6] = [
    ChaosKind::Replay,
    ChaosKind::Nan,
    ChaosKind::Shape,
    ChaosKind::Norm,
    ChaosKind::Version,
    ChaosKind::Duplicate,
];

#[test]
fn ids_are_fresh_on_every_run_by_default() -> TestResult {
    let mut ids = HashSet::new();
    for _run in 0..2 {
        for kind in DECODABLE {
            let run = envelopes(kind, None, 3)?;
            let expected_new = if kind == ChaosKind::Duplicate { 1 } else { 3 };
            let new = run.iter().filter(|(id, _)| ids.insert(*id)).count();
            assert_eq!(new, expected_new, "{kind:?} reused an id");
        }
    }
    Ok(())
}

#[test]
fn a_seeded_run_is_reproducible_and_kinds_never_share_ids() -> TestResult {
    let mut seen: HashMap<MessageId, ChaosKind> = HashMap::new();
    let chaos = chaos_id(&member(2).1.key_id());
    for kind in DECODABLE {
        let run = envelopes(kind, Some(42), 3)?;
        assert_eq!(run, envelopes(kind, Some(42), 3)?, "{kind:?} reproducible");
        assert_ne!(
            run,
            envelopes(kind, Some(43), 3)?,
            "{kind:?} differs by seed"
        );
        for (id, origin) in run {
            assert_eq!(origin, chaos, "{kind:?}: one origin per certificate");
            if let Some(other) = seen.insert(id, kind) {
                assert_eq!(other, kind, "{kind:?} shares {id:?} with {other:?}");
            }
        }
    }
    Ok(())
}

/// A generator of `equivocate` for chaos as test member 2 against `target`.
fn equivocator(target: SocketAddr, count: u64, seed: Option<u64>) -> Result<Generator, ChaosError> {
    let (_, keys) = member(2);
    let o = ChaosOptions {
        target,
        ..options(ChaosKind::Equivocate, count, seed)
    };
    Generator::new(&o, CHAOS_ADDR, keys, "chaos", 1_000, None)
}

/// The decoded messages of `g`, `n` of them.
fn decoded(g: &mut Generator, n: u64) -> Result<Vec<Envelope>, Box<dyn std::error::Error>> {
    (0..n)
        .map(|i| Ok(wire::decode(&g.message(i)?, LIMITS)?))
        .collect()
}

#[test]
fn equivocate_signs_one_version_with_content_that_depends_on_the_target() -> TestResult {
    const OTHER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7001);
    let mut a = equivocator(TARGET_ADDR, 3, Some(5))?;
    let mut b = equivocator(OTHER, 3, Some(5))?;
    let (sent_a, sent_b) = (
        a.equivocation().cloned().ok_or("a's equivocation")?,
        b.equivocation().cloned().ok_or("b's equivocation")?,
    );
    // One seed, one version; two targets, two contents.
    assert_eq!(a.base_version(), b.base_version());
    assert_eq!(sent_a.version, a.base_version());
    assert_eq!(sent_a.version, sent_b.version);
    assert_ne!(sent_a.content_hash, sent_b.content_hash);
    // The introduction announces that one version, however many copies are sent.
    assert_eq!(a.record().published, a.base_version());
    let chaos = chaos_id(&member(2).1.key_id());
    let mut ids = HashSet::new();
    for (g, sent) in [(&mut a, &sent_a), (&mut b, &sent_b)] {
        let copies = decoded(g, 3)?;
        for e in &copies {
            assert!(ids.insert(e.id), "a fresh envelope id for every copy");
            assert_eq!((e.origin, e.version, e.ttl), (chaos, sent.version, 1));
            assert!(
                verifies(e, &credential_of(2)),
                "chaos's own valid signature"
            );
            let d = delta_of(e).ok_or("a delta")?;
            assert_eq!(d.values.len(), P);
            assert!(d.values.iter().all(|v| v.abs() == EQUIVOCATION_EPSILON));
            assert_eq!(super::hex(&content_hash(&d.values)), sent.content_hash);
            assert_eq!(
                (sent.positive, sent.negative),
                (
                    d.values.iter().filter(|v| **v > 0.0).count(),
                    d.values.iter().filter(|v| **v < 0.0).count()
                )
            );
        }
        assert_eq!(delta_of(&copies[0]), delta_of(&copies[2]), "one delta");
    }
    // The same target again: the same delta (no equivocation against one peer).
    let again = equivocator(TARGET_ADDR, 1, Some(5))?;
    assert_eq!(again.equivocation(), Some(&sent_a));
    // Another seed: another version.
    let other_seed = equivocator(TARGET_ADDR, 1, Some(6))?;
    assert_ne!(other_seed.base_version(), a.base_version());
    // The values are the documented function of the target's address.
    assert_eq!(
        equivocation_values(TARGET_ADDR, P),
        equivocation_values(
            SocketAddr::new(
                std::net::IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
                7000
            ),
            P
        )
    );
    Ok(())
}

#[test]
fn a_target_given_both_equivocated_deltas_detects_it_and_quarantines_chaos() -> TestResult {
    const OTHER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7001);
    let mut target = Target::new();
    let mut a = equivocator(TARGET_ADDR, 2, Some(5))?;
    target.run(&mut a, 2)?;
    let stats = target.core.stats().clone();
    assert_eq!(
        (stats.deltas_applied, stats.deltas_already_applied),
        (1, 1),
        "{stats:?}"
    );
    assert!(target.core.applied().contains(a.origin(), a.base_version()));
    assert!(target
        .core
        .base()
        .iter()
        .all(|v| v.abs() == EQUIVOCATION_EPSILON));
    assert_eq!(
        stats.equivocations_detected, 0,
        "one delta is no equivocation"
    );
    // The other target's delta, as if passed on by a forwarder: an equivocation.
    let mut b = equivocator(OTHER, 1, Some(5))?;
    let frame = b.message(0)?;
    target.take(&frame);
    let stats = target.core.stats().clone();
    assert_eq!(stats.equivocations_detected, 1, "{stats:?}");
    assert_eq!(stats.deltas_retracted, 1, "{stats:?}");
    assert!(
        target.core.base().iter().all(|v| *v == 0.0),
        "the applied delta is taken out again"
    );
    // Chaos is quarantined: its next message is dropped.
    target.take(&Generator::encode(&a.introduction())?);
    assert!(target.core.stats().messages_from_revoked >= 1);
    Ok(())
}
