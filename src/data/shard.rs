//! Splitting rows into shards and ordering them per epoch, with no coordination between peers.
//!
//! Each peer trains on `shard K of N`. Peers never exchange their shard assignment: each computes
//! the whole partition from the shared seed and keeps its own part, so with the same labels, seed
//! and N the shards are pairwise disjoint and cover every row. IID shards are equal-sized slices of
//! a seeded permutation; non-IID shards skew each class towards a few shards with Dirichlet
//! proportions, as in Hsu, Qi and Brown (2019), "Measuring the effects of non-identical data
//! distribution for federated visual classification".

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Gamma};

use super::{check_labels, seeded_rng, DataError};

/// RNG domain for the IID permutation.
const DOMAIN_IID: [u8; 8] = *b"shardiid";
/// RNG domain for the Dirichlet partition.
const DOMAIN_DIRICHLET: [u8; 8] = *b"sharddir";
/// RNG domain for epoch orders.
const DOMAIN_EPOCH: [u8; 8] = *b"epochord";

/// How many times a Dirichlet partition is redrawn when it leaves a shard with fewer rows than
/// it needs before giving up with [`DataError::ShardTooSmall`]. Redrawing until every shard
/// holds a minimum number of rows is what common reference implementations of this partition
/// do (NIID-Bench, Li et al. 2022, redraws until every party holds at least 10 samples); all
/// peers redraw identically.
pub const MAX_DIRICHLET_DRAWS: usize = 100;

/// Which shard this peer trains on: written `K/N` with 1-based `K` in `1..=N`, stored 0-based.
///
/// Parses from `K/N` ([`FromStr`] errors with [`DataError::BadShardSpec`] saying what is wrong);
/// [`fmt::Display`] prints `K/N` back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// 0-based shard index, `< count`.
    pub index: usize,
    /// Number of shards, `>= 1`.
    pub count: usize,
}

impl ShardSpec {
    /// The single shard holding all rows (`1/1`).
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// A shard from a 0-based index. Errors: [`DataError::ZeroShards`] if `count == 0`,
    /// [`DataError::ShardIndexOutOfRange`] if `index >= count`.
    pub fn new(index: usize, count: usize) -> Result<Self, DataError> {
        let spec = ShardSpec { index, count };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks `count >= 1` and `index < count` (the fields are public, so this can be violated).
    /// Errors: [`DataError::ZeroShards`], [`DataError::ShardIndexOutOfRange`].
    pub fn validate(&self) -> Result<(), DataError> {
        if self.count == 0 {
            return Err(DataError::ZeroShards);
        }
        if self.index >= self.count {
            return Err(DataError::ShardIndexOutOfRange {
                index: self.index,
                count: self.count,
            });
        }
        Ok(())
    }
}

impl FromStr for ShardSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DataError::BadShardSpec {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (k, n) = s.split_once('/').ok_or_else(|| bad("missing `/`"))?;
        let k: usize = k
            .parse()
            .map_err(|_| bad("K is not a non-negative integer"))?;
        let n: usize = n
            .parse()
            .map_err(|_| bad("N is not a non-negative integer"))?;
        if n == 0 {
            return Err(bad("N must be at least 1"));
        }
        if k == 0 {
            return Err(bad("K is 1-based and must be at least 1"));
        }
        if k > n {
            return Err(bad("K must not exceed N"));
        }
        Ok(ShardSpec {
            index: k - 1,
            count: n,
        })
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

/// How rows are distributed over shards.
///
/// Parses from `iid` or `dirichlet:ALPHA` ([`FromStr`] errors with [`DataError::BadPartition`]);
/// [`fmt::Display`] prints those forms back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Partition {
    /// Every shard gets a uniformly random, near-equal share of the rows.
    Iid,
    /// Non-IID: each class is spread over shards in Dirichlet(`alpha`) proportions. Small alpha
    /// (e.g. 0.1) gives each shard few classes; large alpha (e.g. 100) approaches IID.
    Dirichlet {
        /// Concentration, finite and `> 0`.
        alpha: f64,
    },
}

impl FromStr for Partition {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DataError::BadPartition {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s == "iid" {
            return Ok(Partition::Iid);
        }
        let alpha = s
            .strip_prefix("dirichlet:")
            .ok_or_else(|| bad("unknown partition"))?;
        let alpha: f64 = alpha.parse().map_err(|_| bad("ALPHA is not a number"))?;
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(bad("ALPHA must be finite and > 0"));
        }
        Ok(Partition::Dirichlet { alpha })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Iid => f.write_str("iid"),
            Partition::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
        }
    }
}

/// Indices (ascending) of the rows of `labels` that belong to `shard`.
///
/// Deterministic in `seed`: every peer computing with the same `labels`, `classes`, `shard.count`,
/// `partition` and `seed` gets pairwise-disjoint shards whose union is `0..labels.len()`, and all
/// peers get the same success or error.
///
/// - IID: a seeded permutation of the rows split into `count` contiguous parts whose sizes differ
///   by at most one.
/// - Dirichlet non-IID: for each class, proportions over the `count` shards are drawn from
///   Dirichlet(`alpha`, …, `alpha`) and the class's rows (shuffled) are split accordingly (Hsu,
///   Qi, Brown 2019). If that leaves a shard with fewer than `min_rows` rows (at least 1; a
///   caller passes the batch size, so every shard can take a step) the whole partition is
///   redrawn, up to [`MAX_DIRICHLET_DRAWS`] times. A draw that already meets the minimum is
///   kept, so raising `min_rows` never changes a partition that satisfied it.
///
/// Errors: [`DataError::BadAlpha`] if `alpha <= 0` or non-finite, [`DataError::ZeroShards`],
/// [`DataError::ShardIndexOutOfRange`], [`DataError::LabelOutOfRange`] if a label is
/// `>= classes`, [`DataError::ShardTooSmall`] if an IID shard ends up without rows or every
/// Dirichlet draw leaves a shard with fewer than `min_rows`.
pub fn shard_indices(
    labels: &[u8],
    classes: usize,
    shard: ShardSpec,
    partition: Partition,
    seed: u64,
    min_rows: usize,
) -> Result<Vec<usize>, DataError> {
    shard.validate()?;
    if let Partition::Dirichlet { alpha } = partition {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(DataError::BadAlpha { alpha });
        }
    }
    check_labels(labels, classes, "shard_indices")?;
    let rows = labels.len();
    let count = shard.count;
    let mut mine = match partition {
        Partition::Iid => {
            if rows < count {
                // floor(rows / count) == 0: shard 0 (at least) is empty.
                return Err(DataError::ShardTooSmall {
                    index: 0,
                    count,
                    rows,
                    min_rows: 1,
                });
            }
            let mut order: Vec<usize> = (0..rows).collect();
            order.shuffle(&mut seeded_rng(seed, DOMAIN_IID, 0));
            let bound = |k: usize| (k as u128 * rows as u128 / count as u128) as usize;
            order[bound(shard.index)..bound(shard.index + 1)].to_vec()
        }
        Partition::Dirichlet { alpha } => {
            dirichlet_partition(labels, classes, count, alpha, seed, min_rows.max(1))?
                .swap_remove(shard.index)
        }
    };
    mine.sort_unstable();
    Ok(mine)
}

/// All `count` shards of a Dirichlet partition, every one with at least `min_rows` rows.
fn dirichlet_partition(
    labels: &[u8],
    classes: usize,
    count: usize,
    alpha: f64,
    seed: u64,
    min_rows: usize,
) -> Result<Vec<Vec<usize>>, DataError> {
    // Labels are u8 and already checked to be < classes, so 256 buckets always suffice.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.min(256)];
    for (row, &label) in labels.iter().enumerate() {
        by_class[usize::from(label)].push(row);
    }
    let gamma = Gamma::new(alpha + 1.0, 1.0).map_err(|_| DataError::BadAlpha { alpha })?;
    let mut rng = seeded_rng(seed, DOMAIN_DIRICHLET, 0);
    let mut first_small = 0;
    for _ in 0..MAX_DIRICHLET_DRAWS {
        let mut shards: Vec<Vec<usize>> = vec![Vec::new(); count];
        for class_rows in &by_class {
            if class_rows.is_empty() {
                continue;
            }
            let mut rows = class_rows.clone();
            rows.shuffle(&mut rng);
            let proportions = dirichlet_sample(&mut rng, &gamma, alpha, count);
            let n = rows.len();
            let mut start = 0;
            let mut cumulative = 0.0;
            for (k, (shard, p)) in shards.iter_mut().zip(&proportions).enumerate() {
                cumulative += p;
                let end = if k + 1 == count {
                    n
                } else {
                    ((cumulative * n as f64).round() as usize).clamp(start, n)
                };
                shard.extend_from_slice(&rows[start..end]);
                start = end;
            }
        }
        match shards.iter().position(|rows| rows.len() < min_rows) {
            None => return Ok(shards),
            Some(k) => first_small = k,
        }
    }
    Err(DataError::ShardTooSmall {
        index: first_small,
        count,
        rows: labels.len(),
        min_rows,
    })
}

/// One draw from a symmetric Dirichlet(`alpha`) over `count` parts, `[count]` summing to 1.
///
/// Uses `Gamma(alpha) = Gamma(alpha + 1) · U^(1/alpha)` in log space and normalises with the
/// log-sum-exp trick, so tiny alphas (where plain gamma draws underflow to zero) still work.
fn dirichlet_sample(
    rng: &mut impl Rng,
    gamma_alpha_plus_one: &Gamma<f64>,
    alpha: f64,
    count: usize,
) -> Vec<f64> {
    let logs: Vec<f64> = (0..count)
        .map(|_| {
            let g: f64 = gamma_alpha_plus_one.sample(rng);
            let u: f64 = 1.0 - rng.gen::<f64>(); // in (0, 1]
            g.ln() + u.ln() / alpha
        })
        .collect();
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return vec![1.0 / count as f64; count];
    }
    let weights: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Order of rows for one epoch: a permutation of `0..n` seeded by (`seed`, `epoch`). The same
/// arguments always give the same order; different epochs give independent orders.
pub fn epoch_order(n: usize, epoch: u64, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut seeded_rng(seed, DOMAIN_EPOCH, epoch));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Labels with a skewed class balance: class c has about (c + 1) / 55 of the rows.
    fn skewed_labels(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                let mut r = i % 55;
                let mut c = 0u8;
                while r > usize::from(c) {
                    r -= usize::from(c) + 1;
                    c += 1;
                }
                c
            })
            .collect()
    }

    fn all_shards(
        labels: &[u8],
        count: usize,
        partition: Partition,
        seed: u64,
    ) -> Result<Vec<Vec<usize>>, DataError> {
        (0..count)
            .map(|index| shard_indices(labels, 10, ShardSpec { index, count }, partition, seed, 1))
            .collect()
    }

    fn assert_partition(shards: &[Vec<usize>], n: usize) {
        let mut seen = vec![false; n];
        for shard in shards {
            assert!(!shard.is_empty());
            assert!(shard.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            for &row in shard {
                assert!(!seen[row], "row {row} in two shards");
                seen[row] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every row in some shard");
    }

    #[test]
    fn iid_shards_are_disjoint_cover_and_balanced() -> Result<(), DataError> {
        let labels = skewed_labels(1_003);
        for count in [1, 2, 3, 7, 10, 64] {
            let shards = all_shards(&labels, count, Partition::Iid, 42)?;
            assert_partition(&shards, labels.len());
            let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
        }
        Ok(())
    }

    #[test]
    fn dirichlet_shards_are_disjoint_and_cover() -> Result<(), DataError> {
        let labels = skewed_labels(3_000);
        for count in [1, 2, 5, 10, 16] {
            for alpha in [0.1, 0.5, 1.0, 10.0, 1000.0] {
                let shards = all_shards(&labels, count, Partition::Dirichlet { alpha }, 7)?;
                assert_partition(&shards, labels.len());
            }
        }
        Ok(())
    }

    #[test]
    fn small_alpha_is_skewed_large_alpha_is_not() -> Result<(), DataError> {
        let labels: Vec<u8> = (0..10_000).map(|i| (i % 10) as u8).collect();
        // Fraction of the shard taken by its most common class, averaged over shards.
        let dominance = |alpha: f64| -> Result<f64, DataError> {
            let shards = all_shards(&labels, 10, Partition::Dirichlet { alpha }, 3)?;
            Ok(shards
                .iter()
                .map(|s| {
                    let mut counts = [0usize; 10];
                    for &row in s {
                        counts[usize::from(labels[row])] += 1;
                    }
                    counts.iter().copied().max().unwrap_or(0) as f64 / s.len() as f64
                })
                .sum::<f64>()
                / 10.0)
        };
        let skewed = dominance(0.1)?;
        let flat = dominance(1000.0)?;
        assert!(skewed > 0.5, "alpha 0.1 dominance {skewed}");
        assert!(flat < 0.15, "alpha 1000 dominance {flat}");
        Ok(())
    }

    #[test]
    fn dirichlet_draws_again_until_every_shard_holds_min_rows() -> Result<(), DataError> {
        let labels = skewed_labels(6_000);
        let (count, alpha) = (16, 0.1);
        let shards_with = |min_rows: usize| -> Result<Vec<Vec<usize>>, DataError> {
            (0..count)
                .map(|index| {
                    let spec = ShardSpec { index, count };
                    shard_indices(
                        &labels,
                        10,
                        spec,
                        Partition::Dirichlet { alpha },
                        5,
                        min_rows,
                    )
                })
                .collect()
        };
        let any = shards_with(1)?;
        let smallest = any.iter().map(Vec::len).min().unwrap_or(0);
        assert!(
            smallest < 64,
            "this seed's first draw must leave a small shard: {smallest}"
        );
        let at_least = shards_with(64)?;
        assert_partition(&at_least, labels.len());
        assert!(at_least.iter().all(|s| s.len() >= 64));
        // A minimum the first draw already meets changes nothing.
        assert_eq!(shards_with(smallest)?, any);
        // One no draw can meet is an error naming the minimum, for every shard index.
        let err = shard_indices(
            &labels,
            10,
            ShardSpec { index: 3, count },
            Partition::Dirichlet { alpha },
            5,
            labels.len(),
        );
        assert!(matches!(
            err,
            Err(DataError::ShardTooSmall {
                min_rows: 6_000,
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn tiny_alpha_still_partitions() -> Result<(), DataError> {
        let labels: Vec<u8> = (0..2_000).map(|i| (i % 10) as u8).collect();
        let shards = all_shards(&labels, 4, Partition::Dirichlet { alpha: 1e-3 }, 1)?;
        assert_partition(&shards, labels.len());
        Ok(())
    }

    #[test]
    fn shards_depend_on_seed_only() -> Result<(), DataError> {
        let labels = skewed_labels(500);
        for partition in [Partition::Iid, Partition::Dirichlet { alpha: 0.5 }] {
            let spec = ShardSpec { index: 1, count: 4 };
            let a = shard_indices(&labels, 10, spec, partition, 9, 1)?;
            let b = shard_indices(&labels, 10, spec, partition, 9, 1)?;
            let c = shard_indices(&labels, 10, spec, partition, 10, 1)?;
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
        Ok(())
    }

    #[test]
    fn shard_errors() {
        let labels = skewed_labels(100);
        let spec = ShardSpec { index: 0, count: 2 };
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                shard_indices(&labels, 10, spec, Partition::Dirichlet { alpha }, 0, 1),
                Err(DataError::BadAlpha { .. })
            ));
        }
        assert!(matches!(
            shard_indices(
                &labels,
                10,
                ShardSpec { index: 0, count: 0 },
                Partition::Iid,
                0,
                1
            ),
            Err(DataError::ZeroShards)
        ));
        assert!(matches!(
            shard_indices(
                &labels,
                10,
                ShardSpec { index: 2, count: 2 },
                Partition::Iid,
                0,
                1
            ),
            Err(DataError::ShardIndexOutOfRange { index: 2, count: 2 })
        ));
        assert!(matches!(
            shard_indices(&labels, 5, spec, Partition::Iid, 0, 1),
            Err(DataError::LabelOutOfRange { .. })
        ));
        // Fewer rows than shards: every peer gets the error, not just the empty ones.
        for index in [0, 4] {
            let err = shard_indices(
                &[1, 2, 3],
                10,
                ShardSpec { index, count: 5 },
                Partition::Iid,
                0,
                1,
            );
            assert!(matches!(err, Err(DataError::ShardTooSmall { .. })));
        }
        let err = shard_indices(
            &[1, 2, 3],
            10,
            ShardSpec { index: 0, count: 5 },
            Partition::Dirichlet { alpha: 1.0 },
            0,
            1,
        );
        assert!(matches!(err, Err(DataError::ShardTooSmall { .. })));
        assert!(matches!(
            shard_indices(&[], 10, ShardSpec::WHOLE, Partition::Iid, 0, 1),
            Err(DataError::ShardTooSmall { .. })
        ));
    }

    #[test]
    fn shard_spec_parses_and_round_trips() -> Result<(), DataError> {
        assert_eq!("1/1".parse::<ShardSpec>()?, ShardSpec::WHOLE);
        assert_eq!(
            "3/5".parse::<ShardSpec>()?,
            ShardSpec { index: 2, count: 5 }
        );
        assert_eq!(ShardSpec::new(4, 5)?.to_string(), "5/5");
        for text in ["1/1", "2/7", "10/10"] {
            assert_eq!(text.parse::<ShardSpec>()?.to_string(), text);
        }
        for bad in [
            "", "3", "0/5", "6/5", "1/0", "a/5", "1/b", "-1/5", "1/2/3", " 1/2",
        ] {
            let err = bad.parse::<ShardSpec>().expect_err(bad);
            let msg = err.to_string();
            assert!(matches!(err, DataError::BadShardSpec { .. }), "{msg}");
            assert!(
                msg.contains(&format!("`{bad}`")) && msg.contains("K/N"),
                "{msg}"
            );
        }
        assert!(matches!(ShardSpec::new(0, 0), Err(DataError::ZeroShards)));
        Ok(())
    }

    #[test]
    fn partition_parses_and_round_trips() -> Result<(), DataError> {
        assert_eq!("iid".parse::<Partition>()?, Partition::Iid);
        assert_eq!(
            "dirichlet:0.5".parse::<Partition>()?,
            Partition::Dirichlet { alpha: 0.5 }
        );
        for p in [
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.1 },
            Partition::Dirichlet { alpha: 100.0 },
        ] {
            assert_eq!(p.to_string().parse::<Partition>()?, p);
        }
        for bad in [
            "",
            "IID",
            "dirichlet",
            "dirichlet:",
            "dirichlet:0",
            "dirichlet:-1",
            "dirichlet:nan",
            "dirichlet:inf",
        ] {
            let err = bad.parse::<Partition>().expect_err(bad);
            assert!(matches!(err, DataError::BadPartition { .. }), "{err}");
        }
        Ok(())
    }

    #[test]
    fn epoch_order_is_a_permutation_that_changes_per_epoch() {
        let n = 1_000;
        let first = epoch_order(n, 0, 5);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        assert_eq!(first, epoch_order(n, 0, 5));
        assert_ne!(first, epoch_order(n, 1, 5));
        assert_ne!(first, epoch_order(n, 0, 6));
        assert_ne!(first, sorted);
        assert!(epoch_order(0, 3, 3).is_empty());
        assert_eq!(epoch_order(1, 3, 3), vec![0]);
    }

    proptest! {
        #[test]
        fn any_partition_is_disjoint_and_covers(
            labels in proptest::collection::vec(0u8..10, 1..400),
            count in 1usize..12,
            alpha in prop_oneof![Just(None), (0.01f64..100.0).prop_map(Some)],
            seed in any::<u64>(),
        ) {
            let partition = alpha.map_or(Partition::Iid, |alpha| Partition::Dirichlet { alpha });
            match all_shards(&labels, count, partition, seed) {
                Ok(shards) => assert_partition(&shards, labels.len()),
                Err(err) => prop_assert!(matches!(err, DataError::ShardTooSmall { .. }), "{}", err),
            }
        }

        #[test]
        fn epoch_order_always_permutes(n in 0usize..500, epoch in any::<u64>(), seed in any::<u64>()) {
            let mut order = epoch_order(n, epoch, seed);
            order.sort_unstable();
            prop_assert_eq!(order, (0..n).collect::<Vec<_>>());
        }
    }
}
