//! The messages of each [`ChaosKind`], built by a [`Generator`] that is a proper signing member:
//! one stable peer id per certificate ([`chaos_id`]), its own signed member record (the
//! *introduction*, [`Generator::introduction`]), and deltas signed with its certificate's key
//! unless the kind is about a bad signature.
//!
//! Versions. Each run draws a base version `v0` in `[1, 2^40)` ([`BASE_VERSION_END`]) from its
//! generator. `duplicate` and `replay` send `v0` (applied once), `nan`, `shape`, `norm`, `alter`
//! and `truncated` send `v0 + i`. The introduction announces `published = v0 + count`, the
//! highest version the run uses legitimately, so those deltas pass the target's version-jump
//! check and reach the check they aim at. `version` sends `max(published, 2^40) + 10^12`
//! ([`VERSION_JUMP`]): the only chaos versions a target ever applies are base versions, all below
//! `2^40`, so this one is past everything the target knows of chaos by far more than any jump
//! limit. `forge` sends versions from `2^41` ([`FORGE_VERSION_BASE`]) on, which no honest member
//! reaches, so a forged delta is never taken for one the victim's own already applied.
//!
//! Equivocation. `equivocate` sends one delta of chaos's, validly signed, under `v0` alone (its
//! introduction announces `published = v0`; every copy is the same delta under a fresh envelope
//! id). Its values are `±EQUIVOCATION_EPSILON` with the signs drawn from a generator seeded with
//! the target's address ([`equivocation_values`]): the same target always gets the same delta,
//! two targets two different ones. So two runs with one `--rng-seed` (one `v0`) against two
//! peers hand the cluster two different signed deltas under one `(origin, version)`. Its
//! envelope ids come from the OS RNG even in a seeded run, so that the two runs' copies are
//! never taken for duplicates of each other.

use std::net::{IpAddr, SocketAddr};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use uuid::Uuid;

use rumor_proto::auth::{content_hash, statement, KeyId, PeerKeys};
use rumor_proto::core::sign_record;
use rumor_proto::wire::{
    self, DeltaPayload, Envelope, JoinRequest, Lifecycle, MemberRecord, MemberStatus,
    MembershipView, Payload, Probe,
};
use rumor_proto::{MessageId, PeerId};

use super::{ChaosError, ChaosKind, ChaosOptions};

/// The data dir seed of chaos's peer id: with it, a certificate gives chaos one stable id,
/// the same on every run ([`chaos_id`]).
pub const CHAOS_SEED: [u8; 8] = *b"rmrchaos";

/// Base versions are drawn from `[1, BASE_VERSION_END)`, i.e. below 2^40.
pub const BASE_VERSION_END: u64 = 1 << 40;

/// How far `version` goes past the highest version a target can know of chaos.
pub const VERSION_JUMP: u64 = 1_000_000_000_000;

/// First version of a forged delta (plus the run's base version and the message index).
pub const FORGE_VERSION_BASE: u64 = 1 << 41;

/// How much `tamper` lifts the `published` version of chaos's record.
pub const TAMPER_LIFT: u64 = 1_000_000_000_000;

/// Weight of every delta chaos builds.
const WEIGHT: f32 = 0.25;

/// The magnitude of every value of an `equivocate` delta: small enough that, scaled by the
/// delta's weight, it stays far below a training delta's norm (the target's norm check), and
/// harmless to a model while it is applied.
pub const EQUIVOCATION_EPSILON: f32 = 1e-3;

/// What one `equivocate` run sent: one delta under one version, the same delta in every copy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EquivocationSent {
    /// The version: the run's base version, the same on every run with one `--rng-seed`.
    pub version: u64,
    /// The SHA-256 of its values (hex), the content its signature covers: different for every
    /// target address.
    pub content_hash: String,
    /// The magnitude of its values ([`EQUIVOCATION_EPSILON`]).
    pub epsilon: f32,
    /// How many of its values are `+epsilon` (the others are `-epsilon`).
    pub positive: usize,
    /// How many of its values are `-epsilon`.
    pub negative: usize,
}

/// The values of the `equivocate` delta for `target`: `len` values, each
/// `±`[`EQUIVOCATION_EPSILON`], the signs drawn from a generator seeded with the target's
/// address (its IP, as IPv6, and port). The same target always gets the same values; two
/// different addresses get different ones (two equal sign patterns of a model's length are
/// practically impossible).
pub fn equivocation_values(target: SocketAddr, len: usize) -> Vec<f32> {
    let ip = match target.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&ip.octets());
    seed[16..18].copy_from_slice(&target.port().to_be_bytes());
    seed[18..].copy_from_slice(b"rumor/equivoca");
    let mut rng = ChaCha8Rng::from_seed(seed);
    (0..len)
        .map(|_| {
            if rng.gen::<bool>() {
                EQUIVOCATION_EPSILON
            } else {
                -EQUIVOCATION_EPSILON
            }
        })
        .collect()
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Chaos's peer id with the certificate whose key id is `key`: bound to it, with the seed
/// [`CHAOS_SEED`], so every run with one certificate speaks as one id.
pub fn chaos_id(key: &KeyId) -> PeerId {
    PeerId::bound(key, CHAOS_SEED)
}

/// Where the victim's id of `forge`, `impersonate` and `reflect` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VictimSource {
    /// The target's own id, read from its `/status`: a forged delta names a known origin and
    /// is refused for its `signature`.
    TargetStatus,
    /// Made up, bound to a random key no member has (no metrics address to read a real one
    /// from): a forged delta names an unknown origin and is refused as `unknown_origin`.
    MadeUp,
}

/// The member whose name `forge`, `impersonate` and `reflect` speak in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Victim {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its listen address, when known (put in the envelopes as theirs).
    pub addr: Option<SocketAddr>,
    /// Where the id came from.
    pub source: VictimSource,
}

impl Victim {
    /// A made-up victim: an id bound to a random key, with a random seed.
    fn made_up(rng: &mut ChaCha8Rng) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self {
            peer_id: PeerId::bound(&KeyId::of(&key), rng.gen()),
            addr: None,
            source: VictimSource::MadeUp,
        }
    }
}

/// Builds the introduction and the messages of one run. See the module docs.
pub(crate) struct Generator {
    kind: ChaosKind,
    rng: ChaCha8Rng,
    local: SocketAddr,
    param_count: usize,
    max_message_bytes: usize,
    keys: PeerKeys,
    /// Chaos's peer id ([`chaos_id`]).
    origin: PeerId,
    /// The run's base version `v0`.
    base_version: u64,
    /// Chaos's own record, signed: the introduction's, and what `tamper` alters.
    record: MemberRecord,
    /// Whose name `forge`, `impersonate` and `reflect` speak in.
    victim: Victim,
    /// The envelope repeated by `duplicate` and `flood`, and the delta of `replay` and
    /// `equivocate`.
    fixed: Envelope,
    /// What `equivocate` sends (`None` for other kinds).
    equivocation: Option<EquivocationSent>,
}

impl Generator {
    /// The generator of one run of `options` from `local` (chaos's endpoint), signing with
    /// `keys` (whose certificate was issued for `name`). `heartbeat` is the introduction's (it
    /// must be above every earlier run's: wall-clock milliseconds do). `victim`: the target's
    /// own id when known, else a made-up one is drawn.
    ///
    /// # Errors
    /// [`ChaosError::Signing`] when the certificate's key cannot sign chaos's record or the
    /// run's repeated delta.
    pub(crate) fn new(
        options: &ChaosOptions,
        local: SocketAddr,
        keys: PeerKeys,
        name: &str,
        heartbeat: u64,
        victim: Option<Victim>,
    ) -> Result<Self, ChaosError> {
        let mut rng = run_rng(options.kind, options.rng_seed);
        let origin = chaos_id(&keys.key_id());
        let base_version = rng.gen_range(1..BASE_VERSION_END);
        let mut record = MemberRecord {
            peer_id: origin,
            name: format!("chaos:{name}"),
            addr: local,
            incarnation: 0,
            heartbeat,
            // Left and stopped: the target never probes it, waits for it or counts it live.
            status: MemberStatus::Left,
            lifecycle: Lifecycle::Stopped,
            // `equivocate` uses `v0` alone, however many copies it sends.
            published: if options.kind == ChaosKind::Equivocate {
                base_version
            } else {
                base_version.saturating_add(options.count)
            },
            credential: keys.signer.credential().clone(),
            signature: Default::default(),
        };
        sign(&keys, &mut record)?;
        // Drawn whether used or not, so that a seeded run draws the same ids with or without a
        // known victim.
        let made_up = Victim::made_up(&mut rng);
        let victim = victim.unwrap_or(made_up);
        let mut generator = Self {
            kind: options.kind,
            rng,
            local,
            param_count: options.param_count,
            max_message_bytes: options.max_message_bytes,
            keys,
            origin,
            base_version,
            record,
            victim,
            // Replaced below.
            fixed: Envelope {
                id: MessageId::from_uuid(Uuid::nil()),
                origin,
                origin_addr: local,
                version: 0,
                ttl: 1,
                payload: Payload::Membership(empty_view()),
            },
            equivocation: None,
        };
        generator.fixed = match options.kind {
            ChaosKind::Flood => {
                generator.envelope(origin, heartbeat, Payload::Membership(empty_view()))
            }
            ChaosKind::Equivocate => {
                let values = equivocation_values(options.target, options.param_count);
                let positive = values.iter().filter(|v| **v > 0.0).count();
                generator.equivocation = Some(EquivocationSent {
                    version: base_version,
                    content_hash: hex(&content_hash(&values)),
                    epsilon: EQUIVOCATION_EPSILON,
                    positive,
                    negative: values.len() - positive,
                });
                generator.delta(origin, base_version, values)?
            }
            _ => generator.delta(origin, base_version, vec![0.0; options.param_count])?,
        };
        Ok(generator)
    }

    /// Chaos's peer id.
    pub(crate) fn origin(&self) -> PeerId {
        self.origin
    }

    /// The run's base version `v0`.
    pub(crate) fn base_version(&self) -> u64 {
        self.base_version
    }

    /// Chaos's own signed record, as the introduction carries it.
    pub(crate) fn record(&self) -> &MemberRecord {
        &self.record
    }

    /// Whose name `forge`, `impersonate` and `reflect` speak in.
    pub(crate) fn victim(&self) -> &Victim {
        &self.victim
    }

    /// What `equivocate` sends; `None` for other kinds.
    pub(crate) fn equivocation(&self) -> Option<&EquivocationSent> {
        self.equivocation.as_ref()
    }

    /// The introduction: a `Membership` view (not a push-pull) holding chaos's own signed
    /// record, with an envelope id from the OS RNG (a seeded run repeated must still be heard).
    pub(crate) fn introduction(&self) -> Envelope {
        Envelope {
            id: MessageId::from_uuid(Uuid::new_v4()),
            origin: self.origin,
            origin_addr: self.local,
            version: self.record.heartbeat,
            ttl: 1,
            payload: Payload::Membership(MembershipView {
                members: vec![self.record.clone()],
                push_pull: false,
                reply: false,
            }),
        }
    }

    /// Encodes `envelope` without a size limit (oversized is the target's business).
    pub(crate) fn encode(envelope: &Envelope) -> Result<Vec<u8>, wire::EncodeError> {
        wire::encode(envelope, usize::MAX)
    }

    fn junk(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(1..=256);
        let mut bytes = vec![0u8; len];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    fn fresh_id(&mut self) -> MessageId {
        MessageId::from_uuid(random_uuid(&mut self.rng))
    }

    /// An envelope from `origin` with a fresh id, TTL 1 (never forwarded further).
    fn envelope(&mut self, origin: PeerId, version: u64, payload: Payload) -> Envelope {
        Envelope {
            id: self.fresh_id(),
            origin,
            origin_addr: self.local,
            version,
            ttl: 1,
            payload,
        }
    }

    /// A delta `(origin, version)` of `values`, signed with chaos's key over its statement
    /// (the origin's own signature when `origin` is chaos's id; a forgery otherwise).
    fn delta(
        &mut self,
        origin: PeerId,
        version: u64,
        values: Vec<f32>,
    ) -> Result<Envelope, ChaosError> {
        let content = content_hash(&values);
        let signature = self
            .keys
            .signer
            .sign(&statement::delta(origin, version, WEIGHT, &content))
            .map_err(ChaosError::Signing)?;
        let payload = Payload::Delta(DeltaPayload {
            weight: WEIGHT,
            values: values.into(),
            signature,
        });
        Ok(self.envelope(origin, version, payload))
    }

    /// Chaos's own delta `v0 + i` of `values`, validly signed.
    fn own_delta(&mut self, i: u64, values: Vec<f32>) -> Result<Vec<u8>, ChaosError> {
        let version = self.base_version.saturating_add(i);
        let env = self.delta(self.origin, version, values)?;
        Ok(Self::encode(&env)?)
    }

    /// A fresh id bound to chaos's key (a seed other than [`CHAOS_SEED`]).
    fn fresh_bound_id(&mut self) -> PeerId {
        let mut seed: [u8; 8] = self.rng.gen();
        if seed == CHAOS_SEED {
            seed[0] ^= 1;
        }
        PeerId::bound(&self.keys.key_id(), seed)
    }

    /// A fresh id bound to no certificate (random bytes).
    fn fresh_unbound_id(&mut self) -> PeerId {
        PeerId::from_uuid(random_uuid(&mut self.rng))
    }

    /// A record of `peer_id` like chaos's own (left, stopped), signed with chaos's key.
    fn invented_record(&self, peer_id: PeerId) -> Result<MemberRecord, ChaosError> {
        let mut record = MemberRecord {
            peer_id,
            name: format!("{}-invented", self.record.name),
            ..self.record.clone()
        };
        sign(&self.keys, &mut record)?;
        Ok(record)
    }

    /// A membership view from chaos holding `members`, with envelope version `heartbeat`.
    fn view(&mut self, heartbeat: u64, members: Vec<MemberRecord>) -> Result<Vec<u8>, ChaosError> {
        let payload = Payload::Membership(MembershipView {
            members,
            push_pull: false,
            reply: false,
        });
        let env = self.envelope(self.origin, heartbeat, payload);
        Ok(Self::encode(&env)?)
    }

    /// An envelope of `payload` in the victim's name (origin and address its).
    fn as_victim(&mut self, payload: Payload) -> Result<Vec<u8>, ChaosError> {
        let mut env = self.envelope(self.victim.peer_id, 0, payload);
        if let Some(addr) = self.victim.addr {
            env.origin_addr = addr;
        }
        Ok(Self::encode(&env)?)
    }

    /// The `i`-th message of the run.
    pub(crate) fn message(&mut self, i: u64) -> Result<Vec<u8>, ChaosError> {
        let p = self.param_count;
        Ok(match self.kind {
            ChaosKind::Junk => self.junk(),
            ChaosKind::Truncated => {
                let frame = self.own_delta(i, vec![0.0; p])?;
                frame[..frame.len() / 2].to_vec()
            }
            ChaosKind::Oversized => {
                let mut frame = vec![0u8; self.max_message_bytes + 1];
                frame[..4].copy_from_slice(&wire::MAGIC);
                frame
            }
            ChaosKind::Duplicate => Self::encode(&self.fixed)?,
            ChaosKind::Equivocate => {
                // Ids from the OS RNG even in a seeded run: the runs against two peers must
                // never look like duplicates to a peer that hears of both.
                let mut env = self.fixed.clone();
                env.id = MessageId::from_uuid(Uuid::new_v4());
                Self::encode(&env)?
            }
            ChaosKind::Replay => {
                let mut env = self.fixed.clone();
                env.id = self.fresh_id();
                Self::encode(&env)?
            }
            ChaosKind::Nan => {
                let mut values = vec![0.0; p];
                if let Some(v) = values.first_mut() {
                    *v = f32::NAN;
                }
                self.own_delta(i, values)?
            }
            ChaosKind::Shape => self.own_delta(i, vec![0.0; p + 1])?,
            ChaosKind::Norm => self.own_delta(i, vec![1e6; p])?,
            ChaosKind::Version => {
                let version = self
                    .record
                    .published
                    .max(BASE_VERSION_END)
                    .saturating_add(VERSION_JUMP);
                let env = self.delta(self.origin, version, vec![0.0; p])?;
                Self::encode(&env)?
            }
            ChaosKind::Flood => {
                if i % 2 == 0 {
                    self.junk()
                } else {
                    Self::encode(&self.fixed)?
                }
            }
            ChaosKind::Forge => {
                let version = FORGE_VERSION_BASE
                    .saturating_add(self.base_version)
                    .saturating_add(i);
                let env = self.delta(self.victim.peer_id, version, vec![0.0; p])?;
                Self::encode(&env)?
            }
            ChaosKind::Alter => {
                let version = self.base_version.saturating_add(i);
                let mut env = self.delta(self.origin, version, vec![0.0; p])?;
                // What a forwarder would do: one value changed, the signature passed on.
                if let Payload::Delta(delta) = &mut env.payload {
                    let mut values = delta.values.to_vec();
                    if !values.is_empty() {
                        let j = self.rng.gen_range(0..values.len());
                        values[j] = 1.0;
                    }
                    delta.values = values.into();
                }
                Self::encode(&env)?
            }
            ChaosKind::Impersonate => self.as_victim(Payload::Ping(Probe {
                seq: i,
                updates: Vec::new(),
                applied_hash: 0,
            }))?,
            ChaosKind::Reflect => {
                // A joiner's record in the victim's name, at the victim's address: answered,
                // it would send the victim the whole view and a snapshot.
                let mut member = self.record.clone();
                member.peer_id = self.victim.peer_id;
                member.status = MemberStatus::Alive;
                member.lifecycle = Lifecycle::Joining;
                if let Some(addr) = self.victim.addr {
                    member.addr = addr;
                }
                self.as_victim(Payload::Join(JoinRequest {
                    member,
                    forwarded: false,
                }))?
            }
            ChaosKind::Invent => {
                let unbound = self.fresh_unbound_id();
                let bound = self.fresh_bound_id();
                let members = vec![self.invented_record(unbound)?, self.invented_record(bound)?];
                let heartbeat = self.record.heartbeat;
                self.view(heartbeat, members)?
            }
            ChaosKind::Tamper => {
                // Chaos's own signed record, a newer heartbeat (so the target checks it) and one
                // field changed, the signature kept.
                let mut record = self.record.clone();
                record.heartbeat = record.heartbeat.saturating_add(1).saturating_add(i);
                if i % 2 == 0 {
                    record.published = record.published.saturating_add(TAMPER_LIFT);
                } else {
                    record.addr = SocketAddr::new(record.addr.ip(), record.addr.port() ^ 1);
                }
                let heartbeat = record.heartbeat;
                self.view(heartbeat, vec![record])?
            }
            ChaosKind::Origins => {
                let origin = if i % 2 == 0 {
                    self.fresh_unbound_id()
                } else {
                    self.fresh_bound_id()
                };
                let env = self.delta(origin, 1, vec![0.0; p])?;
                Self::encode(&env)?
            }
        })
    }
}

/// Signs `record` with `keys` ([`sign_record`]), which leaves an empty signature when the key
/// cannot sign.
///
/// # Errors
/// [`ChaosError::Signing`] when the signature came out empty.
fn sign(keys: &PeerKeys, record: &mut MemberRecord) -> Result<(), ChaosError> {
    sign_record(keys, record);
    if record.signature.0.is_empty() {
        return Err(ChaosError::Signing(rumor_proto::auth::AuthError::Signing(
            "the certificate's key produced no signature".into(),
        )));
    }
    Ok(())
}

fn empty_view() -> MembershipView {
    MembershipView {
        members: Vec::new(),
        push_pull: false,
        reply: false,
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

#[cfg(test)]
mod tests;
