//! Character-level language modelling: the built-in [`Gpt`] on a text's training tokens, with
//! validation loss (nats per token, headline) and perplexity on a fixed, seeded set of
//! validation windows.

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Batch, BoxedModel, BudgetUnit, Direction, MetricDef, Metrics, ModelCard, Workload};
use crate::data::text::Vocabulary;
use crate::model::{Gpt, GptConfig};

/// Validation windows every peer and every mode evaluates (at most; fewer when the validation
/// text is short).
pub const EVAL_WINDOWS: usize = 256;
/// Windows per forward pass in evaluation.
pub const EVAL_CHUNK: usize = 64;
/// Seed of the validation windows' offsets: fixed, so every peer measures the same thing.
pub const EVAL_SEED: u64 = 0x7e57_0ff5;

/// A character-level GPT trained on `train` (this peer's tokens) and evaluated on `validation`.
///
/// An example is a window of `context + 1` tokens: the model reads the first `context` and is
/// scored on predicting each next one. Example `i` starts at token `i × context`, so an epoch
/// visits every training token once (in a seeded order of windows); one example is
/// `context` tokens of budget.
#[derive(Clone, Debug)]
pub struct CharLanguageModel {
    /// The model's shape (its `vocab` is `vocabulary.len()`).
    pub config: GptConfig,
    /// The characters, in token-id order.
    pub vocabulary: Vocabulary,
    /// Name of the text, for logs.
    pub dataset: String,
    /// This peer's training tokens.
    pub train: Arc<Vec<u32>>,
    /// The held-out tokens every peer evaluates on.
    pub validation: Arc<Vec<u32>>,
}

impl CharLanguageModel {
    /// The start offsets of the validation windows: up to [`EVAL_WINDOWS`] offsets drawn with
    /// [`EVAL_SEED`], so every peer and every mode uses the same ones.
    pub fn eval_offsets(&self) -> Vec<usize> {
        let span = self.config.context + 1;
        let Some(last) = self.validation.len().checked_sub(span) else {
            return Vec::new();
        };
        let windows = (last + 1).min(EVAL_WINDOWS);
        let mut rng = ChaCha8Rng::seed_from_u64(EVAL_SEED);
        (0..windows).map(|_| rng.gen_range(0..=last)).collect()
    }

    fn windows(
        &self,
        tokens: &[u32],
        starts: &[usize],
        device: &Device,
    ) -> candle_core::Result<Batch> {
        let t = self.config.context;
        let mut inputs = Vec::with_capacity(starts.len() * t);
        let mut targets = Vec::with_capacity(starts.len() * t);
        for &s in starts {
            let window = tokens.get(s..s + t + 1).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "window at {s} runs past the {} tokens",
                    tokens.len()
                ))
            })?;
            inputs.extend_from_slice(&window[..t]);
            targets.extend_from_slice(&window[1..]);
        }
        let b = starts.len();
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, (b, t), device)?,
            targets: Tensor::from_vec(targets, (b, t), device)?,
            units: (b * t) as u64,
        })
    }

    fn mean_loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor> {
        let logits = model.forward(&batch.inputs)?;
        let (b, t, v) = logits.dims3()?;
        candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &batch.targets.reshape(b * t)?)
    }
}

impl Workload for CharLanguageModel {
    fn card(&self) -> ModelCard {
        ModelCard {
            kind: "char-gpt".into(),
            config: serde_json::json!({
                "layers": self.config.layers,
                "heads": self.config.heads,
                "width": self.config.width,
                "context": self.config.context,
                "vocab": self.vocabulary.to_string(),
            }),
        }
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "char-gpt {}×{} heads, width {}, context {} ({} characters) on {} ({} training tokens)",
            c.layers,
            c.heads,
            c.width,
            c.context,
            c.vocab,
            self.dataset,
            self.train.len()
        )
    }

    fn build(&self, vb: VarBuilder) -> candle_core::Result<BoxedModel> {
        Ok(Box::new(
            Gpt::new(&self.config, vb).map_err(candle_core::Error::wrap)?,
        ))
    }

    fn train_examples(&self) -> usize {
        self.train.len().saturating_sub(1) / self.config.context.max(1)
    }

    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let starts: Vec<usize> = indices.iter().map(|&i| i * self.config.context).collect();
        self.windows(&self.train, &starts, device)
    }

    fn loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor> {
        self.mean_loss(model, batch)
    }

    fn evaluate(&self, model: &dyn Module, device: &Device) -> candle_core::Result<Metrics> {
        let offsets = self.eval_offsets();
        if offsets.is_empty() {
            return Err(candle_core::Error::Msg(format!(
                "the validation text ({} tokens) is shorter than one window of {}",
                self.validation.len(),
                self.config.context + 1
            )));
        }
        let mut sum = 0.0f64;
        for chunk in offsets.chunks(EVAL_CHUNK) {
            let batch = self.windows(&self.validation, chunk, device)?;
            let loss = self.mean_loss(model, &batch)?.to_scalar::<f32>()?;
            sum += f64::from(loss) * chunk.len() as f64;
        }
        let val_loss = sum / offsets.len() as f64;
        Ok(Metrics(vec![
            ("val_loss".into(), val_loss),
            ("perplexity".into(), val_loss.exp()),
        ]))
    }

    fn metrics(&self) -> Vec<MetricDef> {
        vec![
            MetricDef::new("val_loss", Direction::Lower),
            MetricDef::new("perplexity", Direction::Lower),
        ]
    }

    fn budget_unit(&self) -> BudgetUnit {
        BudgetUnit::Tokens
    }

    fn units_per_example(&self) -> u64 {
        self.config.context as u64
    }
}

/// The unigram baseline of a character model: the cross-entropy (nats per token) on
/// `validation` of the character frequencies of `train` (add-one smoothed over `vocab` ids).
/// A language model that learned anything beyond letter frequencies scores below it.
pub fn unigram_loss(train: &[u32], validation: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab.max(1)];
    for &t in train {
        if let Some(c) = counts.get_mut(t as usize) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let n = validation.len().max(1) as f64;
    validation
        .iter()
        .map(|&t| -(counts.get(t as usize).copied().unwrap_or(1.0) / total).ln())
        .sum::<f64>()
        / n
}
