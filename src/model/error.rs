//! The one error type of the `model` module.
//!
//! Every fallible operation here returns [`ModelError`]. Variants that concern a file name it, so
//! a peer that fails to load its checkpoint can say which file to look at.

use std::path::PathBuf;

/// Errors of model construction, training, evaluation, delta arithmetic and checkpoints.
///
/// No operation in this module panics on bad input (wrong lengths, out-of-range labels, corrupt
/// files); it returns one of these instead. Unless a variant says otherwise, a failed operation
/// left the trainer's parameters as they were only if it failed before its first write; a
/// [`ModelError::Candle`] from the middle of an optimizer step may leave a partial update.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An error from the candle tensor library (shape mismatch, unsupported op, ...).
    #[error("the tensor library (candle) failed")]
    Candle(#[from] candle_core::Error),

    /// Two lengths that must agree do not: `what` names the argument, `expected` is the length
    /// it must have (in `f32` or label elements) and `actual` the one it had.
    #[error("length mismatch in {what}: expected {expected}, got {actual}")]
    LengthMismatch {
        /// Which argument had the wrong length.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        actual: usize,
    },

    /// An input that must hold at least one item (a batch, a test set, a list of models) was empty.
    #[error("empty input: {0}")]
    Empty(&'static str),

    /// A class label is not below the model's number of classes.
    #[error("label {label} out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label found.
        label: u8,
        /// The model's number of classes.
        classes: usize,
    },

    /// A token id is not below the model's vocabulary size (e.g. in a prompt for
    /// [`crate::model::generate`]).
    #[error("token {token} out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token id found.
        token: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },

    /// A model produced NaN or infinite values where finite ones are needed; the string says
    /// where (e.g. "the logits of generate").
    #[error("non-finite values (NaN or infinity) in {0}")]
    NonFinite(&'static str),

    /// A model spec string or value is invalid (unparsable, or a zero-sized layer).
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),

    /// A hyperparameter (learning rate, weight decay) is negative or not finite.
    #[error("invalid hyperparameter {name} = {value}")]
    InvalidHyperparameter {
        /// The hyperparameter's name.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },

    /// Reading, writing, syncing or renaming a checkpoint file failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A checkpoint sidecar is not valid JSON of the expected form (for example truncated).
    #[error("malformed checkpoint sidecar {}", path.display())]
    Sidecar {
        /// The sidecar file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },

    /// A checkpoint's sidecar could not be serialised while saving (its state is not
    /// representable as JSON). Nothing was written; this says nothing about the files on disk.
    #[error("cannot serialise the checkpoint sidecar")]
    EncodeSidecar(#[source] serde_json::Error),

    /// The checkpoint's tensor file does not have the checksum its sidecar records: it is
    /// corrupt, or it and the sidecar come from different saves.
    #[error("checksum mismatch in {path}: sidecar says {expected}, file has {actual}")]
    ChecksumMismatch {
        /// The tensor file.
        path: PathBuf,
        /// The checksum recorded in the sidecar (hex).
        expected: String,
        /// The checksum of the bytes on disk (hex).
        actual: String,
    },

    /// The checkpoint's tensor file could not be decoded as safetensors.
    #[error("cannot decode safetensors file {}", path.display())]
    Safetensors {
        /// The tensor file.
        path: PathBuf,
        /// The decoding error.
        source: candle_core::Error,
    },

    /// A checkpoint decodes but does not match its spec: unknown format version, missing or
    /// extra tensor, wrong shape or dtype.
    #[error("invalid checkpoint {path}: {reason}")]
    CheckpointFormat {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Training diverged: the loss, the parameters or an update became NaN or infinite (found by
    /// [`crate::model::Trainer::check_loss`] and [`crate::model::Trainer::check_finite`]).
    /// Nothing sensible can follow, so the run stops; the usual cause is a learning rate far
    /// too high.
    #[error(
        "training diverged at step {step}: {what} became non-finite (NaN or infinity); the \
         learning rate {lr:e}{} is probably too high",
        scheduled_rate(.lr, .lr_at_step)
    )]
    Diverged {
        /// The optimizer step (1-based) after which it was noticed.
        step: u64,
        /// What held the non-finite value, e.g. "the training loss".
        what: &'static str,
        /// The learning rate the trainer was configured with (after scaling by the number of
        /// peers): the schedule's peak.
        lr: f64,
        /// The rate the schedule gave that step (equal to `lr` without a schedule).
        lr_at_step: f64,
    },

    /// A parameter named by the layout was not created by the model builder (a bug in this
    /// module, reported rather than panicking).
    #[error("parameter {0} missing from the model")]
    MissingParameter(String),
}

/// The part of [`ModelError::Diverged`]'s message about the schedule: empty when the step ran
/// at the configured rate.
fn scheduled_rate(lr: &f64, lr_at_step: &f64) -> String {
    if lr_at_step == lr {
        String::new()
    } else {
        format!(" ({lr_at_step:e} at that step of its schedule)")
    }
}

impl From<crate::fsutil::PathIoError> for ModelError {
    fn from(e: crate::fsutil::PathIoError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}
