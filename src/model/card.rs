//! What a checkpoint records about its model, so it can be rebuilt after the run.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What rumor needs to know to rebuild a workload's model after the run: stored in every
/// checkpoint's sidecar, compared on resume, read by `rumor sample`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The model's kind: `mlp`, `cnn`, `char-gpt`, or a custom workload's own name.
    pub kind: String,
    /// Everything else needed to rebuild it (sizes, a text model's vocabulary), as the workload
    /// defines it.
    pub config: serde_json::Value,
}

impl ModelCard {
    /// A card of kind `kind` with `config`.
    pub fn new(kind: &str, config: serde_json::Value) -> Self {
        Self {
            kind: kind.to_string(),
            config,
        }
    }

    /// The card of the built-in MLP of widths `spec`.
    pub fn mlp(spec: &super::ModelSpec) -> Self {
        Self {
            kind: "mlp".into(),
            config: serde_json::json!({ "layers": spec.to_string() }),
        }
    }
}

impl fmt::Display for ModelCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.config)
    }
}
