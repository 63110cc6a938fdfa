//! Fuzz-style tests of the core: valid frames of every message kind ([`sample_frames`], also
//! the fuzz target's seed corpus) mutated at random through the decoder and the handler.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::tests::{config, core_with_members, left_record, member, peer, sender, signed_delta, P};
use super::*;
use crate::id::MessageId;
use crate::wire::{Digest, JoinRequest, MembershipView, PingRequest, Probe, Snapshot};

/// Valid frames of every message kind, to mutate.
fn sample_frames() -> Vec<Vec<u8>> {
    let p = peer(2);
    let mut vv = VersionVector::new();
    vv.insert(p.id, 1);
    vv.insert(p.id, 3);
    let payloads = vec![
        Payload::Delta(signed_delta(2, 1, 0.5, vec![0.25; P])),
        Payload::Membership(MembershipView {
            members: vec![member(2), member(3)],
            push_pull: true,
            reply: false,
        }),
        Payload::Join(JoinRequest {
            member: member(4),
            forwarded: false,
        }),
        Payload::Welcome(Welcome {
            view: MembershipView {
                members: vec![member(2)],
                push_pull: false,
                reply: false,
            },
            snapshot: Snapshot {
                base: vec![1.0; P].into(),
                applied: vv.clone(),
                contents: Vec::new(),
            },
        }),
        Payload::Digest(Digest {
            applied: vv.clone(),
            lifecycle: Lifecycle::Training,
            reply: false,
            contents: Vec::new(),
            equivocations: Vec::new(),
        }),
        Payload::Snapshot(Snapshot {
            base: vec![2.0; P].into(),
            applied: vv,
            contents: Vec::new(),
        }),
        Payload::Leave(LeaveNotice {
            record: left_record(2),
        }),
        Payload::Ping(Probe {
            seq: 9,
            updates: vec![member(3)],
            applied_hash: 7,
        }),
        Payload::Ack(Probe {
            seq: 9,
            updates: vec![],
            applied_hash: 7,
        }),
        Payload::PingReq(PingRequest {
            target: peer(3).id,
            target_addr: peer(3).addr,
            seq: 4,
            updates: vec![member(2)],
        }),
        Payload::Have(crate::wire::Have {
            entries: vec![crate::wire::HaveEntry {
                origin: peer(3).id,
                version: 2,
                bytes: 1 << 20,
                ttl: 3,
            }],
        }),
        Payload::Want(crate::wire::Want {
            entries: vec![crate::wire::WantEntry {
                origin: peer(3).id,
                version: 2,
            }],
        }),
    ];
    payloads
        .into_iter()
        .map(|payload| {
            let env = Envelope {
                id: MessageId::from_uuid(uuid::Uuid::new_v4()),
                origin: p.id,
                origin_addr: p.addr,
                version: 1,
                ttl: 2,
                payload,
            };
            wire::encode(&env, 1 << 20).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// 100 inputs per case, 1,000 cases: 100,000 random and mutated byte strings go through
    /// the decoder and the core's message handler. Nothing panics, and every input is either
    /// handled or counted as a decode error.
    #[test]
    fn random_and_mutated_frames_never_panic_the_core(
        seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let frames = sample_frames();
        let (mut core, now) = core_with_members(4);
        let mut fed = 0u64;
        for _ in 0..100 {
            let input: Vec<u8> = match rng.gen_range(0..4) {
                0 => (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect(),
                1 => {
                    let mut f = frames[rng.gen_range(0..frames.len())].clone();
                    for _ in 0..rng.gen_range(1..8) {
                        let i = rng.gen_range(0..f.len());
                        f[i] = rng.gen();
                    }
                    f
                }
                2 => {
                    let f = &frames[rng.gen_range(0..frames.len())];
                    f[..rng.gen_range(0..f.len())].to_vec()
                }
                _ => {
                    // A valid header with a mutated body and a consistent length.
                    let f = &frames[rng.gen_range(0..frames.len())];
                    let mut body = f[wire::HEADER_LEN..].to_vec();
                    let at = rng.gen_range(0..=body.len());
                    for _ in 0..rng.gen_range(1..16) {
                        body.insert(at.min(body.len()), rng.gen());
                    }
                    let mut out = f[..wire::HEADER_LEN - 4].to_vec();
                    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    out.extend_from_slice(&body);
                    out
                }
            };
            let before = core.stats().decode_errors;
            let handled = core.handle_bytes(now, sender(2), &input).is_ok();
            prop_assert!(handled || core.stats().decode_errors == before + 1);
            core.handle_timeout(now + Duration::from_millis(fed * 10));
            while core.poll_transmit().is_some() {}
            while core.poll_event().is_some() {}
            fed += 1;
        }
        prop_assert_eq!(fed, 100);
        prop_assert!(core.base().iter().all(|v| v.is_finite()));
    }
}

/// Writes [`sample_frames`] as the fuzz seed corpus, one file per message kind, into the
/// directory named by `RUMOR_FUZZ_SEEDS` (e.g. `fuzz/seeds`). Run on demand:
/// `RUMOR_FUZZ_SEEDS=fuzz/seeds cargo test --lib write_fuzz_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes files; run on demand to regenerate fuzz/seeds"]
fn write_fuzz_seed_corpus() {
    let dir = std::env::var_os("RUMOR_FUZZ_SEEDS").expect("set RUMOR_FUZZ_SEEDS to a directory");
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for frame in sample_frames() {
        let kind = wire::decode(&frame, config().limits())
            .unwrap()
            .payload
            .kind();
        let name = format!("{kind:?}").to_lowercase();
        std::fs::write(dir.join(name), &frame).unwrap();
    }
}

/// The fuzz target's seed corpus (`fuzz/seeds`, valid frames of every kind) and 10,000
/// mutations of each (flipped bytes, truncations, insertions) through the decoder and the
/// core's handler, as `scripts/fuzz.sh` does without coverage guidance. Prints the counts.
#[test]
fn fuzz_smoke_seed_corpus_and_mutations() {
    use rand::{Rng, SeedableRng};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), 12, "one seed per message kind");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let (mut core, now) = core_with_members(4);
    let (mut inputs, mut handled) = (0u64, 0u64);
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in &seeds {
        for _ in 0..10_000 {
            let mut f = seed.clone();
            match rng.gen_range(0..3) {
                0 => {
                    for _ in 0..rng.gen_range(1..8) {
                        let i = rng.gen_range(0..f.len());
                        f[i] = rng.gen();
                    }
                }
                1 => f.truncate(rng.gen_range(0..f.len())),
                _ => {
                    let at = rng.gen_range(0..=f.len());
                    f.insert(at, rng.gen());
                }
            }
            inputs += 1;
            match core.handle_bytes(now, sender(2), &f) {
                Ok(()) => handled += 1,
                Err(e) => {
                    let kind = match e {
                        wire::DecodeError::Truncated(_) => "truncated",
                        wire::DecodeError::BadMagic(_) => "bad magic",
                        wire::DecodeError::UnsupportedVersion(_) => "unsupported version",
                        wire::DecodeError::TooLarge { .. } => "too large",
                        wire::DecodeError::LengthMismatch { .. } => "length mismatch",
                        _ => "malformed",
                    };
                    *errors.entry(kind).or_default() += 1;
                }
            }
            while core.poll_transmit().is_some() {}
            while core.poll_event().is_some() {}
        }
    }
    println!(
        "fuzz smoke: {inputs} inputs from {} seeds, {handled} decoded and handled, decode errors \
         {errors:?}, 0 panics",
        seeds.len()
    );
    assert_eq!(inputs, 120_000);
    assert_eq!(handled + errors.values().sum::<u64>(), inputs);
    assert_eq!(core.stats().decode_errors, errors.values().sum::<u64>());
    assert!(core.base().iter().all(|v| v.is_finite()));
}
