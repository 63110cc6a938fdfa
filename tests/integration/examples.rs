//! The examples in `examples/` run and do what they say (cargo builds them with the tests).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::KillOnDrop;

/// The built example `name` beside this test binary (`target/<profile>/examples/<name>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/integration-HASH → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; run `cargo build --examples`",
        path.display()
    );
    path
}

/// `examples/custom_model.rs`: a model rumor does not ship, 3 in-process peers over QUIC, fits
/// sin(3x) and ends consistent.
#[test]
fn the_custom_model_example_trains_three_peers_to_one_model() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = KillOnDrop(
        Command::new(example("custom_model"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example"),
    );
    let limit = Duration::from_secs(300);
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < end, "the example ran past {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(log.path()).unwrap();
    eprintln!("{out}");
    assert!(status.success(), "the example exited with {status}");
    let mses: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("mse=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(mses.len(), 3, "one line per peer");
    // sin(3x) on [-1, 1] has variance ≈ 0.5: below half of it, the shared model learned the
    // curve's shape. Alone the example ends near 0.004; beside the whole test suite on 2 cores
    // its peers train far apart in time and it has ended at 0.10 (a quality shortfall under
    // load, not a consistency one: the distance check below is what must always hold).
    assert!(mses.iter().all(|&m| m < 0.25), "{mses:?}");
    let distance: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("consensus distance "))
        .and_then(|d| d.trim().parse().ok())
        .expect("a consensus distance line");
    assert!(distance < 1e-4, "consensus distance {distance}");
}
