//! Image classification: a built-in model (the MLP or the LeNet-5-style CNN) on a labelled image
//! dataset (Fashion-MNIST, IDX files or the synthetic set), with accuracy as the headline metric.

use std::sync::Arc;

use candle_core::{Device, Module, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{Batch, BoxedModel, Direction, MetricDef, Metrics, ModelCard, Workload};
use crate::data::Dataset;
use crate::model::{Cnn, CnnConfig, Mlp, ModelSpec};

/// Rows per forward pass in evaluation; bounds activation memory.
pub const EVAL_CHUNK: usize = 2_000;

/// The built-in image models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ImageModel {
    /// A multilayer perceptron of the given layer widths ([`Mlp`]).
    Mlp(ModelSpec),
    /// A LeNet-5-style convolutional network ([`Cnn`]).
    Cnn(CnnConfig),
}

impl ImageModel {
    /// Input values per image the model takes.
    pub fn input(&self) -> usize {
        match self {
            ImageModel::Mlp(spec) => spec.input,
            ImageModel::Cnn(c) => c.input_len(),
        }
    }

    /// Classes (logits) the model outputs.
    pub fn classes(&self) -> usize {
        match self {
            ImageModel::Mlp(spec) => spec.classes,
            ImageModel::Cnn(c) => c.classes,
        }
    }

    /// The kind name: `mlp` or `cnn`.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageModel::Mlp(_) => "mlp",
            ImageModel::Cnn(_) => "cnn",
        }
    }
}

impl std::fmt::Display for ImageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageModel::Mlp(spec) => write!(f, "mlp {spec}"),
            ImageModel::Cnn(c) => write!(
                f,
                "cnn {}×{}×{} conv {}-{} fc {:?} to {}",
                c.channels, c.side, c.side, c.conv1, c.conv2, c.hidden, c.classes
            ),
        }
    }
}

/// A classifier trained on `train` (this peer's shard) and evaluated on `test`: cross-entropy
/// loss; metrics `accuracy` (fraction in [0, 1], headline) and `test_loss` (nats per sample).
#[derive(Clone, Debug)]
pub struct ImageClassification {
    /// The model.
    pub model: ImageModel,
    /// Name of the dataset, for logs.
    pub dataset: String,
    /// The training rows of this peer.
    pub train: Arc<Dataset>,
    /// The held-out rows every peer evaluates on.
    pub test: Arc<Dataset>,
    /// Examples in one epoch of this peer's budget: the training set's size over the number of
    /// shards, rounded up (None: this shard's size). See [`Workload::epoch_examples`].
    pub epoch_examples: Option<usize>,
}

impl ImageClassification {
    fn rows(data: &Dataset, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(candle_core::Error::Msg(format!(
                "row {bad} out of range for {} rows",
                data.len()
            )));
        }
        let mut images = Vec::with_capacity(indices.len() * data.dim);
        let mut labels = Vec::with_capacity(indices.len());
        data.gather_batch(indices, &mut images, &mut labels);
        let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
        Ok(Batch {
            inputs: Tensor::from_vec(images, (indices.len(), data.dim), device)?,
            targets: Tensor::from_vec(labels, indices.len(), device)?,
            units: indices.len() as u64,
        })
    }
}

impl Workload for ImageClassification {
    fn epoch_examples(&self) -> usize {
        self.epoch_examples.unwrap_or(self.train.len())
    }

    fn card(&self) -> ModelCard {
        match &self.model {
            ImageModel::Mlp(spec) => ModelCard::mlp(spec),
            ImageModel::Cnn(c) => ModelCard::new(
                "cnn",
                serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
            ),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} on {} ({} training samples)",
            self.model,
            self.dataset,
            self.train.len()
        )
    }

    fn build(&self, vb: VarBuilder) -> candle_core::Result<BoxedModel> {
        Ok(match &self.model {
            ImageModel::Mlp(spec) => Box::new(Mlp::new(spec, vb)?),
            ImageModel::Cnn(c) => Box::new(Cnn::new(c, vb).map_err(candle_core::Error::wrap)?),
        })
    }

    fn train_examples(&self) -> usize {
        self.train.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        Self::rows(&self.train, indices, device)
    }

    fn loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&model.forward(&batch.inputs)?, &batch.targets)
    }

    fn evaluate(&self, model: &dyn Module, device: &Device) -> candle_core::Result<Metrics> {
        let n = self.test.len();
        if n == 0 {
            return Err(candle_core::Error::Msg("the test set is empty".into()));
        }
        let mut correct = 0usize;
        let mut loss_sum = 0.0f64;
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(EVAL_CHUNK) {
            let batch = Self::rows(&self.test, chunk, device)?;
            let logits = model.forward(&batch.inputs)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &batch.targets)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
            let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let labels = batch.targets.to_vec1::<u32>()?;
            correct += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
        }
        Ok(Metrics(vec![
            ("accuracy".into(), correct as f64 / n as f64),
            ("test_loss".into(), loss_sum / n as f64),
        ]))
    }

    fn metrics(&self) -> Vec<MetricDef> {
        vec![
            MetricDef::new("accuracy", Direction::Higher),
            MetricDef::new("test_loss", Direction::Lower),
        ]
    }
}
