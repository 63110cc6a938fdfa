//! A character-level decoder-only transformer (GPT), built from a `VarBuilder`, and seeded
//! sampling from it.
//!
//! The architecture is GPT-2's (Radford et al., "Language Models are Unsupervised Multitask
//! Learners", 2019) as written in Karpathy's nanoGPT (`model.py`): learned token and position
//! embeddings, `layers` pre-LayerNorm blocks
//!
//! ```text
//! x = x + attn.proj(causal_self_attention(attn.qkv(ln1(x))))
//! x = x + mlp.proj(gelu(mlp.fc(ln2(x))))
//! ```
//!
//! then a final LayerNorm `ln_f` and an output head `head` to `vocab` logits. The head has no
//! bias and is not tied to the token embedding (nanoGPT ties them and has `bias=False`; untied
//! keeps every parameter a separate tensor with its own name and gradient). The default size,
//! [`GptConfig::with_vocab`], is nanoGPT's CPU configuration for Shakespeare characters (4 layers,
//! 4 heads, width 128, context 64): 822,016 parameters for a vocabulary of 80.
//!
//! Every operation is one candle can differentiate. candle 0.11's fused kernels record no
//! backward pass (`candle_nn::ops::softmax_last_dim`, the fast paths of `LayerNorm` / `RmsNorm`,
//! the rope kernels: candle issues #3569, #2168, #3568), so the softmax and the layer norm are
//! written here from basic tensor ops, and the causal mask is added to the attention scores.
//! GELU is candle's `gelu` (the tanh approximation, as GPT-2), whose backward pass candle-core's
//! `backprop.rs` implements.
//!
//! Parameters (names as stored in safetensors; shapes `[out, in]` for linear weights, as PyTorch):
//!
//! | name | shape | init |
//! |---|---|---|
//! | `tok_emb.weight` | `[vocab, width]` | normal(0, 0.02) |
//! | `pos_emb.weight` | `[context, width]` | normal(0, 0.02) |
//! | `blocks.{i}.ln1.weight`, `.ln2.weight` | `[width]` | 1 |
//! | `blocks.{i}.ln1.bias`, `.ln2.bias` | `[width]` | 0 |
//! | `blocks.{i}.attn.qkv.weight` | `[3·width, width]` | normal(0, 0.02) |
//! | `blocks.{i}.attn.qkv.bias` | `[3·width]` | 0 |
//! | `blocks.{i}.attn.proj.weight` | `[width, width]` | normal(0, 0.02/√(2·layers)) |
//! | `blocks.{i}.attn.proj.bias` | `[width]` | 0 |
//! | `blocks.{i}.mlp.fc.weight` | `[4·width, width]` | normal(0, 0.02) |
//! | `blocks.{i}.mlp.fc.bias` | `[4·width]` | 0 |
//! | `blocks.{i}.mlp.proj.weight` | `[width, 4·width]` | normal(0, 0.02/√(2·layers)) |
//! | `blocks.{i}.mlp.proj.bias` | `[width]` | 0 |
//! | `ln_f.weight` / `ln_f.bias` | `[width]` | 1 / 0 |
//! | `head.weight` | `[vocab, width]` | normal(0, 0.02) |
//!
//! The inits are GPT-2's as in nanoGPT's `_init_weights`, the residual output projections scaled
//! by 1/√(2·layers); each is the `Init` hint given to the `VarBuilder`. The `qkv` output is laid
//! out as nanoGPT's `c_attn`: rows `[0, width)` are the queries, then the keys, then the values,
//! and within each the heads are consecutive blocks of `width / heads`.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// Default number of transformer blocks (nanoGPT's CPU configuration).
pub const DEFAULT_LAYERS: usize = 4;
/// Default number of attention heads per block.
pub const DEFAULT_HEADS: usize = 4;
/// Default embedding width (channels per position).
pub const DEFAULT_WIDTH: usize = 128;
/// Default context length in tokens.
pub const DEFAULT_CONTEXT: usize = 64;
/// The MLP's hidden width as a multiple of the embedding width.
pub const MLP_RATIO: usize = 4;
/// The `eps` added to the variance in every layer norm (PyTorch's default).
pub const LN_EPS: f64 = 1e-5;
/// Standard deviation of GPT-2's normal initialisation.
pub const INIT_STD: f64 = 0.02;
/// What the causal mask adds to the attention score of a future position: after the
/// subtraction of the row maximum, `exp` of it is exactly 0 in `f32`, so neither a future token's
/// value nor its gradient leaks into the past.
const MASKED: f32 = -1e9;

/// The shape of a [`Gpt`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size: token ids are `0..vocab`.
    pub vocab: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; divides `width`.
    pub heads: usize,
    /// Embedding width (channels per position).
    pub width: usize,
    /// Context length: the most tokens one forward pass sees (rows of `pos_emb`).
    pub context: usize,
}

impl GptConfig {
    /// The default size (nanoGPT's CPU configuration: [`DEFAULT_LAYERS`] layers,
    /// [`DEFAULT_HEADS`] heads, width [`DEFAULT_WIDTH`], context [`DEFAULT_CONTEXT`]) for a
    /// vocabulary of `vocab` tokens. 822,016 parameters for `vocab = 80`.
    pub fn with_vocab(vocab: usize) -> Self {
        Self {
            vocab,
            layers: DEFAULT_LAYERS,
            heads: DEFAULT_HEADS,
            width: DEFAULT_WIDTH,
            context: DEFAULT_CONTEXT,
        }
    }

    /// Checks that every size is at least 1 and that `heads` divides `width`.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming the offending field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let sizes = [
            ("vocab", self.vocab),
            ("layers", self.layers),
            ("heads", self.heads),
            ("width", self.width),
            ("context", self.context),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(ModelError::InvalidSpec(format!(
                "gpt: {name} must be at least 1"
            )));
        }
        if self.width % self.heads != 0 {
            return Err(ModelError::InvalidSpec(format!(
                "gpt: width {} is not divisible by heads {}",
                self.width, self.heads
            )));
        }
        if u32::try_from(self.vocab).is_err() {
            return Err(ModelError::InvalidSpec(format!(
                "gpt: vocab {} does not fit u32 token ids",
                self.vocab
            )));
        }
        Ok(())
    }

    /// Channels per attention head: `width / heads`.
    pub fn head_dim(&self) -> usize {
        self.width / self.heads.max(1)
    }

    /// The number of scalar parameters: embeddings `(vocab + context)·width`, per block
    /// `12·width² + 13·width` (two layer norms, `qkv`, `attn.proj`, `mlp.fc`, `mlp.proj`), the
    /// final layer norm `2·width` and the bias-free head `vocab·width`.
    pub fn param_count(&self) -> usize {
        let w = self.width;
        let hidden = MLP_RATIO * w;
        let ln = 2 * w;
        let block =
            ln + (3 * w * w + 3 * w) + (w * w + w) + ln + (hidden * w + hidden) + (w * hidden + w);
        (self.vocab + self.context) * w + self.layers * block + ln + self.vocab * w
    }
}

/// A linear layer `y = x Wᵀ + b` over the last dimension of a tensor of any rank ≥ 2, computed
/// as one 2-D matrix product on the rows flattened together.
#[derive(Clone, Debug)]
struct Dense {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out]`, if any.
    bias: Option<Tensor>,
}

impl Dense {
    /// Creates `{vb}.weight` `[out, in]` with `init` and `{vb}.bias` `[out]` (zeros) if `bias`.
    fn new(
        vb: &VarBuilder,
        d_in: usize,
        d_out: usize,
        init: Init,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = vb.get_with_hints((d_out, d_in), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims();
        let d_in = xs.dim(D::Minus1)?;
        let rows = xs.elem_count() / d_in.max(1);
        let ys = xs.reshape((rows, d_in))?.matmul(&self.weight.t()?)?;
        let ys = match &self.bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        };
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = self.weight.dim(0)?;
        }
        ys.reshape(out)
    }
}

/// Layer normalisation over the last dimension (Ba, Kiros and Hinton, "Layer Normalization",
/// 2016), written with basic differentiable ops: `(x − mean) / √(var + eps) · weight + bias`,
/// the variance biased (divided by `n`), as PyTorch's `LayerNorm`.
#[derive(Clone, Debug)]
struct LayerNorm {
    /// `[width]`, initialised to 1.
    weight: Tensor,
    /// `[width]`, initialised to 0.
    bias: Tensor,
}

impl LayerNorm {
    fn new(vb: &VarBuilder, width: usize) -> Result<Self, ModelError> {
        Ok(Self {
            weight: vb.get_with_hints(width, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(width, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension from basic differentiable ops: `exp(x − max) / Σ exp(x − max)`.
/// (The maximum is not detached: its gradient contributions cancel, as the softmax does not
/// depend on it.)
fn softmax_last_dim(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?;
    let exp = xs.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

/// Causal multi-head self-attention with a fused `qkv` projection and an output projection.
#[derive(Clone, Debug)]
struct Attention {
    qkv: Dense,
    proj: Dense,
    heads: usize,
}

impl Attention {
    /// `xs` `[b, t, width]`, `mask` `[t, t]` (0 on and below the diagonal, [`MASKED`] above) →
    /// `[b, t, width]`.
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, width) = xs.dims3()?;
        let h = self.heads;
        let d = width / h;
        let qkv = self.qkv.forward(xs)?.reshape((b, t, 3, h, d))?;
        // [b, t, h, d] → [b, h, t, d] for each of q, k, v.
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?; // [b, h, t, t]
        let weights = softmax_last_dim(&scores.broadcast_add(mask)?)?;
        let ys = weights.matmul(&v)?; // [b, h, t, d]
        let ys = ys.transpose(1, 2)?.reshape((b, t, width))?;
        self.proj.forward(&ys)
    }
}

/// One pre-LayerNorm transformer block.
#[derive(Clone, Debug)]
struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc: Dense,
    proj: Dense,
}

impl Block {
    fn new(config: &GptConfig, vb: &VarBuilder) -> Result<Self, ModelError> {
        let w = config.width;
        let normal = Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let residual = Init::Randn {
            mean: 0.0,
            stdev: INIT_STD / ((2 * config.layers) as f64).sqrt(),
        };
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            ln1: LayerNorm::new(&vb.pp("ln1"), w)?,
            attn: Attention {
                qkv: Dense::new(&attn.pp("qkv"), w, 3 * w, normal, true)?,
                proj: Dense::new(&attn.pp("proj"), w, w, residual, true)?,
                heads: config.heads,
            },
            ln2: LayerNorm::new(&vb.pp("ln2"), w)?,
            fc: Dense::new(&mlp.pp("fc"), w, MLP_RATIO * w, normal, true)?,
            proj: Dense::new(&mlp.pp("proj"), MLP_RATIO * w, w, residual, true)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.ln1.forward(xs)?, mask)?)?;
        let hidden = self.fc.forward(&self.ln2.forward(&xs)?)?.gelu()?;
        xs + self.proj.forward(&hidden)?
    }
}

/// The decoder-only transformer (see the module documentation for the layers, parameter names
/// and initialisation).
///
/// [`Module::forward`]: token ids `[b, t]` `u32` (each `< vocab`), `1 ≤ t ≤ context` → logits
/// `[b, t, vocab]` `f32`; position `i`'s logits predict token `i + 1` and depend only on tokens
/// `0..=i`. An id `≥ vocab` or `t` out of range is a candle error.
#[derive(Clone, Debug)]
pub struct Gpt {
    config: GptConfig,
    tok_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Dense,
    /// `[context, context]` `f32`: 0 on and below the diagonal, [`MASKED`] above; not a
    /// parameter.
    mask: Tensor,
}

impl Gpt {
    /// Builds the model from `vb`, creating (or fetching) every parameter under the builder's
    /// prefix with its GPT-2 `Init` hint. The builder's device is the model's.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] if `config` does not validate; [`ModelError::Candle`] if the
    /// builder cannot provide a tensor (e.g. a stored one of another shape).
    pub fn new(config: &GptConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        config.validate()?;
        let normal = Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let w = config.width;
        let tok_emb = vb
            .pp("tok_emb")
            .get_with_hints((config.vocab, w), "weight", normal)?;
        let pos_emb = vb
            .pp("pos_emb")
            .get_with_hints((config.context, w), "weight", normal)?;
        let blocks = (0..config.layers)
            .map(|i| Block::new(config, &vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let ln_f = LayerNorm::new(&vb.pp("ln_f"), w)?;
        let head = Dense::new(&vb.pp("head"), w, config.vocab, normal, false)?;
        let n = config.context;
        let mask: Vec<f32> = (0..n * n)
            .map(|k| if k % n > k / n { MASKED } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (n, n), vb.device())?;
        Ok(Self {
            config: config.clone(),
            tok_emb,
            pos_emb,
            blocks,
            ln_f,
            head,
            mask,
        })
    }

    /// The config this model was built for.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }
}

impl Module for Gpt {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 || t > self.config.context {
            candle_core::bail!(
                "gpt: {t} tokens per row; a forward pass takes 1 to {} (the context)",
                self.config.context
            );
        }
        let w = self.config.width;
        let tok = self
            .tok_emb
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, w))?;
        let mut xs = tok.broadcast_add(&self.pos_emb.narrow(0, 0, t)?)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &mask)?;
        }
        self.head.forward(&self.ln_f.forward(&xs)?)
    }
}

/// Samples `tokens` new tokens from `model` after `prompt`, one at a time, and returns them (the
/// prompt not included).
///
/// Each step runs the model on the last `config.context` tokens of prompt-plus-generated-so-far
/// (no key/value cache: every step is a full forward pass of the window) and draws the next token
/// from the last position's logits: with `temperature = 0` the arg-max (the lowest id among
/// ties), otherwise from `softmax(logits / temperature)` using a ChaCha8 generator seeded with
/// `seed`, so the same model, prompt, temperature and seed give the same tokens. The prompt must
/// hold at least one token: the model has no start-of-text token to begin from.
///
/// # Errors
/// [`ModelError::InvalidSpec`] if `config` does not validate or is not the model's config;
/// [`ModelError::InvalidHyperparameter`] for a negative or non-finite `temperature`;
/// [`ModelError::Empty`] for an empty prompt; [`ModelError::TokenOutOfRange`] for a prompt token
/// `≥ vocab`; [`ModelError::NonFinite`] if the model's logits are NaN or infinite;
/// [`ModelError::Candle`] on a tensor error.
pub fn generate(
    model: &Gpt,
    config: &GptConfig,
    prompt: &[u32],
    tokens: usize,
    temperature: f64,
    seed: u64,
) -> Result<Vec<u32>, ModelError> {
    config.validate()?;
    if config != model.config() {
        return Err(ModelError::InvalidSpec(format!(
            "generate: config {config:?} is not the model's {:?}",
            model.config()
        )));
    }
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ModelError::InvalidHyperparameter {
            name: "temperature",
            value: temperature,
        });
    }
    if prompt.is_empty() {
        return Err(ModelError::Empty("generate: the prompt has no tokens"));
    }
    if let Some(&token) = prompt.iter().find(|&&t| t as usize >= config.vocab) {
        return Err(ModelError::TokenOutOfRange {
            token,
            vocab: config.vocab,
        });
    }
    let device = model.tok_emb.device();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seq = prompt.to_vec();
    let mut out = Vec::with_capacity(tokens);
    for _ in 0..tokens {
        let window = &seq[seq.len().saturating_sub(config.context)..];
        let ids = Tensor::from_slice(window, (1, window.len()), device)?;
        let logits = model
            .forward(&ids)?
            .narrow(1, window.len() - 1, 1)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        let next = pick(&logits, temperature, &mut rng)?;
        seq.push(next);
        out.push(next);
    }
    Ok(out)
}

/// One token from `logits` (see [`generate`]): the first arg-max for `temperature = 0`, else a
/// draw from `softmax(logits / temperature)`, computed in `f64`.
fn pick(logits: &[f32], temperature: f64, rng: &mut ChaCha8Rng) -> Result<u32, ModelError> {
    if logits.is_empty() || logits.iter().any(|l| !l.is_finite()) {
        return Err(ModelError::NonFinite("the logits of generate"));
    }
    let (arg_max, max) =
        logits
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(i, m), (j, &l)| {
                if f64::from(l) > m {
                    (j, f64::from(l))
                } else {
                    (i, m)
                }
            });
    let index = if temperature == 0.0 {
        arg_max
    } else {
        // The maximum's weight is exp(0) = 1, so `total ≥ 1` and the draw is well defined even
        // when every other weight underflows to 0.
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((f64::from(l) - max) / temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let target = rng.gen::<f64>() * total;
        let mut acc = 0.0;
        weights
            .iter()
            .position(|&w| {
                acc += w;
                target < acc
            })
            // Rounding can leave `target` at `acc`; then the last token with weight wins.
            .or_else(|| weights.iter().rposition(|&w| w > 0.0))
            .unwrap_or(arg_max)
    };
    u32::try_from(index).map_err(|_| ModelError::TokenOutOfRange {
        token: u32::MAX,
        vocab: logits.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::set_compute_threads;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
    use std::time::Instant;

    fn tiny(vocab: usize) -> GptConfig {
        GptConfig {
            vocab,
            layers: 2,
            heads: 2,
            width: 16,
            context: 8,
        }
    }

    fn build(config: &GptConfig) -> Result<(VarMap, Gpt), ModelError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Gpt::new(config, vb)?;
        Ok((varmap, model))
    }

    fn random_ids(config: &GptConfig, b: usize, t: usize, seed: u64) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..b * t)
            .map(|_| rng.gen_range(0..config.vocab as u32))
            .collect()
    }

    fn ids_tensor(ids: &[u32], b: usize, t: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_slice(ids, (b, t), &Device::Cpu)?)
    }

    /// Mean cross-entropy of predicting `targets` `[b, t]` from `logits` `[b, t, vocab]`.
    fn loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t, v) = logits.dims3()?;
        Ok(candle_nn::loss::cross_entropy(
            &logits.reshape((b * t, v))?,
            &targets.flatten_all()?,
        )?)
    }

    fn var_names(varmap: &VarMap) -> Result<Vec<String>, ModelError> {
        let mut names: Vec<String> = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::MissingParameter("poisoned varmap".into()))?
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    #[test]
    fn gpt_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Gpt>();
    }

    #[test]
    fn output_shapes() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = tiny(11);
        let (_, model) = build(&config)?;
        for t in [1, 5, config.context] {
            let ids = ids_tensor(&random_ids(&config, 3, t, 1), 3, t)?;
            let logits = model.forward(&ids)?;
            assert_eq!(logits.dims(), &[3, t, config.vocab]);
            assert_eq!(logits.dtype(), DType::F32);
        }
        let too_long = config.context + 1;
        let ids = ids_tensor(&random_ids(&config, 1, too_long, 1), 1, too_long)?;
        assert!(model.forward(&ids).is_err());
        Ok(())
    }

    #[test]
    fn validate_rejects_bad_configs() {
        assert!(GptConfig::with_vocab(80).validate().is_ok());
        let cases = [
            (
                GptConfig {
                    width: 130,
                    ..GptConfig::with_vocab(80)
                },
                "divisible",
            ),
            (
                GptConfig {
                    heads: 0,
                    ..GptConfig::with_vocab(80)
                },
                "heads",
            ),
            (GptConfig::with_vocab(0), "vocab"),
            (
                GptConfig {
                    context: 0,
                    ..GptConfig::with_vocab(80)
                },
                "context",
            ),
            (
                GptConfig {
                    layers: 0,
                    ..GptConfig::with_vocab(80)
                },
                "layers",
            ),
        ];
        for (config, word) in cases {
            match config.validate() {
                Err(ModelError::InvalidSpec(msg)) => assert!(msg.contains(word), "{msg}"),
                other => panic!("{config:?}: expected InvalidSpec, got {other:?}"),
            }
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        assert!(Gpt::new(&GptConfig::with_vocab(0), vb).is_err());
    }

    #[test]
    fn param_count_matches_the_created_parameters_and_names() -> Result<(), ModelError> {
        for config in [GptConfig::with_vocab(80), tiny(7)] {
            let (varmap, _) = build(&config)?;
            let created: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(created, config.param_count(), "{config:?}");
        }
        assert_eq!(GptConfig::with_vocab(80).param_count(), 822_016);
        println!(
            "default GPT, vocab 80: {} parameters",
            GptConfig::with_vocab(80).param_count()
        );
        let config = GptConfig {
            layers: 1,
            ..tiny(5)
        };
        let (varmap, _) = build(&config)?;
        let expected = [
            "blocks.0.attn.proj.bias",
            "blocks.0.attn.proj.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.0.attn.qkv.weight",
            "blocks.0.ln1.bias",
            "blocks.0.ln1.weight",
            "blocks.0.ln2.bias",
            "blocks.0.ln2.weight",
            "blocks.0.mlp.fc.bias",
            "blocks.0.mlp.fc.weight",
            "blocks.0.mlp.proj.bias",
            "blocks.0.mlp.proj.weight",
            "head.weight",
            "ln_f.bias",
            "ln_f.weight",
            "pos_emb.weight",
            "tok_emb.weight",
        ];
        assert_eq!(var_names(&varmap)?, expected);
        Ok(())
    }

    #[test]
    fn init_hints_are_gpt2s() -> Result<(), ModelError> {
        let config = GptConfig::with_vocab(80);
        let (varmap, _) = build(&config)?;
        let map = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::MissingParameter("poisoned varmap".into()))?;
        let stats = |name: &str| -> Result<(f32, f32), ModelError> {
            let t = map
                .get(name)
                .ok_or_else(|| ModelError::MissingParameter(name.into()))?
                .as_tensor()
                .flatten_all()?;
            let mean = t.mean_all()?.to_scalar::<f32>()?;
            let std = t.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
            Ok((mean, std))
        };
        let residual = 0.02 / (8f32).sqrt();
        for (name, mean, std) in [
            ("tok_emb.weight", 0.0, 0.02),
            ("blocks.1.attn.qkv.weight", 0.0, 0.02),
            ("blocks.1.attn.proj.weight", 0.0, residual),
            ("blocks.3.mlp.proj.weight", 0.0, residual),
            ("blocks.0.ln1.weight", 1.0, 1.0),
            ("blocks.0.mlp.fc.bias", 0.0, 0.0),
            ("ln_f.bias", 0.0, 0.0),
        ] {
            let (m, s) = stats(name)?;
            assert!((m - mean).abs() < 2e-3, "{name}: mean {m}, want {mean}");
            assert!((s - std).abs() <= 0.1 * std, "{name}: rms {s}, want {std}");
        }
        Ok(())
    }

    #[test]
    fn every_parameter_receives_a_nonzero_gradient() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = tiny(13);
        let (varmap, model) = build(&config)?;
        let (b, t) = (4, config.context);
        let ids = ids_tensor(&random_ids(&config, b, t, 2), b, t)?;
        let targets = ids_tensor(&random_ids(&config, b, t, 3), b, t)?;
        let grads = loss(&model.forward(&ids)?, &targets)?.backward()?;
        let vars = crate::model::assert_every_var_has_a_gradient(&varmap, &grads)?;
        assert_eq!(vars, 5 + 12 * config.layers);
        Ok(())
    }

    #[test]
    fn later_tokens_do_not_change_earlier_logits() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = tiny(10);
        let (_, model) = build(&config)?;
        let t = config.context;
        let a = random_ids(&config, 1, t, 4);
        for changed in [1, t / 2, t - 1] {
            let mut b = a.clone();
            b[changed] = (b[changed] + 1) % config.vocab as u32;
            let la = model.forward(&ids_tensor(&a, 1, t)?)?.squeeze(0)?;
            let lb = model.forward(&ids_tensor(&b, 1, t)?)?.squeeze(0)?;
            let diff = (la - lb)?.abs()?.max(D::Minus1)?.to_vec1::<f32>()?;
            for (pos, d) in diff.iter().enumerate() {
                if pos < changed {
                    assert!(*d < 1e-6, "token {changed} changed position {pos} by {d}");
                } else if pos == changed {
                    assert!(*d > 1e-6, "token {changed} did not change its own position");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn adamw_learns_a_repeated_pattern() -> Result<(), ModelError> {
        set_compute_threads(1);
        // After 1 and after 3 the next token depends on the one before (…0 1 2 …, …3 1 0 …), so
        // the model must attend back, not only learn bigrams.
        let pattern = [0u32, 1, 2, 3, 1, 0, 4, 3];
        let config = GptConfig {
            vocab: 5,
            layers: 2,
            heads: 2,
            width: 32,
            context: 16,
        };
        // The `VarMap` draws its initial values from candle's unseeded generator, so the loss
        // curve differs from run to run; the bounds leave room for that.
        let (varmap, model) = build(&config)?;
        let t = config.context;
        let b = pattern.len();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for offset in 0..b {
            xs.extend((0..t).map(|i| pattern[(offset + i) % b]));
            ys.extend((0..t).map(|i| pattern[(offset + i + 1) % b]));
        }
        let (xs, ys) = (ids_tensor(&xs, b, t)?, ids_tensor(&ys, b, t)?);
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        let mut losses = Vec::new();
        let t0 = Instant::now();
        for _ in 0..300 {
            let l = loss(&model.forward(&xs)?, &ys)?;
            opt.backward_step(&l)?;
            losses.push(l.to_scalar::<f32>()?);
        }
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        println!(
            "gpt repeated pattern: loss {first:.4} -> {last:.4} in 300 steps ({:.2} s)",
            t0.elapsed().as_secs_f64()
        );
        assert!(first > 1.3, "initial loss {first} (ln 5 = 1.61)");
        // Not 0: a window's first position sees one token, and after 1 or 3 that leaves two
        // equally likely successors (4 of the 128 targets cost ln 2 each: a floor of 0.022).
        assert!(last < 0.1, "loss {first} -> {last}");
        // Greedy generation continues the pattern.
        let out = generate(&model, &config, &pattern[..3], 10, 0.0, 0)?;
        let want: Vec<u32> = (3..13).map(|i| pattern[i % b]).collect();
        assert_eq!(out, want);
        Ok(())
    }

    #[test]
    fn generate_is_seeded_and_windowed() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = tiny(9);
        let (_, model) = build(&config)?;
        let prompt = random_ids(&config, 1, 3 * config.context + 2, 5);
        let a = generate(&model, &config, &prompt, 20, 1.0, 42)?;
        let b = generate(&model, &config, &prompt, 20, 1.0, 42)?;
        let c = generate(&model, &config, &prompt, 20, 1.0, 43)?;
        assert_eq!(a.len(), 20);
        assert!(a.iter().all(|&t| (t as usize) < config.vocab));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Only the last `context` tokens of the prompt matter.
        let tail = &prompt[prompt.len() - config.context..];
        assert_eq!(generate(&model, &config, tail, 20, 1.0, 42)?, a);
        // A very hot sampler and a greedy one over the same window differ; greedy is seed-free.
        let g1 = generate(&model, &config, &prompt[..2], 12, 0.0, 1)?;
        let g2 = generate(&model, &config, &prompt[..2], 12, 0.0, 2)?;
        assert_eq!(g1, g2);
        assert_eq!(
            generate(&model, &config, &prompt, 0, 1.0, 0)?,
            Vec::<u32>::new()
        );
        // Errors.
        assert!(matches!(
            generate(&model, &config, &[], 5, 1.0, 0),
            Err(ModelError::Empty(_))
        ));
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                generate(&model, &config, &prompt, 5, bad, 0),
                Err(ModelError::InvalidHyperparameter {
                    name: "temperature",
                    ..
                })
            ));
        }
        assert!(matches!(
            generate(&model, &config, &[1, 9], 5, 1.0, 0),
            Err(ModelError::TokenOutOfRange { token: 9, vocab: 9 })
        ));
        assert!(matches!(
            generate(&model, &tiny(10), &prompt, 5, 1.0, 0),
            Err(ModelError::InvalidSpec(_))
        ));
        Ok(())
    }

    #[test]
    fn pick_is_argmax_at_zero_temperature_and_follows_the_softmax() -> Result<(), ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(pick(&[0.0, 3.0, 3.0, -1.0], 0.0, &mut rng)?, 1);
        assert!(matches!(
            pick(&[0.0, f32::NAN], 1.0, &mut rng),
            Err(ModelError::NonFinite(_))
        ));
        // Logits ln 1, ln 3 at temperature 1: token 1 about 3/4 of the time.
        let logits = [0.0, 3f32.ln()];
        let n = 20_000;
        let ones = (0..n)
            .map(|_| pick(&logits, 1.0, &mut rng))
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .filter(|&&t| t == 1)
            .count();
        let share = ones as f64 / f64::from(n);
        assert!((share - 0.75).abs() < 0.02, "share {share}");
        // A tiny temperature is (almost) greedy.
        assert_eq!(pick(&[0.0, 0.1, 0.05], 1e-6, &mut rng)?, 1);
        Ok(())
    }

    /// Not a timed assertion: prints the time of one training step (forward, backward, AdamW)
    /// of the default GPT (vocab 80) at batch 32 × context 64 on one thread. Run with
    /// `cargo test --lib model::gpt::tests::step_time -- --nocapture`.
    #[test]
    fn step_time_default_gpt_batch_32_one_thread() -> Result<(), ModelError> {
        set_compute_threads(1);
        let config = GptConfig::with_vocab(80);
        let (varmap, model) = build(&config)?;
        let (b, t) = (32, config.context);
        let xs = ids_tensor(&random_ids(&config, b, t, 6), b, t)?;
        let ys = ids_tensor(&random_ids(&config, b, t, 7), b, t)?;
        let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW::default())?;
        let (mut t_fwd, mut t_bwd, mut t_opt) = (0.0, 0.0, 0.0);
        let steps = 3;
        for i in 0..=steps {
            let t = Instant::now();
            let l = loss(&model.forward(&xs)?, &ys)?;
            let fwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = l.backward()?;
            let bwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            opt.step(&grads)?;
            let upd = t.elapsed().as_secs_f64();
            if i > 0 {
                // The first step is a warm-up.
                t_fwd += fwd;
                t_bwd += bwd;
                t_opt += upd;
            }
        }
        let ms = |s: f64| s * 1e3 / f64::from(steps);
        println!(
            "gpt default (vocab 80, {} params) batch {b}x{t}, {} candle thread(s): {:.1} ms/step \
             (forward+loss {:.1}, backward {:.1}, AdamW {:.1})",
            config.param_count(),
            candle_core::utils::get_num_threads(),
            ms(t_fwd + t_bwd + t_opt),
            ms(t_fwd),
            ms(t_bwd),
            ms(t_opt)
        );
        Ok(())
    }
}
