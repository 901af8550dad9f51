//! A running implementation with its actors, and its timed runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sharded_router::{ActorId, OverflowPolicy, Router};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::actors::{flume_actor, ours_actor, tokio_actor};
use crate::anchor::Anchor;
use crate::hand_rolled::HandRolled;
use crate::produce::{Channels, Share, System};
use crate::sink::{histogram, Sink, Tally};
use crate::{Full, Impl, Mode, Run, Spec, MAILBOX_CAPACITY, REQUEST_TIMEOUT, TARGETS_LEN};

/// Producers (or requesters) whose target sequences a fixture makes up front.
const MAX_TASKS: usize = 8;
/// A run that has not finished after this long has lost messages.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A tokio runtime with two workers (the benchmark machine's core count).
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-worker")
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// A cyclic pseudo-random sequence of actor indices (xorshift64*), the same for
/// every implementation.
fn targets(seed: u64, actors: usize) -> Arc<[u32]> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..TARGETS_LEN)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
            ((r * actors as u64) >> 32) as u32
        })
        .collect()
}

/// A running implementation with its actors, ready for timed runs.
pub struct Fixture {
    imp: Impl,
    runtime: Runtime,
    system: Arc<System>,
    sink: Arc<Sink>,
    actors: usize,
    slow: Option<u32>,
    /// Target sequences for the first [`MAX_TASKS`] producers, made once.
    targets: Vec<Arc<[u32]>>,
    /// In a latency fixture: each counted actor's histogram.
    latencies: Vec<Arc<Mutex<Histogram<u64>>>>,
    latency: bool,
}

impl Fixture {
    /// Starts `imp` with the actors of `spec`; nothing here is timed.
    pub fn new(imp: Impl, spec: Spec) -> Self {
        let runtime = runtime();
        let sink = Arc::new(Sink::default());
        let slow = spec.slow_actor.then_some(0u32);
        let mut latencies = Vec::new();
        let mut tally = |index: usize| {
            let counted = Some(index as u32) != slow;
            let latency = (counted && spec.latency).then(|| {
                let shared = Arc::new(Mutex::new(histogram()));
                latencies.push(Arc::clone(&shared));
                shared
            });
            Tally { sink: counted.then(|| Arc::clone(&sink)), seen: 0, latency }
        };
        let is_slow = |index: usize| Some(index as u32) == slow;
        let system = match imp {
            Impl::Ours | Impl::OursTokio | Impl::OursHandle => {
                // ours-tokio: every mailbox the router makes (actors', the channel
                // client's endpoint, churn's) is tokio-backed.
                let router = Router::builder()
                    .mailbox_capacity(spec.capacity)
                    .overflow(OverflowPolicy::Park { max_per_actor: spec.park })
                    .tokio_mailboxes(imp == Impl::OursTokio)
                    .build()
                    .expect("router");
                let ids = (0..spec.actors)
                    .map(|index| {
                        let (tx, mailbox) = router.mailbox();
                        let id = ActorId::new();
                        router.register(id, tx).expect("register");
                        runtime.spawn(ours_actor(mailbox, tally(index), is_slow(index)));
                        id
                    })
                    .collect::<Vec<_>>();
                let channels = spec.channels.then(|| {
                    let (endpoint, client_mailbox) = router.mailbox();
                    let client = router.attach_external(endpoint).expect("attach");
                    let ids = ids
                        .iter()
                        .map(|&id| {
                            router.open_channel(client, id, Vec::new(), REQUEST_TIMEOUT).expect("open").id
                        })
                        .collect();
                    Channels { client, ids, _endpoint: Some(client_mailbox) }
                });
                // ours-handle: each actor's handle, resolved once, outside the timing.
                let handles = (imp == Impl::OursHandle)
                    .then(|| ids.iter().map(|&id| router.handle(id).expect("handle")).collect());
                System::Ours { router, ids, handles, channels }
            }
            Impl::HandRolled => {
                let map = HandRolled::default();
                let ids = (0..spec.actors)
                    .map(|index| {
                        let (tx, mailbox) = mpsc::channel(spec.capacity);
                        let id = ActorId::new();
                        map.register(id, tx).expect("register");
                        runtime.spawn(tokio_actor(mailbox, tally(index), is_slow(index)));
                        id
                    })
                    .collect::<Vec<_>>();
                let channels = spec.channels.then(|| {
                    let client = ActorId::new();
                    let ids = ids.iter().map(|&id| map.open_channel(client, id)).collect();
                    Channels { client, ids, _endpoint: None }
                });
                System::HandRolled { map, ids, channels }
            }
            Impl::Anchor => {
                let anchor = Anchor::start(runtime.handle());
                let mut ids = Vec::with_capacity(spec.actors);
                let mut senders = Vec::with_capacity(spec.actors);
                for index in 0..spec.actors {
                    let (tx, mailbox) = mpsc::channel(spec.capacity);
                    runtime.spawn(tokio_actor(mailbox, tally(index), is_slow(index)));
                    ids.push(ActorId::new());
                    senders.push(tx);
                }
                // Registered from a task: a round trip per actor from outside the
                // runtime would wake a worker each time.
                let registrar = anchor.clone();
                let pairs: Vec<_> = ids.iter().copied().zip(senders).collect();
                runtime
                    .block_on(runtime.spawn(async move {
                        for (id, tx) in pairs {
                            registrar.register(id, tx).await.expect("register");
                        }
                    }))
                    .expect("registrar");
                let channels = spec.channels.then(|| {
                    let opener = anchor.clone();
                    let targets = ids.clone();
                    let client = ActorId::new();
                    let ids = runtime
                        .block_on(runtime.spawn(async move {
                            let mut opened = Vec::with_capacity(targets.len());
                            for id in targets {
                                opened.push(opener.open_channel(client, id).await.expect("open"));
                            }
                            opened
                        }))
                        .expect("opener");
                    Channels { client, ids, _endpoint: None }
                });
                System::Anchor { anchor, ids, channels }
            }
            Impl::Limit => {
                let mailboxes = (0..spec.actors)
                    .map(|index| {
                        let (tx, mailbox) = flume::bounded(spec.capacity);
                        runtime.spawn(flume_actor(mailbox, tally(index), is_slow(index)));
                        tx
                    })
                    .collect();
                System::Limit { mailboxes }
            }
            Impl::LimitTokio => {
                let mailboxes = (0..spec.actors)
                    .map(|index| {
                        let (tx, mailbox) = mpsc::channel(spec.capacity);
                        runtime.spawn(tokio_actor(mailbox, tally(index), is_slow(index)));
                        tx
                    })
                    .collect();
                System::LimitTokio { mailboxes }
            }
        };
        let targets = (0..MAX_TASKS).map(|t| targets(t as u64 + 1, spec.actors)).collect();
        Self {
            imp,
            runtime,
            system: Arc::new(system),
            sink,
            actors: spec.actors,
            slow,
            targets,
            latencies,
            latency: spec.latency,
        }
    }

    fn shares(&self, tasks: usize, total: u64, mode: Mode, full: Full, pace: Option<f64>) -> Vec<Share> {
        let tasks = tasks.max(1);
        (0..tasks)
            .map(|t| Share {
                system: Arc::clone(&self.system),
                sink: Arc::clone(&self.sink),
                targets: self.targets.get(t).cloned().unwrap_or_else(|| targets(t as u64 + 1, self.actors)),
                count: total / tasks as u64 + u64::from((t as u64) < total % tasks as u64),
                mode,
                full,
                slow: self.slow,
                stamp: self.latency,
                pace: pace.map(|rate| rate / tasks as f64),
            })
            .collect()
    }

    /// The implementation this fixture runs.
    pub fn imp(&self) -> Impl {
        self.imp
    }

    /// `total` one-way messages split over `producers` tasks, timed until every
    /// message to a counted actor has been taken (or refused).
    ///
    /// # Panics
    /// If the run does not finish within two minutes (messages were lost), or if
    /// the implementation has no send for `mode` ([`Impl::sends_in`]).
    pub fn one_way(&self, producers: usize, mode: Mode, full: Full, total: u64) -> Run {
        self.one_way_paced(producers, mode, full, total, None)
    }

    /// As [`Fixture::one_way`], with the producers together offering `rate`
    /// messages per second (`None`: as many as they can).
    pub fn one_way_paced(
        &self,
        producers: usize,
        mode: Mode,
        full: Full,
        total: u64,
        rate: Option<f64>,
    ) -> Run {
        assert!(self.imp.sends_in(mode), "{} has no send for {mode:?}", self.imp.name());
        let shares = self.shares(producers, total, mode, full, rate);
        self.sink.arm(shares.iter().map(Share::counted).sum());
        let start = Instant::now();
        let tasks: Vec<_> = shares.into_iter().map(|s| self.runtime.spawn(s.produce())).collect();
        let refused = self.runtime.block_on(async {
            let mut refused = 0;
            for task in tasks {
                refused += task.await.expect("producer");
            }
            refused
        });
        assert!(self.sink.wait(RUN_TIMEOUT), "one-way run did not finish: messages were lost");
        let elapsed = start.elapsed();
        Run { elapsed, refused, latency: self.take_latency() }
    }

    /// The actors' latencies since the last call, merged (latency fixtures only).
    fn take_latency(&self) -> Option<Histogram<u64>> {
        self.latency.then(|| {
            let mut all = histogram();
            for h in &self.latencies {
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                let _ = all.add(&*h);
                h.reset();
            }
            all
        })
    }

    /// `total` request/response round trips split over `requesters` tasks, each
    /// making its requests one after another.
    ///
    /// # Panics
    /// If a request fails.
    pub fn round_trips(&self, requesters: usize, total: u64) -> Run {
        self.round_trips_paced(requesters, total, None)
    }

    /// As [`Fixture::round_trips`], with the requesters together starting `rate`
    /// round trips per second at most (`None`: as many as they can).
    pub fn round_trips_paced(&self, requesters: usize, total: u64, rate: Option<f64>) -> Run {
        let shares = self.shares(requesters, total, Mode::Acked, Full::Wait, rate);
        let start = Instant::now();
        let tasks: Vec<_> = shares.into_iter().map(|s| self.runtime.spawn(s.request())).collect();
        let (failed, latency) = self.runtime.block_on(async {
            let mut failed = 0;
            let mut all: Option<Histogram<u64>> = None;
            for task in tasks {
                let (f, h) = task.await.expect("requester");
                failed += f;
                if let Some(h) = h {
                    match &mut all {
                        Some(all) => {
                            let _ = all.add(&h);
                        }
                        None => all = Some(h),
                    }
                }
            }
            (failed, all)
        });
        assert_eq!(failed, 0, "requests failed");
        Run { elapsed: start.elapsed(), refused: 0, latency }
    }

    /// `pairs` register + unregister pairs made one after another by one task.
    /// Fresh ids and mailboxes are made in batches outside the timing; the raw hops
    /// have no registry and return `None`, and so does ours-handle (no handle is
    /// involved: see [`Impl::churns`]).
    pub fn churn(&self, pairs: u64) -> Option<Duration> {
        if !self.imp.churns() {
            return None;
        }
        const BATCH: u64 = 4096;
        let capacity = MAILBOX_CAPACITY;
        let system = Arc::clone(&self.system);
        let task = self.runtime.spawn(async move {
            let mut timed = Duration::ZERO;
            let mut left = pairs;
            while left > 0 {
                let n = left.min(BATCH);
                left -= n;
                match &*system {
                    System::Ours { router, .. } => {
                        let batch: Vec<_> = (0..n).map(|_| (ActorId::new(), router.mailbox())).collect();
                        let mut keep = Vec::with_capacity(batch.len());
                        let start = Instant::now();
                        for (id, (tx, mailbox)) in batch {
                            router.register(id, tx).expect("register");
                            router.unregister(id).expect("unregister");
                            keep.push(mailbox);
                        }
                        timed += start.elapsed();
                    }
                    System::HandRolled { map, .. } => {
                        let batch: Vec<_> =
                            (0..n).map(|_| (ActorId::new(), mpsc::channel(capacity))).collect();
                        let mut keep = Vec::with_capacity(batch.len());
                        let start = Instant::now();
                        for (id, (tx, mailbox)) in batch {
                            map.register(id, tx).expect("register");
                            map.unregister(id).expect("unregister");
                            keep.push(mailbox);
                        }
                        timed += start.elapsed();
                    }
                    System::Anchor { anchor, .. } => {
                        let batch: Vec<_> =
                            (0..n).map(|_| (ActorId::new(), mpsc::channel(capacity))).collect();
                        let mut keep = Vec::with_capacity(batch.len());
                        let start = Instant::now();
                        for (id, (tx, mailbox)) in batch {
                            anchor.register(id, tx).await.expect("register");
                            anchor.unregister(id).await.expect("unregister");
                            keep.push(mailbox);
                        }
                        timed += start.elapsed();
                    }
                    System::Limit { .. } | System::LimitTokio { .. } => return None,
                }
            }
            Some(timed)
        });
        self.runtime.block_on(task).expect("churn task")
    }

    /// For ours: how many messages so far went through a shard's overflow queue
    /// (the slow path taken when a mailbox is full).
    pub fn overflowed(&self) -> Option<u64> {
        match &*self.system {
            System::Ours { router, .. } => Some(router.metrics().total().delivered_overflow),
            _ => None,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let System::Ours { router, .. } = &*self.system {
            router.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ours-handle's producers send through the handles resolved at setup, ours'
    /// by id: once the actor is registered again under the same id, the old
    /// handle refuses (its registration ended) while a send by id reaches the new
    /// mailbox.
    #[test]
    fn ours_handle_sends_through_its_handles() {
        for (imp, refused) in [(Impl::Ours, 0), (Impl::OursHandle, 300)] {
            let fixture = Fixture::new(imp, Spec::actors(1));
            let System::Ours { router, ids, handles, .. } = &*fixture.system else {
                panic!("{} is our router", imp.name())
            };
            assert_eq!(handles.is_some(), imp == Impl::OursHandle);
            router.unregister(ids[0]).expect("unregister");
            let (tx, mailbox) = router.mailbox();
            router.register(ids[0], tx).expect("register again");
            let tally = Tally { sink: Some(Arc::clone(&fixture.sink)), seen: 0, latency: None };
            fixture.runtime.spawn(ours_actor(mailbox, tally, false));
            for full in [Full::Refuse, Full::Await] {
                let run = fixture.one_way(1, Mode::Acked, full, 300);
                assert_eq!(run.refused, refused, "{} {full:?}", imp.name());
            }
        }
    }

    /// Where ours-handle has no send of its own, it is not measured.
    #[test]
    fn ours_handle_has_no_churn() {
        let fixture = Fixture::new(Impl::OursHandle, Spec::actors(2));
        assert!(fixture.churn(10).is_none());
        assert!(Fixture::new(Impl::OursTokio, Spec::actors(2)).churn(10).is_some());
        assert!(!Impl::OursHandle.sends_in(Mode::Channel) && Impl::OursHandle.sends_in(Mode::Tell));
    }
}
