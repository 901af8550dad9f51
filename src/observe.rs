//! The router's counters in the [`metrics`](https://docs.rs/metrics) crate's terms
//! (feature `metrics`): whatever recorder the program installed (a Prometheus
//! exporter, statsd, a test's debugging recorder) sees them.
//!
//! Nothing here runs on the message path. The router keeps counting as it
//! always does (striped and per-shard atomics, and with this feature two more
//! relaxed increments per *request*, as it resolves); a [`MetricsPublisher`]
//! reads those counters and hands them to the recorder — absolute counter
//! values, gauges, and the request latencies recorded since its last look — when
//! asked ([`MetricsPublisher::publish`]) or on its own thread
//! ([`MetricsPublisher::spawn`]).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `sharded_router_delivered_direct_total` | counter | `shard` | messages put straight into a mailbox by their sender |
//! | `sharded_router_delivered_overflow_total` | counter | `shard` | messages delivered by the shard from its overflow queue |
//! | `sharded_router_rejected_total` | counter | `shard` | sends refused at the overflow bound (`MailboxFull`, `ShardFull`) |
//! | `sharded_router_dead_letters_total` | counter | `shard`, `reason` | one-way messages that could not be delivered |
//! | `sharded_router_callback_panics_total` | counter | `shard` | panics caught in user callbacks |
//! | `sharded_router_requests_total` | counter | `shard`, `outcome` | requests resolved, as their requesters saw them |
//! | `sharded_router_request_duration_seconds` | histogram | `shard` | call to outcome, in the requester |
//! | `sharded_router_shard_busy_microseconds_total` | counter | `shard` | time the shard thread spent working |
//! | `sharded_router_overflow_depth` | gauge | `shard` | messages parked in the shard's overflow queues |
//! | `sharded_router_registered_actors` | gauge | `shard` | actors and external endpoints registered |
//! | `sharded_router_pending_timers` | gauge | `shard` | request and open deadlines the shard holds |
//! | `sharded_router_shard_failed` | gauge | `shard` | 1 once the shard has failed |
//! | `sharded_router_channels_open` | gauge | | channels in the table (open or opening) |
//! | `sharded_router_channels_opened_total` | counter | | channels accepted |
//! | `sharded_router_channels_rejected_total` | counter | | channel opens rejected |
//! | `sharded_router_channel_messages_total` | counter | | channel messages accepted for delivery |
//!
//! Request latencies reach the recorder as the midpoints of the router's own
//! histogram buckets (within 6.25 % of the measured value, see
//! [`LatencySnapshot`]), as many samples as requests resolved. A request whose
//! [`ResponseFuture`](crate::ResponseFuture) is dropped before its outcome is
//! not counted.
//!
//! The labels do not tell routers apart: a program with several routers should
//! publish one of them, or install a recorder per router with
//! [`metrics::with_local_recorder`] around [`MetricsPublisher::publish`].
//!
//! ```
//! use sharded_router::observe::MetricsPublisher;
//! use sharded_router::Router;
//!
//! let router = Router::builder().shards(2).build().unwrap();
//! // Once, by hand (e.g. right before a scrape) ...
//! let mut publisher = MetricsPublisher::new();
//! publisher.publish(&router);
//! // ... or every second on a thread of its own, until the guard is dropped.
//! let guard = MetricsPublisher::spawn(&router, std::time::Duration::from_secs(1)).unwrap();
//! drop(guard);
//! router.shutdown();
//! ```

use std::fmt;
use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};

use crate::latency::{bucket_bounds, LatencySnapshot, RequestOutcome};
use crate::metrics::DeadLetterReason;
use crate::router::Router;
use crate::sync::Ordering;

/// Reads a router's counters and hands them to the installed `metrics` recorder.
///
/// It remembers the request latencies it has already handed over, so every
/// request is recorded once; use one publisher per router.
#[derive(Default)]
pub struct MetricsPublisher {
    /// Per shard, the latency counts already recorded.
    recorded: Vec<LatencySnapshot>,
    described: bool,
}

impl fmt::Debug for MetricsPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsPublisher").field("shards", &self.recorded.len()).finish_non_exhaustive()
    }
}

impl MetricsPublisher {
    /// A publisher that has published nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `router`'s counters and gauges now, and the request latencies
    /// recorded since the last call.
    pub fn publish(&mut self, router: &Router) {
        if !self.described {
            describe();
            self.described = true;
        }
        let snapshot = router.metrics();
        self.recorded.resize_with(snapshot.shards.len(), LatencySnapshot::default);
        for (s, recorded) in snapshot.shards.iter().zip(&mut self.recorded) {
            let shard = s.shard.to_string();
            let label = || ("shard", shard.clone());
            counter!("sharded_router_delivered_direct_total", &[label()]).absolute(s.delivered_direct);
            counter!("sharded_router_delivered_overflow_total", &[label()]).absolute(s.delivered_overflow);
            counter!("sharded_router_rejected_total", &[label()]).absolute(s.rejected);
            counter!("sharded_router_callback_panics_total", &[label()]).absolute(s.callback_panics);
            let busy = u64::try_from(s.busy.as_micros()).unwrap_or(u64::MAX);
            counter!("sharded_router_shard_busy_microseconds_total", &[label()]).absolute(busy);
            gauge!("sharded_router_overflow_depth", &[label()]).set(s.overflow_depth as f64);
            gauge!("sharded_router_registered_actors", &[label()]).set(s.registered_actors as f64);
            gauge!("sharded_router_pending_timers", &[label()]).set(s.pending_timers as f64);
            gauge!("sharded_router_shard_failed", &[label()]).set(if s.failed { 1.0 } else { 0.0 });

            let counters = &router.inner.shards[s.shard].shared.counters;
            for reason in DeadLetterReason::ALL {
                let n = counters.dead_letters_by_reason[reason.index()].load(Ordering::Relaxed);
                counter!("sharded_router_dead_letters_total", "shard" => shard.clone(), "reason" => reason.label())
                    .absolute(n);
            }
            for outcome in RequestOutcome::ALL {
                counter!("sharded_router_requests_total", "shard" => shard.clone(), "outcome" => outcome.label())
                    .absolute(s.requests.count(outcome));
            }
            let fresh = s.requests.latency.since(recorded);
            if fresh.count() > 0 {
                let latency = histogram!("sharded_router_request_duration_seconds", &[label()]);
                for (bucket, n) in fresh.sparse() {
                    if let Some((low, high)) = bucket_bounds(bucket) {
                        let midpoint = Duration::from_nanos(low + (high - low) / 2);
                        latency.record_many(midpoint.as_secs_f64(), n as usize);
                    }
                }
            }
            recorded.add(&fresh);
        }
        let channels = &snapshot.channels;
        gauge!("sharded_router_channels_open").set(channels.channels as f64);
        counter!("sharded_router_channels_opened_total").absolute(channels.opened);
        counter!("sharded_router_channels_rejected_total").absolute(channels.rejected);
        counter!("sharded_router_channel_messages_total").absolute(channels.messages);
    }

    /// Publishes `router`'s metrics every `period` on a thread of its own (named
    /// `sharded-router-metrics`), starting now, until the returned guard is
    /// dropped or the router shuts down (after one last publication).
    ///
    /// The thread holds a clone of the router: a router that is stopped by
    /// dropping its last clone stops only once the guard is dropped too.
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn spawn(router: &Router, period: Duration) -> io::Result<PublisherGuard> {
        let router = router.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new().name("sharded-router-metrics".into()).spawn(move || {
            let mut publisher = Self::new();
            loop {
                publisher.publish(&router);
                if router.is_shutdown() {
                    return;
                }
                match stopped.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(PublisherGuard { stop: Some(stop), thread: Some(thread) })
    }
}

/// Stops the publishing thread of [`MetricsPublisher::spawn`] when dropped (and
/// waits for it).
#[must_use = "dropping the guard stops the publishing at once"]
pub struct PublisherGuard {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for PublisherGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherGuard").finish_non_exhaustive()
    }
}

impl Drop for PublisherGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Tells the recorder what each metric is (Prometheus' `# HELP` and units).
fn describe() {
    describe_counter!(
        "sharded_router_delivered_direct_total",
        "Messages put straight into an actor's mailbox by their sender"
    );
    describe_counter!(
        "sharded_router_delivered_overflow_total",
        "Messages delivered by the shard from an actor's overflow queue"
    );
    describe_counter!("sharded_router_rejected_total", "Sends refused at the overflow bound");
    describe_counter!("sharded_router_dead_letters_total", "One-way messages that could not be delivered");
    describe_counter!("sharded_router_callback_panics_total", "Panics caught in user callbacks");
    describe_counter!("sharded_router_requests_total", "Requests resolved, by outcome");
    describe_histogram!(
        "sharded_router_request_duration_seconds",
        Unit::Seconds,
        "Request latency, from the call to its outcome, in the requester"
    );
    describe_counter!(
        "sharded_router_shard_busy_microseconds_total",
        Unit::Microseconds,
        "Time the shard thread spent handling commands and timers"
    );
    describe_gauge!("sharded_router_overflow_depth", "Messages parked in the shard's overflow queues");
    describe_gauge!("sharded_router_registered_actors", "Actors and external endpoints registered");
    describe_gauge!("sharded_router_pending_timers", "Request and channel-open deadlines the shard holds");
    describe_gauge!("sharded_router_shard_failed", "1 once the shard has failed");
    describe_gauge!("sharded_router_channels_open", "Channels in the table (open or opening)");
    describe_counter!("sharded_router_channels_opened_total", "Channels accepted");
    describe_counter!("sharded_router_channels_rejected_total", "Channel opens rejected");
    describe_counter!("sharded_router_channel_messages_total", "Channel messages accepted for delivery");
}
