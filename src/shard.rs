//! The shard thread: it serves its inbox (`inbox.rs`) and owns, for the actors
//! hashed to it:
//!
//! * **overflow queues** (`delivery/overflow.rs`) — messages that found the mailbox
//!   full (or arrived while earlier ones were still parked) wait there in FIFO
//!   order, moved into the mailbox as room appears (see `delivery`);
//! * **request deadlines** (their inbox and heap entries are in `timers.rs`) — a
//!   requester files its deadline in the shard's timer inbox (a short mutex push)
//!   without waking the shard. The shard sleeps until the earliest deadline it
//!   knows of, and while requests are flowing it also wakes at a coarse period (the
//!   timer resolution) to collect newly filed ones. A requester wakes the shard only
//!   when its deadline is earlier than the shard's next wake;
//! * **clean-up** — parked messages and unresolved requests of an actor that
//!   unregisters, and everything at shutdown.

use std::collections::BinaryHeap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::delivery::overflow::Overflow;
use crate::error::RequestError;
use crate::fence;
use crate::inbox::{Cmd, DeadLetterSink, ShardHandle, Shared};
use crate::metrics::DeadLetterReason;
use crate::registration::MailboxState;
use crate::sync::{queue, time, Arc, Ordering};
use crate::table;
use crate::timers::{Filed, Pending};

/// Quiet timer periods after which an idle shard stops waking periodically.
const IDLE_PERIODS: u32 = 64;
/// Most commands handled between two looks at the clock.
const BATCH: usize = 256;
/// The longest an answered request's deadline stays in the shard's heap when it
/// is not at the top (see [`Shard::compact`]).
const COMPACTION_PERIOD: Duration = Duration::from_secs(1);

/// Configuration a shard thread needs.
pub(crate) struct ShardConfig {
    pub(crate) resolution: Duration,
    pub(crate) dead_letters: Option<DeadLetterSink>,
}

/// The state owned by one shard thread.
pub(crate) struct Shard {
    shared: Arc<Shared>,
    rx: queue::Receiver<Cmd>,
    /// The timer resolution: how often a shard with deadlines wakes on its own.
    resolution: Duration,
    overflow: Overflow,
    /// Deadlines, earliest on top. Answered ones are dropped lazily: popped when
    /// they reach the top, or at a compaction.
    heap: BinaryHeap<Filed>,
    /// The buffer the next filings go into after a take (see `Timers::take_into`).
    fresh: Vec<(Pending, Option<Instant>)>,
    next_seq: u64,
    /// Deadlines alive after the last compaction, and when the next is due.
    live_after_compaction: usize,
    next_compaction: Option<Instant>,
    quiet_periods: u32,
    next_sweep: Option<Instant>,
}

impl Shard {
    pub(crate) fn new(handle: &ShardHandle, rx: queue::Receiver<Cmd>, config: ShardConfig) -> Self {
        let ShardConfig { resolution, dead_letters } = config;
        Self {
            shared: Arc::clone(&handle.shared),
            rx,
            resolution,
            overflow: Overflow::new(Arc::clone(&handle.shared), dead_letters),
            heap: BinaryHeap::new(),
            fresh: Vec::new(),
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
                    Err(queue::RecvTimeoutError::Timeout) => None,
                    Err(queue::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => break,
                },
            };
            #[cfg(feature = "metrics")]
            let woke = time::now();
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
            #[cfg(feature = "metrics")]
            self.count_busy(woke);
        }
    }

    /// Adds the time since `woke` to the shard's busy time (feature `metrics`):
    /// two clock reads per wake-up, however many commands it handled.
    #[cfg(feature = "metrics")]
    fn count_busy(&self, woke: Instant) {
        let nanos = u64::try_from(time::now().saturating_duration_since(woke).as_nanos()).unwrap_or(u64::MAX);
        self.shared.counters.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Handles one command; `false` means stop.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Deliver { who, state, msg } => self.overflow.deliver(who, state, msg),
            Cmd::Drain(state) => {
                state.flow.drain_taken();
                self.overflow.drain(table::key(&state));
            }
            Cmd::Unregistered(state, reason) => self.unregistered(&state, reason),
            Cmd::Suspend(who, state) => self.overflow.suspend(who, state),
            Cmd::Resume(state) => self.overflow.resume(&state),
            Cmd::Replace { who, old, new } => self.overflow.replace(who, &old, new),
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
        self.shared.mark_failed();
        self.shared.load.waiters.wake_all();
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
                Cmd::Deliver { who, state, msg } => {
                    self.overflow.undeliverable(who, &state, msg, DeadLetterReason::ShardFailed);
                }
                Cmd::Drain(state) => state.flow.drain_taken(),
                // The move still happens (into the new mailbox while it has
                // room; what is left is dead-lettered when the shard stops), so
                // that the replacement's flow leaves its moving state.
                Cmd::Replace { who, old, new } => self.overflow.replace(who, &old, new),
                Cmd::Suspend(..) | Cmd::Resume(_) => {}
                Cmd::Shutdown => return,
                Cmd::Unregistered(..) | Cmd::Wake | Cmd::Flush(_) => {}
                #[cfg(test)]
                Cmd::Crash => {}
            }
        }
    }

    fn unregistered(&mut self, state: &Arc<MailboxState>, reason: DeadLetterReason) {
        self.overflow.unregistered(state, reason);
        self.take_filed();
        // One pass over the heap per unregistration that left requests
        // unanswered; it also drops answered deadlines on the way.
        self.heap.retain(|filed| {
            if filed.pending.targets(state) {
                filed.pending.resolve(RequestError::ActorNotFound);
                false
            } else {
                !filed.pending.is_done()
            }
        });
        self.live_after_compaction = self.heap.len();
        self.publish_timers();
    }

    fn publish_timers(&self) {
        self.shared.counters.pending_timers.store(self.heap.len(), Ordering::Relaxed);
    }

    /// Moves newly filed deadlines into the heap; `false` if there were none.
    fn take_filed(&mut self) -> bool {
        let timers = &self.shared.timers;
        timers.take_into(&mut self.fresh);
        if self.fresh.is_empty() {
            return false;
        }
        for (pending, deadline) in self.fresh.drain(..) {
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
            let period_end = if armed { time::now().checked_add(self.resolution) } else { None };
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
                Cmd::Deliver { who, state, msg } => {
                    self.overflow.undeliverable(who, &state, msg, DeadLetterReason::Shutdown);
                }
                Cmd::Drain(_)
                | Cmd::Unregistered(..)
                | Cmd::Suspend(..)
                | Cmd::Resume(_)
                | Cmd::Replace { .. }
                | Cmd::Wake
                | Cmd::Flush(_)
                | Cmd::Shutdown => {}
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
        self.overflow.release_all(reason);
        for (pending, _) in filed {
            pending.resolve(error);
        }
        for filed in std::mem::take(&mut self.heap) {
            filed.pending.resolve(error);
        }
        self.publish_timers();
    }
}
