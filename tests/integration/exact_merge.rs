//! The merge stays exact whatever a peer publishes: deltas made by the outer optimizer
//! (Nesterov momentum over each peer's pseudo-gradients) and quantized with error feedback
//! (int8, or top-k sparse with 2- and 4-bit values),
//! delivered by the simulator in a different order at every peer (random latency, 10% loss,
//! duplicates), end as one base on every peer — the sum of what was published.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumor::model::{Compression, Quantizer};
use rumor::train::{OuterKind, OuterOptimizer, OuterSettings};
use rumor_proto::core::{Core, CoreConfig};
use rumor_proto::sim::{NetModel, Sim};

/// Parameters: two full top-k chunks and a short one.
const P: usize = 2 * 4096 + 300;
const PEERS: usize = 5;
const ROUNDS: usize = 8;

fn relative_difference(a: &[f32], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

/// Runs the cluster; returns each peer's base and the exact sum of the published deltas.
fn run(seed: u64, compression: Compression) {
    let config = CoreConfig {
        param_count: P,
        ..CoreConfig::default()
    };
    let net = NetModel {
        loss: 0.1,
        duplicate: 0.1,
        ..NetModel::default()
    };
    let mut sim = Sim::new(config, net, seed);
    assert!(sim.form_cluster(PEERS, Duration::from_secs(60)));
    let settings = OuterSettings {
        kind: OuterKind::Nesterov,
        lr: 0.7,
        momentum: 0.9,
    };
    let mut outers = vec![OuterOptimizer::new(settings); PEERS];
    let mut quantizers: Vec<Quantizer> = (0..PEERS).map(|_| Quantizer::new(compression)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut published = vec![0.0f64; P];
    let weight = 1.0 / PEERS as f32;
    for _ in 0..ROUNDS {
        for i in 0..PEERS {
            // A pseudo-gradient with a common direction (training) and noise (each shard).
            let mut delta: Vec<f32> = (0..P)
                .map(|j| weight * (0.01 * ((j % 7) as f32 - 3.0) + rng.gen_range(-0.02..0.02)))
                .collect();
            outers[i].step(&mut delta).unwrap();
            quantizers[i].quantize(&mut delta);
            for (s, &d) in published.iter_mut().zip(&delta) {
                *s += f64::from(d);
            }
            let version = sim.with_peer(i, |c, now| c.publish(now, weight, delta));
            assert!(
                matches!(version, Some(Ok(_))),
                "peer {i} publishes: {version:?}"
            );
            // Peers publish at different instants, so each receives in its own order.
            sim.run_for(Duration::from_millis(rng.gen_range(1..15)));
        }
    }
    for i in 0..PEERS {
        sim.with_peer(i, |c, now| c.start_drain(now));
    }
    let drained = sim.run_until(Duration::from_secs(120), Duration::from_millis(50), |s| {
        (0..PEERS).all(|i| s.peer(i).is_some_and(Core::drain_complete))
    });
    assert!(drained, "seed {seed}, {compression}: every peer drains");
    for i in 0..PEERS {
        let core = sim.peer(i).unwrap();
        assert_eq!(core.applied().len(), (PEERS * ROUNDS) as u64);
        let rel = relative_difference(core.base(), &published);
        assert!(
            rel < 1e-5,
            "seed {seed}, {compression}: peer {i} differs from the published sum by {rel:e}"
        );
    }
}

#[test]
fn outer_optimizer_deltas_merge_to_one_base_in_any_order() {
    for seed in 1..=3 {
        run(seed, Compression::Int8);
        run(seed, Compression::None);
        run(seed, Compression::TOPK_DEFAULT);
        run(
            seed,
            Compression::TopK {
                density_bp: 150,
                bits: 4,
            },
        );
    }
}
