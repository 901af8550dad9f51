//! The limit for cross-node traffic: raw `async-nats` on the same server, with no
//! router at either end.
//!
//! * **One-way**: publisher tasks on one connection publish 8-byte payloads to one
//!   subject; one subscription on a second connection counts them. A run ends when
//!   every message has been counted (or nothing arrived for [`STALL`]: the rest are
//!   reported lost).
//! * **Request/reply**: one task on the first connection sends requests one at a
//!   time (`Client::request`); a responder on the second connection publishes each
//!   payload back to the request's reply subject. Each round trip is timed.
//!
//! Both connections are made once per fixture, like a cluster node's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::runtime::Runtime;

/// A run in which no message arrived for this long has lost the rest.
pub const STALL: Duration = Duration::from_secs(5);
/// The payload of every message: 8 bytes, as in the other workloads.
pub const PAYLOAD: [u8; 8] = *b"payload!";
/// Room for every message of a run in the counting subscription, so that the
/// client never drops one as a slow consumer.
const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// How one one-way run went.
#[derive(Clone, Copy, Debug)]
pub struct OneWay {
    /// From the first send to the last message counted (or to the stall).
    pub elapsed: Duration,
    /// Messages counted at the receiving end.
    pub delivered: u64,
    /// Messages whose send failed (refused at once).
    pub refused: u64,
}

impl OneWay {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Waits until `count` reaches `target()` (the messages sent minus those refused
/// so far), or until it has not moved for [`STALL`]; returns the time since
/// `start` at which it stopped.
pub async fn wait_for_count(count: &AtomicU64, target: impl Fn() -> u64, start: Instant) -> Duration {
    let mut last = count.load(Ordering::Acquire);
    let mut moved = Instant::now();
    loop {
        let now = count.load(Ordering::Acquire);
        if now >= target() {
            return start.elapsed();
        }
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() > STALL {
            return start.elapsed().saturating_sub(STALL);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Two raw connections to one server.
pub struct RawNats {
    sender: Client,
    receiver: Client,
    runs: AtomicU64,
}

impl RawNats {
    /// Connects twice to `url` and starts the echo responder on the second
    /// connection.
    pub fn connect(runtime: &Runtime, url: &str) -> Result<Self, async_nats::Error> {
        runtime.block_on(async {
            let sender = async_nats::connect(url).await?;
            let receiver =
                ConnectOptions::new().subscription_capacity(SUBSCRIPTION_CAPACITY).connect(url).await?;
            let mut echo = receiver.subscribe("bench.raw.echo").await?;
            let responder = receiver.clone();
            tokio::spawn(async move {
                while let Some(request) = echo.next().await {
                    if let Some(reply) = request.reply {
                        if responder.publish(reply, request.payload).await.is_err() {
                            return;
                        }
                    }
                }
            });
            receiver.flush().await?;
            Ok(Self { sender, receiver, runs: AtomicU64::new(0) })
        })
    }

    /// `total` messages from `publishers` tasks on one connection to one
    /// subscription on the other.
    pub fn one_way(
        &self,
        runtime: &Runtime,
        publishers: usize,
        total: u64,
    ) -> Result<OneWay, async_nats::Error> {
        let publishers = publishers.max(1) as u64;
        let subject = format!("bench.raw.one-way.{}", self.runs.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(async {
            let mut subscription = self.receiver.subscribe(subject.clone()).await?;
            self.receiver.flush().await?;
            let count = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&count);
            let counter = tokio::spawn(async move {
                while subscription.next().await.is_some() {
                    if counted.fetch_add(1, Ordering::Release) + 1 == total {
                        break;
                    }
                }
            });
            let refused = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            for p in 0..publishers {
                let share = total / publishers + u64::from(p < total % publishers);
                let (client, subject, refused) = (self.sender.clone(), subject.clone(), Arc::clone(&refused));
                tokio::spawn(async move {
                    for _ in 0..share {
                        if client.publish(subject.clone(), Bytes::from_static(&PAYLOAD)).await.is_err() {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            let elapsed = wait_for_count(&count, || total - refused.load(Ordering::Relaxed), start).await;
            counter.abort();
            Ok(OneWay {
                elapsed,
                delivered: count.load(Ordering::Acquire),
                refused: refused.load(Ordering::Relaxed),
            })
        })
    }

    /// `requests` request/reply round trips, one at a time; the time of each.
    pub fn round_trips(&self, runtime: &Runtime, requests: u64) -> Result<Vec<Duration>, async_nats::Error> {
        runtime.block_on(async {
            let mut times = Vec::with_capacity(requests as usize);
            for _ in 0..requests {
                let start = Instant::now();
                let reply = self.sender.request("bench.raw.echo", Bytes::from_static(&PAYLOAD)).await?;
                times.push(start.elapsed());
                if reply.payload.as_ref() != PAYLOAD {
                    return Err("the raw echo answered with another payload".into());
                }
            }
            Ok(times)
        })
    }
}
