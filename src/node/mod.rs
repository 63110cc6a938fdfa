//! The tokio shell around one peer: a task that owns the [`Core`] and drives it with decoded
//! messages from the QUIC transport, timers and reports from the trainer thread, and carries
//! out what the core asks (sends, trainer commands). It makes no protocol decisions.
//!
//! Beside the driver ([`run_peer_observed`]) live its errors ([`error`]), the checkpoint it
//! saves and resumes from ([`checkpoint`]), its data dir and peer id ([`data_dir`]), the ledger
//! that keeps its published version durable ([`versions`]), its `metrics.jsonl`
//! ([`metrics_file`]), its audit log (`audit`), the status it shows ([`status`]) and the
//! revocation list it watches ([`revocation`]).

mod audit;
pub mod checkpoint;
pub mod data_dir;
mod discovery;
pub mod error;
mod events;
mod metrics_file;
pub mod observe;
mod options;
mod resume;
pub mod revocation;
pub mod runtime_lag;
pub mod sender;
pub mod status;
pub mod trainer;
pub mod versions;
mod warn_limiter;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn, Instrument};

use crate::model;
use crate::net::Transport;
use crate::ratelog::RateLimitedLog;
use crate::report::Chain;
use crate::workload::Metrics;
use audit::AuditLog;
use checkpoint::save;
use events::{handle_event, RemoteLogs};
use observe::{Observer, Observers};
use resume::resume_state;
use rumor_proto::core::{Core, Event, LocalPeer, Sender as MessageSender};
use rumor_proto::wire::Lifecycle;
use sender::Sender;
use status::{member_summaries, update_status};
use trainer::{FromTrainer, LocalDelta, TrainProgress, TrainerHandle};
use versions::VersionLedger;
use warn_limiter::WarnLimiter;

/// The poison-tolerant mutex lock, re-exported where callers have long found it.
pub use crate::lock::lock;
pub use checkpoint::{load_checkpoint, CheckpointState};
pub use data_dir::{load_or_create_peer_id, probe_data_dir};
pub use error::{check_dir_path, NodeError, NotADirectory, ResumeError, TrainerError};
pub(crate) use metrics_file::{BaselineLine, MetricsFile};
pub use options::{PeerOptions, PeerOutcome};
pub use status::{MemberSummary, PeerStatus};

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
    end_training: Arc<AtomicBool>,
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
        let end_training = observers.end_training.clone();
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
            end_training,
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

    /// Ends training now, as if the budget were spent: the trainer publishes what it learned
    /// since its last delta, then the peer drains and exits as at the end of its budget. The
    /// cluster stays consistent as long as the other members drain too (they end by budget or
    /// by this same request). A handle for this outlives the peer: see
    /// [`Self::end_training_flag`].
    pub fn end_training(&self) {
        self.end_training.store(true, Ordering::SeqCst);
    }

    /// The flag [`Self::end_training`] sets, for a signal handler that runs apart from the
    /// handle.
    pub fn end_training_flag(&self) -> Arc<AtomicBool> {
        self.end_training.clone()
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
            Err(source) => Err(NodeError::Task {
                what: "peer",
                source,
            }),
        }
    }
}

/// The next answer of `dns`; never, without DNS seeds.
async fn next_dns_answer(dns: &mut Option<discovery::DnsWatch>) -> Option<Vec<SocketAddr>> {
    match dns {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
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
    let mut revocations = match &options.revocation_list {
        Some(path) => Some(revocation::RevocationWatch::open(
            path.clone(),
            options.identity.ca.clone(),
            Instant::now(),
        )?),
        None => None,
    };
    let deny = crate::net::DenyList::new();
    for entry in revocations.iter().flat_map(|w| w.entries()) {
        deny.add(entry.key, &entry.name);
    }
    let keys = crate::net::peer_keys_denying(&options.identity, deny.clone())?;
    let own_key = keys.key_id();
    if let Some(watch) = &revocations {
        if deny.denied(&own_key).is_some() {
            return Err(NodeError::OwnCertificateRevoked {
                name: options.name.clone(),
                path: watch.path().to_path_buf(),
            });
        }
    }
    let peer_id = load_or_create_peer_id(&options.data_dir, &own_key)?;
    let mut ledger = VersionLedger::open(&options.data_dir, peer_id)?;
    let (transport, mut incoming) = Transport::bind_denying(
        options.listen,
        &options.identity,
        options.transport.clone(),
        options.loss.clone(),
        deny,
    )
    .await?;
    // Static seeds and what the DNS seeds resolve to now; both decide the advertised address
    // when the peer listens on every interface.
    let (found, mut dns) = discovery::DnsWatch::start(&options.dns_seeds).await;
    // Static seeds first, in the order given (they are tried in turn), then the new ones DNS
    // found.
    let mut start_seeds = options.seeds.clone();
    for a in found {
        if !start_seeds.contains(&a) {
            start_seeds.push(a);
        }
    }
    let addr = crate::net::discovery::advertised_addr(
        transport.local_addr(),
        options.advertise,
        &start_seeds,
    )?;
    let _ = addr_tx.send(Some(addr));
    let me = LocalPeer {
        id: peer_id,
        name: options.name.clone(),
        addr,
        keys,
    };
    let now = Instant::now();
    let mut plan = options.plan.clone();
    let card = options.workload.card();
    let restored = resume_state(&options, peer_id, &mut plan)?;
    // The lifecycle policy runs in the core; the driver acts on its events.
    let config = options.core.clone();
    let mut core = match restored {
        Some(restored) => Core::restore(
            config,
            me,
            restored,
            start_seeds.clone(),
            options.rng_seed,
            now,
        ),
        None => Core::new(
            config,
            me,
            options.initial.clone(),
            start_seeds.clone(),
            options.rng_seed,
            now,
        ),
    };
    // A checkpoint older than the last publish must not make this peer reuse versions.
    if ledger.reserved() > core.published() {
        info!(
            from = core.published(),
            to = ledger.reserved(),
            "raising the published version to what the ledger reserved before the restart"
        );
    }
    core.raise_published(ledger.reserved());
    for entry in revocations.iter().flat_map(|w| w.entries()) {
        core.revoke(now, entry.key);
    }
    info!(%addr, %peer_id, seeds = ?start_seeds, "peer started");
    {
        let mut s = lock(&status);
        s.peer_id = peer_id;
        s.addr = Some(addr);
        s.lifecycle = Lifecycle::Joining;
    }

    let live = Arc::new(AtomicUsize::new(core.live_count()));
    let unacked = Arc::new(AtomicUsize::new(0));
    let (runtime_lag, _beating) = runtime_lag::RuntimeLag::start();
    let unseen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let phase = Arc::new(trainer::PhaseGauge::default());
    let own_norm_bound = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let mut trainer: Option<TrainerHandle> = None;
    let (mut sender, mut outcomes) = Sender::new(
        transport.clone(),
        options.transport.max_inflight_per_peer,
        options.transport.send_timeout,
    );
    let seeds: Vec<SocketAddr> = start_seeds.iter().copied().filter(|s| *s != addr).collect();
    sender.watch_seeds(&seeds);
    let mut next_seed_report = now + SEED_REPORT_INTERVAL;
    let mut metrics = MetricsFile::open(&options.data_dir.join("metrics.jsonl"));
    let mut audit = AuditLog::open(options.audit_log.as_deref());
    let mut checkpoint_warnings = WarnLimiter::default();
    let mut progress = TrainProgress {
        step: plan.start_step,
        ..TrainProgress::default()
    };
    let mut drained = false;
    let mut drain_ended = false;
    let mut drain_started: Option<Instant> = None;
    let mut drain_seconds: Option<f64> = None;
    let mut drain_ended_unix: Option<f64> = None;
    let mut stopping = false;
    let mut training_end_requested = false;
    // Set by a stop request: when the peer must be gone (`leave_grace`).
    let mut leave_by: Option<Instant> = None;
    let mut last_status = Instant::now();
    let mut remote_logs = RemoteLogs::default();
    let mut local_refusals = RateLimitedLog::new(crate::ratelog::LOG_INTERVAL);
    let mut clips = RateLimitedLog::new(crate::ratelog::LOG_INTERVAL);
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
        if !training_end_requested && observer.end_training_requested() {
            training_end_requested = true;
            info!("end of training requested: the last delta is published, then the peer drains");
            // The trainer ends as at the end of its budget (FromTrainer::Finished); one that
            // has not started yet never does (Event::TrainingStarted below).
            if let Some(t) = &trainer {
                t.stop.store(true, Ordering::SeqCst);
            }
        }
        tokio::select! {
            msg = incoming.recv(), if !paused => {
                let Some(msg) = msg else { break };
                observer.heard();
                if let Err(e) = core.handle_bytes(Instant::now(), MessageSender { addr: msg.from, key: msg.key }, &msg.bytes) {
                    debug!(from = %msg.from, member = %msg.member, "dropped a frame: {}", Chain(&e));
                }
                delivered_by = Some(msg.member);
            }
            Some(o) = outcomes.recv() => {
                core.send_outcome(Instant::now(), o.to, o.origin, o.version, o.delivered);
            }
            report = reports.recv(), if !paused => {
                match report {
                    Some(FromTrainer::Publish(delta)) => {
                        let mut out = Publisher {
                            ledger: &mut ledger,
                            audit: &mut audit,
                            refusals: &mut local_refusals,
                            clips: &mut clips,
                        };
                        publish_local(&mut core, &mut out, delta, progress.step, plan.lr)?;
                        phase.lead.store(core.phase_lead(), Ordering::SeqCst);
                        phase.published.fetch_add(1, Ordering::SeqCst);
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
                        let now = Instant::now();
                        drain_started.get_or_insert(now);
                        core.start_drain(now);
                    }
                    Some(FromTrainer::Failed(e)) => return Err(TrainerError::Failed(e).into()),
                    None => {}
                }
            }
            _ = tokio::time::sleep_until(wake), if !paused => core.handle_timeout(Instant::now()),
            Some(addrs) = next_dns_answer(&mut dns), if !paused => {
                core.discovered(Instant::now(), &addrs);
            }
            _ = tick.tick() => {}
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    info!(
                        grace_seconds = options.leave_grace.as_secs_f64(),
                        "stop requested: leaving gracefully"
                    );
                    stopping = true;
                    leave_by = Some(Instant::now() + options.leave_grace);
                }
            }
        }

        // A revocation list that changed: its new certificates are cut off before the core's
        // requests go out.
        if let Some(watch) = revocations.as_mut() {
            for entry in watch.poll(Instant::now()) {
                if revocation::apply(&entry, own_key, &transport, &mut core) && !stopping {
                    error!(
                        path = %watch.path().display(),
                        "this peer's own certificate was revoked: every member refuses it now; \
                         leaving"
                    );
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
                // An equivocator's certificate is cut off in the transport too, as a revoked
                // one is: handshakes refused, live connections closed.
                Event::Quarantined { origin, key, .. } => {
                    transport.deny(*key, &format!("quarantined equivocator {origin}"));
                }
                Event::TrainingStarted {
                    members,
                    short_of_min_peers,
                } if !stopping => {
                    if *short_of_min_peers {
                        warn!(
                            known = members,
                            wanted = options.core.lifecycle.min_peers.unwrap_or_default(),
                            "join timeout: training with the members known"
                        );
                    }
                    if training_end_requested {
                        info!(members, "training ended before it started: draining");
                        let now = Instant::now();
                        drain_started.get_or_insert(now);
                        core.start_drain(now);
                    } else {
                        info!(members, "training starts");
                        let handle = TrainerHandle::spawn(
                            plan.clone(),
                            options.workload.clone(),
                            core.base().to_vec(),
                            trainer::Gauges {
                                live: live.clone(),
                                unacked: unacked.clone(),
                                runtime: Some(runtime_lag.clone()),
                                unseen: unseen.clone(),
                                phase: phase.clone(),
                                own_norm_bound: own_norm_bound.clone(),
                            },
                            report_tx.clone(),
                            options.name.clone(),
                        )
                        .map_err(TrainerError::Spawn)?;
                        trainer = Some(handle);
                    }
                }
                Event::JoinFailed if !stopping => {
                    transport.close().await;
                    return Err(NodeError::JoinTimeout(
                        options.core.lifecycle.join_timeout.unwrap_or_default(),
                        sender.seed_log().summary(),
                    ));
                }
                Event::DrainEnded { drained: complete } => {
                    if !complete {
                        warn!("drain deadline passed before every peer was consistent");
                    }
                    drained = *complete;
                    drain_ended = true;
                    drain_seconds = drain_started.map(|at| at.elapsed().as_secs_f64());
                    drain_ended_unix = Some(crate::clock::unix_now());
                }
                Event::DeltaApplied {
                    origin,
                    version,
                    values,
                } => audit.applied(*origin, *version, values),
                Event::CheckpointDue => {
                    match save(
                        &options.data_dir,
                        (&card, &options.layout),
                        &core,
                        progress.step,
                    ) {
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
        unseen.store(core.unseen_deltas(), Ordering::SeqCst);
        phase.lead.store(core.phase_lead(), Ordering::SeqCst);
        own_norm_bound.store(
            core.own_delta_norm_bound().unwrap_or(0.0).to_bits(),
            Ordering::SeqCst,
        );
        let now = Instant::now();
        audit.flush_if_due(now);

        if drain_ended {
            break;
        }
        if !core.is_joined() && !stopping && now >= next_seed_report {
            next_seed_report = now + SEED_REPORT_INTERVAL;
            let log = sender.seed_log();
            let sent: u32 = log.states().iter().map(|s| s.attempts).sum();
            let limit = match options.core.lifecycle.join_timeout {
                Some(t) => format!("{}s", t.as_secs()),
                None => "no limit".into(),
            };
            info!(
                "waiting for seeds ({}s of {limit}, {sent} join requests sent): {}",
                now.saturating_duration_since(started).as_secs(),
                log.summary()
            );
        }
        if stopping {
            // Graceful leave: the trainer publishes what it learned since its last delta.
            if let Some(t) = trainer.take() {
                t.stop();
            }
            while let Ok(report) = reports.try_recv() {
                if let FromTrainer::Publish(delta) = report {
                    let mut out = Publisher {
                        ledger: &mut ledger,
                        audit: &mut audit,
                        refusals: &mut local_refusals,
                        clips: &mut clips,
                    };
                    publish_local(&mut core, &mut out, delta, progress.step, plan.lr)?;
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
    // A stop request bounds the leave: a quarter of the grace left for the last sends.
    let left = |by: Option<Instant>| by.map(|t| t.saturating_duration_since(Instant::now()));
    let settle = left(leave_by).map_or(Duration::from_secs(3), |l| l.div_f64(4.0));
    sender.settle(settle.min(Duration::from_secs(3))).await;
    // A failed final save loses at most what happened since the last periodic checkpoint; the
    // run's outcome is still worth returning.
    if let Err(e) = save(
        &options.data_dir,
        (&card, &options.layout),
        &core,
        progress.step,
    ) {
        error!(
            "final checkpoint failed: {}; the data dir keeps the previous one",
            Chain(&e)
        );
    }
    audit.flush();
    let base = core.base().to_vec();
    let workload = options.workload.clone();
    let layout = options.layout.clone();
    let eval_base = base.clone();
    let evaluation = tokio::task::spawn_blocking(move || {
        crate::workload::evaluate(workload.as_ref(), &layout, &eval_base)
    });
    let evaluated = match left(leave_by) {
        None => Some(evaluation.await),
        Some(limit) => tokio::time::timeout(limit, evaluation).await.ok(),
    };
    let final_metrics = match evaluated {
        Some(done) => done.map_err(|source| NodeError::Task {
            what: "evaluation",
            source,
        })??,
        None => {
            warn!(
                grace_seconds = options.leave_grace.as_secs_f64(),
                "final evaluation skipped: the leave grace is spent (the checkpoint is saved)"
            );
            Metrics::default()
        }
    };
    progress.metrics = Some(final_metrics.clone());
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
        metrics = %final_metrics,
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
        metrics: final_metrics,
        bytes_sent: net.bytes_sent,
        bytes_received: net.bytes_received,
        steps: progress.step,
        samples: progress.samples,
        drained,
        drain_seconds,
        drain_ended_unix,
        members,
        stats: core.stats().clone(),
        transport: net,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// What publishing a local delta writes to besides the core.
struct Publisher<'a> {
    /// Reserves the version before the delta can leave.
    ledger: &'a mut VersionLedger,
    /// Records the published delta.
    audit: &'a mut AuditLog,
    /// Throttles the log lines of refused deltas.
    refusals: &'a mut RateLimitedLog<rumor_proto::core::RejectReason>,
    /// Throttles the log lines of clipped deltas.
    clips: &'a mut RateLimitedLog<()>,
}

/// Hands a local delta from the trainer to the core, once the version it will get is reserved
/// durably in the ledger (the delta leaves only after this returns, when the driver flushes the
/// core's sends). The trainer checks its deltas, so a non-finite one here still means training
/// diverged: an error naming the learning rate `lr`, which stops the peer. Any other refusal is
/// logged, at most once per reason every [`crate::ratelog::LOG_INTERVAL`]. A delta the trainer
/// scaled down to the bound for own deltas is counted (`own_deltas_clipped`) and logged at most
/// once per interval.
///
/// Errors: [`NodeError::VersionLedger`] when the version cannot be reserved (nothing is
/// published: the peer stops rather than risk reusing a version after a crash);
/// [`NodeError::Model`] for a diverged delta.
fn publish_local(
    core: &mut Core,
    out: &mut Publisher<'_>,
    delta: LocalDelta,
    step: u64,
    lr: f64,
) -> Result<(), NodeError> {
    let LocalDelta {
        weight,
        values,
        norm_before_clip,
    } = delta;
    out.ledger.reserve(core.published() + 1)?;
    if let Some(norm) = norm_before_clip {
        core.count_own_delta_clipped();
        if let Some(suppressed) = out.clips.hit(Instant::now(), &()) {
            warn!(
                norm,
                bound = core.own_delta_norm_bound().unwrap_or_default(),
                suppressed,
                "local delta scaled down to the norm bound for own deltas (half the bar the \
                 other members hold it to): this peer moves the model much further per delta \
                 than the others (a higher learning rate, more steps per delta, a smaller view)"
            );
        }
    }
    let hash = out.audit.hash(&values);
    match core.publish(Instant::now(), weight, values) {
        Ok(version) => {
            if let Some(hash) = hash {
                out.audit.published(core.id(), version, &hash);
            }
            Ok(())
        }
        Err(rumor_proto::core::RejectReason::NonFinite) => {
            Err(NodeError::Model(model::ModelError::Diverged {
                step,
                what: "a local delta",
                lr,
                lr_at_step: lr,
            }))
        }
        Err(reason) => {
            if let Some(suppressed) = out.refusals.hit(Instant::now(), &reason) {
                warn!(
                    reason = reason.as_str(),
                    suppressed, "local delta refused by the core"
                );
            }
            Ok(())
        }
    }
}
