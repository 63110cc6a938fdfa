//! The barrier baseline (`rumor up --mode sync`): what a user of synchronous data parallelism
//! (DDP-style model averaging) or FedAvg would run instead of gossip, over the same QUIC
//! transport, certificates, loss injection, learning-rate rule, batch size, sharding and
//! evaluation as the gossip peers, so the two can be compared fairly.
//!
//! # Algorithm (local SGD / FedAvg with full participation)
//!
//! Every peer trains on its shard with its own AdamW state. Every H = `train.publish_every`
//! steps it sends its update (below) to every other live peer and waits until it holds the same
//! round's update of every live peer, then sets its model to the previous average plus their
//! plain mean (summed in peer-index order, so every peer computes the bit-identical average). The averaged model moves by
//! `(1/N) Σ_i Δ_i`, exactly as the gossip peers' shared model does with `w = 1/N`, so both modes
//! use the same learning rate (`lr × lr_scaling(N)`). References: McMahan et al., 2017
//! (FedAvg); Stich, 2019 ("Local SGD converges fast and communicates little").
//!
//! **What a round carries.** A round frame carries the sender's *update* since the last
//! average, `u_i = work_i − avg`, quantized with error feedback as `train.delta_compression`
//! says (the same scheme as the gossip deltas, so both modes put the same bytes per parameter
//! on the wire); every peer then sets `avg ← avg + (1/N) Σ_i u_i`. With no compression this is
//! the mean of the models up to float rounding. The final frame carries the whole model, in
//! `f32`.
//!
//! **Start.** Each peer first sends a *hello* (round [`HELLO_ROUND`], no values) to every other
//! peer and waits for theirs (at most `up.sync_timeout`), so QUIC handshakes happen before
//! training, not inside the first barrier.
//!
//! **Timeouts.** A peer whose model has not arrived within `up.sync_timeout` is left out of that
//! round and is not waited for afterwards; it is averaged in again in any later round its model
//! arrives in time.
//!
//! **End.** When its budget is spent, a peer sends a *final* frame with its model; peers ignore
//! a finished peer in later rounds. Every peer then waits for the final model of every peer it
//! still counts live and sets its model to their mean: with no timeouts all peers end with the
//! same model (consensus distance 0). With non-IID shards of unequal size, peers with smaller
//! shards finish first and stop taking part in the rounds; their final models enter the final
//! mean with equal weight (FedAvg with equal client weights).
//!
//! # Frames
//!
//! Sync frames do not go through the gossip codec or core (the core would refuse an unknown
//! kind); they travel on their own streams with their own header:
//!
//! ```text
//! magic "RSYN" (4) | version 1 (1) | round u64 BE (8) | sender index u32 BE (4) | final u8 (1)
//!   | value count u32 BE (4) | values (CompactValues::to_bytes: format byte, then
//!   f32 LE, bf16 LE, or int8 block exponents and values)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::data::{epoch_order, Dataset};
use crate::model::{self, CompactValues, Quantizer, Trainer};
use crate::net::{Incoming, Transport, TransportStats};
use crate::node::trainer::{lower_current_thread_priority, write_eval_snapshot, TrainPlan};

/// First four bytes of a sync frame.
pub const SYNC_MAGIC: [u8; 4] = *b"RSYN";
/// Version of the sync frame layout.
pub const SYNC_VERSION: u8 = 2;
/// Bytes before the values.
pub const SYNC_HEADER_LEN: usize = 22;
/// Round number of the *hello* frame (no values) each peer sends once before training, so
/// connections are set up before the first barrier, as a DDP job rendezvouses before training.
pub const HELLO_ROUND: u64 = u64::MAX;

/// Frames of rounds more than this many ahead of the current one are dropped, so a peer cannot
/// make this one buffer values without bound. With the barrier a live peer is at most one round
/// ahead; one that considered this peer down and went on alone may be further ahead, and such a
/// peer's late frames only cost a timeout.
pub const MAX_ROUNDS_AHEAD: u64 = 16;

/// Errors of the sync baseline.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A frame is malformed (wrong magic, version, length or sender).
    #[error("bad sync frame: {0}")]
    Frame(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The trainer thread failed or could not start.
    #[error("trainer: {0}")]
    Trainer(String),
    /// The data dir could not be written.
    #[error("cannot write to the data dir")]
    Io(#[from] std::io::Error),
}

/// One decoded sync frame.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncFrame {
    /// Round number, from 0.
    pub round: u64,
    /// Sender's index in the peer list.
    pub index: u32,
    /// The sender's budget is spent; this is its final model.
    pub last: bool,
    /// The sender's update since the last average (its whole model when `last`), flat.
    pub values: Vec<f32>,
}

impl SyncFrame {
    /// Encodes the frame (see the module docs for the layout); the values go in their densest
    /// exact form ([`CompactValues`]), so a quantized update costs about a byte per value.
    pub fn encode(&self) -> Vec<u8> {
        let data = CompactValues::encode(&self.values).to_bytes();
        let mut out = Vec::with_capacity(SYNC_HEADER_LEN + data.len());
        out.extend_from_slice(&SYNC_MAGIC);
        out.push(SYNC_VERSION);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.push(u8::from(self.last));
        out.extend_from_slice(&(self.values.len() as u32).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// Decodes a frame holding exactly `expected_len` values.
    ///
    /// # Errors
    /// [`SyncError::Frame`] for a wrong magic, version, count or length.
    pub fn decode(bytes: &[u8], expected_len: usize) -> Result<Self, SyncError> {
        let bad = |m: &str| SyncError::Frame(m.to_string());
        if bytes.len() < SYNC_HEADER_LEN {
            return Err(bad("shorter than the header"));
        }
        if bytes[..4] != SYNC_MAGIC {
            return Err(bad("wrong magic"));
        }
        if bytes[4] != SYNC_VERSION {
            return Err(bad("unknown version"));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i..i + 4]);
            u32::from_be_bytes(b)
        };
        let round = u64_at(5);
        let index = u32_at(13);
        let last = match bytes[17] {
            0 => false,
            1 => true,
            _ => return Err(bad("bad final flag")),
        };
        let count = u32_at(18) as usize;
        let expected_len = if round == HELLO_ROUND {
            0
        } else {
            expected_len
        };
        if count != expected_len {
            return Err(SyncError::Frame(format!(
                "{count} values, expected {expected_len}"
            )));
        }
        let values = CompactValues::decode_bytes(&bytes[SYNC_HEADER_LEN..], count)
            .map_err(|e| SyncError::Frame(format!("values: {e}")))?;
        Ok(Self {
            round,
            index,
            last,
            values,
        })
    }
}

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
    /// This peer's shard.
    pub shard: Arc<Dataset>,
    /// The test set.
    pub test: Arc<Dataset>,
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
    /// Its test accuracy, in [0, 1].
    pub test_accuracy: f32,
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

/// Requests from the trainer thread.
enum ToNet {
    /// Average these values (this round's update, or the final model when `last`) with the
    /// others of round `round`; answer the mean on `reply`.
    Round {
        round: u64,
        last: bool,
        values: Vec<f32>,
        reply: std::sync::mpsc::Sender<Vec<f32>>,
    },
    /// A progress line for metrics.
    Progress {
        step: u64,
        samples: u64,
        epoch: u32,
        train_loss: Option<f32>,
        test_accuracy: Option<f32>,
        eval_snapshot: Option<std::path::PathBuf>,
    },
    /// Training ended (steps, samples) or failed.
    Done(Result<(u64, u64), String>),
}

#[derive(Serialize)]
struct MetricsLine<'a> {
    time: f64,
    elapsed_seconds: f64,
    peer: &'a str,
    mode: &'static str,
    lifecycle: &'static str,
    step: u64,
    samples: u64,
    epoch: u32,
    train_loss: Option<f32>,
    test_accuracy: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_snapshot: Option<&'a std::path::Path>,
    round: u64,
    bytes_sent: u64,
    bytes_received: u64,
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
        shard,
        test,
        data_dir,
        timeout,
    } = p;
    let started = Instant::now();
    std::fs::create_dir_all(&data_dir)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("metrics.jsonl"))
        .ok();
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
    let spec = plan.spec.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sync-{name}"))
        .spawn({
            let to_net = to_net.clone();
            let test = test.clone();
            move || {
                lower_current_thread_priority(plan.low_priority);
                let r = train_loop(&plan, &shard, &test, initial, &to_net);
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

    let mut write_metrics = |line: &MetricsLine<'_>| {
        if let Some(f) = metrics.as_mut() {
            if let Ok(mut text) = serde_json::to_string(line) {
                text.push('\n');
                if f.write_all(text.as_bytes()).is_err() {
                    metrics = None;
                }
            }
        }
    };

    while let Some(msg) = from_trainer.recv().await {
        match msg {
            ToNet::Progress {
                step,
                samples,
                epoch,
                train_loss,
                test_accuracy,
                eval_snapshot,
            } => {
                let net = transport.stats();
                write_metrics(&MetricsLine {
                    time: unix_now(),
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                    peer: &name,
                    mode: "sync",
                    lifecycle: "training",
                    step,
                    samples,
                    epoch,
                    train_loss,
                    test_accuracy,
                    eval_snapshot: eval_snapshot.as_deref(),
                    round: rounds,
                    bytes_sent: net.bytes_sent,
                    bytes_received: net.bytes_received,
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
    let eval_spec = spec.clone();
    let eval_base = base.clone();
    let eval_test = test.clone();
    let accuracy = tokio::task::spawn_blocking(move || {
        model::evaluate(&eval_spec, &eval_base, &eval_test.images, &eval_test.labels)
    })
    .await
    .map_err(|e| SyncError::Trainer(format!("evaluation task failed: {e}")))??;
    let state = serde_json::json!({ "mode": "sync", "rounds": rounds, "last_round": last_round });
    if let Err(e) = model::save_checkpoint(&data_dir, &spec, &base, &state) {
        warn!("checkpoint failed: {}", crate::report::Chain(&e));
    }
    let net = transport.stats();
    write_metrics(&MetricsLine {
        time: unix_now(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        peer: &name,
        mode: "sync",
        lifecycle: "left",
        step: steps,
        samples,
        epoch: 0,
        train_loss: None,
        test_accuracy: Some(accuracy),
        eval_snapshot: None,
        round: rounds,
        bytes_sent: net.bytes_sent,
        bytes_received: net.bytes_received,
    });
    transport.close().await;
    info!(%name, accuracy, rounds, timeouts, "sync peer stopped");
    Ok(SyncOutcome {
        name,
        base,
        test_accuracy: accuracy,
        rounds,
        timeouts,
        steps,
        samples,
        complete,
        transport: net,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

/// The trainer thread: steps, a barrier every H steps, a final barrier at the end.
fn train_loop(
    plan: &TrainPlan,
    shard: &Dataset,
    test: &Dataset,
    initial: Vec<f32>,
    to_net: &mpsc::UnboundedSender<ToNet>,
) -> Result<(u64, u64), SyncError> {
    let mut trainer = Trainer::new(&plan.spec, &initial, plan.lr, plan.weight_decay)?;
    let mut base = initial;
    let mut step = 0u64;
    let mut samples = 0u64;
    let mut round = 0u64;
    let mut since = 0u64;
    let mut loss_sum = 0.0f64;
    let mut loss_count = 0u32;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let batch = plan.batch_size.max(1);
    let mut quantizer = Quantizer::new(plan.delta_compression);
    // Sends this round's update (or, last, the whole model) and waits for the average.
    let barrier = |trainer: &mut Trainer,
                   base: &[f32],
                   quantizer: &mut Quantizer,
                   round: u64,
                   last: bool,
                   step: u64|
     -> Result<Vec<f32>, SyncError> {
        let (reply, answer) = std::sync::mpsc::channel();
        let work = trainer.work()?;
        trainer.check_finite(step, "the model parameters", &work)?;
        let values = if last {
            work
        } else {
            let mut update = model::scaled_difference(&work, base, 1.0)?;
            quantizer.quantize(&mut update);
            update
        };
        to_net
            .send(ToNet::Round {
                round,
                last,
                values,
                reply,
            })
            .map_err(|_| SyncError::Trainer("the network task ended".into()))?;
        let mean = answer
            .recv()
            .map_err(|_| SyncError::Trainer("the network task ended".into()))?;
        let avg = if last {
            mean
        } else {
            let mut avg = base.to_vec();
            model::axpy(&mut avg, 1.0, &mean)?;
            avg
        };
        trainer.set_work(&avg)?;
        Ok(avg)
    };
    for epoch in 0..plan.epochs {
        let order = epoch_order(shard.len(), u64::from(epoch), plan.order_seed);
        for chunk in order.chunks_exact(batch) {
            let t0 = Instant::now();
            shard.gather_batch(chunk, &mut images, &mut labels);
            let loss = trainer.train_step(&images, &labels)?;
            trainer.check_loss(step + 1, loss)?;
            // As in gossip: the step's wall time, batch included (no deltas to fold in here).
            let took = t0.elapsed();
            if plan.slowdown > 1.0 && plan.slowdown.is_finite() {
                std::thread::sleep(took.mul_f64(plan.slowdown - 1.0));
            }
            step += 1;
            samples += chunk.len() as u64;
            since += 1;
            loss_sum += f64::from(loss);
            loss_count += 1;
            if since >= plan.publish_every {
                base = barrier(&mut trainer, &base, &mut quantizer, round, false, step)?;
                round += 1;
                since = 0;
            }
            let evaluate = plan.eval_every > 0 && step % plan.eval_every == 0;
            if evaluate || step % 10 == 0 {
                let mut test_accuracy = None;
                let mut eval_snapshot = None;
                if evaluate {
                    if let Some(dir) = &plan.eval_snapshots {
                        match write_eval_snapshot(dir, step, &base) {
                            Ok(path) => eval_snapshot = Some(path),
                            Err(e) => warn!(
                                "cannot write an evaluation snapshot in {}: {e}",
                                dir.display()
                            ),
                        }
                    } else {
                        test_accuracy = Some(model::evaluate(
                            &plan.spec,
                            &base,
                            &test.images,
                            &test.labels,
                        )?);
                    }
                }
                let _ = to_net.send(ToNet::Progress {
                    step,
                    samples,
                    epoch,
                    train_loss: Some((loss_sum / f64::from(loss_count.max(1))) as f32),
                    test_accuracy,
                    eval_snapshot,
                });
                loss_sum = 0.0;
                loss_count = 0;
            }
        }
    }
    barrier(&mut trainer, &base, &mut quantizer, round, true, step)?;
    Ok((step, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let f = SyncFrame {
            round: 7,
            index: 2,
            last: true,
            values: vec![1.0, -2.5, 3.25],
        };
        let bytes = f.encode();
        assert_eq!(SyncFrame::decode(&bytes, 3).unwrap(), f);
        assert!(SyncFrame::decode(&bytes, 4).is_err());
        assert!(SyncFrame::decode(&bytes[..bytes.len() - 1], 3).is_err());
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(SyncFrame::decode(&wrong, 3).is_err());
        assert!(SyncFrame::decode(&[], 3).is_err());
        let hello = SyncFrame {
            round: HELLO_ROUND,
            index: 1,
            last: false,
            values: vec![],
        };
        assert_eq!(SyncFrame::decode(&hello.encode(), 3).unwrap(), hello);
    }
}
