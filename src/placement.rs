//! Where a peer sits in a job started by a cluster engine: its rank, the number of peers and
//! its name, read from the engine's environment, for `rumor peer --shard auto --name auto`.
//!
//! - **Explicit** (`RUMOR_RANK`, `RUMOR_PEERS`): set by a launcher that starts each peer on its
//!   own, e.g. `scripts/slurm/rumor.sbatch`, which runs every rank as a job step of one task
//!   (where Slurm's own variables say rank 0 of 1); the name is `peer-RANK`.
//! - **Slurm** (`srun`): `SLURM_PROCID` is the task's rank and `SLURM_NTASKS` the job's task
//!   count; the name is `peer-RANK`, as `rumor certs issue --count N` names certificates.
//! - **Kubernetes StatefulSet**: a pod's hostname is `SET-ORDINAL` (`rumor-2`), the ordinal is
//!   the rank and the hostname the name; the replica count is not in a pod's environment, so it
//!   comes from `--replicas` or `RUMOR_REPLICAS`. The same holds for any engine that names
//!   hosts by ordinal (compose services with `hostname: peer-3`).
//!
//! They are checked in this order: the explicit variables win, and a Slurm job's hostnames are
//! the nodes', not ranks.

use thiserror::Error;

use crate::data::ShardSpec;

/// The engine a placement was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// `RUMOR_RANK` and `RUMOR_PEERS`.
    Explicit,
    /// `SLURM_PROCID` and `SLURM_NTASKS`.
    Slurm,
    /// A hostname ending in `-ORDINAL` and a replica count (a StatefulSet).
    Ordinal,
}

/// A peer's rank among `count` peers of one job, and the name it runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Where it was read from.
    pub engine: Engine,
    /// 0-based rank, `< count`.
    pub rank: usize,
    /// Peers in the job, `>= 1`.
    pub count: usize,
    /// `peer-RANK` under Slurm, the hostname for an ordinal host.
    pub name: String,
}

impl Placement {
    /// The shard of this rank: `rank+1/count`.
    pub fn shard(&self) -> ShardSpec {
        ShardSpec {
            index: self.rank,
            count: self.count,
        }
    }
}

/// Why no placement could be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Neither engine's variables are there.
    #[error(
        "no cluster engine found: expected RUMOR_RANK and RUMOR_PEERS, SLURM_PROCID and \
         SLURM_NTASKS (a Slurm task), or a \
         hostname ending in -ORDINAL with --replicas or RUMOR_REPLICAS (a Kubernetes \
         StatefulSet){found}"
    )]
    NoEngine {
        /// What was found instead, for the message (", hostname `x`", or empty).
        found: String,
    },
    /// A variable is there but not a number in range.
    #[error("{what} is {value:?}: {reason}")]
    Bad {
        /// The variable or flag.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the placement from `var` (the environment: `std::env::var` in the binary, a map in
/// tests), `hostname`, and `replicas` (`--replicas`, which wins over `RUMOR_REPLICAS`).
///
/// # Errors
/// [`PlacementError::NoEngine`] when neither Slurm's variables nor an ordinal hostname with a
/// replica count are there; [`PlacementError::Bad`] for a value that is not a number, a count
/// of 0, or a rank not below the count.
pub fn detect(
    var: &dyn Fn(&str) -> Option<String>,
    hostname: Option<&str>,
    replicas: Option<usize>,
) -> Result<Placement, PlacementError> {
    if let (Some(rank), Some(count)) = (var("RUMOR_RANK"), var("RUMOR_PEERS")) {
        let rank = number("RUMOR_RANK", &rank)?;
        let count = number("RUMOR_PEERS", &count)?;
        return placed(Engine::Explicit, rank, count, format!("peer-{rank}"));
    }
    if let (Some(rank), Some(count)) = (var("SLURM_PROCID"), var("SLURM_NTASKS")) {
        let rank = number("SLURM_PROCID", &rank)?;
        let count = number("SLURM_NTASKS", &count)?;
        return placed(Engine::Slurm, rank, count, format!("peer-{rank}"));
    }
    let replicas = match replicas {
        Some(n) => Some(n),
        None => var("RUMOR_REPLICAS")
            .map(|v| number("RUMOR_REPLICAS", &v))
            .transpose()?,
    };
    let host = hostname.map(str::trim).filter(|h| !h.is_empty());
    let ordinal = host.and_then(|h| {
        let (_, ordinal) = h.rsplit_once('-')?;
        (!ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
            .then(|| ordinal.parse::<usize>().ok())
            .flatten()
    });
    match (host, ordinal, replicas) {
        (Some(host), Some(rank), Some(count)) => {
            // A StatefulSet's hostname is the pod name: short, and a valid peer name.
            let name = host.split('.').next().unwrap_or(host).to_string();
            placed(Engine::Ordinal, rank, count, name)
        }
        (host, _, _) => Err(PlacementError::NoEngine {
            found: match host {
                Some(h) => format!(
                    "; found hostname `{h}`{}",
                    if replicas.is_none() {
                        " and no replica count"
                    } else {
                        ", which does not end in -ORDINAL"
                    }
                ),
                None => String::new(),
            },
        }),
    }
}

/// [`detect`] on this process's environment and hostname.
///
/// # Errors
/// As [`detect`].
pub fn detect_here(replicas: Option<usize>) -> Result<Placement, PlacementError> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    detect(
        &|name| std::env::var(name).ok(),
        hostname.as_deref(),
        replicas,
    )
}

fn number(what: &'static str, value: &str) -> Result<usize, PlacementError> {
    value.trim().parse().map_err(|_| PlacementError::Bad {
        what,
        value: value.to_string(),
        reason: "not a whole number".into(),
    })
}

fn placed(
    engine: Engine,
    rank: usize,
    count: usize,
    name: String,
) -> Result<Placement, PlacementError> {
    let what = match engine {
        Engine::Explicit => "RUMOR_RANK",
        Engine::Slurm => "SLURM_PROCID",
        Engine::Ordinal => "the hostname's ordinal",
    };
    if count == 0 {
        return Err(PlacementError::Bad {
            what: "the peer count",
            value: "0".into(),
            reason: "a job has at least one peer".into(),
        });
    }
    if rank >= count {
        return Err(PlacementError::Bad {
            what,
            value: rank.to_string(),
            reason: format!("not below the peer count {count}"),
        });
    }
    Ok(Placement {
        engine,
        rank,
        count,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn slurm_rank_and_task_count_give_shard_and_name() {
        let p = detect(
            &env(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4")]),
            Some("node17"),
            None,
        )
        .unwrap();
        assert_eq!(p.engine, Engine::Slurm);
        assert_eq!(p.shard(), ShardSpec { index: 2, count: 4 });
        assert_eq!(p.name, "peer-2");
    }

    #[test]
    fn explicit_rank_wins_over_slurm() {
        let p = detect(
            &env(&[
                ("RUMOR_RANK", "3"),
                ("RUMOR_PEERS", "4"),
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "1"),
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!((p.engine, p.rank, p.count), (Engine::Explicit, 3, 4));
        assert_eq!(p.name, "peer-3");
    }

    #[test]
    fn statefulset_ordinal_with_replicas_from_flag_or_env() {
        let p = detect(&env(&[]), Some("rumor-3\n"), Some(8)).unwrap();
        assert_eq!((p.engine, p.rank, p.count), (Engine::Ordinal, 3, 8));
        assert_eq!(p.name, "rumor-3");
        let p = detect(&env(&[("RUMOR_REPLICAS", "5")]), Some("my-set-0"), None).unwrap();
        assert_eq!((p.rank, p.count, p.name.as_str()), (0, 5, "my-set-0"));
        // The flag wins over the environment.
        let p = detect(&env(&[("RUMOR_REPLICAS", "5")]), Some("a-1"), Some(2)).unwrap();
        assert_eq!(p.count, 2);
    }

    #[test]
    fn missing_or_bad_environment_is_named() {
        let e = detect(&env(&[]), Some("laptop"), None).unwrap_err();
        assert!(e.to_string().contains("SLURM_PROCID"), "{e}");
        assert!(
            e.to_string().contains("`laptop` and no replica count"),
            "{e}"
        );
        let e = detect(&env(&[]), Some("laptop"), Some(4)).unwrap_err();
        assert!(e.to_string().contains("does not end in -ORDINAL"), "{e}");
        let e = detect(
            &env(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")]),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not below the peer count 4"), "{e}");
        let e = detect(
            &env(&[("SLURM_PROCID", "x"), ("SLURM_NTASKS", "4")]),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("SLURM_PROCID is \"x\""), "{e}");
        let e = detect(&env(&[("RUMOR_REPLICAS", "0")]), Some("r-0"), None).unwrap_err();
        assert!(e.to_string().contains("at least one peer"), "{e}");
    }
}
