//! Command-line interface (clap derive). Flags override the TOML config; every flag maps to one
//! config key, named in its help.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use parse::{
    count, duration, non_negative, parse_congestion, parse_lr_scaling, parse_slowdown,
    publish_period, text, whole,
};

use crate::config::{Config, ConfigError, LrScaling, Mode};
use crate::data::{DatasetSpec, ShardSpec};
use crate::train::{LrSchedule, OuterKind, PublishPeriod};
use crate::workload::ModelChoice;

/// rumor: barrier-free training by gossip over mutually authenticated QUIC.
#[derive(Debug, Parser)]
#[command(name = "rumor", version, about, long_about = None)]
pub struct Cli {
    /// Log format for stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
// Parsed once per process: the size of its largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start N local peers (or the centralized baseline), show a live table, print a summary.
    Up(Box<UpArgs>),
    /// Run one peer.
    Peer(Box<PeerArgs>),
    /// Manage the cluster CA and peer certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Consensus distance between peers' saved checkpoints.
    Compare(CompareArgs),
    /// Generate text from a char-gpt checkpoint (a peer's data dir).
    Sample(SampleArgs),
    /// Benchmarks over real QUIC on loopback.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print one peer's view (itself and each member as it sees them) from its --metrics-addr.
    Status(StatusArgs),
    /// Ask a peer's /healthz (or /readyz with --ready) and exit 0 when it answers 200, 1
    /// otherwise: a health check for images without curl (compose, Kubernetes exec probes).
    Health(HealthArgs),
    /// A cluster-wide table refreshed from several peers' --metrics-addr (q quits).
    Top(TopArgs),
    /// Run a grid of experiments (modes × loss × seeds × peers × non-IID × straggler × any
    /// [sweep] keys) and write runs.csv, summary.json, report.md and plots.
    Lab(LabArgs),
    /// Send hostile or broken messages to one peer with a member's certificate (for tests and
    /// operators): junk, truncated, oversized, duplicate, replay, nan, shape, norm, version,
    /// flood; and a member's attacks on what others believe: forge, alter, impersonate,
    /// reflect, invent, tamper, origins; and equivocate (run it twice with one --rng-seed
    /// against two peers: two different signed deltas under one version, which the cluster
    /// must detect and answer by quarantining the certificate). Chaos first introduces itself
    /// with its own signed record (one id per certificate, left and stopped) so its deltas
    /// reach the check each kind aims at. Prints what was sent, what the peer's QUIC
    /// acknowledged or stopped, and with --metrics what the peer counted.
    Chaos(ChaosArgs),
}

/// `rumor chaos KIND`
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// What to send; in parentheses, what the target should count it as.
    #[arg(value_enum)]
    pub kind: crate::chaos::ChaosKind,
    /// The peer's listen address.
    #[arg(long)]
    pub target: SocketAddr,
    /// Directory with the cluster CA and the member's certificate.
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
    /// The member whose certificate is used.
    #[arg(long)]
    pub name: String,
    /// Messages to send.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = whole::<u64>("--count", 0))]
    pub count: u64,
    /// Messages per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = non_negative("--rate"))]
    pub rate: f64,
    /// The target's model (MLP layer sizes), for the length of valid deltas.
    #[arg(long, default_value = "784-128-10")]
    pub model: String,
    /// The target's message size limit in bytes (an oversized frame is one byte more).
    #[arg(long, default_value_t = 16 * 1024 * 1024, allow_negative_numbers = true,
          value_parser = whole::<usize>("--max-message-bytes", 1))]
    pub max_message_bytes: usize,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true,
          value_parser = whole::<usize>("--concurrency", 1))]
    pub concurrency: usize,
    /// Seed for a reproducible run (random bytes, envelope ids, invented ids, the base
    /// version). Without it they come from the OS RNG and are new on every run; with it, each
    /// kind has its own stream, so kinds never share ids, but rerunning a kind with the same
    /// seed repeats its ids (a target that saw them drops them as duplicates). equivocate needs
    /// it: one seed, one version; run against two peers, it equivocates.
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>("--rng-seed", 0))]
    pub rng_seed: Option<u64>,
    /// The target's metrics address (its --metrics-addr, HOST:PORT or http://HOST:PORT):
    /// scraped before and after the run to print what the target counted beside what was sent;
    /// its /status gives forge, impersonate and reflect the target's own id as the victim (a
    /// made-up one without it), and shows when the target took chaos's introduction.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Longest wait after the last send for the target's counters to settle, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rumor bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N peers without training: join seen by all, crash detected by all, false positives,
    /// idle traffic per peer.
    Membership {
        /// Peers (at least 3).
        #[arg(long, default_value_t = 8, allow_negative_numbers = true,
              value_parser = whole::<usize>("--peers", 3))]
        peers: usize,
        /// Seconds of idle traffic to measure.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true,
              value_parser = whole::<u64>("--idle-seconds", 1))]
        idle_seconds: u64,
        /// TOML config file ([membership] and [transport] settings are used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Training throughput: optimizer steps per second of one gossiping peer against the bare
    /// training loop on the same workload (model, data, batch: the config and flags).
    Training {
        /// Optimizer steps of each run.
        #[arg(long, default_value_t = 300, allow_negative_numbers = true,
              value_parser = whole::<u64>("--steps", 20))]
        steps: u64,
        /// Training settings (model, dataset, batch size, publish_every, ...).
        #[command(flatten)]
        train: Box<TrainFlags>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delta dissemination: N peers each publish one delta of about 1 MB (an MLP 784-330-10),
    /// with eager push and with lazy push; delta bytes received per delta per peer, duplicates,
    /// and the time until every peer holds every delta.
    Dissemination {
        /// Peers (at least 2).
        #[arg(long, default_value_t = 8, allow_negative_numbers = true,
              value_parser = whole::<usize>("--peers", 2))]
        peers: usize,
        /// TOML config file ([gossip] and [transport] settings are used; the lazy run uses its
        /// `lazy_push_threshold`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Signed updates: µs to hash and sign or verify a delta, to sign or verify a member
    /// record, to admit a certificate; and the share of one core each takes at a rate.
    Signing {
        /// Parameters of the delta (default: the MLP 784-128-10).
        #[arg(long, default_value_t = 101_770, allow_negative_numbers = true,
              value_parser = whole::<usize>("--params", 1))]
        params: usize,
        /// Deltas per second at which the CPU share of the delta operations is given.
        #[arg(long, default_value_t = 10.0, allow_negative_numbers = true,
              value_parser = non_negative("--deltas-per-second"))]
        deltas_per_second: f64,
        /// Member records per second at which the CPU share of the record operations is given.
        #[arg(long, default_value_t = 50.0, allow_negative_numbers = true,
              value_parser = non_negative("--records-per-second"))]
        records_per_second: f64,
        /// Batches per operation (each at least 100 ms); the median is printed.
        #[arg(long, default_value_t = 7, allow_negative_numbers = true,
              value_parser = whole::<usize>("--batches", 1))]
        batches: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `rumor status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The peer's metrics address (HOST:PORT or http://HOST:PORT).
    pub addr: String,
    /// Longest wait for the answer, e.g. 5s.
    #[arg(long, default_value = "5s", allow_hyphen_values = true,
          value_parser = duration("--timeout"))]
    pub timeout: Duration,
}

/// `rumor health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The peer's metrics address (HOST:PORT or http://HOST:PORT).
    pub addr: String,
    /// Ask /readyz (joined, training or draining) instead of /healthz (event loop turns).
    #[arg(long)]
    pub ready: bool,
    /// Longest wait for the answer, e.g. 5s.
    #[arg(long, default_value = "5s", allow_hyphen_values = true,
          value_parser = duration("--timeout"))]
    pub timeout: Duration,
}

/// `rumor top`
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The peers' metrics addresses (HOST:PORT or http://HOST:PORT).
    #[arg(required = true, num_args = 1..)]
    pub addrs: Vec<String>,
    /// Time between refreshes, e.g. 1s.
    #[arg(long, default_value = "1s", allow_hyphen_values = true,
          value_parser = duration("--interval"))]
    pub interval: Duration,
    /// Longest wait for each peer's answer, e.g. 2s.
    #[arg(long, default_value = "2s", allow_hyphen_values = true,
          value_parser = duration("--timeout"))]
    pub timeout: Duration,
}

/// `rumor certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Overwrite an existing CA.
        #[arg(long)]
        force: bool,
        /// Cluster name, written into the CA's subject and shown when a peer from another
        /// cluster is refused: 1-64 of [A-Za-z0-9._-]. Default: rumor-<8 random hex digits>.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Issue peer certificates (NAME.pem, NAME.key) signed by the CA in DIR: one (--name) or
    /// many at once (--names, --count), as a cluster engine names its peers by rank.
    #[command(group(clap::ArgGroup::new("who").required(true)
        .args(["name", "names", "count"])))]
    Issue {
        /// Directory holding the CA.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Peer name: 1-64 of [A-Za-z0-9._-], not `ca` (the CA's own files).
        #[arg(long)]
        name: Option<String>,
        /// Several peer names, comma-separated; `peer-0..peer-7` stands for peer-0 to peer-7.
        #[arg(long, value_name = "LIST")]
        names: Option<String>,
        /// N peers named PREFIX-0 to PREFIX-(N-1) (`--name auto` under Slurm is peer-RANK).
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// The prefix of the names --count gives.
        #[arg(long, default_value = "peer", requires = "count")]
        prefix: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365, allow_negative_numbers = true,
              value_parser = whole::<u32>("--days", 1))]
        days: u32,
        /// Replace an existing NAME.pem and NAME.key.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a peer certificate: add it to DIR/revoked.json, signed by the CA in DIR. Peers
    /// that watch the list refuse it and close its connections within seconds. Revoking a
    /// certificate already on the list changes nothing.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true)
        .args(["name", "key_id"])))]
    Revoke {
        /// Directory holding the CA and the revocation list.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The peer whose certificate DIR/NAME.pem is revoked. With --key-id: only the name
        /// the entry is listed under (no file is read).
        #[arg(long)]
        name: Option<String>,
        /// Revoke the certificate with this key id (64 hex digits: SHA-256 of its DER), for a
        /// certificate whose file is gone.
        #[arg(long, value_name = "HEX")]
        key_id: Option<String>,
    },
}

/// `rumor lab`
#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab file (see `config/lab/*.toml`).
    pub file: PathBuf,
    /// Output folder; default `results/NAME` with NAME from the lab file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `rumor compare`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Peers' data dirs (each with a checkpoint: checkpoint.json and the base-*.safetensors it names).
    #[arg(long, num_args = 1.., required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// Print JSON: {"consensus_distance": ...}.
    #[arg(long)]
    pub json: bool,
}

/// `rumor sample`
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// A data dir holding a char-gpt checkpoint (checkpoint.json and its safetensors file).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The text to continue (every character must be in the model's vocabulary).
    #[arg(long)]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300, value_parser = whole::<usize>("--tokens", 1))]
    pub tokens: usize,
    /// Sampling temperature ≥ 0 (0: always the likeliest character).
    #[arg(long, default_value_t = 0.8, value_parser = non_negative("--temperature"))]
    pub temperature: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub rng_seed: u64,
}

/// Flags shared by `up` and `peer`: training and gossip settings.
#[derive(Debug, Args, Default)]
pub struct TrainFlags {
    /// TOML config file (see config/default.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset: auto | synthetic | fashion-mnist | idx:DIR | austen | text:FILE  [train.dataset]
    #[arg(long, value_parser = text::<DatasetSpec>("train.dataset"))]
    pub dataset: Option<DatasetSpec>,
    /// Model: mlp | mlp:WIDTHS | WIDTHS (e.g. 784-128-10)  [train.model]
    #[arg(long, allow_hyphen_values = true, value_parser = text::<ModelChoice>("train.model"))]
    pub model: Option<ModelChoice>,
    /// Dirichlet alpha for non-IID shards  [train.non_iid_alpha]
    #[arg(long, value_name = "ALPHA", allow_negative_numbers = true)]
    pub non_iid: Option<f64>,
    /// Passes over the peer's own shard  [train.epochs]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>("train.epochs", 1))]
    pub epochs: Option<u32>,
    /// Text shards: interleaved | interleaved:BLOCK | contiguous  [train.text_sharding]
    #[arg(long, value_parser = text::<crate::data::text::TextSharding>("train.text_sharding"))]
    pub text_sharding: Option<crate::data::text::TextSharding>,
    /// Token budget of a text model over all peers, e.g. 4M  [train.tokens]
    #[arg(long, value_parser = count("train.tokens"))]
    pub tokens: Option<u64>,
    /// Where training runs: cpu | cuda | cuda:N | metal  [train.device]
    #[arg(long, value_parser = text::<crate::train::DeviceChoice>("train.device"))]
    pub device: Option<crate::train::DeviceChoice>,
    /// Learning-rate schedule: constant | cosine | cosine:warmup=F,floor=F  [train.lr_schedule]
    #[arg(long, value_parser = text::<LrSchedule>("train.lr_schedule"))]
    pub lr_schedule: Option<LrSchedule>,
    /// Stop training after this long, e.g. 10m  [train.max_train_time]
    #[arg(long, allow_hyphen_values = true, value_parser = duration("train.max_train_time"))]
    pub max_train_time: Option<Duration>,
    /// Samples per step  [train.batch_size]
    #[arg(long, allow_negative_numbers = true,
          value_parser = whole::<usize>("train.batch_size", 1))]
    pub batch_size: Option<usize>,
    /// Learning rate before scaling by the number of peers  [train.lr]
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// none | linear | sqrt  [train.lr_scaling]
    #[arg(long, value_parser = parse_lr_scaling)]
    pub lr_scaling: Option<LrScaling>,
    /// Local steps between published deltas (H), or a period of time such as 5s
    /// [train.publish_every]
    #[arg(long, allow_negative_numbers = true, value_parser = publish_period)]
    pub publish_every: Option<PublishPeriod>,
    /// How deltas are quantized: none | bf16 | int8 | topk[:P%[:Bbit]], e.g. topk:2%:2bit
    /// [train.delta_compression]
    #[arg(long, value_parser = text::<crate::model::Compression>("train.delta_compression"))]
    pub delta_compression: Option<crate::model::Compression>,
    /// Outer optimizer of published deltas: none | nesterov  [train.outer_optimizer]
    #[arg(long, value_parser = text::<OuterKind>("train.outer_optimizer"))]
    pub outer_optimizer: Option<OuterKind>,
    /// Outer learning rate of nesterov  [train.outer_lr]
    #[arg(long, allow_negative_numbers = true)]
    pub outer_lr: Option<f64>,
    /// Outer momentum of nesterov, in [0, 1)  [train.outer_momentum]
    #[arg(long, allow_negative_numbers = true)]
    pub outer_momentum: Option<f64>,
    /// Steps between test evaluations, 0 = only at the end  [train.eval_every]
    #[arg(long, allow_negative_numbers = true,
          value_parser = whole::<u64>("train.eval_every", 0))]
    pub eval_every: Option<u64>,
    /// Seed for θ₀, shards, batch order and protocol randomness  [train.rng_seed]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>("train.rng_seed", 0))]
    pub rng_seed: Option<u64>,
    /// Candle CPU threads  [train.threads]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("train.threads", 1))]
    pub threads: Option<usize>,
    /// Gossip fanout  [gossip.fanout]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("gossip.fanout", 1))]
    pub fanout: Option<usize>,
    /// Members to know before training  [peer.min_peers]
    #[arg(long, allow_negative_numbers = true,
          value_parser = whole::<usize>("peer.min_peers", 1))]
    pub min_peers: Option<usize>,
    /// Longest wait to join, e.g. 30s  [peer.join_timeout]
    #[arg(long, allow_hyphen_values = true, value_parser = duration("peer.join_timeout"))]
    pub join_timeout: Option<Duration>,
    /// Longest time from SIGTERM to exit (leave, save; the final evaluation is skipped when
    /// it is spent), e.g. 20s  [peer.leave_grace]
    #[arg(long, allow_hyphen_values = true, value_parser = duration("peer.leave_grace"))]
    pub leave_grace: Option<Duration>,
    /// Longest drain, e.g. 60s  [peer.drain_timeout]
    #[arg(long, allow_hyphen_values = true, value_parser = duration("peer.drain_timeout"))]
    pub drain_timeout: Option<Duration>,
    /// Packet loss P in [0, 1] on every link: this process drops P of the datagrams it sends
    ///  [loss.loss_out]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub loss: Option<f64>,
    /// Drop this fraction of received datagrams  [loss.loss_in]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub loss_in: Option<f64>,
    /// Drop this fraction of sent datagrams (overrides `--loss`)  [loss.loss_out]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub loss_out: Option<f64>,
    /// Seed of the drop decisions  [loss.seed]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>("loss.seed", 0))]
    pub loss_seed: Option<u64>,
    /// QUIC congestion controller: cubic | newreno | bbr  [transport.congestion]
    #[arg(long, value_parser = parse_congestion)]
    pub congestion: Option<crate::net::Congestion>,
    /// Make peer PEER's steps FACTOR times slower, e.g. `peer-1=4`; repeatable
    ///  [train.slowdown]
    #[arg(long, value_name = "PEER=FACTOR", value_parser = parse_slowdown)]
    pub slowdown: Vec<(String, f64)>,
}

/// `rumor up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Local peers  [up.peers]
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>("up.peers", 1))]
    pub peers: Option<usize>,
    /// gossip | sync | centralized  [up.mode]
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Learning rate of the centralized baseline  [up.centralized_lr]
    #[arg(long, allow_negative_numbers = true)]
    pub centralized_lr: Option<f64>,
    /// `sync` mode: longest wait at a barrier (`up.sync_timeout`), e.g. `30s`.
    #[arg(long, allow_hyphen_values = true, value_parser = duration("up.sync_timeout"))]
    pub sync_timeout: Option<Duration>,
    /// Certificates directory with a CA; default: a throwaway CA in a temp dir.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// Where peers keep data dirs (checkpoints, metrics); default: a temp dir removed at exit.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Plain progress lines instead of the live dashboard (also when stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Serve each peer's /metrics and /status on 127.0.0.1 (a free port each) and print where.
    #[arg(long)]
    pub metrics: bool,
    /// Write the run summary as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Training settings.
    #[command(flatten)]
    pub train: TrainFlags,
}

/// `rumor peer`
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Certificate name in --certs, also the display name; `auto`: from the cluster engine
    /// (`peer-RANK` under Slurm, the hostname in a StatefulSet)  [peer.name]
    #[arg(long)]
    pub name: Option<String>,
    /// UDP address to listen on  [peer.listen]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address others reach this peer at  [peer.advertise]
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Seed peer: HOST_IP:PORT, or dns:NAME:PORT for every address NAME resolves to (resolved
    /// again while the peer runs); repeatable  [peer.seeds, peer.dns_seeds]
    #[arg(long = "seed", value_parser = parse_seed)]
    pub seeds: Vec<SeedArg>,
    /// Certificates directory  [peer.certs]
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// The CA-signed revocation list to load and watch; default revoked.json in --certs
    ///  [peer.revocation_list]
    #[arg(long, value_name = "FILE")]
    pub revocation_list: Option<PathBuf>,
    /// Data directory  [peer.data_dir]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This peer's shard, K/N; `auto`: from the environment (RUMOR_RANK and RUMOR_PEERS,
    /// SLURM_PROCID and SLURM_NTASKS, or a StatefulSet's hostname ordinal and --replicas)
    ///  [train.shard]
    #[arg(long, allow_hyphen_values = true, value_parser = text::<ShardArg>("train.shard"))]
    pub shard: Option<ShardArg>,
    /// Peers in the job, for `auto` under an engine that names hosts by ordinal (a
    /// StatefulSet's replicas); default: the RUMOR_REPLICAS variable.
    #[arg(long, value_name = "N", value_parser = whole::<usize>("--replicas", 1))]
    pub replicas: Option<usize>,
    /// After the run, stay up serving /status and /metrics (/healthz: `finished`) until
    /// SIGTERM, for engines that restart exited containers  [peer.linger]
    #[arg(long)]
    pub linger: bool,
    /// Continue from the checkpoint in --data-dir.
    #[arg(long)]
    pub resume: bool,
    /// Append one line per delta applied or published here (origin, version, content
    /// hash)  [peer.audit_log]
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Write this peer's summary as JSON here at exit.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Write the bound address here once listening (for scripts using port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Serve /metrics (Prometheus text) and /status (JSON) over HTTP on this local TCP address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// gossip | sync (`centralized` is `rumor up`'s)  [up.mode]
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// `sync` mode: every sync peer's address in index order, comma-separated, this one
    /// included  [up.sync_peers]
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    pub sync_peers: Vec<SocketAddr>,
    /// `sync` mode: this peer's index in --sync-peers (default: where its address is)
    ///  [up.sync_index]
    #[arg(long, allow_negative_numbers = true,
          value_parser = whole::<usize>("up.sync_index", 0))]
    pub sync_index: Option<usize>,
    /// `sync` mode: longest wait at a barrier, e.g. `30s`  [up.sync_timeout]
    #[arg(long, allow_hyphen_values = true, value_parser = duration("up.sync_timeout"))]
    pub sync_timeout: Option<Duration>,
    /// Training settings.
    #[command(flatten)]
    pub train: TrainFlags,
}

impl TrainFlags {
    /// The config file (or defaults) with these flags applied, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut c);
        Ok(c)
    }

    fn apply(&self, c: &mut Config) {
        let t = &mut c.train;
        set(&mut t.dataset, &self.dataset);
        set(&mut t.model, &self.model);
        if self.non_iid.is_some() {
            t.non_iid_alpha = self.non_iid;
        }
        set(&mut t.epochs, &self.epochs);
        set(&mut t.text_sharding, &self.text_sharding);
        if self.tokens.is_some() {
            t.tokens = self.tokens;
        }
        set(&mut t.lr_schedule, &self.lr_schedule);
        set(&mut t.device, &self.device);
        if self.max_train_time.is_some() {
            t.max_train_time = self.max_train_time;
        }
        set(&mut t.batch_size, &self.batch_size);
        set(&mut t.lr, &self.lr);
        set(&mut t.lr_scaling, &self.lr_scaling);
        set(&mut t.publish_every, &self.publish_every);
        set(&mut t.delta_compression, &self.delta_compression);
        set(&mut t.outer_optimizer, &self.outer_optimizer);
        set(&mut t.outer_lr, &self.outer_lr);
        set(&mut t.outer_momentum, &self.outer_momentum);
        set(&mut t.eval_every, &self.eval_every);
        set(&mut t.rng_seed, &self.rng_seed);
        set(&mut t.threads, &self.threads);
        set(&mut c.gossip.fanout, &self.fanout);
        set(&mut c.peer.min_peers, &self.min_peers);
        set(&mut c.peer.join_timeout, &self.join_timeout);
        set(&mut c.peer.drain_timeout, &self.drain_timeout);
        set(&mut c.peer.leave_grace, &self.leave_grace);
        if let Some(p) = self.loss {
            // Every datagram crosses exactly one sender's socket: dropping P on send makes
            // each link lose P of its datagrams (dropping both ways would lose 1 − (1 − P)²).
            c.loss.loss_out = p;
        }
        set(&mut c.loss.loss_in, &self.loss_in);
        set(&mut c.loss.loss_out, &self.loss_out);
        set(&mut c.loss.seed, &self.loss_seed);
        set(&mut c.transport.congestion, &self.congestion);
        for (name, factor) in &self.slowdown {
            c.train.slowdown.insert(name.clone(), *factor);
        }
    }
}

impl UpArgs {
    /// The effective config for `up`, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = self.train.load_config()?;
        set(&mut c.up.peers, &self.peers);
        set(&mut c.up.mode, &self.mode);
        set(&mut c.up.centralized_lr, &self.centralized_lr);
        set(&mut c.up.sync_timeout, &self.sync_timeout);
        c.validate()?;
        Ok(c)
    }
}

/// `--seed`: an address, or a DNS name to resolve again and again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedArg {
    /// `IP:PORT`.
    Addr(SocketAddr),
    /// `dns:NAME:PORT`.
    Dns(crate::net::discovery::DnsSeed),
}

fn parse_seed(s: &str) -> Result<SeedArg, String> {
    if s.starts_with("dns:") {
        return s.parse().map(SeedArg::Dns);
    }
    s.parse().map(SeedArg::Addr).map_err(|_| {
        format!("`{s}`: expected IP:PORT, or dns:NAME:PORT for a name resolved again and again")
    })
}

/// `--shard`: a fixed shard or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    /// From the cluster engine ([`crate::placement`]).
    Auto,
    /// `K/N`.
    Fixed(ShardSpec),
}

impl FromStr for ShardArg {
    type Err = <ShardSpec as FromStr>::Err;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(Self::Auto)
        } else {
            s.parse().map(Self::Fixed)
        }
    }
}

impl PeerArgs {
    /// The effective config for `peer`, validated. `--name auto` and `--shard auto` are read
    /// from the cluster engine's environment ([`crate::placement::detect_here`]).
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = self.train.load_config()?;
        let auto_name = self.name.as_deref() == Some("auto");
        let auto_shard = self.shard == Some(ShardArg::Auto);
        if auto_name || auto_shard {
            let placement =
                crate::placement::detect_here(self.replicas).map_err(|e| ConfigError::Invalid {
                    key: if auto_shard {
                        "train.shard"
                    } else {
                        "peer.name"
                    },
                    message: format!("auto: {e}"),
                })?;
            tracing::info!(
                engine = ?placement.engine,
                rank = placement.rank,
                peers = placement.count,
                name = %placement.name,
                "placement from the cluster engine"
            );
            if auto_name {
                c.peer.name = placement.name.clone();
            }
            if auto_shard {
                c.train.shard = placement.shard();
            }
        }
        let p = &mut c.peer;
        if !auto_name {
            set(&mut p.name, &self.name);
        }
        set(&mut p.listen, &self.listen);
        if self.advertise.is_some() {
            p.advertise = self.advertise;
        }
        if !self.seeds.is_empty() {
            p.seeds = self
                .seeds
                .iter()
                .filter_map(|s| match s {
                    SeedArg::Addr(a) => Some(*a),
                    SeedArg::Dns(_) => None,
                })
                .collect();
            p.dns_seeds = self
                .seeds
                .iter()
                .filter_map(|s| match s {
                    SeedArg::Dns(d) => Some(d.clone()),
                    SeedArg::Addr(_) => None,
                })
                .collect();
        }
        set(&mut p.certs, &self.certs);
        if self.revocation_list.is_some() {
            p.revocation_list = self.revocation_list.clone();
        }
        set(&mut p.data_dir, &self.data_dir);
        p.linger |= self.linger;
        if self.audit_log.is_some() {
            p.audit_log = self.audit_log.clone();
        }
        if let Some(ShardArg::Fixed(shard)) = self.shard {
            c.train.shard = shard;
        }
        set(&mut c.up.mode, &self.mode);
        if !self.sync_peers.is_empty() {
            c.up.sync_peers = self.sync_peers.clone();
        }
        if self.sync_index.is_some() {
            c.up.sync_index = self.sync_index;
        }
        set(&mut c.up.sync_timeout, &self.sync_timeout);
        c.validate()?;
        Ok(c)
    }
}

fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *slot = v.clone();
    }
}

mod parse;
#[cfg(test)]
mod tests;
