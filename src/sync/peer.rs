//! One sync peer's network side: the rendezvous, then, for each round the trainer thread asks
//! for, sending its update to every live peer and waiting (at most the timeout) for theirs, and
//! the average in peer-index order; metrics lines and the final checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::model;
use crate::net::{Incoming, Transport, TransportStats};
use crate::node::{BaselineLine, MetricsFile};
use crate::train::{self, TrainPlan};

use super::trainer::{train_with_barriers, ToNet};
use super::{SyncError, SyncFrame, HELLO_ROUND, MAX_ROUNDS_AHEAD};

/// One sync peer's setup. Its transport is bound by the caller, so every peer's address is
/// known before any starts.
pub struct SyncPeer {
    /// Display name.
    pub name: String,
    /// This peer's index in `peers`.
    pub index: usize,
    /// Every peer's address, by index (this one included).
    pub peers: Vec<SocketAddr>,
    /// The bound transport and its received messages.
    pub transport: Transport,
    /// Received messages of `transport`.
    pub incoming: mpsc::Receiver<Incoming>,
    /// θ₀, the same on every peer.
    pub initial: Vec<f32>,
    /// Model, lr, batch size, H (`publish_every`), eval period, slowdown.
    pub plan: TrainPlan,
    /// The names and shapes of the model's tensors, in flat order.
    pub layout: crate::model::ParamLayout,
    /// What this peer trains: the model, its shard and the held-out data.
    pub workload: Arc<dyn crate::workload::Workload>,
    /// Where `metrics.jsonl` and the final checkpoint go.
    pub data_dir: std::path::PathBuf,
    /// Longest wait at a barrier.
    pub timeout: Duration,
}

/// What a sync peer ends with.
#[derive(Clone, Debug)]
pub struct SyncOutcome {
    /// Display name.
    pub name: String,
    /// The final model.
    pub base: Vec<f32>,
    /// Its held-out metrics (the workload's, headline first).
    pub metrics: crate::workload::Metrics,
    /// Rounds completed (the final one included).
    pub rounds: u64,
    /// Peer-rounds left out because a model did not arrive in time.
    pub timeouts: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples processed.
    pub samples: u64,
    /// Whether the final average included every peer.
    pub complete: bool,
    /// Transport counters at exit (UDP bytes from quinn).
    pub transport: TransportStats,
    /// Seconds from start to exit.
    pub wall_seconds: f64,
}

/// Runs one sync peer to completion.
///
/// # Errors
/// [`SyncError::Trainer`] or [`SyncError::Model`] if training fails; [`SyncError::Io`] if the
/// data dir cannot be created.
pub async fn run_sync_peer(p: SyncPeer) -> Result<SyncOutcome, SyncError> {
    let SyncPeer {
        name,
        index,
        peers,
        transport,
        mut incoming,
        initial,
        plan,
        layout,
        workload,
        data_dir,
        timeout,
    } = p;
    let started = Instant::now();
    std::fs::create_dir_all(&data_dir)?;
    let mut metrics = MetricsFile::open(&data_dir.join("metrics.jsonl"));
    let n = peers.len();
    let param_count = initial.len();
    // Frames by round and sender; finals by sender.
    let mut pending: BTreeMap<u64, BTreeMap<usize, Vec<f32>>> = BTreeMap::new();
    let mut finals: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut finished: BTreeSet<usize> = BTreeSet::new();
    let mut down: BTreeSet<usize> = BTreeSet::new();

    // Rendezvous: hello to everyone, wait for everyone's hello (or any frame of theirs).
    broadcast(
        &transport,
        &peers,
        index,
        &down,
        HELLO_ROUND,
        false,
        &[],
        timeout,
    );
    let mut present: BTreeSet<usize> = BTreeSet::from([index]);
    let deadline = tokio::time::Instant::now() + timeout;
    while present.len() < n {
        tokio::select! {
            msg = incoming.recv() => {
                let Some(msg) = msg else { break };
                let Ok(f) = SyncFrame::decode(&msg.bytes, param_count) else { continue };
                let i = f.index as usize;
                if i >= n || peers[i] != msg.from {
                    continue;
                }
                present.insert(i);
                if f.last {
                    finished.insert(i);
                    finals.insert(i, f.values);
                } else if f.round != HELLO_ROUND && f.round < MAX_ROUNDS_AHEAD {
                    pending.entry(f.round).or_default().insert(i, f.values);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<usize> = (0..n).filter(|i| !present.contains(i)).collect();
                warn!(?missing, "sync rendezvous timeout: starting without them");
                down.extend(missing);
                break;
            }
        }
    }
    info!(%name, peers = present.len(), "sync rendezvous done");

    let (to_net, mut from_trainer) = mpsc::unbounded_channel();
    let card = workload.card();
    let thread = std::thread::Builder::new()
        .name(format!("sync-{name}"))
        .spawn({
            let to_net = to_net.clone();
            let workload = workload.clone();
            move || {
                train::lower_current_thread_priority(plan.low_priority);
                let r = train_with_barriers(&plan, &workload, &initial, &to_net);
                let _ = to_net.send(ToNet::Done(r.map_err(|e| match e {
                    // Said as is ("training diverged ..."), without a "model:" prefix.
                    SyncError::Model(e) => e.to_string(),
                    e => e.to_string(),
                })));
            }
        })
        .map_err(|e| SyncError::Trainer(format!("cannot start the thread: {e}")))?;
    drop(to_net);

    let mut rounds = 0u64;
    let mut timeouts = 0u64;
    let mut last_round = 0u64;
    let mut result: Option<Result<(u64, u64), String>> = None;
    let mut base = Vec::new();
    let mut complete = true;

    while let Some(msg) = from_trainer.recv().await {
        match msg {
            ToNet::Progress(progress) => {
                let net = transport.stats();
                metrics.append(&BaselineLine {
                    round: Some(rounds),
                    bytes_sent: net.bytes_sent,
                    bytes_received: net.bytes_received,
                    ..BaselineLine::new(&name, "sync", "training", started, &progress)
                });
            }
            ToNet::Done(r) => {
                result = Some(r);
                break;
            }
            ToNet::Round {
                round,
                last,
                values,
                reply,
            } => {
                last_round = round;
                broadcast(
                    &transport, &peers, index, &down, round, last, &values, timeout,
                );
                // Who we wait for: live, not finished, not us.
                let mut got: BTreeMap<usize, Vec<f32>> = pending.remove(&round).unwrap_or_default();
                let deadline = tokio::time::Instant::now() + timeout;
                let waiting = |got: &BTreeMap<usize, Vec<f32>>,
                               finals: &BTreeMap<usize, Vec<f32>>,
                               finished: &BTreeSet<usize>,
                               down: &BTreeSet<usize>| {
                    (0..n)
                        .filter(|&i| i != index && !down.contains(&i))
                        .filter(|i| {
                            if last {
                                !finals.contains_key(i)
                            } else {
                                !finished.contains(i) && !got.contains_key(i)
                            }
                        })
                        .collect::<Vec<usize>>()
                };
                loop {
                    let missing = waiting(&got, &finals, &finished, &down);
                    if missing.is_empty() {
                        break;
                    }
                    tokio::select! {
                        msg = incoming.recv() => {
                            let Some(msg) = msg else { break };
                            match SyncFrame::decode(&msg.bytes, param_count) {
                                Ok(f) => {
                                    let i = f.index as usize;
                                    if i >= n || i == index || peers[i] != msg.from {
                                        debug!(from = %msg.from, "sync frame from an unknown sender");
                                        continue;
                                    }
                                    // A live frame re-admits a peer that timed out.
                                    down.remove(&i);
                                    if f.round == HELLO_ROUND && !f.last {
                                        continue;
                                    }
                                    if f.last {
                                        finished.insert(i);
                                        finals.insert(i, f.values);
                                    } else if f.round == round {
                                        got.insert(i, f.values);
                                    } else if f.round > round
                                        && f.round <= round.saturating_add(MAX_ROUNDS_AHEAD)
                                    {
                                        pending.entry(f.round).or_default().insert(i, f.values);
                                    }
                                }
                                Err(e) => debug!(from = %msg.from, "dropped a frame: {e}"),
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            warn!(round, ?missing, "sync timeout: averaging without them");
                            timeouts += missing.len() as u64;
                            down.extend(missing);
                            if last {
                                complete = false;
                            }
                            break;
                        }
                    }
                }
                // Average in index order: bit-identical on every peer with the same inputs.
                let mut sum = vec![0f32; param_count];
                let mut count = 0usize;
                for i in 0..n {
                    let v = if i == index {
                        Some(&values)
                    } else if last {
                        finals.get(&i)
                    } else {
                        got.get(&i)
                    };
                    if let Some(v) = v {
                        for (s, x) in sum.iter_mut().zip(v) {
                            *s += *x;
                        }
                        count += 1;
                    }
                }
                let inv = 1.0 / count.max(1) as f32;
                for s in &mut sum {
                    *s *= inv;
                }
                rounds += 1;
                if last {
                    base = sum.clone();
                }
                // The trainer may have failed meanwhile; then nobody listens.
                let _ = reply.send(sum);
            }
        }
    }
    let _ = thread.join();
    let (steps, samples) = match result {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(SyncError::Trainer(e)),
        None => return Err(SyncError::Trainer("the trainer thread ended early".into())),
    };
    // Keep answering nothing more: let the last sends finish, then close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let eval_base = base.clone();
    let eval_layout = layout.clone();
    let eval_workload = workload.clone();
    let final_metrics = tokio::task::spawn_blocking(move || {
        crate::workload::evaluate(eval_workload.as_ref(), &eval_layout, &eval_base)
    })
    .await
    .map_err(|e| SyncError::Trainer(format!("evaluation task failed: {e}")))??;
    let state = serde_json::json!({ "mode": "sync", "rounds": rounds, "last_round": last_round });
    if let Err(e) = model::save_checkpoint(&data_dir, &card, &layout, &base, &state) {
        warn!("checkpoint failed: {}", crate::report::Chain(&e));
    }
    let net = transport.stats();
    let last = train::TrainProgress {
        step: steps,
        samples,
        metrics: Some(final_metrics.clone()),
        ..train::TrainProgress::default()
    };
    metrics.append(&BaselineLine {
        round: Some(rounds),
        bytes_sent: net.bytes_sent,
        bytes_received: net.bytes_received,
        ..BaselineLine::new(&name, "sync", "left", started, &last)
    });
    transport.close().await;
    info!(%name, metrics = %final_metrics, rounds, timeouts, "sync peer stopped");
    Ok(SyncOutcome {
        name,
        base,
        metrics: final_metrics,
        rounds,
        timeouts,
        steps,
        samples,
        complete,
        transport: net,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sends this round's model to every peer not known down, each in its own task.
#[allow(clippy::too_many_arguments)]
fn broadcast(
    transport: &Transport,
    peers: &[SocketAddr],
    index: usize,
    down: &BTreeSet<usize>,
    round: u64,
    last: bool,
    values: &[f32],
    retry_for: Duration,
) {
    let frame: Arc<[u8]> = SyncFrame {
        round,
        index: index as u32,
        last,
        values: values.to_vec(),
    }
    .encode()
    .into();
    for (i, &to) in peers.iter().enumerate() {
        if i == index || down.contains(&i) {
            continue;
        }
        let transport = transport.clone();
        let frame = frame.clone();
        tokio::spawn(async move {
            // Retry failed sends (e.g. a handshake lost to packet loss) until the barrier's
            // timeout; QUIC retransmits within one attempt.
            let deadline = tokio::time::Instant::now() + retry_for;
            loop {
                match transport.send(to, frame.clone()).await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        debug!(%to, "sync send failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        debug!(%to, "sync send failed: {e}");
                        break;
                    }
                }
            }
        });
    }
}
