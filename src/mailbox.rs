//! Actor mailboxes: a bounded queue plus the little state the router shares with
//! its receiving side.
//!
//! The receiving half ([`Mailbox`]) takes part in overflow delivery: when it takes a
//! message while the actor has messages parked at its shard, it tells the shard once
//! that room has appeared. The shard therefore never polls and never blocks on one
//! mailbox.
//!
//! It also watches the actor's life: when the last receiving half of a registered
//! mailbox is dropped (the actor's task ended or panicked), the actor is
//! unregistered there and then, as [`Router::unregister`](crate::Router::unregister)
//! would.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Disconnected, RequestError, TryRecvError};
use crate::ids::{ChannelId, Participant};
use crate::message::ActorMessage;
use crate::routing::Inner;
use crate::shard::Cmd;
use crate::sync::{chan, random_state, time, Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

/// State shared by a mailbox's two halves and the router, one per registration.
pub(crate) struct MailboxState {
    /// Messages accepted for this actor but not yet delivered: queued to its shard or
    /// parked in the shard's overflow queue. While it is non-zero every send to the
    /// actor goes through the shard, which keeps per-pair FIFO order. Raised by a
    /// sender before it posts to the shard, lowered by the shard after delivery.
    pub(crate) in_flight: AtomicUsize,
    /// Requests to this actor that have no outcome yet.
    pub(crate) outstanding: AtomicUsize,
    /// Set while a `Drain` notice from the receiving side is queued to the shard.
    pub(crate) drain_signaled: AtomicBool,
    /// Receiving halves ([`Mailbox`] clones) alive.
    receivers: AtomicUsize,
    /// The registration, set when it starts and when it ends. Answers to the
    /// actor's requests are accepted under this lock, and the registration ends
    /// under it, so none is accepted once it has ended.
    link: Mutex<Link>,
    /// The channels this participant takes part in (open or opening).
    channels: Mutex<ChannelSet>,
    capacity: usize,
}

#[derive(Default)]
struct ChannelSet {
    /// Each channel with the order in which it was linked. Allocated with the
    /// first channel: most actors never hold one, and a boxed map costs an actor 8
    /// bytes instead of the 64 of an inline one.
    #[allow(clippy::box_collection)]
    ids: Option<Box<HashMap<ChannelId, u64, ahash::RandomState>>>,
    /// The next link's order number.
    next: u64,
    /// Set when the participant leaves; no channel can be linked after that.
    closed: bool,
}

/// Where a mailbox stands with the router.
enum Link {
    /// Not registered (yet).
    Unlinked,
    /// Registered as `who`.
    Linked { who: Participant, router: Arc<Inner> },
    /// The registration ended; requests still unanswered resolve with this.
    Left(RequestError),
}

impl MailboxState {
    /// Starts the registration of `who`.
    pub(crate) fn link(&self, who: Participant, router: Arc<Inner>) {
        *self.link.lock() = Link::Linked { who, router };
    }

    /// Undoes [`link`](Self::link) for a registration that did not take place.
    pub(crate) fn reset_link(&self) {
        let old = std::mem::replace(&mut *self.link.lock(), Link::Unlinked);
        drop(old);
    }

    /// Runs `f(arg)` while the registration lasts; once it has ended, hands `arg`
    /// back with the reason.
    pub(crate) fn while_registered<A, R>(
        &self,
        arg: A,
        f: impl FnOnce(A) -> R,
    ) -> Result<R, (RequestError, A)> {
        let link = self.link.lock();
        match &*link {
            Link::Left(reason) => Err((*reason, arg)),
            Link::Unlinked | Link::Linked { .. } => Ok(f(arg)),
        }
    }

    /// Why the registration ended, once it has.
    pub(crate) fn left(&self) -> Option<RequestError> {
        match &*self.link.lock() {
            Link::Left(reason) => Some(*reason),
            Link::Unlinked | Link::Linked { .. } => None,
        }
    }

    /// Receiving halves alive.
    pub(crate) fn receivers(&self) -> usize {
        self.receivers.load(Ordering::SeqCst)
    }

    /// Records that this participant takes part in `channel`; `false` once it left.
    pub(crate) fn link_channel(&self, channel: ChannelId) -> bool {
        let mut set = self.channels.lock();
        if set.closed {
            return false;
        }
        let order = set.next;
        set.next += 1;
        let ids = set.ids.get_or_insert_with(|| Box::new(HashMap::with_hasher(random_state())));
        ids.insert(channel, order).is_none()
    }

    pub(crate) fn unlink_channel(&self, channel: ChannelId) {
        if let Some(ids) = &mut self.channels.lock().ids {
            ids.remove(&channel);
        }
    }

    /// Marks the participant as gone and returns its channels in the order they
    /// were linked (opened), so peers are told in a deterministic order.
    pub(crate) fn take_channels(&self) -> Vec<ChannelId> {
        let mut set = self.channels.lock();
        set.closed = true;
        let mut linked: Vec<(u64, ChannelId)> = set
            .ids
            .take()
            .map(|ids| ids.into_iter().map(|(id, order)| (order, id)).collect())
            .unwrap_or_default();
        linked.sort_unstable_by_key(|&(order, _)| order);
        linked.into_iter().map(|(_, id)| id).collect()
    }

    /// Ends the registration once the entry has left the table: from here on
    /// answers to the actor's requests are refused and resolve with `reason`.
    /// Also drops the link to the router: a command holding this state that is
    /// still queued when a shard stops would otherwise keep the router alive
    /// through it, a reference cycle.
    pub(crate) fn unlink(&self, reason: RequestError) {
        let old = {
            let mut link = self.link.lock();
            if matches!(*link, Link::Left(_)) {
                return;
            }
            std::mem::replace(&mut *link, Link::Left(reason))
        };
        // Dropped outside the lock: it may hold the last reference to the router.
        drop(old);
    }
}

/// Creates a mailbox holding at most `capacity` messages (at least 1).
///
/// Register the sending half with [`Router::register`](crate::Router::register); the
/// actor keeps the [`Mailbox`].
#[must_use]
pub fn mailbox(capacity: usize) -> (MailboxSender, Mailbox) {
    let capacity = capacity.max(1);
    let (tx, rx) = chan::bounded(capacity);
    let state = Arc::new(MailboxState {
        in_flight: AtomicUsize::new(0),
        outstanding: AtomicUsize::new(0),
        drain_signaled: AtomicBool::new(false),
        receivers: AtomicUsize::new(1),
        link: Mutex::new(Link::Unlinked),
        channels: Mutex::new(ChannelSet::default()),
        capacity,
    });
    (MailboxSender { tx, state: Arc::clone(&state) }, Mailbox { rx, state })
}

/// The sending half of a mailbox, consumed by registration.
pub struct MailboxSender {
    pub(crate) tx: chan::Sender<ActorMessage>,
    pub(crate) state: Arc<MailboxState>,
}

impl fmt::Debug for MailboxSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender").field("capacity", &self.state.capacity).finish_non_exhaustive()
    }
}

/// The receiving half of an actor's mailbox.
///
/// Receives return [`Disconnected`] once the actor is unregistered (or the router
/// shut down) and every message delivered before that has been taken.
///
/// Dropping the last clone of a registered actor's mailbox unregisters the actor
/// there and then (its channels close, with the peers told; what was parked for it
/// becomes dead letters with reason `MailboxClosed`, parked requests coming back
/// with `MailboxClosed` and their payload; requests it had received resolve with
/// `ActorNotFound`), as an actor whose task ended can no longer take anything.
pub struct Mailbox {
    rx: chan::Receiver<ActorMessage>,
    state: Arc<MailboxState>,
}

impl Mailbox {
    /// Blocks until a message arrives.
    ///
    /// # Errors
    /// [`Disconnected`] when the actor is unregistered and the mailbox is drained.
    pub fn recv(&self) -> Result<ActorMessage, Disconnected> {
        let msg = self.rx.recv().map_err(|_| Disconnected)?;
        self.took_one();
        Ok(msg)
    }

    /// Takes a message if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Disconnected`].
    pub fn try_recv(&self) -> Result<ActorMessage, TryRecvError> {
        let msg = self.rx.try_recv().map_err(|e| match e {
            chan::TryRecvError::Empty => TryRecvError::Empty,
            chan::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })?;
        self.took_one();
        Ok(msg)
    }

    /// Waits at most `timeout` for a message (`Duration::MAX`: no limit).
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] at the timeout, or [`TryRecvError::Disconnected`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ActorMessage, TryRecvError> {
        match time::deadline_in(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv().map_err(|Disconnected| TryRecvError::Disconnected),
        }
    }

    /// Waits until `deadline` for a message.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] at the deadline, or [`TryRecvError::Disconnected`].
    pub fn recv_deadline(&self, deadline: Instant) -> Result<ActorMessage, TryRecvError> {
        let msg = self.rx.recv_deadline(deadline).map_err(|e| match e {
            chan::RecvTimeoutError::Timeout => TryRecvError::Empty,
            chan::RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
        })?;
        self.took_one();
        Ok(msg)
    }

    /// Waits for a message without blocking the thread. Runtime-agnostic.
    ///
    /// # Errors
    /// [`Disconnected`] when the actor is unregistered and the mailbox is drained.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when the future completes.
    pub async fn recv_async(&self) -> Result<ActorMessage, Disconnected> {
        let msg = self.rx.recv_async().await.map_err(|_| Disconnected)?;
        self.took_one();
        Ok(msg)
    }

    /// Messages waiting in the mailbox (not counting any parked at the shard).
    #[must_use]
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// `true` if no message is waiting in the mailbox.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The mailbox's capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.state.capacity
    }

    /// Room has appeared; if messages are parked for this actor, tell the shard
    /// (once, until the shard has acted on it).
    fn took_one(&self) {
        let state = &self.state;
        if state.in_flight.load(Ordering::SeqCst) > 0 && !state.drain_signaled.swap(true, Ordering::SeqCst) {
            let link = state.link.lock();
            let posted = match &*link {
                Link::Linked { who, router } => {
                    router.shard(who).cmd.send(Cmd::Drain(Arc::clone(state))).is_ok()
                }
                Link::Unlinked | Link::Left(_) => false,
            };
            if !posted {
                state.drain_signaled.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl Clone for Mailbox {
    fn clone(&self) -> Self {
        self.state.receivers.fetch_add(1, Ordering::SeqCst);
        Self { rx: self.rx.clone(), state: Arc::clone(&self.state) }
    }
}

impl Drop for Mailbox {
    /// The last receiving half of a registered actor's mailbox unregisters it.
    fn drop(&mut self) {
        if self.state.receivers.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let linked = match &*self.state.link.lock() {
            Link::Linked { who, router } => Some((*who, Arc::clone(router))),
            Link::Unlinked | Link::Left(_) => None,
        };
        if let Some((who, router)) = linked {
            router.mailbox_dropped(who, &self.state);
        }
        // Nobody can take what is still queued: let it go now, so that requests
        // in it resolve at once (with the reason the registration ended) rather
        // than when the router drops the sending half.
        while self.rx.try_recv().is_ok() {}
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("len", &self.rx.len())
            .field("capacity", &self.state.capacity)
            .finish_non_exhaustive()
    }
}
