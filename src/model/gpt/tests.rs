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
    let (t_fwd, t_bwd, t_opt) =
        crate::model::time_steps(&varmap, 3, || loss(&model.forward(&xs)?, &ys))?;
    println!(
        "gpt default (vocab 80, {} params) batch {b}x{t}, {} candle thread(s): {:.1} ms/step \
         (forward+loss {:.1}, backward {:.1}, AdamW {:.1})",
        config.param_count(),
        candle_core::utils::get_num_threads(),
        t_fwd + t_bwd + t_opt,
        t_fwd,
        t_bwd,
        t_opt
    );
    Ok(())
}
