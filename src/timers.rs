//! Deadlines of requests, channel opens and bounded sends: the list requesters
//! file them in without waking the shard, and the heap entries the shard keeps
//! them in.
//!
//! A requester pushes its deadline into the target shard's list (a short mutex
//! push) and wakes the shard only if the deadline is earlier than the shard's next
//! planned wake (`next_wake`). The shard moves filed deadlines into a binary heap
//! keyed by one integer (deadline, then filing order): O(log n) per deadline.

use std::cmp::Ordering as CmpOrdering;
use std::time::Instant;

use crate::channels::OpenSlot;
use crate::error::RequestError;
use crate::registration::MailboxState;
use crate::slot::ReplySlot;
use crate::sync::{time, Arc, AtomicU64, Mutex, Ordering};

/// Something with a deadline, kept by the target's shard.
pub(crate) enum Pending {
    Request(Arc<ReplySlot<Vec<u8>>>),
    Open(Arc<OpenSlot>),
    /// A bounded send waiting for room: completing the slot wakes it.
    Send(Arc<ReplySlot<()>>),
}

impl Pending {
    pub(crate) fn is_done(&self) -> bool {
        match self {
            Self::Request(slot) => slot.is_done(),
            Self::Open(open) => open.is_done(),
            Self::Send(slot) => slot.is_done(),
        }
    }

    /// Resolves with `error` unless already resolved.
    pub(crate) fn resolve(&self, error: RequestError) {
        match self {
            Self::Request(slot) => {
                let _ = slot.complete(Err(error.into()));
            }
            Self::Open(open) => {
                OpenSlot::decide(open, Err(error.into()));
            }
            Self::Send(slot) => {
                let _ = slot.complete(Err(error.into()));
            }
        }
    }

    pub(crate) fn targets(&self, state: &Arc<MailboxState>) -> bool {
        match self {
            Self::Request(slot) => slot.targets(state),
            Self::Open(open) => open.slot.targets(state),
            // A waiting send wakes when the actor leaves (its wait list is woken).
            Self::Send(_) => false,
        }
    }
}

/// A deadline in the shard's heap. Ordered so that the max-heap's top is the
/// earliest deadline (`None`, no deadline, last), ties broken by filing order.
pub(crate) struct Filed {
    pub(crate) pending: Pending,
    pub(crate) deadline: Option<Instant>,
    /// The deadline in nanoseconds since the timers' epoch (`u64::MAX`: none) in
    /// the high half, the filing order in the low half: one integer compare.
    pub(crate) key: u128,
}

impl PartialEq for Filed {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Filed {}

impl PartialOrd for Filed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Filed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.key.cmp(&self.key)
    }
}

#[derive(Default)]
struct Inbox {
    filed: Vec<(Pending, Option<Instant>)>,
    /// Set when the shard stops taking deadlines: why.
    closed: Option<RequestError>,
}

/// A shard's deadline list: requesters file deadlines here without waking the shard.
pub(crate) struct Timers {
    inbox: Mutex<Inbox>,
    /// When the shard will next wake on its own, in nanoseconds since `epoch`
    /// (`u64::MAX`: not until a command arrives).
    pub(crate) next_wake: AtomicU64,
    epoch: Instant,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Self { inbox: Mutex::new(Inbox::default()), next_wake: AtomicU64::new(u64::MAX), epoch: time::now() }
    }

    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Files a deadline (`None`: none, kept only so the request can be resolved
    /// at unregistration or shutdown). `Ok(true)` if the shard must be woken: it
    /// would otherwise sleep past `deadline`. Once the shard has stopped taking
    /// deadlines, fails with why (`Shutdown`, `ShardFailed`).
    pub(crate) fn file(&self, pending: Pending, deadline: Option<Instant>) -> Result<bool, RequestError> {
        {
            let mut inbox = self.inbox.lock();
            if let Some(reason) = inbox.closed {
                return Err(reason);
            }
            inbox.filed.push((pending, deadline));
        }
        let Some(deadline) = deadline else { return Ok(false) };
        let at = self.nanos(deadline);
        // Most deadlines are later than the shard's next wake: a plain load settles
        // those without writing the shared word.
        Ok(at < self.next_wake.load(Ordering::SeqCst) && at < self.next_wake.fetch_min(at, Ordering::SeqCst))
    }

    /// Swaps what was filed into `spare`, which must be empty, and leaves
    /// `spare`'s buffer for the next filings: the shard hands the same two
    /// buffers back and forth, so filing a deadline does not allocate once they
    /// have grown to the load.
    pub(crate) fn take_into(&self, spare: &mut Vec<(Pending, Option<Instant>)>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.inbox.lock().filed, spare);
    }

    /// Stops taking deadlines (later filings fail with `reason`) and returns what
    /// was filed but not yet taken.
    pub(crate) fn close(&self, reason: RequestError) -> Vec<(Pending, Option<Instant>)> {
        let mut inbox = self.inbox.lock();
        inbox.closed.get_or_insert(reason);
        std::mem::take(&mut inbox.filed)
    }
}
