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
mod tests;
