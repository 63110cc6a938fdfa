//! `rumor chaos`: hostile and broken input for tests and operators.
//!
//! With a member's certificate, [`run_chaos`] connects to one peer and sends it messages of one
//! [`ChaosKind`]: random bytes, truncated or oversized frames, the same envelope many times,
//! replayed deltas, deltas with NaN, the wrong length, a huge norm or a version far ahead, a
//! flood of cheap junk and duplicates; and the attacks of a member on what others believe:
//! deltas forged in another member's name (`forge`) or altered on the way (`alter`), messages
//! speaking for another member (`impersonate`), joins asking for a welcome in another's name
//! (`reflect`), member records for invented ids (`invent`), chaos's own record with a changed
//! field (`tamper`), deltas under invented origins (`origins`); and an equivocation
//! (`equivocate`): one validly signed delta under one version whose content depends on the
//! target, so that two runs with one seed against two peers give the cluster two different
//! deltas under one `(origin, version)`, which it must detect, prove and answer by quarantining
//! chaos's certificate (docs/ALGORITHM.md, "Equivocation").
//!
//! Chaos is a proper signing member: it speaks as one stable peer id per certificate
//! ([`chaos_id`]), signs its deltas (their versions: see [`BASE_VERSION_END`] and the constants
//! beside it) and, before the run's messages, sends one *introduction*: a `Membership` view
//! holding its own signed record, status `Left` and lifecycle `Stopped` (the target never
//! probes it nor counts it live), announcing as `published` the highest version the run uses
//! legitimately, with a heartbeat that supersedes every earlier run's (wall-clock
//! milliseconds). A target admits deltas only from origins whose record it holds and only under
//! their signature, so without it every delta would be refused as `unknown_origin` before the
//! check its kind aims at. The run's messages go out only once the target took the
//! introduction: with a metrics address, once its `/status` holds chaos's record with this
//! run's heartbeat (at most [`INTRODUCTION_WAIT`], else [`ChaosError::Introduction`]; the record
//! itself rather than `rumor_messages_received_total{kind="membership"}`, which other members'
//! gossip moves too); without one, [`INTRODUCTION_LINGER`] after the target's QUIC acknowledged
//! it (see there why). The introduction is reported apart ([`ChaosReport::introduction`]), not
//! in `sent`, and the target's counters after the run include it.
//!
//! It reports two views of the run. What the sender can see ([`ChaosReport::delivered`] and the
//! `stopped_*` counts): whether the target's QUIC acknowledged each message, or stopped its
//! stream first. The target's QUIC acknowledges bytes before its application looks at them, so
//! a message the target then drops (rate limit, decode error, duplicate, rejected delta) looks
//! delivered to any sender; only oversized frames, which chaos sends without finishing the
//! stream until the target has had its say (module `link`), are always seen refused. And, given the
//! target's metrics address, what the target counted ([`target::TargetCounts`]): its
//! `/metrics` scraped before the introduction and again once its counters have settled, and
//! its view ([`target::TargetView`]: members, applied origins) from its `/status` before and
//! after.
//!
//! Envelope ids are new on every run (drawn from the OS RNG), so a kind sent after another is
//! never dropped as a duplicate of the earlier run's messages; `duplicate` repeats one id
//! within a run on purpose. [`ChaosOptions::rng_seed`] makes a run reproducible: each kind then
//! draws from its own stream of the seeded generator, so kinds never share ids, but a second run
//! with the same seed and kind repeats the first one's ids and base version (`equivocate`
//! repeats the base version only: its envelope ids are always fresh).
//!
//! The valid deltas it builds are harmless to a training cluster: the ones that can be applied
//! (`duplicate`, `replay`, and `norm` on a target without a norm reference yet) are from chaos's
//! own origin, with TTL 1, and all but `norm`'s and `equivocate`'s are zeros (`equivocate`'s
//! values are `±`[`EQUIVOCATION_EPSILON`], and an equivocated version is taken out again by
//! every peer once it holds the proof).

mod attacks;
mod display;
mod link;
pub mod target;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::certs::PeerIdentity;
use crate::net::{NetError, TransportConfig, CODE_RATE_LIMITED, CODE_TOO_LARGE};
use attacks::Generator;
use link::{Link, Outcome};
use rumor_proto::auth::AuthError;
use rumor_proto::wire;
use rumor_proto::PeerId;
use target::{TargetCounts, TargetView};

pub use attacks::{
    chaos_id, equivocation_values, EquivocationSent, Victim, VictimSource, BASE_VERSION_END,
    CHAOS_SEED, EQUIVOCATION_EPSILON, FORGE_VERSION_BASE, TAMPER_LIFT, VERSION_JUMP,
};

/// How long an oversized frame, written whole, waits for the target to stop its stream before
/// chaos finishes the stream anyway (a target whose limit is larger than chaos was told).
const OVERSIZE_VERDICT_WAIT: Duration = Duration::from_secs(10);

/// How long chaos keeps its connection open after the last send when it does not wait for the
/// target's counters: time for the target to read the streams its QUIC already acknowledged
/// (a close discards them).
const CLOSE_LINGER: Duration = Duration::from_millis(1000);

/// With a metrics address, the longest wait for the target's `/status` to show chaos's
/// introduced record before the run gives up ([`ChaosError::Introduction`]).
pub const INTRODUCTION_WAIT: Duration = Duration::from_secs(5);

/// Without a metrics address, how long chaos waits after the target's QUIC acknowledged the
/// introduction before the run's messages. The acknowledgement only says the bytes arrived:
/// the target's reader hands each stream to its core on its own, so a message sent right after
/// could be handled first and, for a delta, be refused as `unknown_origin`. Without metrics
/// nothing shows when the core took the record; its core handles a message in well under a
/// millisecond, so this leaves ample room on a loaded machine without being a guarantee.
pub const INTRODUCTION_LINGER: Duration = Duration::from_millis(500);

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ChaosKind {
    /// Random bytes, 1 to 256 of them (decode error: bad magic, mostly).
    Junk,
    /// The first half of a valid signed delta frame (decode error: length mismatch).
    Truncated,
    /// A frame one byte over `max_message_bytes` (refused by the transport's size limit).
    Oversized,
    /// The same valid zero delta of chaos's, same envelope id, every time (applied once, then
    /// dropped as duplicates).
    Duplicate,
    /// A valid zero delta of chaos's re-sent with a fresh envelope id every time (applied once,
    /// then already applied).
    Replay,
    /// A signed delta holding a NaN (rejected: `non_finite`).
    Nan,
    /// A signed delta one value longer than the model (rejected: `shape`).
    Shape,
    /// A signed delta whose values are all 1e6 (rejected: `norm`, once the peer has accepted
    /// enough deltas to have a reference).
    Norm,
    /// A signed delta 10^12 versions past what chaos announced (rejected: `version_jump`).
    Version,
    /// Alternately junk and one small valid envelope of chaos's repeated (decode errors and
    /// duplicates, or rate-limited): the cheapest messages, as fast as allowed.
    Flood,
    /// A delta in another member's name signed with chaos's key (rejected: `signature`). The
    /// victim is the target itself, its id read from its /status; without --metrics, a made-up
    /// id (rejected: `unknown_origin`).
    Forge,
    /// A delta chaos signed, then one value changed, as a forwarder could (rejected:
    /// `signature`).
    Alter,
    /// A ping whose origin is another member, as for forge (dropped: `senders_mismatched`).
    Impersonate,
    /// A join asking in another member's name, as for forge, for a welcome and snapshot
    /// (dropped: `senders_mismatched`; nothing sent).
    Reflect,
    /// Member records for invented ids: random ones and ids bound to chaos's certificate past
    /// its cap of 4 (refused: `unbound`, `too_many_identities`).
    Invent,
    /// Chaos's own signed record with its published version lifted or its address changed
    /// (refused: `signature`).
    Tamper,
    /// Deltas under fresh invented origins, random or bound to chaos's certificate (rejected:
    /// `unknown_origin`; the target's version vector does not grow).
    Origins,
    /// One delta of chaos's, validly signed, under the run's base version, every value +ε or
    /// −ε (ε = 1e-3) with the signs drawn from the target's address: the same target always
    /// gets the same delta, another target a different one. Run it twice with one --rng-seed
    /// (hence one version) against two peers and the cluster holds two signed deltas under one
    /// version: an equivocation, which it must detect and answer by quarantining chaos's
    /// certificate (applied, or detected as an equivocation when the target already holds the
    /// other delta; further copies: already applied). --count copies of the one delta, under
    /// fresh envelope ids; 1 is enough. Without --rng-seed every run picks a new version and
    /// nothing is equivocated.
    Equivocate,
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
            ChaosKind::Forge => "forge",
            ChaosKind::Alter => "alter",
            ChaosKind::Impersonate => "impersonate",
            ChaosKind::Reflect => "reflect",
            ChaosKind::Invent => "invent",
            ChaosKind::Tamper => "tamper",
            ChaosKind::Origins => "origins",
            ChaosKind::Equivocate => "equivocate",
        }
    }

    /// Whether the kind speaks in another member's name ([`Victim`]).
    pub fn uses_victim(self) -> bool {
        matches!(
            self,
            ChaosKind::Forge | ChaosKind::Impersonate | ChaosKind::Reflect
        )
    }
}

/// Settings of one chaos run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The peer attacked (its listen address).
    pub target: SocketAddr,
    /// What to send.
    pub kind: ChaosKind,
    /// Messages to send (the introduction not included).
    pub count: u64,
    /// Messages per second; 0 for as fast as possible.
    pub rate: f64,
    /// Parameters of the target's model (a delta's length).
    pub param_count: usize,
    /// The target's message size limit, in bytes (an oversized frame is one byte more).
    pub max_message_bytes: usize,
    /// Sends in flight at once (at least 1).
    pub concurrency: usize,
    /// Seed of the random bytes, envelope ids, invented ids and base version, for a
    /// reproducible run; `None` (the default) draws them from the OS RNG, new on every run.
    pub rng_seed: Option<u64>,
    /// The target's metrics address (`host:port` or `http://host:port`, its
    /// `--metrics-addr`); when given, its counters are scraped before and after the run, its
    /// `/status` read for the victim's id and its view, and the run waits for the target to
    /// show chaos's introduction.
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

/// The introduction chaos sent before the run's messages.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Introduction {
    /// The heartbeat of chaos's record (wall-clock milliseconds, above every earlier run's).
    pub heartbeat: u64,
    /// The `published` version the record announced: the highest version the run uses
    /// legitimately (`base_version + count`; `base_version` for `equivocate`).
    pub published: u64,
    /// The run's base version `v0`, in `[1, 2^40)`.
    pub base_version: u64,
    /// Bytes of its frame.
    pub bytes: u64,
    /// True when the target's `/status` showed the record before the run's messages; false
    /// without a metrics address (chaos then only waited [`INTRODUCTION_LINGER`]).
    pub seen_by_target: bool,
    /// Seconds from sending it to the first message of the run.
    pub waited_s: f64,
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
    /// Chaos's peer id: bound to its certificate, the same on every run with it.
    pub origin: String,
    /// The introduction sent before the run's messages (not in `sent` nor `bytes`).
    pub introduction: Option<Introduction>,
    /// Whose name the run spoke in (`forge`, `impersonate`, `reflect`); `None` for other kinds.
    pub victim: Option<Victim>,
    /// The delta `equivocate` sent (its version and content hash); `None` for other kinds.
    pub equivocation: Option<EquivocationSent>,
    /// When the first of the run's messages was sent, in milliseconds since the Unix epoch (0
    /// when none was): the time an equivocation took to be answered is counted from it.
    pub sends_started_unix_ms: u64,
    /// Messages sent (attempted).
    pub sent: u64,
    /// Bytes of the messages sent (frames only, not QUIC's overhead).
    pub bytes: u64,
    /// Wall time of the sends, in seconds (not the introduction, nor the wait for the target's
    /// counters).
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
    /// What the target counted during the run, the introduction included; `None` without a
    /// metrics address or when the scrape after the run failed.
    pub target_counted: Option<TargetCounts>,
    /// Why the target's counters are missing although a metrics address was given.
    pub target_error: Option<String>,
    /// The target's view before the introduction (with a metrics address).
    pub target_before: Option<TargetView>,
    /// The target's view once its counters settled (with a metrics address, when the read
    /// succeeded).
    pub target_after: Option<TargetView>,
}

/// Why a chaos run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The local endpoint could not be bound, the target could not be reached, or the
    /// certificate's key cannot sign.
    #[error("chaos cannot reach the target over QUIC, or cannot use its certificate")]
    Net(#[from] NetError),
    /// A valid envelope could not be encoded (the model is too large for the size limit).
    #[error("cannot encode a message")]
    Encode(#[from] wire::EncodeError),
    /// The certificate's key failed to sign a delta or chaos's record.
    #[error("cannot sign with the certificate's key")]
    Signing(#[source] AuthError),
    /// `concurrency` was 0.
    #[error("concurrency must be at least 1")]
    Concurrency,
    /// The target's metrics or status could not be read before the run.
    #[error("cannot scrape the target's metrics before the run")]
    Metrics(#[from] crate::metrics::http::HttpError),
    /// The target did not take chaos's introduction: it was not delivered, or (with a metrics
    /// address) the target's `/status` did not show chaos's record within
    /// [`INTRODUCTION_WAIT`]. The text says which, and what the target counted meanwhile.
    #[error("the target did not take chaos's introduction: {0}")]
    Introduction(String),
}

/// The heartbeat of this run's introduction: wall-clock milliseconds, and above the previous
/// run's of this process (two runs within one millisecond).
fn next_heartbeat() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(0);
    now.max(previous.saturating_add(1))
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

/// Sends the introduction and waits until the target took it (see the module docs).
///
/// # Errors
/// [`ChaosError::Introduction`] when it was not delivered or, with `metrics`, the target's
/// `/status` did not show it within [`INTRODUCTION_WAIT`]; [`ChaosError::Encode`] when it
/// cannot be encoded.
async fn introduce(
    link: &Link,
    generator: &Generator,
    metrics: Option<(&str, &target::Counters)>,
) -> Result<Introduction, ChaosError> {
    let frame = Generator::encode(&generator.introduction())?;
    let record = generator.record();
    let started = Instant::now();
    let outcome = link.send(&frame, false).await;
    if outcome != Outcome::Delivered {
        let closed = match link.close_reason().await {
            Some(reason) => format!(
                "; the target closed the connection: {reason} (a target that revoked or \
                 quarantined chaos's certificate refuses its handshakes)"
            ),
            None => String::new(),
        };
        return Err(ChaosError::Introduction(format!(
            "its frame was not delivered ({outcome:?}){closed}"
        )));
    }
    let seen_by_target = match metrics {
        Some((addr, before)) => {
            if target::wait_for_record(addr, record, INTRODUCTION_WAIT)
                .await
                .is_none()
            {
                let counted = match target::scrape(addr).await {
                    Ok(after) => {
                        let c = TargetCounts::between(addr, before, &after);
                        format!(
                            "meanwhile it handled {} membership messages and refused records \
                             {:?}",
                            c.messages_received.get("membership").copied().unwrap_or(0),
                            c.records_refused
                        )
                    }
                    Err(e) => format!("its counters cannot be read: {}", crate::report::Chain(&e)),
                };
                return Err(ChaosError::Introduction(format!(
                    "chaos's record {} (heartbeat {}) is not in its /status {} s after it was \
                     delivered; {counted}",
                    record.peer_id,
                    record.heartbeat,
                    INTRODUCTION_WAIT.as_secs()
                )));
            }
            true
        }
        None => {
            tokio::time::sleep(INTRODUCTION_LINGER).await;
            false
        }
    };
    Ok(Introduction {
        heartbeat: record.heartbeat,
        published: record.published,
        base_version: generator.base_version(),
        bytes: frame.len() as u64,
        seen_by_target,
        waited_s: started.elapsed().as_secs_f64(),
    })
}

/// Sends `options.count` messages of `options.kind` to `options.target` with `identity` (a
/// member's certificate), after an introduction (see the module docs), at most
/// `options.concurrency` at once, paced to `options.rate` messages/s unless it is 0. Failed
/// sends are counted, not returned. With `options.metrics`, scrapes the target's counters and
/// reads its `/status` before the introduction and, after the last message, until the counters
/// have settled (or `options.settle_timeout`).
///
/// # Errors
/// [`ChaosError`] when the target's metrics or status cannot be read before the run, the
/// certificate's key cannot sign, the local endpoint cannot be bound, the target cannot be
/// connected to or does not take the introduction, a valid message cannot be encoded, or
/// `concurrency` is 0.
pub async fn run_chaos(
    identity: &PeerIdentity,
    options: &ChaosOptions,
) -> Result<ChaosReport, ChaosError> {
    if options.concurrency == 0 {
        return Err(ChaosError::Concurrency);
    }
    let keys = crate::net::peer_keys(identity)?;
    let key = keys.key_id();
    let (before, status) = match &options.metrics {
        Some(addr) => (
            Some(target::scrape(addr).await?),
            Some(target::status(addr).await?),
        ),
        None => (None, None),
    };
    // The victim is the target itself, when its status says who it is.
    let victim = status
        .as_ref()
        .filter(|s| s.peer.peer_id != PeerId::nil())
        .map(|s| Victim {
            peer_id: s.peer.peer_id,
            addr: s.peer.addr,
            source: VictimSource::TargetStatus,
        });
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
    let mut generator = match Generator::new(
        options,
        link.local_addr(),
        keys,
        &identity.name,
        next_heartbeat(),
        victim,
    ) {
        Ok(generator) => generator,
        Err(e) => {
            link.close().await;
            return Err(e);
        }
    };
    let mut report = ChaosReport {
        kind: options.kind.as_str().to_string(),
        target: options.target.to_string(),
        rng_seed: options.rng_seed,
        origin: generator.origin().to_string(),
        victim: options
            .kind
            .uses_victim()
            .then(|| generator.victim().clone()),
        equivocation: generator.equivocation().cloned(),
        target_before: status.map(|s| TargetView::from_status(&s, &key)),
        ..ChaosReport::default()
    };
    let metrics = options.metrics.as_deref().zip(before.as_ref());
    match introduce(&link, &generator, metrics).await {
        Ok(introduction) => report.introduction = Some(introduction),
        Err(e) => {
            link.close().await;
            return Err(e);
        }
    }
    let hold_fin = options.kind == ChaosKind::Oversized;
    let counters = Arc::new(Counters::default());
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    if options.count > 0 {
        report.sends_started_unix_ms = unix_ms();
    }
    for i in 0..options.count {
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let bytes = match generator.message(i) {
            Ok(bytes) => bytes,
            Err(e) => {
                while tasks.join_next().await.is_some() {}
                link.close().await;
                return Err(e);
            }
        };
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
        // Every message the target acknowledged or stopped should end in one of its counters,
        // and so should the introduction (delivered, or the run would have stopped).
        let reached = report.sent - report.failed + 1;
        match target::settle(addr, before, reached, options.settle_timeout).await {
            Ok(counts) => report.target_counted = Some(counts),
            Err(e) => report.target_error = Some(crate::report::Chain(&e).to_string()),
        }
        report.target_after = target::status(addr)
            .await
            .ok()
            .map(|s| TargetView::from_status(&s, &key));
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
    use rumor_proto::wire::{Limits, Payload};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn cluster(
        names: &[&str],
    ) -> Result<(tempfile::TempDir, Vec<PeerIdentity>), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        crate::certs::init_ca(dir.path(), false)?;
        let mut ids = Vec::new();
        for n in names {
            crate::certs::issue(dir.path(), n, 1)?;
            ids.push(crate::certs::load_identity(dir.path(), n)?);
        }
        Ok((dir, ids))
    }

    /// The next frame the transport delivered, decoded, within 10 s.
    async fn next_envelope(
        rx: &mut tokio::sync::mpsc::Receiver<crate::net::Incoming>,
        limits: Limits,
    ) -> Result<wire::Envelope, Box<dyn std::error::Error>> {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .ok_or("the transport closed")?;
        Ok(wire::decode(&got.bytes, limits)?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sender_sees_every_oversized_frame_refused() -> TestResult {
        let (_dir, ids) = cluster(&["target", "chaos"])?;
        let limit = 64 * 1024;
        let limits = Limits {
            max_body: limit,
            max_ttl: 6,
        };
        let config = TransportConfig {
            max_message_bytes: limit,
            ..TransportConfig::default()
        };
        let (target, mut rx) =
            crate::net::Transport::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &ids[0], config)
                .await?;
        let o = ChaosOptions {
            concurrency: 5,
            max_message_bytes: limit,
            param_count: 10,
            ..ChaosOptions::new(target.local_addr(), ChaosKind::Oversized, 5)
        };
        let report =
            tokio::time::timeout(Duration::from_secs(30), run_chaos(&ids[1], &o)).await??;
        assert_eq!(report.sent, 5);
        assert_eq!(report.stopped_too_large, 5, "{report:?}");
        assert_eq!(report.delivered, 0);
        assert_eq!(target.stats().oversize_messages, 5);
        // The introduction came first: chaos's own record, from the id bound to its
        // certificate; then nothing (no oversized frame was delivered).
        let intro = next_envelope(&mut rx, limits).await?;
        let key = crate::net::peer_keys(&ids[1])?.key_id();
        assert_eq!(intro.origin, chaos_id(&key));
        assert_eq!(report.origin, intro.origin.to_string());
        assert!(matches!(&intro.payload, Payload::Membership(v) if v.members.len() == 1));
        assert!(report
            .introduction
            .as_ref()
            .is_some_and(|i| !i.seen_by_target));
        assert!(rx.try_recv().is_err(), "an oversized frame was delivered");

        // A valid message on the same kind of link is delivered, and the target gets it after
        // this run's introduction, from the same origin.
        let o = ChaosOptions {
            kind: ChaosKind::Nan,
            count: 1,
            ..o
        };
        let report = run_chaos(&ids[1], &o).await?;
        assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
        let second = next_envelope(&mut rx, limits).await?;
        assert!(matches!(second.payload, Payload::Membership(_)));
        assert!(second.version > intro.version, "a later heartbeat");
        let nan = next_envelope(&mut rx, limits).await?;
        assert!(matches!(nan.payload, Payload::Delta(_)));
        assert_eq!(nan.origin, intro.origin);
        target.close().await;
        Ok(())
    }
}
