//! A model rumor does not ship, trained by 3 gossiping peers in this process: a tanh network
//! that fits y = sin(3x) on [-1, 1], each peer on its own third of the points.
//! Run with `cargo run --example custom_model`.
use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use rumor::workload::{Batch, BoxedModel, Direction, MetricDef, Metrics, ModelCard, Workload};

/// Points `(x, sin 3x)`: this peer's training points and the shared held-out ones.
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
        ModelCard {
            kind: "sine-fit".into(),
            config: serde_json::json!({ "hidden": 32 }),
        }
    }
    fn describe(&self) -> String {
        format!("tanh 1-32-1 on {} points of sin(3x)", self.train.len())
    }
    fn build(&self, vb: VarBuilder) -> candle_core::Result<BoxedModel> {
        let layer = |name: &str, i: usize, o: usize| -> candle_core::Result<Linear> {
            let init = Init::Uniform {
                lo: -1.0 / (i as f64).sqrt(),
                up: 1.0 / (i as f64).sqrt(),
            };
            let w = vb.pp(name).get_with_hints((o, i), "weight", init)?;
            Ok(Linear::new(
                w,
                Some(vb.pp(name).get_with_hints(o, "bias", init)?),
            ))
        };
        Ok(Box::new(TanhNet(
            layer("hidden", 1, 32)?,
            layer("out", 32, 1)?,
        )))
    }
    fn train_examples(&self) -> usize {
        self.train.len()
    }
    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let xs: Option<Vec<f32>> = indices
            .iter()
            .map(|&i| self.train.get(i).copied())
            .collect();
        batch_of(
            &xs.ok_or_else(|| candle_core::Error::Msg("index out of range".into()))?,
            device,
        )
    }
    fn loss(&self, model: &dyn Module, batch: &Batch) -> candle_core::Result<Tensor> {
        candle_nn::loss::mse(&model.forward(&batch.inputs)?, &batch.targets)
    }
    fn evaluate(&self, model: &dyn Module, device: &Device) -> candle_core::Result<Metrics> {
        let batch = batch_of(&self.test, device)?;
        let mse = self.loss(model, &batch)?.to_scalar::<f32>()?;
        Ok(Metrics(vec![("mse".into(), f64::from(mse))]))
    }
    fn metrics(&self) -> Vec<MetricDef> {
        vec![MetricDef::new("mse", Direction::Lower)]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rumor::model::set_compute_threads(1);
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    rumor::certs::init_ca(&certs, false)?;
    let point = |i: usize| i as f32 / 1500.0 - 1.0;
    let (peers, mut handles, mut seed) = (3, Vec::new(), None);
    for p in 0..peers {
        let name = format!("peer-{p}");
        rumor::certs::issue(&certs, &name, 1)?;
        let identity = Arc::new(rumor::certs::load_identity(&certs, &name)?);
        let mut config = rumor::config::Config::default();
        (config.peer.name, config.peer.seeds) = (name.clone(), seed.into_iter().collect());
        config.peer.listen = "127.0.0.1:0".parse()?;
        config.peer.data_dir = dir.path().join(&name);
        (
            config.peer.min_peers,
            config.train.epochs,
            config.train.batch_size,
        ) = (peers, 8, 32);
        config.train.shard = format!("{}/{peers}", p + 1).parse()?;
        let workload = Arc::new(SineFit {
            train: (p..3000).step_by(peers).map(point).collect(),
            test: (0..3000).step_by(7).map(|i| point(i) + 0.0003).collect(),
        });
        let options = rumor::run::workload_peer_options(&config, identity, workload, peers)?;
        let mut handle = rumor::node::PeerHandle::spawn(options);
        seed = seed.or(handle.bound_addr().await);
        handles.push(handle);
    }
    let mut bases = Vec::new();
    for handle in handles {
        let outcome = handle.wait().await?;
        println!(
            "{}: {} after {} steps",
            outcome.name, outcome.metrics, outcome.steps
        );
        bases.push(outcome.base);
    }
    let refs: Vec<&[f32]> = bases.iter().map(Vec::as_slice).collect();
    println!(
        "consensus distance {:.2e}",
        rumor::model::consensus_distance(&refs)?
    );
    Ok(())
}
