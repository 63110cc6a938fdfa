//! A LeNet-5-style convolutional network for small square images, built from a `VarBuilder`.
//!
//! Architecture (LeCun et al., "Gradient-based learning applied to document recognition",
//! Proc. IEEE 1998, with ReLU and max-pooling in place of the original's scaled tanh and
//! trainable sub-sampling, as in the usual PyTorch LeNet-5):
//!
//! ```text
//! [b, side·side·channels] ─reshape→ [b, channels, side, side]
//!   → conv1 5×5, padding 2 → ReLU → max-pool 2×2   [b, conv1, side/2, side/2]
//!   → conv2 5×5, no padding → ReLU → max-pool 2×2  [b, conv2, s2, s2], s2 = (side/2 − 4)/2
//!   → flatten [b, conv2·s2·s2] → (Linear → ReLU) per hidden width → Linear → logits [b, classes]
//! ```
//!
//! The convolutions are computed as im2col and a matrix product (see `Conv`), because candle's
//! own `Conv2D` backward pass is slow on the CPU.
//!
//! Divisions are floor divisions: as PyTorch's `MaxPool2d` (floor mode), a pool drops an odd last
//! row and column. Here they are cropped off explicitly before pooling, because candle's max-pool
//! backward pass is only exact when the input's sides are multiples of the pool.
//!
//! Parameters (PyTorch names and layouts): `conv1.weight` `[conv1, channels, 5, 5]`,
//! `conv1.bias` `[conv1]`, `conv2.weight` `[conv2, conv1, 5, 5]`, `conv2.bias` `[conv2]`, then
//! `fc1` … `fc{n+1}` for the `n` hidden layers and the output layer, each `fc{l}.weight`
//! `[out, in]` and `fc{l}.bias` `[out]`. Every one is created with PyTorch's default
//! initialisation for its layer as the `VarBuilder` hint: uniform in ±1/√fan_in for weights and
//! biases alike, with fan_in = in_channels·5·5 for a convolution and `in` for a linear layer
//! (PyTorch's `kaiming_uniform_(a=√5)` on the weight reduces to exactly this bound).
//!
//! The default, [`CnnConfig::default`], is LeNet-5 for 28×28 grey-scale images (MNIST):
//! 61,706 parameters.

use candle_core::{Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// The side of both convolution kernels (5×5), as in LeNet-5.
pub const KERNEL: usize = 5;
/// The zero padding of the first convolution, which keeps the image's side (`(KERNEL − 1) / 2`).
pub const CONV1_PADDING: usize = 2;
/// The side and stride of both max-pools (2×2, non-overlapping).
pub const POOL: usize = 2;
/// The smallest image side that leaves at least one pixel after both convolutions and pools:
/// `side / 2 − 4 ≥ 2`.
pub const MIN_SIDE: usize = 12;

/// The shape of a [`Cnn`]: input images and layer widths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Image side in pixels (images are `side × side`). At least [`MIN_SIDE`].
    pub side: usize,
    /// Colour channels per pixel (1 for grey-scale).
    pub channels: usize,
    /// Output classes (logits per image).
    pub classes: usize,
    /// Output channels of the first convolution.
    pub conv1: usize,
    /// Output channels of the second convolution.
    pub conv2: usize,
    /// Widths of the fully connected ReLU layers between the flattened features and the logits.
    pub hidden: Vec<usize>,
}

impl Default for CnnConfig {
    /// LeNet-5 for 28×28 grey-scale images and 10 classes: 6 and 16 channels, hidden 120 and 84.
    fn default() -> Self {
        Self {
            side: 28,
            channels: 1,
            classes: 10,
            conv1: 6,
            conv2: 16,
            hidden: vec![120, 84],
        }
    }
}

impl CnnConfig {
    /// Checks that every width is at least 1 and that `side` is at least [`MIN_SIDE`].
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming the offending field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let widths = [
            ("channels", self.channels),
            ("classes", self.classes),
            ("conv1", self.conv1),
            ("conv2", self.conv2),
        ];
        if let Some((name, _)) = widths.iter().find(|(_, w)| *w == 0) {
            return Err(ModelError::InvalidSpec(format!(
                "cnn: {name} must be at least 1"
            )));
        }
        if let Some(l) = self.hidden.iter().position(|&w| w == 0) {
            return Err(ModelError::InvalidSpec(format!(
                "cnn: hidden layer {l} has width 0"
            )));
        }
        if self.side < MIN_SIDE {
            return Err(ModelError::InvalidSpec(format!(
                "cnn: image side {} is too small for a 5×5 convolution (padding 2), a 2×2 pool, \
                 a 5×5 convolution (no padding) and a 2×2 pool; the side must be at least \
                 {MIN_SIDE}",
                self.side
            )));
        }
        Ok(())
    }

    /// Values per input image: `side · side · channels`.
    pub fn input_len(&self) -> usize {
        self.side * self.side * self.channels
    }

    /// The side of the feature maps after the second pool: `(side / 2 − 4) / 2` (floor
    /// divisions); 5 for side 28. Meaningful only for a valid config (0 if the side is too small).
    pub fn feature_side(&self) -> usize {
        (self.side / POOL).saturating_sub(KERNEL - 1) / POOL
    }

    /// Features entering the first fully connected layer: `conv2 · feature_side²` (400 for the
    /// default).
    pub fn flat_features(&self) -> usize {
        self.conv2 * self.feature_side() * self.feature_side()
    }

    /// The widths of the fully connected layers, input first: `[flat_features, hidden…,
    /// classes]`.
    fn fc_dims(&self) -> Vec<usize> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 2);
        dims.push(self.flat_features());
        dims.extend(&self.hidden);
        dims.push(self.classes);
        dims
    }

    /// The number of scalar parameters (weights and biases of all layers): 61,706 for the
    /// default.
    pub fn param_count(&self) -> usize {
        let k2 = KERNEL * KERNEL;
        let conv1 = self.conv1 * self.channels * k2 + self.conv1;
        let conv2 = self.conv2 * self.conv1 * k2 + self.conv2;
        let fc: usize = self.fc_dims().windows(2).map(|p| p[1] * p[0] + p[1]).sum();
        conv1 + conv2 + fc
    }
}

/// The uniform ±1/√fan_in hint of PyTorch's default `Linear` and `Conv2d` initialisation.
fn uniform_fan_in(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A LeNet-5-style CNN (see the module documentation for the layers and parameter names).
///
/// Input `[b, side·side·channels]` `f32`, each row one image stored channel by channel, row by
/// row (`CHW`, as PyTorch's tensors; for one channel simply the pixels in reading order).
/// Output logits `[b, classes]` `f32`.
#[derive(Clone, Debug)]
pub struct Cnn {
    config: CnnConfig,
    conv1: Conv,
    conv2: Conv,
    fcs: Vec<Linear>,
}

impl Cnn {
    /// Builds the layers from `vb`, creating (or fetching) the parameters named in the module
    /// documentation under the builder's prefix, each with its PyTorch-default `Init` hint.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] if `config` does not validate; [`ModelError::Candle`] if the
    /// builder cannot provide a tensor (e.g. a stored one of another shape).
    pub fn new(config: &CnnConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        config.validate()?;
        let conv = |name: &str, c_in: usize, c_out: usize, padding: usize| {
            let vb = vb.pp(name);
            let init = uniform_fan_in(c_in * KERNEL * KERNEL);
            let weight = vb.get_with_hints((c_out, c_in, KERNEL, KERNEL), "weight", init)?;
            let bias = vb.get_with_hints(c_out, "bias", init)?;
            Ok::<_, ModelError>(Conv {
                weight,
                bias,
                padding,
            })
        };
        let conv1 = conv("conv1", config.channels, config.conv1, CONV1_PADDING)?;
        let conv2 = conv("conv2", config.conv1, config.conv2, 0)?;
        let fcs = config
            .fc_dims()
            .windows(2)
            .enumerate()
            .map(|(l, p)| {
                let vb = vb.pp(format!("fc{}", l + 1));
                let init = uniform_fan_in(p[0]);
                let weight = vb.get_with_hints((p[1], p[0]), "weight", init)?;
                let bias = vb.get_with_hints(p[1], "bias", init)?;
                Ok(Linear::new(weight, Some(bias)))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            config: config.clone(),
            conv1,
            conv2,
            fcs,
        })
    }

    /// The config this model was built for.
    pub fn config(&self) -> &CnnConfig {
        &self.config
    }
}

/// A 5×5 convolution with stride 1 and zero `padding`, computed as im2col and one matrix
/// product from basic differentiable ops.
///
/// Same result as `Tensor::conv2d` plus the bias (a test checks), but much cheaper to
/// differentiate on the CPU: candle 0.11's `Conv2D` backward computes the input gradient with
/// `conv_transpose2d`, a slow direct loop (about 80 ms per LeNet layer at batch 64 on one
/// thread), and computes it even for the image, which needs none. Here the backward pass is a
/// matrix product plus the scatter-adds of 25 `narrow`s.
#[derive(Clone, Debug)]
struct Conv {
    /// `[out, in, 5, 5]`, PyTorch's layout.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    padding: usize,
}

impl Module for Conv {
    /// `[b, in, h, w]` → `[b, out, h + 2·padding − 4, w + 2·padding − 4]` (contiguous).
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (c_out, c_in, k, _) = self.weight.dims4()?;
        let p = self.padding;
        let xs = if p > 0 {
            xs.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
        } else {
            xs.clone()
        };
        let (b, _, h, w) = xs.dims4()?;
        if h < k || w < k {
            candle_core::bail!("cnn: a {h}×{w} feature map is smaller than the {k}×{k} kernel");
        }
        let (ho, wo) = (h - k + 1, w - k + 1);
        // [b, h, w, in]; each shifted window [b, ho, wo, in]; stacked last: [b, ho, wo, in, k·k],
        // whose rows flatten in the order of the weight's `[in, k, k]`.
        let nhwc = xs.permute((0, 2, 3, 1))?;
        let mut windows = Vec::with_capacity(k * k);
        for i in 0..k {
            for j in 0..k {
                windows.push(nhwc.narrow(1, i, ho)?.narrow(2, j, wo)?);
            }
        }
        let cols = Tensor::stack(&windows, 4)?.reshape((b * ho * wo, c_in * k * k))?;
        let ys = cols
            .matmul(&self.weight.reshape((c_out, c_in * k * k))?.t()?)?
            .broadcast_add(&self.bias)?; // [b·ho·wo, out]
        ys.reshape((b, ho, wo, c_out))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// 2×2 max-pool of `[b, c, h, w]` in floor mode: an odd last row or column is cropped first, so
/// that candle's backward pass (exact only for sides divisible by the pool) applies.
fn max_pool(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let (h2, w2) = (h - h % POOL, w - w % POOL);
    let xs = if (h2, w2) == (h, w) {
        xs.clone()
    } else {
        xs.narrow(2, 0, h2)?.narrow(3, 0, w2)?
    };
    xs.max_pool2d(POOL)
}

impl Module for Cnn {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let b = xs.dim(0)?;
        let xs = xs.reshape((b, c.channels, c.side, c.side))?;
        let xs = max_pool(&self.conv1.forward(&xs)?.relu()?)?;
        let xs = max_pool(&self.conv2.forward(&xs)?.relu()?)?;
        let mut xs = xs.flatten_from(1)?;
        let last = self.fcs.len().saturating_sub(1);
        for (i, fc) in self.fcs.iter().enumerate() {
            xs = fc.forward(&xs)?;
            if i < last {
                xs = xs.relu()?;
            }
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::set_compute_threads;
    use candle_core::{DType, Device};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn tiny() -> CnnConfig {
        CnnConfig {
            side: 13,
            channels: 2,
            classes: 3,
            conv1: 3,
            conv2: 4,
            hidden: vec![8],
        }
    }

    fn build(config: &CnnConfig) -> Result<(VarMap, Cnn), ModelError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Cnn::new(config, vb)?;
        Ok((varmap, model))
    }

    /// A batch of `b` random images in [0, 1) and random labels.
    fn batch(config: &CnnConfig, b: usize, seed: u64) -> Result<(Tensor, Tensor), ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let xs: Vec<f32> = (0..b * config.input_len()).map(|_| rng.gen()).collect();
        let ys: Vec<u32> = (0..b)
            .map(|_| rng.gen_range(0..config.classes as u32))
            .collect();
        Ok((
            Tensor::from_vec(xs, (b, config.input_len()), &Device::Cpu)?,
            Tensor::from_vec(ys, b, &Device::Cpu)?,
        ))
    }

    #[test]
    fn cnn_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Cnn>();
    }

    #[test]
    fn output_shape_for_default_and_odd_sides() -> Result<(), ModelError> {
        set_compute_threads(1);
        for config in [CnnConfig::default(), tiny()] {
            let (_, model) = build(&config)?;
            let (xs, _) = batch(&config, 3, 1)?;
            assert_eq!(model.forward(&xs)?.dims(), &[3, config.classes]);
        }
        assert_eq!(CnnConfig::default().feature_side(), 5);
        assert_eq!(tiny().feature_side(), 1);
        Ok(())
    }

    #[test]
    fn im2col_convolution_matches_candles_conv2d() -> Result<(), ModelError> {
        set_compute_threads(1);
        let d = Device::Cpu;
        for (c_in, c_out, side, padding) in [(1, 6, 28, 2), (6, 16, 14, 0), (2, 3, 7, 2)] {
            let conv = Conv {
                weight: Tensor::randn(0f32, 1.0, (c_out, c_in, KERNEL, KERNEL), &d)?,
                bias: Tensor::randn(0f32, 1.0, c_out, &d)?,
                padding,
            };
            let xs = Tensor::randn(0f32, 1.0, (3, c_in, side, side), &d)?;
            let want = xs
                .conv2d(&conv.weight, padding, 1, 1, 1)?
                .broadcast_add(&conv.bias.reshape((1, c_out, 1, 1))?)?;
            let got = conv.forward(&xs)?;
            assert_eq!(got.dims(), want.dims());
            let err = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "c_in {c_in} side {side}: max error {err}");
        }
        Ok(())
    }

    #[test]
    fn validate_rejects_small_sides_and_zero_widths() {
        let small = CnnConfig {
            side: MIN_SIDE - 1,
            ..CnnConfig::default()
        };
        match small.validate() {
            Err(ModelError::InvalidSpec(msg)) => {
                assert!(msg.contains("too small"), "{msg}");
                assert!(msg.contains("at least 12"), "{msg}");
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
        assert!(CnnConfig {
            side: MIN_SIDE,
            ..CnnConfig::default()
        }
        .validate()
        .is_ok());
        assert!(matches!(
            CnnConfig {
                conv2: 0,
                ..CnnConfig::default()
            }
            .validate(),
            Err(ModelError::InvalidSpec(_))
        ));
        assert!(matches!(
            CnnConfig {
                hidden: vec![5, 0],
                ..CnnConfig::default()
            }
            .validate(),
            Err(ModelError::InvalidSpec(_))
        ));
        let (varmap, vb) = {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            (varmap, vb)
        };
        assert!(matches!(
            Cnn::new(&small, vb),
            Err(ModelError::InvalidSpec(_))
        ));
        assert!(varmap.all_vars().is_empty());
    }

    #[test]
    fn param_count_matches_the_created_parameters_and_names() -> Result<(), ModelError> {
        for config in [CnnConfig::default(), tiny()] {
            let (varmap, _) = build(&config)?;
            let created: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(created, config.param_count(), "{config:?}");
        }
        assert_eq!(CnnConfig::default().param_count(), 61_706);
        println!(
            "default CNN (LeNet-5, 28x28): {} parameters",
            CnnConfig::default().param_count()
        );
        let (varmap, _) = build(&CnnConfig::default())?;
        let mut names: Vec<String> = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::MissingParameter("poisoned varmap".into()))?
            .keys()
            .cloned()
            .collect();
        names.sort();
        let expected = [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight",
            "fc3.bias",
            "fc3.weight",
        ];
        assert_eq!(names, expected);
        Ok(())
    }

    #[test]
    fn init_hints_give_pytorch_bounds() -> Result<(), ModelError> {
        let (varmap, _) = build(&CnnConfig::default())?;
        let map = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::MissingParameter("poisoned varmap".into()))?;
        for (name, fan_in) in [
            ("conv1.weight", 25),
            ("conv2.weight", 150),
            ("conv2.bias", 150),
            ("fc1.weight", 400),
            ("fc3.weight", 84),
        ] {
            let var = map
                .get(name)
                .ok_or_else(|| ModelError::MissingParameter(name.into()))?;
            let max = var.as_tensor().abs()?.max_all()?.to_scalar::<f32>()?;
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(max <= bound, "{name}: max |w| {max} > {bound}");
            assert!(max > 0.5 * bound, "{name}: max |w| {max} ≪ {bound}");
        }
        Ok(())
    }

    #[test]
    fn every_parameter_receives_a_nonzero_gradient() -> Result<(), ModelError> {
        set_compute_threads(1);
        for config in [CnnConfig::default(), tiny()] {
            let (varmap, model) = build(&config)?;
            let (xs, ys) = batch(&config, 8, 2)?;
            let loss = candle_nn::loss::cross_entropy(&model.forward(&xs)?, &ys)?;
            let grads = loss.backward()?;
            let vars = crate::model::assert_every_var_has_a_gradient(&varmap, &grads)?;
            assert_eq!(vars, 10 - 2 * (2 - config.hidden.len()));
        }
        Ok(())
    }

    #[test]
    fn adamw_memorises_a_small_batch() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = CnnConfig {
            side: 12,
            channels: 1,
            classes: 4,
            conv1: 4,
            conv2: 8,
            hidden: vec![16],
        };
        let (varmap, model) = build(&config)?;
        let (xs, ys) = batch(&config, 16, 3)?;
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        let mut losses = Vec::new();
        for _ in 0..200 {
            let loss = candle_nn::loss::cross_entropy(&model.forward(&xs)?, &ys)?;
            opt.backward_step(&loss)?;
            losses.push(loss.to_scalar::<f32>()?);
        }
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        println!("cnn memorise 16 images: loss {first:.4} -> {last:.4}");
        assert!(first > 1.0, "initial loss {first} (ln 4 = 1.39)");
        assert!(last < 0.1, "loss {first} -> {last}");
        Ok(())
    }

    /// Not a timed assertion: prints the time of one training step (forward, backward, AdamW)
    /// of the default CNN at batch 64 on one thread. Run with
    /// `cargo test --lib model::cnn::tests::step_time -- --nocapture`.
    #[test]
    fn step_time_default_cnn_batch_64_one_thread() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = CnnConfig::default();
        let (varmap, model) = build(&config)?;
        let (xs, ys) = batch(&config, 64, 4)?;
        let (t_fwd, t_bwd, t_opt) = crate::model::time_steps(&varmap, 10, || {
            Ok(candle_nn::loss::cross_entropy(&model.forward(&xs)?, &ys)?)
        })?;
        println!(
            "cnn LeNet-5 28x28 batch 64, {} candle thread(s): {:.2} ms/step (forward+loss {:.2}, \
             backward {:.2}, AdamW {:.2})",
            candle_core::utils::get_num_threads(),
            t_fwd + t_bwd + t_opt,
            t_fwd,
            t_bwd,
            t_opt
        );
        Ok(())
    }
}
