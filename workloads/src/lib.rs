//! Workloads shared by `sharded-router bench` (the CLI, `cli/`) and the criterion
//! benches (`benches/router.rs`, `benches/memory.rs`), so both run exactly the same
//! code. Not published: it exists for the repository's own benchmarks. It compares
//! seven implementations:
//!
//! * **ours**: [`sharded_router::Router`] (flume mailboxes), sending by id;
//! * **ours-tokio**: the same router with tokio-backed mailboxes
//!   (`RouterBuilder::tokio_mailboxes`), for the actors and for the channel
//!   workload's external endpoint; everything else as for ours;
//! * **ours-handle**: the same router as ours, its producers sending through
//!   [`sharded_router::ActorHandle`]s resolved once at setup (outside the timing)
//!   instead of by id (`try_send`, `tell`, `send_async`, `request_async`). Channel
//!   messages and churn have no handle to send through, so it has nothing of its
//!   own to measure there (see [`Impl::sends_in`], [`Impl::churns`]);
//! * **hand-rolled**: what a user would write instead (see [`hand_rolled`]): a
//!   `DashMap` of tokio `mpsc` senders, `try_send`, `send().await` when full, requests
//!   as a oneshot awaited under `tokio::time::timeout`;
//! * **anchor**: a single-task router in the shape of Theater's (see [`anchor`]);
//! * **limit**: one raw flume hop from producer to consumer, no routing at all;
//! * **limit-tokio**: one raw tokio `mpsc` hop (`try_send`, `send().await` when full),
//!   no routing at all.
//!
//! # How actors and producers run (the same for all of them)
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
//! been taken by its actor (or, in the overflow workload, refused), so all of them
//! are measured end to end. Setup (runtime, router, actors, target sequences) happens
//! before, outside the timing, and one [`Fixture`] serves many runs.
//!
//! # Latency runs
//!
//! A fixture made from a [`Spec`] with `latency` set records latencies with
//! `hdrhistogram`: producers put their send time ([`now_ns`]) in each 8-byte payload
//! and actors record receive time minus send time; requesters record each round
//! trip. [`Fixture::one_way_paced`] and [`Fixture::round_trips_paced`] offer a fixed
//! load (messages leave in the bursts of the timer's 1 ms tick) instead of as many
//! as the producers can send.

pub mod anchor;
pub mod cluster;
pub mod hand_rolled;
pub mod nats_raw;
pub mod nats_server;

mod actors;
mod fixture;
mod produce;
mod sink;

use std::time::Duration;

pub use hdrhistogram::Histogram;

pub use self::actors::RawMessage;
pub use self::fixture::Fixture;
pub use self::sink::{histogram, now_ns, Percentiles};

/// Producers yield to the runtime after this many messages.
pub const YIELD_EVERY: u64 = 32;
/// Mailbox capacity for every implementation (our router's default).
pub const MAILBOX_CAPACITY: usize = 1024;
/// Mailbox capacity in Theater (and in the Theater-shaped workloads).
pub const THEATER_CAPACITY: usize = 100;
/// Length of each producer's cyclic sequence of targets.
pub(crate) const TARGETS_LEN: usize = 1 << 17;
/// Timeout our router and the hand-rolled baseline keep for each request (never
/// reached in a healthy run).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Ours,
    HandRolled,
    Anchor,
    Limit,
    LimitTokio,
    OursTokio,
    OursHandle,
}

impl Impl {
    /// Every implementation, in the order of [`Impl::index`] (and of interleaved runs).
    pub const ALL: [Self; 7] = [
        Self::Ours,
        Self::HandRolled,
        Self::Anchor,
        Self::Limit,
        Self::LimitTokio,
        Self::OursTokio,
        Self::OursHandle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::HandRolled => "hand-rolled",
            Self::Anchor => "anchor",
            Self::Limit => "limit",
            Self::LimitTokio => "limit-tokio",
            Self::OursTokio => "ours-tokio",
            Self::OursHandle => "ours-handle",
        }
    }

    /// The implementation called `name` (as [`Impl::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Its position in [`Impl::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Has a registry (the raw hops index a `Vec`).
    pub fn routes(self) -> bool {
        !matches!(self, Self::Limit | Self::LimitTokio)
    }

    /// Is our router (with either mailbox, sending by id or through handles).
    pub fn is_ours(self) -> bool {
        matches!(self, Self::Ours | Self::OursTokio | Self::OursHandle)
    }

    /// Has a send of its own for `mode`: ours-handle has none for channel messages
    /// (a channel is sent on by its id; there is no handle to resolve), so it is not
    /// measured there. [`Fixture::one_way`] panics on the others.
    pub fn sends_in(self, mode: Mode) -> bool {
        !(self == Self::OursHandle && mode == Mode::Channel)
    }

    /// Has a registry of its own to churn: not the raw hops, and not ours-handle
    /// (registering and unregistering involve no handle: it would be ours again).
    pub fn churns(self) -> bool {
        self.routes() && self != Self::OursHandle
    }
}

/// How a producer sends one-way messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The producer waits for the route result of every message.
    Acked,
    /// Fire-and-forget. The raw channels and the hand-rolled map have no separate
    /// route result, so for them both modes are the same send.
    Tell,
    /// Acked messages on open channels, one channel per actor, all opened by one
    /// client (ours: an external endpoint; the anchor and hand-rolled: an id). For
    /// the raw hops this is the same send.
    Channel,
}

/// What a producer does when a mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Wait for room: ours yields and retries on `MailboxFull` (its sends are
    /// `try_send`), the hand-rolled map and the tokio hop await `send()`, the flume
    /// limit awaits `send_async`, the anchor's router task awaits the tokio mailbox's
    /// `send().await` itself.
    Wait,
    /// As `Wait`, but ours awaits `send_async`, its waiting send (for channel
    /// messages, which have none, it yields and retries as in `Wait`).
    Await,
    /// Take the refusal and move on (ours: `MailboxFull` past the overflow bound; the
    /// others: `try_send`). The anchor cannot refuse: its router task waits.
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
    /// Record latencies (payloads carry their send time).
    pub latency: bool,
}

impl Spec {
    pub fn actors(actors: usize) -> Self {
        Self {
            actors,
            capacity: MAILBOX_CAPACITY,
            park: 4096,
            slow_actor: false,
            channels: false,
            latency: false,
        }
    }

    /// The overflow workload: 100 actors with mailboxes of 64, one of them slow; our
    /// router parks up to 256 messages for it and refuses the rest.
    pub fn overflow() -> Self {
        Self { capacity: 64, park: 256, slow_actor: true, ..Self::actors(100) }
    }

    /// The channel workload: `actors` actors, each with one open channel.
    pub fn channels(actors: usize) -> Self {
        Self { channels: true, ..Self::actors(actors) }
    }

    /// The back-pressure workload: 4 actors with mailboxes of 8, our router
    /// parking at most 8 more each, so that producers keep finding them full and
    /// must wait for room.
    pub fn backpressure() -> Self {
        Self { capacity: 8, park: 8, ..Self::actors(4) }
    }

    /// Theater's shape: `actors` actors with mailboxes of 100.
    pub fn theater(actors: usize) -> Self {
        Self { capacity: THEATER_CAPACITY, ..Self::actors(actors) }
    }

    /// The same actors, recording latencies.
    pub fn with_latency(self) -> Self {
        Self { latency: true, ..self }
    }
}

/// The outcome of one timed run.
#[derive(Clone, Debug)]
pub struct Run {
    pub elapsed: Duration,
    /// Messages refused (only with [`Full::Refuse`]).
    pub refused: u64,
    /// In a latency run: send → receive times (one-way) or round-trip times, in
    /// nanoseconds, of the messages to counted actors.
    pub latency: Option<Histogram<u64>>,
}
