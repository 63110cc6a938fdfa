//! From a configuration to what a peer runs with: the data (checked against the model and the
//! batch size) and the one builder of peer options.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use crate::certs::{self, PeerIdentity};
use crate::config::{Config, ConfigError};
use crate::data::{self, Dataset, TrainTest};
use crate::model::{self, ModelSpec};
use crate::node::PeerOptions;
use crate::train::TrainPlan;

use super::RunError;

/// Loads the dataset of `config`, saying which one was chosen, and checks that the model of
/// `config` fits it.
///
/// # Errors
/// What loading fails with; [`RunError::Config`] for `train.model` when the model's input size is
/// not the dataset's features per sample or it has fewer outputs than the dataset has classes.
pub fn load_data(config: &Config) -> Result<TrainTest, RunError> {
    let data = data::load(&config.train.dataset, config.train.rng_seed)?;
    info!(dataset = %data.name, "{}", data.description);
    check_model_fits(&config.train.model, &data)?;
    Ok(data)
}

/// A model that does not fit the data fails at start, naming both, instead of at the first step
/// with a length mismatch deep in the trainer.
fn check_model_fits(model: &ModelSpec, data: &TrainTest) -> Result<(), ConfigError> {
    let dim = data.train.dim;
    let side = (dim as f64).sqrt().round() as usize;
    let image = if side * side == dim {
        format!(" ({side}×{side})")
    } else {
        String::new()
    };
    if model.input != dim {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} takes {} inputs, but dataset {} has {dim} features per sample{image}",
                model.input, data.name
            ),
        });
    }
    if model.classes < data.train.classes {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} has {} outputs, but dataset {} has {} classes",
                model.classes, data.name, data.train.classes
            ),
        });
    }
    Ok(())
}

/// A batch larger than a shard would train zero steps per epoch (the last incomplete batch is
/// dropped), so it fails at start: `shards` are the shards that will train, each checked by its
/// size; the error names the batch size and the smallest shard that is too small for it.
pub(super) fn check_batch_fits(
    config: &Config,
    data: &TrainTest,
    shards: impl IntoIterator<Item = data::ShardSpec>,
) -> Result<(), RunError> {
    let batch = config.train.batch_size;
    let mut smallest: Option<(usize, data::ShardSpec)> = None;
    for shard in shards {
        let rows = if shard.count == 1 {
            data.train.len()
        } else {
            data::shard_indices(
                &data.train.labels,
                data.train.classes,
                shard,
                config.partition()?,
                config.train.rng_seed,
            )?
            .len()
        };
        if smallest.is_none_or(|(least, _)| rows < least) {
            smallest = Some((rows, shard));
        }
    }
    match smallest {
        Some((rows, shard)) if rows < batch => {
            let of = if shard.count == 1 {
                format!("the {rows} training samples of {}", data.name)
            } else {
                format!(
                    "shard {}/{} ({rows} of the {} training samples of {})",
                    shard.index + 1,
                    shard.count,
                    data.train.len(),
                    data.name
                )
            };
            Err(RunError::Config(ConfigError::Invalid {
                key: "train.batch_size",
                message: format!(
                    "a batch of {batch} samples is larger than {of}, so no step would ever run; \
                     use a batch size of at most {rows}"
                ),
            }))
        }
        _ => Ok(()),
    }
}

/// The peer options of `config` (its `peer` section, its shard `train.shard`), with the identity
/// and data already loaded, in a cluster of `peers` (which scales the learning rate). The one
/// builder of peer options: `up`, `peer`, the lab and the benchmark all come through here.
///
/// The revocation list is `peer.revocation_list`, else `revoked.json` in `peer.certs` when that
/// directory's `ca.pem` is the identity's CA, else none.
///
/// # Errors
/// [`RunError::Config`] for a bad partition; [`RunError::Data`] if the shard cannot be drawn.
pub fn peer_options(
    config: &Config,
    identity: Arc<PeerIdentity>,
    data: &TrainTest,
    test: Arc<Dataset>,
    peers: usize,
) -> Result<PeerOptions, RunError> {
    let spec = &config.train.model;
    let shard_spec = config.train.shard;
    let partition = config.partition()?;
    let indices = data::shard_indices(
        &data.train.labels,
        data.train.classes,
        shard_spec,
        partition,
        config.train.rng_seed,
    )?;
    let shard = Arc::new(data.train.subset(&indices));
    let t = &config.train;
    let lr = t.lr * t.lr_scaling.factor(peers);
    let plan = TrainPlan {
        spec: spec.clone(),
        epochs: t.epochs,
        batch_size: t.batch_size,
        lr,
        weight_decay: t.weight_decay,
        publish_every: t.publish_every,
        eval_every: t.eval_every,
        order_seed: t.rng_seed ^ (0x9e37_79b9 * (shard_spec.index as u64 + 1)),
        start_step: 0,
        max_train_time: t.max_train_time,
        slowdown: config.slowdown_of(&config.peer.name),
        max_unacked_deltas: t.max_unacked_deltas,
        delta_compression: t.delta_compression,
        low_priority: t.low_priority,
        max_runtime_lag: t.max_runtime_lag,
        max_staleness: t.max_staleness,
        staleness_wait_limit: t.staleness_wait_limit,
        eval_snapshots: t.deferred_eval.then(|| config.peer.data_dir.join("evals")),
    };
    let p = &config.peer;
    // Default: the list next to the CA the identity trusts (none if `peer.certs` holds another).
    let revocation_list = p
        .revocation_list
        .clone()
        .or_else(|| certs::default_revocation_list(&p.certs, &identity.ca));
    Ok(PeerOptions {
        name: p.name.clone(),
        listen: p.listen,
        advertise: p.advertise,
        seeds: p.seeds.clone(),
        dns_seeds: p.dns_seeds.clone(),
        leave_grace: p.leave_grace,
        identity,
        revocation_list,
        data_dir: p.data_dir.clone(),
        resume: false,
        initial: model::init_params(spec, t.rng_seed),
        plan,
        shard,
        test,
        core: config.core_config(),
        transport: config.transport_config(),
        rng_seed: t.rng_seed.wrapping_add(shard_spec.index as u64 * 7919),
        loss: config.loss_config(shard_spec.index),
        audit_log: p.audit_log.clone(),
    })
}

/// Options of local peer `i` of `up` (a peer started with the cluster, or one an operator
/// adds): `peer-i` on 127.0.0.1 (any port), data dir `out/peer-i`, shard `(i mod n)+1/n` with
/// n = `up.peers` (an added peer shares a shard, so the cluster's shards stay the same), its
/// certificate issued by the CA in `certs_dir` (30 days) when missing. Seeds and `min_peers`
/// are the caller's.
///
/// # Errors
/// [`RunError::Certs`] if the certificate cannot be issued or loaded; what [`peer_options`]
/// fails with.
pub fn local_peer_options(
    config: &Config,
    certs_dir: &Path,
    out: &Path,
    data: &TrainTest,
    test: &Arc<Dataset>,
    i: usize,
) -> Result<PeerOptions, RunError> {
    let n = config.up.peers;
    let name = format!("peer-{i}");
    if !certs_dir.join(format!("{name}.pem")).exists() {
        certs::issue(certs_dir, &name, 30)?;
    }
    let identity = Arc::new(certs::load_identity(certs_dir, &name)?);
    let mut c = config.clone();
    c.peer.name = name.clone();
    c.peer.certs = certs_dir.to_path_buf();
    c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.peer.advertise = None;
    c.peer.seeds = Vec::new();
    c.peer.data_dir = out.join(&name);
    c.train.shard = data::ShardSpec {
        index: i % n,
        count: n,
    };
    peer_options(&c, identity, data, test.clone(), n)
}
