//! `rumor sample`: text from a char-gpt checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::data::text::Vocabulary;
use crate::model::{self, Gpt, GptConfig, ModelError};

use super::RunError;

/// Continues `prompt` by `tokens` characters sampled at `temperature` (0: greedy) with seed
/// `seed` from the char-gpt checkpoint in `dir` (a peer's data dir); returns the prompt and its
/// continuation.
///
/// # Errors
/// [`RunError::Model`] if the checkpoint cannot be loaded, holds another kind of model or a
/// malformed configuration, or the prompt is empty or has a character the model's vocabulary
/// lacks (the error names it); what generation fails with.
pub fn sample(
    dir: &Path,
    prompt: &str,
    tokens: usize,
    temperature: f64,
    seed: u64,
) -> Result<String, RunError> {
    let checkpoint = model::load_checkpoint(dir)?;
    let card = &checkpoint.card;
    if card.kind != "char-gpt" {
        return Err(RunError::Model(ModelError::InvalidSpec(format!(
            "{} holds a {} model; sampling needs a char-gpt checkpoint",
            dir.display(),
            card.kind
        ))));
    }
    let bad = |what: &str| {
        RunError::Model(ModelError::InvalidSpec(format!(
            "{}: the checkpoint's char-gpt card has no valid {what}",
            dir.display()
        )))
    };
    let size = |key: &str| -> Result<usize, RunError> {
        card.config[key]
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad(key))
    };
    let vocabulary = card.config["vocab"]
        .as_str()
        .and_then(|v| Vocabulary::from_sorted(v).ok())
        .ok_or_else(|| bad("vocab"))?;
    let config = GptConfig {
        vocab: vocabulary.len(),
        layers: size("layers")?,
        heads: size("heads")?,
        width: size("width")?,
        context: size("context")?,
    };
    config.validate()?;
    let device = Device::Cpu;
    let mut tensors = HashMap::with_capacity(checkpoint.layout.entries.len());
    for e in &checkpoint.layout.entries {
        let values = &checkpoint.params[e.range()];
        let t =
            Tensor::from_slice(values, e.shape.as_slice(), &device).map_err(ModelError::from)?;
        tensors.insert(e.name.clone(), t);
    }
    let gpt = Gpt::new(
        &config,
        VarBuilder::from_tensors(tensors, DType::F32, &device),
    )?;
    let ids = vocabulary.encode(prompt)?;
    let generated = model::generate(&gpt, &config, &ids, tokens, temperature, seed)?;
    Ok(format!("{prompt}{}", vocabulary.decode(&generated)))
}
