//! The shard thread: overflow queues, request deadlines, clean-up, dead letters.
//!
//! Each shard runs on its own OS thread and owns, for the actors hashed to it:
//!
//! * **overflow queues** — messages that found the mailbox full (or arrived while
//!   earlier ones were still parked) wait here in FIFO order. The shard never blocks
//!   on a mailbox: it retries a queue when the actor's [`Mailbox`](crate::Mailbox)
//!   reports that it took a message (a `Drain` notice, sent once per wake-up);
//! * **request deadlines** — a requester files its deadline in the shard's timer
//!   inbox (a short mutex push) without waking the shard. The shard sleeps until the
//!   earliest deadline it knows of, and while requests are flowing it also wakes at
//!   a coarse period (the timer resolution) to collect newly filed ones. A requester
//!   wakes the shard only when its deadline is earlier than the shard's next wake;
//! * **clean-up** — parked messages and unresolved requests of an actor that
//!   unregisters, and everything at shutdown.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::channels::OpenSlot;
use crate::error::RequestError;
use crate::mailbox::MailboxState;
use crate::message::{ActorMessage, ReplySlot};
use crate::metrics::{Counters, DeadLetter, DeadLetterReason};
use crate::sync::{chan, time, Arc, AtomicBool, AtomicU64, Condvar, HashMap, Mutex, Ordering};
use crate::table::{Attempt, Entry, Table};

/// A callback receiving dead letters.
pub(crate) type DeadLetterSink = Arc<dyn Fn(DeadLetter) + Send + Sync>;

/// Quiet timer periods after which an idle shard stops waking periodically.
const IDLE_PERIODS: u32 = 64;
/// Most commands handled between two looks at the clock.
const BATCH: usize = 256;

/// What callers post to a shard.
pub(crate) enum Cmd {
    /// A message to deliver through the actor's overflow queue. The sender counted
    /// it in the actor's `in_flight`.
    Deliver { entry: Arc<Entry>, msg: ActorMessage },
    /// The actor's mailbox took a message while messages were in flight.
    Drain(Arc<MailboxState>),
    /// The actor was removed from the table; clean up what the shard holds for it.
    Unregistered(Arc<Entry>),
    /// A deadline earlier than the shard's planned wake-up was filed.
    Wake,
    /// A barrier: dropping the token (after everything queued before it) releases it.
    Flush(FlushToken),
    /// Stop after handling everything queued so far.
    Shutdown,
}

/// State of one shard shared by callers and the shard thread.
pub(crate) struct Shared {
    pub(crate) index: usize,
    pub(crate) table: Table,
    pub(crate) timers: Timers,
    pub(crate) counters: Counters,
    /// Set when the router starts shutting down.
    pub(crate) closing: AtomicBool,
}

/// A caller's handle to a shard.
pub(crate) struct ShardHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: chan::Sender<Cmd>,
}

impl ShardHandle {
    pub(crate) fn new(index: usize) -> (Self, chan::Receiver<Cmd>) {
        let (cmd, rx) = chan::unbounded();
        let shared = Arc::new(Shared {
            index,
            table: Table::new(),
            timers: Timers::new(),
            counters: Counters::default(),
            closing: AtomicBool::new(false),
        });
        (Self { shared, cmd }, rx)
    }

    pub(crate) fn dead_letter(&self, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
        deliver_dead_letter(&self.shared.counters, sink, letter);
    }
}

fn deliver_dead_letter(counters: &Counters, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
    Counters::bump(&counters.dead_letters);
    tracing::debug!(actor = %letter.target, reason = ?letter.reason, "dead letter");
    if let Some(sink) = sink {
        sink(letter);
    }
}

// ---------------------------------------------------------------------------------
// Timers

/// Something with a deadline, kept by the target's shard.
pub(crate) enum Pending {
    Request(Arc<ReplySlot<Vec<u8>>>),
    Open(Arc<OpenSlot>),
}

impl Pending {
    fn is_done(&self) -> bool {
        match self {
            Self::Request(slot) => slot.is_done(),
            Self::Open(open) => open.is_done(),
        }
    }

    /// Resolves with `error` unless already resolved.
    fn resolve(&self, error: RequestError) {
        match self {
            Self::Request(slot) => {
                let _ = slot.complete(Err(error));
            }
            Self::Open(open) => {
                OpenSlot::decide(open, Err(error));
            }
        }
    }

    fn targets(&self, state: &Arc<MailboxState>) -> bool {
        match self {
            Self::Request(slot) => slot.targets(state),
            Self::Open(open) => open.slot.targets(state),
        }
    }
}

struct Filed {
    pending: Pending,
    deadline: Instant,
}

#[derive(Default)]
struct Inbox {
    filed: Vec<Filed>,
    closed: bool,
}

/// A shard's timer inbox: requesters file deadlines here without waking the shard.
pub(crate) struct Timers {
    inbox: Mutex<Inbox>,
    /// When the shard will next wake on its own, in nanoseconds since `epoch`
    /// (`u64::MAX`: not until a command arrives).
    next_wake: AtomicU64,
    epoch: Instant,
}

impl Timers {
    fn new() -> Self {
        Self { inbox: Mutex::new(Inbox::default()), next_wake: AtomicU64::new(u64::MAX), epoch: time::now() }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Files a deadline. Wakes the shard only if it would otherwise sleep past
    /// `deadline`. Fails once the shard has stopped.
    pub(crate) fn file(
        &self,
        pending: Pending,
        deadline: Instant,
        shard: &chan::Sender<Cmd>,
    ) -> Result<(), ()> {
        {
            let mut inbox = self.inbox.lock();
            if inbox.closed {
                return Err(());
            }
            inbox.filed.push(Filed { pending, deadline });
        }
        let at = self.nanos(deadline);
        // Most deadlines are later than the shard's next wake: a plain load settles
        // those without writing the shared word.
        if at < self.next_wake.load(Ordering::SeqCst) && at < self.next_wake.fetch_min(at, Ordering::SeqCst) {
            let _ = shard.send(Cmd::Wake);
        }
        Ok(())
    }

    fn take(&self) -> Vec<Filed> {
        std::mem::take(&mut self.inbox.lock().filed)
    }

    fn close(&self) -> Vec<Filed> {
        let mut inbox = self.inbox.lock();
        inbox.closed = true;
        std::mem::take(&mut inbox.filed)
    }
}

// ---------------------------------------------------------------------------------
// Flush barrier

struct LatchState {
    live: Mutex<usize>,
    zero: Condvar,
}

/// Released when every [`FlushToken`] made from it has been dropped.
pub(crate) struct Latch(Arc<LatchState>);

/// One shard's part of a flush; dropping it counts the latch down.
pub(crate) struct FlushToken(Arc<LatchState>);

impl Latch {
    pub(crate) fn new() -> Self {
        Self(Arc::new(LatchState { live: Mutex::new(0), zero: Condvar::new() }))
    }

    pub(crate) fn token(&self) -> FlushToken {
        *self.0.live.lock() += 1;
        FlushToken(Arc::clone(&self.0))
    }

    /// Waits for every token to be dropped. Tokens are dropped by the shard that
    /// handles them, or with its queue when it stops, so this wait is bounded.
    pub(crate) fn wait(self) {
        let mut live = self.0.live.lock();
        while *live > 0 {
            self.0.zero.wait(&mut live);
        }
    }
}

impl Drop for FlushToken {
    fn drop(&mut self) {
        let mut live = self.0.live.lock();
        *live = live.saturating_sub(1);
        if *live == 0 {
            self.0.zero.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------------
// The shard thread

struct Overflow {
    entry: Arc<Entry>,
    queue: VecDeque<ActorMessage>,
}

/// Configuration a shard thread needs.
pub(crate) struct ShardConfig {
    pub(crate) resolution: Duration,
    pub(crate) dead_letters: Option<DeadLetterSink>,
}

/// The state owned by one shard thread.
pub(crate) struct Shard {
    shared: Arc<Shared>,
    rx: chan::Receiver<Cmd>,
    config: ShardConfig,
    overflow: HashMap<usize, Overflow>,
    depth: usize,
    pending: Vec<Filed>,
    quiet_periods: u32,
    next_sweep: Option<Instant>,
}

impl Shard {
    pub(crate) fn new(handle: &ShardHandle, rx: chan::Receiver<Cmd>, config: ShardConfig) -> Self {
        Self {
            shared: Arc::clone(&handle.shared),
            rx,
            config,
            overflow: HashMap::default(),
            depth: 0,
            pending: Vec::new(),
            quiet_periods: IDLE_PERIODS,
            next_sweep: None,
        }
    }

    /// The shard's main loop; returns after `Shutdown` (or if every sender is gone).
    pub(crate) fn run(mut self) {
        tracing::debug!(shard = self.shared.index, "shard started");
        'outer: loop {
            let wake_at = self.plan_sleep();
            let first = match wake_at {
                Some(at) => match self.rx.recv_deadline(at) {
                    Ok(cmd) => Some(cmd),
                    Err(chan::RecvTimeoutError::Timeout) => None,
                    Err(chan::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => break,
                },
            };
            if let Some(cmd) = first {
                if !self.handle(cmd) {
                    break;
                }
                for _ in 1..BATCH {
                    match self.rx.try_recv() {
                        Ok(cmd) => {
                            if !self.handle(cmd) {
                                break 'outer;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            if self.next_sweep.is_some_and(|at| time::now() >= at) {
                self.sweep();
            }
        }
        self.stop();
        tracing::debug!(shard = self.shared.index, "shard stopped");
    }

    /// Handles one command; `false` means stop.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Deliver { entry, msg } => self.deliver(entry, msg),
            Cmd::Drain(state) => {
                // A swap, not a store: every update of the flag is then a
                // read-modify-write that reads the latest value. C11 orders a plain
                // store the same way; loom's model does not, and reports a lost
                // `Drain` that cannot happen.
                state.drain_signaled.swap(false, Ordering::SeqCst);
                self.drain(Arc::as_ptr(&state) as usize);
            }
            Cmd::Unregistered(entry) => self.unregistered(&entry),
            Cmd::Wake => self.sweep(),
            Cmd::Flush(token) => drop(token),
            Cmd::Shutdown => return false,
        }
        true
    }

    /// Puts `msg` into the mailbox under the table's read lock, if `entry` is still
    /// the registered one.
    fn attempt(&self, entry: &Arc<Entry>, msg: ActorMessage) -> Result<Attempt, ActorMessage> {
        self.shared
            .table
            .with(
                &entry.id,
                msg,
                |current, msg| {
                    if Arc::ptr_eq(current, entry) {
                        Ok(entry.try_put(msg))
                    } else {
                        Err(msg)
                    }
                },
            )
            .and_then(|r| r)
    }

    fn deliver(&mut self, entry: Arc<Entry>, msg: ActorMessage) {
        let key = entry.key();
        if let Some(parked) = self.overflow.get_mut(&key) {
            parked.queue.push_back(msg);
            self.depth += 1;
            self.drain(key);
            return;
        }
        match self.attempt(&entry, msg) {
            Ok(Attempt::Delivered) => self.delivered(&entry),
            Ok(Attempt::Full(msg)) => {
                tracing::debug!(actor = %entry.id, shard = self.shared.index, "mailbox full: parking messages");
                self.overflow.insert(key, Overflow { entry, queue: VecDeque::from([msg]) });
                self.depth += 1;
                self.publish_depth();
            }
            Ok(Attempt::Closed(msg)) => self.undeliverable(&entry, msg, DeadLetterReason::MailboxClosed),
            Err(msg) => {
                let reason = self.gone_reason();
                self.undeliverable(&entry, msg, reason);
            }
        }
    }

    /// Moves parked messages into the mailbox until it is full again.
    fn drain(&mut self, key: usize) {
        let Some(mut parked) = self.overflow.remove(&key) else { return };
        let mut stopped = None;
        while let Some(msg) = parked.queue.pop_front() {
            match self.attempt(&parked.entry, msg) {
                Ok(Attempt::Delivered) => {
                    self.depth -= 1;
                    self.delivered(&parked.entry);
                }
                Ok(Attempt::Full(msg)) => {
                    parked.queue.push_front(msg);
                    break;
                }
                Ok(Attempt::Closed(msg)) => {
                    parked.queue.push_front(msg);
                    stopped = Some(DeadLetterReason::MailboxClosed);
                    break;
                }
                Err(msg) => {
                    parked.queue.push_front(msg);
                    stopped = Some(self.gone_reason());
                    break;
                }
            }
        }
        match stopped {
            Some(reason) => self.discard(parked, reason),
            None if parked.queue.is_empty() => {}
            None => {
                self.overflow.insert(key, parked);
            }
        }
        self.publish_depth();
    }

    fn unregistered(&mut self, entry: &Arc<Entry>) {
        if let Some(parked) = self.overflow.remove(&entry.key()) {
            self.discard(parked, DeadLetterReason::Unregistered);
            self.publish_depth();
        }
        self.pending.extend(self.shared.timers.take());
        self.pending.retain(|filed| {
            if filed.pending.targets(&entry.state) {
                filed.pending.resolve(RequestError::ActorNotFound);
                false
            } else {
                !filed.pending.is_done()
            }
        });
    }

    fn gone_reason(&self) -> DeadLetterReason {
        if self.shared.closing.load(Ordering::SeqCst) {
            DeadLetterReason::Shutdown
        } else {
            DeadLetterReason::Unregistered
        }
    }

    fn delivered(&self, entry: &Entry) {
        Counters::bump(&self.shared.counters.delivered_overflow);
        entry.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Every parked message of one actor is undeliverable.
    fn discard(&mut self, parked: Overflow, reason: DeadLetterReason) {
        self.depth -= parked.queue.len();
        for msg in parked.queue {
            self.undeliverable(&parked.entry, msg, reason);
        }
    }

    /// A message that cannot be delivered: requests get an outcome, one-way messages
    /// become dead letters. Either way it is no longer in flight.
    fn undeliverable(&self, entry: &Entry, msg: ActorMessage, reason: DeadLetterReason) {
        let outcome = match reason {
            DeadLetterReason::Shutdown => RequestError::Shutdown,
            DeadLetterReason::MailboxClosed => RequestError::MailboxClosed,
            _ => RequestError::ActorNotFound,
        };
        let channel_id = msg.channel_id();
        if let Some(data) = msg.undeliverable(outcome) {
            let letter = DeadLetter { target: entry.id, channel_id, data, reason };
            deliver_dead_letter(&self.shared.counters, self.config.dead_letters.as_ref(), letter);
        }
        entry.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn publish_depth(&self) {
        self.shared.counters.overflow_depth.store(self.depth, Ordering::Relaxed);
    }

    /// Collects newly filed deadlines and resolves the expired ones.
    fn sweep(&mut self) {
        let fresh = self.shared.timers.take();
        if fresh.is_empty() {
            self.quiet_periods = self.quiet_periods.saturating_add(1);
        } else {
            self.quiet_periods = 0;
            self.pending.extend(fresh);
        }
        let now = time::now();
        self.pending.retain(|filed| {
            if filed.pending.is_done() {
                false
            } else if filed.deadline <= now {
                filed.pending.resolve(RequestError::Timeout);
                false
            } else {
                true
            }
        });
    }

    /// Decides how long to sleep and publishes it, so that requesters with an
    /// earlier deadline know to wake the shard.
    fn plan_sleep(&mut self) -> Option<Instant> {
        let timers = &self.shared.timers;
        loop {
            let earliest = self.pending.iter().map(|f| f.deadline).min();
            let armed = !self.pending.is_empty() || self.quiet_periods < IDLE_PERIODS;
            let wake_at = if armed {
                let period_end = time::now() + self.config.resolution;
                Some(earliest.map_or(period_end, |e| e.min(period_end)))
            } else {
                None
            };
            timers.next_wake.store(wake_at.map_or(u64::MAX, |at| timers.nanos(at)), Ordering::SeqCst);
            // Anything filed before the store above is in the inbox now; anything
            // filed after it compares against the new value.
            let fresh = timers.take();
            if fresh.is_empty() {
                self.next_sweep = wake_at;
                return wake_at;
            }
            self.quiet_periods = 0;
            self.pending.extend(fresh);
        }
    }

    /// Resolves everything the shard holds: every unresolved request gets `Shutdown`
    /// (before any reply handle is dropped), parked and queued messages become dead
    /// letters, queued flush tokens are released.
    fn stop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.pending.extend(self.shared.timers.close());
        for filed in self.pending.drain(..) {
            filed.pending.resolve(RequestError::Shutdown);
        }
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Deliver { entry, msg } => self.undeliverable(&entry, msg, DeadLetterReason::Shutdown),
                Cmd::Drain(_) | Cmd::Unregistered(_) | Cmd::Wake | Cmd::Flush(_) | Cmd::Shutdown => {}
            }
        }
        let parked: Vec<Overflow> = self.overflow.drain().map(|(_, o)| o).collect();
        for o in parked {
            self.discard(o, DeadLetterReason::Shutdown);
        }
        self.publish_depth();
    }
}
