//! The shard thread: overflow queues, request deadlines, clean-up, dead letters.
//!
//! Each shard runs on its own OS thread and owns, for the actors hashed to it:
//!
//! * **overflow queues** — messages that found the mailbox full (or arrived while
//!   earlier ones were still parked) wait here in FIFO order. The shard never blocks
//!   on a mailbox: it retries a queue when the actor's [`Mailbox`](crate::Mailbox)
//!   reports that it took a message (a `Drain` notice, sent once per wake-up);
//! * **request deadlines** (their inbox and heap entries are in `timers.rs`) — a
//!   requester files its deadline in the shard's timer inbox (a short mutex push)
//!   without waking the shard. The shard sleeps until the earliest deadline it
//!   knows of, and while requests are flowing it also wakes at a coarse period (the
//!   timer resolution) to collect newly filed ones. A requester wakes the shard only
//!   when its deadline is earlier than the shard's next wake;
//! * **clean-up** — parked messages and unresolved requests of an actor that
//!   unregisters, and everything at shutdown.

use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::error::RequestError;
use crate::fence;
use crate::mailbox::MailboxState;
use crate::message::{ActorMessage, ReplySlot};
use crate::metrics::{Counters, DeadLetter, DeadLetterReason};
use crate::sync::{chan, time, Arc, AtomicBool, AtomicUsize, HashMap, Ordering};
use crate::table::{Attempt, Entry, Table};
use crate::timers::{Filed, Pending, Timers};

/// A callback receiving dead letters.
pub(crate) type DeadLetterSink = Arc<dyn Fn(DeadLetter) + Send + Sync>;

/// Quiet timer periods after which an idle shard stops waking periodically.
const IDLE_PERIODS: u32 = 64;
/// Most commands handled between two looks at the clock.
const BATCH: usize = 256;
/// The longest an answered request's deadline stays in the shard's heap when it
/// is not at the top (see [`Shard::compact`]).
const COMPACTION_PERIOD: Duration = Duration::from_secs(1);

/// What callers post to a shard.
pub(crate) enum Cmd {
    /// A message to deliver through the actor's overflow queue. The sender counted
    /// it in the actor's `in_flight` and the shard's `parked`.
    Deliver { entry: Arc<Entry>, msg: ActorMessage },
    /// The actor's mailbox took a message while messages were in flight.
    Drain(Arc<MailboxState>),
    /// The actor was removed from the table; clean up what the shard holds for it.
    /// What was parked for it becomes dead letters with this reason.
    Unregistered(Arc<Entry>, DeadLetterReason),
    /// A deadline earlier than the shard's planned wake-up was filed.
    Wake,
    /// A barrier: dropping the token (after everything queued before it) releases it.
    Flush(FlushToken),
    /// Stop after handling everything queued so far.
    Shutdown,
    /// Panics in the shard's own code, to test how a failed shard is fenced.
    #[cfg(test)]
    Crash,
}

/// State of one shard shared by callers and the shard thread.
pub(crate) struct Shared {
    pub(crate) index: usize,
    pub(crate) table: Table,
    pub(crate) timers: Timers,
    pub(crate) counters: Counters,
    /// Set when the router starts shutting down.
    pub(crate) closing: AtomicBool,
    /// Set when the shard thread panicked (see [`Shard::run`]).
    failed: AtomicBool,
    /// Messages in flight through this shard for all its actors: raised by a
    /// sender with the actor's `in_flight`, lowered with it by the shard.
    pub(crate) parked: AtomicUsize,
    /// The most `parked` may reach before sends are refused with `ShardFull`.
    pub(crate) max_parked: usize,
}

impl Shared {
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A caller's handle to a shard.
pub(crate) struct ShardHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: chan::Sender<Cmd>,
}

impl ShardHandle {
    pub(crate) fn new(index: usize, max_parked: usize) -> (Self, chan::Receiver<Cmd>) {
        let (cmd, rx) = chan::unbounded();
        let shared = Arc::new(Shared {
            index,
            table: Table::new(),
            timers: Timers::new(),
            counters: Counters::default(),
            closing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            max_parked,
        });
        (Self { shared, cmd }, rx)
    }

    pub(crate) fn dead_letter(&self, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
        deliver_dead_letter(&self.shared.counters, sink, letter);
    }
}

/// Counts a dead letter and hands it to the sink, behind the fence: a panicking
/// sink is counted in `callback_panics` and the caller carries on.
fn deliver_dead_letter(counters: &Counters, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
    Counters::bump(&counters.dead_letters);
    tracing::debug!(actor = %letter.target, reason = ?letter.reason, "dead letter");
    if let Some(sink) = sink {
        if !fence::call("dead-letter sink", || sink(letter)) {
            Counters::bump(&counters.callback_panics);
        }
    }
}

// ---------------------------------------------------------------------------------
// Flush barrier

/// Released when every [`FlushToken`] made from it has been dropped: the tokens
/// share one [`Release`], whose drop (with the last token) completes the latch's
/// reply slot, the crate's one complete-once cell.
pub(crate) struct Latch {
    slot: Arc<ReplySlot<()>>,
    release: Arc<Release>,
}

/// Completes the latch's slot when the last token holding it is dropped.
struct Release(Arc<ReplySlot<()>>);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.0.complete(Ok(()));
    }
}

/// One shard's part of a flush; dropping it counts the latch down.
pub(crate) struct FlushToken(#[allow(dead_code)] Arc<Release>);

impl Latch {
    pub(crate) fn new() -> Self {
        let slot = ReplySlot::new(None);
        let release = Arc::new(Release(Arc::clone(&slot)));
        Self { slot, release }
    }

    pub(crate) fn token(&self) -> FlushToken {
        FlushToken(Arc::clone(&self.release))
    }

    /// Waits for every token to be dropped. Tokens are dropped by the shard that
    /// handles them, or with its queue when it stops, so this wait is bounded.
    pub(crate) fn wait(self) {
        let Self { slot, release } = self;
        drop(release);
        let _ = slot.wait();
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
    /// Deadlines, earliest on top. Answered ones are dropped lazily: popped when
    /// they reach the top, or at a compaction.
    heap: BinaryHeap<Filed>,
    next_seq: u64,
    /// Deadlines alive after the last compaction, and when the next is due.
    live_after_compaction: usize,
    next_compaction: Option<Instant>,
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
            heap: BinaryHeap::new(),
            next_seq: 0,
            live_after_compaction: 0,
            next_compaction: None,
            quiet_periods: IDLE_PERIODS,
            next_sweep: None,
        }
    }

    /// The shard thread: serves commands until `Shutdown`, then resolves
    /// everything it holds.
    ///
    /// A panic in the shard's own code (user callbacks are fenced and never get
    /// here) means its state can no longer be trusted, so the shard is not
    /// restarted: it is marked failed. Everything it holds is resolved with
    /// `ShardFailed` (requests and opens) or becomes a dead letter, it stops
    /// taking deadlines, and it keeps draining its queue in that state until
    /// shutdown, so that no caller waits on it without bound. Messages the
    /// panicking step itself held are lost with the unwinding.
    pub(crate) fn run(mut self) {
        tracing::debug!(shard = self.shared.index, "shard started");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            self.fail(fence::describe(panic.as_ref()));
            if catch_unwind(AssertUnwindSafe(|| self.serve_failed())).is_err() {
                // Nothing user-supplied runs unfenced in the failed loop; should it
                // panic anyway, the queue closes with the thread and every later
                // post to the shard fails at once.
                tracing::error!(shard = self.shared.index, "failed shard panicked again; its queue closes");
                return;
            }
        }
        self.stop();
        tracing::debug!(shard = self.shared.index, "shard stopped");
    }

    /// The main loop; returns after `Shutdown` (or if every sender is gone).
    fn serve(&mut self) {
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
            Cmd::Unregistered(entry, reason) => self.unregistered(&entry, reason),
            Cmd::Wake => self.sweep(),
            Cmd::Flush(token) => {
                // A barrier also settles the timer bookkeeping, so that what it
                // publishes is exact.
                self.sweep();
                self.compact();
                drop(token);
            }
            Cmd::Shutdown => return false,
            #[cfg(test)]
            Cmd::Crash => panic!("injected shard panic"),
        }
        true
    }

    /// Fences the shard after a panic in [`serve`](Self::serve).
    fn fail(&mut self, panic: &str) {
        let index = self.shared.index;
        self.shared.failed.store(true, Ordering::SeqCst);
        tracing::error!(
            shard = index,
            panic,
            "shard thread panicked: the shard is failed; its requests and opens resolve with ShardFailed, \
             its parked messages become dead letters, and it refuses what needs it from now on"
        );
        let filed = self.shared.timers.close(RequestError::ShardFailed);
        self.release_all(filed, DeadLetterReason::ShardFailed, RequestError::ShardFailed);
    }

    /// The loop of a failed shard: whatever is posted to it is refused (a
    /// `Deliver` becomes a dead letter, or resolves its request or open with
    /// `ShardFailed`), barriers pass, and it returns at `Shutdown`.
    fn serve_failed(&mut self) {
        while let Ok(cmd) = self.rx.recv() {
            match cmd {
                Cmd::Deliver { entry, msg } => self.undeliverable(&entry, msg, DeadLetterReason::ShardFailed),
                Cmd::Drain(state) => {
                    state.drain_signaled.swap(false, Ordering::SeqCst);
                }
                Cmd::Shutdown => return,
                Cmd::Unregistered(..) | Cmd::Wake | Cmd::Flush(_) => {}
                #[cfg(test)]
                Cmd::Crash => {}
            }
        }
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

    fn unregistered(&mut self, entry: &Arc<Entry>, reason: DeadLetterReason) {
        if let Some(parked) = self.overflow.remove(&entry.key()) {
            self.discard(parked, reason);
            self.publish_depth();
        }
        self.take_filed();
        // One pass over the heap per unregistration that left requests
        // unanswered; it also drops answered deadlines on the way.
        self.heap.retain(|filed| {
            if filed.pending.targets(&entry.state) {
                filed.pending.resolve(RequestError::ActorNotFound);
                false
            } else {
                !filed.pending.is_done()
            }
        });
        self.live_after_compaction = self.heap.len();
        self.publish_timers();
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
        entry.settled(&self.shared);
    }

    /// Every parked message of one actor is undeliverable.
    fn discard(&mut self, parked: Overflow, reason: DeadLetterReason) {
        self.depth -= parked.queue.len();
        for msg in parked.queue {
            self.undeliverable(&parked.entry, msg, reason);
        }
    }

    /// A message that cannot be delivered: requests and opens get an outcome
    /// (with their payload back), one-way messages become dead letters. Either
    /// way it is no longer in flight.
    fn undeliverable(&self, entry: &Entry, msg: ActorMessage, reason: DeadLetterReason) {
        let outcome = match reason {
            DeadLetterReason::Shutdown => RequestError::Shutdown,
            DeadLetterReason::MailboxClosed => RequestError::MailboxClosed,
            DeadLetterReason::ShardFailed => RequestError::ShardFailed,
            DeadLetterReason::ShardFull => RequestError::ShardFull,
            DeadLetterReason::MailboxFull => RequestError::MailboxFull,
            DeadLetterReason::ActorNotFound | DeadLetterReason::Unregistered => RequestError::ActorNotFound,
        };
        let channel_id = msg.channel_id();
        if let Some(data) = msg.undeliverable(outcome) {
            let letter = DeadLetter { target: entry.id, channel_id, data, reason };
            deliver_dead_letter(&self.shared.counters, self.config.dead_letters.as_ref(), letter);
        }
        entry.settled(&self.shared);
    }

    fn publish_depth(&self) {
        self.shared.counters.overflow_depth.store(self.depth, Ordering::Relaxed);
    }

    fn publish_timers(&self) {
        self.shared.counters.pending_timers.store(self.heap.len(), Ordering::Relaxed);
    }

    /// Moves newly filed deadlines into the heap; `false` if there were none.
    fn take_filed(&mut self) -> bool {
        let fresh = self.shared.timers.take();
        if fresh.is_empty() {
            return false;
        }
        let timers = &self.shared.timers;
        for (pending, deadline) in fresh {
            let at = deadline.map_or(u64::MAX, |d| timers.nanos(d));
            let key = (u128::from(at) << 64) | u128::from(self.next_seq);
            self.heap.push(Filed { pending, deadline, key });
            self.next_seq += 1;
        }
        if self.next_compaction.is_none() {
            self.next_compaction = time::now().checked_add(COMPACTION_PERIOD);
        }
        true
    }

    /// Collects newly filed deadlines and resolves the expired ones: O(log n) per
    /// deadline, whatever else is pending. Answered deadlines are not looked
    /// for here; a compaction drops them.
    fn sweep(&mut self) {
        if self.take_filed() {
            self.quiet_periods = 0;
        } else {
            self.quiet_periods = self.quiet_periods.saturating_add(1);
        }
        let now = time::now();
        while self.heap.peek().is_some_and(|top| top.deadline.is_some_and(|d| d <= now)) {
            if let Some(filed) = self.heap.pop() {
                filed.pending.resolve(RequestError::Timeout);
            }
        }
        let grown = self.heap.len() >= 2 * self.live_after_compaction + 64;
        if grown || self.next_compaction.is_some_and(|at| now >= at) {
            self.compact();
        }
        self.publish_timers();
    }

    /// Drops the deadlines of requests and opens that already have an outcome
    /// (answered, or abandoned by their requester). Runs when the heap has doubled
    /// since the last compaction (so it costs O(1) per deadline, amortized), at
    /// most [`COMPACTION_PERIOD`] after the last one while the heap is not empty,
    /// and at a flush.
    fn compact(&mut self) {
        self.heap.retain(|filed| !filed.pending.is_done());
        self.live_after_compaction = self.heap.len();
        self.next_compaction =
            if self.heap.is_empty() { None } else { time::now().checked_add(COMPACTION_PERIOD) };
        self.publish_timers();
    }

    /// Decides how long to sleep and publishes it, so that requesters with an
    /// earlier deadline know to wake the shard.
    fn plan_sleep(&mut self) -> Option<Instant> {
        loop {
            let timers = &self.shared.timers;
            let earliest = self.heap.peek().and_then(|f| f.deadline);
            let armed = !self.heap.is_empty() || self.quiet_periods < IDLE_PERIODS;
            let period_end = if armed { time::now().checked_add(self.config.resolution) } else { None };
            let wake_at = match (earliest, period_end) {
                (Some(e), Some(p)) => Some(e.min(p)),
                (e, p) => e.or(p),
            };
            timers.next_wake.store(wake_at.map_or(u64::MAX, |at| timers.nanos(at)), Ordering::SeqCst);
            // Anything filed before the store above is in the inbox now; anything
            // filed after it compares against the new value.
            if !self.take_filed() {
                self.next_sweep = wake_at;
                return wake_at;
            }
            self.quiet_periods = 0;
        }
    }

    /// Resolves everything the shard holds: queued and parked messages become
    /// dead letters (requests and opens among them resolve with `Shutdown` and
    /// their payload), then every other unresolved request and open gets
    /// `Shutdown`; queued flush tokens are released.
    fn stop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let filed = self.shared.timers.close(RequestError::Shutdown);
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Deliver { entry, msg } => self.undeliverable(&entry, msg, DeadLetterReason::Shutdown),
                Cmd::Drain(_) | Cmd::Unregistered(..) | Cmd::Wake | Cmd::Flush(_) | Cmd::Shutdown => {}
                #[cfg(test)]
                Cmd::Crash => {}
            }
        }
        self.release_all(filed, DeadLetterReason::Shutdown, RequestError::Shutdown);
    }

    /// Lets go of everything the shard holds: parked messages become dead letters
    /// with `reason` (parked requests and opens first, so that they resolve with
    /// their payload), then every deadline still held — `filed` (taken from the
    /// closed inbox) and the heap — resolves with `error`.
    fn release_all(
        &mut self,
        filed: Vec<(Pending, Option<Instant>)>,
        reason: DeadLetterReason,
        error: RequestError,
    ) {
        let parked: Vec<Overflow> = self.overflow.drain().map(|(_, o)| o).collect();
        for o in parked {
            self.discard(o, reason);
        }
        self.publish_depth();
        for (pending, _) in filed {
            pending.resolve(error);
        }
        for filed in std::mem::take(&mut self.heap) {
            filed.pending.resolve(error);
        }
        self.publish_timers();
    }
}
