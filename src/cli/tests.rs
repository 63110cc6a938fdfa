//! Tests of parsing flags and applying them over a configuration.

use super::*;

/// A test that fails with the error of the step that went wrong.
type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn flags_override_config() -> TestResult {
    let cli = Cli::try_parse_from([
        "rumor",
        "peer",
        "--name",
        "peer-a",
        "--seed",
        "127.0.0.1:7000",
        "--seed",
        "127.0.0.1:7001",
        "--shard",
        "2/3",
        "--epochs",
        "5",
        "--join-timeout",
        "3s",
        "--dataset",
        "idx:/d",
        "--model",
        "784-10",
    ])?;
    let Command::Peer(args) = cli.command else {
        panic!("parsed the wrong command")
    };
    let c = args.load_config()?;
    assert_eq!(c.peer.name, "peer-a");
    assert_eq!(c.peer.seeds.len(), 2);
    assert_eq!(c.train.shard, ShardSpec { index: 1, count: 3 });
    assert_eq!(c.train.dataset, DatasetSpec::Idx("/d".into()));
    assert_eq!(c.train.model.to_string(), "784-10");
    assert_eq!(c.train.epochs, 5);
    assert_eq!(c.peer.join_timeout, Duration::from_secs(3));
    Ok(())
}

#[test]
fn sync_peer_flags_find_this_peers_index() -> TestResult {
    let cli = Cli::try_parse_from([
        "rumor",
        "peer",
        "--mode",
        "sync",
        "--listen",
        "10.0.0.2:7000",
        "--sync-peers",
        "10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
    ])?;
    let Command::Peer(args) = cli.command else {
        panic!("parsed the wrong command")
    };
    let c = args.load_config()?;
    assert_eq!(c.up.mode, Mode::Sync);
    assert_eq!(c.up.sync_peers.len(), 3);
    assert_eq!(c.sync_index()?, 1);
    let cli = Cli::try_parse_from([
        "rumor",
        "peer",
        "--sync-peers",
        "10.0.0.1:7000,10.0.0.3:7000",
        "--listen",
        "10.0.0.2:7000",
    ])?;
    let Command::Peer(args) = cli.command else {
        panic!("parsed the wrong command")
    };
    let err = args.load_config()?.sync_index().unwrap_err();
    assert!(err.to_string().contains("up.sync_index"), "{err}");
    Ok(())
}

#[test]
fn the_revocation_list_flag_sets_its_key_and_revoke_needs_a_name_or_key_id() -> TestResult {
    let cli = parse(&["peer", "--revocation-list", "/etc/rumor/revoked.json"])?;
    let Command::Peer(args) = cli.command else {
        panic!("parsed the wrong command")
    };
    let c = args.load_config()?;
    assert_eq!(
        c.peer.revocation_list.as_deref(),
        Some(std::path::Path::new("/etc/rumor/revoked.json"))
    );
    let Command::Certs(CertsCommand::Revoke { dir, name, key_id }) =
        parse(&["certs", "revoke", "--name", "peer-3"])?.command
    else {
        panic!("parsed the wrong command")
    };
    assert_eq!(
        (dir, name, key_id),
        (PathBuf::from("certs"), Some("peer-3".into()), None)
    );
    assert!(parse(&["certs", "revoke", "--key-id", "ab12"]).is_ok());
    let err = parse(&["certs", "revoke"])
        .err()
        .ok_or("revoke without a target parsed")?;
    assert!(err.to_string().contains("--name"), "{err}");
    Ok(())
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("rumor").chain(args.iter().copied()))
}

#[test]
fn negative_whole_numbers_and_durations_are_refused_naming_the_key() {
    let chaos = [
        "chaos",
        "flood",
        "--target",
        "127.0.0.1:7000",
        "--name",
        "x",
    ];
    let mut cases: Vec<(Vec<&str>, &str)> = Vec::new();
    for cmd in ["up", "peer"] {
        for (flag, want) in [
            (
                "--batch-size",
                "train.batch_size must be at least 1, got -1",
            ),
            ("--epochs", "train.epochs must be at least 1"),
            ("--publish-every", "train.publish_every must be at least 1"),
            ("--eval-every", "train.eval_every must be at least 0"),
            ("--rng-seed", "train.rng_seed must be at least 0"),
            ("--threads", "train.threads must be at least 1"),
            ("--fanout", "gossip.fanout must be at least 1"),
            ("--min-peers", "peer.min_peers must be at least 1"),
            ("--loss-seed", "loss.seed must be at least 0"),
        ] {
            cases.push((vec![cmd, flag, "-1"], want));
        }
        for (flag, want) in [
            (
                "--max-train-time",
                "train.max_train_time cannot be negative",
            ),
            ("--join-timeout", "peer.join_timeout cannot be negative"),
            ("--drain-timeout", "peer.drain_timeout cannot be negative"),
            ("--sync-timeout", "up.sync_timeout cannot be negative"),
        ] {
            cases.push((vec![cmd, flag, "-1s"], want));
        }
    }
    cases.push((vec!["up", "--peers", "-1"], "up.peers must be at least 1"));
    cases.push((
        vec!["up", "--batch-size", "0"],
        "train.batch_size must be at least 1",
    ));
    cases.push((
        vec!["peer", "--sync-index", "-1"],
        "up.sync_index must be at least 0",
    ));
    cases.push((
        vec!["peer", "--epochs", "x"],
        "train.epochs must be a whole number",
    ));
    cases.push((
        vec!["bench", "membership", "--peers", "-1"],
        "--peers must be at least 3",
    ));
    cases.push((
        vec!["bench", "membership", "--idle-seconds", "-1"],
        "--idle-seconds must be at least 1",
    ));
    for (flag, want) in [
        ("--params", "--params must be at least 1"),
        ("--batches", "--batches must be at least 1"),
        (
            "--deltas-per-second",
            "--deltas-per-second must be a number ≥ 0",
        ),
        (
            "--records-per-second",
            "--records-per-second must be a number ≥ 0",
        ),
    ] {
        cases.push((vec!["bench", "signing", flag, "-1"], want));
    }
    for (flag, want) in [
        ("--count", "--count must be at least 0"),
        ("--rate", "--rate must be a number ≥ 0, got -1"),
        (
            "--max-message-bytes",
            "--max-message-bytes must be at least 1",
        ),
        ("--concurrency", "--concurrency must be at least 1"),
        ("--rng-seed", "--rng-seed must be at least 0"),
    ] {
        let mut args = chaos.to_vec();
        args.extend([flag, "-1"]);
        cases.push((args, want));
    }
    cases.push((
        vec!["certs", "issue", "--name", "a", "--days", "-1"],
        "--days must be at least 1",
    ));
    cases.push((
        vec!["status", "x:1", "--timeout", "-1s"],
        "--timeout cannot be",
    ));
    cases.push((
        vec!["top", "x:1", "--interval", "-1s"],
        "--interval cannot be",
    ));
    for (args, want) in cases {
        let err = parse(&args).expect_err("refused").to_string();
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

#[test]
fn negative_real_numbers_reach_the_config_check_of_their_key() -> TestResult {
    for cmd in ["up", "peer"] {
        for (flag, key) in [
            ("--lr", "train.lr"),
            ("--non-iid", "train.non_iid_alpha"),
            ("--loss", "loss"),
            ("--loss-in", "loss"),
            ("--loss-out", "loss"),
            ("--centralized-lr", "up.centralized_lr"),
        ] {
            if flag == "--centralized-lr" && cmd == "peer" {
                continue;
            }
            let cli = parse(&[cmd, flag, "-1"]).unwrap_or_else(|e| panic!("{cmd} {flag}: {e}"));
            let err = match cli.command {
                Command::Up(a) => a.load_config().unwrap_err(),
                Command::Peer(a) => a.load_config().unwrap_err(),
                _ => panic!("parsed the wrong command"),
            }
            .to_string();
            assert!(err.contains(&format!("`{key}`")), "{cmd} {flag}: {err}");
        }
    }
    let Command::Chaos(args) = parse(&[
        "chaos",
        "nan",
        "--target",
        "127.0.0.1:1",
        "--name",
        "a",
        "--rate",
        "2.5",
    ])?
    .command
    else {
        panic!("parsed the wrong command")
    };
    assert_eq!(args.rate, 2.5);
    Ok(())
}

#[test]
fn bad_flag_values_are_errors_naming_the_key() {
    // Written as in the config file and parsed the same way, refused before anything runs;
    // a value that starts with `-` reaches the parser rather than being taken for a flag.
    for (args, want) in [
        (["peer", "--shard", "0/3"], "train.shard: bad shard `0/3`"),
        (["peer", "--shard", "-1/2"], "train.shard: bad shard `-1/2`"),
        (["up", "--model", "-1"], "train.model: invalid model spec"),
        (
            ["up", "--dataset", "mnist"],
            "train.dataset: unknown dataset",
        ),
    ] {
        let err = parse(&args).expect_err("refused").to_string();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(Cli::try_parse_from(["rumor", "up", "--lr-scaling", "cubic"]).is_err());
    assert!(Cli::try_parse_from(["rumor", "up", "--epochs", "-1"]).is_err());
}

#[test]
fn bench_dissemination_defaults_to_eight_peers_and_refuses_one() -> TestResult {
    let cli = Cli::try_parse_from(["rumor", "bench", "dissemination"])?;
    let Command::Bench(BenchCommand::Dissemination {
        peers,
        config,
        json,
    }) = cli.command
    else {
        return Err("parsed the wrong command".into());
    };
    assert_eq!((peers, config, json), (8, None, false));
    assert!(Cli::try_parse_from(["rumor", "bench", "dissemination", "--peers", "1"]).is_err());
    Ok(())
}

#[test]
fn bench_signing_defaults_to_the_mlp_at_ten_deltas_and_fifty_records_per_second() -> TestResult {
    let cli = Cli::try_parse_from(["rumor", "bench", "signing"])?;
    let Command::Bench(BenchCommand::Signing {
        params,
        deltas_per_second,
        records_per_second,
        batches,
        json,
    }) = cli.command
    else {
        return Err("parsed the wrong command".into());
    };
    assert_eq!(
        params,
        crate::bench::signing::SigningBenchOptions::default().params
    );
    assert_eq!(params, 101_770);
    assert_eq!((deltas_per_second, records_per_second), (10.0, 50.0));
    assert_eq!(batches, 7);
    assert!(!json);
    let cli = Cli::try_parse_from([
        "rumor",
        "bench",
        "signing",
        "--params",
        "1000",
        "--deltas-per-second",
        "2.5",
        "--json",
    ])?;
    let Command::Bench(BenchCommand::Signing {
        params,
        deltas_per_second,
        json,
        ..
    }) = cli.command
    else {
        return Err("parsed the wrong command".into());
    };
    assert_eq!((params, deltas_per_second, json), (1000, 2.5, true));
    Ok(())
}
