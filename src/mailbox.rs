//! Actor mailboxes: a bounded queue plus the little state the router shares with
//! its receiving side.
//!
//! The receiving half ([`Mailbox`]) takes part in overflow delivery: when it takes a
//! message while the actor has messages parked at its shard, it tells the shard once
//! that room has appeared. The shard therefore never polls and never blocks on one
//! mailbox.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Disconnected, TryRecvError};
use crate::ids::ChannelId;
use crate::message::ActorMessage;
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
    /// The owning shard's command queue, set at registration.
    link: Mutex<Option<chan::Sender<Cmd>>>,
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

impl MailboxState {
    pub(crate) fn link(&self, shard: chan::Sender<Cmd>) {
        *self.link.lock() = Some(shard);
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

    /// Drops the link to the shard once the entry has left the table. A command
    /// holding this state that is still queued when the shard stops would
    /// otherwise keep the shard's queue alive through the link: a reference
    /// cycle, leaking the state and the queue.
    pub(crate) fn unlink(&self) {
        *self.link.lock() = None;
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
        link: Mutex::new(None),
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
#[derive(Clone)]
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

    /// Waits at most `timeout` for a message.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] at the timeout, or [`TryRecvError::Disconnected`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ActorMessage, TryRecvError> {
        self.recv_deadline(time::now() + timeout)
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
    #[cfg(not(loom))]
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
            let posted = link.as_ref().is_some_and(|shard| shard.send(Cmd::Drain(Arc::clone(state))).is_ok());
            if !posted {
                state.drain_signaled.store(false, Ordering::SeqCst);
            }
        }
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
