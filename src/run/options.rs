//! From a configuration to what a peer runs with: the data (checked against the model and the
//! batch size) and the one builder of peer options.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use crate::certs::{self, PeerIdentity};
use crate::config::{Config, ConfigError};
use crate::data::text::TextData;
use crate::data::{self, Dataset, TrainTest};
use crate::node::PeerOptions;
use crate::train::{LrSchedule, TrainPlan};
use crate::workload::image::{ImageClassification, ImageModel};
use crate::workload::text::CharLanguageModel;
use crate::workload::{describe_params, ModelChoice, Workload};

use super::RunError;

/// The data of a run, loaded once and shared by the peers a process runs.
#[derive(Clone, Debug)]
pub enum RunData {
    /// A labelled image set; `test` is shared by every in-process peer.
    Images {
        /// Training and test rows.
        data: TrainTest,
        /// The test rows, shared.
        test: Arc<Dataset>,
    },
    /// A text, encoded and split; `validation` is shared by every in-process peer.
    Text {
        /// The text's vocabulary and its training and validation tokens.
        text: Arc<TextData>,
        /// The validation tokens, shared.
        validation: Arc<Vec<u32>>,
    },
}

impl From<TrainTest> for RunData {
    fn from(data: TrainTest) -> Self {
        let test = Arc::new(data.test.clone());
        RunData::Images { data, test }
    }
}

impl RunData {
    /// Short name of the data, e.g. `fashion-mnist`.
    pub fn name(&self) -> &str {
        match self {
            RunData::Images { data, .. } => &data.name,
            RunData::Text { text, .. } => &text.name,
        }
    }
}

/// Loads the dataset of `config`, saying which one was chosen, and checks that the model of
/// `config` fits it.
///
/// # Errors
/// What loading fails with; [`RunError::Config`] for `train.model` when the model's input size is
/// not the dataset's features per sample or it has fewer outputs than the dataset has classes.
pub fn load_data(config: &Config) -> Result<RunData, RunError> {
    let t = &config.train;
    let Some(model) = image_model(&t.model) else {
        let source = t
            .dataset
            .text_source()
            .ok_or_else(|| ConfigError::Invalid {
                key: "train.dataset",
                message: format!(
                    "model {} trains on text, but dataset {} is images; use auto, synthetic, \
                 austen or text:FILE",
                    t.model, t.dataset
                ),
            })?;
        let text = data::text::load_text(&source, t.rng_seed)?;
        info!(dataset = %text.name, "{}", text.description);
        let validation = Arc::new(text.validation.clone());
        return Ok(RunData::Text {
            text: Arc::new(text),
            validation,
        });
    };
    if t.dataset
        .text_source()
        .is_some_and(|_| t.dataset.is_text_only())
    {
        return Err(RunError::Config(ConfigError::Invalid {
            key: "train.dataset",
            message: format!(
                "model {} trains on images, but dataset {} is text; use a text model \
                 (--model char-gpt) or an image dataset",
                t.model, t.dataset
            ),
        }));
    }
    let data = data::load(&t.dataset, t.rng_seed)?;
    info!(dataset = %data.name, "{}", data.description);
    check_model_fits(&model, &t.model, &data)?;
    Ok(data.into())
}

/// The image model of `choice`; None for a text model.
fn image_model(choice: &ModelChoice) -> Option<ImageModel> {
    match choice {
        ModelChoice::Mlp(spec) => Some(ImageModel::Mlp(spec.clone())),
        ModelChoice::Cnn(c) => Some(ImageModel::Cnn(c.clone())),
        ModelChoice::CharGpt(_) => None,
    }
}

/// The workload a peer of `config` trains: its model on shard `shard` of `data`.
///
/// # Errors
/// [`RunError::Config`] for a bad partition; [`RunError::Data`] if the shard cannot be drawn.
pub fn workload_for(
    config: &Config,
    data: &RunData,
    shard: data::ShardSpec,
) -> Result<Arc<dyn Workload>, RunError> {
    let model = &config.train.model;
    match (data, image_model(model), model) {
        (RunData::Images { data, test }, Some(image), _) => {
            let rows = if shard.count == 1 {
                (0..data.train.len()).collect()
            } else {
                data::shard_indices(
                    &data.train.labels,
                    data.train.classes,
                    shard,
                    config.partition()?,
                    config.train.rng_seed,
                    // A skewed partition gives every shard at least one batch.
                    config.train.batch_size,
                )?
            };
            Ok(Arc::new(ImageClassification {
                model: image,
                dataset: data.name.clone(),
                train: Arc::new(data.train.subset(&rows)),
                test: test.clone(),
                epoch_examples: Some(data.train.len().div_ceil(shard.count.max(1))),
            }))
        }
        (RunData::Text { text, validation }, None, ModelChoice::CharGpt(size)) => {
            let train = data::text::text_shard(
                &text.train,
                shard.index,
                shard.count,
                config.train.text_sharding,
            )?;
            Ok(Arc::new(CharLanguageModel {
                config: size.with_vocab(text.vocab.len()),
                vocabulary: text.vocab.clone(),
                dataset: text.name.clone(),
                train: Arc::new(train),
                validation: validation.clone(),
            }))
        }
        (data, _, model) => Err(RunError::Config(ConfigError::Invalid {
            key: "train.model",
            message: format!("model {model} cannot train on dataset {}", data.name()),
        })),
    }
}

/// The budget of one of `peers` peers training `workload` under `config`: `(epochs, max_steps)`.
/// With `train.tokens` set and a workload counted in tokens, each peer takes ⌈tokens / peers⌉
/// tokens (so the cluster trains as many as the centralized baseline), as whole steps of
/// `batch_size` examples, and the epochs stop bounding the run. Otherwise `train.epochs`
/// epochs of [`Workload::epoch_examples`] each, in whole batches: when that is not the shard's
/// own size (a shard of a skewed partition), as steps, cycling over the shard.
pub fn budget(config: &Config, workload: &dyn Workload, peers: usize) -> (u32, Option<u64>) {
    let t = &config.train;
    match (t.tokens, workload.budget_unit()) {
        (Some(tokens), crate::workload::BudgetUnit::Tokens) => {
            let per_step = (t.batch_size.max(1) as u64) * workload.units_per_example().max(1);
            let per_peer = tokens.div_ceil(peers.max(1) as u64);
            (u32::MAX, Some(per_peer.div_ceil(per_step)))
        }
        _ => {
            let per_epoch = workload.epoch_examples();
            if per_epoch == workload.train_examples() {
                (t.epochs, None)
            } else {
                let steps = (per_epoch / t.batch_size.max(1)) as u64 * u64::from(t.epochs);
                (u32::MAX, Some(steps))
            }
        }
    }
}

/// A model that does not fit the data fails at start, naming both, instead of at the first step
/// with a length mismatch deep in the trainer.
fn check_model_fits(
    image: &ImageModel,
    model: &ModelChoice,
    data: &TrainTest,
) -> Result<(), ConfigError> {
    let dim = data.train.dim;
    let side = (dim as f64).sqrt().round() as usize;
    let side = if side * side == dim {
        format!(" ({side}×{side})")
    } else {
        String::new()
    };
    if image.input() != dim {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} takes {} inputs, but dataset {} has {dim} features per sample{side}",
                image.input(),
                data.name
            ),
        });
    }
    if image.classes() < data.train.classes {
        return Err(ConfigError::Invalid {
            key: "train.model",
            message: format!(
                "model {model} has {} outputs, but dataset {} has {} classes",
                image.classes(),
                data.name,
                data.train.classes
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
    data: &RunData,
    shards: impl IntoIterator<Item = data::ShardSpec>,
) -> Result<(), RunError> {
    let batch = config.train.batch_size;
    let mut smallest: Option<(usize, data::ShardSpec)> = None;
    for shard in shards {
        let rows = workload_for(config, data, shard)?.train_examples();
        if smallest.is_none_or(|(least, _)| rows < least) {
            smallest = Some((rows, shard));
        }
    }
    match smallest {
        Some((rows, shard)) if rows < batch => {
            let of = if shard.count == 1 {
                format!("the {rows} training examples of {}", data.name())
            } else {
                format!(
                    "shard {}/{} ({rows} training examples of {})",
                    shard.index + 1,
                    shard.count,
                    data.name()
                )
            };
            Err(RunError::Config(ConfigError::Invalid {
                key: "train.batch_size",
                message: format!(
                    "a batch of {batch} examples is larger than {of}, so no step would ever run; \
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
    data: &RunData,
    peers: usize,
) -> Result<PeerOptions, RunError> {
    let workload = workload_for(config, data, config.train.shard)?;
    workload_peer_options(config, identity, workload, peers)
}

/// The peer options of `config` for a peer that trains `workload` (a built-in one from
/// [`workload_for`], or a library user's own model and data), in a cluster of `peers`. θ₀ comes
/// from `train.rng_seed` through the model's `Init` hints, so every peer of the cluster must
/// build the same model.
///
/// # Errors
/// [`RunError::Model`] if the model cannot be built; [`RunError::Config`] if one delta of it
/// does not fit `gossip.max_message_bytes`.
pub fn workload_peer_options(
    config: &Config,
    identity: Arc<PeerIdentity>,
    workload: Arc<dyn Workload>,
    peers: usize,
) -> Result<PeerOptions, RunError> {
    let shard_spec = config.train.shard;
    let (layout, initial) = describe_params(workload.as_ref(), config.train.rng_seed)?;
    let largest_delta = layout.total.saturating_mul(4).saturating_add(4096);
    if largest_delta > config.gossip.max_message_bytes {
        return Err(RunError::Config(ConfigError::Invalid {
            key: "gossip.max_message_bytes",
            message: format!(
                "{} bytes is smaller than one delta of {} ({} parameters, {largest_delta} bytes)",
                config.gossip.max_message_bytes,
                workload.describe(),
                layout.total
            ),
        }));
    }
    let t = &config.train;
    let lr = t.lr * t.lr_scaling.factor(peers);
    let (epochs, max_steps) = budget(config, workload.as_ref(), peers);
    let plan = TrainPlan {
        epochs,
        max_steps,
        lr_schedule: t.lr_schedule,
        device: t.device,
        batch_size: t.batch_size,
        lr,
        weight_decay: t.weight_decay,
        publish_every: t.publish_every,
        outer: crate::train::OuterSettings {
            kind: t.outer_optimizer,
            lr: t.outer_lr as f32,
            momentum: t.outer_momentum as f32,
        },
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
        max_phase_lead: t.max_phase_lead,
        staleness_wait_limit: t.staleness_wait_limit,
        eval_snapshots: t.deferred_eval.then(|| config.peer.data_dir.join("evals")),
    };
    warn_if_time_limit_cuts_schedule(&plan, workload.train_examples());
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
        core: config.core_config(layout.total),
        transport: config.transport_config(layout.total),
        initial,
        layout,
        plan,
        workload,
        rng_seed: t.rng_seed.wrapping_add(shard_spec.index as u64 * 7919),
        loss: config.loss_config(shard_spec.index),
        audit_log: p.audit_log.clone(),
    })
}

/// Says once per process that `train.max_train_time` does not shorten the learning-rate
/// schedule: it runs over the step budget, so training that the time limit (or a signal) is
/// meant to end, with an epoch count far beyond it, would stay in its warm-up.
fn warn_if_time_limit_cuts_schedule(plan: &TrainPlan, examples: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Some(limit) = plan.max_train_time else {
        return;
    };
    if plan.lr_schedule == LrSchedule::Constant {
        return;
    }
    ONCE.call_once(|| {
        warn!(
            "train.max_train_time ({}) does not shorten the {} learning-rate schedule, which \
             runs over the budget of {} steps per peer: a run the limit ends first stops part-way \
             through it; for training meant to end by time or by signal set \
             train.lr_schedule = \"constant\"",
            humantime::format_duration(limit),
            plan.lr_schedule,
            plan.total_steps(examples)
        );
    });
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
    data: &RunData,
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
    peer_options(&c, identity, data, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under a skewed partition every peer gets the same number of steps, whatever its shard's
    /// size: the training set over the shards, in whole batches, times the epochs.
    #[test]
    fn a_skewed_partition_gives_every_peer_the_same_budget() -> Result<(), RunError> {
        let mut config = Config::default();
        config.train.dataset = crate::data::DatasetSpec::Synthetic;
        config.train.non_iid_alpha = Some(0.3);
        config.train.batch_size = 16;
        config.train.epochs = 2;
        let data = load_data(&config)?;
        let RunData::Images { data: images, .. } = &data else {
            panic!("synthetic data is images");
        };
        let total = images.train.len();
        let mut sizes = Vec::new();
        for index in 0..4 {
            let workload = workload_for(&config, &data, data::ShardSpec::new(index, 4)?)?;
            sizes.push(workload.train_examples());
            let steps = (total.div_ceil(4) / 16) as u64 * 2;
            assert_eq!(
                budget(&config, workload.as_ref(), 4),
                (u32::MAX, Some(steps))
            );
        }
        assert!(
            sizes.iter().min() != sizes.iter().max(),
            "the partition should be skewed: {sizes:?}"
        );
        let whole = workload_for(&config, &data, data::ShardSpec::WHOLE)?;
        assert_eq!(budget(&config, whole.as_ref(), 1), (2, None));
        Ok(())
    }
}
