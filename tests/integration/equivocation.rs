//! Equivocation on a running cluster: four peers train; chaos, a fifth member whose certificate
//! the same CA issued, sends one signed delta under one version to peer-0 (`rumor chaos
//! equivocate`, through the library function the CLI calls), and once every peer has applied it
//! — one delta alone is no equivocation: nobody holds a proof then — a different signed delta
//! under the same version to peer-1 (the same kind and seed against another target). The
//! cluster detects it, spreads the proof, quarantines chaos's certificate at every peer (a
//! further run is refused at the handshake), takes the version out again, and every peer ends
//! drained with the same model. The time from the second send until the last peer holds the
//! proof is printed: the time from equivocation to quarantine.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumor::chaos::{chaos_id, run_chaos, ChaosKind, ChaosOptions, ChaosReport};
use rumor::metrics::http::{fetch_status, get, MetricsServer};
use rumor::model;
use rumor::node::{PeerHandle, PeerStatus};
use rumor::run::peer_options;
use rumor_proto::wire::Lifecycle;
use rumor_proto::PeerId;

use crate::common::{
    compare_checkpoints, dataset, heavy_test_lock, identities, test_config, wait_all, within,
};
use crate::observability::{scrape, value};

const NAMES: [&str; 4] = ["peer-0", "peer-1", "peer-2", "peer-3"];
const CHAOS: &str = "chaos";
/// One seed for both runs: one version.
const SEED: u64 = 7;
/// Upper bound for every peer to hold the proof once the second delta is sent: one digest
/// round or one direct detection, then one hop of the proof; the rest is slack for a loaded
/// machine.
const QUARANTINE_WITHIN: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn status(h: &PeerHandle) -> PeerStatus {
    rumor::node::lock(&h.status).clone()
}

/// A protocol counter from the peer's latest status snapshot (what `/status` serves; 0 if
/// absent).
fn core_counter(h: &PeerHandle, field: &str) -> u64 {
    h.snapshot.borrow().core[field].as_u64().unwrap_or(0)
}

/// A transport counter from the peer's latest snapshot (0 if absent).
fn transport_counter(h: &PeerHandle, field: &str) -> u64 {
    h.snapshot.borrow().transport[field].as_u64().unwrap_or(0)
}

/// Whether `h` holds a proof of the equivocation: it found it or received the proof. Either way
/// it quarantined chaos's certificate in the same step (`Core::handle_proof`). Chaos's record
/// says `left` (its introduction), which quarantine leaves as it is, so the member view does not
/// show it; the counters and the handshakes refused do.
fn holds_proof(h: &PeerHandle) -> bool {
    core_counter(h, "equivocations_detected") + core_counter(h, "equivocation_proofs_received") >= 1
}

/// Whether `h` has applied `origin`'s `version` (its status snapshot's version vector).
fn has_applied(h: &PeerHandle, origin: PeerId, version: u64) -> bool {
    h.snapshot
        .borrow()
        .version_vector
        .get(&origin.to_string())
        .is_some_and(|o| o.max >= version && !o.missing.contains(&version))
}

fn unix_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One chaos run of `equivocate` with the shared seed against `target`, reading its metrics.
fn equivocate(target: SocketAddr, metrics: &str, params: usize) -> ChaosOptions {
    ChaosOptions {
        param_count: params,
        rng_seed: Some(SEED),
        metrics: Some(metrics.to_string()),
        ..ChaosOptions::new(target, ChaosKind::Equivocate, 1)
    }
}

// Each tokio test owns its runtime: holding the std guard across awaits only serialises this
// test against the other heavy tests, which run on other threads. The measured time is the
// reason to take it: another cluster training beside this one would stretch it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_member_is_quarantined_by_a_training_cluster_that_ends_identical() {
    let _heavy = heavy_test_lock();
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let mut all = NAMES.to_vec();
    all.push(CHAOS);
    let mut ids = identities(&certs_dir, &all);
    let chaos_identity = ids.pop().unwrap();
    let chaos = chaos_id(&rumor::net::peer_keys(&chaos_identity).unwrap().key_id());
    let data = dataset();
    let n = NAMES.len();

    let mut handles: Vec<PeerHandle> = Vec::new();
    let mut servers: Vec<MetricsServer> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut seed = None;
    let mut params = 0;
    for (i, name) in NAMES.iter().enumerate() {
        let mut c = test_config();
        c.peer.name = name.to_string();
        c.peer.seeds = seed.into_iter().collect();
        c.peer.data_dir = dir.path().join(name);
        c.peer.min_peers = n;
        c.train.shard = format!("{}/{n}", i + 1).parse().unwrap();
        // Training until the test ends it: a constant rate, so deltas have their usual norm
        // (chaos's delta must pass the norm check) rather than a warm-up's over 1000 epochs.
        c.train.epochs = 1000;
        c.train.max_train_time = Some(Duration::from_secs(40));
        c.train.lr_schedule = rumor::train::LrSchedule::Constant;
        params = c.train.model.param_count().expect("an MLP");
        let opts = peer_options(&c, ids[i].clone(), &data, n).unwrap();
        let mut h = PeerHandle::spawn(opts);
        let addr = h.bound_addr().await.expect("the peer bound an address");
        if i == 0 {
            seed = Some(addr);
        }
        let server =
            MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), h.snapshot.clone())
                .await
                .unwrap();
        addrs.push(addr);
        servers.push(server);
        handles.push(h);
    }
    let metrics: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    within(Duration::from_secs(120), "all four peers train", async {
        while !handles.iter().all(|h| status(h).step > 20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // First run: one signed delta under the seed's version, to peer-0.
    let first: ChaosReport = within(
        Duration::from_secs(60),
        "chaos's first equivocate run (against peer-0)",
        run_chaos(&chaos_identity, &equivocate(addrs[0], &metrics[0], params)),
    )
    .await
    .unwrap();
    eprintln!("{first}");
    let sent_first = first
        .equivocation
        .clone()
        .expect("equivocate reports its delta");
    let version = sent_first.version;
    assert_eq!(first.origin, chaos.to_string());
    assert_eq!((first.sent, first.delivered), (1, 1), "{first:?}");

    // One delta alone is no equivocation: it spreads like any delta (anti-entropy, chaos's
    // record having reached every peer through gossip) and no peer holds a proof.
    within(
        Duration::from_secs(30),
        "every peer to apply chaos's first delta (no equivocation yet)",
        async {
            while !handles.iter().all(|h| has_applied(h, chaos, version)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    for h in &handles {
        assert!(
            !holds_proof(h),
            "{}: a proof from one delta",
            status(h).name
        );
        assert_eq!(
            status(h).lifecycle,
            Lifecycle::Training,
            "{}: still training at the second send",
            status(h).name
        );
    }

    // Second run, same seed, another target: a different signed delta under the same version.
    let task = {
        let identity = chaos_identity.clone();
        let options = equivocate(addrs[1], &metrics[1], params);
        tokio::spawn(async move { run_chaos(&identity, &options).await })
    };
    let mut proof_at: Vec<Option<u64>> = vec![None; n];
    within(
        QUARANTINE_WITHIN,
        "every peer to hold the proof of chaos's equivocation (and so quarantine it)",
        async {
            while proof_at.iter().any(Option::is_none) {
                for (i, h) in handles.iter().enumerate() {
                    if proof_at[i].is_none() && holds_proof(h) {
                        proof_at[i] = Some(unix_ms());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    let second: ChaosReport = within(
        Duration::from_secs(60),
        "chaos's second equivocate run (against peer-1) to end",
        task,
    )
    .await
    .unwrap()
    .unwrap();
    eprintln!("{second}");
    let sent_second = second
        .equivocation
        .clone()
        .expect("equivocate reports its delta");
    assert_eq!(sent_second.version, version, "one seed, one version");
    assert_ne!(
        sent_second.content_hash, sent_first.content_hash,
        "two targets, two contents"
    );
    assert_eq!(second.sent, 1);
    let sent_at = second.sends_started_unix_ms;
    assert!(sent_at > 0);
    let after: Vec<u64> = proof_at
        .iter()
        .map(|t| t.unwrap().saturating_sub(sent_at))
        .collect();
    let last = after.iter().copied().max().unwrap();
    eprintln!(
        "equivocation: time from equivocation to quarantine {last} ms (from chaos's second \
         send to the last peer holding the proof; per peer {:?} ms, polled every 5 ms on \
         status snapshots refreshed every 100 ms)",
        NAMES.iter().zip(&after).collect::<Vec<_>>()
    );

    // What each peer counted, through its /metrics and /status.
    let mut detected = 0.0;
    for i in 0..n {
        let text = get(&metrics[i], "/metrics", HTTP_TIMEOUT).await.unwrap();
        let m = scrape(&text);
        let found = value(&m, "rumor_equivocations_detected_total{}");
        let received = value(&m, "rumor_equivocation_proofs_received_total{}");
        let retracted = value(&m, "rumor_deltas_retracted_total{}");
        let from_revoked = value(&m, "rumor_messages_from_revoked_total{}");
        detected += found;
        eprintln!(
            "equivocation: {}: equivocations_detected {found}, equivocation_proofs_received \
             {received}, deltas_retracted {retracted}, messages_from_revoked {from_revoked}, \
             proofs refused {}",
            NAMES[i],
            value(&m, "rumor_equivocation_proofs_refused_total{}")
        );
        assert!(found + received >= 1.0, "{}: holds the proof", NAMES[i]);
        // It had applied the first delta: taken out again.
        assert_eq!(retracted, 1.0, "{}: the applied copy taken out", NAMES[i]);
        let s = fetch_status(&metrics[i], HTTP_TIMEOUT).await.unwrap();
        let record = s.members.iter().find(|m| m.peer_id == chaos).unwrap();
        assert!(
            record.status != "alive" && record.status != "suspect",
            "{}: chaos is never live ({})",
            NAMES[i],
            record.status
        );
    }
    assert!(detected >= 1.0, "some peer detected the equivocation");

    // A further run is refused: chaos's certificate is denied at the handshake.
    let refused_before = transport_counter(&handles[2], "handshakes_refused_revoked");
    let third = within(
        Duration::from_secs(60),
        "chaos's run after its quarantine (against peer-2)",
        run_chaos(&chaos_identity, &equivocate(addrs[2], &metrics[2], params)),
    )
    .await;
    let error = third.expect_err("a quarantined member's run is refused");
    eprintln!(
        "equivocation: a further run: {}",
        rumor::report::Chain(&error)
    );
    within(
        Duration::from_secs(10),
        "peer-2 to count chaos's handshake refused",
        async {
            while transport_counter(&handles[2], "handshakes_refused_revoked") <= refused_before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;

    // Training ends; every peer drains and they agree, the equivocated version resolved to
    // nothing everywhere.
    let outcomes = wait_all(handles, Duration::from_secs(180)).await;
    drop(servers);
    for o in &outcomes {
        assert!(
            o.drained,
            "{} drained consistent before its deadline",
            o.name
        );
        assert_eq!(o.applied, outcomes[0].applied, "same applied set");
        assert!(o.applied.contains(chaos, version));
        eprintln!(
            "equivocation: {} at exit: detected {}, proofs received {}, retracted {}, from \
             revoked {}, handshakes refused revoked {}, connections closed revoked {}",
            o.name,
            o.stats.equivocations_detected,
            o.stats.equivocation_proofs_received,
            o.stats.deltas_retracted,
            o.stats.messages_from_revoked,
            o.transport.handshakes_refused_revoked,
            o.transport.connections_closed_revoked
        );
    }
    let bases: Vec<&[f32]> = outcomes.iter().map(|o| o.base.as_slice()).collect();
    let distance = model::consensus_distance(&bases).unwrap();
    let on_disk = compare_checkpoints(dir.path(), &NAMES);
    eprintln!(
        "equivocation: consensus distance {distance:e} in memory, {on_disk:e} on disk; test \
         took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(
        on_disk < 1e-4,
        "consensus distance of the checkpoints {on_disk}"
    );
}
