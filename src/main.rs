//! The `rumor` binary: parse flags, run the command, print the error once with its causes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rumor::cli::{BenchCommand, CertsCommand, Cli, Command, LogFormat};
use rumor::config::Config;
use rumor::{bench, certs, model, run, ui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // candle sizes its thread pools at first use, so this goes before anything else runs.
    let threads = match &cli.command {
        Command::Up(a) => a.train.threads,
        Command::Peer(a) => a.train.threads,
        _ => None,
    };
    model::set_compute_threads(threads.unwrap_or(1));
    init_logging(&cli);
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each error in the chain says only its own part, so every line is said once.
            let _ = rumor::report::write_report(&mut std::io::stderr().lock(), e.as_ref());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Up(_) | Command::Lab(_) => "rumor=warn",
        _ => "rumor=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(ui::dashboard::LogWriter::make);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Up(args) => {
            let config = args.load_config()?;
            let options = run::UpOptions {
                certs: args.certs.clone(),
                out: args.out.clone(),
                no_tui: args.no_tui,
                summary_json: args.summary_json.clone(),
                metrics: args.metrics,
                ..Default::default()
            };
            runtime.block_on(run::up(config, options))?;
        }
        Command::Peer(args) => {
            let config = args.load_config()?;
            let result = runtime.block_on(run::peer(
                config,
                args.resume,
                args.summary_json.clone(),
                args.ready_file.clone(),
                args.metrics_addr,
            ));
            // An evaluation skipped at the end of the leave grace may still run on a blocking
            // thread: the process does not wait for it.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
        }
        Command::Certs(CertsCommand::Init {
            dir,
            force,
            cluster,
        }) => {
            let ca = certs::init_cluster_ca(&dir, force, cluster.as_deref())?;
            println!(
                "cluster CA for cluster {} written to {}",
                ca.cluster,
                ca.path.display()
            );
        }
        Command::Certs(CertsCommand::Issue {
            dir,
            name,
            names,
            count,
            prefix,
            days,
            force,
        }) => {
            let names = match (name, names, count) {
                (Some(name), _, _) => vec![name],
                (_, Some(list), _) => certs::expand_names(&list)?,
                (_, _, Some(count)) => certs::counted_names(&prefix, count)?,
                (None, None, None) => Vec::new(),
            };
            // All or nothing: a bad name or an existing certificate stops the run before any
            // is written.
            for name in &names {
                certs::validate_name(name)?;
            }
            if !force {
                for name in &names {
                    let path = dir.join(format!("{name}.pem"));
                    if path.exists() {
                        return Err(certs::CertError::Exists { path }.into());
                    }
                }
            }
            for name in &names {
                let path = if force {
                    certs::reissue(&dir, name, days)?
                } else {
                    certs::issue(&dir, name, days)?
                };
                println!("certificate for {name} written to {}", path.display());
            }
        }
        Command::Certs(CertsCommand::Revoke { dir, name, key_id }) => {
            let target = match key_id {
                Some(hex) => certs::RevokeTarget::KeyId {
                    key: certs::parse_key_id(&hex)?,
                    label: name,
                },
                None => certs::RevokeTarget::Name(name.unwrap_or_default()),
            };
            let done = certs::revoke(&dir, &target)?;
            let entry = &done.entry;
            if done.already {
                println!(
                    "{} (key id {}) was already revoked at {}; {} unchanged (sequence {})",
                    entry.name,
                    entry.key,
                    entry.revoked_at,
                    done.path.display(),
                    done.sequence
                );
            } else {
                println!(
                    "revoked {} (key id {}) at {}; {} is now at sequence {}",
                    entry.name,
                    entry.key,
                    entry.revoked_at,
                    done.path.display(),
                    done.sequence
                );
            }
        }
        Command::Compare(args) => {
            run::compare(&args.checkpoints, args.json)?;
        }
        Command::Sample(args) => {
            let text = run::sample(
                &args.checkpoint,
                &args.prompt,
                args.tokens,
                args.temperature,
                args.rng_seed,
            )?;
            println!("{text}");
        }
        Command::Bench(BenchCommand::Membership {
            peers,
            idle_seconds,
            config,
            json,
        }) => {
            let config = config_or_default(config.as_deref())?;
            let result = runtime.block_on(bench::membership(
                &config,
                peers,
                std::time::Duration::from_secs(idle_seconds),
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "{} peers: join seen by all in {:.3} s, crash detected by all in {:.3} s, \
                     {} false positives, idle {:.0} B/s per peer",
                    result.peers,
                    result.join_seen_by_all_seconds,
                    result.crash_detected_by_all_seconds,
                    result.false_positives,
                    result.idle_bytes_per_second_per_peer
                );
            }
        }
        Command::Bench(BenchCommand::Training { steps, train, json }) => {
            let config = train.load_config()?;
            model::set_compute_threads(config.train.threads);
            let result = runtime.block_on(bench::training::training(&config, steps))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!("{result}");
            }
        }
        Command::Bench(BenchCommand::Dissemination {
            peers,
            config,
            json,
        }) => {
            let config = config_or_default(config.as_deref())?;
            let result = runtime.block_on(bench::dissemination::dissemination(&config, peers))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{result}");
            }
        }
        Command::Bench(BenchCommand::Signing {
            params,
            deltas_per_second,
            records_per_second,
            batches,
            json,
        }) => {
            let result = bench::signing::signing(&bench::signing::SigningBenchOptions {
                params,
                deltas_per_second,
                records_per_second,
                batches,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!("{result}");
            }
        }
        Command::Status(args) => {
            runtime.block_on(ui::table::status(&args.addr, args.timeout))?;
        }
        Command::Health(args) => {
            let path = if args.ready { "/readyz" } else { "/healthz" };
            let body =
                runtime.block_on(rumor::metrics::http::get(&args.addr, path, args.timeout))?;
            print!("{body}");
        }
        Command::Top(args) => {
            runtime.block_on(ui::table::top(&args.addrs, args.interval, args.timeout))?;
        }
        Command::Chaos(args) => {
            let identity = certs::load_identity(&args.certs, &args.name)?;
            let spec: model::ModelSpec = args.model.parse()?;
            let options = rumor::chaos::ChaosOptions {
                target: args.target,
                kind: args.kind,
                count: args.count,
                rate: args.rate,
                param_count: spec.param_count(),
                max_message_bytes: args.max_message_bytes,
                concurrency: args.concurrency,
                rng_seed: args.rng_seed,
                metrics: args.metrics.clone(),
                settle_timeout: args.settle_timeout,
            };
            let report = runtime.block_on(rumor::chaos::run_chaos(&identity, &options))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Lab(args) => {
            let options = rumor::lab::LabOptions {
                out: args.out.clone(),
                bin: None,
            };
            let summary = runtime.block_on(rumor::lab::run_lab(&args.file, options))?;
            println!(
                "lab {}: {} runs; runs.csv, summary.json, report.md and {} plot files written",
                summary.name,
                summary.cells.len(),
                summary.plots.len()
            );
            if !summary.failed.is_empty() {
                anyhow::bail!(
                    "{} of {} runs failed (listed in report.md)",
                    summary.failed.len(),
                    summary.failed.len() + summary.cells.len()
                );
            }
        }
    }
    Ok(())
}

/// The configuration in `path`, or the defaults without one, checked.
fn config_or_default(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.validate()?;
    Ok(config)
}
