//! Completion and latency bookkeeping shared by every implementation's actors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Counts messages settled (taken by a counted actor, or refused); the driver waits
/// until a goal is reached.
#[derive(Default)]
pub(crate) struct Sink {
    settled: AtomicU64,
    goal: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl Sink {
    pub(crate) fn arm(&self, goal: u64) {
        self.settled.store(0, Ordering::SeqCst);
        self.goal.store(goal, Ordering::SeqCst);
    }

    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.settled.fetch_add(n, Ordering::AcqRel);
        let goal = self.goal.load(Ordering::Acquire);
        if before < goal && before + n >= goal {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.reached.notify_all();
        }
    }

    /// Waits for the goal; `false` at the timeout.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.settled.load(Ordering::Acquire) < self.goal.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self.reached.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// Nanoseconds since the first call in this process: the timestamp a latency run's
/// producers put in each payload and its actors subtract from their own reading.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A histogram of latencies in nanoseconds, from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// An actor's tally, handed to the sink whenever its mailbox runs empty. In a
/// latency run it also records each message's send → receive time in the actor's
/// own histogram (a lock nobody else takes while a run is going: merging
/// histograms walks every bucket, far too slow to do per flush).
pub(crate) struct Tally {
    pub(crate) sink: Option<Arc<Sink>>,
    pub(crate) seen: u64,
    pub(crate) latency: Option<Arc<Mutex<Histogram<u64>>>>,
}

impl Tally {
    pub(crate) fn one(&mut self, data: &[u8]) {
        std::hint::black_box(data);
        self.seen += 1;
        if let Some(latency) = &self.latency {
            if let Ok(stamp) = <[u8; 8]>::try_from(data) {
                let took = now_ns().saturating_sub(u64::from_le_bytes(stamp)).max(1);
                latency.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(took);
            }
        }
    }

    pub(crate) fn flush(&mut self) {
        if let Some(sink) = &self.sink {
            sink.add(std::mem::take(&mut self.seen));
        }
    }
}

/// The percentiles a latency table shows, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}
