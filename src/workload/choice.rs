//! The built-in models a user picks by name (`--model`, `train.model`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::gpt::{DEFAULT_CONTEXT, DEFAULT_HEADS, DEFAULT_LAYERS, DEFAULT_WIDTH};
use crate::model::{CnnConfig, GptConfig, ModelError, ModelSpec};

/// A built-in model, as `--model` and `train.model` name it.
///
/// Parsed from `mlp` (the default `784-128-10`), `mlp:784-256-10` or bare widths
/// `784-256-10` (an MLP of those layer widths); `cnn` (LeNet-5 for 28×28 images); `char-gpt`
/// (4 layers, 4 heads, width 128, context 64) or `char-gpt:layers=L,heads=H,width=W,context=T`
/// with any of the four given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModelChoice {
    /// A multilayer perceptron of the given layer widths.
    Mlp(ModelSpec),
    /// The LeNet-5-style convolutional network.
    Cnn(CnnConfig),
    /// The character-level GPT of this size (its vocabulary comes from the text).
    CharGpt(GptSize),
}

/// The size of a character-level GPT, all but its vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptSize {
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block (divides `width`).
    pub heads: usize,
    /// Embedding width.
    pub width: usize,
    /// Context length in tokens.
    pub context: usize,
}

impl Default for GptSize {
    fn default() -> Self {
        Self {
            layers: DEFAULT_LAYERS,
            heads: DEFAULT_HEADS,
            width: DEFAULT_WIDTH,
            context: DEFAULT_CONTEXT,
        }
    }
}

impl GptSize {
    /// The model's configuration for a vocabulary of `vocab` characters.
    pub fn with_vocab(self, vocab: usize) -> GptConfig {
        GptConfig {
            vocab,
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
        }
    }
}

impl fmt::Display for GptSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layers={},heads={},width={},context={}",
            self.layers, self.heads, self.width, self.context
        )
    }
}

impl FromStr for GptSize {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut size = GptSize::default();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let bad = || ModelError::InvalidSpec(format!("char-gpt size {s:?}: `{pair}`"));
            let (key, value) = pair.split_once('=').ok_or_else(bad)?;
            let value: usize = value.trim().parse().map_err(|_| bad())?;
            match key.trim() {
                "layers" => size.layers = value,
                "heads" => size.heads = value,
                "width" => size.width = value,
                "context" => size.context = value,
                _ => return Err(bad()),
            }
        }
        // Any vocabulary will do to check the sizes.
        size.with_vocab(1).validate()?;
        Ok(size)
    }
}

impl Default for ModelChoice {
    fn default() -> Self {
        ModelChoice::Mlp(ModelSpec::default())
    }
}

impl ModelChoice {
    /// The kind name: `mlp`, `cnn` or `char-gpt`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelChoice::Mlp(_) => "mlp",
            ModelChoice::Cnn(_) => "cnn",
            ModelChoice::CharGpt(_) => "char-gpt",
        }
    }

    /// Parameters of the model, when they do not depend on the data (a text model's depend on
    /// its vocabulary: None).
    pub fn param_count(&self) -> Option<usize> {
        match self {
            ModelChoice::Mlp(spec) => Some(spec.param_count()),
            ModelChoice::Cnn(c) => Some(c.param_count()),
            ModelChoice::CharGpt(_) => None,
        }
    }

    /// Checks the sizes (a value built in code rather than parsed).
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            ModelChoice::Mlp(spec) => spec.validate(),
            ModelChoice::Cnn(c) => c.validate(),
            ModelChoice::CharGpt(size) => size.with_vocab(1).validate(),
        }
    }

    /// True for models trained on images (their data is an image dataset).
    pub fn is_image_model(&self) -> bool {
        matches!(self, ModelChoice::Mlp(_) | ModelChoice::Cnn(_))
    }
}

impl fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelChoice::Mlp(spec) => write!(f, "{spec}"),
            ModelChoice::Cnn(_) => f.write_str("cnn"),
            ModelChoice::CharGpt(size) if *size == GptSize::default() => f.write_str("char-gpt"),
            ModelChoice::CharGpt(size) => write!(f, "char-gpt:{size}"),
        }
    }
}

impl FromStr for ModelChoice {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, rest) = match s.split_once(':') {
            Some((kind, rest)) => (kind, Some(rest)),
            None => (s, None),
        };
        match (kind, rest) {
            ("mlp", None) => Ok(ModelChoice::Mlp(ModelSpec::default())),
            ("mlp", Some(widths)) => Ok(ModelChoice::Mlp(widths.parse()?)),
            ("cnn", None) => Ok(ModelChoice::Cnn(CnnConfig::default())),
            ("char-gpt", None) => Ok(ModelChoice::CharGpt(GptSize::default())),
            ("char-gpt", Some(size)) => Ok(ModelChoice::CharGpt(size.parse()?)),
            (widths, None) if widths.starts_with(|c: char| c.is_ascii_digit()) => {
                Ok(ModelChoice::Mlp(widths.parse()?))
            }
            _ => Err(ModelError::InvalidSpec(format!(
                "{s:?}: not a model; use mlp, mlp:WIDTHS (e.g. mlp:784-128-10), WIDTHS, cnn, \
                 char-gpt or char-gpt:layers=L,heads=H,width=W,context=T"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse_by_name_and_by_widths_and_print_back() {
        let default: ModelChoice = "mlp".parse().unwrap();
        assert_eq!(default, ModelChoice::default());
        assert_eq!(default.to_string(), "784-128-10");
        let widths: ModelChoice = "784-64-10".parse().unwrap();
        assert_eq!(widths, "mlp:784-64-10".parse().unwrap());
        assert_eq!(widths.param_count(), Some(784 * 64 + 64 + 64 * 10 + 10));
        assert_eq!("cnn".parse::<ModelChoice>().unwrap().to_string(), "cnn");
        let gpt: ModelChoice = "char-gpt".parse().unwrap();
        assert_eq!(gpt, ModelChoice::CharGpt(GptSize::default()));
        assert_eq!(gpt.to_string(), "char-gpt");
        let small: ModelChoice = "char-gpt:layers=2,width=32".parse().unwrap();
        assert_eq!(
            small.to_string(),
            "char-gpt:layers=2,heads=4,width=32,context=64"
        );
        assert_eq!(small.to_string().parse::<ModelChoice>().unwrap(), small);
        for bad in [
            "",
            "gpt",
            "mlp:",
            "mlp:784-0-10",
            "cnn:3",
            "char-gpt:layers=0",
            "char-gpt:width=30,heads=4",
            "char-gpt:depth=3",
        ] {
            let err = bad.parse::<ModelChoice>().unwrap_err().to_string();
            assert!(err.contains("invalid model spec"), "{bad}: {err}");
        }
    }
}
