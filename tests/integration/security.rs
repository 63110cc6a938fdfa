//! Mutual TLS: a peer whose certificate comes from another CA can neither join nor get a
//! single message applied.

use std::time::Duration;

use rumor::net::{Transport, TransportConfig};
use rumor::node::PeerHandle;
use rumor::run::peer_options;
use rumor_proto::wire::{self, DeltaPayload, Envelope, Payload};

use crate::common::{dataset, identities, test_config, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_from_another_ca_cannot_join_or_get_a_message_applied() {
    let dir = tempfile::tempdir().unwrap();
    let good = identities(&dir.path().join("cluster"), &["good"]);
    let rogue = identities(&dir.path().join("other"), &["rogue"]);
    let data = dataset();

    // The legitimate peer waits for a second member that never comes.
    let mut c = test_config();
    c.peer.name = "good".into();
    c.peer.data_dir = dir.path().join("good");
    c.peer.min_peers = 2;
    c.peer.join_timeout = Duration::from_secs(120);
    c.train.epochs = 1;
    let opts = peer_options(&c, good[0].clone(), &data, 2).unwrap();
    let param_count = opts.core.param_count;
    let mut good_peer = PeerHandle::spawn(opts);
    let good_addr = good_peer.bound_addr().await.unwrap();

    // The rogue tries to join through it.
    let mut r = test_config();
    r.peer.name = "rogue".into();
    r.peer.data_dir = dir.path().join("rogue");
    r.peer.seeds = vec![good_addr];
    r.peer.join_timeout = Duration::from_secs(3);
    r.train.epochs = 1;
    let ropts = peer_options(&r, rogue[0].clone(), &data, 2).unwrap();
    let rogue_peer = PeerHandle::spawn(ropts);
    let rogue_result = within(Duration::from_secs(30), "rogue gives up", rogue_peer.wait()).await;
    assert!(
        matches!(rogue_result, Err(rumor::node::NodeError::JoinTimeout(..))),
        "the rogue never joins: {rogue_result:?}"
    );
    // The rogue trusts only its own CA, so it refuses the seed first, and says why.
    let good_cluster = rumor::certs::cluster_name(&good[0].ca).unwrap();
    let rogue_cluster = rumor::certs::cluster_name(&rogue[0].ca).unwrap();
    assert_ne!(good_cluster, rogue_cluster);
    let message = rogue_result.err().unwrap().to_string();
    assert_eq!(
        message,
        format!(
            "no seed accepted us within 3s: seed {good_addr} presented a certificate from \
             another cluster CA, {good_cluster:?}; this cluster's CA is {rogue_cluster:?}"
        )
    );

    // It also sends a delta directly over its own transport.
    let (transport, _rx) = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &rogue[0],
        TransportConfig::default(),
    )
    .await
    .unwrap();
    let envelope = Envelope {
        id: rumor_proto::MessageId::from_uuid(uuid::Uuid::new_v4()),
        origin: rumor_proto::PeerId::random(),
        origin_addr: transport.local_addr(),
        version: 1,
        ttl: 1,
        payload: Payload::Delta(DeltaPayload {
            weight: 0.5,
            values: vec![1.0; param_count].into(),
            signature: Default::default(),
        }),
    };
    let frame = wire::encode(&envelope, 16 << 20).unwrap();
    let sent = transport.send(good_addr, frame.into()).await;
    assert!(sent.is_err(), "the server refuses the handshake");
    transport.close().await;

    good_peer.request_stop();
    let outcome = within(Duration::from_secs(30), "good peer stops", good_peer.wait())
        .await
        .unwrap();
    assert_eq!(outcome.members.len(), 1, "only itself in the view");
    assert_eq!(outcome.stats.deltas_applied, 0);
    assert!(
        outcome.stats.received.is_empty(),
        "no message reached the core: {:?}",
        outcome.stats.received
    );
    assert!(
        outcome.transport.handshakes_rejected >= 2,
        "{:?}",
        outcome.transport
    );
    assert!(outcome.applied.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Node-level authentication: a real running peer is contacted over raw QUIC by clients it must
// refuse. Each case checks the server's verdict (the handshake fails or the connection is
// closed), that the peer's core never sees a frame, that `handshakes_rejected` rises, and that
// the peer still serves a legitimate member afterwards.

mod node_auth {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use quinn::crypto::rustls::QuicClientConfig;
    use rumor::certs::{self, IssueOptions, PeerIdentity, CLUSTER_SERVER_NAME};
    use rumor::net::{tls::ALPN, Transport, TransportConfig};
    use rumor::node::PeerHandle;
    use rumor::run::peer_options;
    use rumor_proto::wire::{self, Envelope, Payload, Probe};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::common::{dataset, identities, test_config, within};

    /// How a client authenticates itself, if at all.
    enum ClientCert {
        None,
        Identity(Arc<PeerIdentity>),
    }

    /// A peer that waits (joining, as the only member) for a second member that never comes.
    struct LonelyPeer {
        handle: PeerHandle,
        addr: SocketAddr,
        /// The cluster CA's directory, to issue more certificates from.
        ca_dir: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    async fn lonely_peer() -> LonelyPeer {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("cluster");
        let ids = identities(&ca_dir, &["server"]);
        let data = dataset();
        let mut c = test_config();
        c.peer.name = "server".into();
        c.peer.data_dir = dir.path().join("server");
        c.peer.min_peers = 2;
        c.peer.join_timeout = Duration::from_secs(300);
        c.train.epochs = 1;
        let opts = peer_options(&c, ids[0].clone(), &data, 2).unwrap();
        let mut handle = PeerHandle::spawn(opts);
        let addr = within(Duration::from_secs(30), "peer binds", handle.bound_addr())
            .await
            .expect("peer bound");
        LonelyPeer {
            handle,
            addr,
            ca_dir,
            _dir: dir,
        }
    }

    fn issue(ca_dir: &Path, name: &str, options: IssueOptions) -> Arc<PeerIdentity> {
        certs::issue_with(ca_dir, name, 30, options).unwrap();
        Arc::new(certs::load_identity(ca_dir, name).unwrap())
    }

    /// A QUIC client that trusts `ca` (so it accepts the server) and presents `cert`.
    fn client_config(ca: &CertificateDer<'static>, cert: &ClientCert) -> quinn::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
        let mut tls = match cert {
            ClientCert::None => builder.with_no_client_auth(),
            ClientCert::Identity(id) => {
                let key: PrivateKeyDer<'static> = id.key.clone_key();
                builder
                    .with_client_auth_cert(id.chain.clone(), key)
                    .unwrap()
            }
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
    }

    /// A well-formed ping from `origin` at `from`, which the core handles when it comes over a
    /// connection with the certificate `origin` is bound to.
    fn ping_frame(origin: rumor_proto::PeerId, from: SocketAddr) -> Vec<u8> {
        let envelope = Envelope {
            id: rumor_proto::MessageId::from_uuid(uuid::Uuid::new_v4()),
            origin,
            origin_addr: from,
            version: 1,
            ttl: 1,
            payload: Payload::Ping(Probe {
                seq: 1,
                updates: vec![],
                applied_hash: 0,
            }),
        };
        wire::encode(&envelope, 1 << 20).unwrap()
    }

    /// Connects to `server` with `config`, sends one frame on a unidirectional stream and waits
    /// for the server's verdict. Returns a description of how the attempt ended; panics if the
    /// server kept the connection open.
    async fn attempt(server: SocketAddr, config: quinn::ClientConfig) -> String {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        let from = endpoint.local_addr().unwrap();
        let verdict = async {
            let conn = match endpoint.connect(server, CLUSTER_SERVER_NAME).unwrap().await {
                Ok(conn) => conn,
                Err(e) => return format!("handshake failed: {e}"),
            };
            // TLS 1.3: the client finishes its side before the server has checked the client
            // certificate. A completed connect proves nothing; the server's close does.
            if let Ok(mut stream) = conn.open_uni().await {
                // Refused clients have no member id; any will do.
                let origin = rumor_proto::PeerId::random();
                let _ = stream.write_all(&ping_frame(origin, from)).await;
                let _ = stream.finish();
            }
            format!("connection closed: {}", conn.closed().await)
        };
        let outcome = within(
            Duration::from_secs(20),
            "server refuses the client",
            verdict,
        )
        .await;
        endpoint.close(0u32.into(), b"done");
        outcome
    }

    /// Polls the peer's status snapshot until `pred` holds or `limit` passes.
    async fn wait_for_snapshot(
        peer: &LonelyPeer,
        what: &str,
        limit: Duration,
        pred: impl Fn(&rumor::metrics::StatusSnapshot) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        let mut rx = peer.handle.snapshot.clone();
        loop {
            if pred(&rx.borrow_and_update()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out after {limit:?}: {what}");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    fn rejected(s: &rumor::metrics::StatusSnapshot) -> u64 {
        s.transport["handshakes_rejected"].as_u64().unwrap_or(0)
    }

    fn received_total(s: &rumor::metrics::StatusSnapshot) -> u64 {
        s.core["received"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum())
    }

    /// The whole case: a refused client, then checks on the peer, then a legitimate member's
    /// frame still gets through.
    async fn refused(cert: impl FnOnce(&Path) -> ClientCert) {
        let peer = lonely_peer().await;
        let ca = certs::load_identity(&peer.ca_dir, "server").unwrap().ca;
        let before = peer.handle.snapshot.borrow().clone();
        assert_eq!(received_total(&before), 0);

        let how = attempt(peer.addr, client_config(&ca, &cert(&peer.ca_dir))).await;
        eprintln!("refused client: {how}");

        let rejected_before = rejected(&before);
        wait_for_snapshot(
            &peer,
            "handshakes_rejected rises",
            Duration::from_secs(20),
            |s| rejected(s) > rejected_before,
        )
        .await;
        let after = peer.handle.snapshot.borrow().clone();
        assert_eq!(
            received_total(&after),
            0,
            "no frame reached the core: {:?}",
            after.core
        );
        assert_eq!(after.members.len(), 1, "only itself in the view");
        assert_eq!(after.transport["handshakes_accepted"].as_u64(), Some(0));
        assert!(after.version_vector.is_empty(), "no delta applied");

        // The peer keeps working: a member with a good certificate gets a frame handled.
        let friend = issue(&peer.ca_dir, "friend", IssueOptions::default());
        let (transport, _rx) = Transport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &friend,
            TransportConfig::default(),
        )
        .await
        .unwrap();
        // Its ping speaks for an id bound to its own certificate, as every member's does.
        let key = rumor_proto::auth::KeyId::of(friend.chain[0].as_ref());
        let origin = rumor_proto::PeerId::bound(&key, *b"friend00");
        let frame = ping_frame(origin, transport.local_addr());
        within(
            Duration::from_secs(20),
            "legitimate send",
            transport.send(peer.addr, frame.into()),
        )
        .await
        .expect("a member's frame is accepted");
        wait_for_snapshot(
            &peer,
            "the core handles the member's ping",
            Duration::from_secs(20),
            |s| received_total(s) >= 1,
        )
        .await;
        transport.close().await;

        peer.handle.request_stop();
        let outcome = within(Duration::from_secs(30), "peer stops", peer.handle.wait())
            .await
            .expect("peer ends cleanly");
        assert!(outcome.applied.is_empty());
        assert_eq!(outcome.stats.deltas_applied, 0);
        assert!(outcome.transport.handshakes_rejected >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_without_certificate_is_refused_by_a_running_peer() {
        refused(|_| ClientCert::None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_with_certificate_from_another_ca_is_refused_by_a_running_peer() {
        let other = tempfile::tempdir().unwrap();
        let rogue = identities(other.path(), &["rogue"]).remove(0);
        refused(move |_| ClientCert::Identity(rogue)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_with_expired_certificate_is_refused_by_a_running_peer() {
        refused(|ca_dir| {
            ClientCert::Identity(issue(
                ca_dir,
                "expired",
                IssueOptions {
                    not_after_days_ago: Some(2),
                    ..IssueOptions::default()
                },
            ))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificate_without_eku_extension_is_refused_by_a_running_peer() {
        refused(|ca_dir| {
            ClientCert::Identity(issue(
                ca_dir,
                "noeku",
                IssueOptions {
                    extended_key_usage: false,
                    ..IssueOptions::default()
                },
            ))
        })
        .await;
    }

    /// A joiner that trusts the seed's CA but holds a certificate from another CA: its side of
    /// the handshake completes, the seed refuses it, and the joiner's join error says so and
    /// names the CA the seed saw.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joiner_whose_certificate_the_seed_refuses_is_told_so() {
        let peer = lonely_peer().await;
        let ca = certs::load_identity(&peer.ca_dir, "server").unwrap().ca;
        let other = tempfile::tempdir().unwrap();
        let created = certs::init_cluster_ca(other.path(), false, Some("elsewhere")).unwrap();
        assert_eq!(created.cluster, "elsewhere");
        certs::issue(other.path(), "joiner", 30).unwrap();
        let joiner = PeerIdentity {
            ca: ca.clone(),
            ..certs::load_identity(other.path(), "joiner").unwrap()
        };
        let home = certs::cluster_name(&ca).unwrap();

        let data = dataset();
        let mut c = test_config();
        c.peer.name = "joiner".into();
        c.peer.data_dir = other.path().join("data");
        c.peer.seeds = vec![peer.addr];
        c.peer.join_timeout = Duration::from_secs(3);
        c.train.epochs = 1;
        let opts = peer_options(&c, Arc::new(joiner), &data, 2).unwrap();
        let result = within(
            Duration::from_secs(30),
            "the joiner gives up",
            PeerHandle::spawn(opts).wait(),
        )
        .await;
        let message = match result {
            Err(e @ rumor::node::NodeError::JoinTimeout(..)) => e.to_string(),
            other => panic!("expected a join timeout: {other:?}"),
        };
        assert_eq!(
            message,
            format!(
                "no seed accepted us within 3s: seed {} refused this peer's certificate (TLS \
                 alert certificate_unknown): certificate from another cluster CA, \
                 \"elsewhere\"; this cluster's CA is {home:?}",
                peer.addr
            )
        );

        peer.handle.request_stop();
        let outcome = within(Duration::from_secs(30), "peer stops", peer.handle.wait())
            .await
            .expect("peer ends cleanly");
        assert!(outcome.transport.handshakes_rejected >= 1);
        assert_eq!(outcome.transport.handshakes_accepted, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificate_without_client_auth_eku_is_refused_by_a_running_peer() {
        refused(|ca_dir| {
            ClientCert::Identity(issue(
                ca_dir,
                "serveronly",
                IssueOptions {
                    client_auth: false,
                    ..IssueOptions::default()
                },
            ))
        })
        .await;
    }
}

/// `rumor certs init` names each cluster: `--cluster NAME` or a generated `rumor-<8 hex>`, in
/// the CA's subject and in what it prints.
#[test]
fn certs_init_names_each_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let init = |sub: &str, extra: &[&str]| {
        let path = dir.path().join(sub);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rumor"))
            .args(["certs", "init", "--dir"])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read(path.join(rumor::certs::CA_CERT_FILE)).unwrap();
        let ca = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        let name = rumor::certs::cluster_name(&ca).unwrap();
        (String::from_utf8_lossy(&out.stdout).into_owned(), name)
    };
    let (printed, name) = init("named", &["--cluster", "lab-7"]);
    assert_eq!(name, "lab-7");
    assert!(printed.contains("cluster lab-7"), "{printed}");
    let (printed_a, a) = init("a", &[]);
    let (_, b) = init("b", &[]);
    assert_ne!(a, b, "two CAs share a name");
    assert!(a.starts_with("rumor-") && a.len() == 14, "{a}");
    assert!(printed_a.contains(&a), "{printed_a}");
}
