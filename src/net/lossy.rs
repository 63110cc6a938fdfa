//! Loss injection under QUIC: an [`AsyncUdpSocket`] wrapper that drops a seeded fraction of the
//! datagrams it sends and receives, so convergence can be measured under packet loss without
//! root or kernel rules (the kernel way is `scripts/netns/`).
//!
//! # Model
//!
//! Every datagram is dropped independently (Bernoulli) with the probability of its direction:
//! `loss_out` on send, `loss_in` on receive, optionally overridden per remote address
//! ([`LinkLoss`]). A peer with `loss_in = loss_out = p` talking to a lossless peer sees each
//! datagram of a round trip survive with probability `(1 − p)`, per direction.
//!
//! **GSO / GRO.** quinn may hand the socket one [`Transmit`] holding several datagrams
//! (`segment_size`), and the kernel may return several datagrams in one receive buffer
//! (`stride`). Batches are split first and each datagram is decided on its own, so a batch is
//! never dropped as one. Kept datagrams of a send batch go out one by one; if the kernel
//! refuses one midway with `WouldBlock`, the rest of the batch is dropped and counted in
//! [`LossCounters::send_overflow`] (QUIC recovers it as any loss). Received batches are
//! compacted in place.
//!
//! The random draws come from ChaCha8 seeded by [`LossConfig::seed`] (one stream per
//! direction), so the drop pattern for a given sequence of datagrams is reproducible; the
//! sequence itself depends on timing.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Drop probabilities of one direction pair, each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkLoss {
    /// Fraction of received datagrams dropped.
    pub loss_in: f64,
    /// Fraction of sent datagrams dropped.
    pub loss_out: f64,
}

/// What a [`LossySocket`] drops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossConfig {
    /// Probabilities for every remote address without an override.
    pub default: LinkLoss,
    /// Overrides by remote address (IPv4-mapped IPv6 addresses are matched as IPv4).
    pub links: HashMap<SocketAddr, LinkLoss>,
    /// Seed of the drop decisions.
    pub seed: u64,
}

impl LossConfig {
    /// The same probability `p` both ways on every link.
    pub fn uniform(p: f64, seed: u64) -> Self {
        Self {
            default: LinkLoss {
                loss_in: p,
                loss_out: p,
            },
            links: HashMap::new(),
            seed,
        }
    }

    /// Whether any datagram can be dropped.
    pub fn is_active(&self) -> bool {
        let active = |l: &LinkLoss| l.loss_in > 0.0 || l.loss_out > 0.0;
        active(&self.default) || self.links.values().any(active)
    }

    /// Checks that every probability lies in [0, 1].
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |p: f64| p.is_finite() && (0.0..=1.0).contains(&p);
        for (what, l) in std::iter::once((None, &self.default))
            .chain(self.links.iter().map(|(a, l)| (Some(a), l)))
        {
            if !ok(l.loss_in) || !ok(l.loss_out) {
                return Err(format!(
                    "loss probabilities must lie in [0, 1]{}: in {}, out {}",
                    what.map_or(String::new(), |a| format!(" (link {a})")),
                    l.loss_in,
                    l.loss_out
                ));
            }
        }
        Ok(())
    }

    fn link(&self, addr: SocketAddr) -> LinkLoss {
        if self.links.is_empty() {
            return self.default;
        }
        self.links
            .get(&canonical(addr))
            .copied()
            .unwrap_or(self.default)
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Datagram counters of a [`LossySocket`].
#[derive(Debug, Default)]
pub struct LossCounters {
    /// Datagrams the wrapper was asked to send (after splitting GSO batches).
    pub sent_offered: AtomicU64,
    /// Of those, dropped on purpose.
    pub dropped_out: AtomicU64,
    /// Datagrams received from the kernel (after splitting GRO batches).
    pub received_offered: AtomicU64,
    /// Of those, dropped on purpose.
    pub dropped_in: AtomicU64,
    /// Kept datagrams of a send batch lost because the kernel buffer filled midway.
    pub send_overflow: AtomicU64,
}

/// An [`AsyncUdpSocket`] that drops datagrams as [`LossConfig`] says, around another socket.
pub struct LossySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    config: LossConfig,
    rng_out: Mutex<ChaCha8Rng>,
    rng_in: Mutex<ChaCha8Rng>,
    counters: Arc<LossCounters>,
}

impl fmt::Debug for LossySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossySocket")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LossySocket {
    /// Wraps `inner`. The counters are shared with the caller (the transport reports them).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, config: LossConfig) -> Self {
        let seed = config.seed;
        Self {
            inner,
            config,
            rng_out: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x6f75_7467_6f69_6e67)),
            rng_in: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x696e_636f_6d69_6e67)),
            counters: Arc::new(LossCounters::default()),
        }
    }

    /// The drop counters.
    pub fn counters(&self) -> Arc<LossCounters> {
        self.counters.clone()
    }

    fn drop_out(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng_out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .gen_bool(p.min(1.0))
    }

    fn drop_in(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng_in
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .gen_bool(p.min(1.0))
    }
}

impl AsyncUdpSocket for LossySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let p = self.config.link(transmit.destination).loss_out;
        let seg = match transmit.segment_size {
            Some(s) if s > 0 && s < transmit.contents.len() => s,
            _ => transmit.contents.len().max(1),
        };
        // Counted locally and committed only when quinn will not retry the batch, so a retried
        // batch is never counted twice.
        let (mut offered, mut dropped) = (0u64, 0u64);
        let mut sent_any = false;
        let mut chunks = transmit.contents.chunks(seg);
        while let Some(chunk) = chunks.next() {
            offered += 1;
            if self.drop_out(p) {
                dropped += 1;
                continue;
            }
            let single = Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents: chunk,
                segment_size: None,
                src_ip: transmit.src_ip,
            };
            match self.inner.try_send(&single) {
                Ok(()) => sent_any = true,
                // Nothing went out yet: quinn may retry the whole batch; count nothing.
                Err(e) if !sent_any => return Err(e),
                Err(_) => {
                    let rest = 1 + chunks.by_ref().count() as u64;
                    offered += rest - 1;
                    self.counters
                        .send_overflow
                        .fetch_add(rest, Ordering::Relaxed);
                    break;
                }
            }
        }
        self.counters
            .sent_offered
            .fetch_add(offered, Ordering::Relaxed);
        self.counters
            .dropped_out
            .fetch_add(dropped, Ordering::Relaxed);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                let p = self.config.link(m.addr).loss_in;
                let stride = if m.stride == 0 { m.len } else { m.stride };
                // Compact the kept datagrams of buffer i to its front.
                let mut write = 0;
                let mut read = 0;
                while read < m.len {
                    let end = (read + stride.max(1)).min(m.len);
                    self.counters
                        .received_offered
                        .fetch_add(1, Ordering::Relaxed);
                    if self.drop_in(p) {
                        self.counters.dropped_in.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if write != read {
                            bufs[i].copy_within(read..end, write);
                        }
                        write += end - read;
                    }
                    read = end;
                }
                if write == 0 {
                    continue;
                }
                // Move entry i to slot `kept` when earlier entries were dropped whole.
                if kept != i {
                    let (head, tail) = bufs.split_at_mut(i);
                    head[kept][..write].copy_from_slice(&tail[0][..write]);
                }
                meta[kept] = RecvMeta { len: write, ..m };
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was dropped: poll again (registers the waker when nothing is ready).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::{Runtime, TokioRuntime};
    use std::time::Duration;

    fn bind() -> Arc<dyn AsyncUdpSocket> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        TokioRuntime.wrap_udp_socket(s).unwrap()
    }

    /// |dropped − n·p| ≤ 5 σ with σ = √(n·p·(1−p)).
    fn within_binomial(dropped: u64, n: u64, p: f64) {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let dev = (dropped as f64 - mean).abs();
        assert!(
            dev <= 5.0 * sigma,
            "dropped {dropped} of {n}, expected {mean:.0} ± {:.0} (5σ)",
            5.0 * sigma
        );
    }

    #[tokio::test]
    async fn send_side_drops_close_to_the_asked_fraction_even_in_gso_batches() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let to = receiver.local_addr().unwrap();
        let p = 0.2;
        let lossy = LossySocket::new(bind(), LossConfig::uniform(p, 7));
        let counters = lossy.counters();
        // 2,000 batches of 5 datagrams of 100 bytes each, sent as GSO transmits.
        let contents = vec![1u8; 500];
        let n = 10_000u64;
        let mut sent = 0u64;
        let mut buf = [0u8; 2048];
        let mut received = 0u64;
        while sent < n {
            let t = Transmit {
                destination: to,
                ecn: None,
                contents: &contents,
                segment_size: Some(100),
                src_ip: None,
            };
            match lossy.try_send(&t) {
                Ok(()) => sent += 5,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("send failed: {e}"),
            }
            // Drain the receiver so its buffer never overflows.
            while let Ok(len) = {
                receiver.set_nonblocking(true).unwrap();
                receiver.recv(&mut buf)
            } {
                assert_eq!(len, 100, "each datagram arrives alone, whole");
                received += 1;
            }
        }
        let offered = counters.sent_offered.load(Ordering::Relaxed);
        let dropped = counters.dropped_out.load(Ordering::Relaxed);
        assert_eq!(offered, n, "every datagram of every batch was decided");
        within_binomial(dropped, n, p);
        assert!(received <= n - dropped, "no dropped datagram arrived");
    }

    #[tokio::test]
    async fn receive_side_drops_close_to_the_asked_fraction() {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = 0.3;
        let lossy = Arc::new(LossySocket::new(
            bind(),
            LossConfig {
                default: LinkLoss {
                    loss_in: p,
                    loss_out: 0.0,
                },
                links: HashMap::new(),
                seed: 11,
            },
        ));
        let to = lossy.local_addr().unwrap();
        let counters = lossy.counters();
        let mut delivered = 0u64;
        let total = 4000u64;
        let mut storage = vec![[0u8; 2048]; 4];
        for batch in 0..(total / 100) {
            for _ in 0..100 {
                sender.send_to(&[batch as u8; 60], to).unwrap();
            }
            // Read until the 100 datagrams of this batch are decided.
            let target = (batch + 1) * 100;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while counters.received_offered.load(Ordering::Relaxed) < target {
                assert!(std::time::Instant::now() < deadline, "datagrams arrive");
                let mut bufs: Vec<IoSliceMut> =
                    storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                let mut meta = [RecvMeta::default(); 4];
                let l = lossy.clone();
                let got = std::future::poll_fn(|cx| match l.poll_recv(cx, &mut bufs, &mut meta) {
                    Poll::Pending => Poll::Ready(None),
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                })
                .await;
                match got {
                    Some(Ok(k)) => {
                        for m in &meta[..k] {
                            let stride = if m.stride == 0 { m.len } else { m.stride };
                            delivered += m.len.div_ceil(stride) as u64;
                        }
                    }
                    Some(Err(e)) => panic!("receive failed: {e}"),
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
        let offered = counters.received_offered.load(Ordering::Relaxed);
        let dropped = counters.dropped_in.load(Ordering::Relaxed);
        assert_eq!(offered, total);
        assert_eq!(
            delivered + dropped,
            total,
            "every datagram delivered or dropped"
        );
        within_binomial(dropped, total, p);
    }

    #[test]
    fn per_link_overrides_and_validation() {
        let a: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9000".parse().unwrap();
        let mut c = LossConfig::uniform(0.1, 1);
        c.links.insert(
            a,
            LinkLoss {
                loss_in: 0.5,
                loss_out: 0.0,
            },
        );
        assert_eq!(c.link(mapped).loss_in, 0.5);
        assert_eq!(c.link("127.0.0.1:9001".parse().unwrap()).loss_in, 0.1);
        assert!(c.validate().is_ok());
        assert!(LossConfig::uniform(1.5, 0).validate().is_err());
        assert!(!LossConfig::default().is_active());
    }
}
