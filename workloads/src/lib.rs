//! Workloads shared by `sharded-router bench` (the CLI, `cli/`) and the criterion
//! benches (`benches/router.rs`, `benches/memory.rs`), so both run exactly the same
//! code. Not published: it exists for the repository's own benchmarks. It compares three implementations:
//!
//! * **ours**: [`sharded_router::Router`];
//! * **anchor**: a single-task router in the shape of Theater's (see [`anchor`]);
//! * **limit**: one raw flume hop from producer to consumer, no routing at all.
//!
//! # How actors and producers run (the same for all three)
//!
//! Everything runs as tokio tasks on one multi-thread runtime with two worker threads
//! (one per core of the benchmark machine), as in Theater, where actors are tasks and
//! the callers of the router are actors' host functions running inside those tasks.
//!
//! * An **actor** is a task that takes messages with its implementation's async
//!   receive (`Mailbox::recv_async`, tokio `mpsc::Receiver::recv`, flume
//!   `Receiver::recv_async`), draining with `try_recv` while messages are waiting. It
//!   counts one-way messages and echoes requests.
//! * A **producer** (or requester) is a task that sends to precomputed pseudo-random
//!   targets (the same sequence for every implementation) with 8-byte payloads, and
//!   yields to the runtime every [`YIELD_EVERY`] messages so that actors get to run
//!   on the two workers. Our `send` never blocks, so it is called directly from the
//!   task; the anchor's calls are awaited; the limit uses flume's `send_async`.
//! * Our router's shard threads run beside the runtime; on the fast path measured
//!   here they sleep (they work only for overflow and request deadlines).
//!
//! A timed run starts when the producers are spawned and ends when every message has
//! been taken by its actor (or, in the overflow workload, refused), so all three are
//! measured end to end. Setup (runtime, router, actors, target sequences) happens
//! before, outside the timing, and one [`Fixture`] serves many runs.

pub mod anchor;
pub mod cluster;
pub mod nats_raw;
pub mod nats_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sharded_router::{
    ActorId, ActorMessage, ChannelId, ExternalId, Mailbox, OverflowPolicy, Router, SendErrorKind,
    TryRecvError,
};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::yield_now;

use self::anchor::{Anchor, AnchorMessage};

/// Producers yield to the runtime after this many messages.
pub const YIELD_EVERY: u64 = 32;
/// Mailbox capacity for every implementation (our router's default).
pub const MAILBOX_CAPACITY: usize = 1024;
/// Producers (or requesters) whose target sequences a fixture makes up front.
const MAX_TASKS: usize = 8;
/// Length of each producer's cyclic sequence of targets.
const TARGETS_LEN: usize = 1 << 17;
/// A run that has not finished after this long has lost messages.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout our router keeps for each request (never reached in a healthy run).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Anchor,
    Limit,
}

impl Impl {
    pub const ALL: [Self; 3] = [Self::Ours, Self::Anchor, Self::Limit];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Anchor => "anchor",
            Self::Limit => "limit",
        }
    }
}

/// How a producer sends one-way messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The producer waits for the route result of every message.
    Acked,
    /// Fire-and-forget. The raw channel has no route result, so for the limit both
    /// modes are the same flume send.
    Tell,
    /// Acked messages on open channels, one channel per actor, all opened by one
    /// client (ours: an external endpoint; the anchor: a registered id). For the
    /// limit this is the same flume send.
    Channel,
}

/// What a producer does when a mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Wait for room: ours yields and retries on `MailboxFull` (its sends are
    /// `try_send`), the limit awaits flume's `send_async`, the anchor's router
    /// task awaits the tokio mailbox's `send().await` itself.
    Wait,
    /// As `Wait`, but ours awaits `send_async`, its waiting send (for channel
    /// messages, which have none, it yields and retries as in `Wait`).
    Await,
    /// Take the refusal and move on (ours: `MailboxFull` past the overflow bound; the
    /// limit: `try_send`). The anchor cannot refuse: its router task waits.
    Refuse,
}

/// The actors a fixture starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub actors: usize,
    pub capacity: usize,
    /// Our router parks up to this many messages per actor at its shard.
    pub park: usize,
    /// Actor 0 takes one message per millisecond and is not waited for.
    pub slow_actor: bool,
    /// Open a channel to every actor (for [`Mode::Channel`]).
    pub channels: bool,
}

impl Spec {
    pub fn actors(actors: usize) -> Self {
        Self { actors, capacity: MAILBOX_CAPACITY, park: 4096, slow_actor: false, channels: false }
    }

    /// The overflow workload: 100 actors with mailboxes of 64, one of them slow; our
    /// router parks up to 256 messages for it and refuses the rest.
    pub fn overflow() -> Self {
        Self { actors: 100, capacity: 64, park: 256, slow_actor: true, channels: false }
    }

    /// The channel workload: `actors` actors, each with one open channel.
    pub fn channels(actors: usize) -> Self {
        Self { channels: true, ..Self::actors(actors) }
    }

    /// The back-pressure workload: 4 actors with mailboxes of 8, our router
    /// parking at most 8 more each, so that producers keep finding them full and
    /// must wait for room.
    pub fn backpressure() -> Self {
        Self { actors: 4, capacity: 8, park: 8, slow_actor: false, channels: false }
    }
}

/// The outcome of one timed run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub elapsed: Duration,
    /// Messages refused (only with [`Full::Refuse`]).
    pub refused: u64,
}

// ---------------------------------------------------------------------------------
// Completion

/// Counts messages settled (taken by a counted actor, or refused); the driver waits
/// until a goal is reached.
#[derive(Default)]
struct Sink {
    settled: AtomicU64,
    goal: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl Sink {
    fn arm(&self, goal: u64) {
        self.settled.store(0, Ordering::SeqCst);
        self.goal.store(goal, Ordering::SeqCst);
    }

    fn add(&self, n: u64) {
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
    fn wait(&self, timeout: Duration) -> bool {
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

/// An actor's tally, handed to the sink whenever its mailbox runs empty.
struct Tally {
    sink: Option<Arc<Sink>>,
    seen: u64,
}

impl Tally {
    fn one(&mut self, data: &[u8]) {
        std::hint::black_box(data);
        self.seen += 1;
    }

    fn flush(&mut self) {
        if let Some(sink) = &self.sink {
            sink.add(std::mem::take(&mut self.seen));
        }
    }
}

/// A slow actor takes one message per this long.
const SLOW_PACE: Duration = Duration::from_millis(1);

async fn ours_actor(mailbox: Mailbox, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv_async().await {
                    Ok(msg) => msg,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            ActorMessage::Send { data } | ActorMessage::ChannelMessage { data, .. } => tally.one(&data),
            ActorMessage::Request { data, reply } => {
                let _ = reply.reply(data);
            }
            ActorMessage::ChannelOpen { reply, .. } => {
                let _ = reply.accept(None);
            }
            _ => {}
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}

async fn anchor_actor(mut mailbox: mpsc::Receiver<AnchorMessage>, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv().await {
                    Some(msg) => msg,
                    None => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            AnchorMessage::Send { data } => tally.one(&data),
            AnchorMessage::ChannelMessage { channel, data } => {
                std::hint::black_box(channel);
                tally.one(&data);
            }
            AnchorMessage::Request { data, reply } => {
                let _ = reply.send(data);
            }
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}

/// What a raw-channel consumer receives.
pub enum RawMessage {
    Send { data: Vec<u8> },
    Request { data: Vec<u8>, reply: flume::Sender<Vec<u8>> },
}

async fn limit_actor(mailbox: flume::Receiver<RawMessage>, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(flume::TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv_async().await {
                    Ok(msg) => msg,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            RawMessage::Send { data } => tally.one(&data),
            RawMessage::Request { data, reply } => {
                let _ = reply.send(data);
            }
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}

// ---------------------------------------------------------------------------------
// Producers

/// Channels opened for [`Mode::Channel`]: the client that opened them, and one
/// channel per actor, by index.
struct Channels<Client, Id> {
    client: Client,
    ids: Vec<Id>,
    /// Our client's endpoint, kept open for the fixture's life (nothing is sent
    /// to it).
    _endpoint: Option<Mailbox>,
}

enum System {
    Ours {
        router: Router,
        ids: Vec<ActorId>,
        channels: Option<Channels<ExternalId, ChannelId>>,
    },
    /// The anchor's channel ids are its own counter values.
    Anchor {
        anchor: Anchor,
        ids: Vec<ActorId>,
        channels: Option<Channels<ActorId, u64>>,
    },
    Limit {
        mailboxes: Vec<flume::Sender<RawMessage>>,
    },
}

/// One producer's share of a run.
struct Share {
    system: Arc<System>,
    sink: Arc<Sink>,
    targets: Arc<[u32]>,
    count: u64,
    mode: Mode,
    full: Full,
    slow: Option<u32>,
}

fn payload(i: u64) -> Vec<u8> {
    i.to_le_bytes().to_vec()
}

impl Share {
    fn target(&self, i: u64) -> u32 {
        self.targets[i as usize & (TARGETS_LEN - 1)]
    }

    /// A refused message to a counted actor is settled by its producer.
    fn refused(&self, target: u32) {
        if Some(target) != self.slow {
            self.sink.add(1);
        }
    }

    /// Sends this share; returns how many messages were refused.
    async fn produce(self) -> u64 {
        let mut refused = 0;
        match &*self.system {
            System::Ours { router, ids, channels } => {
                for i in 0..self.count {
                    let target = self.target(i);
                    let id = ids[target as usize];
                    match self.mode {
                        Mode::Tell => router.tell(id, payload(i)),
                        Mode::Acked | Mode::Channel => {
                            let mut data = payload(i);
                            loop {
                                let sent = match channels {
                                    Some(c) if self.mode == Mode::Channel => {
                                        router.channel_send(c.ids[target as usize], c.client, data)
                                    }
                                    _ if self.full == Full::Await => router.send_async(id, data).await,
                                    _ => router.try_send(id, data),
                                };
                                match sent {
                                    Ok(()) => break,
                                    Err(e)
                                        if e.kind() == SendErrorKind::MailboxFull
                                            && self.full != Full::Refuse =>
                                    {
                                        data = e.into_inner();
                                        yield_now().await;
                                    }
                                    Err(_) => {
                                        refused += 1;
                                        self.refused(target);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    if (i + 1) % YIELD_EVERY == 0 {
                        yield_now().await;
                    }
                }
            }
            System::Anchor { anchor, ids, channels } => {
                for i in 0..self.count {
                    let target = self.target(i);
                    let id = ids[target as usize];
                    let outcome = match (self.mode, channels) {
                        (Mode::Channel, Some(c)) => {
                            anchor.channel_send(c.ids[target as usize], c.client, payload(i)).await
                        }
                        (Mode::Tell, _) => anchor.tell(id, payload(i)).await,
                        _ => anchor.send(id, payload(i)).await,
                    };
                    if outcome.is_err() {
                        refused += 1;
                        self.refused(target);
                    }
                    if (i + 1) % YIELD_EVERY == 0 {
                        yield_now().await;
                    }
                }
            }
            System::Limit { mailboxes } => {
                for i in 0..self.count {
                    let target = self.target(i);
                    let mailbox = &mailboxes[target as usize];
                    let msg = RawMessage::Send { data: payload(i) };
                    let sent = match self.full {
                        Full::Wait | Full::Await => mailbox.send_async(msg).await.is_ok(),
                        Full::Refuse => mailbox.try_send(msg).is_ok(),
                    };
                    if !sent {
                        refused += 1;
                        self.refused(target);
                    }
                    if (i + 1) % YIELD_EVERY == 0 {
                        yield_now().await;
                    }
                }
            }
        }
        refused
    }

    /// Makes this share's round trips one after another; returns the failures.
    async fn request(self) -> u64 {
        let mut failed = 0;
        for i in 0..self.count {
            let target = self.target(i) as usize;
            let data = payload(i);
            let answer = match &*self.system {
                System::Ours { router, ids, .. } => {
                    router.request_async(ids[target], data, REQUEST_TIMEOUT).await.ok()
                }
                System::Anchor { anchor, ids, .. } => anchor.request(ids[target], data).await.ok(),
                System::Limit { mailboxes } => {
                    let (reply, answer) = flume::bounded(1);
                    match mailboxes[target].send_async(RawMessage::Request { data, reply }).await {
                        Ok(()) => answer.recv_async().await.ok(),
                        Err(_) => None,
                    }
                }
            };
            if answer.map_or(true, |a| a.len() != 8) {
                failed += 1;
            }
        }
        failed
    }
}

// ---------------------------------------------------------------------------------
// Fixtures

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
    runtime: Runtime,
    system: Arc<System>,
    sink: Arc<Sink>,
    actors: usize,
    slow: Option<u32>,
    /// Target sequences for the first [`MAX_TASKS`] producers, made once.
    targets: Vec<Arc<[u32]>>,
}

impl Fixture {
    /// Starts `imp` with the actors of `spec`; nothing here is timed.
    pub fn new(imp: Impl, spec: Spec) -> Self {
        let runtime = runtime();
        let sink = Arc::new(Sink::default());
        let slow = spec.slow_actor.then_some(0u32);
        let tally =
            |index: usize| Tally { sink: (Some(index as u32) != slow).then(|| Arc::clone(&sink)), seen: 0 };
        let is_slow = |index: usize| Some(index as u32) == slow;
        let system = match imp {
            Impl::Ours => {
                let router = Router::builder()
                    .mailbox_capacity(spec.capacity)
                    .overflow(OverflowPolicy::Park { max_per_actor: spec.park })
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
                System::Ours { router, ids, channels }
            }
            Impl::Anchor => {
                let anchor = Anchor::start(runtime.handle());
                let mut ids = Vec::with_capacity(spec.actors);
                let mut senders = Vec::with_capacity(spec.actors);
                for index in 0..spec.actors {
                    let (tx, mailbox) = mpsc::channel(spec.capacity);
                    runtime.spawn(anchor_actor(mailbox, tally(index), is_slow(index)));
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
                        runtime.spawn(limit_actor(mailbox, tally(index), is_slow(index)));
                        tx
                    })
                    .collect();
                System::Limit { mailboxes }
            }
        };
        let targets = (0..MAX_TASKS).map(|t| targets(t as u64 + 1, spec.actors)).collect();
        Self { runtime, system: Arc::new(system), sink, actors: spec.actors, slow, targets }
    }

    fn shares(&self, tasks: usize, total: u64, mode: Mode, full: Full) -> Vec<Share> {
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
            })
            .collect()
    }

    /// `total` one-way messages split over `producers` tasks, timed until every
    /// message to a counted actor has been taken (or refused).
    ///
    /// # Panics
    /// If the run does not finish within two minutes (messages were lost).
    pub fn one_way(&self, producers: usize, mode: Mode, full: Full, total: u64) -> Run {
        let shares = self.shares(producers, total, mode, full);
        let goal = match self.slow {
            None => total,
            Some(slow) => {
                shares.iter().map(|s| (0..s.count).filter(|&i| s.target(i) != slow).count() as u64).sum()
            }
        };
        self.sink.arm(goal);
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
        Run { elapsed: start.elapsed(), refused }
    }

    /// `total` request/response round trips split over `requesters` tasks, each
    /// making its requests one after another.
    ///
    /// # Panics
    /// If a request fails.
    pub fn round_trips(&self, requesters: usize, total: u64) -> Run {
        let shares = self.shares(requesters, total, Mode::Acked, Full::Wait);
        let start = Instant::now();
        let tasks: Vec<_> = shares.into_iter().map(|s| self.runtime.spawn(s.request())).collect();
        let failed = self.runtime.block_on(async {
            let mut failed = 0;
            for task in tasks {
                failed += task.await.expect("requester");
            }
            failed
        });
        assert_eq!(failed, 0, "requests failed");
        Run { elapsed: start.elapsed(), refused: 0 }
    }

    /// `pairs` register + unregister pairs made one after another by one task.
    /// Fresh ids and mailboxes are made in batches outside the timing; the limit
    /// has no registry and returns `None`.
    pub fn churn(&self, pairs: u64) -> Option<Duration> {
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
                    System::Limit { .. } => return None,
                }
            }
            Some(timed)
        });
        self.runtime.block_on(task).expect("churn task")
    }
}

impl Fixture {
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
