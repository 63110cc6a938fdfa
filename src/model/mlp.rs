//! The MLP, the local trainer (candle `Var`s + AdamW) and test-set evaluation.
//!
//! The model follows the candle-examples pattern: a struct built from a `VarBuilder` with named
//! sub-paths (`fc0`, `fc1`, ...), trained by `VarMap` → model → optimizer → `backward_step`.
//! Parameters move in and out only as flat vectors in [`ParamLayout`] order; the `VarMap`'s own
//! (random, unseeded) initial values are overwritten at once by [`Trainer::new`].

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use super::{ModelError, ModelSpec, ParamLayout};

/// Rows per forward pass in [`evaluate`]; bounds activation memory to about
/// `EVAL_CHUNK × max(width) × 4` bytes per layer.
pub const EVAL_CHUNK: usize = 2_000;

/// A multilayer perceptron: `Linear → ReLU → … → Linear`, no activation after the last layer.
///
/// Input `[b, spec.input]` `f32`, output logits `[b, spec.classes]`.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds the layers from a `VarBuilder`, creating (or fetching) `fc{l}.weight` `[out, in]`
    /// and `fc{l}.bias` `[out]` under the builder's prefix. With a `VarMap`-backed builder the
    /// new variables get candle's default (unseeded) initialisation.
    ///
    /// # Errors
    /// [`ModelError::Candle`] if the builder cannot provide a tensor (e.g. a shape mismatch).
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> Result<Self, ModelError> {
        let dims = spec.dims();
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(l, pair)| candle_nn::linear(pair[0], pair[1], vb.pp(format!("fc{l}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { layers })
    }

    /// Builds the layers from a flat parameter vector (copied into plain tensors on `device`);
    /// used for evaluation, where no gradients are needed.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] if `params.len()` is not the spec's parameter count;
    /// [`ModelError::Candle`] on a tensor error.
    pub fn from_flat(
        spec: &ModelSpec,
        params: &[f32],
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layout = spec.layout();
        layout.check_len("params", params)?;
        let tensor = |name: String| -> Result<Tensor, ModelError> {
            let entry = layout
                .get(&name)
                .ok_or_else(|| ModelError::MissingParameter(name.clone()))?;
            Ok(Tensor::from_slice(
                &params[entry.range()],
                entry.shape.as_slice(),
                device,
            )?)
        };
        let layers = (0..spec.num_layers())
            .map(|l| {
                let w = tensor(format!("fc{l}.weight"))?;
                let b = tensor(format!("fc{l}.bias"))?;
                Ok(Linear::new(w, Some(b)))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs)?;
            if i < last {
                xs = xs.relu()?;
            }
        }
        Ok(xs)
    }
}

/// Checks a batch: `labels.len() = b ≥ 1`, `images.len() = b × input`, every label `< classes`.
fn check_batch(spec: &ModelSpec, images: &[f32], labels: &[u8]) -> Result<usize, ModelError> {
    let b = labels.len();
    if b == 0 {
        return Err(ModelError::Empty("batch has no labels"));
    }
    let expected = b * spec.input;
    if images.len() != expected {
        return Err(ModelError::LengthMismatch {
            what: "images (labels.len() × input)",
            expected,
            actual: images.len(),
        });
    }
    if let Some(&label) = labels.iter().find(|&&l| usize::from(l) >= spec.classes) {
        return Err(ModelError::LabelOutOfRange {
            label,
            classes: spec.classes,
        });
    }
    Ok(b)
}

fn check_hyper(name: &'static str, value: f64) -> Result<(), ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidHyperparameter { name, value })
    }
}

/// The local training state of a peer: the candle `Var`s of the MLP (`work` in `docs/ALGORITHM.md`, "State") and an
/// AdamW optimizer over them. Runs on the CPU device.
///
/// The optimizer's moment estimates persist across [`Trainer::set_work`] and
/// [`Trainer::add_to_work`]: a merge moves the parameters but does not reset AdamW, as in local
/// SGD with a persistent inner optimizer (DiLoCo's inner AdamW).
#[derive(Debug)]
pub struct Trainer {
    spec: ModelSpec,
    layout: ParamLayout,
    device: Device,
    model: Mlp,
    /// The model's variables in layout order.
    vars: Vec<Var>,
    optimizer: AdamW,
}

impl Trainer {
    /// Builds the MLP for `spec` with parameters `initial` (flat, `spec.layout().total`
    /// elements) and an AdamW optimizer (`lr`, decoupled `weight_decay`; betas 0.9 / 0.999,
    /// eps 1e-8, candle's defaults). AdamW: Loshchilov and Hutter, "Decoupled Weight Decay
    /// Regularization", ICLR 2019.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] for a zero-width layer; [`ModelError::LengthMismatch`] if
    /// `initial` has the wrong length; [`ModelError::InvalidHyperparameter`] for a negative or
    /// non-finite `lr` or `weight_decay`; [`ModelError::Candle`] on a tensor error.
    pub fn new(
        spec: &ModelSpec,
        initial: &[f32],
        lr: f64,
        weight_decay: f64,
    ) -> Result<Self, ModelError> {
        spec.validate()?;
        check_hyper("lr", lr)?;
        check_hyper("weight_decay", weight_decay)?;
        let layout = spec.layout();
        layout.check_len("initial", initial)?;
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = Mlp::new(spec, vb)?;
        let vars = {
            // Nothing else holds this fresh map, so the lock cannot be poisoned; recover the
            // guard anyway rather than panic.
            let map = varmap
                .data()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            layout
                .entries
                .iter()
                .map(|e| {
                    map.get(&e.name)
                        .cloned()
                        .ok_or_else(|| ModelError::MissingParameter(e.name.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let optimizer = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr,
                weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        let mut trainer = Self {
            spec: spec.clone(),
            layout,
            device,
            model,
            vars,
            optimizer,
        };
        trainer.set_work(initial)?;
        Ok(trainer)
    }

    /// One AdamW step on a batch: `images` `[b, input]` row-major `f32`, `labels` `[b]` class ids.
    /// Returns the batch's mean cross-entropy loss (nats) before the step. A non-finite loss is
    /// returned, not rejected; the caller decides.
    ///
    /// # Errors
    /// [`ModelError::Empty`] for an empty batch; [`ModelError::LengthMismatch`] if
    /// `images.len() != labels.len() × input`; [`ModelError::LabelOutOfRange`]; nothing is
    /// changed in these cases. [`ModelError::Candle`] on a tensor error.
    pub fn train_step(&mut self, images: &[f32], labels: &[u8]) -> Result<f32, ModelError> {
        let b = check_batch(&self.spec, images, labels)?;
        let xs = Tensor::from_slice(images, (b, self.spec.input), &self.device)?;
        let ys: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        let ys = Tensor::from_vec(ys, b, &self.device)?;
        let logits = self.model.forward(&xs)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
        self.optimizer.backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
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
        if super::all_finite(values) {
            Ok(())
        } else {
            Err(self.diverged(step, what))
        }
    }

    fn diverged(&self, step: u64, what: &'static str) -> ModelError {
        ModelError::Diverged {
            step,
            what,
            lr: self.learning_rate(),
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

    /// The model spec this trainer was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
}

/// Test accuracy, the fraction in `[0, 1]` of rows whose arg-max logit is the label, of the MLP
/// with flat parameters `params` on `images` `[n, input]` row-major `f32` and `labels` `[n]`.
/// Runs forward passes of at most [`EVAL_CHUNK`] rows to bound memory.
///
/// # Errors
/// [`ModelError::InvalidSpec`]; [`ModelError::LengthMismatch`] for `params` or `images` of the
/// wrong length; [`ModelError::Empty`] for `n = 0`; [`ModelError::LabelOutOfRange`];
/// [`ModelError::Candle`] on a tensor error.
pub fn evaluate(
    spec: &ModelSpec,
    params: &[f32],
    images: &[f32],
    labels: &[u8],
) -> Result<f32, ModelError> {
    spec.validate()?;
    let n = check_batch(spec, images, labels)?;
    let device = Device::Cpu;
    let model = Mlp::from_flat(spec, params, &device)?;
    let mut correct = 0usize;
    for start in (0..n).step_by(EVAL_CHUNK) {
        let end = (start + EVAL_CHUNK).min(n);
        let rows = end - start;
        let xs = Tensor::from_slice(
            &images[start * spec.input..end * spec.input],
            (rows, spec.input),
            &device,
        )?;
        let predicted = model.forward(&xs)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(&labels[start..end])
            .filter(|(&p, &l)| p == u32::from(l))
            .count();
    }
    Ok((correct as f64 / n as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, set_compute_threads};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::time::Instant;

    /// A linearly separable `classes`-way problem in `dim` dimensions: each class a Gaussian-ish
    /// blob (sum of three uniforms in ±1 per coordinate) around a random centre with
    /// coordinates ±1.
    fn blobs(seed: u64, n: usize, dim: usize, classes: usize) -> (Vec<f32>, Vec<u8>) {
        let mut centres_rng = ChaCha8Rng::seed_from_u64(1234);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| {
                (0..dim)
                    .map(|_| if centres_rng.gen::<bool>() { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut images = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let c = rng.gen_range(0..classes);
            labels.push(c as u8);
            for &x in &centres[c] {
                let noise: f32 = (0..3).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
                images.push(x + noise);
            }
        }
        (images, labels)
    }

    #[test]
    fn trainer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Trainer>();
    }

    #[test]
    fn a_far_too_high_learning_rate_is_caught_as_divergence() -> Result<(), ModelError> {
        set_compute_threads(1);
        let spec: ModelSpec = "6-5-3".parse()?;
        let (images, labels) = blobs(7, 32, 6, 3);
        let mut sane = Trainer::new(&spec, &init_params(&spec, 1), 1e-3, 0.01)?;
        let mut wild = Trainer::new(&spec, &init_params(&spec, 1), 1e9, 0.01)?;
        let mut caught = None;
        for step in 1..=50u64 {
            let loss = sane.train_step(&images, &labels)?;
            sane.check_loss(step, loss)?;
            sane.check_finite(step, "the parameters", &sane.work()?)?;
            let loss = wild.train_step(&images, &labels)?;
            let checked = wild
                .check_loss(step, loss)
                .and_then(|()| wild.check_finite(step, "the parameters", &wild.work()?));
            if let Err(e) = checked {
                caught = Some(e);
                break;
            }
        }
        let err = caught.expect("lr 1e9 must make training non-finite within 50 steps");
        assert!(
            matches!(err, ModelError::Diverged { lr, .. } if lr == 1e9),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("training diverged at step"), "{text}");
        assert!(text.contains("non-finite"), "{text}");
        assert!(text.contains("learning rate 1e9"), "{text}");
        assert!(matches!(
            sane.check_finite(3, "the update", &[0.0, f32::NAN]),
            Err(ModelError::Diverged { step: 3, .. })
        ));
        Ok(())
    }

    #[test]
    fn set_work_and_work_round_trip_exactly() -> Result<(), ModelError> {
        set_compute_threads(1);
        let spec = ModelSpec::default();
        let initial = init_params(&spec, 1);
        let mut trainer = Trainer::new(&spec, &initial, 1e-3, 0.0)?;
        assert_eq!(trainer.work()?, initial);
        let other = init_params(&spec, 2);
        trainer.set_work(&other)?;
        assert_eq!(trainer.work()?, other);
        assert!(matches!(
            trainer.set_work(&other[1..]),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert_eq!(trainer.work()?, other);
        Ok(())
    }

    #[test]
    fn add_to_work_adds_element_wise() -> Result<(), ModelError> {
        set_compute_threads(1);
        let spec: ModelSpec = "6-5-3".parse()?;
        let initial = init_params(&spec, 3);
        let mut trainer = Trainer::new(&spec, &initial, 1e-3, 0.0)?;
        let delta: Vec<f32> = (0..initial.len()).map(|i| i as f32 * 0.25 - 3.0).collect();
        trainer.add_to_work(&delta)?;
        let expected: Vec<f32> = initial.iter().zip(&delta).map(|(a, d)| a + d).collect();
        assert_eq!(trainer.work()?, expected);
        assert!(matches!(
            trainer.add_to_work(&delta[..3]),
            Err(ModelError::LengthMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn bad_batches_and_arguments_are_errors() -> Result<(), ModelError> {
        set_compute_threads(1);
        let spec: ModelSpec = "4-3-2".parse()?;
        let initial = init_params(&spec, 0);
        assert!(matches!(
            Trainer::new(&spec, &initial[1..], 1e-3, 0.0),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Trainer::new(&spec, &initial, f64::NAN, 0.0),
            Err(ModelError::InvalidHyperparameter { .. })
        ));
        let bad_spec = ModelSpec {
            input: 4,
            hidden: vec![0],
            classes: 2,
        };
        assert!(matches!(
            Trainer::new(&bad_spec, &[], 1e-3, 0.0),
            Err(ModelError::InvalidSpec(_))
        ));
        let mut trainer = Trainer::new(&spec, &initial, 1e-3, 0.0)?;
        assert!(matches!(
            trainer.train_step(&[], &[]),
            Err(ModelError::Empty(_))
        ));
        assert!(matches!(
            trainer.train_step(&[0.0; 7], &[0, 1]),
            Err(ModelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            trainer.train_step(&[0.0; 8], &[0, 2]),
            Err(ModelError::LabelOutOfRange {
                label: 2,
                classes: 2
            })
        ));
        assert_eq!(trainer.work()?, initial);
        assert!(matches!(
            evaluate(&spec, &initial, &[0.0; 4], &[5]),
            Err(ModelError::LabelOutOfRange { .. })
        ));
        assert!(matches!(
            evaluate(&spec, &initial[1..], &[0.0; 4], &[1]),
            Err(ModelError::LengthMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn training_on_separable_blobs_lowers_loss_and_reaches_90_percent() -> Result<(), ModelError> {
        set_compute_threads(1);
        let (dim, classes) = (20, 4);
        let spec = ModelSpec {
            input: dim,
            hidden: vec![32],
            classes,
        };
        let (train_x, train_y) = blobs(1, 2_048, dim, classes);
        let (test_x, test_y) = blobs(2, 4_500, dim, classes);
        let initial = init_params(&spec, 42);
        let before = evaluate(&spec, &initial, &test_x, &test_y)?;
        let mut trainer = Trainer::new(&spec, &initial, 1e-2, 1e-4)?;
        let batch = 32;
        let mut losses = Vec::new();
        for epoch in 0..3 {
            for start in (0..train_y.len()).step_by(batch) {
                let end = (start + batch).min(train_y.len());
                let loss =
                    trainer.train_step(&train_x[start * dim..end * dim], &train_y[start..end])?;
                assert!(loss.is_finite(), "epoch {epoch}: loss {loss}");
                losses.push(loss);
            }
        }
        let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
        let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
        let after = evaluate(&spec, &trainer.work()?, &test_x, &test_y)?;
        println!(
            "blobs: loss {first:.4} -> {last:.4}, accuracy {before:.3} -> {after:.3} ({} steps)",
            losses.len()
        );
        assert!(last < first * 0.5, "loss {first} -> {last}");
        assert!(after > 0.9, "accuracy {after}");
        Ok(())
    }

    /// Not a timed assertion: prints the time of one step of the default model at batch 64 on one
    /// thread. Run with `cargo test --lib model::mlp::tests::step_time -- --nocapture`.
    #[test]
    fn step_time_default_model_batch_64_one_thread() -> Result<(), ModelError> {
        set_compute_threads(1);
        let spec = ModelSpec::default();
        let mut trainer = Trainer::new(&spec, &init_params(&spec, 5), 1e-3, 1e-4)?;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let images: Vec<f32> = (0..64 * spec.input).map(|_| rng.gen::<f32>()).collect();
        let labels: Vec<u8> = (0..64).map(|_| rng.gen_range(0..10u8)).collect();
        for _ in 0..5 {
            trainer.train_step(&images, &labels)?;
        }
        let steps = 100;
        let t0 = Instant::now();
        for _ in 0..steps {
            trainer.train_step(&images, &labels)?;
        }
        let per_step = t0.elapsed() / steps;
        // Breakdown: forward + loss, backward, optimizer update.
        let (mut t_fwd, mut t_bwd, mut t_opt) = (0.0, 0.0, 0.0);
        let xs = Tensor::from_slice(&images, (64, spec.input), &Device::Cpu)?;
        let ys = Tensor::from_vec(
            labels.iter().map(|&l| u32::from(l)).collect(),
            64,
            &Device::Cpu,
        )?;
        for _ in 0..steps {
            let t = Instant::now();
            let loss = candle_nn::loss::cross_entropy(&trainer.model.forward(&xs)?, &ys)?;
            t_fwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = loss.backward()?;
            t_bwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            trainer.optimizer.step(&grads)?;
            t_opt += t.elapsed().as_secs_f64();
        }
        let ms = |s: f64| s * 1e3 / f64::from(steps);
        println!(
            "  breakdown: forward+loss {:.3} ms, backward {:.3} ms, AdamW update {:.3} ms",
            ms(t_fwd),
            ms(t_bwd),
            ms(t_opt)
        );
        let t1 = Instant::now();
        let work = trainer.work()?;
        let t_work = t1.elapsed();
        let t2 = Instant::now();
        trainer.add_to_work(&work)?;
        let t_add = t2.elapsed();
        println!(
            "train_step 784-128-10 batch 64, {} candle thread(s): {:.3} ms/step; work() {:.3} ms; add_to_work {:.3} ms",
            candle_core::utils::get_num_threads(),
            per_step.as_secs_f64() * 1e3,
            t_work.as_secs_f64() * 1e3,
            t_add.as_secs_f64() * 1e3,
        );
        Ok(())
    }
}
