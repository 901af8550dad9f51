//! The server's per-client limits that need state: the command rate (a token
//! bucket per connection) and the connections per peer address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A command rate limit: `per_second` commands a second on average, and bursts
/// of up to `burst` commands at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate, in commands per second (at least 1).
    pub per_second: u32,
    /// The most commands accepted at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` commands a second, in bursts of up to `burst`; both at least 1.
    #[must_use]
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: per_second.max(1), burst: burst.max(1) }
    }
}

/// A token bucket: holds up to `burst` tokens, refilled continuously at
/// `per_second`; each command takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        let limit = RateLimit::new(limit.per_second, limit.burst);
        Self { limit, tokens: f64::from(limit.burst), refilled: now }
    }

    /// Takes a token if one is there.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let refill = elapsed.as_secs_f64() * f64::from(self.limit.per_second);
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for error messages.
    pub(crate) fn retry_after(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / f64::from(self.limit.per_second))
    }
}

/// Open connections per peer address.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerTable {
    /// Counts one more connection from `ip`, unless it already has `max`.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerGuard { table: Arc::clone(self), ip })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(&ip).copied().unwrap_or(0)
    }
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct PeerGuard {
    table: Arc<PeerTable>,
    ip: IpAddr,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit::new(10, 3), start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.retry_after() > Duration::ZERO);
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(110)));
        assert!(!bucket.try_take(start + Duration::from_millis(120)));
        // A long quiet spell refills to the burst, no further.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(RateLimit::new(1, 1), start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start - Duration::from_millis(500)));
    }

    #[test]
    fn peers_are_counted_and_released() {
        let table = Arc::new(PeerTable::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = table.admit(ip, 2).unwrap();
        let _b = table.admit(ip, 2).unwrap();
        assert!(table.admit(ip, 2).is_none());
        let _c = table.admit(other, 2).unwrap();
        drop(a);
        assert_eq!(table.count(ip), 1);
        assert!(table.admit(ip, 2).is_some());
    }
}
