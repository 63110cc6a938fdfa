//! A member's attacks on what others believe, sent by `rumor chaos` to a running peer (a child
//! process training alone, so that every delta it applies would be chaos's): deltas forged in
//! its own name or altered after signing are refused for their `signature`; deltas under
//! invented origins as `unknown_origin`, leaving its version vector as it was; a ping and a join
//! speaking for it over chaos's connection are dropped as `senders_mismatched`, with no welcome
//! or snapshot sent; member records for invented ids are refused `unbound` and past the cap of
//! ids per certificate, and the member table stops growing at the cap; chaos's own record with a
//! changed field is refused for its `signature`. Without a metrics address, a forged delta names
//! a made-up origin and is refused as `unknown_origin`. Nothing is applied from any of it, what
//! chaos reports the target counted equals the target's own counters, and the peer keeps
//! answering and training. One peer takes every kind in turn; each kind's counters are read as
//! the increase over its run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumor::chaos::target::TargetView;
use rumor::chaos::{chaos_id, run_chaos, ChaosKind, ChaosReport, VictimSource, FORGE_VERSION_BASE};
use rumor::metrics::http::fetch_status;
use rumor::metrics::StatusSnapshot;
use rumor_proto::core::MAX_IDENTITIES_PER_CERTIFICATE;

use crate::common::heavy;
use crate::flood::{
    assert_figures_match, chaos_against, chaos_options, metrics, poll_until, read_addr, setup,
    spawn_peer, steps, Peer,
};
use crate::observability::value;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const APPLIED: &str = "rumor_deltas_applied_total{}";
const MISMATCHED: &str = "rumor_senders_mismatched_total{}";

fn rejected(reason: &str) -> String {
    format!("rumor_deltas_rejected_total{{reason={reason}}}")
}

fn refused(reason: &str) -> String {
    format!("rumor_records_refused_total{{reason={reason}}}")
}

fn increase(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    value(after, key) - value(before, key)
}

async fn status(peer: &Peer) -> StatusSnapshot {
    fetch_status(&peer.metrics, HTTP_TIMEOUT)
        .await
        .expect("the peer's /status")
}

/// The target's view as `/status` shows it, with the ids bound to chaos's certificate.
async fn view(peer: &Peer, chaos_key: &rumor_proto::auth::KeyId) -> TargetView {
    TargetView::from_status(&status(peer).await, chaos_key)
}

/// Runs `count` messages of `kind` with the peer's metrics address and waits for `counter` to
/// grow by `count`; checks that chaos's report equals the peer's counters and that nothing was
/// applied. Returns the report and the peer's counters before and after.
async fn attack(
    peer: &mut Peer,
    identity: &rumor::certs::PeerIdentity,
    addr: SocketAddr,
    kind: ChaosKind,
    count: u64,
    counter: &str,
) -> (ChaosReport, HashMap<String, f64>, HashMap<String, f64>) {
    let started = Instant::now();
    let (report, before, after) = chaos_against(
        peer,
        identity,
        chaos_options(addr, kind, count),
        counter,
        count as f64,
    )
    .await;
    let what = kind.as_str();
    assert_eq!(report.sent, count, "{what}");
    assert_eq!(report.failed, 0, "{what}");
    assert_eq!(
        increase(&before, &after, counter),
        count as f64,
        "{what}: {counter}"
    );
    assert_eq!(
        increase(&before, &after, APPLIED),
        0.0,
        "{what}: nothing applied"
    );
    assert!(
        report
            .introduction
            .as_ref()
            .is_some_and(|i| i.seen_by_target),
        "{what}: the target took chaos's introduction first"
    );
    assert_figures_match(&report, &before, &after);
    assert!(
        peer.child.0.try_wait().expect("wait").is_none(),
        "the peer survives {what}"
    );
    eprintln!(
        "{what}: {counter} +{count} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (report, before, after)
}

#[test]
fn forged_altered_and_invented_messages_are_refused_by_reason_and_change_nothing() {
    heavy(forgeries());
}

async fn forgeries() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &["peer-1", "chaos"]);
    // Trains until killed at the end of the test.
    let mut peer = spawn_peer(dir.path(), "peer-1", "1/1", None, 1);
    let addr: SocketAddr = read_addr(dir.path().join("peer-1.addr"))
        .await
        .parse()
        .unwrap();
    poll_until(Duration::from_secs(60), "the peer to train", || async {
        (steps(&peer).await >= 20.0).then_some(())
    })
    .await;
    let identity = rumor::certs::load_identity(&dir.path().join("certs"), "chaos").unwrap();
    let key = rumor::net::peer_keys(&identity).unwrap().key_id();
    let chaos = chaos_id(&key);
    let target_id = status(&peer).await.peer.peer_id;
    let first = view(&peer, &key).await;
    eprintln!("target {target_id} before: {first:?}");

    // forge: a delta in the target's own name, signed with chaos's key.
    let (report, _, _) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Forge,
        3,
        &rejected("signature"),
    )
    .await;
    let victim = report.victim.as_ref().expect("forge names its victim");
    assert_eq!(victim.source, VictimSource::TargetStatus);
    assert_eq!(victim.peer_id, target_id);
    let s = status(&peer).await;
    let own = s.version_vector.get(&target_id.to_string());
    assert!(
        own.is_none_or(|o| o.max < FORGE_VERSION_BASE),
        "no forged version of the target's is applied: {own:?}"
    );
    // Chaos's introduced record: left and stopped, never live.
    let record = s
        .members
        .iter()
        .find(|m| m.peer_id == chaos)
        .expect("chaos's record");
    assert_eq!(
        (record.status.as_str(), record.lifecycle.as_str()),
        ("left", "stopped")
    );
    let introduced = view(&peer, &key).await;
    assert_eq!(introduced.live, first.live, "chaos is never a live member");
    assert_eq!(introduced.chaos_identities, 1, "one id per certificate");

    // alter: chaos's own delta, one value changed after signing.
    let before = view(&peer, &key).await;
    attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Alter,
        3,
        &rejected("signature"),
    )
    .await;
    let s = status(&peer).await;
    assert!(
        !s.version_vector.contains_key(&chaos.to_string()),
        "no delta of chaos's applied"
    );
    assert_eq!(view(&peer, &key).await.origins, before.origins);

    // origins: deltas under fresh invented origins, random or bound to chaos's certificate.
    attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Origins,
        20,
        &rejected("unknown_origin"),
    )
    .await;
    let after = view(&peer, &key).await;
    assert_eq!(
        after.origins, before.origins,
        "the version vector does not grow"
    );
    assert_eq!(after.members, before.members);

    // impersonate: a ping in the target's name over chaos's connection.
    let (_, b, a) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Impersonate,
        3,
        MISMATCHED,
    )
    .await;
    let pings = "rumor_messages_received_total{kind=ping}";
    assert_eq!(increase(&b, &a, pings), 0.0, "no ping handled");

    // reflect: a join in the target's name asking for a welcome and a snapshot.
    let (report, b, a) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Reflect,
        3,
        MISMATCHED,
    )
    .await;
    for key in [
        "rumor_messages_received_total{kind=join}",
        "rumor_messages_sent_total{kind=welcome}",
        "rumor_snapshots_sent_total{}",
    ] {
        assert_eq!(increase(&b, &a, key), 0.0, "reflect: {key}");
    }
    let t = report.target_counted.as_ref().unwrap();
    assert_eq!((t.sent("welcome"), t.snapshots_sent), (0, 0));

    // invent: each message a record for a random id and one for a fresh id bound to chaos's
    // certificate. Chaos's own id holds one of its certificate's slots: three invented ids get
    // in, then the cap refuses the rest.
    let before = view(&peer, &key).await;
    assert_eq!(before.chaos_identities, 1);
    let (_, b, a) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Invent,
        4,
        &refused("unbound"),
    )
    .await;
    let cap = MAX_IDENTITIES_PER_CERTIFICATE;
    assert_eq!(
        increase(&b, &a, &refused("too_many_identities")),
        (4 - (cap - 1)) as f64
    );
    let capped = view(&peer, &key).await;
    assert_eq!(capped.chaos_identities, cap);
    assert_eq!(capped.members, before.members + cap - 1);
    assert_eq!(capped.live, before.live, "invented members are never live");
    // Another run: the table does not grow.
    let (_, b, a) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Invent,
        3,
        &refused("unbound"),
    )
    .await;
    assert_eq!(increase(&b, &a, &refused("too_many_identities")), 3.0);
    let again = view(&peer, &key).await;
    assert_eq!(
        (again.members, again.chaos_identities),
        (capped.members, cap)
    );

    // tamper: chaos's own signed record, its published version lifted or its address changed.
    let (report, _, _) = attack(
        &mut peer,
        &identity,
        addr,
        ChaosKind::Tamper,
        2,
        &refused("signature"),
    )
    .await;
    let intro = report.introduction.as_ref().unwrap();
    let s = status(&peer).await;
    let record = s.members.iter().find(|m| m.peer_id == chaos).unwrap();
    assert_eq!(
        (record.heartbeat, record.published),
        (intro.heartbeat, intro.published),
        "chaos's record is the one it signed"
    );

    // forge without a metrics address: the victim is made up, an unknown origin.
    let before = metrics(&peer).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_chaos(&identity, &chaos_options(addr, ChaosKind::Forge, 3)),
    )
    .await
    .expect("chaos within a minute")
    .unwrap();
    eprintln!("{report}");
    assert_eq!(
        report.victim.as_ref().map(|v| v.source),
        Some(VictimSource::MadeUp)
    );
    let counter = rejected("unknown_origin");
    let after = poll_until(
        Duration::from_secs(20),
        "forge without metrics to be refused as unknown_origin",
        || async {
            let m = metrics(&peer).await?;
            (value(&m, &counter) >= value(&before, &counter) + 3.0).then_some(m)
        },
    )
    .await;
    assert_eq!(increase(&before, &after, APPLIED), 0.0);
    assert_eq!(increase(&before, &after, &rejected("signature")), 0.0);

    // Still answering, still training, still alone among the live.
    let s = steps(&peer).await;
    poll_until(Duration::from_secs(30), "training to go on", || async {
        (steps(&peer).await > s).then_some(())
    })
    .await;
    let last = view(&peer, &key).await;
    assert_eq!(last.live, first.live);
    assert_eq!(last.origins, first.origins, "no origin added by any attack");
    eprintln!(
        "target after: {last:?}; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
