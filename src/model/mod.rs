//! Models: the built-in candle models, flat parameter vectors, delta arithmetic and checkpoints.
//!
//! This module owns everything the merge (`docs/ALGORITHM.md`) needs from the model, and nothing of the
//! network. Parameters cross its boundary only as *flat* `f32` vectors in the order of a
//! [`ParamLayout`] (sorted by parameter name), so `base`, `work` and every delta are plain slices
//! that all peers of one model index the same way. The trainer and the training loop live in
//! [`crate::train`]; what a peer trains (model + data) is a [`crate::workload::Workload`].
//!
//! - [`spec`]: [`ModelSpec`], the MLP's widths (`784-128-10` by default, 101,770
//!   parameters), and [`ParamLayout`].
//! - [`mlp`]: the [`Mlp`].
//! - [`card`]: [`ModelCard`], what a checkpoint records to rebuild its model.
//! - [`cnn`]: the LeNet-5-style [`Cnn`] ([`CnnConfig`], 61,706 parameters by default).
//! - [`gpt`]: the character-level decoder-only transformer [`Gpt`] ([`GptConfig`], about 0.8 M
//!   parameters by default) and seeded sampling with [`generate`].
//! - [`flat`]: [`axpy`], [`scaled_difference`], [`l2_norm`], [`all_finite`],
//!   [`consensus_distance`].
//! - [`Quantizer`], [`CompactValues`], [`Compression`]: re-exported from `rumor_proto::compact`
//!   (delta quantization with error feedback and the lossless compact wire form), which the wire
//!   codec needs without candle.
//! - [`checkpoint`]: [`save_checkpoint`] / [`load_checkpoint`] (safetensors + JSON sidecar).
//!
//! Everything runs on candle's CPU device. Call [`set_compute_threads`] once at process start.

pub mod card;
pub mod checkpoint;
pub mod cnn;
mod error;
pub mod flat;
pub mod gpt;
pub mod mlp;
pub mod spec;

pub use card::ModelCard;
pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use cnn::{Cnn, CnnConfig};
pub use error::ModelError;
pub use flat::{all_finite, axpy, consensus_distance, l2_norm, scaled_difference};
pub use gpt::{generate, Gpt, GptConfig};
pub use mlp::Mlp;
pub use rumor_proto::compact::{CompactValues, Compression, Quantizer};
pub use spec::{ModelSpec, ParamEntry, ParamLayout};

/// Limits candle's CPU compute threads for this process to `n` (at least 1).
///
/// How candle 0.11 picks its thread count (candle-core `utils.rs`, `cpu_backend/mod.rs`):
///
/// - Matrix products call `utils::get_num_threads()`, which reads `RAYON_NUM_THREADS` on *every*
///   call (default: the number of physical cores) and hands gemm `Parallelism::None` when it is 1,
///   `Parallelism::Rayon(n)` otherwise.
/// - Large element-wise ops (≥ 65,536 elements, e.g. AdamW on the 784×128 weight) run on a
///   barrier pool built *once*, at first use, with `CANDLE_NUM_THREADS` (falling back to
///   `RAYON_NUM_THREADS`) threads; candle's private rayon pool (`Device::with_context`) and
///   rayon's global pool are likewise sized once from `RAYON_NUM_THREADS`.
///
/// So this sets both `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` with `std::env::set_var`. It
/// must run before the first tensor operation in the process to size the pools; later calls
/// still change the matmul parallelism but not the pool sizes. `set_var` is a safe function in
/// edition 2021, but it races with C code reading the environment on other threads: call it at
/// the start of `main`, before spawning threads. (Rust's own `std::env` readers, which candle
/// uses, are synchronised.) One thread per peer, the default, trains as fast as two on a
/// 2-core machine.
pub fn set_compute_threads(n: usize) {
    let n = n.max(1).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &n);
    std::env::set_var("CANDLE_NUM_THREADS", &n);
}

/// The number of threads candle's matrix products use now (candle's `get_num_threads`).
pub fn compute_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Test support: asserts that every variable of `varmap` has a finite, non-zero gradient in
/// `grads` (candle's fused softmax, layer norm and rope record none), naming the one that has
/// not; returns how many variables there are.
#[cfg(test)]
pub(crate) fn assert_every_var_has_a_gradient(
    varmap: &candle_nn::VarMap,
    grads: &candle_core::backprop::GradStore,
) -> Result<usize, ModelError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::MissingParameter("poisoned varmap".into()))?;
    for (name, var) in vars.iter() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient recorded"));
        assert_eq!(grad.dims(), var.dims(), "{name}");
        let max = grad.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max > 0.0, "{name}: gradient is all zeros");
        assert!(max.is_finite(), "{name}: gradient {max}");
    }
    Ok(vars.len())
}

/// Test support: times `steps` AdamW steps (after one warm-up step) of `loss` over the
/// variables of `varmap`; returns the mean (forward + loss, backward, update) in ms per step.
#[cfg(test)]
pub(crate) fn time_steps(
    varmap: &candle_nn::VarMap,
    steps: u32,
    loss: impl Fn() -> Result<candle_core::Tensor, ModelError>,
) -> Result<(f64, f64, f64), ModelError> {
    use candle_nn::Optimizer;
    use std::time::Instant;
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW::default())?;
    let (mut fwd, mut bwd, mut upd) = (0.0, 0.0, 0.0);
    for i in 0..=steps {
        let t = Instant::now();
        let l = loss()?;
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = l.backward()?;
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        opt.step(&grads)?;
        // The first step is a warm-up.
        if i > 0 {
            fwd += f;
            bwd += b;
            upd += t.elapsed().as_secs_f64();
        }
    }
    let ms = |s: f64| s * 1e3 / f64::from(steps.max(1));
    Ok((ms(fwd), ms(bwd), ms(upd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_compute_threads_reaches_candle() {
        // Every test in this crate that computes sets 1, so setting 1 here cannot disturb them.
        set_compute_threads(0);
        assert_eq!(compute_threads(), 1);
        set_compute_threads(1);
        assert_eq!(compute_threads(), 1);
    }
}
