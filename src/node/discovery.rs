//! The node's side of DNS seeds (`--seed dns:NAME:PORT`): resolve them once at start, then
//! again every [`RESOLVE_EVERY`] on a task of their own, handing each answer to the core
//! ([`rumor_proto::core::Core::discovered`]), which decides whom to contact. A name that does
//! not resolve is logged once until it resolves again (a headless Service has no records until
//! its first pod exists).

use std::collections::HashSet;
use std::net::SocketAddr;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::net::discovery::{resolve, DnsSeed, RESOLVE_EVERY};

/// DNS seeds resolved again and again; stops its task when dropped.
pub(super) struct DnsWatch {
    answers: mpsc::Receiver<Vec<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsWatch {
    /// Resolves `seeds` now (the addresses found, possibly none) and starts resolving them
    /// every [`RESOLVE_EVERY`]. None without DNS seeds.
    pub(super) async fn start(seeds: &[DnsSeed]) -> (Vec<SocketAddr>, Option<Self>) {
        if seeds.is_empty() {
            return (Vec::new(), None);
        }
        let mut failing = HashSet::new();
        let first = resolve_logged(seeds, &mut failing).await;
        info!(seeds = ?seeds, found = ?first, "DNS seeds resolved");
        let (tx, answers) = mpsc::channel(2);
        let seeds = seeds.to_vec();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESOLVE_EVERY).await;
                let found = resolve_logged(&seeds, &mut failing).await;
                // A full channel means the node has not taken the last answer yet: this one
                // waits for the next round.
                if tx.is_closed() {
                    return;
                }
                let _ = tx.try_send(found);
            }
        });
        (first, Some(Self { answers, task }))
    }

    /// The next answer (every [`RESOLVE_EVERY`]).
    pub(super) async fn next(&mut self) -> Option<Vec<SocketAddr>> {
        self.answers.recv().await
    }
}

impl Drop for DnsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`resolve`], warning once for each seed that stops resolving and saying when it resolves
/// again; `failing` holds the seeds that did not resolve last time.
async fn resolve_logged(seeds: &[DnsSeed], failing: &mut HashSet<DnsSeed>) -> Vec<SocketAddr> {
    let (found, failed) = resolve(seeds).await;
    let now_failing: HashSet<DnsSeed> = failed.iter().map(|(s, _)| s.clone()).collect();
    for (seed, why) in &failed {
        if !failing.contains(seed) {
            warn!(
                %seed,
                "DNS seed does not resolve: {why}; trying again every {}s",
                RESOLVE_EVERY.as_secs()
            );
        }
    }
    for seed in failing.difference(&now_failing) {
        info!(%seed, "DNS seed resolves again");
    }
    *failing = now_failing;
    found
}
