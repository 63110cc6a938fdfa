//! Built-in models other than the MLP, trained by 3 peers over real QUIC on loopback.

use std::time::Duration;

use rumor::data::DatasetSpec;
use rumor::model;
use rumor::run::{load_data, RunData};

use crate::common::{start_peers, test_config, wait_all};

/// Runs `names.len()` peers of `base` on `data` to the end; returns their outcomes.
async fn run_peers(
    base: &rumor::config::Config,
    data: &RunData,
    names: &[&str],
) -> Vec<rumor::node::PeerOutcome> {
    let dir = tempfile::tempdir().unwrap();
    let handles = start_peers(dir.path(), names, base, data).await;
    let outcomes = wait_all(handles, Duration::from_secs(400)).await;
    for o in &outcomes {
        assert!(o.drained, "{} drained consistent", o.name);
    }
    outcomes
}

fn consensus(outcomes: &[rumor::node::PeerOutcome]) -> f64 {
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    model::consensus_distance(&bases).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cnn_peers_learn_the_synthetic_images_and_agree() {
    let mut base = test_config();
    base.peer.min_peers = 3;
    base.train.model = "cnn".parse().unwrap();
    base.train.dataset = DatasetSpec::Synthetic;
    base.train.epochs = 1;
    let data = load_data(&base).unwrap();
    let outcomes = run_peers(&base, &data, &["cnn-0", "cnn-1", "cnn-2"]).await;
    let distance = consensus(&outcomes);
    let accs: Vec<f32> = outcomes.iter().map(|o| o.accuracy()).collect();
    eprintln!("cnn: accuracies {accs:?}, consensus distance {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
    // Ten classes: chance is 10%.
    assert!(accs.iter().all(|&a| a > 0.5), "{accs:?}");
    assert_eq!(outcomes[0].metrics.0[0].0, "accuracy");
}

/// A tiny char-gpt on the seeded synthetic text: three peers end with one model whose
/// validation loss is below what character frequencies alone give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_char_gpt_peers_end_consistent_below_the_unigram_baseline() {
    let mut base = test_config();
    base.peer.min_peers = 3;
    base.train.model = "char-gpt:layers=1,heads=2,width=32,context=16"
        .parse()
        .unwrap();
    base.train.dataset = DatasetSpec::Synthetic;
    base.train.batch_size = 16;
    // 3 × 150 steps of 16 windows × 16 tokens.
    base.train.tokens = Some(3 * 150 * 16 * 16);
    base.train.lr = 3e-3;
    let data = load_data(&base).unwrap();
    let RunData::Text { text, .. } = &data else {
        panic!("a text model loads text");
    };
    let unigram =
        rumor::workload::text::unigram_loss(&text.train, &text.validation, text.vocab.len());
    let outcomes = run_peers(&base, &data, &["gpt-0", "gpt-1", "gpt-2"]).await;
    let distance = consensus(&outcomes);
    let losses: Vec<f64> = outcomes
        .iter()
        .map(|o| o.metrics.get("val_loss").expect("val_loss"))
        .collect();
    eprintln!(
        "char-gpt: val_loss {losses:?} (unigram {unigram:.4}), steps {}, consensus distance \
         {distance:e}",
        outcomes[0].steps
    );
    assert_eq!(outcomes[0].steps, 150, "the token budget sets the steps");
    assert_eq!(outcomes[0].samples, 150 * 16 * 16, "samples count tokens");
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(
        losses.iter().all(|&l| l < unigram),
        "{losses:?} vs {unigram}"
    );
    let perplexity = outcomes[0].metrics.get("perplexity").unwrap();
    assert!((perplexity - losses[0].exp()).abs() < 1e-6 * perplexity);
}
