//! A shard's inbox: the commands callers post to a shard thread ([`Cmd`]), the
//! state they share with it ([`Shared`]: its table partition, timers, counters and
//! load), the handle they post through ([`ShardHandle`]), and the flush barrier.

use std::time::Instant;

use crate::delivery::ShardLoad;
use crate::error::RequestError;
use crate::fence;
use crate::ids::Participant;
use crate::message::Queued;
use crate::metrics::{Counters, DeadLetter, DeadLetterReason};
use crate::registration::MailboxState;
use crate::slot::ReplySlot;
use crate::sync::{queue, Arc, AtomicBool, Ordering};
use crate::table::{Entry, Table};
use crate::timers::{Pending, Timers};

/// A callback receiving dead letters.
pub(crate) type DeadLetterSink = Arc<dyn Fn(DeadLetter) + Send + Sync>;

/// What callers post to a shard.
pub(crate) enum Cmd {
    /// A message to deliver through the actor's overflow queue. The sender counted
    /// it in the actor's `in_flight` and the shard's `parked`.
    ///
    /// It is for `who`'s registration `state`; the shard puts it into the
    /// mailbox it finds registered there, if that is still `state`.
    Deliver { who: Participant, state: Arc<MailboxState>, msg: Queued },
    /// The actor's mailbox took a message while messages were in flight.
    Drain(Arc<MailboxState>),
    /// The actor was removed from the table; clean up what the shard holds for it.
    /// What was parked for it becomes dead letters with this reason.
    Unregistered(Arc<MailboxState>, DeadLetterReason),
    /// The actor was suspended: hold its queue (see `delivery`, invariant 7).
    Suspend(Participant, Arc<MailboxState>),
    /// The actor was resumed: drain its queue again.
    Resume(Arc<MailboxState>),
    /// The actor's mailbox was replaced: move what the old one holds ahead of
    /// the new one's (see `delivery`, invariant 8).
    ///
    /// `old` is the entry taken out of the table (its mailbox stays open until
    /// the shard has emptied it).
    Replace { who: Participant, old: Entry, new: Arc<MailboxState> },
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
    /// Set when the shard thread panicked (see `Shard::run`).
    failed: AtomicBool,
    /// Messages parked here for all its actors, and their bound (see `delivery`).
    pub(crate) load: ShardLoad,
}

impl Shared {
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Marks the shard failed: from here on what needs it is refused.
    pub(crate) fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// A caller's handle to a shard.
pub(crate) struct ShardHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: queue::Sender<Cmd>,
}

impl ShardHandle {
    pub(crate) fn new(index: usize, max_parked: usize) -> (Self, queue::Receiver<Cmd>) {
        let (cmd, rx) = queue::unbounded();
        let shared = Arc::new(Shared {
            index,
            table: Table::new(),
            timers: Timers::new(),
            counters: Counters::default(),
            closing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            load: ShardLoad::new(max_parked),
        });
        (Self { shared, cmd }, rx)
    }

    /// Files a deadline with the shard (see [`Timers::file`]), waking it if it
    /// would otherwise sleep past it.
    pub(crate) fn file(&self, pending: Pending, deadline: Option<Instant>) -> Result<(), RequestError> {
        if self.shared.timers.file(pending, deadline)? {
            let _ = self.cmd.send(Cmd::Wake);
        }
        Ok(())
    }

    pub(crate) fn dead_letter(&self, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
        deliver_dead_letter(&self.shared.counters, sink, letter);
    }
}

/// Counts a dead letter and hands it to the sink, behind the fence: a panicking
/// sink is counted in `callback_panics` and the caller carries on.
pub(crate) fn deliver_dead_letter(counters: &Counters, sink: Option<&DeadLetterSink>, letter: DeadLetter) {
    Counters::bump(&counters.dead_letters);
    #[cfg(feature = "metrics")]
    Counters::bump(&counters.dead_letters_by_reason[letter.reason.index()]);
    tracing::warn!(actor = %letter.target, reason = ?letter.reason, len = letter.data.len(), "dead letter");
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
