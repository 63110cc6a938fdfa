//! A deterministic many-peer simulator for the sans-IO core.
//!
//! Every peer is a [`Core`]; messages pass through the real codec (encode, then decode on
//! delivery) over a virtual network with a seeded latency, loss and duplication model. The
//! virtual clock jumps to the next event (a delivery or a core timer), so minutes of protocol
//! time run in milliseconds and a run is a pure function of its seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::core::{Core, CoreConfig, Event, LocalPeer};
use crate::wire;

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

struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    frame: Vec<u8>,
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
    /// Messages delivered, dropped by loss, and dropped because a link was cut.
    pub delivered: u64,
    /// Messages lost to the loss model.
    pub dropped: u64,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    config: CoreConfig,
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
            delivered: 0,
            dropped: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            config,
        }
    }

    /// The virtual address of peer `index`.
    pub fn addr(index: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, 1),
            1000 + index as u16,
        ))
    }

    /// Adds a peer with initial parameters `base`, joining through the peers at `seeds`
    /// (indices). Returns its index.
    pub fn add_peer(&mut self, base: Vec<f32>, seeds: &[usize]) -> usize {
        let index = self.peers.len();
        let me = LocalPeer {
            id: Uuid::from_u128(index as u128 + 1),
            name: format!("p{index}"),
            addr: Self::addr(index),
        };
        let seeds = seeds.iter().map(|&s| Self::addr(s)).collect();
        let seed = self.rng.gen();
        let core = Core::new(self.config.clone(), me, base, seeds, seed, self.now);
        self.peers.push(Some(core));
        self.events.push(Vec::new());
        self.flush(index);
        index
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
                .peers
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|c| (c.poll_timeout(), i)))
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

    /// Removes a peer abruptly (a crash): it sends and receives nothing more.
    pub fn crash(&mut self, index: usize) {
        if let Some(slot) = self.peers.get_mut(index) {
            *slot = None;
        }
    }

    fn deliver(&mut self, msg: InFlight) {
        let now = self.now;
        let from = Self::addr(msg.from);
        let Some(Some(core)) = self.peers.get_mut(msg.to) else {
            return;
        };
        self.delivered += 1;
        // Every frame goes through the real decoder.
        let _ = core.handle_bytes(now, from, &msg.frame);
        self.flush(msg.to);
    }

    fn flush(&mut self, index: usize) {
        let Some(Some(core)) = self.peers.get_mut(index) else {
            return;
        };
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
            for to in t.to {
                let port = to.port();
                let Some(target) = (port as usize).checked_sub(1000) else {
                    continue;
                };
                self.send(index, target, frame.clone());
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(self.net.loss.clamp(0.0, 1.0)) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.net.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = self.net.max_latency.saturating_sub(self.net.min_latency);
            let jitter = span.mul_f64(self.rng.gen::<f64>());
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + self.net.min_latency + jitter,
                seq: self.seq,
                from,
                to,
                frame: frame.clone(),
            }));
        }
    }
}
