//! Helpers shared by the integration tests: throwaway CAs, small configs, dataset choice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumor::certs::{self, PeerIdentity};
use rumor::config::Config;
use rumor::data::{self, DatasetSpec, FASHION_MNIST_DIR};
use rumor::run::RunData;

/// A CA in `dir` and identities `names` issued by it.
pub fn identities(dir: &Path, names: &[&str]) -> Vec<Arc<PeerIdentity>> {
    certs::init_ca(dir, false).expect("init CA");
    names
        .iter()
        .map(|n| {
            certs::issue(dir, n, 30).expect("issue");
            Arc::new(certs::load_identity(dir, n).expect("load identity"))
        })
        .collect()
}

/// Fashion-MNIST when installed, else synthetic; says which (never silently).
pub fn dataset() -> RunData {
    let spec = if Path::new(FASHION_MNIST_DIR).exists() {
        DatasetSpec::FashionMnist
    } else {
        eprintln!(
            "NOTE: {FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist); \
             this test uses the synthetic dataset instead"
        );
        DatasetSpec::Synthetic
    };
    let data = data::load(&spec, 42).expect("load dataset");
    eprintln!("dataset: {} ({})", data.name, data.description);
    data.into()
}

/// A config for fast tests: short timeouts and intervals.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.peer.join_timeout = Duration::from_secs(30);
    c.peer.drain_timeout = Duration::from_secs(60);
    c.gossip.gossip_interval = Duration::from_millis(200);
    c.gossip.anti_entropy_interval = Duration::from_millis(500);
    c.gossip.drain_anti_entropy_interval = Duration::from_millis(100);
    c.train.eval_every = 0;
    c
}

/// Runs `fut` with a deadline; panics with `what` when it passes.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Checks `check` every 100 ms until it holds or `limit` passes; says whether it held (for
/// waits whose failure the caller reports itself).
pub fn held_within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Tests that start many processes or peers take this lock so that they do not overlap: their
/// fault timelines (kill, cut, restore) assume the machine is not shared with another such test.
pub fn heavy_test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `body` on a 2-thread runtime while holding the heavy-test lock (a std mutex, so it is
/// not held across an await of the test's own runtime).
pub fn heavy<F: std::future::Future<Output = ()>>(body: F) {
    let _serial = heavy_test_lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// Waits for every peer to finish, each within `limit`; panics naming the first that fails or
/// runs over.
pub async fn wait_all(
    handles: Vec<rumor::node::PeerHandle>,
    limit: Duration,
) -> Vec<rumor::node::PeerOutcome> {
    let mut outcomes = Vec::new();
    for h in handles {
        let o = within(limit, "peer finishes", h.wait())
            .await
            .expect("peer succeeds");
        outcomes.push(o);
    }
    outcomes
}

/// Runs `rumor compare --json --checkpoints` over the checkpoints in `dir/NAME` for each name
/// and returns the consensus distance it reports.
pub fn compare_checkpoints(dir: &Path, names: &[&str]) -> f64 {
    let mut args = vec![
        "compare".to_string(),
        "--json".into(),
        "--checkpoints".into(),
    ];
    for n in names {
        args.push(dir.join(n).to_string_lossy().into_owned());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rumor"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["consensus_distance"].as_f64().unwrap()
}

/// Starts one in-process peer per name, with certificates in `dir/certs` and data dirs under
/// `dir`: the first at once, the others seeded with its bound address. Each peer gets `base`
/// with its name, seed, data dir and shard `i+1/n` set.
pub async fn start_peers(
    dir: &Path,
    names: &[&str],
    base: &Config,
    data: &RunData,
) -> Vec<rumor::node::PeerHandle> {
    start_peers_with(dir, names, base, data, |_, _| {}).await
}

/// [`start_peers`], with `adjust(i, config)` changing peer `i`'s config last.
pub async fn start_peers_with(
    dir: &Path,
    names: &[&str],
    base: &Config,
    data: &RunData,
    adjust: impl Fn(usize, &mut Config),
) -> Vec<rumor::node::PeerHandle> {
    let ids = identities(&dir.join("certs"), names);
    let n = names.len();
    let mut handles = Vec::new();
    let mut seed: Option<std::net::SocketAddr> = None;
    for (i, name) in names.iter().enumerate() {
        let mut c = base.clone();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.join(name);
        c.train.shard = format!("{}/{n}", i + 1).parse().expect("shard");
        adjust(i, &mut c);
        let opts = rumor::run::peer_options(&c, ids[i].clone(), data, n).expect("peer options");
        let mut h = rumor::node::PeerHandle::spawn(opts);
        if i == 0 {
            seed = h.bound_addr().await;
            assert!(seed.is_some(), "the seed bound an address");
        }
        handles.push(h);
    }
    handles
}
