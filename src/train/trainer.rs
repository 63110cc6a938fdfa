//! The local trainer of a peer: a workload's model as candle `Var`s and an AdamW optimizer over
//! them (`work` in `docs/ALGORITHM.md`, "State"), moved in and out as flat vectors.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::model::{ModelError, ParamEntry, ParamLayout};
use crate::workload::{BoxedModel, Workload};

fn check_hyper(name: &'static str, value: f64) -> Result<(), ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidHyperparameter { name, value })
    }
}

/// The local training state of a peer: the workload's model, its parameters as candle `Var`s in
/// [`ParamLayout`] order, and an AdamW optimizer over them, on one candle device.
///
/// The optimizer's moment estimates persist across [`Trainer::set_work`] and
/// [`Trainer::add_to_work`]: a merge moves the parameters but does not reset AdamW, as in local
/// SGD with a persistent inner optimizer (DiLoCo's inner AdamW).
pub struct Trainer {
    workload: Arc<dyn Workload>,
    layout: ParamLayout,
    device: Device,
    model: BoxedModel,
    /// The model's variables in layout order.
    vars: Vec<Var>,
    optimizer: AdamW,
    /// The rate the trainer was built with (a schedule's peak), named when training diverges.
    peak_lr: f64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("workload", &self.workload.describe())
            .field("params", &self.layout.total)
            .field("lr", &self.optimizer.learning_rate())
            .finish()
    }
}

impl Trainer {
    /// Builds `workload`'s model with parameters `initial` (flat, in the order of the layout
    /// [`crate::workload::describe_params`] gives) and an AdamW optimizer (`lr`, decoupled
    /// `weight_decay`; betas 0.9 / 0.999, eps 1e-8, candle's defaults). AdamW: Loshchilov and
    /// Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] if `initial` has the wrong length;
    /// [`ModelError::InvalidHyperparameter`] for a negative or non-finite `lr` or `weight_decay`;
    /// [`ModelError::InvalidSpec`] for a model without parameters; [`ModelError::Candle`] if the
    /// model cannot be built.
    pub fn new(
        workload: Arc<dyn Workload>,
        initial: &[f32],
        lr: f64,
        weight_decay: f64,
    ) -> Result<Self, ModelError> {
        Self::with_device(workload, initial, lr, weight_decay, Device::Cpu)
    }

    /// [`Trainer::new`] on `device` (parameters, optimizer state and batches live there;
    /// `work()` copies to the host).
    ///
    /// # Errors
    /// As [`Trainer::new`].
    pub fn with_device(
        workload: Arc<dyn Workload>,
        initial: &[f32],
        lr: f64,
        weight_decay: f64,
        device: Device,
    ) -> Result<Self, ModelError> {
        check_hyper("lr", lr)?;
        check_hyper("weight_decay", weight_decay)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = workload.build(vb)?;
        let mut named: Vec<(String, Var)> = {
            // Nothing else holds this fresh map, so the lock cannot be poisoned; recover the
            // guard anyway rather than panic.
            let map = varmap
                .data()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
        };
        if named.is_empty() {
            return Err(ModelError::InvalidSpec(format!(
                "{}: the model has no parameters",
                workload.describe()
            )));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries = Vec::with_capacity(named.len());
        let mut offset = 0;
        for (name, var) in &named {
            let len = var.elem_count();
            entries.push(ParamEntry {
                name: name.clone(),
                shape: var.dims().to_vec(),
                offset,
                len,
            });
            offset += len;
        }
        let layout = ParamLayout {
            entries,
            total: offset,
        };
        layout.check_len("initial", initial)?;
        let vars: Vec<Var> = named.into_iter().map(|(_, v)| v).collect();
        let optimizer = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr,
                weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        let mut trainer = Self {
            workload,
            layout,
            device,
            model,
            vars,
            optimizer,
            peak_lr: lr,
        };
        trainer.set_work(initial)?;
        Ok(trainer)
    }

    /// One AdamW step on the shard examples `indices` (the workload draws the batch). Returns
    /// the batch's mean training loss (nats) before the step and the budget units it consumed
    /// (samples or tokens). A non-finite loss is returned, not rejected; the caller decides.
    ///
    /// # Errors
    /// [`ModelError::Empty`] for no indices; [`ModelError::Candle`] if the workload cannot draw
    /// the batch (nothing changed then) or a tensor operation fails.
    pub fn train_step(&mut self, indices: &[usize]) -> Result<(f32, u64), ModelError> {
        if indices.is_empty() {
            return Err(ModelError::Empty("batch has no examples"));
        }
        let batch = self.workload.batch(indices, &self.device)?;
        let loss = self.workload.loss(self.model.as_ref(), &batch)?;
        self.optimizer.backward_step(&loss)?;
        Ok((loss.to_scalar::<f32>()?, batch.units))
    }

    /// The current parameters (`work`), flat in layout order (`layout().total` elements).
    ///
    /// # Errors
    /// [`ModelError::Candle`] on a tensor error.
    pub fn work(&self) -> Result<Vec<f32>, ModelError> {
        let mut flat = Vec::with_capacity(self.layout.total);
        for var in &self.vars {
            flat.extend(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(flat)
    }

    /// Replaces the parameters with `flat` (layout order). Bit-exact: `work()` afterwards
    /// returns `flat`.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] if `flat.len() != layout().total` (nothing changed);
    /// [`ModelError::Candle`] on a tensor error.
    pub fn set_work(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        self.layout.check_len("set_work", flat)?;
        for (entry, var) in self.layout.entries.iter().zip(&self.vars) {
            let t = Tensor::from_slice(&flat[entry.range()], entry.shape.as_slice(), &self.device)?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// `work += delta` (layout order), element-wise in `f32`: applying a received delta.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] if `delta.len() != layout().total` (nothing changed);
    /// [`ModelError::Candle`] on a tensor error.
    pub fn add_to_work(&mut self, delta: &[f32]) -> Result<(), ModelError> {
        self.layout.check_len("add_to_work", delta)?;
        for (entry, var) in self.layout.entries.iter().zip(&self.vars) {
            let d =
                Tensor::from_slice(&delta[entry.range()], entry.shape.as_slice(), &self.device)?;
            let sum = var.as_tensor().add(&d)?;
            var.set(&sum)?;
        }
        Ok(())
    }

    /// The divergence check every training loop runs on each step's loss (gossip peers, the
    /// sync baseline and the centralized baseline alike): a NaN or infinite `loss` means the
    /// parameters are lost, so the run must stop rather than go on training nothing.
    ///
    /// # Errors
    /// [`ModelError::Diverged`] naming `step` and this trainer's learning rate when `loss` is not
    /// finite.
    pub fn check_loss(&self, step: u64, loss: f32) -> Result<(), ModelError> {
        if loss.is_finite() {
            Ok(())
        } else {
            Err(self.diverged(step, "the training loss"))
        }
    }

    /// The same check on `values` (this trainer's parameters, or an update computed from them)
    /// before they leave the trainer: a step can leave the parameters non-finite while its loss,
    /// computed before the update, was still finite.
    ///
    /// # Errors
    /// [`ModelError::Diverged`] naming `step`, `what` and the learning rate when a value is NaN
    /// or infinite.
    pub fn check_finite(
        &self,
        step: u64,
        what: &'static str,
        values: &[f32],
    ) -> Result<(), ModelError> {
        if crate::model::all_finite(values) {
            Ok(())
        } else {
            Err(self.diverged(step, what))
        }
    }

    fn diverged(&self, step: u64, what: &'static str) -> ModelError {
        ModelError::Diverged {
            step,
            what,
            lr: self.peak_lr,
            lr_at_step: self.learning_rate(),
        }
    }

    /// Sets AdamW's learning rate for the following steps (e.g. for a schedule).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.set_learning_rate(lr);
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.optimizer.learning_rate()
    }

    /// The flat layout of this trainer's parameters.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The workload this trainer trains.
    pub fn workload(&self) -> &Arc<dyn Workload> {
        &self.workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::text::{synthetic_text, TextData};
    use crate::model::{CnnConfig, ModelSpec};
    use crate::workload::image::{ImageClassification, ImageModel};
    use crate::workload::text::CharLanguageModel;
    use crate::workload::{describe_params, ModelChoice};

    /// Every built-in model, on a little data: the MLP and the CNN on synthetic images, a small
    /// char-gpt on synthetic text.
    fn built_in_workloads() -> Vec<Arc<dyn Workload>> {
        let (train, test) = crate::data::synthetic::generate(5, 64, 16);
        let (train, test) = (Arc::new(train), Arc::new(test));
        let image = |model| -> Arc<dyn Workload> {
            Arc::new(ImageClassification {
                model,
                dataset: "synthetic".into(),
                train: train.clone(),
                test: test.clone(),
                epoch_examples: None,
            })
        };
        let text = TextData::from_text("synthetic", "", &synthetic_text(3, 20_000)).unwrap();
        let ModelChoice::CharGpt(size) = "char-gpt:layers=2,heads=2,width=16,context=8"
            .parse::<ModelChoice>()
            .unwrap()
        else {
            unreachable!("a char-gpt choice")
        };
        vec![
            image(ImageModel::Mlp(ModelSpec::default())),
            image(ImageModel::Cnn(CnnConfig::default())),
            Arc::new(CharLanguageModel {
                config: size.with_vocab(text.vocab.len()),
                vocabulary: text.vocab.clone(),
                dataset: text.name.clone(),
                train: Arc::new(text.train.clone()),
                validation: Arc::new(text.validation.clone()),
            }),
        ]
    }

    /// candle's fused softmax, layer norm and rope record no backward pass; a model built
    /// with one would leave some tensor without a gradient. With weight decay 0, AdamW moves a
    /// tensor in its first step exactly when some element has a non-zero gradient.
    #[test]
    fn every_tensor_of_every_built_in_model_moves_in_the_first_step() {
        crate::model::set_compute_threads(1);
        for workload in built_in_workloads() {
            let (layout, initial) = describe_params(workload.as_ref(), 7).unwrap();
            let mut trainer = Trainer::new(workload.clone(), &initial, 1e-3, 0.0).unwrap();
            assert_eq!(trainer.layout(), &layout, "{}", workload.describe());
            let (loss, units) = trainer.train_step(&[0, 1, 2, 3]).unwrap();
            assert!(loss.is_finite() && units >= 4, "{loss} {units}");
            let after = trainer.work().unwrap();
            for e in &layout.entries {
                let moved = initial[e.range()]
                    .iter()
                    .zip(&after[e.range()])
                    .any(|(a, b)| a != b);
                assert!(moved, "{}: {} got no gradient", workload.describe(), e.name);
            }
        }
    }

    #[test]
    fn seeded_initial_parameters_repeat_and_differ_by_seed() {
        for workload in built_in_workloads() {
            let (layout, a) = describe_params(workload.as_ref(), 1).unwrap();
            let (_, b) = describe_params(workload.as_ref(), 1).unwrap();
            let (_, c) = describe_params(workload.as_ref(), 2).unwrap();
            assert_eq!(a, b, "{}", workload.describe());
            assert_ne!(a, c, "{}", workload.describe());
            assert_eq!(a.len(), layout.total);
            let mut names: Vec<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
            let sorted = names.clone();
            names.sort_unstable();
            assert_eq!(names, sorted, "layout sorted by name");
        }
    }

    #[test]
    fn set_work_round_trips_and_bad_arguments_are_errors() {
        let workload = built_in_workloads().remove(0);
        let (_, initial) = describe_params(workload.as_ref(), 3).unwrap();
        assert!(matches!(
            Trainer::new(workload.clone(), &initial[1..], 1e-3, 0.0),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Trainer::new(workload.clone(), &initial, f64::NAN, 0.0),
            Err(ModelError::InvalidHyperparameter { .. })
        ));
        let mut trainer = Trainer::new(workload.clone(), &initial, 1e-3, 0.0).unwrap();
        assert_eq!(trainer.work().unwrap(), initial);
        let delta: Vec<f32> = (0..initial.len()).map(|i| i as f32 * 1e-6).collect();
        trainer.add_to_work(&delta).unwrap();
        let expected: Vec<f32> = initial.iter().zip(&delta).map(|(a, d)| a + d).collect();
        assert_eq!(trainer.work().unwrap(), expected);
        assert!(trainer.set_work(&initial[2..]).is_err());
        assert!(matches!(trainer.train_step(&[]), Err(ModelError::Empty(_))));
        assert!(
            trainer.train_step(&[1_000_000]).is_err(),
            "an example past the shard"
        );
        assert_eq!(trainer.work().unwrap(), expected, "nothing changed");
    }
}
