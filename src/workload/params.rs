//! From a workload's model to rumor's flat parameters and back: the layout (every tensor the
//! model creates, sorted by name), seeded initial values, and a model built from flat values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{BoxedModel, Metrics, Workload};
use crate::model::{ModelError, ParamEntry, ParamLayout};

/// A `VarBuilder` backend that creates every tensor a model asks for from a seed, honouring the
/// `Init` hint it was asked with (constant, normal, uniform, Kaiming normal or uniform, as
/// candle defines them), and remembers what it made.
///
/// Each tensor's values come from a ChaCha8 stream seeded by the run seed and the tensor's
/// name, so they do not depend on the order in which the model creates its tensors, and every
/// peer started with the same seed builds the same initial model. A name asked for twice (tied
/// weights) gets the tensor made the first time. Clones share what was made, so one clone can go
/// into a `VarBuilder` and another read the tensors afterwards.
#[derive(Clone)]
pub struct SeededInit {
    seed: u64,
    made: Arc<Mutex<Vec<(String, Tensor)>>>,
}

impl SeededInit {
    /// A backend drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            made: Arc::default(),
        }
    }

    /// The tensors made so far, as `(name, tensor)`, in the order they were made.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.lock().clone()
    }

    fn values(&self, name: &str, shape: &Shape, init: Init) -> candle_core::Result<Vec<f32>> {
        let n = shape.elem_count();
        // FNV-1a of the name, mixed into the seed: a stream per tensor.
        let name_hash = crate::model::checkpoint::fnv1a64(name.as_bytes());
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ name_hash.rotate_left(17));
        let normal =
            |rng: &mut ChaCha8Rng, mean: f64, stdev: f64| -> candle_core::Result<Vec<f32>> {
                let dist = Normal::new(mean, stdev.max(0.0)).map_err(|e| {
                    candle_core::Error::Msg(format!("init of {name}: normal({mean}, {stdev}): {e}"))
                })?;
                Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
            };
        let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(lo..=up) as f32).collect()
        };
        match init {
            Init::Const(c) => Ok(vec![c as f32; n]),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Uniform { lo, up } if lo <= up => Ok(uniform(&mut rng, lo, up)),
            Init::Uniform { lo, up } => Err(candle_core::Error::Msg(format!(
                "init of {name}: uniform bounds {lo} > {up}"
            ))),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = fan.for_shape(shape).max(1) as f64;
                let stdev = non_linearity.gain() / fan.sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, stdev),
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * stdev;
                        Ok(uniform(&mut rng, -bound, bound))
                    }
                }
            }
        }
    }
}

impl SimpleBackend for SeededInit {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some((_, t)) = self.lock().iter().find(|(n, _)| n == name) {
            if t.shape() != &shape {
                return Err(candle_core::Error::Msg(format!(
                    "parameter {name} asked for as {shape:?} and as {:?}",
                    t.shape()
                )));
            }
            return t.to_dtype(dtype)?.to_device(dev);
        }
        let values = self.values(name, &shape, init)?;
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
        self.lock().push((name.to_string(), t.clone()));
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.lock().iter().find(|(n, _)| n == name) {
            Some((_, t)) => t.to_dtype(dtype)?.to_device(dev),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().iter().any(|(n, _)| n == name)
    }
}

impl SeededInit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Tensor)>> {
        self.made
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Builds `workload`'s model once on the CPU with [`SeededInit`] and returns its parameter
/// layout (every tensor it created, sorted by name, contiguous) and the seeded initial values,
/// flat in that layout's order.
///
/// # Errors
/// [`ModelError::Candle`] if the model cannot be built; [`ModelError::InvalidSpec`] if it
/// creates no parameters.
pub fn describe_params(
    workload: &dyn Workload,
    seed: u64,
) -> Result<(ParamLayout, Vec<f32>), ModelError> {
    let backend = SeededInit::new(seed);
    let vb = VarBuilder::from_backend(Box::new(backend.clone()), DType::F32, Device::Cpu);
    drop(workload.build(vb)?);
    let mut tensors = backend.tensors();
    if tensors.is_empty() {
        return Err(ModelError::InvalidSpec(format!(
            "{}: the model has no parameters",
            workload.describe()
        )));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(tensors.len());
    let mut flat = Vec::new();
    for (name, t) in tensors {
        let shape = t.dims().to_vec();
        let len = t.elem_count();
        entries.push(ParamEntry {
            name,
            shape,
            offset: flat.len(),
            len,
        });
        flat.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    let total = flat.len();
    Ok((ParamLayout { entries, total }, flat))
}

/// Builds `workload`'s model on `device` with the parameters `flat` (in `layout` order), for
/// evaluation or sampling: no gradients are recorded for them.
///
/// # Errors
/// [`ModelError::LengthMismatch`] if `flat.len() != layout.total`; [`ModelError::Candle`] if the
/// model asks for a tensor the layout lacks or with another shape.
pub fn model_from_flat(
    workload: &dyn Workload,
    layout: &ParamLayout,
    flat: &[f32],
    device: &Device,
) -> Result<BoxedModel, ModelError> {
    layout.check_len("params", flat)?;
    let mut tensors = HashMap::with_capacity(layout.entries.len());
    for e in &layout.entries {
        let t = Tensor::from_slice(&flat[e.range()], e.shape.as_slice(), device)?;
        tensors.insert(e.name.clone(), t);
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(workload.build(vb)?)
}

/// The metrics of `workload`'s model with flat parameters `params` (layout `layout`) on the
/// workload's held-out data, on the CPU.
///
/// # Errors
/// [`ModelError::LengthMismatch`] for `params` of the wrong length; [`ModelError::Candle`] if
/// the model cannot be built or evaluation fails.
pub fn evaluate(
    workload: &dyn Workload,
    layout: &ParamLayout,
    params: &[f32],
) -> Result<Metrics, ModelError> {
    let device = Device::Cpu;
    let model = model_from_flat(workload, layout, params, &device)?;
    Ok(workload.evaluate(model.as_ref(), &device)?)
}
