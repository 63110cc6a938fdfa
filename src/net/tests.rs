//! Tests of the transport over real QUIC on loopback: delivery, connection reuse, limits
//! (rate, size, budgets, handshakes) and certificate refusals.
use super::*;
use crate::certs::{init_ca, issue, issue_with, load_identity, IssueOptions};
use quinn::ConnectionError;
use rumor_proto::auth::KeyId;
use tokio::time::{timeout, Instant};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh cluster CA in a temporary directory with one identity per name.
fn cluster(
    names: &[&str],
) -> Result<(tempfile::TempDir, Vec<PeerIdentity>), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    init_ca(dir.path(), false)?;
    let mut ids = Vec::new();
    for name in names {
        issue(dir.path(), name, 1)?;
        ids.push(load_identity(dir.path(), name)?);
    }
    Ok((dir, ids))
}

async fn bind(
    id: &PeerIdentity,
    config: TransportConfig,
) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
    Transport::bind(localhost(), id, config).await
}

async fn recv(
    rx: &mut mpsc::Receiver<Incoming>,
) -> Result<Incoming, Box<dyn std::error::Error + Send + Sync>> {
    timeout(WAIT, rx.recv())
        .await?
        .ok_or_else(|| "incoming channel closed".into())
}

async fn send(
    t: &Transport,
    to: SocketAddr,
    bytes: &[u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    timeout(WAIT, t.send(to, Arc::from(bytes))).await??;
    Ok(())
}

/// Polls `condition` every 10 ms until it holds or [`WAIT`] passes.
async fn wait_for(what: &str, condition: impl Fn() -> bool) -> TestResult {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_both_ways_over_one_connection() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let (a, mut a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;

    send(&a, b.local_addr(), b"hello").await?;
    let got = recv(&mut b_rx).await?;
    assert_eq!(
        got.from,
        a.local_addr(),
        "remote address is the listen address"
    );
    assert_eq!(got.bytes, b"hello");
    let leaf = |id: &PeerIdentity| id.chain.first().map(|c| KeyId::of(c.as_ref()));
    assert_eq!(
        Some(got.key),
        leaf(&ids[0]),
        "the key is the sender's certificate's"
    );

    // B replies to the address it saw: the accepted connection is reused.
    send(&b, got.from, b"hi back").await?;
    let got = recv(&mut a_rx).await?;
    assert_eq!(got.from, b.local_addr());
    assert_eq!(got.bytes, b"hi back");
    assert_eq!(Some(got.key), leaf(&ids[1]), "over the connection A opened");

    for i in 0..5u8 {
        send(&a, b.local_addr(), &[i]).await?;
        send(&b, a.local_addr(), &[i]).await?;
        assert_eq!(recv(&mut b_rx).await?.bytes, [i]);
        assert_eq!(recv(&mut a_rx).await?.bytes, [i]);
    }

    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.connections_open, 1);
    assert_eq!(sb.connections_open, 1);
    assert_eq!(sa.handshakes_accepted, 0, "A never accepted a connection");
    assert_eq!(sb.handshakes_accepted, 1);
    assert_eq!(sb.handshakes_rejected, 0);
    assert!(sa.bytes_sent > 0 && sa.bytes_received > 0);
    assert!(sa.datagrams_sent > 0 && sb.datagrams_received > 0);

    // Closing folds the counters of closed connections into the totals.
    a.close().await;
    let after = a.stats();
    assert_eq!(after.connections_open, 0);
    assert!(after.bytes_sent >= sa.bytes_sent);
    wait_for("B to see the close", || b.stats().connections_open == 0).await?;
    assert!(b.stats().bytes_received >= sb.bytes_received);
    assert!(
        timeout(WAIT, a.send(b.local_addr(), Arc::from(&b"late"[..])))
            .await?
            .is_err()
    );
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_bound_send_goes_only_to_that_members_certificate() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b", "c"])?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;
    let key = |id: &PeerIdentity| {
        id.chain
            .first()
            .map(|c| KeyId::of(c.as_ref()))
            .ok_or("no certificate")
    };
    let b_member = rumor_proto::PeerId::bound(&key(&ids[1])?, [1; 8]);
    let c_member = rumor_proto::PeerId::bound(&key(&ids[2])?, [1; 8]);
    // Meant for member c, but b listens at that address: refused, nothing sent.
    let wrong = a
        .send_to_member(b.local_addr(), Some(c_member), b"for c".to_vec().into(), 0)
        .await;
    assert!(
        matches!(wrong, Err(NetError::WrongMember { .. })),
        "{wrong:?}"
    );
    a.send_to_member(b.local_addr(), Some(b_member), b"for b".to_vec().into(), 0)
        .await?;
    assert_eq!(
        recv(&mut b_rx).await?.bytes,
        b"for b",
        "only the bound one arrives"
    );
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_one_connection() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;
    let to = b.local_addr();
    let sends: Vec<_> = (0..20u8)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.send(to, Arc::from(&[i][..])).await })
        })
        .collect();
    for handle in sends {
        timeout(WAIT, handle).await???;
    }
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(recv(&mut b_rx).await?.bytes[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20u8).collect::<Vec<_>>());
    assert_eq!(b.stats().handshakes_accepted, 1);
    assert_eq!(a.stats().connections_open, 1);
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_messages_of_400_kb_arrive_intact() -> TestResult {
    const COUNT: usize = 100;
    const LEN: usize = 400 * 1024;
    let (_dir, ids) = cluster(&["a", "b"])?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let (b, mut b_rx) = bind(&ids[1], TransportConfig::default()).await?;

    let message = |i: usize| -> Vec<u8> {
        (0..LEN)
            .map(|j| (i.wrapping_mul(131) ^ j.wrapping_mul(7)) as u8)
            .collect()
    };
    let to = b.local_addr();
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..COUNT {
                let mut bytes = message(i);
                bytes[..4].copy_from_slice(&(i as u32).to_le_bytes());
                a.send(to, Arc::from(bytes)).await?;
            }
            Ok::<(), NetError>(())
        })
    };
    let mut seen = [false; COUNT];
    for _ in 0..COUNT {
        let got = recv(&mut b_rx).await?;
        assert_eq!(got.bytes.len(), LEN);
        let i =
            u32::from_le_bytes([got.bytes[0], got.bytes[1], got.bytes[2], got.bytes[3]]) as usize;
        assert!(i < COUNT && !seen[i], "unexpected or duplicate message {i}");
        seen[i] = true;
        assert!(got.bytes[4..] == message(i)[4..], "message {i} corrupted");
    }
    timeout(WAIT, sender).await???;
    assert!(b.stats().bytes_received > (COUNT * LEN) as u64);
    assert_eq!(b.stats().connections_open, 1);
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_rate_limit_are_dropped_and_counted() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let limited = TransportConfig {
        rate_limit_messages: 5,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], limited).await?;
    let to = b.local_addr();
    let mut refused = 0;
    for i in 0..50u8 {
        match timeout(WAIT, a.send(to, Arc::from(&[i][..]))).await? {
            Ok(()) => {}
            Err(NetError::Stopped { code, .. }) if code == u64::from(CODE_RATE_LIMITED) => {
                refused += 1
            }
            Err(e) => return Err(e.into()),
        }
    }
    let limited = b.stats().messages_rate_limited;
    // 5 tokens of burst, then 5/s: unless the 50 sends took over 5 s, at least 20 fail.
    assert!(
        limited >= 20,
        "only {limited} of 50 messages were rate-limited"
    );
    assert!(refused <= limited);
    let mut delivered = 0;
    while delivered + limited < 50 {
        recv(&mut b_rx).await?;
        delivered += 1;
    }
    assert_eq!(b.stats().messages_rate_limited, limited);
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_dropped_and_counted() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let small = TransportConfig {
        max_message_bytes: 64 * 1024,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], small.clone()).await?;

    let big = vec![7u8; 100 * 1024];
    // The receiver's QUIC stack may acknowledge every byte before the reader sees the
    // stream is too long, so the sender learns of the refusal only sometimes.
    let result = timeout(WAIT, a.send(b.local_addr(), Arc::from(big))).await?;
    assert!(
        match &result {
            Ok(()) => true,
            Err(NetError::Stopped { code, .. }) => *code == u64::from(CODE_TOO_LARGE),
            Err(_) => false,
        },
        "{result:?}"
    );
    wait_for("the oversize count", || b.stats().oversize_messages == 1).await?;

    send(&a, b.local_addr(), b"normal").await?;
    assert_eq!(recv(&mut b_rx).await?.bytes, b"normal");
    assert!(
        b_rx.try_recv().is_err(),
        "the oversize message was delivered"
    );
    assert_eq!(b.stats().oversize_messages, 1);
    assert_eq!(b.stats().connections_open, 1, "the connection survives");

    // A sender refuses a message over its own limit without touching the network.
    let result = b
        .send(a.local_addr(), Arc::from(vec![0u8; 64 * 1024 + 1]))
        .await;
    assert!(
        matches!(result, Err(NetError::MessageTooLarge { .. })),
        "{result:?}"
    );
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_closes_and_next_send_reconnects() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let config = TransportConfig {
        idle_timeout: Duration::from_millis(300),
        keep_alive: Duration::ZERO,
        ..TransportConfig::default()
    };
    let (a, _a_rx) = bind(&ids[0], config.clone()).await?;
    let (b, mut b_rx) = bind(&ids[1], config).await?;
    send(&a, b.local_addr(), b"one").await?;
    assert_eq!(recv(&mut b_rx).await?.bytes, b"one");
    wait_for("the idle timeout", || {
        a.stats().connections_open == 0 && b.stats().connections_open == 0
    })
    .await?;
    send(&a, b.local_addr(), b"two").await?;
    assert_eq!(recv(&mut b_rx).await?.bytes, b"two");
    assert_eq!(b.stats().handshakes_accepted, 2);
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_fails_every_waiter() -> TestResult {
    let (_dir, ids) = cluster(&["a"])?;
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (a, _a_rx) = bind(&ids[0], config).await?;
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind(localhost())?;
    let to = silent.local_addr()?;
    let (r1, r2) = timeout(WAIT, async {
        tokio::join!(
            a.send(to, Arc::from(&b"x"[..])),
            a.send(to, Arc::from(&b"y"[..])),
        )
    })
    .await?;
    assert!(matches!(r1, Err(NetError::ConnectTimeout { .. })), "{r1:?}");
    assert!(matches!(r2, Err(NetError::ConnectTimeout { .. })), "{r2:?}");
    assert!(a.handle.shared.cache.is_empty(), "failed attempt forgotten");
    a.close().await;
    Ok(())
}

/// Binds a server with `server` and a client with `client`; the client's message must not
/// be delivered and the server must count a refused handshake.
async fn assert_refused(server: &PeerIdentity, client: &PeerIdentity) -> TestResult {
    let (s, mut s_rx) = bind(server, TransportConfig::default()).await?;
    let (c, _c_rx) = bind(client, TransportConfig::default()).await?;
    let result = timeout(WAIT, c.send(s.local_addr(), Arc::from(&b"let me in"[..]))).await?;
    assert!(result.is_err(), "send to a refusing server succeeded");
    wait_for("the server's refusal", || {
        s.stats().handshakes_rejected >= 1
    })
    .await?;
    let stats = s.stats();
    assert_eq!(stats.handshakes_accepted, 0);
    assert_eq!(stats.connections_open, 0);
    assert!(
        s_rx.try_recv().is_err(),
        "a refused peer delivered a message"
    );
    c.close().await;
    s.close().await;
    assert!(
        s_rx.try_recv().is_err(),
        "a refused peer delivered a message"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() -> TestResult {
    let (_dir, ids) = cluster(&["server"])?;
    let (_other_dir, others) = cluster(&["stranger"])?;
    // The stranger knows and trusts the cluster CA (it is public) but its own certificate
    // comes from another CA: its connect() completes, the server's verdict is what counts.
    let stranger = PeerIdentity {
        ca: ids[0].ca.clone(),
        ..others[0].clone()
    };
    assert_refused(&ids[0], &stranger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() -> TestResult {
    let (dir, ids) = cluster(&["server"])?;
    issue_with(
        dir.path(),
        "expired",
        30,
        IssueOptions {
            not_after_days_ago: Some(1),
            ..IssueOptions::default()
        },
    )?;
    let expired = load_identity(dir.path(), "expired")?;
    assert_refused(&ids[0], &expired).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_client_auth_is_refused() -> TestResult {
    let (dir, ids) = cluster(&["server"])?;
    issue_with(
        dir.path(),
        "server-only",
        30,
        IssueOptions {
            client_auth: false,
            ..IssueOptions::default()
        },
    )?;
    let server_only = load_identity(dir.path(), "server-only")?;
    assert_refused(&ids[0], &server_only).await
}

/// What a failed send says about certificates: the refusal if there is one, else the error.
fn refusal_text(error: &NetError) -> String {
    tls::TlsRefusal::from_net_error(error).map_or_else(|| error.to_string(), |r| r.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_certificate_is_cut_off_and_refused_both_ways() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b", "c"])?;
    let (a, mut a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    let (b, _b_rx) = bind(&ids[1], TransportConfig::default()).await?;
    let (c, _c_rx) = bind(&ids[2], TransportConfig::default()).await?;
    send(&b, a.local_addr(), b"from b").await?;
    send(&c, a.local_addr(), b"from c").await?;
    for _ in 0..2 {
        recv(&mut a_rx).await?;
    }
    assert_eq!(a.stats().connections_open, 2);

    let b_key = KeyId::of(ids[1].chain[0].as_ref());
    assert_eq!(a.deny(b_key, "b"), 1, "b's one connection is closed");
    assert!(a.deny_list().denied(&b_key).is_some());
    wait_for("b's connection to close on both sides", || {
        a.stats().connections_open == 1 && b.stats().connections_open == 0
    })
    .await?;
    assert_eq!(a.stats().connections_closed_revoked, 1);

    // b's next connection is refused at the handshake, saying why.
    let refused = timeout(WAIT, b.send(a.local_addr(), Arc::from(&b"again"[..])))
        .await?
        .err()
        .ok_or("a revoked peer got a message through")?;
    let text = refusal_text(&refused);
    assert!(
        text.contains("certificate revoked: \"b\""),
        "{text} / {refused:?}"
    );
    wait_for("a to count the refusal", || {
        a.stats().handshakes_refused_revoked >= 1
    })
    .await?;
    assert!(a.stats().handshakes_rejected >= 1);

    // a does not connect to b either.
    let refused = timeout(WAIT, a.send(b.local_addr(), Arc::from(&b"to b"[..])))
        .await?
        .err()
        .ok_or("a connected to a revoked peer")?;
    let text = refusal_text(&refused);
    assert!(text.contains("certificate revoked"), "{text}");
    assert_eq!(a.stats().connects_refused_revoked, 1);

    // c is not affected, and nothing of b's arrived after the denial.
    send(&c, a.local_addr(), b"still here").await?;
    let got = recv(&mut a_rx).await?;
    assert_eq!(got.bytes, b"still here");
    assert_eq!(&*got.member, "c");
    assert!(
        a_rx.try_recv().is_err(),
        "b delivered a message after its denial"
    );
    for t in [a, b, c] {
        t.close().await;
    }
    Ok(())
}

/// A quinn client with `id`'s certificate, connected to `to`.
async fn raw_client(
    id: &PeerIdentity,
    to: SocketAddr,
) -> Result<(Endpoint, Connection), Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = Endpoint::client(localhost())?;
    let config = tls::client_config(id, &TransportConfig::default())?;
    let conn = timeout(
        WAIT,
        endpoint.connect_with(config, to, CLUSTER_SERVER_NAME)?,
    )
    .await??;
    Ok((endpoint, conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_threshold_handshakes_are_retried_and_still_connect() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let retry_all = TransportConfig {
        handshakes_before_retry: 0,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], retry_all).await?;
    let (a, _a_rx) = bind(&ids[0], TransportConfig::default()).await?;
    send(&a, b.local_addr(), b"after a retry").await?;
    assert_eq!(recv(&mut b_rx).await?.bytes, b"after a retry");
    let stats = b.stats();
    assert_eq!(stats.handshake_retries_sent, 1, "{stats:?}");
    assert_eq!(stats.handshakes_accepted, 1);
    assert_eq!(stats.handshakes_in_progress, 0);
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_message_is_stopped_at_the_stream_timeout() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let quick = TransportConfig {
        stream_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], quick).await?;
    let (_endpoint, conn) = raw_client(&ids[0], b.local_addr()).await?;
    let mut stream = conn.open_uni().await?;
    stream.write_all(&[1u8; 10_000]).await?;
    // Never finished: the receiver stops it, and the sender learns the code.
    let code = timeout(WAIT, stream.stopped()).await??;
    assert_eq!(code, Some(VarInt::from_u32(CODE_TIMED_OUT)));
    let stats = b.stats();
    assert_eq!(stats.streams_timed_out, 1);
    assert_eq!(stats.buffered_bytes, 0, "its bytes were given back");
    assert!(b_rx.try_recv().is_err(), "nothing was delivered");
    // The connection still carries finished messages.
    let mut next = conn.open_uni().await?;
    next.write_all(b"whole").await?;
    next.finish()?;
    let got = recv(&mut b_rx).await?;
    assert_eq!(got.bytes, b"whole");
    assert_eq!(&*got.member, "a", "the member is the certificate's name");
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gets_no_more_connections_than_allowed() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b", "c"])?;
    let one_each = TransportConfig {
        max_connections_per_member: 1,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], one_each).await?;
    let (_e1, first) = raw_client(&ids[0], b.local_addr()).await?;
    // The client's handshake can finish before the server has taken the connection in; the
    // second one must come after, or the server might keep the second and refuse the first.
    wait_for("the first connection to be taken in", || {
        b.stats().connections_open == 1
    })
    .await?;
    let (_e2, second) = raw_client(&ids[0], b.local_addr()).await?;
    let closed = timeout(WAIT, second.closed()).await?;
    assert!(
        matches!(
            &closed,
            ConnectionError::ApplicationClosed(c)
                if c.error_code == VarInt::from_u32(CODE_TOO_MANY_CONNECTIONS)
        ),
        "{closed:?}"
    );
    assert_eq!(b.stats().connections_refused_per_member, 1);
    // The first connection, and another member, are unaffected.
    let (_e3, other) = raw_client(&ids[2], b.local_addr()).await?;
    for conn in [&first, &other] {
        let mut s = conn.open_uni().await?;
        s.write_all(b"hello").await?;
        s.finish()?;
        assert_eq!(recv(&mut b_rx).await?.bytes, b"hello");
    }
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holds_no_more_unfinished_bytes_than_its_budget() -> TestResult {
    let (_dir, ids) = cluster(&["a", "b"])?;
    let budget = 256 * 1024;
    let small = TransportConfig {
        max_message_bytes: budget as usize,
        max_buffered_bytes_per_connection: budget,
        max_buffered_bytes_per_member: budget,
        stream_timeout: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let (b, _b_rx) = bind(&ids[1], small).await?;
    let (_endpoint, conn) = raw_client(&ids[0], b.local_addr()).await?;
    // Eight streams of 200 KB each, never finished: 1.6 MB offered, 256 KiB held.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut s = conn.open_uni().await?;
        let _ = timeout(Duration::from_millis(500), s.write_all(&[0u8; 200_000])).await;
        streams.push(s);
    }
    wait_for("the budget to fill", || {
        b.stats().buffered_bytes + 64 * 1024 > budget
    })
    .await?;
    let held = b.stats().buffered_bytes;
    assert!(held <= budget, "{held} bytes held, budget {budget}");
    // Losing the connection gives the bytes back at once.
    drop(streams);
    conn.close(VarInt::from_u32(0), b"done");
    wait_for("the bytes to come back", || b.stats().buffered_bytes == 0).await?;
    b.close().await;
    Ok(())
}

/// Opens `count` streams on `conn`, each carrying `len` bytes and finished, without waiting
/// for the receiver's verdict: a member sending as fast as its stream credit allows.
async fn send_many(conn: &Connection, count: usize, len: usize) -> TestResult {
    let body = vec![7u8; len];
    for _ in 0..count {
        let mut stream = timeout(WAIT, conn.open_uni()).await??;
        // A stream the receiver already stopped (rate-limited) fails here; that is expected.
        let _ = stream.write_all(&body).await;
        let _ = stream.finish();
    }
    Ok(())
}

/// Receives messages until `total` are accounted for, delivered or counted in
/// `messages_rate_limited`, and returns the delivered ones.
async fn settle(
    t: &Transport,
    rx: &mut mpsc::Receiver<Incoming>,
    total: u64,
) -> Result<Vec<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let deadline = Instant::now() + WAIT;
    let mut delivered = Vec::new();
    loop {
        while let Ok(message) = rx.try_recv() {
            delivered.push(message);
        }
        let limited = t.stats().messages_rate_limited;
        if delivered.len() as u64 + limited >= total {
            assert_eq!(delivered.len() as u64 + limited, total, "extra messages");
            return Ok(delivered);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} delivered and {limited} rate-limited of {total}",
                delivered.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The most messages a token bucket of `rate` messages/s (one second of burst) admits over a
/// window of `elapsed` from its creation: the burst, the refill, and one message taken from
/// the last fraction of a token.
fn bucket_bound(rate: u32, elapsed: Duration) -> f64 {
    let rate = f64::from(rate);
    rate + rate * elapsed.as_secs_f64() + 1.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_one_member_share_one_rate_limit() -> TestResult {
    const RATE: u32 = 20;
    const PER_CONNECTION: usize = 100;
    let (_dir, ids) = cluster(&["a", "b"])?;
    let limited = TransportConfig {
        rate_limit_messages: RATE,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], limited).await?;
    // The window opens before the member's first connection (its buckets' creation) and closes
    // once every message was admitted or refused.
    let start = Instant::now();
    let (_e1, first) = raw_client(&ids[0], b.local_addr()).await?;
    let (_e2, second) = raw_client(&ids[0], b.local_addr()).await?;
    wait_for("both connections", || b.stats().connections_open == 2).await?;
    let (r1, r2) = tokio::join!(
        send_many(&first, PER_CONNECTION, 16),
        send_many(&second, PER_CONNECTION, 16)
    );
    r1?;
    r2?;
    let delivered = settle(&b, &mut b_rx, 2 * PER_CONNECTION as u64).await?;
    let elapsed = start.elapsed();
    let accepted = delivered.len();
    let bound = bucket_bound(RATE, elapsed);
    eprintln!(
        "one member, two connections: {accepted} of {} accepted in {elapsed:?} (bound {bound:.1})",
        2 * PER_CONNECTION
    );
    assert!(
        accepted as f64 <= bound,
        "{accepted} messages accepted in {elapsed:?}: more than one bucket of {RATE}/s allows"
    );
    assert!(accepted >= RATE as usize, "the burst passed: {accepted}");
    a_member_is_one_key(&delivered)?;
    b.close().await;
    Ok(())
}

/// Every message came from one certificate.
fn a_member_is_one_key(delivered: &[Incoming]) -> TestResult {
    let first = delivered.first().ok_or("nothing delivered")?;
    assert!(delivered.iter().all(|m| m.key == first.key));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_each_get_their_own_rate_limit() -> TestResult {
    const RATE: u32 = 20;
    const PER_MEMBER: usize = 100;
    let (_dir, ids) = cluster(&["a", "b", "c"])?;
    let limited = TransportConfig {
        rate_limit_messages: RATE,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], limited).await?;
    let start = Instant::now();
    let (_e1, from_a) = raw_client(&ids[0], b.local_addr()).await?;
    let (_e2, from_c) = raw_client(&ids[2], b.local_addr()).await?;
    wait_for("both connections", || b.stats().connections_open == 2).await?;
    let (r1, r2) = tokio::join!(
        send_many(&from_a, PER_MEMBER, 16),
        send_many(&from_c, PER_MEMBER, 16)
    );
    r1?;
    r2?;
    let delivered = settle(&b, &mut b_rx, 2 * PER_MEMBER as u64).await?;
    let elapsed = start.elapsed();
    let bound = bucket_bound(RATE, elapsed);
    for (i, id) in [(0, &ids[0]), (2, &ids[2])] {
        let key = id
            .chain
            .first()
            .map(|c| KeyId::of(c.as_ref()))
            .ok_or("no leaf")?;
        let accepted = delivered.iter().filter(|m| m.key == key).count();
        eprintln!("member {i}: {accepted} of {PER_MEMBER} accepted in {elapsed:?}");
        assert!(
            accepted >= RATE as usize,
            "member {i} got {accepted}, less than its own burst of {RATE}"
        );
        assert!(accepted as f64 <= bound, "member {i} got {accepted}");
    }
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_certificates_with_one_name_are_two_members() -> TestResult {
    let (dir, ids) = cluster(&["a", "b"])?;
    // A second certificate for "a" (`rumor certs issue --force`): same name, another key.
    crate::certs::reissue(dir.path(), "a", 1)?;
    let again = load_identity(dir.path(), "a")?;
    let one_each = TransportConfig {
        max_connections_per_member: 1,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], one_each).await?;
    let (_e1, first) = raw_client(&ids[0], b.local_addr()).await?;
    wait_for("the first connection", || b.stats().connections_open == 1).await?;
    let (_e2, second) = raw_client(&again, b.local_addr()).await?;
    wait_for("the second connection", || b.stats().connections_open == 2).await?;
    assert_eq!(b.stats().connections_refused_per_member, 0);
    let mut keys = Vec::new();
    for conn in [&first, &second] {
        let mut s = conn.open_uni().await?;
        s.write_all(b"hello").await?;
        s.finish()?;
        let got = recv(&mut b_rx).await?;
        assert_eq!(&*got.member, "a", "both certificates are named a");
        assert_eq!(b.handle.shared.members.connections(&got.key), 1);
        keys.push(got.key);
    }
    assert_ne!(keys.first(), keys.get(1), "two keys, two members");
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_has_no_more_messages_in_flight_than_one_connection_may() -> TestResult {
    const STREAMS: u32 = 4;
    const PER_CONNECTION: usize = 10;
    const LEN: usize = 1000;
    let (_dir, ids) = cluster(&["a", "b"])?;
    // One place in the incoming channel, never emptied until the end: every further message
    // of the member waits there, in flight, holding its bytes.
    let narrow = TransportConfig {
        max_streams_per_connection: STREAMS,
        incoming_queue: 1,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&ids[1], narrow).await?;
    let (_e1, first) = raw_client(&ids[0], b.local_addr()).await?;
    let (_e2, second) = raw_client(&ids[0], b.local_addr()).await?;
    wait_for("both connections", || b.stats().connections_open == 2).await?;
    let senders = [first.clone(), second.clone()]
        .map(|conn| tokio::spawn(async move { send_many(&conn, PER_CONNECTION, LEN).await }));
    // One message in the channel, STREAMS waiting with their bytes: the member's places, not
    // two connections' worth.
    let full = STREAMS as u64 * LEN as u64;
    wait_for("the member's places to fill", || {
        b.stats().buffered_bytes >= full
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = b.stats().buffered_bytes;
    assert_eq!(held, full, "{held} bytes of waiting messages held");
    let key = ids[0]
        .chain
        .first()
        .map(|c| KeyId::of(c.as_ref()))
        .ok_or("no leaf")?;
    assert_eq!(
        b.handle.shared.members.streams_in_flight(&key),
        STREAMS as usize
    );
    // Nothing is lost: once the channel is read, every message of both connections arrives.
    let mut from = std::collections::HashSet::new();
    for _ in 0..2 * PER_CONNECTION {
        let got = recv(&mut b_rx).await?;
        assert_eq!(got.bytes.len(), LEN);
        from.insert(got.from);
    }
    assert_eq!(from.len(), 2, "both connections were read");
    for sender in senders {
        timeout(WAIT, sender).await???;
    }
    wait_for("the bytes to come back", || b.stats().buffered_bytes == 0).await?;
    b.close().await;
    Ok(())
}

#[test]
fn canonical_folds_mapped_addresses() -> Result<(), std::net::AddrParseError> {
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9000".parse()?;
    assert_eq!(canonical(mapped), SocketAddr::from(([127, 0, 0, 1], 9000)));
    let v6: SocketAddr = "[::1]:9000".parse()?;
    assert_eq!(canonical(v6), v6);
    Ok(())
}
