//! Reading one message (one unidirectional stream) under the limits a connection and a member
//! (a certificate, [`member`](super::member)) are held to.
//!
//! A message is read chunk by chunk. Before a chunk is kept, its bytes are taken from two
//! byte budgets — the connection's and its member's (every connection presenting the same
//! certificate) — and given back once the message is queued for the core or dropped. A stream
//! that finds a budget empty waits (QUIC flow control then holds its sender back), so a burst of
//! legitimate messages only slows down, while a member that opens many streams and never
//! finishes them holds at most its budgets, never more. Every stream must end (FIN) within the
//! stream timeout of being accepted; one that does not — a never-finished message, or one
//! trickling a byte a second — is stopped with [`CODE_TIMED_OUT`](super::CODE_TIMED_OUT) and
//! counted. On top of that each member has token buckets on messages/s and bytes/s, shared by
//! all its connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use quinn::VarInt;
use tokio::sync::OwnedSemaphorePermit;

use super::limits::ByteBudget;
use super::member::MemberLimits;
use super::{Incoming, Shared, CODE_RATE_LIMITED, CODE_TIMED_OUT, CODE_TOO_LARGE};

/// Largest chunk taken from a stream at once, in bytes; also the most a stream holds outside
/// the budgets while it waits for room in them.
const CHUNK_BYTES: usize = 64 * 1024;

/// Bytes one message holds in its connection's and member's budgets; given back on drop.
/// Each budget's bytes are recorded as soon as they are taken, so a read cancelled while
/// waiting for the second budget gives back what it took of the first.
struct Held {
    connection: ByteBudget,
    member: ByteBudget,
    buffered: Arc<AtomicU64>,
    connection_bytes: usize,
    member_bytes: usize,
}

impl Held {
    fn new(connection: ByteBudget, member: ByteBudget, buffered: Arc<AtomicU64>) -> Self {
        Self {
            connection,
            member,
            buffered,
            connection_bytes: 0,
            member_bytes: 0,
        }
    }

    async fn take(&mut self, n: usize) {
        self.connection.take(n).await;
        self.connection_bytes += n;
        self.member.take(n).await;
        self.member_bytes += n;
        self.buffered.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.connection.give_back(self.connection_bytes);
        self.member.give_back(self.member_bytes);
        self.buffered
            .fetch_sub(self.member_bytes as u64, Ordering::Relaxed);
    }
}

/// What one connection's streams share: the connection, its budget, and its member's name,
/// key and shared limits.
pub(super) struct ConnectionLimits {
    pub(super) connection: quinn::Connection,
    /// The member's name, for logs and [`Incoming::member`].
    pub(super) member: Arc<str>,
    /// The key id of the connection's peer certificate ([`Incoming::key`]): the member.
    pub(super) key: rumor_proto::auth::KeyId,
    /// The connection's own byte budget.
    pub(super) budget: ByteBudget,
    /// What all connections of the member share: byte budget, token buckets, in-flight places.
    pub(super) member_limits: Arc<MemberLimits>,
}

/// Reads one stream of a connection; holds one of the connection's and one of its member's
/// in-flight places until the message is queued or dropped.
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) from: std::net::SocketAddr,
    pub(super) limits: Arc<ConnectionLimits>,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _member_permit: OwnedSemaphorePermit,
}

/// Why a stream's message was not read whole.
enum ReadFailure {
    TooLong,
    Stream(quinn::ReadError),
}

impl Reader {
    /// True if a message (`len` None) or `len` more bytes are within the member's rates.
    fn admit(&self, len: Option<usize>) -> bool {
        let mut limiter = self
            .limits
            .member_limits
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match len {
            None => limiter.admit_message(now),
            Some(len) => limiter.admit_bytes(now, len),
        }
    }

    fn rate_limited(&self, what: &str) {
        self.shared
            .counters
            .messages_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.shared.member_log(&self.limits.key) {
            tracing::warn!(
                member = %self.limits.member,
                key = %self.limits.key.short(),
                from = %self.from,
                limit = what,
                suppressed_since_last_log = suppressed,
                "messages over the member's rate limit dropped (logged at most once per \
                 member every {}s)",
                crate::ratelog::LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Reads the message within the stream timeout, checks the rate limits and queues it.
    pub(super) async fn read(self, mut stream: quinn::RecvStream) {
        let shared = self.shared.clone();
        if !self.admit(None) {
            self.rate_limited("messages/s");
            // Fails only if the stream is already closed: nothing to stop.
            let _ = stream.stop(VarInt::from_u32(CODE_RATE_LIMITED));
            return;
        }
        let timeout = shared.config.stream_timeout;
        let read = tokio::time::timeout(timeout, self.read_bounded(&mut stream)).await;
        let member = &self.limits.member;
        let key = &self.limits.key;
        let from = self.from;
        match read {
            Ok(Ok((bytes, held))) => {
                if !self.admit(Some(bytes.len())) {
                    self.rate_limited("bytes/s");
                    return;
                }
                // A closed receiver means nobody listens any more; the message is dropped.
                let _ = shared
                    .incoming
                    .send(Incoming {
                        from,
                        member: member.clone(),
                        key: self.limits.key,
                        bytes,
                    })
                    .await;
                drop(held);
            }
            Ok(Err(ReadFailure::TooLong)) => {
                shared
                    .counters
                    .oversize_messages
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.member_log(key) {
                    tracing::warn!(
                        %member,
                        key = %key.short(),
                        %from,
                        limit = shared.config.max_message_bytes,
                        suppressed_since_last_log = suppressed,
                        "oversize message dropped (logged at most once per member every {}s)",
                        crate::ratelog::LOG_INTERVAL.as_secs()
                    );
                }
                // Fails only if the stream is already closed: nothing to stop.
                let _ = stream.stop(VarInt::from_u32(CODE_TOO_LARGE));
            }
            Ok(Err(ReadFailure::Stream(error))) => {
                tracing::debug!(%member, %from, %error, "stream failed");
            }
            Err(_) => {
                shared
                    .counters
                    .streams_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.member_log(key) {
                    tracing::warn!(
                        %member,
                        key = %key.short(),
                        %from,
                        timeout_ms = shared.config.stream_timeout.as_millis() as u64,
                        suppressed_since_last_log = suppressed,
                        "message not finished within the stream timeout, dropped (logged at \
                         most once per member every {}s)",
                        crate::ratelog::LOG_INTERVAL.as_secs()
                    );
                }
                // Fails only if the stream is already closed: nothing to stop.
                let _ = stream.stop(VarInt::from_u32(CODE_TIMED_OUT));
            }
        }
    }

    /// Reads the stream to its end, taking every kept byte from the budgets first.
    async fn read_bounded(
        &self,
        stream: &mut quinn::RecvStream,
    ) -> Result<(Vec<u8>, Held), ReadFailure> {
        let max = self.shared.config.max_message_bytes;
        let mut held = Held::new(
            self.limits.budget.clone(),
            self.limits.member_limits.budget.clone(),
            self.shared.counters.buffered_bytes.clone(),
        );
        // Chunks are kept as quinn handed them over and joined once the message is whole, so
        // an unfinished message holds what it received, not a doubling buffer.
        let mut chunks = Vec::new();
        let mut total = 0usize;
        loop {
            match stream.read_chunk(CHUNK_BYTES, true).await {
                Ok(Some(chunk)) => {
                    if total + chunk.bytes.len() > max {
                        return Err(ReadFailure::TooLong);
                    }
                    // While it waits for room in a budget, the connection is still watched: a
                    // lost connection frees the stream's bytes now, not at the stream timeout.
                    // (A reset of this stream alone is seen at the next read or the timeout;
                    // quinn's `received_reset` must not be awaited beside reads.)
                    let n = chunk.bytes.len();
                    tokio::select! {
                        () = held.take(n) => {}
                        error = self.limits.connection.closed() => {
                            return Err(ReadFailure::Stream(quinn::ReadError::ConnectionLost(error)))
                        }
                    }
                    total += n;
                    chunks.push(chunk.bytes);
                }
                Ok(None) => {
                    let mut bytes = Vec::with_capacity(total);
                    for chunk in &chunks {
                        bytes.extend_from_slice(chunk);
                    }
                    return Ok((bytes, held));
                }
                Err(error) => return Err(ReadFailure::Stream(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_byte_budget_makes_the_next_taker_wait_until_bytes_are_given_back() {
        let budget = ByteBudget::new(100);
        let member = ByteBudget::new(1000);
        let buffered = Arc::new(AtomicU64::new(0));
        let mut first = Held::new(budget.clone(), member.clone(), buffered.clone());
        first.take(80).await;
        assert_eq!(buffered.load(Ordering::Relaxed), 80);
        let mut second = Held::new(budget.clone(), member, buffered.clone());
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.take(30)).await;
        assert!(waiting.is_err(), "only 20 bytes were free");
        drop(first);
        assert_eq!(buffered.load(Ordering::Relaxed), 0);
        tokio::time::timeout(Duration::from_secs(5), second.take(30))
            .await
            .expect("the bytes came back");
        drop(second);
        assert_eq!(buffered.load(Ordering::Relaxed), 0);
        assert_eq!(budget.available(), 100);
    }
}
