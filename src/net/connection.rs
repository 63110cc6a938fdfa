//! Driving one connection, opened or accepted: its streams are read until it closes, then it
//! leaves the cache and its counters are folded into the transport's.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::Connection;
use tokio::sync::Semaphore;

use super::{limits, member, reader, Shared};

/// Accepts the unidirectional streams of one connection (opened or accepted) until it closes,
/// then removes it from the cache and folds its counters. The member lease is held until then.
pub(super) async fn drive_connection(
    shared: Arc<Shared>,
    conn: Connection,
    addr: SocketAddr,
    member: Arc<str>,
    key: rumor_proto::auth::KeyId,
    lease: member::MemberLease,
) {
    let limits = Arc::new(reader::ConnectionLimits {
        connection: conn.clone(),
        member,
        key,
        budget: limits::ByteBudget::new(shared.config.buffered_bytes_budgets().0),
        member_limits: lease.limits.clone(),
    });
    let in_flight = Arc::new(Semaphore::new(
        shared.config.max_streams_per_connection as usize,
    ));
    loop {
        // A stream is accepted only while the connection has a free in-flight place; until
        // then the sender's further streams wait in QUIC flow control. A close is noticed
        // while waiting, so a closed connection gives its member's place back at once even
        // when its readers still wait for room in the incoming channel.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit,
            _ = conn.closed() => break,
        };
        let Ok(permit) = permit else {
            break;
        };
        match conn.accept_uni().await {
            Ok(stream) => {
                // Then the member's place: taken after the stream is accepted, so a connection
                // that carries nothing holds none of them. Until one is free, this connection
                // accepts no further stream.
                let member_permit = tokio::select! {
                    permit = lease.limits.streams.clone().acquire_owned() => permit,
                    _ = conn.closed() => break,
                };
                let Ok(member_permit) = member_permit else {
                    break;
                };
                let reader = reader::Reader {
                    shared: shared.clone(),
                    from: addr,
                    limits: limits.clone(),
                    _permit: permit,
                    _member_permit: member_permit,
                };
                tokio::spawn(reader.read(stream));
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "connection closed");
                break;
            }
        }
    }
    shared.forget(addr, &conn);
    shared.fold(&conn);
    drop(lease);
}
