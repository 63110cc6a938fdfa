//! Workloads: what a peer trains. A [`Workload`] is the one seam between rumor and a model: it
//! builds the model from a candle [`VarBuilder`], draws batches from this peer's shard of its
//! dataset, computes the training loss, and evaluates a model on held-out data, returning named
//! [`Metrics`]. The gossip peer, the barrier baseline, the centralized baseline, the lab and every
//! report work through this trait alone, so a model that is not built in trains over gossip the
//! same way the built-in ones do (see `examples/custom_model.rs`).
//!
//! Parameters are whatever the model asks its `VarBuilder` for. rumor orders them by name into a
//! flat [`crate::model::ParamLayout`] ([`describe_params`]), initialises them from a seed through
//! the `Init` hint each one was created with ([`SeededInit`]), and saves them as safetensors under
//! the same names, which PyTorch's `safetensors.torch.load_file` reads.
//!
//! Built in: [`image::ImageClassification`] (the MLP and the LeNet-5-style CNN on 28×28 images)
//! and [`text::CharLanguageModel`] (the character-level GPT).

mod choice;
pub mod image;
mod params;
pub mod text;

use std::fmt;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use crate::model::ModelCard;
pub use choice::ModelChoice;
pub use params::{describe_params, evaluate, model_from_flat, SeededInit};

/// A model as a workload builds it: candle's [`Module`], input batch to output (logits).
pub type BoxedModel = Box<dyn Module + Send>;

/// One training batch, on the trainer's device.
#[derive(Clone, Debug)]
pub struct Batch {
    /// What the model takes: e.g. images `[b, 784]` `f32`, or token ids `[b, context]` `u32`.
    pub inputs: Tensor,
    /// What the loss compares with: e.g. class ids `[b]` `u32`, or next-token ids
    /// `[b, context]` `u32`.
    pub targets: Tensor,
    /// Budget units this batch consumes, in [`Workload::budget_unit`]: samples for images,
    /// tokens (`b × context`) for text.
    pub units: u64,
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (accuracy).
    Higher,
    /// Smaller is better (loss, perplexity).
    Lower,
}

impl Direction {
    /// True when `value` is at least as good as `target` in this direction.
    pub fn reached(self, value: f64, target: f64) -> bool {
        match self {
            Direction::Higher => value >= target,
            Direction::Lower => value <= target,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Higher => "higher is better",
            Direction::Lower => "lower is better",
        })
    }
}

/// The name and direction of a metric a workload reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDef {
    /// Name as it appears in `metrics.jsonl`, `/metrics` and the lab, e.g. `accuracy`,
    /// `val_loss` (nats per token), `perplexity`.
    pub name: String,
    /// Which way it improves.
    pub direction: Direction,
}

impl MetricDef {
    /// A metric named `name` that improves in `direction`.
    pub fn new(name: &str, direction: Direction) -> Self {
        Self {
            name: name.to_string(),
            direction,
        }
    }
}

/// Named metric values of one evaluation, in the order of [`Workload::metrics`]; the first is
/// the workload's headline metric (the one progress lines and the lab's default target use).
/// In JSON an object, `{"accuracy": 0.85, "test_loss": 0.41}`, in that order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = Metrics;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of metric names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metrics, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, f64>()? {
                    out.push((name, value));
                }
                Ok(Metrics(out))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

impl Metrics {
    /// The value named `name`, if measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// The `accuracy` metric as the status and metrics files carry it (`f32`), if measured.
    pub fn accuracy(&self) -> Option<f32> {
        self.get("accuracy").map(|a| a as f32)
    }

    /// The headline (first) metric, if any.
    pub fn primary(&self) -> Option<(&str, f64)> {
        self.0.first().map(|(n, v)| (n.as_str(), *v))
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value:.4}")?;
        }
        Ok(())
    }
}

/// What a training budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetUnit {
    /// Training examples (images).
    Samples,
    /// Tokens (characters for a character-level model).
    Tokens,
}

impl BudgetUnit {
    /// The unit's plural name, e.g. `samples`.
    pub fn name(self) -> &'static str {
        match self {
            BudgetUnit::Samples => "samples",
            BudgetUnit::Tokens => "tokens",
        }
    }
}

/// A model and the data it trains on, as one peer sees them: this peer's training shard and
/// the held-out data every peer evaluates on.
///
/// Implementations must be deterministic: the same model and the same indices give the same
/// batch on every call, and [`Workload::evaluate`] measures a fixed held-out set, so every peer
/// and every mode (gossip, sync, centralized) reports the same quantity for the same parameters.
///
/// Models must record a backward pass for every parameter: candle's fused
/// `candle_nn::ops::softmax_last_dim`, `RmsNorm`/`LayerNorm` fast paths and rope kernels record
/// none, so built-in models use their differentiable forms.
pub trait Workload: Send + Sync {
    /// What to rebuild the model from (kind and configuration).
    fn card(&self) -> ModelCard;

    /// One line for logs, e.g. `mlp 784-128-10 on fashion-mnist (15000 training samples)`; by
    /// default the card.
    fn describe(&self) -> String {
        self.card().to_string()
    }

    /// Builds the model, creating each parameter through `vb` under a stable name (with an
    /// `Init` hint: rumor initialises from a seed through it).
    ///
    /// # Errors
    /// What candle fails with (e.g. a tensor of the wrong shape already in `vb`).
    fn build(&self, vb: VarBuilder) -> candle_core::Result<BoxedModel>;

    /// Training examples in this peer's shard; an epoch visits each once.
    fn train_examples(&self) -> usize;

    /// Examples one epoch of the budget counts: by default the shard's own
    /// ([`Workload::train_examples`]). A shard of a partition says the training set's size over
    /// the number of shards, so every peer trains as many samples whatever its shard's size (a
    /// skewed partition leaves shards of very different sizes), as a distributed sampler gives
    /// every rank the same count: a smaller shard is visited more than once, a larger one
    /// partly, in its own seeded order each pass.
    fn epoch_examples(&self) -> usize {
        self.train_examples()
    }

    /// The batch of shard examples `indices` (each `< train_examples()`), on `device`.
    ///
    /// # Errors
    /// What candle fails with; an index out of range is a candle error naming it.
    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch>;

    /// The mean training loss of `model` on `batch` (a scalar `f32` tensor; nats), recorded for
    /// backpropagation.
    ///
    /// # Errors
    /// What candle fails with.
    fn loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor>;

    /// The metrics of `model` on the held-out data, in the order of [`Workload::metrics`].
    ///
    /// # Errors
    /// What candle fails with.
    fn evaluate(&self, model: &dyn Module, device: &Device) -> candle_core::Result<Metrics>;

    /// The metrics [`Workload::evaluate`] returns, headline first.
    fn metrics(&self) -> Vec<MetricDef>;

    /// What the budget counts (samples or tokens); [`Batch::units`] is in this unit.
    fn budget_unit(&self) -> BudgetUnit {
        BudgetUnit::Samples
    }

    /// Budget units one example holds (1 for an image; the context length for a text window).
    fn units_per_example(&self) -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_compare_the_right_way() {
        assert!(Direction::Higher.reached(0.8, 0.75));
        assert!(!Direction::Higher.reached(0.7, 0.75));
        assert!(Direction::Lower.reached(1.9, 2.0));
        assert!(!Direction::Lower.reached(2.1, 2.0));
    }

    #[test]
    fn metrics_name_their_values_headline_first() {
        let m = Metrics(vec![("val_loss".into(), 2.5), ("perplexity".into(), 12.18)]);
        assert_eq!(m.primary(), Some(("val_loss", 2.5)));
        assert_eq!(m.get("perplexity"), Some(12.18));
        assert_eq!(m.get("accuracy"), None);
        assert_eq!(m.to_string(), "val_loss=2.5000 perplexity=12.1800");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"val_loss":2.5,"perplexity":12.18}"#);
        assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap(), m);
    }
}
