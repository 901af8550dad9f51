//! The overflow protocol: how a message reaches a mailbox, directly or through
//! the actor's shard, and how senders wait for room.
//!
//! Three parties take part, each in its own file:
//!
//! * the **sender** (`route.rs`) puts a message straight into the mailbox when
//!   it can, and otherwise posts it to the actor's shard (`Cmd::Deliver`);
//! * the **shard** (`overflow.rs`) parks what found the mailbox full in the
//!   actor's overflow queue and moves it into the mailbox, in order, as room
//!   appears;
//! * the **receiver** ([`Flow::took_one`], called by the
//!   [`Mailbox`](crate::Mailbox)) tells the shard that room appeared
//!   (`Cmd::Drain`), and wakes senders waiting for room.
//!
//! This file holds the state they share — per actor a [`Flow`], per shard a
//! [`ShardLoad`] — and the rules below, which every other file relies on.
//!
//! # Invariants
//!
//! 1. **In flight.** `Flow::in_flight` counts the actor's messages that took the
//!    slow path and are not yet settled (put into the mailbox, or discarded as a
//!    dead letter / failed request). A sender raises it before it posts
//!    `Deliver`; the shard lowers it once the message is settled; a sender whose
//!    post is refused lowers it again itself.
//! 2. **Direct only when nothing is in flight.** A sender puts a message straight
//!    into the mailbox only while `in_flight` is 0. Anything it sent earlier that
//!    went through the shard is still counted, so a later message never overtakes
//!    it: per-pair FIFO holds across overflow. The shard keeps one FIFO queue per
//!    actor, fed in the order of its command queue.
//! 3. **Under the table lock.** Every put into a mailbox, by a sender or by the
//!    shard, happens while the table's read lock for the entry is held — or,
//!    for a send through an [`ActorHandle`](crate::ActorHandle), the read lock
//!    of the registration's gate (`table::Gate`) — and the shard puts only into
//!    the entry that is still registered. Unregistration takes the table's
//!    write lock and then closes the gate (its write lock), so once it returns
//!    nothing more is put; suspend, resume and replace hold both write locks.
//! 4. **One drain notice.** After taking a message, the receiver posts `Drain`
//!    if `in_flight > 0` and no notice is pending (`drain_signaled`, set by a swap).
//!    The shard clears the flag *before* it drains, so a take after the drain
//!    posts again: no room is missed while messages are parked, and at most one
//!    notice per actor is queued.
//! 5. **Bounds.** `in_flight` may reach the overflow bound of the send
//!    (`MailboxFull` past it); `ShardLoad::parked`, raised and lowered together
//!    with every `in_flight`, may reach the shard's `max_parked` (`ShardFull` past
//!    it). Close notices, which a peer must receive, use a bound of `usize::MAX`
//!    and are never refused; they still count.
//! 6. **No lost wake-up.** A sender waiting for room registers in the wait list
//!    of what refused it — the actor's (`MailboxFull`) or the shard's
//!    (`ShardFull`) — and only then tries again. Whoever makes room lowers its
//!    count (or takes from the mailbox) and only then looks at the list. Both
//!    sides use `SeqCst` (the mailbox's queue lock orders a take against a put),
//!    so either the retry sees the room or the room-maker sees the waiter. A
//!    receiver that finds messages in flight leaves the wake-up to the settles
//!    that will lower the count, so a refused admission never raises it, and
//!    an admission undone wakes those it may have kept out.
//! 7. **Suspension holds.** A suspended actor's flow has the `SUSPENDED` flag
//!    set (under the table's write lock, so no put is in progress), which keeps
//!    every sender off the fast path; the shard, told by a `Suspend` command
//!    posted under the same lock (so before any message sent after it), holds
//!    the actor's queue: messages are parked and counted against the bound but
//!    not delivered. `Resume` clears the flag and lets the shard drain the queue
//!    in order; later sends queue behind what was held.
//! 8. **A replaced mailbox moves whole.** `replace_mailbox` swaps the table
//!    entry under its write lock, after marking the new flow `MOVING` (so every
//!    send goes through the shard), and posts `Replace` under the same lock.
//!    Messages for the old entry that reach the shard before `Replace` are
//!    queued, not delivered; at `Replace` the shard takes what is still in the
//!    old mailbox, then the old queue, puts them at the head of the new queue,
//!    counts them in flight there (against the bound, as any parked message),
//!    and clears `MOVING`. Order is kept: the old
//!    mailbox's messages are older than the old queue's, which are older than
//!    anything sent to the new entry.

pub(crate) mod overflow;
pub(crate) mod route;

use std::task::Waker;

use crate::fence;
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};

/// Set in [`Flow::in_flight`] while the actor is suspended: its messages are held
/// at the shard (invariant 7).
const SUSPENDED: usize = 1 << (usize::BITS - 1);
/// Set in [`Flow::in_flight`] of a replacement registration until the shard has
/// moved the old mailbox's messages ahead of it (invariant 8).
const MOVING: usize = 1 << (usize::BITS - 2);
/// The part of [`Flow::in_flight`] that counts messages.
const COUNT: usize = MOVING - 1;

/// One actor's part in the protocol, kept in its registration's state.
///
/// Laid out so that what a receive reads (`in_flight`, then `waiters.waiting`)
/// is its first 16 bytes: one cache line whenever the flow starts at a 16-byte
/// boundary, as it does in the registration's state today. (`align(16)` would
/// make that certain, but grows that state and measured no better.)
#[repr(C)]
pub(crate) struct Flow {
    /// Messages that took the slow path and are not settled yet (invariant 1),
    /// in the low bits; the [`SUSPENDED`] and [`MOVING`] flags in the high ones,
    /// so that one load decides the fast path.
    in_flight: AtomicUsize,
    /// Senders waiting for the actor's in-flight count to fall, or for room in
    /// its mailbox (invariant 6); woken to try again when the actor leaves too.
    pub(crate) waiters: WaitList,
    /// Set while a `Drain` notice is queued to the shard (invariant 4).
    drain_signaled: AtomicBool,
}

impl Flow {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            drain_signaled: AtomicBool::new(false),
            waiters: WaitList::new(),
        }
    }

    /// `true` if a sender may put straight into the mailbox (invariant 2):
    /// nothing in flight, not suspended, not being moved.
    pub(crate) fn direct(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// `true` while messages of the actor are at its shard (or it is suspended
    /// or being moved: then the shard decides when the mailbox gets more).
    pub(crate) fn has_in_flight(&self) -> bool {
        !self.direct()
    }

    /// Counts one message in flight, unless `bound` are already (invariant 5).
    /// A refusal leaves the count untouched — a receiver that saw a passing
    /// increment would leave its wake-up to a settle that never comes — and is
    /// confirmed by a read-modify-write, which reads the latest count: a settle
    /// that lowers it afterwards then synchronizes with this sender and sees it
    /// waiting (invariant 6).
    fn admit(&self, bound: usize) -> bool {
        let mut n = self.in_flight.load(Ordering::SeqCst);
        loop {
            if n & COUNT >= bound {
                n = self.in_flight.fetch_add(0, Ordering::SeqCst);
                if n & COUNT >= bound {
                    return false;
                }
            }
            match self.in_flight.compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(current) => n = current,
            }
        }
    }

    /// Undoes an [`admit`](Self::admit) whose message was not posted after all.
    /// If the count stood at `bound` meanwhile, senders refused for it are
    /// woken to try again.
    fn unadmit(&self, bound: usize) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) & COUNT >= bound {
            self.waiters.wake_all();
        }
    }

    /// Suspends the actor (invariant 7); `false` if it already was.
    pub(crate) fn suspend(&self) -> bool {
        self.in_flight.fetch_or(SUSPENDED, Ordering::SeqCst) & SUSPENDED == 0
    }

    /// Ends a suspension; `false` if the actor was not suspended.
    pub(crate) fn resume(&self) -> bool {
        self.in_flight.fetch_and(!SUSPENDED, Ordering::SeqCst) & SUSPENDED != 0
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) & SUSPENDED != 0
    }

    /// Marks a replacement registration as being moved into (invariant 8),
    /// suspended if the one it replaces was. Called before anyone can send to it.
    pub(crate) fn begin_move(&self, suspended: bool) {
        let flags = if suspended { MOVING | SUSPENDED } else { MOVING };
        self.in_flight.fetch_or(flags, Ordering::SeqCst);
    }

    /// The shard moved `count` messages to this flow (the replaced mailbox's
    /// leftovers and parked messages): they count as in flight here, and the
    /// move is over. Senders waiting on it try again.
    pub(crate) fn end_move(&self, count: usize) {
        self.in_flight.fetch_add(count, Ordering::SeqCst);
        self.in_flight.fetch_and(!MOVING, Ordering::SeqCst);
        self.waiters.wake_all();
    }

    /// `count` parked messages were moved to another flow (see
    /// [`end_move`](Self::end_move)): they no longer count here.
    pub(crate) fn moved_away(&self, count: usize) {
        if count > 0 {
            self.in_flight.fetch_sub(count, Ordering::SeqCst);
        }
    }

    /// The receiver took a message. While messages are in flight, the room is
    /// the shard's to fill: tell it (through `post_drain`) unless a notice is
    /// pending; the senders waiting on the in-flight count are woken as the
    /// shard settles what it moves. Otherwise the room is for senders, and those
    /// waiting for it are woken.
    ///
    /// Inlined into every receive: the usual case (nothing in flight, nobody
    /// waiting) is two loads; the rest lives out of line.
    #[inline]
    pub(crate) fn took_one(&self, post_drain: impl FnOnce() -> bool) {
        if self.has_in_flight() {
            self.signal_drain(post_drain);
        } else {
            self.waiters.wake_all();
        }
    }

    /// Posts a `Drain` notice unless one is pending (invariant 4).
    #[inline(never)]
    fn signal_drain(&self, post_drain: impl FnOnce() -> bool) {
        if !self.drain_signaled.swap(true, Ordering::SeqCst) && !post_drain() {
            self.drain_signaled.store(false, Ordering::SeqCst);
        }
    }

    /// The shard took the pending `Drain` notice, before it drains (invariant 4).
    pub(crate) fn drain_taken(&self) {
        // A swap, not a store: every update of the flag is then a
        // read-modify-write that reads the latest value. C11 orders a plain store
        // the same way; loom's model does not, and reports a lost `Drain` that
        // cannot happen.
        self.drain_signaled.swap(false, Ordering::SeqCst);
    }
}

/// One shard's load: the messages parked at it for all its actors.
pub(crate) struct ShardLoad {
    /// The sum of its actors' in-flight counts (invariant 5).
    parked: AtomicUsize,
    /// The most `parked` may reach before sends are refused with `ShardFull`.
    max_parked: usize,
    /// Senders refused with `ShardFull`, waiting for `parked` to fall; woken
    /// too when the shard fails or stops.
    pub(crate) waiters: WaitList,
}

/// Why [`ShardLoad::admit`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The actor's overflow bound is reached.
    MailboxFull,
    /// The shard's bound is reached.
    ShardFull,
}

impl ShardLoad {
    pub(crate) fn new(max_parked: usize) -> Self {
        Self { parked: AtomicUsize::new(0), max_parked, waiters: WaitList::new() }
    }

    /// Counts one message of the actor whose flow is `flow` in flight, within
    /// `bound` for the actor and the shard's own bound (a `bound` of
    /// `usize::MAX` is never refused; invariant 5).
    pub(crate) fn admit(&self, flow: &Flow, bound: usize) -> Result<(), Refusal> {
        if !flow.admit(bound) {
            return Err(Refusal::MailboxFull);
        }
        if self.parked.fetch_add(1, Ordering::SeqCst) >= self.max_parked && bound != usize::MAX {
            // The shard's count was already at its bound: nobody can have been
            // refused by this passing increment who would not have been anyway.
            self.parked.fetch_sub(1, Ordering::SeqCst);
            flow.unadmit(bound);
            return Err(Refusal::ShardFull);
        }
        Ok(())
    }

    /// Undoes an [`admit`](Self::admit) whose message could not be posted (the
    /// shard stopped); wakes those waiting on either count, as a settle does.
    pub(crate) fn unadmit(&self, flow: &Flow) {
        self.parked.fetch_sub(1, Ordering::SeqCst);
        flow.unadmit(0);
        self.waiters.wake_all();
    }

    /// `count` messages became parked at the shard without a sender's admission:
    /// the leftovers of a replaced mailbox (invariant 8).
    pub(crate) fn add_parked(&self, count: usize) {
        if count > 0 {
            self.parked.fetch_add(count, Ordering::SeqCst);
        }
    }

    /// One message of the actor whose flow is `flow` is settled: it is no longer
    /// in flight, and senders waiting for room try again (invariant 6).
    pub(crate) fn settled(&self, flow: &Flow) {
        self.parked.fetch_sub(1, Ordering::SeqCst);
        flow.in_flight.fetch_sub(1, Ordering::SeqCst);
        flow.waiters.wake_all();
        self.waiters.wake_all();
    }
}

/// Tasks waiting for room, each under a ticket so that a future that goes away
/// can withdraw. Woken all at once: each tries again and registers anew if it is
/// still refused. Empty (and unallocated) unless someone waits.
#[repr(C)]
pub(crate) struct WaitList {
    /// Registrations alive; checked without the lock by whoever makes room.
    waiting: AtomicUsize,
    list: Mutex<Option<Box<Waiters>>>,
}

#[derive(Default)]
struct Waiters {
    next_ticket: u64,
    wakers: Vec<(u64, Waker)>,
}

impl WaitList {
    fn new() -> Self {
        Self { waiting: AtomicUsize::new(0), list: Mutex::new(None) }
    }

    /// Registers `waker`; returns the registration's ticket.
    pub(crate) fn register(&self, waker: &Waker) -> u64 {
        let mut list = self.list.lock();
        let waiters = list.get_or_insert_with(Box::default);
        let ticket = waiters.next_ticket;
        waiters.next_ticket += 1;
        waiters.wakers.push((ticket, waker.clone()));
        self.waiting.fetch_add(1, Ordering::SeqCst);
        ticket
    }

    /// Withdraws the registration under `ticket`, if it is still there.
    pub(crate) fn remove(&self, ticket: u64) {
        let mut list = self.list.lock();
        if let Some(waiters) = list.as_mut() {
            if let Some(i) = waiters.wakers.iter().position(|(t, _)| *t == ticket) {
                waiters.wakers.swap_remove(i);
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Wakes and forgets every registration. One load when nobody waits, inlined
    /// into the caller (the receive path calls this on every take).
    #[inline]
    pub(crate) fn wake_all(&self) {
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.wake_registered();
        }
    }

    /// [`wake_all`](Self::wake_all) when someone may be waiting.
    #[cold]
    #[inline(never)]
    fn wake_registered(&self) {
        let wakers = {
            let mut list = self.list.lock();
            let Some(waiters) = list.as_mut() else { return };
            self.waiting.fetch_sub(waiters.wakers.len(), Ordering::SeqCst);
            std::mem::take(&mut waiters.wakers)
        };
        for (_, waker) in wakers {
            fence::wake(Some(waker));
        }
    }
}
