//! Cross-node traffic through our router: two nodes of one cluster in one
//! process, each its own [`Router`] with its own NATS connection
//! ([`Cluster::join`]), on one tokio runtime.
//!
//! * **One-way**: producer tasks on node A send 8-byte payloads with
//!   `send_async` (which waits for room, as a route's mailbox fills) to
//!   [`SINKS`] actors on node B, round-robin; the actors are tasks that count
//!   what they take. A run ends when every accepted message has been counted (or
//!   nothing arrived for [`STALL`](crate::nats_raw::STALL): the rest are reported lost).
//! * **Request/reply**: one task on node A sends `request_async` to an echo actor
//!   on node B, one at a time; each round trip is timed.
//!
//! The limit these are compared with is [`crate::nats_raw`]: the same messages
//! over raw `async-nats` connections to the same server.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sharded_router::cluster::{Cluster, ClusterConfig};
use sharded_router::{ActorId, ActorMessage, Mailbox, Router};
use tokio::runtime::Runtime;
use tokio::task::yield_now;

use crate::nats_raw::{wait_for_count, OneWay, PAYLOAD};
use crate::YIELD_EVERY;

/// Actors on node B that the one-way producers send to.
pub const SINKS: usize = 8;
/// The longest a request may wait (never reached in a healthy run).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long node A may take to learn of node B's actors.
const DIRECTORY_WAIT: Duration = Duration::from_secs(15);

/// Nodes `a` and `b` of one cluster, with node B's actors running.
pub struct TwoNodes {
    a: Router,
    cluster_a: Cluster,
    b: Router,
    cluster_b: Cluster,
    sinks: Vec<ActorId>,
    echo: ActorId,
    counted: Arc<AtomicU64>,
}

impl TwoNodes {
    /// Joins two routers to the cluster `cluster` over `url`, starts node B's
    /// actors and waits until node A's directory knows them all.
    pub fn join(runtime: &Runtime, url: &str, cluster: &str) -> Result<Self, Box<dyn Error>> {
        runtime.block_on(async {
            let a = Router::builder().build()?;
            let b = Router::builder().build()?;
            let cluster_a = Cluster::join(a.clone(), ClusterConfig::new(cluster, "a", url)).await?;
            let cluster_b = Cluster::join(b.clone(), ClusterConfig::new(cluster, "b", url)).await?;
            let counted = Arc::new(AtomicU64::new(0));
            let mut sinks = Vec::with_capacity(SINKS);
            for _ in 0..SINKS {
                let (tx, mailbox) = b.mailbox();
                let id = ActorId::new();
                b.register(id, tx)?;
                tokio::spawn(sink(mailbox, Arc::clone(&counted)));
                sinks.push(id);
            }
            let (tx, mailbox) = b.mailbox();
            let echo = ActorId::new();
            b.register(echo, tx)?;
            tokio::spawn(echo_actor(mailbox));
            let deadline = Instant::now() + DIRECTORY_WAIT;
            while !sinks.iter().chain([&echo]).all(|&id| cluster_a.locate(id).as_deref() == Some("b")) {
                if Instant::now() > deadline {
                    return Err("node a did not learn of node b's actors in time".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Self { a, cluster_a, b, cluster_b, sinks, echo, counted })
        })
    }

    /// `total` messages from `producers` tasks on node A to the actors on node B.
    pub fn one_way(&self, runtime: &Runtime, producers: usize, total: u64) -> OneWay {
        let producers = producers.max(1) as u64;
        self.counted.store(0, Ordering::Release);
        runtime.block_on(async {
            let refused = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            for p in 0..producers {
                let share = total / producers + u64::from(p < total % producers);
                let (router, sinks, refused) = (self.a.clone(), self.sinks.clone(), Arc::clone(&refused));
                tokio::spawn(async move {
                    for i in 0..share {
                        let target = sinks[((i + p) % sinks.len() as u64) as usize];
                        if router.send_async(target, PAYLOAD.to_vec()).await.is_err() {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        if i % YIELD_EVERY == YIELD_EVERY - 1 {
                            yield_now().await;
                        }
                    }
                });
            }
            let elapsed =
                wait_for_count(&self.counted, || total - refused.load(Ordering::Relaxed), start).await;
            OneWay {
                elapsed,
                delivered: self.counted.load(Ordering::Acquire),
                refused: refused.load(Ordering::Relaxed),
            }
        })
    }

    /// `requests` round trips from node A to the echo actor on node B, one at a
    /// time; the time of each.
    pub fn round_trips(&self, runtime: &Runtime, requests: u64) -> Result<Vec<Duration>, Box<dyn Error>> {
        runtime.block_on(async {
            let mut times = Vec::with_capacity(requests as usize);
            for _ in 0..requests {
                let start = Instant::now();
                let reply = self.a.request_async(self.echo, PAYLOAD.to_vec(), REQUEST_TIMEOUT).await?;
                times.push(start.elapsed());
                if reply != PAYLOAD {
                    return Err("the echo on node b answered with another payload".into());
                }
            }
            Ok(times)
        })
    }

    /// Both nodes leave the cluster and their routers shut down.
    pub fn leave(self, runtime: &Runtime) {
        runtime.block_on(async {
            self.cluster_a.leave().await;
            self.cluster_b.leave().await;
        });
        self.a.shutdown();
        self.b.shutdown();
    }
}

/// Counts every one-way message it takes.
async fn sink(mailbox: Mailbox, counted: Arc<AtomicU64>) {
    while let Ok(msg) = mailbox.recv_async().await {
        let mut taken = u64::from(matches!(msg, ActorMessage::Send { .. }));
        while let Ok(msg) = mailbox.try_recv() {
            taken += u64::from(matches!(msg, ActorMessage::Send { .. }));
        }
        counted.fetch_add(taken, Ordering::Release);
    }
}

/// Answers every request with its payload.
async fn echo_actor(mailbox: Mailbox) {
    while let Ok(msg) = mailbox.recv_async().await {
        if let ActorMessage::Request { data, reply } = msg {
            let _ = reply.reply(data);
        }
    }
}
