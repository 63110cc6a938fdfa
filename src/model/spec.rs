//! Model shapes, the flat parameter layout, and seeded initial parameters.
//!
//! A *flat* parameter vector holds every parameter tensor of a model, each in row-major order,
//! concatenated in the order of a [`ParamLayout`]: sorted by parameter name. candle's `VarMap`
//! iterates in hash order, so nothing here relies on it; the layout alone fixes the order, and
//! two peers with the same [`ModelSpec`] agree on what every index of a flat vector means.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// One parameter tensor's place in a flat vector.
///
/// The tensor occupies `flat[offset .. offset + len]` in row-major order; `len` is the product of
/// `shape` (weights are `[out, in]`, biases `[out]`, as `candle_nn::Linear` expects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// Parameter name, e.g. `fc0.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Index of the first element in the flat vector.
    pub offset: usize,
    /// Number of elements (product of `shape`).
    pub len: usize,
}

impl ParamEntry {
    /// The index range `offset .. offset + len` of this tensor in a flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The order and shapes of all parameters of a model: entries sorted by name, contiguous, and
/// `total` the sum of their lengths (the length of a flat vector).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    /// Parameter tensors, sorted by name, with consecutive offsets starting at 0.
    pub entries: Vec<ParamEntry>,
    /// Total number of `f32` elements.
    pub total: usize,
}

impl ParamLayout {
    /// The entry named `name`, if any (linear search; layouts have a handful of entries).
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Checks that `flat` has exactly `self.total` elements.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] naming `what` otherwise.
    pub fn check_len(&self, what: &'static str, flat: &[f32]) -> Result<(), ModelError> {
        if flat.len() == self.total {
            Ok(())
        } else {
            Err(ModelError::LengthMismatch {
                what,
                expected: self.total,
                actual: flat.len(),
            })
        }
    }
}

/// Shape of a multilayer perceptron: `input` features, one fully connected ReLU layer per entry
/// of `hidden`, and a final linear layer to `classes` logits.
///
/// The default, `784-128-10`, has 101,770 parameters. Parsed from and displayed as the layer
/// widths joined by `-` (`"784-128-10"`; `"784-10"` is a model with no hidden layer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Number of input features per example.
    pub input: usize,
    /// Widths of the hidden layers, input side first.
    pub hidden: Vec<usize>,
    /// Number of output classes (logits).
    pub classes: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            input: 784,
            hidden: vec![128],
            classes: 10,
        }
    }
}

/// A parameter tensor as the spec defines it, before offsets are assigned.
pub(crate) struct ParamDef {
    /// Parameter name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Input width of the layer the tensor belongs to (PyTorch's `fan_in`).
    pub fan_in: usize,
}

impl ModelSpec {
    /// All layer widths, `[input, hidden.., classes]`.
    pub fn dims(&self) -> Vec<usize> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 2);
        dims.push(self.input);
        dims.extend_from_slice(&self.hidden);
        dims.push(self.classes);
        dims
    }

    /// Number of linear layers (`hidden.len() + 1`). Layer `l` has parameters `fc{l}.weight` of
    /// shape `[dims[l+1], dims[l]]` and `fc{l}.bias` of shape `[dims[l+1]]`.
    pub fn num_layers(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Checks that every width is at least 1.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] if a width is 0.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.dims().contains(&0) {
            return Err(ModelError::InvalidSpec(format!(
                "{self}: every layer width must be at least 1"
            )));
        }
        Ok(())
    }

    /// The parameter tensors, sorted by name.
    pub(crate) fn param_defs(&self) -> Vec<ParamDef> {
        let dims = self.dims();
        let mut defs = Vec::with_capacity(2 * self.num_layers());
        for (l, pair) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            defs.push(ParamDef {
                name: format!("fc{l}.weight"),
                shape: vec![fan_out, fan_in],
                fan_in,
            });
            defs.push(ParamDef {
                name: format!("fc{l}.bias"),
                shape: vec![fan_out],
                fan_in,
            });
        }
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// The flat layout of this model's parameters: entries sorted by name, contiguous offsets.
    pub fn layout(&self) -> ParamLayout {
        let mut offset = 0;
        let entries = self
            .param_defs()
            .into_iter()
            .map(|d| {
                let len = d.shape.iter().product();
                let entry = ParamEntry {
                    name: d.name,
                    shape: d.shape,
                    offset,
                    len,
                };
                offset += len;
                entry
            })
            .collect();
        ParamLayout {
            entries,
            total: offset,
        }
    }

    /// Total number of parameters (`f32` elements of a flat vector); 101,770 for the default.
    pub fn param_count(&self) -> usize {
        self.dims()
            .windows(2)
            .map(|pair| pair[1] * pair[0] + pair[1])
            .sum()
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims = self.dims();
        let mut first = true;
        for d in dims {
            if !first {
                f.write_str("-")?;
            }
            write!(f, "{d}")?;
            first = false;
        }
        Ok(())
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    /// Parses `"784-128-10"`: at least two positive integers joined by `-`.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming the input if a part is not a positive integer or
    /// there are fewer than two parts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut dims = Vec::new();
        for part in s.split('-') {
            let d: usize = part.trim().parse().map_err(|_| {
                ModelError::InvalidSpec(format!("{s:?}: {part:?} is not a layer width"))
            })?;
            dims.push(d);
        }
        let (Some(&input), Some(&classes)) = (dims.first(), dims.last()) else {
            return Err(ModelError::InvalidSpec(format!("{s:?}: empty")));
        };
        if dims.len() < 2 {
            return Err(ModelError::InvalidSpec(format!(
                "{s:?}: need at least input and classes, e.g. 784-10"
            )));
        }
        let spec = ModelSpec {
            input,
            hidden: dims[1..dims.len() - 1].to_vec(),
            classes,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Deterministic initial parameters for `spec` from `seed`, as a flat vector in layout order.
///
/// Distribution: PyTorch's `nn.Linear` default (`reset_parameters` in
/// `torch/nn/modules/linear.py`): weights Kaiming-uniform with `a = sqrt(5)`, which is uniform in
/// `±1/sqrt(fan_in)`, and biases uniform in `±1/sqrt(fan_in)`, `fan_in` the layer's input width.
///
/// Determinism: a `ChaCha8Rng` seeded with `seed_from_u64(seed)` (portable by rand_core's
/// guarantee) draws tensors in layout order, elements in row-major order; each element uses the
/// top 24 bits of one `next_u32` as `u in [0, 1)` and is `bound * (2u - 1)` in `f32`. These are
/// exact or correctly rounded IEEE operations, so the same seed gives the same bits on every
/// machine, independent of rand's distribution code.
pub fn init_params(spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(spec.param_count());
    for def in spec.param_defs() {
        let n: usize = def.shape.iter().product();
        let bound = (1.0 / (def.fan_in.max(1) as f64).sqrt()) as f32;
        for _ in 0..n {
            let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
            out.push(bound * (2.0 * u - 1.0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_layout_has_101770_params_sorted_by_name() {
        let spec = ModelSpec::default();
        let layout = spec.layout();
        assert_eq!(layout.total, 101_770);
        assert_eq!(spec.param_count(), 101_770);
        let names: Vec<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["fc0.bias", "fc0.weight", "fc1.bias", "fc1.weight"]);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            layout.get("fc0.weight").map(|e| e.shape.clone()),
            Some(vec![128, 784])
        );
        assert_eq!(
            layout.get("fc1.bias").map(|e| e.offset),
            Some(128 + 100_352)
        );
    }

    #[test]
    fn spec_parses_and_displays() -> Result<(), ModelError> {
        let spec: ModelSpec = "784-128-10".parse()?;
        assert_eq!(spec, ModelSpec::default());
        assert_eq!(spec.to_string(), "784-128-10");
        let flat: ModelSpec = "20-4".parse()?;
        assert!(flat.hidden.is_empty());
        for bad in [
            "",
            "784",
            "784-x-10",
            "784-0-10",
            "-",
            "784--10",
            "784-128-10-",
        ] {
            assert!(bad.parse::<ModelSpec>().is_err(), "{bad:?} parsed");
        }
        Ok(())
    }

    #[test]
    fn init_params_is_deterministic_and_seed_dependent() {
        let spec = ModelSpec::default();
        let a = init_params(&spec, 7);
        let b = init_params(&spec, 7);
        let c = init_params(&spec, 8);
        assert_eq!(a.len(), 101_770);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Bounds: fc0 has fan_in 784, fc1 has fan_in 128.
        let layout = spec.layout();
        for e in &layout.entries {
            let fan_in = if e.name.starts_with("fc0") {
                784.0
            } else {
                128.0
            };
            let bound = 1.0 / f32::sqrt(fan_in);
            assert!(a[e.range()].iter().all(|x| x.abs() <= bound), "{}", e.name);
        }
        // Roughly uniform: the mean of fc0.weight is near 0, its variance near bound^2 / 3.
        let Some(w) = layout.get("fc0.weight") else {
            panic!("fc0.weight missing");
        };
        let xs = &a[w.range()];
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((var * 3.0 * 784.0 - 1.0).abs() < 0.02, "var {var}");
    }

    proptest! {
        #[test]
        fn layout_is_contiguous_and_round_trips_display(
            input in 1usize..50, hidden in proptest::collection::vec(1usize..40, 0..12), classes in 1usize..20
        ) {
            let spec = ModelSpec { input, hidden, classes };
            let layout = spec.layout();
            let mut offset = 0;
            for w in layout.entries.windows(2) {
                prop_assert!(w[0].name < w[1].name);
            }
            for e in &layout.entries {
                prop_assert_eq!(e.offset, offset);
                prop_assert_eq!(e.len, e.shape.iter().product::<usize>());
                offset += e.len;
            }
            prop_assert_eq!(layout.total, offset);
            prop_assert_eq!(spec.param_count(), offset);
            prop_assert_eq!(init_params(&spec, 1).len(), offset);
            let parsed: ModelSpec = spec.to_string().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(parsed, spec);
        }
    }
}
