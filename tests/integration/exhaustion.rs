//! Attempts to exhaust a peer's memory, run against peers that are child processes of the
//! binary (so their memory can be read from `/proc/PID/status`): a stranger's flood of QUIC
//! Initial packets, and a member that opens every stream it may, announces huge messages and
//! never finishes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumor::certs::CLUSTER_SERVER_NAME;
use rumor::handshake_flood::{flood_initials, HandshakeFloodOptions};
use rumor::net::{Transport, TransportConfig};

use crate::common::heavy;
use crate::flood::{
    end_training, memory, metrics, mib, poll_until, read_addr, setup, spawn_peer, steps, wait_exit,
    Peer,
};
use crate::observability::value;

/// Initial packets of the flood (the attack sent 20,000 to 120,000).
const INITIALS: u64 = 50_000;
/// Packets per second of the flood: about the attack's rate (3,000 to 4,000/s), a little above.
const INITIAL_RATE: f64 = 5_000.0;
/// The flooded peer's resident memory may grow by at most this much over its level before.
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

/// Samples the resident memory of processes, and a gauge of peers, until stopped.
struct Sampler {
    done: Arc<AtomicBool>,
    peak_rss: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(Mutex::new(vec![0u64; pids.len()]));
        let thread = {
            let (done, peak) = (done.clone(), peak_rss.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    for (i, &pid) in pids.iter().enumerate() {
                        if let Some((rss, _)) = memory(pid) {
                            let mut peak = peak.lock().unwrap();
                            peak[i] = peak[i].max(rss);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            done,
            peak_rss,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak RSS of each process, in bytes.
    fn stop(mut self) -> Vec<u64> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let peak = self.peak_rss.lock().unwrap().clone();
        peak
    }
}

/// The resident memory of each of `pids` once it has settled, in bytes: a peer's memory grows
/// for its first seconds of training (buffers, the delta log), which must not be taken for an
/// attack's cost. Settled means within 1 MiB over the last 3 s; after 60 s the last reading is
/// taken. The processes are watched together, so the wait is one window whatever their number.
async fn settled_rss(pids: &[u32]) -> Vec<u64> {
    let mut readings: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for (pid, r) in pids.iter().zip(&mut readings) {
            let Some((rss, _)) = memory(*pid) else {
                panic!("process {pid} exited while its memory was being read");
            };
            r.push(rss);
        }
        let spreads: Vec<u64> = readings
            .iter()
            .map(|r| {
                let window = &r[r.len().saturating_sub(7)..];
                window.iter().max().copied().unwrap_or(0)
                    - window.iter().min().copied().unwrap_or(0)
            })
            .collect();
        let settled = readings[0].len() >= 7 && spreads.iter().all(|&s| s < 1024 * 1024);
        if settled || Instant::now() > end {
            if !settled {
                for (pid, spread) in pids.iter().zip(&spreads) {
                    eprintln!(
                        "NOTE: RSS of {pid} still moving ({:.1} MiB over 3 s)",
                        mib(*spread)
                    );
                }
            }
            return readings
                .iter()
                .map(|r| r.last().copied().unwrap_or(0))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Panics unless `peer` is still training: a test that measures an attack's effect on
/// training must not act after the training budget is spent.
async fn assert_training(peer: &Peer) {
    let m = metrics(peer).await;
    let training = m
        .as_ref()
        .is_some_and(|m| value(m, "rumor_lifecycle{state=training}") == 1.0);
    assert!(
        training,
        "{} is no longer training before the attack (its training budget is too small for \
         how slowly this machine ran the test's first phases)",
        peer.name
    );
}

/// The peers' config in these tests: a delta log of 8 MiB (the default 256 MiB fills at about
/// 1 MB/s per peer and would look like an attack's cost), and `extra` TOML for `[transport]`.
fn write_config(dir: &std::path::Path, max_message_bytes: usize, transport: &str) {
    std::fs::write(
        dir.join("flood.toml"),
        format!(
            "[peer]\njoin_timeout = \"60s\"\ndrain_timeout = \"120s\"\n\
             [train]\neval_every = 0\nmodel = \"784-64-10\"\npublish_every = 20\n\
             [gossip]\nmax_message_bytes = {max_message_bytes}\ndelta_log_bytes = 8388608\n\
             [transport]\n{transport}\n"
        ),
    )
    .unwrap();
}

fn counter(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    value(m, &format!("{name}{{}}"))
}

#[test]
fn flood_of_50k_quic_initials_costs_no_memory_and_no_false_suspicion() {
    heavy(initial_flood());
}

async fn initial_flood() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-1", "peer-2"];
    setup(dir.path(), &names);
    write_config(dir.path(), 1024 * 1024, "");
    // Training ends when the test has measured (end_training), however long its phases take.
    let mut peers = vec![spawn_peer(dir.path(), names[0], "1/2", None, 2)];
    let seed = read_addr(dir.path().join("peer-1.addr")).await;
    peers.push(spawn_peer(dir.path(), names[1], "2/2", Some(&seed), 2));
    for p in &peers {
        poll_until(Duration::from_secs(60), "every peer to train", || async {
            (steps(p).await >= 50.0).then_some(())
        })
        .await;
    }
    let target = &peers[0];
    let pids: Vec<u32> = peers.iter().map(|p| p.child.0.id()).collect();
    let rss_before = settled_rss(&pids).await;
    for p in &peers {
        assert_training(p).await;
    }
    let before: Vec<_> = futures_collect(&peers).await;
    let sampler = Sampler::start(pids.clone());

    let options = HandshakeFloodOptions {
        target: seed.parse().unwrap(),
        count: INITIALS,
        rate: INITIAL_RATE,
        sources: 16,
    };
    let flood = tokio::task::spawn_blocking(move || flood_initials(&options));
    // Suspicions seen by either peer while the flood runs, and the steps trained meanwhile.
    let started = Instant::now();
    let mut suspect_seen = 0.0f64;
    while !flood.is_finished() {
        for p in &peers {
            if let Some(m) = metrics(p).await {
                suspect_seen = suspect_seen.max(value(&m, "rumor_members{status=suspect}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = flood.await.unwrap().unwrap();
    let flood_seconds = started.elapsed().as_secs_f64();
    let during: Vec<_> = futures_collect(&peers).await;
    // Handshakes the flood started time out after the handshake timeout: memory after is
    // read once they are gone.
    // A peer serves its metrics until it exits: an unreachable endpoint here means it stopped
    // (its exit status and log tail are in the failure).
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let open = metrics(target)
            .await
            .map(|m| value(&m, "rumor_handshakes_in_progress{}"));
        if open == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the target's handshakes did not end within 60 s of the flood: {}",
            match open {
                Some(n) => format!("{n} still in progress"),
                None => format!(
                    "its metrics endpoint no longer answers ({})",
                    crate::flood::exit_report(target, dir.path())
                ),
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = sampler.stop();
    let rss_after: Vec<u64> = pids
        .iter()
        .map(|&p| memory(p).unwrap_or((0, 0)).0)
        .collect();
    let after = metrics(target).await.unwrap();

    eprintln!("flood: {report}");
    for k in [
        "rumor_handshakes_accepted_total",
        "rumor_handshakes_rejected_total",
        "rumor_handshakes_timed_out_total",
        "rumor_handshakes_refused_capacity_total",
        "rumor_handshakes_refused_per_source_total",
        "rumor_handshake_retries_sent_total",
        "rumor_suspicions_raised_total",
    ] {
        eprintln!(
            "target {k}: +{}",
            counter(&after, k) - counter(&before[0].1, k)
        );
    }
    for (i, p) in peers.iter().enumerate() {
        let trained = during[i].0 - before[i].0;
        eprintln!(
            "{}: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; {trained} steps in \
             {flood_seconds:.1} s of flood ({:.0} steps/s)",
            p.name,
            mib(rss_before[i]),
            mib(peak[i]),
            mib(rss_after[i]),
            trained / flood_seconds
        );
    }
    assert_eq!(report.sent, INITIALS, "every Initial was sent");
    let handled = [
        "rumor_handshakes_rejected_total",
        "rumor_handshakes_timed_out_total",
        "rumor_handshakes_refused_capacity_total",
        "rumor_handshakes_refused_per_source_total",
        "rumor_handshake_retries_sent_total",
    ]
    .iter()
    .map(|k| counter(&after, k) - counter(&before[0].1, k))
    .sum::<f64>();
    assert!(
        handled >= 0.9 * INITIALS as f64,
        "the target accounted for {handled} of {INITIALS} Initials"
    );
    assert!(
        peak[0] <= rss_before[0] + RSS_GROWTH_BOUND,
        "target RSS peaked at {:.1} MiB, over {:.1} MiB + {:.0} MiB",
        mib(peak[0]),
        mib(rss_before[0]),
        mib(RSS_GROWTH_BOUND)
    );
    assert_eq!(suspect_seen, 0.0, "no peer was suspected during the flood");
    for (i, p) in peers.iter().enumerate() {
        let raised = counter(&during[i].1, "rumor_suspicions_raised_total")
            - counter(&before[i].1, "rumor_suspicions_raised_total");
        assert_eq!(raised, 0.0, "{} raised no suspicion", p.name);
        assert!(during[i].0 > before[i].0, "{} kept training", p.name);
    }

    for p in &peers {
        end_training(p);
    }
    for p in &mut peers {
        wait_exit(p, Duration::from_secs(180), dir.path()).await;
    }
    let distance = crate::common::compare_checkpoints(dir.path(), &names);
    eprintln!("consensus distance after the flood: {distance:e}");
    assert!(distance < 1e-4, "consensus distance {distance}");
}

/// Each peer's (training steps, metrics) now.
async fn futures_collect(peers: &[Peer]) -> Vec<(f64, std::collections::HashMap<String, f64>)> {
    let mut out = Vec::new();
    for p in peers {
        let m = metrics(p).await.unwrap_or_default();
        out.push((value(&m, "rumor_train_steps_total{}"), m));
    }
    out
}

/// Streams the hog opens: the peer's `transport.max_streams_per_connection` (default).
const HOG_STREAMS: usize = 256;
/// Streams that carry a large body (the attack: 16 streams of 15 MiB).
const HOG_LARGE_STREAMS: usize = 16;
const HOG_LARGE_BYTES: usize = 15 * 1024 * 1024;
/// The receiving peer's stream timeout in this test.
const STREAM_TIMEOUT: &str = "4s";

#[test]
fn unfinished_streams_hold_bounded_memory_and_are_stopped() {
    heavy(unfinished_streams());
}

async fn unfinished_streams() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &["peer-1", "hog", "peer-2"]);
    // The default message limit (16 MiB), so a 15 MiB body is a message the peer must read.
    write_config(
        dir.path(),
        16 * 1024 * 1024,
        &format!("send_timeout = \"{STREAM_TIMEOUT}\"\nstream_timeout = \"{STREAM_TIMEOUT}\""),
    );
    // Killed when dropped at the end; a budget it cannot spend before then on any machine.
    let peer = spawn_peer(dir.path(), "peer-1", "1/1", None, 1);
    let addr: SocketAddr = read_addr(dir.path().join("peer-1.addr"))
        .await
        .parse()
        .unwrap();
    poll_until(Duration::from_secs(60), "the peer to train", || async {
        (steps(&peer).await >= 50.0).then_some(())
    })
    .await;
    let pid = peer.child.0.id();
    let rss_before = settled_rss(&[pid]).await[0];
    assert_training(&peer).await;
    let before = metrics(&peer).await.unwrap();
    let steps_before = steps(&peer).await;
    let sampler = Sampler::start(vec![pid]);

    // The hog: a member's certificate, a plain quinn client, every stream it may open.
    let certs = dir.path().join("certs");
    let hog = rumor::certs::load_identity(&certs, "hog").unwrap();
    let client = rumor::net::tls::client_config(&hog, &TransportConfig::default()).unwrap();
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let conn = endpoint
        .connect_with(client.clone(), addr, CLUSTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // A frame header announcing 2^32 - 16 body bytes.
    let mut header = Vec::new();
    header.extend_from_slice(&rumor_proto::wire::MAGIC);
    header.push(rumor_proto::wire::PROTOCOL_VERSION);
    header.extend_from_slice(&(u32::MAX - 15).to_be_bytes());
    let body = vec![0x5au8; HOG_LARGE_BYTES];
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..HOG_STREAMS {
        let conn = conn.clone();
        let header = header.clone();
        let len = if i < HOG_LARGE_STREAMS {
            HOG_LARGE_BYTES
        } else {
            1024
        };
        let body = body[..len].to_vec();
        writers.spawn(async move {
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(10), conn.open_uni()).await
            else {
                return (0usize, None);
            };
            let _ = stream.write_all(&header).await;
            let mut written = 0;
            for chunk in body.chunks(64 * 1024) {
                match tokio::time::timeout(Duration::from_secs(10), stream.write_all(chunk)).await {
                    Ok(Ok(())) => written += chunk.len(),
                    _ => break,
                }
            }
            // Never finished: the stream is handed back so it is not finished on drop.
            (written, Some(stream))
        });
    }
    let mut written = 0usize;
    let mut streams = Vec::new();
    while let Some(result) = writers.join_next().await {
        let (n, stream) = result.unwrap();
        written += n;
        streams.extend(stream);
    }
    let stopped = poll_until(
        Duration::from_secs(30),
        "the peer to stop the unfinished streams",
        || async {
            let m = metrics(&peer).await?;
            let n = counter(&m, "rumor_streams_timed_out_total")
                - counter(&before, "rumor_streams_timed_out_total");
            (n >= 1.0).then_some(m)
        },
    )
    .await;
    let timed_out = counter(&stopped, "rumor_streams_timed_out_total")
        - counter(&before, "rumor_streams_timed_out_total");
    let oversize = counter(&stopped, "rumor_oversize_messages_total")
        - counter(&before, "rumor_oversize_messages_total");

    // More connections from the same member than allowed: the extra ones are refused.
    let mut extra = Vec::new();
    for _ in 0..5 {
        if let Ok(connecting) = endpoint.connect_with(client.clone(), addr, CLUSTER_SERVER_NAME) {
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(10), connecting).await {
                extra.push(c);
            }
        }
    }
    let refused = poll_until(
        Duration::from_secs(20),
        "the peer to refuse the member's extra connections",
        || async {
            let m = metrics(&peer).await?;
            let n = counter(&m, "rumor_connections_refused_per_member_total")
                - counter(&before, "rumor_connections_refused_per_member_total");
            (n >= 1.0).then_some(n)
        },
    )
    .await;

    // Another member's fresh connection still delivers: a junk message counted as a decode
    // error.
    let other = rumor::certs::load_identity(&certs, "peer-2").unwrap();
    let (sender, _rx) = Transport::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &other,
        TransportConfig::default(),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        sender.send(addr, Arc::from(&b"not a frame"[..])),
    )
    .await
    .unwrap()
    .unwrap();
    poll_until(
        Duration::from_secs(20),
        "the other member's message",
        || async {
            let m = metrics(&peer).await?;
            (counter(&m, "rumor_decode_errors_total")
                > counter(&before, "rumor_decode_errors_total"))
            .then_some(())
        },
    )
    .await;
    let steps_after = steps(&peer).await;
    let peak = sampler.stop()[0];
    let rss_after = memory(pid).unwrap().0;
    eprintln!(
        "hog: {} streams, {:.1} MiB written without FIN; target RSS before {:.1} MiB, peak \
         {:.1} MiB, after {:.1} MiB; {timed_out} streams timed out, {oversize} oversize, \
         {refused} extra connections refused; steps {steps_before} -> {steps_after}",
        streams.len(),
        mib(written as u64),
        mib(rss_before),
        mib(peak),
        mib(rss_after)
    );
    assert!(
        peak <= rss_before + RSS_GROWTH_BOUND,
        "target RSS peaked at {:.1} MiB, over {:.1} MiB + {:.0} MiB",
        mib(peak),
        mib(rss_before),
        mib(RSS_GROWTH_BOUND)
    );
    assert!(steps_after > steps_before, "the peer kept training");
    drop((streams, extra, conn));
    endpoint.close(0u32.into(), b"done");
    sender.close().await;
    // The peer process is killed when `peer` is dropped.
    drop(peer);
}
