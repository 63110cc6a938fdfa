//! The accepting side of a transport: connection attempts from anyone, admitted, retried or
//! refused before any handshake ([`super::admission`]), then handshakes bounded in time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{admission, canonical, Shared};

/// Accepts incoming connections until the endpoint closes. Each attempt is first admitted,
/// retried or refused ([`admission`]); an admitted handshake runs in its own task, bounded by
/// the handshake timeout.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let remote = incoming.remote_address();
        let decision = shared.admission.admit(
            remote.ip(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        match decision {
            admission::Admission::Accept(ticket) => {
                tokio::spawn(handshake(shared.clone(), incoming, ticket));
            }
            admission::Admission::Retry => {
                if incoming.retry().is_ok() {
                    shared
                        .counters
                        .handshake_retries_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
                // An attempt that cannot be retried was refused by quinn inside `retry`.
            }
            admission::Admission::Refuse(reason) => {
                incoming.refuse();
                let counter = match reason {
                    admission::Refusal::Capacity => &shared.counters.handshakes_refused_capacity,
                    admission::Refusal::PerSource => &shared.counters.handshakes_refused_per_source,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.source_log(remote.ip()) {
                    tracing::warn!(
                        %remote,
                        reason = reason.as_str(),
                        in_progress = shared.admission.in_progress(),
                        suppressed_since_last_log = suppressed,
                        "incoming connection refused before its handshake: too many handshakes \
                         in progress (logged at most once per IP every {}s)",
                        crate::ratelog::LOG_INTERVAL.as_secs()
                    );
                }
            }
        }
    }
    tracing::debug!(local_addr = %shared.local_addr, "accept loop ended");
}

/// Runs one admitted handshake to its end, within the handshake timeout; the ticket holds its
/// admission places until then. An abandoned handshake's state is freed when `connecting` is
/// dropped.
async fn handshake(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    ticket: admission::AdmissionTicket,
) {
    let remote = incoming.remote_address();
    let timeout = shared.config.handshake_timeout;
    let outcome = match incoming.accept() {
        Ok(connecting) => tokio::time::timeout(timeout, connecting).await,
        Err(error) => Ok(Err(error)),
    };
    drop(ticket);
    match outcome {
        Ok(Ok(conn)) => {
            shared
                .counters
                .handshakes_accepted
                .fetch_add(1, Ordering::Relaxed);
            let addr = canonical(conn.remote_address());
            tracing::debug!(%addr, "connection accepted");
            shared.serve(conn, addr, true);
        }
        Ok(Err(error)) => {
            shared
                .counters
                .handshakes_rejected
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.source_log(remote.ip()) {
                tracing::info!(
                    %remote,
                    %error,
                    suppressed_since_last_log = suppressed,
                    "incoming handshake refused (logged at most once per IP every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                );
            }
        }
        Err(_) => {
            shared
                .counters
                .handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.source_log(remote.ip()) {
                tracing::info!(
                    %remote,
                    timeout_ms = shared.config.handshake_timeout.as_millis() as u64,
                    suppressed_since_last_log = suppressed,
                    "incoming handshake not completed in time, abandoned (logged at most once \
                     per IP every {}s)",
                    crate::ratelog::LOG_INTERVAL.as_secs()
                );
            }
        }
    }
}
