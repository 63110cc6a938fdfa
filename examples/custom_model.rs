//! A model rumor does not ship, trained by 3 gossiping peers in this process: a tanh network
//! fitting y = sin(3x) on [-1, 1], each peer on its third of the points (`cargo run --example
//! custom_model`).
use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rumor::workload::{Batch, BoxedModel, Direction, MetricDef, Metrics, ModelCard, Workload};

/// Points `x` of `(x, sin 3x)`: this peer's training points and the shared held-out ones.
struct SineFit {
    train: Vec<f32>,
    test: Vec<f32>,
}
struct TanhNet(Linear, Linear);

impl Module for TanhNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.1.forward(&self.0.forward(x)?.tanh()?)
    }
}

fn batch_of(xs: &[f32], device: &Device) -> candle_core::Result<Batch> {
    let ys: Vec<f32> = xs.iter().map(|x| (3.0 * x).sin()).collect();
    Ok(Batch {
        inputs: Tensor::from_slice(xs, (xs.len(), 1), device)?,
        targets: Tensor::from_vec(ys, (xs.len(), 1), device)?,
        units: xs.len() as u64,
    })
}

impl Workload for SineFit {
    fn card(&self) -> ModelCard {
        ModelCard::new("sine-fit", serde_json::json!({ "hidden": 32 }))
    }
    fn build(&self, vb: VarBuilder) -> candle_core::Result<BoxedModel> {
        let hidden = candle_nn::linear(1, 32, vb.pp("hidden"))?;
        let out = candle_nn::linear(32, 1, vb.pp("out"))?;
        Ok(Box::new(TanhNet(hidden, out)))
    }
    fn train_examples(&self) -> usize {
        self.train.len()
    }
    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let xs = indices.iter().map(|&i| self.train.get(i).copied());
        let xs: Vec<f32> = xs
            .collect::<Option<_>>()
            .ok_or(candle_core::Error::msg("no point"))?;
        batch_of(&xs, device)
    }
    fn loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor> {
        candle_nn::loss::mse(&model.forward(&batch.inputs)?, &batch.targets)
    }
    fn evaluate(&self, model: &dyn Module, device: &Device) -> candle_core::Result<Metrics> {
        let mse = self
            .loss(model, &batch_of(&self.test, device)?)?
            .to_scalar::<f32>()?;
        Ok(Metrics(vec![("mse".into(), f64::from(mse))]))
    }
    fn metrics(&self) -> Vec<MetricDef> {
        vec![MetricDef::new("mse", Direction::Lower)]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    rumor::certs::init_ca(&certs, false)?;
    let point = |i: usize| i as f32 / 1500.0 - 1.0;
    let (peers, mut handles, mut seed, mut bases) = (3, Vec::new(), None, Vec::new());
    for p in 0..peers {
        let name = format!("peer-{p}");
        rumor::certs::issue(&certs, &name, 1)?;
        let identity = std::sync::Arc::new(rumor::certs::load_identity(&certs, &name)?);
        let mut config = rumor::config::Config::from_toml(&format!(
            "[peer]\nname = '{name}'\nlisten = '127.0.0.1:0'\ndata_dir = '{}'\nmin_peers = {peers}\n\
             [train]\nepochs = 40\nlr = 0.003\nlr_schedule = 'cosine'\nbatch_size = 32\nshard = '{}/{peers}'\n",
            dir.path().join(&name).display(),
            p + 1
        ))?;
        config.peer.seeds = seed.into_iter().collect();
        let workload = std::sync::Arc::new(SineFit {
            train: (p..3000).step_by(peers).map(point).collect(),
            test: (0..3000).step_by(7).map(|i| point(i) + 0.0003).collect(),
        });
        let options = rumor::run::workload_peer_options(&config, identity, workload, peers)?;
        let mut handle = rumor::node::PeerHandle::spawn(options);
        seed = seed.or(handle.bound_addr().await);
        handles.push(handle);
    }
    for handle in handles {
        let o = handle.wait().await?;
        println!("{}: {} after {} steps", o.name, o.metrics, o.steps);
        bases.push(o.base);
    }
    let refs: Vec<&[f32]> = bases.iter().map(Vec::as_slice).collect();
    let distance = rumor::model::consensus_distance(&refs)?;
    println!("consensus distance {distance:.2e}");
    Ok(())
}
