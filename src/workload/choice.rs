//! The built-in models a user picks by name (`--model`, `train.model`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{ModelError, ModelSpec};

/// A built-in model, as `--model` and `train.model` name it.
///
/// Parsed from `mlp` (the default `784-128-10`), `mlp:784-256-10` or bare widths
/// `784-256-10` (an MLP of those layer widths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModelChoice {
    /// A multilayer perceptron of the given layer widths.
    Mlp(ModelSpec),
}

impl Default for ModelChoice {
    fn default() -> Self {
        ModelChoice::Mlp(ModelSpec::default())
    }
}

impl ModelChoice {
    /// The kind name: `mlp`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelChoice::Mlp(_) => "mlp",
        }
    }

    /// Parameters of the model, when they do not depend on the data (a text model's depend on
    /// its vocabulary: None).
    pub fn param_count(&self) -> Option<usize> {
        match self {
            ModelChoice::Mlp(spec) => Some(spec.param_count()),
        }
    }

    /// Checks the sizes (a value built in code rather than parsed).
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            ModelChoice::Mlp(spec) => spec.validate(),
        }
    }

    /// True for models trained on images (their data is an image dataset).
    pub fn is_image_model(&self) -> bool {
        matches!(self, ModelChoice::Mlp(_))
    }
}

impl fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelChoice::Mlp(spec) => write!(f, "{spec}"),
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
            (widths, None) if widths.starts_with(|c: char| c.is_ascii_digit()) => {
                Ok(ModelChoice::Mlp(widths.parse()?))
            }
            _ => Err(ModelError::InvalidSpec(format!(
                "{s:?}: not a model; use mlp, mlp:WIDTHS (e.g. mlp:784-128-10) or WIDTHS"
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
        for bad in ["", "gpt", "mlp:", "mlp:784-0-10", "cnn:3"] {
            let err = bad.parse::<ModelChoice>().unwrap_err().to_string();
            assert!(err.contains("invalid model spec"), "{bad}: {err}");
        }
    }
}
