//! `rumor chaos`: hostile and broken input for tests and operators.
//!
//! With a member's certificate, [`run_chaos`] connects to one peer and sends it messages of one
//! [`ChaosKind`]: random bytes, truncated or oversized frames, the same envelope many times,
//! replayed deltas, deltas with NaN, the wrong length, a huge norm or a version far ahead, or a
//! flood of cheap junk and duplicates.
//!
//! It reports two views of the run. What the sender can see ([`ChaosReport::delivered`] and the
//! `stopped_*` counts): whether the target's QUIC acknowledged each message, or stopped its
//! stream first. The target's QUIC acknowledges bytes before its application looks at them, so
//! a message the target then drops (rate limit, decode error, duplicate, rejected delta) looks
//! delivered to any sender; only oversized frames, which chaos sends without finishing the
//! stream until the target has had its say ([`link`]), are always seen refused. And, given the
//! target's metrics address, what the target counted ([`target::TargetCounts`]): its
//! `/metrics` scraped before the first message and again once its counters have settled.
//!
//! Envelope ids and origins are new on every run (drawn from the OS RNG), so a kind sent after
//! another is never dropped as a duplicate of the earlier run's messages; `duplicate` repeats
//! one id within a run on purpose. [`ChaosOptions::rng_seed`] makes a run reproducible: each
//! kind then draws from its own stream of the seeded generator, so kinds never share ids, but
//! a second run with the same seed and kind repeats the first one's ids.
//!
//! The valid deltas it builds are harmless to a training cluster: the ones that are meant to be
//! applied (`duplicate`, `replay`) are all zeros, from an origin of their own, with TTL 1.

mod display;
mod link;
pub mod target;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::certs::PeerIdentity;
use crate::net::{NetError, TransportConfig, CODE_RATE_LIMITED, CODE_TOO_LARGE};
use link::{Link, Outcome};
use rumor_proto::wire::{self, DeltaPayload, Envelope, MembershipView, Payload};
use rumor_proto::{MessageId, PeerId};
use target::TargetCounts;

/// How long an oversized frame, written whole, waits for the target to stop its stream before
/// chaos finishes the stream anyway (a target whose limit is larger than chaos was told).
const OVERSIZE_VERDICT_WAIT: Duration = Duration::from_secs(10);

/// How long chaos keeps its connection open after the last send when it does not wait for the
/// target's counters: time for the target to read the streams its QUIC already acknowledged
/// (a close discards them).
const CLOSE_LINGER: Duration = Duration::from_millis(1000);

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ChaosKind {
    /// Random bytes, 1 to 256 of them (decode error: bad magic, mostly).
    Junk,
    /// The first half of a valid delta frame (decode error: length mismatch).
    Truncated,
    /// A frame one byte over `max_message_bytes` (refused by the transport's size limit).
    Oversized,
    /// The same valid zero delta, same envelope id, every time (dropped as duplicates after
    /// the first).
    Duplicate,
    /// A valid zero delta re-sent with a fresh envelope id every time (already applied after
    /// the first).
    Replay,
    /// A delta holding a NaN (rejected: `non_finite`).
    Nan,
    /// A delta one value longer than the model (rejected: `shape`).
    Shape,
    /// A delta whose values are all 1e6 (rejected: `norm`, once the peer has accepted enough
    /// deltas to have a reference).
    Norm,
    /// A delta of version 10^12 from a new origin (rejected: `version_jump`).
    Version,
    /// Alternately junk and one small valid envelope repeated (decode errors and duplicates,
    /// or rate-limited): the cheapest messages, as fast as allowed.
    Flood,
}

impl ChaosKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChaosKind::Junk => "junk",
            ChaosKind::Truncated => "truncated",
            ChaosKind::Oversized => "oversized",
            ChaosKind::Duplicate => "duplicate",
            ChaosKind::Replay => "replay",
            ChaosKind::Nan => "nan",
            ChaosKind::Shape => "shape",
            ChaosKind::Norm => "norm",
            ChaosKind::Version => "version",
            ChaosKind::Flood => "flood",
        }
    }
}

/// Settings of one chaos run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The peer attacked (its listen address).
    pub target: SocketAddr,
    /// What to send.
    pub kind: ChaosKind,
    /// Messages to send.
    pub count: u64,
    /// Messages per second; 0 for as fast as possible.
    pub rate: f64,
    /// Parameters of the target's model (a delta's length).
    pub param_count: usize,
    /// The target's message size limit, in bytes (an oversized frame is one byte more).
    pub max_message_bytes: usize,
    /// Sends in flight at once (at least 1).
    pub concurrency: usize,
    /// Seed of the random bytes, envelope ids and origins, for a reproducible run; `None`
    /// (the default) draws them from the OS RNG, new on every run.
    pub rng_seed: Option<u64>,
    /// The target's metrics address (`host:port` or `http://host:port`, its
    /// `--metrics-addr`); when given, its counters are scraped before and after the run.
    pub metrics: Option<String>,
    /// Longest wait after the last send for the target's counters to settle.
    pub settle_timeout: Duration,
}

impl ChaosOptions {
    /// Options for `count` messages of `kind` to `target`, with the defaults of `rumor chaos`:
    /// as fast as possible, 64 in flight, fresh ids, a 16 MiB size limit, the 784-128-10 model,
    /// no metrics, a 10 s settle timeout.
    pub fn new(target: SocketAddr, kind: ChaosKind, count: u64) -> Self {
        Self {
            target,
            kind,
            count,
            rate: 0.0,
            param_count: 784 * 128 + 128 + 128 * 10 + 10,
            max_message_bytes: 16 * 1024 * 1024,
            concurrency: 64,
            rng_seed: None,
            metrics: None,
            settle_timeout: Duration::from_secs(10),
        }
    }
}

/// What a chaos run did: what it sent, what it could tell of each message's fate, and (with a
/// metrics address) what the target counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    /// The kind sent.
    pub kind: String,
    /// The target's listen address.
    pub target: String,
    /// The seed given for a reproducible run; `None` when ids and bytes came from the OS RNG.
    pub rng_seed: Option<u64>,
    /// Messages sent (attempted).
    pub sent: u64,
    /// Bytes of the messages sent (frames only, not QUIC's overhead).
    pub bytes: u64,
    /// Wall time of the sends, in seconds (not the wait for the target's counters).
    pub elapsed_s: f64,
    /// Messages sent per second.
    pub rate: f64,
    /// Messages whose every byte the target's QUIC acknowledged without having stopped the
    /// stream first. Not proof that the target's application kept them: see
    /// [`ChaosReport::target_counted`].
    pub delivered: u64,
    /// Messages whose stream the target stopped for its rate limit ([`CODE_RATE_LIMITED`])
    /// before acknowledging it all. Most rate-limited messages are acknowledged before they
    /// are stopped and count as delivered: the target's count is in `target_counted`.
    pub stopped_rate_limited: u64,
    /// Messages whose stream the target stopped for its size limit ([`CODE_TOO_LARGE`]).
    pub stopped_too_large: u64,
    /// Messages whose stream the target stopped with another code.
    pub stopped_other: u64,
    /// Messages that failed on chaos's side: no connection, connection lost, stream error.
    pub failed: u64,
    /// What the target counted during the run; `None` without a metrics address or when the
    /// scrape after the run failed.
    pub target_counted: Option<TargetCounts>,
    /// Why the target's counters are missing although a metrics address was given.
    pub target_error: Option<String>,
}

/// Why a chaos run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The local endpoint could not be bound, or the target could not be reached.
    #[error("chaos cannot reach the target over QUIC")]
    Net(#[from] NetError),
    /// A valid envelope could not be encoded (the model is too large for the size limit).
    #[error("cannot encode a message")]
    Encode(#[from] wire::EncodeError),
    /// `concurrency` was 0.
    #[error("concurrency must be at least 1")]
    Concurrency,
    /// The target's metrics could not be scraped before the run.
    #[error("cannot scrape the target's metrics before the run")]
    Metrics(#[from] crate::metrics::http::HttpError),
}

/// Builds the messages of one run.
struct Generator {
    kind: ChaosKind,
    rng: ChaCha8Rng,
    local: SocketAddr,
    param_count: usize,
    max_message_bytes: usize,
    /// The envelope repeated by `duplicate` and `flood`, and the frame of `replay`.
    fixed: Envelope,
}

impl Generator {
    fn new(options: &ChaosOptions, local: SocketAddr) -> Self {
        let mut rng = run_rng(options.kind, options.rng_seed);
        let origin = PeerId::from_uuid(random_uuid(&mut rng));
        let fixed = match options.kind {
            ChaosKind::Flood => Envelope {
                id: MessageId::from_uuid(random_uuid(&mut rng)),
                origin,
                origin_addr: local,
                version: 1,
                ttl: 1,
                payload: Payload::Membership(MembershipView {
                    members: Vec::new(),
                    push_pull: false,
                    reply: false,
                }),
            },
            _ => delta_envelope(&mut rng, origin, local, 1, vec![0.0; options.param_count]),
        };
        Self {
            kind: options.kind,
            rng,
            local,
            param_count: options.param_count,
            max_message_bytes: options.max_message_bytes,
            fixed,
        }
    }

    fn encode(&self, envelope: &Envelope) -> Result<Vec<u8>, wire::EncodeError> {
        wire::encode(envelope, usize::MAX)
    }

    fn junk(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(1..=256);
        let mut bytes = vec![0u8; len];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    fn fresh_delta(&mut self, version: u64, values: Vec<f32>) -> Result<Vec<u8>, ChaosError> {
        let origin = PeerId::from_uuid(random_uuid(&mut self.rng));
        let env = delta_envelope(&mut self.rng, origin, self.local, version, values);
        Ok(self.encode(&env)?)
    }

    /// The `i`-th message.
    fn message(&mut self, i: u64) -> Result<Vec<u8>, ChaosError> {
        let p = self.param_count;
        Ok(match self.kind {
            ChaosKind::Junk => self.junk(),
            ChaosKind::Truncated => {
                let frame = self.fresh_delta(1, vec![0.0; p])?;
                frame[..frame.len() / 2].to_vec()
            }
            ChaosKind::Oversized => {
                let mut frame = vec![0u8; self.max_message_bytes + 1];
                frame[..4].copy_from_slice(&wire::MAGIC);
                frame
            }
            ChaosKind::Duplicate => self.encode(&self.fixed)?,
            ChaosKind::Replay => {
                let mut env = self.fixed.clone();
                env.id = MessageId::from_uuid(random_uuid(&mut self.rng));
                self.encode(&env)?
            }
            ChaosKind::Nan => {
                let mut values = vec![0.0; p];
                if let Some(v) = values.first_mut() {
                    *v = f32::NAN;
                }
                self.fresh_delta(1, values)?
            }
            ChaosKind::Shape => self.fresh_delta(1, vec![0.0; p + 1])?,
            ChaosKind::Norm => self.fresh_delta(1, vec![1e6; p])?,
            ChaosKind::Version => self.fresh_delta(1_000_000_000_000, vec![0.0; p])?,
            ChaosKind::Flood => {
                if i % 2 == 0 {
                    self.junk()
                } else {
                    self.encode(&self.fixed)?
                }
            }
        })
    }
}

/// The generator of one run: seeded from the OS RNG, or from `seed` on a stream of its own for
/// each kind (so a seeded run of one kind never repeats the ids of another kind).
fn run_rng(kind: ChaosKind, seed: Option<u64>) -> ChaCha8Rng {
    match seed {
        Some(seed) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(kind as u64 + 1);
            rng
        }
        None => ChaCha8Rng::from_entropy(),
    }
}

/// A version-4 UUID from `rng`.
fn random_uuid(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

fn delta_envelope(
    rng: &mut ChaCha8Rng,
    origin: PeerId,
    origin_addr: SocketAddr,
    version: u64,
    values: Vec<f32>,
) -> Envelope {
    Envelope {
        id: MessageId::from_uuid(random_uuid(rng)),
        origin,
        origin_addr,
        version,
        ttl: 1,
        payload: Payload::Delta(DeltaPayload {
            weight: 0.25,
            values: values.into(),
            signature: Default::default(),
        }),
    }
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    rate_limited: AtomicU64,
    too_large: AtomicU64,
    stopped_other: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Stopped(code) if code == u64::from(CODE_RATE_LIMITED) => &self.rate_limited,
            Outcome::Stopped(code) if code == u64::from(CODE_TOO_LARGE) => &self.too_large,
            Outcome::Stopped(_) => &self.stopped_other,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends `options.count` messages of `options.kind` to `options.target` with `identity` (a
/// member's certificate), at most `options.concurrency` at once, paced to `options.rate`
/// messages/s unless it is 0. Failed sends are counted, not returned. With
/// `options.metrics`, scrapes the target's counters before the first message and, after the
/// last, until they have settled (or `options.settle_timeout`).
///
/// # Errors
/// [`ChaosError`] when the target's metrics cannot be scraped before the run, the local
/// endpoint cannot be bound, the target cannot be connected to, a valid message cannot be
/// encoded, or `concurrency` is 0.
pub async fn run_chaos(
    identity: &PeerIdentity,
    options: &ChaosOptions,
) -> Result<ChaosReport, ChaosError> {
    if options.concurrency == 0 {
        return Err(ChaosError::Concurrency);
    }
    let before = match &options.metrics {
        Some(addr) => Some(target::scrape(addr).await?),
        None => None,
    };
    let config = TransportConfig {
        // What the target sends back is read up to this size (and dropped).
        max_message_bytes: options
            .max_message_bytes
            .saturating_add(1)
            .max(TransportConfig::default().max_message_bytes),
        ..TransportConfig::default()
    };
    let link =
        Arc::new(Link::connect(identity, options.target, &config, OVERSIZE_VERDICT_WAIT).await?);
    let mut generator = Generator::new(options, link.local_addr());
    let hold_fin = options.kind == ChaosKind::Oversized;
    let counters = Arc::new(Counters::default());
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut report = ChaosReport {
        kind: options.kind.as_str().to_string(),
        target: options.target.to_string(),
        rng_seed: options.rng_seed,
        ..ChaosReport::default()
    };
    for i in 0..options.count {
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let bytes = generator.message(i)?;
        report.sent += 1;
        report.bytes += bytes.len() as u64;
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let link = link.clone();
        let counters = counters.clone();
        tasks.spawn(async move {
            let outcome = link.send(&bytes, hold_fin).await;
            drop(permit);
            counters.count(outcome);
        });
        // Reap finished sends so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.rate = report.sent as f64 / report.elapsed_s.max(1e-9);
    report.delivered = counters.delivered.load(Ordering::Relaxed);
    report.stopped_rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    report.stopped_too_large = counters.too_large.load(Ordering::Relaxed);
    report.stopped_other = counters.stopped_other.load(Ordering::Relaxed);
    report.failed = counters.failed.load(Ordering::Relaxed);
    if let (Some(addr), Some(before)) = (&options.metrics, &before) {
        // Every message the target acknowledged or stopped should end in one of its counters.
        let reached = report.sent - report.failed;
        match target::settle(addr, before, reached, options.settle_timeout).await {
            Ok(counts) => report.target_counted = Some(counts),
            Err(e) => report.target_error = Some(crate::report::Chain(&e).to_string()),
        }
    }
    // Closed only now, and not at once: the target's QUIC acknowledges a stream before its
    // reader takes it, and a connection closed in between loses what was not read yet.
    if options.metrics.is_none() {
        tokio::time::sleep(CLOSE_LINGER).await;
    }
    link.close().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_proto::wire::{DecodeError, Limits};
    use std::collections::HashMap;

    fn options(kind: ChaosKind) -> ChaosOptions {
        ChaosOptions {
            param_count: 10,
            max_message_bytes: 64 * 1024,
            concurrency: 1,
            rng_seed: Some(1),
            ..ChaosOptions::new(SocketAddr::from(([127, 0, 0, 1], 9)), kind, 1)
        }
    }

    fn decode(kind: ChaosKind, i: u64) -> Result<Envelope, DecodeError> {
        let o = options(kind);
        let mut g = Generator::new(&o, SocketAddr::from(([127, 0, 0, 1], 1)));
        let mut frame = Vec::new();
        for j in 0..=i {
            frame = g
                .message(j)
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        }
        wire::decode(
            &frame,
            Limits {
                max_body: o.max_message_bytes,
                max_ttl: 6,
            },
        )
    }

    #[test]
    fn each_kind_builds_what_it_says() {
        assert!(decode(ChaosKind::Junk, 0).is_err());
        assert!(matches!(
            decode(ChaosKind::Truncated, 0),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert!(decode(ChaosKind::Oversized, 0).is_err());
        let a = decode(ChaosKind::Duplicate, 0).unwrap();
        let b = decode(ChaosKind::Duplicate, 1).unwrap();
        assert_eq!(a.id, b.id);
        let a = decode(ChaosKind::Replay, 0).unwrap();
        let b = decode(ChaosKind::Replay, 1).unwrap();
        assert!(a.id != b.id && a.origin == b.origin && a.version == b.version);
        let delta = |e: Envelope| match e.payload {
            Payload::Delta(d) => Some(d),
            _ => None,
        };
        let nan = delta(decode(ChaosKind::Nan, 0).unwrap()).unwrap();
        assert!(nan.values.iter().any(|v| v.is_nan()));
        let shape = delta(decode(ChaosKind::Shape, 0).unwrap()).unwrap();
        assert_eq!(shape.values.len(), 11);
        assert_eq!(
            decode(ChaosKind::Version, 0).unwrap().version,
            1_000_000_000_000
        );
        assert!(decode(ChaosKind::Flood, 0).is_err());
        assert!(matches!(
            decode(ChaosKind::Flood, 1).unwrap().payload,
            Payload::Membership(_)
        ));
    }

    /// The envelopes (id, origin) of the first `n` messages of one run.
    fn envelopes(kind: ChaosKind, seed: Option<u64>, n: u64) -> Vec<(MessageId, PeerId)> {
        let o = ChaosOptions {
            rng_seed: seed,
            ..options(kind)
        };
        let mut g = Generator::new(&o, SocketAddr::from(([127, 0, 0, 1], 1)));
        let limits = Limits {
            max_body: o.max_message_bytes,
            max_ttl: 6,
        };
        (0..n)
            .map(|i| {
                let e = wire::decode(&g.message(i).unwrap(), limits).unwrap();
                (e.id, e.origin)
            })
            .collect()
    }

    const DECODABLE: [ChaosKind; 6] = [
        ChaosKind::Replay,
        ChaosKind::Nan,
        ChaosKind::Shape,
        ChaosKind::Norm,
        ChaosKind::Version,
        ChaosKind::Duplicate,
    ];

    #[test]
    fn ids_are_fresh_on_every_run_by_default() {
        let mut ids = std::collections::HashSet::new();
        for _run in 0..2 {
            for kind in DECODABLE {
                let run = envelopes(kind, None, 3);
                let expected_new = if kind == ChaosKind::Duplicate { 1 } else { 3 };
                let new = run.iter().filter(|(id, _)| ids.insert(*id)).count();
                assert_eq!(new, expected_new, "{kind:?} reused an id");
            }
        }
    }

    #[test]
    fn a_seeded_run_is_reproducible_and_kinds_never_share_ids() {
        let mut seen: HashMap<Uuid, ChaosKind> = HashMap::new();
        for kind in DECODABLE {
            let run = envelopes(kind, Some(42), 3);
            assert_eq!(run, envelopes(kind, Some(42), 3), "{kind:?} reproducible");
            assert_ne!(
                run,
                envelopes(kind, Some(43), 3),
                "{kind:?} differs by seed"
            );
            for (id, origin) in run {
                for u in [*id.as_uuid(), *origin.as_uuid()] {
                    if let Some(other) = seen.insert(u, kind) {
                        assert_eq!(other, kind, "{kind:?} shares {u} with {other:?}");
                    }
                }
            }
        }
    }

    fn cluster(names: &[&str]) -> (tempfile::TempDir, Vec<PeerIdentity>) {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init_ca(dir.path(), false).unwrap();
        let ids = names
            .iter()
            .map(|n| {
                crate::certs::issue(dir.path(), n, 1).unwrap();
                crate::certs::load_identity(dir.path(), n).unwrap()
            })
            .collect();
        (dir, ids)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sender_sees_every_oversized_frame_refused() {
        let (_dir, ids) = cluster(&["target", "chaos"]);
        let limit = 64 * 1024;
        let config = TransportConfig {
            max_message_bytes: limit,
            ..TransportConfig::default()
        };
        let (target, mut rx) =
            crate::net::Transport::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &ids[0], config)
                .await
                .unwrap();
        let o = ChaosOptions {
            count: 5,
            concurrency: 5,
            ..ChaosOptions::new(target.local_addr(), ChaosKind::Oversized, 5)
        };
        let o = ChaosOptions {
            max_message_bytes: limit,
            param_count: 10,
            ..o
        };
        let report = tokio::time::timeout(Duration::from_secs(30), run_chaos(&ids[1], &o))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.sent, 5);
        assert_eq!(report.stopped_too_large, 5, "{report:?}");
        assert_eq!(report.delivered, 0);
        assert_eq!(target.stats().oversize_messages, 5);
        assert!(rx.try_recv().is_err(), "an oversized frame was delivered");

        // A valid message on the same kind of link is delivered, and the target gets it.
        let o = ChaosOptions {
            kind: ChaosKind::Nan,
            count: 1,
            ..o
        };
        let report = run_chaos(&ids[1], &o).await.unwrap();
        assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(wire::decode(
            &got.bytes,
            Limits {
                max_body: limit,
                max_ttl: 6
            }
        )
        .is_ok());
        target.close().await;
    }

    #[test]
    fn the_text_report_puts_the_targets_counts_beside_the_senders() {
        let mut report = ChaosReport {
            kind: "nan".into(),
            target: "127.0.0.1:7000".into(),
            sent: 3,
            delivered: 3,
            bytes: 1200,
            ..ChaosReport::default()
        };
        let text = report.to_string();
        assert!(text.contains("pass --metrics ADDR"), "{text}");
        let mut counts = TargetCounts {
            metrics: "127.0.0.1:9100".into(),
            settled: true,
            bytes_received: 2000,
            ..TargetCounts::default()
        };
        counts.deltas_rejected.insert("non_finite".into(), 3);
        counts.messages_received.insert("delta".into(), 3);
        report.target_counted = Some(counts);
        let text = report.to_string();
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .to_string()
        };
        assert!(line("deltas rejected: non_finite")
            .ends_with("3  rumor_deltas_rejected_total{reason=\"non_finite\"}  <- expected"));
        assert!(line("handled by its core").contains(" 3  rumor_messages_received_total"));
        assert!(line("bytes").contains("1200            2000"), "{text}");
        assert!(
            line("target:").contains("3 messages accounted for"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() <= 100 || l.contains("_total")),
            "{text}"
        );
    }
}
