//! The multilayer perceptron, built from a `VarBuilder` with named sub-paths (`fc0`, `fc1`, ...)
//! in the candle-examples pattern. Weights `[out, in]` and biases `[out]` start uniform in
//! ±1/√in, PyTorch's `nn.Linear` default.

use candle_core::{Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::ModelSpec;

/// A multilayer perceptron: `Linear → ReLU → … → Linear`, no activation after the last layer.
///
/// Input `[b, spec.input]` `f32`, output logits `[b, spec.classes]`.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds the layers from a `VarBuilder`, creating (or fetching) `fc{l}.weight` `[out, in]`
    /// and `fc{l}.bias` `[out]` under the builder's prefix, each with the hint uniform ±1/√in.
    ///
    /// # Errors
    /// A candle error if the builder cannot provide a tensor (e.g. a shape mismatch) or a layer
    /// width is zero.
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        if let Err(e) = spec.validate() {
            return Err(candle_core::Error::Msg(e.to_string()));
        }
        let dims = spec.dims();
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(l, pair)| {
                let (fan_in, fan_out) = (pair[0], pair[1]);
                let bound = 1.0 / (fan_in as f64).sqrt();
                let init = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                let vb = vb.pp(format!("fc{l}"));
                let w = vb.get_with_hints((fan_out, fan_in), "weight", init)?;
                let b = vb.get_with_hints(fan_out, "bias", init)?;
                Ok(Linear::new(w, Some(b)))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
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
