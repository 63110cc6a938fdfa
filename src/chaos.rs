//! `rumor chaos`: hostile and broken input for tests and operators.
//!
//! With a member's certificate, [`run_chaos`] connects to one peer and sends it messages of one
//! [`ChaosKind`]: random bytes, truncated or oversized frames, the same envelope many times,
//! replayed deltas, deltas with NaN, the wrong length, a huge norm or a version far ahead, or a
//! flood of cheap junk and duplicates. It reports what it sent and what the receiver refused at
//! the transport level (stream stopped: rate limit, size limit). What the peer's core made of
//! each message (decode error, duplicate, rejection by reason) is in the peer's `/metrics`.
//!
//! The valid deltas it builds are harmless to a training cluster: the ones that are meant to be
//! applied (`duplicate`, `replay`) are all zeros, from an origin of their own, with TTL 1.

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
use crate::net::{NetError, Transport, TransportConfig, CODE_RATE_LIMITED, CODE_TOO_LARGE};
use crate::wire::{self, DeltaPayload, Envelope, MembershipView, Payload};

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
    /// Seed of the random bytes and ids.
    pub seed: u64,
}

/// What a chaos run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    /// The kind sent.
    pub kind: String,
    /// Messages sent (attempted).
    pub sent: u64,
    /// Messages whose bytes the target's QUIC stack acknowledged and that it did not refuse.
    pub delivered: u64,
    /// Messages refused by the target's rate limit (stream stopped, `CODE_RATE_LIMITED`).
    pub refused_rate_limited: u64,
    /// Messages refused by the target's size limit (stream stopped, `CODE_TOO_LARGE`).
    pub refused_too_large: u64,
    /// Other failures (connection lost, other stop codes).
    pub errors: u64,
    /// Bytes of the messages sent.
    pub bytes: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Messages sent per second.
    pub rate: f64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chaos {}: sent {} messages ({} bytes) in {:.2} s ({:.0} msgs/s): {} delivered, \
             {} refused by the rate limit, {} refused as too large, {} errors",
            self.kind,
            self.sent,
            self.bytes,
            self.elapsed_s,
            self.rate,
            self.delivered,
            self.refused_rate_limited,
            self.refused_too_large,
            self.errors
        )
    }
}

/// Why a chaos run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The local transport could not be bound.
    #[error("cannot bind the chaos transport: {0}")]
    Net(#[from] NetError),
    /// A valid envelope could not be encoded (the model is too large for the size limit).
    #[error("cannot encode a message: {0}")]
    Encode(#[from] wire::EncodeError),
    /// `concurrency` was 0.
    #[error("concurrency must be at least 1")]
    Concurrency,
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
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let origin = random_uuid(&mut rng);
        let fixed = match options.kind {
            ChaosKind::Flood => Envelope {
                id: random_uuid(&mut rng),
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
        let origin = random_uuid(&mut self.rng);
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
                env.id = random_uuid(&mut self.rng);
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

fn random_uuid(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

fn delta_envelope(
    rng: &mut ChaCha8Rng,
    origin: Uuid,
    origin_addr: SocketAddr,
    version: u64,
    values: Vec<f32>,
) -> Envelope {
    Envelope {
        id: random_uuid(rng),
        origin,
        origin_addr,
        version,
        ttl: 1,
        payload: Payload::Delta(DeltaPayload {
            weight: 0.25,
            values: values.into(),
        }),
    }
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    rate_limited: AtomicU64,
    too_large: AtomicU64,
    errors: AtomicU64,
}

/// Sends `options.count` messages of `options.kind` to `options.target` with `identity` (a
/// member's certificate), at most `options.concurrency` at once, paced to `options.rate`
/// messages/s unless it is 0. Failed sends are counted, not returned.
///
/// # Errors
/// [`ChaosError`] when the local transport cannot be bound, a valid message cannot be encoded,
/// or `concurrency` is 0.
pub async fn run_chaos(
    identity: &PeerIdentity,
    options: &ChaosOptions,
) -> Result<ChaosReport, ChaosError> {
    if options.concurrency == 0 {
        return Err(ChaosError::Concurrency);
    }
    let config = TransportConfig {
        // Room for the oversized frame: the local size check must not stop it.
        max_message_bytes: options
            .max_message_bytes
            .saturating_add(1)
            .max(TransportConfig::default().max_message_bytes),
        ..TransportConfig::default()
    };
    let (transport, mut incoming) =
        Transport::bind(SocketAddr::from(([127, 0, 0, 1], 0)), identity, config).await?;
    // Whatever the target answers (acks, digests) is read and dropped.
    let drain = tokio::spawn(async move { while incoming.recv().await.is_some() {} });
    let mut generator = Generator::new(options, transport.local_addr());
    let counters = Arc::new(Counters::default());
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut report = ChaosReport {
        kind: options.kind.as_str().to_string(),
        ..ChaosReport::default()
    };
    for i in 0..options.count {
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let bytes: Arc<[u8]> = generator.message(i)?.into();
        report.sent += 1;
        report.bytes += bytes.len() as u64;
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let transport = transport.clone();
        let counters = counters.clone();
        let target = options.target;
        tasks.spawn(async move {
            let result = transport.send(target, bytes).await;
            drop(permit);
            let counter = match result {
                Ok(()) => &counters.delivered,
                Err(NetError::Stopped { code, .. }) if code == u64::from(CODE_RATE_LIMITED) => {
                    &counters.rate_limited
                }
                Err(NetError::Stopped { code, .. }) if code == u64::from(CODE_TOO_LARGE) => {
                    &counters.too_large
                }
                Err(e) => {
                    tracing::debug!("chaos send failed: {e}");
                    &counters.errors
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        // Reap finished sends so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.rate = report.sent as f64 / report.elapsed_s.max(1e-9);
    report.delivered = counters.delivered.load(Ordering::Relaxed);
    report.refused_rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    report.refused_too_large = counters.too_large.load(Ordering::Relaxed);
    report.errors = counters.errors.load(Ordering::Relaxed);
    transport.close().await;
    drain.abort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DecodeError, Limits};

    fn options(kind: ChaosKind) -> ChaosOptions {
        ChaosOptions {
            target: SocketAddr::from(([127, 0, 0, 1], 9)),
            kind,
            count: 1,
            rate: 0.0,
            param_count: 10,
            max_message_bytes: 64 * 1024,
            concurrency: 1,
            seed: 1,
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
}
