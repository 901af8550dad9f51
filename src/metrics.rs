//! What the router reports: metrics snapshots and dead letters.

use std::fmt;

use crate::ids::{ChannelId, Participant};
use crate::latency::{RequestCounts, RequestStats};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering};

/// Cells of a [`Striped`] counter (one under loom, where a single cell is enough
/// and keeps models small).
const STRIPES: usize = if cfg!(loom) { 1 } else { 8 };

/// A counter bumped on the hot path by many threads. Each thread adds to its own
/// cache-line-sized cell (picked once per thread), so senders on different cores do
/// not contend for one line; reading sums the cells.
pub(crate) struct Striped {
    cells: [Cell; STRIPES],
}

#[repr(align(128))]
#[derive(Default)]
struct Cell(AtomicU64);

impl Default for Striped {
    fn default() -> Self {
        Self { cells: std::array::from_fn(|_| Cell::default()) }
    }
}

impl Striped {
    pub(crate) fn bump(&self) {
        self.cells[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// The calling thread's cell index, handed out round-robin at first use.
fn stripe() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// Live counters of one shard, updated by callers and the shard thread.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) delivered_direct: Striped,
    pub(crate) delivered_overflow: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) overflow_depth: AtomicUsize,
    pub(crate) callback_panics: AtomicU64,
    pub(crate) pending_timers: AtomicUsize,
    pub(crate) moved: AtomicU64,
    /// Dead letters by [`DeadLetterReason::index`] (feature `metrics`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) dead_letters_by_reason: [AtomicU64; DeadLetterReason::ALL.len()],
    /// Requests to the shard's actors, counted by their requesters as they
    /// resolve (feature `metrics`); shared with requests in flight.
    pub(crate) requests: Arc<RequestStats>,
    /// Nanoseconds the shard thread spent handling commands and timers (feature
    /// `metrics`).
    pub(crate) busy_nanos: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, shard: usize, registered_actors: usize, failed: bool) -> ShardMetrics {
        ShardMetrics {
            shard,
            delivered_direct: self.delivered_direct.sum(),
            delivered_overflow: self.delivered_overflow.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            overflow_depth: self.overflow_depth.load(Ordering::Relaxed),
            registered_actors,
            callback_panics: self.callback_panics.load(Ordering::Relaxed),
            pending_timers: self.pending_timers.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
            failed,
            requests: self.requests.snapshot(),
            busy: std::time::Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of one shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardMetrics {
    /// The shard's index.
    pub shard: usize,
    /// Messages the caller put straight into the target's mailbox.
    pub delivered_direct: u64,
    /// Messages delivered by the shard after waiting in its overflow queue.
    pub delivered_overflow: u64,
    /// Sends refused with `MailboxFull`.
    pub rejected: u64,
    /// One-way messages that could not be delivered (see [`DeadLetter`]).
    pub dead_letters: u64,
    /// Messages parked in the shard's overflow queues right now.
    pub overflow_depth: usize,
    /// Actors (and external endpoints) registered on the shard right now.
    pub registered_actors: usize,
    /// Panics caught in user callbacks (the dead-letter sink) for this shard.
    pub callback_panics: u64,
    /// Request and channel-open deadlines the shard holds, as of its last look
    /// at its timers (answered ones leave at the next compaction).
    pub pending_timers: usize,
    /// `true` once the shard thread has failed (see
    /// [`Router::is_degraded`](crate::Router::is_degraded)).
    pub failed: bool,
    /// Messages taken out of a replaced mailbox to go to its replacement
    /// ([`Router::replace_mailbox`](crate::Router::replace_mailbox)). Each was
    /// counted as delivered when it reached the old mailbox and is counted again
    /// as it reaches the new one.
    pub moved: u64,
    /// Requests to the shard's actors that resolved, by outcome, and their
    /// latencies (counted with the feature `metrics`; zero without it).
    pub requests: RequestCounts,
    /// Time the shard thread spent working (handling commands and timers) rather
    /// than waiting for them (measured with the feature `metrics`; zero without it).
    pub busy: std::time::Duration,
}

/// A snapshot of the channel table's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelMetrics {
    /// Channels in the table right now (open, or waiting for the target's answer).
    pub channels: usize,
    /// Channels accepted since the router started.
    pub opened: u64,
    /// Channel messages delivered or accepted for delivery.
    pub messages: u64,
    /// Opens the target rejected (or dropped unanswered).
    pub rejected: u64,
}

/// A snapshot of every shard's counters and the channel table's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterMetrics {
    /// One entry per shard, by index.
    pub shards: Vec<ShardMetrics>,
    /// The channel table.
    pub channels: ChannelMetrics,
}

impl RouterMetrics {
    /// The sum over all shards (`shard` is the shard count; `failed` is `true` if
    /// any shard failed).
    #[must_use]
    pub fn total(&self) -> ShardMetrics {
        let mut sum = ShardMetrics { shard: self.shards.len(), ..ShardMetrics::default() };
        for s in &self.shards {
            sum.delivered_direct += s.delivered_direct;
            sum.delivered_overflow += s.delivered_overflow;
            sum.rejected += s.rejected;
            sum.dead_letters += s.dead_letters;
            sum.overflow_depth += s.overflow_depth;
            sum.registered_actors += s.registered_actors;
            sum.callback_panics += s.callback_panics;
            sum.pending_timers += s.pending_timers;
            sum.moved += s.moved;
            sum.failed |= s.failed;
            sum.requests.add(&s.requests);
            sum.busy += s.busy;
        }
        sum
    }
}

/// Why a one-way message became a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// [`Router::tell`](crate::Router::tell) to an id with no registered actor.
    ActorNotFound,
    /// [`Router::tell`](crate::Router::tell) to a full mailbox past its overflow bound.
    MailboxFull,
    /// The actor's mailbox receiver was dropped.
    MailboxClosed,
    /// The message was accepted and parked, then its actor unregistered.
    Unregistered,
    /// The router shut down before the message could be delivered.
    Shutdown,
    /// [`Router::tell`](crate::Router::tell) past the shard's
    /// [`max_parked_per_shard`](crate::RouterBuilder::max_parked_per_shard).
    ShardFull,
    /// The message's shard failed before it could be delivered.
    ShardFailed,
}

impl DeadLetterReason {
    /// Every reason, in the order of [`index`](Self::index).
    pub const ALL: [Self; 7] = [
        Self::ActorNotFound,
        Self::MailboxFull,
        Self::MailboxClosed,
        Self::Unregistered,
        Self::Shutdown,
        Self::ShardFull,
        Self::ShardFailed,
    ];

    /// The reason's position in [`ALL`](Self::ALL).
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Self::ActorNotFound => 0,
            Self::MailboxFull => 1,
            Self::MailboxClosed => 2,
            Self::Unregistered => 3,
            Self::Shutdown => 4,
            Self::ShardFull => 5,
            Self::ShardFailed => 6,
        }
    }

    /// Its label value: `actor_not_found`, `mailbox_full`, ...
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::ActorNotFound => "actor_not_found",
            Self::MailboxFull => "mailbox_full",
            Self::MailboxClosed => "mailbox_closed",
            Self::Unregistered => "unregistered",
            Self::Shutdown => "shutdown",
            Self::ShardFull => "shard_full",
            Self::ShardFailed => "shard_failed",
        }
    }
}

/// A one-way message that was accepted (or told) but could not be delivered.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The intended recipient.
    pub target: Participant,
    /// The channel, for channel messages and closes.
    pub channel_id: Option<ChannelId>,
    /// The payload.
    pub data: Vec<u8>,
    /// Why it was not delivered.
    pub reason: DeadLetterReason,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("target", &self.target)
            .field("channel_id", &self.channel_id)
            .field("len", &self.data.len())
            .field("reason", &self.reason)
            .finish()
    }
}
