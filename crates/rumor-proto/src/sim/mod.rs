//! A deterministic many-peer simulator for the sans-IO core.
//!
//! Every peer is a [`Core`]; messages pass through the real codec (encode, then decode on
//! delivery) over a virtual network with a seeded latency, loss and duplication model. The
//! virtual clock jumps to the next event (a delivery or a core timer), so minutes of protocol
//! time run in milliseconds and a run is a pure function of its seed.
//!
//! Memory: a frame sent to several peers is held once, and a delta decoded by many peers shares
//! one copy of its values between them (the values decoded are compared bit for bit with the
//! copy already held), so a cluster of many peers exchanging megabyte deltas fits in memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::id::PeerId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::auth::test_keys::{self, TestVerifier};
use crate::auth::verify_cache::CachingVerifier;
use crate::auth::{KeyId, PeerKeys};
use crate::core::{Core, CoreConfig, Event, LocalPeer, RestoredState, Sender};
use crate::wire::{self, Envelope, Payload};

/// Network behaviour of the simulated links.
#[derive(Clone, Debug)]
pub struct NetModel {
    /// Fraction of messages dropped, in [0, 1].
    pub loss: f64,
    /// Fraction of delivered messages delivered twice, in [0, 1].
    pub duplicate: f64,
    /// Smallest one-way delay.
    pub min_latency: Duration,
    /// Largest one-way delay (uniform between the two, so messages reorder).
    pub max_latency: Duration,
}

impl Default for NetModel {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(5),
        }
    }
}

/// A check on the whole simulation.
pub type Check = fn(&Sim) -> bool;

/// One step of a scenario script.
#[derive(Clone, Debug)]
pub enum Step {
    /// Add `count` peers joining through `seeds` (indices).
    AddPeers {
        /// How many.
        count: usize,
        /// Seed indices.
        seeds: Vec<usize>,
    },
    /// Advance virtual time.
    Run(Duration),
    /// Crash a peer.
    Crash(usize),
    /// Cut every link between two groups.
    Partition(Vec<usize>, Vec<usize>),
    /// Restore every link.
    Heal,
    /// Give one host its own link behaviour (slow, lossy).
    SlowHost(usize, NetModel),
    /// Each of `peers` publishes a delta per round, rounds `every` apart.
    Publish {
        /// Publishing peers.
        peers: Vec<usize>,
        /// Rounds.
        rounds: usize,
        /// Virtual time between rounds.
        every: Duration,
    },
    /// Run until `check` holds, failing after `limit`.
    ExpectWithin {
        /// Deadline (virtual time).
        limit: Duration,
        /// What is expected, for the failure message.
        what: &'static str,
        /// The condition.
        check: Check,
    },
    /// `check` must hold at every 100 ms for `duration`.
    ExpectAlways {
        /// How long (virtual time).
        duration: Duration,
        /// What is expected, for the failure message.
        what: &'static str,
        /// The condition.
        check: Check,
    },
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    frame: Arc<[u8]>,
    /// Origin and version, when the frame is a delta (its outcome goes back to the sender).
    delta: Option<(crate::wire::PeerId, u64)>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A simulated cluster. Peer `i` listens at `10.0.0.1:(1000 + i)` in the virtual network.
pub struct Sim {
    /// The peers, by index. `None` once crashed or removed.
    pub peers: Vec<Option<Core>>,
    /// Events drained from each peer, in order.
    pub events: Vec<Vec<Event>>,
    /// The virtual clock.
    pub now: Instant,
    /// Link behaviour.
    pub net: NetModel,
    /// Links currently cut, as (from, to) index pairs.
    pub cut: HashSet<(usize, usize)>,
    /// Per-peer link behaviour overriding `net` for every message to or from that peer
    /// (a slow or lossy host).
    pub host_net: HashMap<usize, NetModel>,
    /// Messages delivered, dropped by loss, and dropped because a link was cut.
    pub delivered: u64,
    /// Messages lost to the loss model.
    pub dropped: u64,
    rng: ChaCha8Rng,
    /// The seed of this run (printed by tests on failure).
    pub seed: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Each peer's next timer, refreshed whenever the peer is touched (None: not running).
    timers: Vec<Option<Instant>>,
    seq: u64,
    /// Each started peer's id and certificate key id, computed once.
    identities: HashMap<usize, (PeerId, KeyId)>,
    /// The verifier every peer checks with: the test CA's, with one cache of valid signatures
    /// and admitted test credentials for the whole run ([`CachingVerifier`]), so a statement
    /// signed once is verified once, not once per peer.
    verifier: Arc<CachingVerifier<TestVerifier>>,
    config: CoreConfig,
    /// When each peer first applied each delta it received, and in how many hops: one more
    /// than the sender's own copy took (a delta's origin holds it at 0 hops). By
    /// `(peer index, origin, version)`.
    pub first_applied: HashMap<(usize, PeerId, u64), (Instant, u32)>,
    /// The values of each delta some peer decoded, shared by every peer that decodes the same.
    interned: HashMap<(PeerId, u64), Weak<[f32]>>,
    /// Size of `interned` after its last sweep of values no peer holds any more.
    interned_swept: usize,
}

impl Sim {
    /// An empty simulation with seeded randomness.
    pub fn new(config: CoreConfig, net: NetModel, seed: u64) -> Self {
        Self {
            peers: Vec::new(),
            events: Vec::new(),
            now: Instant::now(),
            net,
            cut: HashSet::new(),
            host_net: HashMap::new(),
            delivered: 0,
            dropped: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            queue: BinaryHeap::new(),
            timers: Vec::new(),
            seq: 0,
            identities: HashMap::new(),
            verifier: Arc::new(
                CachingVerifier::new(test_keys::TestCa::new(0).verifier()).caching_admissions(),
            ),
            config,
            first_applied: HashMap::new(),
            interned: HashMap::new(),
            interned_swept: 0,
        }
    }

    /// The virtual address of peer `index`.
    pub fn addr(index: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, 1),
            1000 + index as u16,
        ))
    }

    /// The test keys of the peer at `index` (member `index + 1` of the test CA) and its id.
    pub fn identity(index: usize) -> (PeerId, PeerKeys) {
        test_keys::member(index as u64 + 1)
    }

    /// Signature checks made by all peers so far: how many the test CA's verifier computed,
    /// and how many were answered from the run's cache of valid signatures.
    pub fn signature_checks(&self) -> (u64, u64) {
        (self.verifier.verified(), self.verifier.hits())
    }

    /// The key id of the certificate of the peer at `index`, as a transport would report it.
    fn key_of(&self, index: usize) -> KeyId {
        self.identities
            .get(&index)
            .map_or_else(|| Self::identity(index).1.key_id(), |(_, key)| *key)
    }

    /// The id of the peer at `index`.
    pub fn id_of(&self, index: usize) -> PeerId {
        self.identities
            .get(&index)
            .map_or_else(|| Self::identity(index).0, |(id, _)| *id)
    }

    /// What the peer at `index` starts with, new or restored: its identity (test member
    /// `index + 1`, name `p{index}`), the addresses of the peers at `seeds` and an RNG seed
    /// drawn from the simulator's.
    fn start_args(&mut self, index: usize, seeds: &[usize]) -> (LocalPeer, Vec<SocketAddr>, u64) {
        let (id, mut keys) = Self::identity(index);
        keys.verifier = self.verifier.clone();
        self.identities.insert(index, (id, keys.key_id()));
        let me = LocalPeer {
            id,
            name: format!("p{index}"),
            addr: Self::addr(index),
            keys,
        };
        let seeds = seeds.iter().map(|&s| Self::addr(s)).collect();
        (me, seeds, self.rng.gen())
    }

    /// Adds a peer with initial parameters `base`, joining through the peers at `seeds`
    /// (indices). Returns its index.
    pub fn add_peer(&mut self, base: Vec<f32>, seeds: &[usize]) -> usize {
        let index = self.peers.len();
        let (me, seeds, seed) = self.start_args(index, seeds);
        let core = Core::new(self.config.clone(), me, base, seeds, seed, self.now);
        self.peers.push(Some(core));
        self.events.push(Vec::new());
        self.timers.push(None);
        self.flush(index);
        index
    }

    /// Restarts the crashed peer at `index` from `state` ([`Core::restore`]: same id and
    /// address, incarnation raised by one), joining through the peers at `seeds` (indices).
    /// Its event list starts afresh. Does nothing for an index never added.
    pub fn restore_peer(&mut self, index: usize, state: RestoredState, seeds: &[usize]) {
        if index >= self.peers.len() {
            return;
        }
        let (me, seeds, seed) = self.start_args(index, seeds);
        let core = Core::restore(self.config.clone(), me, state, seeds, seed, self.now);
        self.peers[index] = Some(core);
        self.events[index].clear();
        self.flush(index);
    }

    /// The peer at `index`, if running.
    pub fn peer(&self, index: usize) -> Option<&Core> {
        self.peers.get(index).and_then(Option::as_ref)
    }

    /// Runs `f` on the peer at `index` (if running), then sends what it queued.
    pub fn with_peer<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut Core, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let out = self.peers.get_mut(index)?.as_mut().map(|c| f(c, now));
        self.flush(index);
        out
    }

    /// Advances the virtual clock by `duration`, delivering messages and firing timers.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let next_timer = self
                .timers
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (t, i)))
                .min();
            let next_msg = self.queue.peek().map(|Reverse(m)| m.at);
            let next = match (next_timer, next_msg) {
                (Some((t, _)), Some(m)) => t.min(m),
                (Some((t, _)), None) => t,
                (None, Some(m)) => m,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                if let Some(Reverse(msg)) = self.queue.pop() {
                    self.deliver(msg);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                if let Some(Some(core)) = self.peers.get_mut(i) {
                    core.handle_timeout(now);
                }
                self.flush(i);
            }
        }
        self.now = end;
    }

    /// Runs until `done(self)` holds or `limit` of virtual time passes; returns whether it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(step);
        }
        done(self)
    }

    /// Runs a script of steps; on failure returns which step failed and why.
    pub fn run_script(&mut self, steps: &[Step]) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            self.run_step(step)
                .map_err(|e| format!("step {i} ({step:?}) failed: {e}"))?;
        }
        Ok(())
    }

    fn run_step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::AddPeers { count, seeds } => {
                for _ in 0..*count {
                    self.add_peer(vec![0.0; self.config.param_count], seeds);
                }
            }
            Step::Run(d) => self.run_for(*d),
            Step::Crash(i) => self.crash(*i),
            Step::Partition(a, b) => self.partition(a, b),
            Step::Heal => self.heal(),
            Step::SlowHost(i, net) => {
                self.host_net.insert(*i, net.clone());
            }
            Step::Publish {
                peers,
                rounds,
                every,
            } => {
                for round in 0..*rounds {
                    for &p in peers {
                        let values = (0..self.config.param_count)
                            .map(|k| ((p * 7 + round * 3 + k) % 11) as f32 * 0.01)
                            .collect();
                        self.with_peer(p, |c, now| {
                            let w = 1.0 / c.live_count().max(1) as f32;
                            let _ = c.publish(now, w, values);
                        });
                    }
                    self.run_for(*every);
                }
            }
            Step::ExpectWithin { limit, what, check } => {
                let ok = self.run_until(*limit, Duration::from_millis(100), check);
                if !ok {
                    return Err(format!("`{what}` did not hold within {limit:?}"));
                }
            }
            Step::ExpectAlways {
                duration,
                what,
                check,
            } => {
                let end = self.now + *duration;
                while self.now < end {
                    if !check(self) {
                        return Err(format!("`{what}` broke at {:?}", self.now));
                    }
                    self.run_for(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    /// Removes a peer abruptly (a crash): it sends and receives nothing more.
    pub fn crash(&mut self, index: usize) {
        if let Some(slot) = self.peers.get_mut(index) {
            *slot = None;
        }
        if let Some(t) = self.timers.get_mut(index) {
            *t = None;
        }
    }

    fn deliver(&mut self, msg: InFlight) {
        let now = self.now;
        let from = Sender {
            addr: Self::addr(msg.from),
            key: self.key_of(msg.from),
        };
        if !matches!(self.peers.get(msg.to), Some(Some(_))) {
            return;
        }
        self.delivered += 1;
        // Every frame goes through the real decoder.
        let decoded = wire::decode(&msg.frame, self.config.limits()).map(|mut envelope| {
            self.intern(&mut envelope);
            envelope
        });
        let Some(Some(core)) = self.peers.get_mut(msg.to) else {
            return;
        };
        match decoded {
            Ok(envelope) => core.handle_message(now, from, envelope),
            // Handled again as bytes, so the core counts the error as it would.
            Err(_) => {
                let _ = core.handle_bytes(now, from, &msg.frame);
            }
        }
        let seen = self.events.get(msg.to).map_or(0, Vec::len);
        self.flush(msg.to);
        self.note_first_applied(msg.from, msg.to, seen);
        self.report(msg.from, msg.to, msg.delta, true);
    }

    /// Records the deltas peer `to` applied since its event `seen`, delivered by `from`.
    fn note_first_applied(&mut self, from: usize, to: usize, seen: usize) {
        let Some(events) = self.events.get(to) else {
            return;
        };
        for event in &events[seen..] {
            if let Event::DeltaApplied {
                origin, version, ..
            } = event
            {
                let hops = self
                    .first_applied
                    .get(&(from, *origin, *version))
                    .map_or(0, |(_, hops)| *hops)
                    + 1;
                self.first_applied
                    .entry((to, *origin, *version))
                    .or_insert((self.now, hops));
            }
        }
    }

    /// Makes a decoded delta share the values of an identical one some peer already holds.
    fn intern(&mut self, envelope: &mut Envelope) {
        let Payload::Delta(delta) = &mut envelope.payload else {
            return;
        };
        let key = (envelope.origin, envelope.version);
        if let Some(held) = self.interned.get(&key).and_then(Weak::upgrade) {
            let same = held.len() == delta.values.len()
                && held
                    .iter()
                    .zip(delta.values.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            if same {
                delta.values = held;
                return;
            }
        }
        self.interned.insert(key, Arc::downgrade(&delta.values));
        if self.interned.len() > 2 * self.interned_swept.max(1024) {
            self.interned.retain(|_, values| values.strong_count() > 0);
            self.interned_swept = self.interned.len();
        }
    }

    fn flush(&mut self, index: usize) {
        let Some(Some(core)) = self.peers.get_mut(index) else {
            if let Some(t) = self.timers.get_mut(index) {
                *t = None;
            }
            return;
        };
        let next = core.poll_timeout();
        if let Some(t) = self.timers.get_mut(index) {
            *t = Some(next);
        }
        let mut transmits = Vec::new();
        while let Some(t) = core.poll_transmit() {
            transmits.push(t);
        }
        while let Some(e) = core.poll_event() {
            self.events[index].push(e);
        }
        let max = self.config.max_message_bytes;
        for t in transmits {
            let Ok(frame) = wire::encode(&t.envelope, max) else {
                continue;
            };
            let frame: Arc<[u8]> = frame.into();
            for to in t.to {
                let port = to.port();
                let Some(target) = (port as usize).checked_sub(1000) else {
                    continue;
                };
                // A transport sends a member-bound message only to that member's certificate.
                if t.to_member.is_some_and(|m| !self.key_of(target).binds(&m)) {
                    continue;
                }
                let delta = (t.envelope.payload.kind() == wire::MessageKind::Delta)
                    .then_some((t.envelope.origin, t.envelope.version));
                self.send(index, target, frame.clone(), delta);
            }
        }
    }

    /// Sends `envelope` from the peer at `from` to the peer at `to` as if `from` had sent it
    /// (its connection, its certificate), whatever `from`'s core would do: how tests play a
    /// misbehaving member. The network model applies.
    pub fn inject(&mut self, from: usize, to: usize, envelope: &crate::wire::Envelope) {
        let Ok(frame) = wire::encode(envelope, self.config.max_message_bytes) else {
            return;
        };
        self.send(from, to, frame.into(), None);
    }

    /// Cuts every link between `a` and `b` (both directions).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Indices of the running peers.
    pub fn running(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].is_some())
            .collect()
    }

    /// Whether every running peer has joined and lists every running peer as live.
    pub fn everyone_knows_everyone(&self) -> bool {
        let running = self.running();
        running.iter().all(|&i| {
            self.peer(i)
                .is_some_and(|c| c.is_joined() && c.live_count() == running.len())
        })
    }

    /// Adds `count` peers with zero parameters, joining through peer 0 (the first peer of an
    /// empty simulator has no seed), and runs until [`Self::everyone_knows_everyone`], checked
    /// every 100 ms, for at most `limit` of virtual time. Returns whether it got there.
    pub fn form_cluster(&mut self, count: usize, limit: Duration) -> bool {
        for _ in 0..count {
            let seeds: &[usize] = if self.peers.is_empty() { &[] } else { &[0] };
            self.add_peer(vec![0.0; self.config.param_count], seeds);
        }
        self.run_until(
            limit,
            Duration::from_millis(100),
            Sim::everyone_knows_everyone,
        )
    }

    /// The status peer `observer` holds for peer `subject`, if it knows it.
    pub fn status_of(&self, observer: usize, subject: usize) -> Option<crate::wire::MemberStatus> {
        let id = self.id_of(subject);
        self.peer(observer)?
            .members()
            .find(|m| m.peer_id == id)
            .map(|m| m.status)
    }

    /// Tells the sender what became of a delta it sent, as the real shell does once QUIC
    /// acknowledged or gave up on it.
    fn report(
        &mut self,
        from: usize,
        to: usize,
        delta: Option<(crate::wire::PeerId, u64)>,
        ok: bool,
    ) {
        let Some((origin, version)) = delta else {
            return;
        };
        let now = self.now;
        if let Some(Some(core)) = self.peers.get_mut(from) {
            core.send_outcome(now, Self::addr(to), origin, version, ok);
        }
    }

    fn send(
        &mut self,
        from: usize,
        to: usize,
        frame: Arc<[u8]>,
        delta: Option<(crate::wire::PeerId, u64)>,
    ) {
        let net = self
            .host_net
            .get(&from)
            .or_else(|| self.host_net.get(&to))
            .unwrap_or(&self.net)
            .clone();
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(net.loss.clamp(0.0, 1.0)) {
            self.dropped += 1;
            self.report(from, to, delta, false);
            return;
        }
        let copies = if self.rng.gen_bool(net.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = net.max_latency.saturating_sub(net.min_latency);
            let jitter = span.mul_f64(self.rng.gen::<f64>());
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + net.min_latency + jitter,
                seq: self.seq,
                from,
                to,
                frame: frame.clone(),
                delta,
            }));
        }
    }
}

#[cfg(test)]
mod dissemination_scenarios;
#[cfg(test)]
mod lifecycle_scenarios;
#[cfg(test)]
mod scale_scenarios;
#[cfg(test)]
mod scenarios;

/// The seeds every scenario runs with: 1, 2 and 3, or the one in `RUMOR_SIM_SEED` (to rerun a
/// failure).
#[cfg(test)]
fn scenario_seeds() -> Vec<u64> {
    match std::env::var("RUMOR_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3],
    }
}
