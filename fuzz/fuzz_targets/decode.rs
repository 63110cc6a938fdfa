//! Fuzz target `decode`: arbitrary bytes through `rumor_proto::wire::decode`, and every frame that
//! decodes through `Envelope::validate` and a small `Core`'s message handler (`handle_bytes`),
//! followed by a timer tick. Nothing may panic; a frame that does not decode must be counted as a
//! decode error by the core. The same bytes also go to the compact value decoder on its own
//! ([`compact`]: every form, the sparse one included), whose output must re-encode losslessly.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rumor_proto::auth::{test_keys, Credential, Signature};
use rumor_proto::compact::CompactValues;
use rumor_proto::core::{sign_record, Core, CoreConfig, LocalPeer, Sender};
use rumor_proto::wire::{self, Envelope, Lifecycle, MemberRecord, MemberStatus, MembershipView, Payload};
use rumor_proto::MessageId;

/// Parameters of the fuzzed core's model (the seed corpus in `fuzz/seeds/` uses the same).
const P: usize = 16;

/// Test member `n` (the core's unit tests and the seed corpus use the same keys and ids).
fn peer(n: u128) -> LocalPeer {
    let (id, keys) = test_keys::member(n as u64);
    LocalPeer {
        id,
        name: format!("p{n}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
        keys,
    }
}

fn sender(n: u128) -> Sender {
    let p = peer(n);
    Sender {
        addr: p.addr,
        key: p.keys.key_id(),
    }
}

fn member(n: u128) -> MemberRecord {
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
        credential: Credential::new(Vec::new()),
        signature: Signature::default(),
    };
    sign_record(&p.keys, &mut record);
    record
}

/// Peer 1, knowing peers 2..=4 (as the core's own proptest builds it).
fn core(now: Instant) -> Core {
    let config = CoreConfig {
        param_count: P,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, peer(1), vec![0.0; P], vec![], 7, now);
    let view = Envelope {
        id: MessageId::from_u128(99),
        origin: peer(2).id,
        origin_addr: peer(2).addr,
        version: 1,
        ttl: 1,
        payload: Payload::Membership(MembershipView {
            members: (2..=4).map(member).collect(),
            push_pull: false,
            reply: false,
        }),
    };
    core.handle_message(now, sender(2), view);
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core
}

/// `data` as a value count (two bytes, little-endian) and `CompactValues::to_bytes` output (format
/// byte 0 = f32, 1 = bf16, 2 = int8, 3 = sparse). What decodes has the count announced, and
/// encoding it again gives a form that decodes to the same bits and encodes to itself.
fn compact(data: &[u8]) {
    let Some((count, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let count = usize::from(u16::from_le_bytes(*count));
    let Ok(values) = CompactValues::decode_bytes(bytes, count) else {
        return;
    };
    assert_eq!(values.len(), count);
    let again = CompactValues::encode(&values);
    let back = again.decode().expect("an encoded vector decodes");
    assert!(
        back.iter()
            .zip(&values)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "re-encoding lost bits"
    );
    assert_eq!(
        CompactValues::encode(&back),
        again,
        "encoding is not a function of the bits"
    );
}

fuzz_target!(|data: &[u8]| {
    compact(data);
    let now = Instant::now();
    let mut core = core(now);
    let limits = core.config().limits();
    let decoded = wire::decode(data, limits);
    if let Ok(envelope) = &decoded {
        // decode validates already; validating again must agree.
        assert!(envelope.validate(limits).is_ok(), "decode returned an invalid envelope");
    }
    let before = core.stats().decode_errors;
    let handled = core.handle_bytes(now, sender(2), data);
    assert_eq!(handled.is_ok(), decoded.is_ok(), "core and decoder disagree");
    if handled.is_err() {
        assert_eq!(core.stats().decode_errors, before + 1);
    }
    core.handle_timeout(now + Duration::from_secs(1));
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    assert!(core.base().iter().all(|v| v.is_finite()), "non-finite base");
});
