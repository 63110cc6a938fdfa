//! The `rumor` binary: parse flags, run the command, print the error once with its causes.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rumor::cli::{CertsCommand, Cli, Command, LogFormat};
use rumor::{certs, model, run};

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
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
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
        .with_writer(std::io::stderr);
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
                ..Default::default()
            };
            runtime.block_on(run::up(config, options))?;
        }
        Command::Peer(args) => {
            let config = args.load_config()?;
            runtime.block_on(run::peer(
                config,
                args.resume,
                args.summary_json.clone(),
                args.ready_file.clone(),
            ))?;
        }
        Command::Certs(CertsCommand::Init { dir, force }) => {
            let path = certs::init_ca(&dir, force)?;
            println!("cluster CA written to {}", path.display());
        }
        Command::Certs(CertsCommand::Issue { dir, name, days }) => {
            let path = certs::issue(&dir, &name, days)?;
            println!("certificate for {name} written to {}", path.display());
        }
        Command::Compare(args) => {
            run::compare(&args.checkpoints, args.json)?;
        }
        Command::Lab(args) => {
            let options = rumor::lab::LabOptions {
                out: args.out.clone(),
            };
            let summary = runtime.block_on(rumor::lab::run_lab(&args.file, options))?;
            println!(
                "lab {}: {} runs; runs.csv, summary.json, report.md and {} plot files written",
                summary.name,
                summary.cells.len(),
                summary.plots.len()
            );
        }
    }
    Ok(())
}
