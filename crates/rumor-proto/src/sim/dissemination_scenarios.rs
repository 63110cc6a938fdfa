//! How many copies of a large delta each peer receives. Every peer of a cluster publishes one
//! delta of 1 MB at the same moment; with lazy push (announce, then pull: docs/ALGORITHM.md,
//! "Dissemination") every peer must apply every delta while downloading it about once, and eager
//! push (the threshold off) is run beside it for comparison. Each runs for the scenario seeds (or
//! the one in `RUMOR_SIM_SEED`) and prints, per seed: delta bytes received per delta per peer,
//! duplicates per delivery, the hops of the slowest delivery and the virtual time until every
//! peer held every delta.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{scenario_seeds, NetModel, Sim};
use crate::core::CoreConfig;

/// Values per delta: 1 MiB of `f32`.
const VALUES: usize = 262_144;

/// What one run measured.
#[derive(Debug)]
struct Figures {
    /// Bytes of one delta's values on the wire.
    encoded: u64,
    /// Delta value bytes received per delta, per peer: the mean and the largest.
    bytes_per_delta: (f64, f64),
    /// Copies received past the first, per delivery.
    duplicates_per_delivery: f64,
    /// Hops of the delivery that came last, and the most hops of any delivery.
    hops: (u32, u32),
    /// From the publish to the last peer applying the last delta (virtual).
    full_delivery: Duration,
    /// From the publish until half, and 99%, of the deliveries were made (virtual).
    median_and_p99: (Duration, Duration),
    /// Share of the deliveries made within a second: by push or announcements, before
    /// anti-entropy (which waits `anti_entropy_delay`, 2 s) repairs what they missed.
    within_a_second: f64,
    /// Summed over peers: deltas announced, pulls, pulls that ran out.
    announces: u64,
    pulls: u64,
    pull_timeouts: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} × the delta's {} bytes received per delta per peer (most {:.3}), {:.3} \
             duplicates per delivery, slowest delivery {} hops (most {}), full delivery in \
             {:?} (virtual; half of the deliveries by {:?}, 99% by {:?}, {:.1}% within 1 s); {} \
             announces, {} pulls, {} pull timeouts",
            self.bytes_per_delta.0 / self.encoded as f64,
            self.encoded,
            self.bytes_per_delta.1 / self.encoded as f64,
            self.duplicates_per_delivery,
            self.hops.0,
            self.hops.1,
            self.full_delivery,
            self.median_and_p99.0,
            self.median_and_p99.1,
            100.0 * self.within_a_second,
            self.announces,
            self.pulls,
            self.pull_timeouts,
        )
    }
}

/// Small random values (uniform in ±1e-3), the same for a given seed and peer.
fn delta(seed: u64, peer: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ peer as u64);
    (0..VALUES).map(|_| rng.gen_range(-1e-3..1e-3)).collect()
}

/// Forms a cluster of `peers` with `lazy_push_threshold` set to `threshold`, has every peer
/// publish one 1 MB delta at once, and runs until every peer applied every delta (at most a
/// minute of virtual time). Fails when some delta did not reach some peer, or two peers end on
/// different bases.
fn publish_all_at_once(seed: u64, peers: usize, threshold: u64) -> Result<Figures, String> {
    let config = CoreConfig {
        param_count: VALUES,
        lazy_push_threshold: threshold,
        ..CoreConfig::default()
    };
    let mut sim = Sim::new(config, NetModel::default(), seed);
    if !sim.form_cluster(peers, Duration::from_secs(120)) {
        return Err(format!("the {peers} peers never all knew each other"));
    }
    let mut encoded = 0;
    let started = sim.now;
    for i in 0..peers {
        let values = delta(seed, i);
        encoded = crate::core::encoded_bytes(&values);
        sim.with_peer(i, |c, now| {
            c.start_training();
            let weight = 1.0 / c.live_count().max(1) as f32;
            c.publish(now, weight, values)
        })
        .ok_or("a peer is not running")?
        .map_err(|e| format!("publish refused: {e:?}"))?;
    }
    let all_applied = |sim: &Sim| {
        (0..peers).all(|i| {
            sim.peer(i)
                .is_some_and(|c| c.applied().len() == peers as u64)
        })
    };
    if !sim.run_until(
        Duration::from_secs(60),
        Duration::from_millis(10),
        all_applied,
    ) {
        let short: Vec<(usize, u64)> = (0..peers)
            .filter_map(|i| sim.peer(i).map(|c| (i, c.applied().len())))
            .filter(|(_, n)| *n != peers as u64)
            .collect();
        return Err(format!(
            "not every peer applied every delta within 60 s: (peer, applied) {short:?}"
        ));
    }
    let first = sim.peer(0).ok_or("peer 0 is gone")?.base().to_vec();
    for i in 1..peers {
        let same = sim.peer(i).is_some_and(|c| {
            c.base()
                .iter()
                .zip(&first)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0))
        });
        if !same {
            return Err(format!("peer {i} holds another base than peer 0"));
        }
    }
    let others = (peers - 1) as f64;
    let per_peer: Vec<f64> = (0..peers)
        .filter_map(|i| sim.peer(i))
        .map(|c| c.stats().delta_payload_bytes_received as f64 / others)
        .collect();
    let sum = |f: &dyn Fn(&crate::core::CoreStats) -> u64| -> u64 {
        (0..peers)
            .filter_map(|i| sim.peer(i))
            .map(|c| f(c.stats()))
            .sum()
    };
    let deliveries = sum(&|s| s.deltas_applied);
    let mut times: Vec<Duration> = sim
        .first_applied
        .values()
        .map(|(at, _)| at.saturating_duration_since(started))
        .collect();
    times.sort_unstable();
    let quantile = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let (last_at, last_hops) = sim
        .first_applied
        .values()
        .copied()
        .max()
        .unwrap_or((started, 0));
    Ok(Figures {
        encoded,
        bytes_per_delta: (
            per_peer.iter().sum::<f64>() / per_peer.len().max(1) as f64,
            per_peer.iter().copied().fold(0.0, f64::max),
        ),
        duplicates_per_delivery: sum(&|s| s.duplicate_deltas_received) as f64
            / deliveries.max(1) as f64,
        hops: (
            last_hops,
            sim.first_applied
                .values()
                .map(|(_, h)| *h)
                .max()
                .unwrap_or(0),
        ),
        full_delivery: last_at.saturating_duration_since(started),
        median_and_p99: (quantile(0.5), quantile(0.99)),
        within_a_second: times
            .iter()
            .filter(|t| **t <= Duration::from_secs(1))
            .count() as f64
            / times.len().max(1) as f64,
        announces: sum(&|s| s.announces_sent),
        pulls: sum(&|s| s.pulls_sent),
        pull_timeouts: sum(&|s| s.pull_timeouts),
    })
}

/// Runs the scenario for every seed with lazy push (the default threshold), asserting at most
/// 1.1 copies of each delta per peer, and, when `compare`, with eager push beside it, asserting
/// that it costs more.
fn lazy_against_eager(peers: usize, compare: bool) {
    let threshold = CoreConfig::default().lazy_push_threshold;
    for seed in scenario_seeds() {
        let fail = |e: String| -> ! {
            panic!("{peers} peers failed with seed {seed} (rerun with RUMOR_SIM_SEED={seed}): {e}")
        };
        let wall = Instant::now();
        let lazy = publish_all_at_once(seed, peers, threshold).unwrap_or_else(|e| fail(e));
        eprintln!(
            "{peers} peers, 1 MB each, seed {seed}, lazy push: {lazy}; {:?} wall",
            wall.elapsed()
        );
        assert!(
            lazy.bytes_per_delta.1 <= 1.1 * lazy.encoded as f64,
            "seed {seed}: a peer received {:.0} bytes per delta of {}",
            lazy.bytes_per_delta.1,
            lazy.encoded
        );
        if compare {
            let wall = Instant::now();
            let eager = publish_all_at_once(seed, peers, u64::MAX).unwrap_or_else(|e| fail(e));
            eprintln!(
                "{peers} peers, 1 MB each, seed {seed}, eager push: {eager}; {:?} wall",
                wall.elapsed()
            );
            assert!(
                eager.bytes_per_delta.0 > lazy.bytes_per_delta.0,
                "seed {seed}: eager push cost no more than lazy push ({eager})"
            );
        }
    }
}

/// 64 peers each publish one 1 MB delta at once: with lazy push every peer applies all 64 and
/// receives at most 1.1 copies of each; eager push, run beside it, receives several.
#[test]
fn sixty_four_peers_receive_each_large_delta_about_once() {
    lazy_against_eager(64, true);
}

/// The same with 256 peers, lazy push only (eager push would decode about 200 GB).
///
/// Not run by default: one seed took 263 s of wall time (release build, on a shared 2-core
/// machine) and 8.4 GB of memory at its peak, most of it answers in flight (a megabyte frame
/// each). Measured: 1.000 copies per delta per peer, no duplicates, the slowest delivery 3 hops
/// (the deepest 9), every delta everywhere after 6.1 s of virtual time.
#[test]
#[ignore = "exploration: 65,280 deliveries of 1 MB take minutes and about 8 GB"]
fn two_hundred_fifty_six_peers_receive_each_large_delta_about_once() {
    lazy_against_eager(256, false);
}

/// The guarantees under loss and churn: the 64-peer scenario of `scale_scenarios` (10% loss, four
/// crashes, two restarts, three joins, then every peer drains) with every delta pushed lazily
/// (threshold 0), so announcements, pulls and answers are lost too, and pulls run out. Every
/// peer must still end its drain on one applied set and one base.
#[test]
fn lazy_push_under_loss_and_churn_drains_to_one_applied_set() {
    use super::scale_scenarios::{loss_and_churn, run, train_churn_and_drain_with, P};
    let (net, churn) = loss_and_churn();
    let config = CoreConfig {
        param_count: P,
        lazy_push_threshold: 0,
        ..CoreConfig::default()
    };
    run("64 peers, lazy push, 10% loss, churn", |seed| {
        train_churn_and_drain_with(
            config.clone(),
            seed,
            64,
            net.clone(),
            8,
            Duration::from_millis(500),
            &churn,
        )
    });
}
