//! Request latencies and outcomes, counted per shard: a log-linear histogram of
//! atomic buckets (the scheme of HdrHistogram, cut down to what a live view and
//! an exporter need) and one counter per outcome.
//!
//! A requester records its request here once it resolves (feature `metrics`):
//! two relaxed increments, no lock, no allocation. Readers take a
//! [`LatencySnapshot`], which can be subtracted from a later one to see only what
//! happened in between, and asked for quantiles.
//!
//! # Buckets
//!
//! Values are nanoseconds. Below 2^[`SUB_BITS`] each value has its own bucket;
//! above, every power of two is split into 2^`SUB_BITS` equal buckets, so a
//! bucket's width is at most 1/8 of its lower bound and a quantile read as the
//! bucket's midpoint is within 6.25 % of the true value. Values from 2^40 ns
//! (about 18 minutes) up share the last bucket.

use std::fmt;
use std::time::Duration;

use crate::error::RequestError;
#[cfg(feature = "metrics")]
use crate::sync::Arc;
use crate::sync::{AtomicU64, Ordering};

/// Sub-buckets per power of two, as a power of two.
pub const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values at or above `2^MAX_BITS` ns fall in the last bucket.
const MAX_BITS: u32 = 40;
/// The number of buckets.
pub const BUCKETS: usize = (MAX_BITS - SUB_BITS + 1) as usize * SUB;

/// The bucket of a value in nanoseconds.
#[must_use]
pub fn bucket_of(nanos: u64) -> usize {
    let nanos = nanos.min((1 << MAX_BITS) - 1);
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let msb = 63 - nanos.leading_zeros();
    let sub = (nanos >> (msb - SUB_BITS)) as usize & (SUB - 1);
    (msb - SUB_BITS + 1) as usize * SUB + sub
}

/// The values of bucket `index`, in nanoseconds: `(lowest, highest)`, both
/// included. `None` past the last bucket.
#[must_use]
pub fn bucket_bounds(index: usize) -> Option<(u64, u64)> {
    if index >= BUCKETS {
        return None;
    }
    if index < SUB {
        return Some((index as u64, index as u64));
    }
    let shift = (index / SUB) as u32 - 1;
    let low = ((SUB + index % SUB) as u64) << shift;
    Some((low, low + (1 << shift) - 1))
}

/// How a request ended, as counted: the reply, or one of the errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// The actor replied.
    Ok,
    /// [`RequestError::Timeout`].
    Timeout,
    /// [`RequestError::ActorNotFound`].
    ActorNotFound,
    /// [`RequestError::NoReply`].
    NoReply,
    /// [`RequestError::MailboxFull`].
    MailboxFull,
    /// [`RequestError::MailboxClosed`].
    MailboxClosed,
    /// [`RequestError::ShardFull`].
    ShardFull,
    /// [`RequestError::ShardFailed`].
    ShardFailed,
    /// [`RequestError::Shutdown`].
    Shutdown,
}

impl RequestOutcome {
    /// Every outcome, in the order of [`RequestCounts::by_outcome`].
    pub const ALL: [Self; 9] = [
        Self::Ok,
        Self::Timeout,
        Self::ActorNotFound,
        Self::NoReply,
        Self::MailboxFull,
        Self::MailboxClosed,
        Self::ShardFull,
        Self::ShardFailed,
        Self::Shutdown,
    ];

    /// The outcome of a request that resolved with `error` (`None`: the reply).
    #[must_use]
    pub fn of(error: Option<RequestError>) -> Self {
        match error {
            None => Self::Ok,
            Some(RequestError::Timeout) => Self::Timeout,
            Some(RequestError::ActorNotFound) => Self::ActorNotFound,
            Some(RequestError::NoReply) => Self::NoReply,
            Some(RequestError::MailboxFull) => Self::MailboxFull,
            Some(RequestError::MailboxClosed) => Self::MailboxClosed,
            Some(RequestError::ShardFull) => Self::ShardFull,
            Some(RequestError::ShardFailed) => Self::ShardFailed,
            Some(RequestError::Shutdown) => Self::Shutdown,
        }
    }

    /// Its label value: `ok`, `timeout`, `actor_not_found`, ...
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::ActorNotFound => "actor_not_found",
            Self::NoReply => "no_reply",
            Self::MailboxFull => "mailbox_full",
            Self::MailboxClosed => "mailbox_closed",
            Self::ShardFull => "shard_full",
            Self::ShardFailed => "shard_failed",
            Self::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

impl fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One shard's live request counts: resolved requests by outcome, and the
/// latency histogram of all of them.
pub(crate) struct RequestStats {
    outcomes: [AtomicU64; RequestOutcome::ALL.len()],
    buckets: Box<[AtomicU64]>,
}

impl Default for RequestStats {
    /// Without the feature `metrics` nothing is recorded, so the buckets are not
    /// allocated (which also keeps loom models small).
    fn default() -> Self {
        Self::new(cfg!(feature = "metrics"))
    }
}

impl RequestStats {
    fn new(with_buckets: bool) -> Self {
        let buckets = if with_buckets { BUCKETS } else { 0 };
        Self {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one resolved request that took `elapsed`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn record(&self, outcome: RequestOutcome, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(nanos)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            by_outcome: std::array::from_fn(|i| self.outcomes[i].load(Ordering::Relaxed)),
            latency: LatencySnapshot::from_sparse(
                self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).enumerate(),
            ),
        }
    }
}

/// One request being timed: made when it is sent, finished when its requester
/// sees the outcome (feature `metrics`).
#[cfg(feature = "metrics")]
pub(crate) struct Probe {
    stats: Arc<RequestStats>,
    started: std::time::Instant,
}

#[cfg(feature = "metrics")]
impl Probe {
    pub(crate) fn start(stats: &Arc<RequestStats>) -> Self {
        Self { stats: Arc::clone(stats), started: crate::sync::time::now() }
    }

    /// Counts the request, resolved with `error` (`None`: the reply).
    pub(crate) fn finish(self, error: Option<RequestError>) {
        let elapsed = crate::sync::time::now().saturating_duration_since(self.started);
        self.stats.record(RequestOutcome::of(error), elapsed);
    }
}

/// Requests resolved so far on one shard (counted with the feature `metrics`;
/// all zero without it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Resolved requests, one count per [`RequestOutcome::ALL`] entry.
    pub by_outcome: [u64; RequestOutcome::ALL.len()],
    /// How long they took, from the call to the outcome, in the requester.
    pub latency: LatencySnapshot,
}

impl Default for RequestCounts {
    fn default() -> Self {
        Self { by_outcome: [0; RequestOutcome::ALL.len()], latency: LatencySnapshot::default() }
    }
}

impl RequestCounts {
    /// Requests resolved with `outcome`.
    #[must_use]
    pub fn count(&self, outcome: RequestOutcome) -> u64 {
        self.by_outcome[outcome.index()]
    }

    /// Requests resolved, whatever the outcome.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_outcome.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.by_outcome.iter_mut().zip(other.by_outcome) {
            *a += b;
        }
        self.latency.add(&other.latency);
    }
}

/// A latency histogram's counts (see the module docs for the buckets).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Counts by bucket, without trailing empty buckets (so that an empty
    /// histogram allocates nothing and equal counts compare equal).
    buckets: Vec<u64>,
}

impl fmt::Debug for LatencySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencySnapshot")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

impl LatencySnapshot {
    /// A snapshot from `(bucket, count)` pairs (buckets past the last, and
    /// repeated ones, add up in the last and the same bucket).
    #[must_use]
    pub fn from_sparse(pairs: impl IntoIterator<Item = (usize, u64)>) -> Self {
        let mut buckets = Vec::new();
        for (index, count) in pairs.into_iter().filter(|&(_, count)| count > 0) {
            let index = index.min(BUCKETS - 1);
            if buckets.len() <= index {
                buckets.resize(index + 1, 0);
            }
            buckets[index] = u64::saturating_add(buckets[index], count);
        }
        Self { buckets }
    }

    /// The non-empty buckets as `(bucket, count)` pairs, in bucket order.
    pub fn sparse(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buckets.iter().copied().enumerate().filter(|&(_, count)| count > 0)
    }

    /// Samples counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q`-quantile (`0.0..=1.0`), as the midpoint of the bucket it falls
    /// in; `None` when nothing was counted.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the sample sought, 1-based: at least the first, at most the last.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (index, n) in self.sparse() {
            seen += n;
            if seen >= rank {
                let (low, high) = bucket_bounds(index)?;
                return Some(Duration::from_nanos(low + (high - low) / 2));
            }
        }
        None
    }

    /// What was counted after `earlier` (a snapshot of the same histogram);
    /// buckets that went down count as empty.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let then = |i| earlier.buckets.get(i).copied().unwrap_or(0);
        Self::from_sparse(self.sparse().map(|(i, now)| (i, now.saturating_sub(then(i)))))
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for nanos in (0..5000).chain([1 << 20, (1 << 20) + 1, (1 << 39) + 5, 1 << 40, u64::MAX]) {
            let index = bucket_of(nanos);
            assert!(index >= last, "bucket of {nanos} went down");
            last = index;
            let (low, high) = bucket_bounds(index).unwrap();
            if nanos < 1 << MAX_BITS {
                assert!(low <= nanos && nanos <= high, "{nanos} outside bucket {index}: {low}..={high}");
                assert!((high - low) * 8 <= low.max(8), "bucket {index} too wide: {low}..={high}");
            } else {
                assert_eq!(index, BUCKETS - 1);
            }
        }
        assert_eq!(bucket_bounds(BUCKETS), None);
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let stats = RequestStats::new(true);
        for micros in 1..=1000 {
            stats.record(RequestOutcome::Ok, Duration::from_micros(micros));
        }
        stats.record(RequestOutcome::Timeout, Duration::from_secs(1));
        let counts = stats.snapshot();
        assert_eq!((counts.count(RequestOutcome::Ok), counts.count(RequestOutcome::Timeout)), (1000, 1));
        assert_eq!(counts.total(), 1001);
        let snapshot = &counts.latency;
        assert_eq!(snapshot.count(), 1001);
        for (q, expected) in [(0.5, 501.0), (0.99, 991.0), (0.0, 1.0)] {
            let got = snapshot.quantile(q).unwrap().as_secs_f64() * 1e6;
            assert!((got - expected).abs() <= expected * 0.07, "q{q}: {got} µs, expected ~{expected}");
        }
        assert!(snapshot.quantile(1.0).unwrap() >= Duration::from_millis(900));

        let later = {
            stats.record(RequestOutcome::Ok, Duration::from_millis(5));
            stats.snapshot().latency
        };
        let delta = later.since(snapshot);
        assert_eq!(delta.count(), 1);
        let p50 = delta.quantile(0.5).unwrap();
        assert!(p50 > Duration::from_micros(4700) && p50 < Duration::from_micros(5300), "{p50:?}");
        assert_eq!(LatencySnapshot::from_sparse(later.sparse()), later);
        assert_eq!(LatencySnapshot::default().quantile(0.5), None);
        assert_eq!(later.since(&later), LatencySnapshot::default(), "nothing new: empty");
        let mut sum = LatencySnapshot::default();
        sum.add(&later);
        assert_eq!(sum, later);
    }
}
