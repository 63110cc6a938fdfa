//! The limits a connection and a member (a certificate, all its connections) are held to: byte
//! budgets for unfinished messages, and token buckets on messages/s and bytes/s. The reader
//! ([`super::reader`]) takes from them; the member table ([`super::member`]) keeps one set per
//! member.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::TransportConfig;

/// A byte budget: how many bytes of unfinished messages may be held at once.
#[derive(Clone, Debug)]
pub(super) struct ByteBudget {
    permits: Arc<Semaphore>,
}

impl ByteBudget {
    /// A budget of `bytes` bytes (capped at what a semaphore can count).
    pub(super) fn new(bytes: u64) -> Self {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Waits until `n` bytes (at most 64 KiB, one chunk of a stream) are free and takes them.
    pub(super) async fn take(&self, n: usize) {
        // `n` is at most CHUNK_BYTES, so it fits a u32. The semaphore is never closed, so
        // acquiring only fails if it were; then the bytes are simply not counted.
        if let Ok(permit) = self.permits.acquire_many(n as u32).await {
            permit.forget();
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Gives `n` bytes back.
    pub(super) fn give_back(&self, n: usize) {
        if n > 0 {
            self.permits.add_permits(n);
        }
    }
}

/// Token buckets of one member (all its connections together): messages/s and bytes/s, each
/// with one second of burst.
#[derive(Debug)]
pub(super) struct RateLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl RateLimiter {
    /// Full buckets of `config`'s `rate_limit_messages` and `rate_limit_bytes` at `now`.
    pub(super) fn new(config: &TransportConfig, now: Instant) -> Self {
        Self {
            messages: TokenBucket::new(f64::from(config.rate_limit_messages), now),
            bytes: TokenBucket::new(config.rate_limit_bytes as f64, now),
        }
    }

    /// True if one more message is within the rates at `now` (its bytes are taken later, by
    /// [`RateLimiter::admit_bytes`]): a message token is taken, and the byte bucket must not
    /// be empty.
    pub(super) fn admit_message(&mut self, now: Instant) -> bool {
        self.messages.take(now, 1.0) && self.bytes.take(now, 0.0)
    }

    /// True if a message's `len` bytes are within the byte rate at `now` (taken if so).
    pub(super) fn admit_bytes(&mut self, now: Instant, len: usize) -> bool {
        self.bytes.take(now, len as f64)
    }

    /// True if both buckets are full at `now`, as new ones would be.
    pub(super) fn is_full(&self, now: Instant) -> bool {
        self.messages.is_full(now) && self.bytes.is_full(now)
    }
}

/// A token bucket refilled at `rate` per second up to `rate` tokens (one second of burst).
/// [`TokenBucket::take`] succeeds while the bucket is not empty and may leave it in debt, so
/// a single large message always gets through a bucket smaller than itself.
#[derive(Debug)]
pub(super) struct TokenBucket {
    /// Tokens per second; 0 means no limit.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` tokens at `now` if the bucket is not empty; false if it is (nothing taken).
    pub(super) fn take(&mut self, now: Instant, n: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens <= 0.0 {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// True if the bucket holds its full `rate` tokens at `now` (always without a limit).
    pub(super) fn is_full(&self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_one_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, t0);
        assert_eq!((0..20).filter(|_| bucket.take(t0, 1.0)).count(), 10);
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| bucket.take(later, 1.0)).count(), 5);
        // Debt: one large take passes while the bucket is not empty, then nothing for a while.
        let mut bytes = TokenBucket::new(100.0, t0);
        assert!(bytes.take(t0, 1000.0));
        assert!(!bytes.take(t0 + Duration::from_secs(5), 1.0));
        assert!(bytes.take(t0 + Duration::from_secs(11), 1.0));
        let mut off = TokenBucket::new(0.0, t0);
        assert!((0..1000).all(|_| off.take(t0, 1e9)));
        // Zero tokens only asks whether the bucket is empty.
        let mut empty = TokenBucket::new(100.0, t0);
        assert!(empty.take(t0, 100.0));
        assert!(!empty.take(t0, 0.0));
    }
}
