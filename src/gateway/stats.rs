//! The answer to [`Command::Stats`](super::Command::Stats): the router's counters,
//! per shard, as plain numbers a client can diff between two snapshots.
//!
//! ```text
//! {"Stats": {"shards": [{"shard": 0, "delivered_direct": 120, ..., "requests": 7,
//!                        "request_errors": 1, "latency_p50_ns": 61440, "latency_p99_ns": 249856,
//!                        "latency_buckets": [[90, 3], [101, 4]]}, ...],
//!            "channels": {"open": 1, "opened": 2, "rejected": 0, "messages": 9}}}
//! ```
//!
//! Request counts and latencies are kept only by a router built with the
//! feature `metrics` (zero and absent otherwise). `latency_buckets` are the
//! non-empty buckets of the shard's latency histogram as `[bucket, count]` pairs
//! (the buckets of [`LatencySnapshot`]); the quantiles are over every request
//! since the router started, and a client subtracts two snapshots
//! ([`ShardStats::latency`], [`LatencySnapshot::since`]) for an interval's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::latency::{LatencySnapshot, RequestOutcome};
use crate::metrics::{RouterMetrics, ShardMetrics};

/// Every shard's counters and the channel table's, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsReport {
    /// One entry per shard, by index.
    pub shards: Vec<ShardStats>,
    /// The channel table.
    pub channels: ChannelStats,
}

/// One shard's counters (see [`ShardMetrics`] for what each counts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// Messages put straight into a mailbox by their sender.
    pub delivered_direct: u64,
    /// Messages delivered from the overflow queues.
    pub delivered_overflow: u64,
    /// Sends refused at the overflow bound.
    pub rejected: u64,
    /// One-way messages that could not be delivered.
    pub dead_letters: u64,
    /// Messages parked right now.
    pub overflow_depth: u64,
    /// Actors and external endpoints registered right now.
    pub registered_actors: u64,
    /// `true` once the shard has failed.
    pub failed: bool,
    /// Microseconds the shard thread spent working.
    #[serde(default)]
    pub busy_us: u64,
    /// Requests resolved, whatever their outcome.
    #[serde(default)]
    pub requests: u64,
    /// Requests resolved with an error (timeouts included).
    #[serde(default)]
    pub request_errors: u64,
    /// Median request latency since the start, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_ns: Option<u64>,
    /// 99th-percentile request latency since the start, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ns: Option<u64>,
    /// The latency histogram's non-empty buckets, `[bucket, count]`.
    #[serde(default)]
    pub latency_buckets: Vec<(usize, u64)>,
}

/// The channel table's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Channels in the table right now.
    pub open: u64,
    /// Channels accepted since the start.
    pub opened: u64,
    /// Channel opens rejected.
    pub rejected: u64,
    /// Channel messages accepted for delivery.
    pub messages: u64,
}

impl ShardStats {
    /// The shard's latency histogram.
    #[must_use]
    pub fn latency(&self) -> LatencySnapshot {
        LatencySnapshot::from_sparse(self.latency_buckets.iter().copied())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl From<&ShardMetrics> for ShardStats {
    fn from(s: &ShardMetrics) -> Self {
        let latency = &s.requests.latency;
        let requests = s.requests.total();
        Self {
            shard: s.shard,
            delivered_direct: s.delivered_direct,
            delivered_overflow: s.delivered_overflow,
            rejected: s.rejected,
            dead_letters: s.dead_letters,
            overflow_depth: s.overflow_depth as u64,
            registered_actors: s.registered_actors as u64,
            failed: s.failed,
            busy_us: u64::try_from(s.busy.as_micros()).unwrap_or(u64::MAX),
            requests,
            request_errors: requests - s.requests.count(RequestOutcome::Ok),
            latency_p50_ns: latency.quantile(0.5).map(nanos),
            latency_p99_ns: latency.quantile(0.99).map(nanos),
            latency_buckets: latency.sparse().collect(),
        }
    }
}

impl StatsReport {
    /// The report of a metrics snapshot.
    #[must_use]
    pub fn new(metrics: &RouterMetrics) -> Self {
        let c = &metrics.channels;
        Self {
            shards: metrics.shards.iter().map(ShardStats::from).collect(),
            channels: ChannelStats {
                open: c.channels as u64,
                opened: c.opened,
                rejected: c.rejected,
                messages: c.messages,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::gateway::{decode_client_frame, Command, Response, Session, SessionConfig};
    use crate::router::Router;

    #[test]
    fn stats_are_a_command_and_round_trip_as_json() {
        let frame = decode_client_frame(br#"{"request_id": 9, "command": "Stats"}"#).unwrap();
        assert_eq!(frame.command, Command::Stats);

        let router = Router::builder().shards(2).build().unwrap();
        let (tx, _mailbox) = router.mailbox();
        let id = crate::ids::ActorId::new();
        router.register(id, tx).unwrap();
        router.try_send(id, b"x".to_vec()).unwrap();
        let session = Session::attach(&router, SessionConfig::default()).unwrap();
        let Some(Response::Stats(report)) = session.execute(Command::Stats).take_ready() else {
            panic!("stats are answered at once")
        };
        assert_eq!(report.shards.len(), 2);
        let direct: u64 = report.shards.iter().map(|s| s.delivered_direct).sum();
        let actors: u64 = report.shards.iter().map(|s| s.registered_actors).sum();
        assert_eq!((direct, actors), (1, 2), "one send; the actor and the session's endpoint");

        let json = serde_json::to_string(&Response::Stats(report.clone())).unwrap();
        assert!(json.starts_with(r#"{"Stats":{"shards":[{"shard":0,"#), "{json}");
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), Response::Stats(report));
        router.shutdown();
    }
}
