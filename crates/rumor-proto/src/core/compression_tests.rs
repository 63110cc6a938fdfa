//! The merge with compressed deltas: top-k quantized deltas (error feedback across rounds,
//! sparse on the wire) of several origins give the same base in any delivery order.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tests::{drain, member, peer, sender, signed_delta, view_from};
use super::*;
use crate::compact::{CompactValues, Compression, Quantizer, CHUNK};
use crate::id::MessageId;

/// Parameters: three full chunks and a short one.
const PARAMS: usize = 3 * CHUNK + 123;
/// Origins (peers 2..=ORIGINS+1) and rounds each.
const ORIGINS: u128 = 4;
const ROUNDS: u64 = 6;

/// Peer 1 with a model of [`PARAMS`] zeros, knowing peers 2..=ORIGINS+1.
fn core() -> (Core, Instant) {
    let now = Instant::now();
    let config = CoreConfig {
        param_count: PARAMS,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, peer(1), vec![0.0; PARAMS], vec![], 7, now);
    let view = view_from(2, 1, (2..=ORIGINS + 1).map(member).collect());
    core.handle_message(now, sender(2), view);
    drain(&mut core);
    (core, now)
}

/// Every origin's deltas, quantized by its own quantizer round after round, as wire frames,
/// and their exact sum (f64).
fn frames(compression: Compression) -> (Vec<Vec<u8>>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut out = Vec::new();
    let mut sum = vec![0.0f64; PARAMS];
    let weight = 1.0 / ORIGINS as f32;
    for origin in 2..=ORIGINS + 1 {
        let mut q = Quantizer::new(compression);
        for version in 1..=ROUNDS {
            let mut d: Vec<f32> = (0..PARAMS)
                .map(|_| (rng.gen::<f32>() - 0.5) * 1e-2 * weight)
                .collect();
            q.quantize(&mut d);
            assert!(
                CompactValues::encode(&d).data_bytes() < PARAMS / 20,
                "goes out sparse"
            );
            for (s, v) in sum.iter_mut().zip(&d) {
                *s += f64::from(*v);
            }
            let o = peer(origin);
            let env = Envelope {
                id: MessageId::from_uuid(uuid::Uuid::new_v4()),
                origin: o.id,
                origin_addr: o.addr,
                version,
                ttl: 1,
                payload: Payload::Delta(signed_delta(origin, version, weight, d)),
            };
            out.push(wire::encode(&env, 1 << 20).unwrap());
        }
    }
    (out, sum)
}

fn relative_difference(a: &[f32], b: &[f64]) -> f64 {
    let norm: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).powi(2))
        .sum::<f64>()
        .sqrt();
    diff / norm.max(1e-30)
}

/// Several random delivery orders (with duplicates) of every origin's top-k deltas, sent
/// through the codec, give the same base: the sum of the deltas as quantized.
#[test]
fn topk_deltas_in_any_delivery_order_give_the_same_base() {
    for compression in [
        Compression::TOPK_DEFAULT,
        Compression::TopK {
            density_bp: 150,
            bits: 4,
        },
    ] {
        let (frames, sum) = frames(compression);
        let run = |order: &[usize]| {
            let (mut core, now) = core();
            for &i in order {
                core.handle_bytes(now, sender(2), &frames[i]).unwrap();
                drain(&mut core);
            }
            assert_eq!(core.applied().len(), frames.len() as u64);
            assert_eq!(core.stats().deltas_applied, frames.len() as u64);
            core.base().to_vec()
        };
        let reference = run(&(0..frames.len()).collect::<Vec<_>>());
        assert!(
            relative_difference(&reference, &sum) < 1e-5,
            "{compression}"
        );
        let reference: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        for _ in 0..5 {
            let mut order: Vec<usize> = (0..frames.len()).collect();
            order.shuffle(&mut rng);
            for _ in 0..5 {
                order.push(rng.gen_range(0..frames.len()));
            }
            let base = run(&order);
            let diff = relative_difference(&base, &reference);
            assert!(diff < 1e-5, "{compression}: relative difference {diff}");
        }
    }
}
