//! The tokio shell around one peer: a task that owns the [`Core`] and drives it with decoded
//! messages from the QUIC transport, timers and reports from the trainer thread, and carries
//! out what the core asks (sends, trainer commands). It makes no protocol decisions.

pub mod observe;
pub mod sender;
pub mod trainer;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn, Instrument};

use crate::certs::PeerIdentity;
use crate::data::Dataset;
use crate::model::{self, ModelSpec};
use crate::net::{Transport, TransportConfig};
use crate::ratelog::RateLimitedLog;
use observe::{Observer, Observers};
use rumor_proto::core::{
    decide_resume, CheckpointFound, Core, CoreConfig, CoreStats, Event, LifecycleConfig, LocalPeer,
    RestoredState, ResumeDecision, ResumeRefusal,
};
use rumor_proto::version_vector::VersionVector;
use rumor_proto::wire::{Lifecycle, PeerId};
use sender::Sender;
use trainer::{FromTrainer, ToTrainer, TrainPlan, TrainProgress, TrainerHandle};

/// Why a peer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data dir could not be created or written (checked at start by creating, writing and
    /// fsyncing a probe file in it). A full disk reads "No space left on device".
    #[error("data dir {path}: {source}{}", storage_hint(source))]
    DataDir {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data dir, or one of its parents, exists as something other than a directory.
    #[error(transparent)]
    NotADirectory(#[from] NotADirectory),
    /// The peer id file exists but does not hold a UUID.
    #[error("peer id file {0} is corrupt (expected a UUID)")]
    BadPeerId(PathBuf),
    /// The transport could not start.
    #[error("transport: {0}")]
    Net(#[from] crate::net::NetError),
    /// No seed welcomed this peer before the join timeout. The text says, per seed, what became
    /// of the last join request: e.g. "seed 127.0.0.1:7000 refused this peer's certificate (TLS
    /// alert certificate_unknown): ...", "seed 127.0.0.1:7000 presented a certificate from
    /// another cluster CA, ...", "seed 127.0.0.1:7000 did not answer (...)".
    #[error("no seed accepted us within {0:?}: {1}")]
    JoinTimeout(Duration, String),
    /// `--resume` with no usable checkpoint, or a checkpoint of another model.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The model failed (shapes, candle).
    #[error("model: {0}")]
    Model(#[from] model::ModelError),
    /// The trainer thread failed.
    #[error("trainer failed: {0}")]
    Trainer(String),
}

/// A directory that cannot be used or created because a file (or anything else that is not a
/// directory) is in its place, or in the place of one of its parents. Said plainly, where
/// `create_dir_all` would only say "File exists" or "Not a directory".
#[derive(Debug, thiserror::Error)]
#[error("{what} {} {}", path.display(), in_the_way(path, blocker))]
pub struct NotADirectory {
    /// What the directory is for, e.g. "data dir".
    pub what: &'static str,
    /// The directory wanted.
    pub path: PathBuf,
    /// What is in the way: `path` itself or one of its parents.
    pub blocker: PathBuf,
}

fn in_the_way(path: &Path, blocker: &Path) -> String {
    if path == blocker {
        "exists and is not a directory".into()
    } else {
        format!(
            "cannot be created: {} exists and is not a directory",
            blocker.display()
        )
    }
}

/// Checks that `path` is a directory or can be created as one: neither it nor any of its
/// parents exists as a file (or a dangling link). `what` names the directory in the error.
/// Missing paths are fine; other failures are left to whoever creates the directory.
///
/// # Errors
/// [`NotADirectory`] naming `path` and what is in the way.
pub fn check_dir_path(what: &'static str, path: &Path) -> Result<(), NotADirectory> {
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let blocked = match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => true,
            // Absent (look further up), or a link to nothing, which is in the way.
            Err(_) => p.symlink_metadata().is_ok(),
        };
        if blocked {
            return Err(NotADirectory {
                what,
                path: path.to_path_buf(),
                blocker: p.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// A hint appended to I/O errors that an operator can act on.
fn storage_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            " (the disk is full: free space or pick another --data-dir)"
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            " (not writable by this user: fix permissions or pick another --data-dir)"
        }
        std::io::ErrorKind::NotADirectory => " (a path component is a file, not a directory)",
        _ => "",
    }
}

/// Everything one peer needs.
#[derive(Clone)]
pub struct PeerOptions {
    /// Display name (the certificate name).
    pub name: String,
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Address to advertise; default the bound address.
    pub advertise: Option<SocketAddr>,
    /// Seeds to join through.
    pub seeds: Vec<SocketAddr>,
    /// Certificates for mutual TLS.
    pub identity: Arc<PeerIdentity>,
    /// Directory for the peer id, checkpoints and metrics.
    pub data_dir: PathBuf,
    /// Continue from the checkpoint in `data_dir`.
    pub resume: bool,
    /// Initial parameters θ₀ (used when starting a cluster; joiners take the seed's snapshot).
    pub initial: Vec<f32>,
    /// The training plan.
    pub plan: TrainPlan,
    /// This peer's shard of the training set.
    pub shard: Arc<Dataset>,
    /// The test set.
    pub test: Arc<Dataset>,
    /// Protocol settings.
    pub core: CoreConfig,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Members to know before training.
    pub min_peers: usize,
    /// Longest wait to join and reach `min_peers`.
    pub join_timeout: Duration,
    /// Longest drain.
    pub drain_timeout: Duration,
    /// Checkpoint period while running.
    pub checkpoint_interval: Duration,
    /// Most deltas and snapshots in flight to one destination.
    pub max_inflight_per_peer: usize,
    /// A send not acknowledged after this long is abandoned.
    pub send_timeout: Duration,
    /// Seed for the protocol RNG.
    pub rng_seed: u64,
    /// Whether to train at all; false runs membership and gossip only (benchmarks).
    pub train: bool,
    /// Datagrams the peer's socket drops on purpose (inactive: none).
    pub loss: crate::net::lossy::LossConfig,
}

/// A live view of a peer, for tables and tests. Updated by the peer task.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// Display name.
    pub name: String,
    /// Peer id (nil until started).
    pub peer_id: PeerId,
    /// Advertised address (None until bound).
    pub addr: Option<SocketAddr>,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Deltas published by this peer.
    pub version: u64,
    /// Deltas folded into the base (all origins).
    pub applied: u64,
    /// Live members known, itself included.
    pub peers_known: usize,
    /// Optimizer steps.
    pub step: u64,
    /// Samples processed.
    pub samples: u64,
    /// Last training loss.
    pub train_loss: Option<f32>,
    /// Last test accuracy of the base.
    pub test_accuracy: Option<f32>,
    /// UDP bytes sent (quinn counters).
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Envelopes dropped as duplicates.
    pub duplicates_dropped: u64,
    /// The members this peer knows, with their status as it sees them.
    pub members: Vec<MemberSummary>,
    /// Suspicions this peer raised.
    pub suspicions_raised: u64,
    /// Members this peer declared dead.
    pub members_declared_dead: u64,
}

impl PeerStatus {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            peer_id: PeerId::nil(),
            addr: None,
            lifecycle: Lifecycle::Starting,
            version: 0,
            applied: 0,
            peers_known: 0,
            step: 0,
            samples: 0,
            train_loss: None,
            test_accuracy: None,
            bytes_sent: 0,
            bytes_received: 0,
            duplicates_dropped: 0,
            members: Vec::new(),
            suspicions_raised: 0,
            members_declared_dead: 0,
        }
    }
}

/// A member as the peer saw it at exit.
#[derive(Clone, Debug, Serialize)]
pub struct MemberSummary {
    /// Peer id.
    pub peer_id: PeerId,
    /// Display name.
    pub name: String,
    /// Liveness status.
    pub status: String,
    /// Incarnation.
    pub incarnation: u64,
    /// Lifecycle state.
    pub lifecycle: String,
}

/// What a peer ends with.
#[derive(Clone, Debug)]
pub struct PeerOutcome {
    /// Peer id.
    pub peer_id: PeerId,
    /// Display name.
    pub name: String,
    /// The final base (flat).
    pub base: Vec<f32>,
    /// The deltas folded into it.
    pub applied: VersionVector,
    /// Deltas this peer published.
    pub version: u64,
    /// Test accuracy of the final base.
    pub test_accuracy: f32,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples processed.
    pub samples: u64,
    /// Whether the drain ended consistent (false: the drain deadline passed first).
    pub drained: bool,
    /// Members known at exit.
    pub members: Vec<MemberSummary>,
    /// Protocol counters at exit.
    pub stats: CoreStats,
    /// Transport counters at exit (UDP bytes, handshakes accepted and rejected).
    pub transport: crate::net::TransportStats,
    /// Seconds from start to exit.
    pub wall_seconds: f64,
}

/// A peer running in this process.
pub struct PeerHandle {
    /// Live status.
    pub status: Arc<Mutex<PeerStatus>>,
    /// The bound address, once known.
    pub addr: watch::Receiver<Option<SocketAddr>>,
    /// The latest status snapshot (membership view, version vector, counters), for
    /// `/status`, `/metrics` and dashboards.
    pub snapshot: watch::Receiver<Arc<crate::metrics::StatusSnapshot>>,
    /// Recent gossip events of this peer (bounded; a dashboard drains it).
    pub events: crate::metrics::EventLog,
    /// While true the peer is frozen: its trainer and core do nothing.
    pub paused: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<Result<PeerOutcome, NodeError>>,
}

impl PeerHandle {
    /// Starts a peer on the current tokio runtime.
    pub fn spawn(options: PeerOptions) -> Self {
        let status = Arc::new(Mutex::new(PeerStatus::new(&options.name)));
        let (addr_tx, addr_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let observers = Observers::default();
        let snapshot = observers.snapshot.subscribe();
        let events = observers.events.clone();
        let paused = observers.paused.clone();
        let span = tracing::info_span!("peer", peer = %options.name);
        let task = tokio::spawn(
            run_peer_observed(options, status.clone(), addr_tx, stop_rx, observers)
                .instrument(span),
        );
        Self {
            status,
            addr: addr_rx,
            snapshot,
            events,
            paused,
            stop: Arc::new(stop_tx),
            task,
        }
    }

    /// Freezes (true) or resumes (false) the peer's trainer and core, as an operator simulating
    /// a stall. Messages wait in the transport's queue meanwhile.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether the peer is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Aborts the peer at once, as a crash: no leave, no final save (the last periodic
    /// checkpoint stays). Its trainer thread stops at its next step.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// Whether the peer task has ended (finished, failed or killed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the bound address (None if the peer failed before binding).
    pub async fn bound_addr(&mut self) -> Option<SocketAddr> {
        loop {
            if let Some(addr) = *self.addr.borrow() {
                return Some(addr);
            }
            if self.addr.changed().await.is_err() {
                return *self.addr.borrow();
            }
        }
    }

    /// Asks the peer to stop training, leave gracefully and save.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// A handle that asks the peer to stop when `true` is sent.
    pub fn stop_sender(&self) -> Arc<watch::Sender<bool>> {
        self.stop.clone()
    }

    /// Waits for the peer to finish.
    pub async fn wait(self) -> Result<PeerOutcome, NodeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Trainer(format!(
                "peer task ended abnormally: {e}"
            ))),
        }
    }
}

/// Reads or creates the peer id stored in `data_dir/peer_id`.
pub fn load_or_create_peer_id(data_dir: &Path) -> Result<PeerId, NodeError> {
    let path = data_dir.join("peer_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| NodeError::BadPeerId(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = PeerId::from_uuid(uuid::Uuid::now_v7());
            write_atomic(&path, id.to_string().as_bytes())?;
            Ok(id)
        }
        Err(source) => Err(NodeError::DataDir { path, source }),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let err = |source| NodeError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Checks that `data_dir` exists (creating it) and takes writes: creates a probe file in it,
/// writes a few bytes, fsyncs and removes it. Run at peer start so that an unwritable data dir
/// or a full disk is a clear error before the peer joins, not a warning hours later.
///
/// # Errors
/// [`NodeError::NotADirectory`] when the data dir or a parent is a file;
/// [`NodeError::DataDir`] naming the directory or probe file and the I/O cause.
pub fn probe_data_dir(data_dir: &Path) -> Result<(), NodeError> {
    check_dir_path("data dir", data_dir)?;
    std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let probe = data_dir.join(format!(".write-probe-{}", std::process::id()));
    let err = |source| NodeError::DataDir {
        path: probe.clone(),
        source,
    };
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| {
            f.write_all(b"rumor write probe\n")?;
            f.sync_all()
        })
        .map_err(err);
    let removed = std::fs::remove_file(&probe);
    written?;
    removed.map_err(err)
}

/// Whether a checkpoint load failed because the files are damaged (corrupt, truncated,
/// inconsistent, half missing), as opposed to absent altogether or unreadable for another reason.
fn checkpoint_is_damaged(e: &NodeError) -> bool {
    use model::ModelError as M;
    match e {
        NodeError::Model(
            M::ChecksumMismatch { .. }
            | M::Sidecar { .. }
            | M::Safetensors { .. }
            | M::CheckpointFormat { .. }
            | M::InvalidSpec(..)
            | M::LengthMismatch { .. },
        ) => true,
        // The sidecar is there but its tensor file is not.
        NodeError::Model(M::Io { path, source }) => {
            source.kind() == std::io::ErrorKind::NotFound
                && path
                    .file_name()
                    .is_some_and(|n| n != model::checkpoint::SIDECAR_FILE)
        }
        NodeError::Resume(_) => true,
        _ => false,
    }
}

/// The state stored beside the base in a checkpoint's sidecar.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CheckpointState {
    /// The peer's id.
    pub peer_id: PeerId,
    /// The deltas folded into the saved base.
    pub applied: VersionVector,
    /// The last version the peer published.
    pub published: u64,
    /// The incarnation it ran with.
    pub incarnation: u64,
    /// Optimizer steps done when it was saved.
    #[serde(default)]
    pub steps_done: u64,
}

fn save(dir: &Path, spec: &ModelSpec, core: &Core, steps_done: u64) -> Result<(), NodeError> {
    let state = CheckpointState {
        peer_id: core.id(),
        applied: core.applied().clone(),
        published: core.published(),
        incarnation: core.incarnation(),
        steps_done,
    };
    let state = serde_json::to_value(&state)
        .map_err(|e| NodeError::Resume(format!("cannot serialise checkpoint state: {e}")))?;
    model::save_checkpoint(dir, spec, core.base(), &state)?;
    Ok(())
}

/// Loads a peer's checkpoint: the base and its state.
pub fn load_checkpoint(dir: &Path) -> Result<(ModelSpec, Vec<f32>, CheckpointState), NodeError> {
    let (spec, base, state) = model::load_checkpoint(dir)?;
    let state: CheckpointState = serde_json::from_value(state)
        .map_err(|e| NodeError::Resume(format!("checkpoint state in {}: {e}", dir.display())))?;
    Ok((spec, base, state))
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct MetricsLine<'a> {
    time: f64,
    elapsed_seconds: f64,
    peer: &'a str,
    lifecycle: &'static str,
    step: u64,
    samples: u64,
    epoch: u32,
    train_loss: Option<f32>,
    test_accuracy: Option<f32>,
    flow_control_wait_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_snapshot: Option<&'a Path>,
    version: u64,
    applied: u64,
    live_members: usize,
    bytes_sent: u64,
    bytes_received: u64,
    duplicates_dropped: u64,
    deltas_applied: u64,
    anti_entropy_deltas_sent: u64,
    inexact_merges: u64,
}

/// Logs a repeating failure (a checkpoint or metrics write) once, then at most once per
/// [`WarnLimiter::PERIOD`] with the count since, and once when it recovers.
#[derive(Default)]
struct WarnLimiter {
    failures: u64,
    last_warned: Option<Instant>,
}

impl WarnLimiter {
    const PERIOD: Duration = Duration::from_secs(60);

    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::PERIOD)
        {
            self.last_warned = Some(now);
            warn!(
                failures = self.failures,
                "{what} write failed: {e} (the peer runs on; repeats are logged at most once a minute)"
            );
        }
    }

    fn recovered(&mut self, what: &str) {
        if self.failures > 0 {
            info!(failures = self.failures, "{what} writes work again");
            *self = Self::default();
        }
    }
}

/// `metrics.jsonl`, appended one whole line per `write_all` (`O_APPEND`): a crash leaves at most
/// a partial last line, which readers skip and the next open terminates. Write errors are
/// logged through a [`WarnLimiter`], never fatal.
struct MetricsFile {
    file: Option<std::fs::File>,
    started: Instant,
    warnings: WarnLimiter,
}

impl MetricsFile {
    fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| {
                warn!(
                    "cannot open {}: {e}; metrics are not written",
                    path.display()
                )
            })
            .ok();
        let mut me = Self {
            file,
            started: Instant::now(),
            warnings: WarnLimiter::default(),
        };
        if let Some(f) = me.file.as_mut() {
            if let Err(e) = terminate_torn_line(f) {
                me.warnings.failed("metrics", &e);
            }
        }
        me
    }

    fn write(&mut self, name: &str, core: &Core, transport: &Transport, progress: &TrainProgress) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let stats = core.stats();
        let net = transport.stats();
        let line = MetricsLine {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            peer: name,
            lifecycle: core.lifecycle().as_str(),
            step: progress.step,
            samples: progress.samples,
            epoch: progress.epoch,
            train_loss: progress.train_loss,
            test_accuracy: progress.test_accuracy,
            flow_control_wait_seconds: progress.flow_control_wait_seconds,
            eval_snapshot: progress.eval_snapshot.as_deref(),
            version: core.published(),
            applied: core.applied().len(),
            live_members: core.live_count(),
            bytes_sent: net.bytes_sent,
            bytes_received: net.bytes_received,
            duplicates_dropped: stats.duplicates_dropped,
            deltas_applied: stats.deltas_applied,
            anti_entropy_deltas_sent: stats.anti_entropy_deltas_sent,
            inexact_merges: stats.inexact_merges,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            // One write per line, appended: a crash leaves at most a partial last line.
            match file.write_all(text.as_bytes()) {
                Ok(()) => self.warnings.recovered("metrics"),
                Err(e) => {
                    self.warnings.failed("metrics", &e);
                    // A partial line may have gone out (disk full): end it, so the next line
                    // starts clean; if even that fails, the next open does it.
                    let _ = file.write_all(b"\n");
                }
            }
        }
    }
}

/// If `file` is non-empty and its last byte is not a newline (a line torn by a crash), appends
/// one, so the next line does not run into the fragment.
fn terminate_torn_line(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// How often a peer that waits for a seed's welcome says so (INFO), with what became of its
/// join requests.
const SEED_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Runs one peer to completion: bind, join, train, drain, save, leave.
pub async fn run_peer(
    options: PeerOptions,
    status: Arc<Mutex<PeerStatus>>,
    addr_tx: watch::Sender<Option<SocketAddr>>,
    stop: watch::Receiver<bool>,
) -> Result<PeerOutcome, NodeError> {
    run_peer_observed(options, status, addr_tx, stop, Observers::default()).await
}

/// [`run_peer`], also reporting events and snapshots to `observers` and honouring its pause flag.
pub async fn run_peer_observed(
    options: PeerOptions,
    status: Arc<Mutex<PeerStatus>>,
    addr_tx: watch::Sender<Option<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    observers: Observers,
) -> Result<PeerOutcome, NodeError> {
    let mut observer = Observer::new(&options.name, observers);
    let started = Instant::now();
    probe_data_dir(&options.data_dir)?;
    let peer_id = load_or_create_peer_id(&options.data_dir)?;
    let (transport, mut incoming) = Transport::bind_lossy(
        options.listen,
        &options.identity,
        options.transport.clone(),
        options.loss.clone(),
    )
    .await?;
    let addr = options.advertise.unwrap_or_else(|| transport.local_addr());
    let _ = addr_tx.send(Some(addr));
    let me = LocalPeer {
        id: peer_id,
        name: options.name.clone(),
        addr,
    };
    let now = Instant::now();
    let mut plan = options.plan.clone();
    let restored = resume_state(&options, peer_id, &mut plan)?;
    // The lifecycle policy runs in the core; the driver acts on its events.
    let mut config = options.core.clone();
    config.lifecycle = LifecycleConfig {
        min_peers: options.train.then_some(options.min_peers),
        join_timeout: Some(options.join_timeout),
        drain_timeout: Some(options.drain_timeout),
        checkpoint_interval: Some(options.checkpoint_interval),
    };
    let mut core = match restored {
        Some(restored) => Core::restore(
            config,
            me,
            restored,
            options.seeds.clone(),
            options.rng_seed,
            now,
        ),
        None => Core::new(
            config,
            me,
            options.initial.clone(),
            options.seeds.clone(),
            options.rng_seed,
            now,
        ),
    };
    info!(%addr, %peer_id, seeds = ?options.seeds, "peer started");
    {
        let mut s = lock(&status);
        s.peer_id = peer_id;
        s.addr = Some(addr);
        s.lifecycle = Lifecycle::Joining;
    }

    let live = Arc::new(AtomicUsize::new(core.live_count()));
    let unacked = Arc::new(AtomicUsize::new(0));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let mut trainer: Option<TrainerHandle> = None;
    let (mut sender, mut outcomes) = Sender::new(
        transport.clone(),
        options.max_inflight_per_peer,
        options.send_timeout,
    );
    let seeds: Vec<SocketAddr> = options
        .seeds
        .iter()
        .copied()
        .filter(|s| *s != addr)
        .collect();
    sender.watch_seeds(&seeds);
    let mut next_seed_report = now + SEED_REPORT_INTERVAL;
    let mut metrics = MetricsFile::open(&options.data_dir.join("metrics.jsonl"));
    let mut checkpoint_warnings = WarnLimiter::default();
    let mut progress = TrainProgress {
        step: plan.start_step,
        ..TrainProgress::default()
    };
    let mut drained = false;
    let mut drain_ended = false;
    let mut stopping = false;
    let mut last_status = Instant::now();
    let mut remote_logs = RemoteLogs::default();
    let mut local_refusals = RateLimitedLog::new(crate::ratelog::LOG_INTERVAL);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // The member whose message this turn handles: rejections it causes are logged under
        // its name (origins in a message cost nothing to invent; certificates do).
        let mut delivered_by: Option<Arc<str>> = None;
        let wake = tokio::time::Instant::from_std(core.poll_timeout());
        // Paused: nothing but the tick and a stop request wakes the loop; messages wait in the
        // transport's queue and timers fire late, as in a stalled process.
        let paused = observer.paused();
        if let Some(t) = &trainer {
            t.pause.store(paused, Ordering::SeqCst);
        }
        tokio::select! {
            msg = incoming.recv(), if !paused => {
                let Some(msg) = msg else { break };
                observer.heard();
                if let Err(e) = core.handle_bytes(Instant::now(), msg.from, &msg.bytes) {
                    debug!(from = %msg.from, member = %msg.member, "dropped a frame: {e}");
                }
                delivered_by = Some(msg.member);
            }
            Some(o) = outcomes.recv() => {
                core.send_outcome(Instant::now(), o.to, o.origin, o.version, o.delivered);
            }
            report = reports.recv(), if !paused => {
                match report {
                    Some(FromTrainer::Publish { weight, values }) => {
                        publish_local(&mut core, weight, values, progress.step, plan.lr, &mut local_refusals)?;
                    }
                    Some(FromTrainer::Progress(p)) => {
                        observer.progress(&p);
                        progress = p;
                        metrics.write(&options.name, &core, &transport, &progress);
                    }
                    Some(FromTrainer::Finished(p)) => {
                        progress.step = p.step;
                        progress.samples = p.samples;
                        info!(steps = p.step, samples = p.samples, "training budget spent, draining");
                        core.start_drain(Instant::now());
                    }
                    Some(FromTrainer::Failed(message)) => return Err(NodeError::Trainer(message)),
                    None => {}
                }
            }
            _ = tokio::time::sleep_until(wake), if !paused => core.handle_timeout(Instant::now()),
            _ = tick.tick() => {}
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    info!("stop requested: leaving gracefully");
                    stopping = true;
                }
            }
        }

        // Carry out what the core asked.
        sender.flush(&mut core);
        while let Some(event) = core.poll_event() {
            observer.event(&core, &event);
            // The lifecycle's events: the core decided, the driver carries it out.
            match &event {
                // A member that left closes its own connections once its last messages are out
                // (its Leave can overtake its last delta, so closing here could cut it off).
                Event::MemberDown(m) if m.status == rumor_proto::wire::MemberStatus::Dead => {
                    sender.forget(m.addr);
                }
                Event::TrainingStarted {
                    members,
                    short_of_min_peers,
                } if !stopping => {
                    if *short_of_min_peers {
                        warn!(
                            known = members,
                            wanted = options.min_peers,
                            "join timeout: training with the members known"
                        );
                    }
                    info!(members, "training starts");
                    let handle = TrainerHandle::spawn(
                        plan.clone(),
                        options.shard.clone(),
                        options.test.clone(),
                        core.base().to_vec(),
                        trainer::Gauges {
                            live: live.clone(),
                            unacked: unacked.clone(),
                        },
                        report_tx.clone(),
                        options.name.clone(),
                    )
                    .map_err(|e| NodeError::Trainer(format!("cannot start the thread: {e}")))?;
                    trainer = Some(handle);
                }
                Event::JoinFailed if !stopping => {
                    transport.close().await;
                    return Err(NodeError::JoinTimeout(
                        options.join_timeout,
                        sender.seed_log().summary(),
                    ));
                }
                Event::DrainEnded { drained: complete } => {
                    if !complete {
                        warn!("drain deadline passed before every peer was consistent");
                    }
                    drained = *complete;
                    drain_ended = true;
                }
                Event::CheckpointDue => {
                    match save(&options.data_dir, &options.plan.spec, &core, progress.step) {
                        Ok(()) => checkpoint_warnings.recovered("checkpoint"),
                        Err(e) => checkpoint_warnings.failed("checkpoint", &e),
                    }
                }
                _ => {}
            }
            handle_event(
                event,
                trainer.as_ref(),
                delivered_by.as_ref(),
                &mut remote_logs,
            );
        }
        live.store(core.live_count(), Ordering::SeqCst);
        unacked.store(core.own_deltas_unacked(), Ordering::SeqCst);
        let now = Instant::now();

        if drain_ended {
            break;
        }
        if !core.is_joined() && !stopping && now >= next_seed_report {
            next_seed_report = now + SEED_REPORT_INTERVAL;
            let log = sender.seed_log();
            let sent: u32 = log.states().iter().map(|s| s.attempts).sum();
            info!(
                "waiting for seeds ({}s of {}s, {sent} join requests sent): {}",
                now.saturating_duration_since(started).as_secs(),
                options.join_timeout.as_secs(),
                log.summary()
            );
        }
        if stopping {
            // Graceful leave: the trainer publishes what it learned since its last delta.
            if let Some(t) = trainer.take() {
                t.stop();
            }
            while let Ok(report) = reports.try_recv() {
                if let FromTrainer::Publish { weight, values } = report {
                    publish_local(
                        &mut core,
                        weight,
                        values,
                        progress.step,
                        plan.lr,
                        &mut local_refusals,
                    )?;
                }
            }
            break;
        }
        if now.saturating_duration_since(last_status) >= Duration::from_millis(50) {
            last_status = now;
            update_status(&status, &core, &transport, &progress);
            observer.refresh(&core, &transport, &lock(&status));
        }
    }

    // Leave: say goodbye, let the sends finish, save, evaluate.
    if let Some(t) = trainer.take() {
        t.stop();
    }
    core.leave();
    sender.flush(&mut core);
    sender.settle(Duration::from_secs(3)).await;
    // A failed final save loses at most what happened since the last periodic checkpoint; the
    // run's outcome is still worth returning.
    if let Err(e) = save(&options.data_dir, &options.plan.spec, &core, progress.step) {
        error!("final checkpoint failed: {e}; the data dir keeps the previous one");
    }
    let base = core.base().to_vec();
    let spec = options.plan.spec.clone();
    let test = options.test.clone();
    let eval_base = base.clone();
    let accuracy = tokio::task::spawn_blocking(move || {
        model::evaluate(&spec, &eval_base, &test.images, &test.labels)
    })
    .await
    .map_err(|e| NodeError::Trainer(format!("evaluation task failed: {e}")))??;
    progress.test_accuracy = Some(accuracy);
    // The final accuracy is of the final base, not of the last saved evaluation point.
    progress.eval_snapshot = None;
    metrics.write(&options.name, &core, &transport, &progress);
    update_status(&status, &core, &transport, &progress);
    observer.refresh(&core, &transport, &lock(&status));
    let net = transport.stats();
    transport.close().await;
    if sender.dropped_full() > 0 || sender.timed_out() > 0 {
        info!(
            dropped = sender.dropped_full(),
            timed_out = sender.timed_out(),
            "deltas or snapshots not sent: destination busy or unresponsive (anti-entropy repairs)"
        );
    }
    info!(
        accuracy,
        version = core.published(),
        applied = core.applied().len(),
        drained,
        "peer stopped"
    );
    let members = member_summaries(&core);
    Ok(PeerOutcome {
        peer_id,
        name: options.name,
        base,
        applied: core.applied().clone(),
        version: core.published(),
        test_accuracy: accuracy,
        bytes_sent: net.bytes_sent,
        bytes_received: net.bytes_received,
        steps: progress.step,
        samples: progress.samples,
        drained,
        members,
        stats: core.stats().clone(),
        transport: net,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// With `--resume`, what the data dir holds decides how this peer starts: the decision is
/// the protocol's ([`decide_resume`]), the file IO (loading, moving a damaged checkpoint aside)
/// is done here. Sets `plan.start_step` from a restored checkpoint.
///
/// Errors: [`NodeError::Resume`] when the resume is refused, or the IO error that kept the
/// checkpoint from being read or moved aside.
fn resume_state(
    options: &PeerOptions,
    peer_id: PeerId,
    plan: &mut TrainPlan,
) -> Result<Option<RestoredState>, NodeError> {
    let loaded = if options.resume {
        match load_checkpoint(&options.data_dir) {
            Ok(checkpoint) => Some(Ok(checkpoint)),
            Err(e) if checkpoint_is_damaged(&e) => Some(Err(e)),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let restored = match loaded {
        None => None,
        Some(loaded) => {
            let found = match &loaded {
                Ok((spec, _, state)) => CheckpointFound::Loaded {
                    same_model: *spec == options.plan.spec,
                    same_peer: state.peer_id == peer_id,
                },
                Err(_) => CheckpointFound::Damaged,
            };
            match (decide_resume(found, !options.seeds.is_empty()), loaded) {
                (ResumeDecision::Restore, Ok((_, base, state))) => {
                    plan.start_step = state.steps_done;
                    info!(
                        published = state.published,
                        applied = state.applied.len(),
                        "resuming from checkpoint"
                    );
                    Some(RestoredState {
                        base,
                        applied: state.applied,
                        published: state.published,
                        incarnation: state.incarnation,
                    })
                }
                (ResumeDecision::QuarantineAndRejoin, Err(e)) => {
                    // Never train on from θ₀ as if nothing happened: move the bad files aside
                    // and rejoin through the seeds, taking the base (and the versions this peer
                    // published, from the snapshot's applied set and the members' records of
                    // it) from a peer's snapshot.
                    let ts = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let moved = model::checkpoint::quarantine_checkpoint(&options.data_dir, ts)?;
                    error!(
                        moved = ?moved,
                        "checkpoint unreadable: {e}; moved it aside, rejoining from a peer's snapshot"
                    );
                    Some(RestoredState::lost(options.initial.clone()))
                }
                (ResumeDecision::Refuse(ResumeRefusal::OtherModel), Ok((spec, _, _))) => {
                    return Err(NodeError::Resume(format!(
                        "checkpoint holds model {spec}, this run uses {}",
                        options.plan.spec
                    )))
                }
                (ResumeDecision::Refuse(refusal), Err(e)) => {
                    return Err(NodeError::Resume(format!("{e}; {refusal}")))
                }
                (ResumeDecision::Refuse(refusal), Ok(_)) => {
                    return Err(NodeError::Resume(refusal.to_string()))
                }
                // A loaded checkpoint is never quarantined, a damaged one never restored.
                (ResumeDecision::Restore | ResumeDecision::QuarantineAndRejoin, _) => {
                    return Err(NodeError::Resume(
                        "resume decision does not fit the checkpoint found".into(),
                    ))
                }
            }
        }
    };
    Ok(restored)
}

/// Membership log lines one member's messages may cause per [`crate::ratelog::LOG_INTERVAL`]:
/// enough for a cluster of peers joining at once, not for a flood of invented records.
const MEMBERSHIP_LINES_PER_MEMBER: u32 = 64;

/// Throttles of the log lines that messages from other members cause, keyed by the member
/// that delivered the message.
struct RemoteLogs {
    /// Rejected deltas: one line per member per interval.
    rejects: RateLimitedLog<Arc<str>>,
    /// Member up, down, suspect: a burst per member per interval.
    membership: RateLimitedLog<Arc<str>>,
}

impl Default for RemoteLogs {
    fn default() -> Self {
        Self {
            rejects: RateLimitedLog::new(crate::ratelog::LOG_INTERVAL),
            membership: RateLimitedLog::with_burst(
                crate::ratelog::LOG_INTERVAL,
                MEMBERSHIP_LINES_PER_MEMBER,
            ),
        }
    }
}

/// Hands a local delta from the trainer to the core. The trainer checks its deltas, so a
/// non-finite one here still means training diverged: an error naming the learning rate `lr`,
/// which stops the peer. Any other refusal is logged, at most once per reason every
/// [`crate::ratelog::LOG_INTERVAL`].
fn publish_local(
    core: &mut Core,
    weight: f32,
    values: Vec<f32>,
    step: u64,
    lr: f64,
    log: &mut RateLimitedLog<rumor_proto::core::RejectReason>,
) -> Result<(), NodeError> {
    match core.publish(Instant::now(), weight, values) {
        Ok(_) => Ok(()),
        Err(rumor_proto::core::RejectReason::NonFinite) => {
            Err(NodeError::Model(model::ModelError::Diverged {
                step,
                what: "a local delta",
                lr,
            }))
        }
        Err(reason) => {
            if let Some(suppressed) = log.hit(Instant::now(), &reason) {
                warn!(
                    reason = reason.as_str(),
                    suppressed, "local delta refused by the core"
                );
            }
            Ok(())
        }
    }
}

fn handle_event(
    event: Event,
    trainer: Option<&TrainerHandle>,
    delivered_by: Option<&Arc<str>>,
    logs: &mut RemoteLogs,
) {
    // Events caused by a timer of this peer (a probe that failed) are keyed "(local)".
    let member: Arc<str> = delivered_by
        .cloned()
        .unwrap_or_else(|| Arc::from("(local)"));
    let mut membership_line = || logs.membership.hit(Instant::now(), &member).is_some();
    match event {
        Event::DeltaApplied { values, .. } => {
            if let Some(t) = trainer {
                let _ = t.commands.send(ToTrainer::ApplyDelta(values));
            }
        }
        Event::BaseReplaced { base, exact } => {
            if !exact {
                warn!("snapshot installed inexactly: some deltas were no longer in the log");
            }
            if let Some(t) = trainer {
                let _ = t.commands.send(ToTrainer::ReplaceBase(base));
            }
        }
        Event::Joined { via, members } => info!(%via, members, "joined the cluster"),
        Event::MemberUp(m) if membership_line() => {
            info!(peer = %m.name, addr = %m.addr, "member up")
        }
        Event::MemberDown(m) if membership_line() => {
            info!(peer = %m.name, status = m.status.as_str(), "member down")
        }
        Event::MemberSuspect(m) if membership_line() => {
            info!(peer = %m.name, incarnation = m.incarnation, "member suspected")
        }
        Event::MemberUp(_) | Event::MemberDown(_) | Event::MemberSuspect(_) => {}
        // The lifecycle's events are the driver loop's.
        Event::TrainingStarted { .. }
        | Event::JoinFailed
        | Event::DrainEnded { .. }
        | Event::CheckpointDue => {}
        Event::GapDetected { origin, missing } => {
            debug!(%origin, ?missing, "gap in deltas; anti-entropy will pull them")
        }
        Event::DeltaRejected { origin, reason } => {
            // Every rejection is counted in the core's stats; the log says so at most once per
            // delivering member per interval.
            if let Some(suppressed) = logs.rejects.hit(Instant::now(), &member) {
                warn!(
                    %member,
                    %origin,
                    reason = reason.as_str(),
                    suppressed_since_last_log = suppressed,
                    "delta rejected (logged at most once per member every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                )
            }
        }
    }
}

fn update_status(
    status: &Arc<Mutex<PeerStatus>>,
    core: &Core,
    transport: &Transport,
    progress: &TrainProgress,
) {
    let net = transport.stats();
    let mut s = lock(status);
    s.lifecycle = core.lifecycle();
    s.version = core.published();
    s.applied = core.applied().len();
    s.peers_known = core.live_count();
    s.step = progress.step;
    s.samples = progress.samples;
    if progress.train_loss.is_some() {
        s.train_loss = progress.train_loss;
    }
    if progress.test_accuracy.is_some() {
        s.test_accuracy = progress.test_accuracy;
    }
    s.bytes_sent = net.bytes_sent;
    s.bytes_received = net.bytes_received;
    s.duplicates_dropped = core.stats().duplicates_dropped;
    s.suspicions_raised = core.stats().suspicions_raised;
    s.members_declared_dead = core.stats().members_declared_dead;
    s.members = member_summaries(core);
}

fn member_summaries(core: &Core) -> Vec<MemberSummary> {
    core.members()
        .map(|m| MemberSummary {
            peer_id: m.peer_id,
            name: m.name.clone(),
            status: m.status.as_str().to_string(),
            incarnation: m.incarnation,
            lifecycle: m.lifecycle.as_str().to_string(),
        })
        .collect()
}

/// Locks a status mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_in_the_data_dir_reads_as_a_full_disk() {
        let e = NodeError::DataDir {
            path: PathBuf::from("/data/peer"),
            source: std::io::Error::from_raw_os_error(28), // ENOSPC
        };
        let text = e.to_string();
        assert!(text.contains("/data/peer"), "{text}");
        assert!(text.contains("disk is full"), "{text}");
        let e = NodeError::DataDir {
            path: PathBuf::from("/data/peer"),
            source: std::io::Error::from_raw_os_error(30), // EROFS
        };
        assert!(e.to_string().contains("not writable"), "{e}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_said_plainly() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x")?;
        let err = probe_data_dir(&file).expect_err("a file is not a data dir");
        assert!(matches!(err, NodeError::NotADirectory(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("data dir {} exists and is not a directory", file.display())
        );
        let below = file.join("peer-0");
        let err = probe_data_dir(&below).expect_err("a file as a parent");
        assert_eq!(
            err.to_string(),
            format!(
                "data dir {} cannot be created: {} exists and is not a directory",
                below.display(),
                file.display()
            )
        );
        #[cfg(unix)]
        {
            let dangling = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling)?;
            let err = probe_data_dir(&dangling).expect_err("a dangling link");
            assert!(err.to_string().contains("is not a directory"), "{err}");
        }
        // A missing dir below an existing one is created, as before.
        probe_data_dir(&dir.path().join("a/b"))?;
        assert!(dir.path().join("a/b").is_dir());
        check_dir_path("output dir", dir.path())?;
        Ok(())
    }

    #[test]
    fn torn_metrics_line_is_terminated_on_open() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, b"{\"step\": 1}\n{\"step\": 2, \"tra")?;
        let _ = MetricsFile::open(&path);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.ends_with('\n'), "{text:?}");
        // Opening again adds nothing; the whole lines still parse, the torn one is skipped.
        let _ = MetricsFile::open(&path);
        assert_eq!(std::fs::read_to_string(&path)?, text);
        let parsed = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .count();
        assert_eq!(parsed, 1);
        Ok(())
    }
}
