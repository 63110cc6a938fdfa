//! Tests of the wire codec: round trips, limits, and malformed frames.

use super::*;

fn limits() -> Limits {
    Limits {
        max_body: 1 << 20,
        max_ttl: 8,
    }
}

fn sample(payload: Payload) -> Envelope {
    Envelope {
        id: MessageId::from_u128(7),
        origin: PeerId::from_u128(1),
        origin_addr: "127.0.0.1:7000".parse().unwrap(),
        version: 3,
        ttl: 2,
        payload,
    }
}

#[test]
fn delta_round_trips() {
    let env = sample(Payload::Delta(DeltaPayload {
        weight: 0.25,
        values: vec![1.0, -2.5, 3.0].into(),
        signature: Signature(vec![1, 2, 3]),
    }));
    let frame = encode(&env, 1 << 20).unwrap();
    assert_eq!(&frame[..4], b"RMOR");
    assert_eq!(decode(&frame, limits()).unwrap(), env);
}

#[test]
fn header_errors_are_typed() {
    let env = sample(Payload::Ping(Probe {
        seq: 1,
        updates: Vec::new(),
        applied_hash: 0,
    }));
    let frame = encode(&env, 1 << 20).unwrap();
    assert_eq!(
        decode(&frame[..5], limits()),
        Err(DecodeError::Truncated(5))
    );
    let mut bad = frame.clone();
    bad[0] = b'X';
    assert!(matches!(
        decode(&bad, limits()),
        Err(DecodeError::BadMagic(_))
    ));
    let mut bad = frame.clone();
    bad[4] = 99;
    assert_eq!(
        decode(&bad, limits()),
        Err(DecodeError::UnsupportedVersion(99))
    );
    let mut bad = frame.clone();
    bad.push(0);
    assert!(matches!(
        decode(&bad, limits()),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let small = Limits {
        max_body: 4,
        max_ttl: 8,
    };
    assert!(matches!(
        decode(&frame, small),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn ttl_above_maximum_is_rejected() {
    let mut env = sample(Payload::Ping(Probe {
        seq: 0,
        updates: Vec::new(),
        applied_hash: 0,
    }));
    env.ttl = 200;
    let frame = encode(&env, 1 << 20).unwrap();
    assert!(matches!(
        decode(&frame, limits()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn huge_declared_vector_length_does_not_allocate_or_panic() {
    let env = sample(Payload::Delta(DeltaPayload {
        weight: 0.5,
        values: vec![0.0; 4].into(),
        signature: Signature::default(),
    }));
    let mut frame = encode(&env, 1 << 20).unwrap();
    // Corrupt every byte of the body in turn; each decode must return, not panic.
    for i in HEADER_LEN..frame.len() {
        let saved = frame[i];
        frame[i] = 0xff;
        let _ = decode(&frame, limits());
        frame[i] = saved;
    }
}

#[test]
fn oversize_encode_is_an_error() {
    // Not zeros: those go out sparse, in a few bytes.
    let env = sample(Payload::Delta(DeltaPayload {
        weight: 0.5,
        values: (1..=1000).map(|i| i as f32).collect::<Vec<_>>().into(),
        signature: Signature::default(),
    }));
    assert!(matches!(
        encode(&env, 100),
        Err(EncodeError::TooLarge { .. })
    ));
}

/// A sparse delta costs far less than a byte per value; a frame may still not declare more
/// values than its body limit in bytes (as many as a dense int8 body could hold).
#[test]
fn sparse_delta_declares_at_most_max_body_values() {
    let env = sample(Payload::Delta(DeltaPayload {
        weight: 0.5,
        values: vec![0.0; 1 << 20].into(),
        signature: Signature::default(),
    }));
    let frame = encode(&env, 1 << 20).unwrap();
    assert!(frame.len() < 1024, "{} bytes", frame.len());
    let at = |max_body| Limits {
        max_body,
        ..limits()
    };
    assert_eq!(decode(&frame, at(1 << 20)).unwrap(), env);
    assert!(matches!(
        decode(&frame, at((1 << 20) - 1)),
        Err(DecodeError::Malformed(m)) if m.contains("above the limit")
    ));
}
