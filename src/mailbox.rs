//! Actor mailboxes: a bounded queue plus the registration state the router
//! shares with its receiving side (`registration.rs`).
//!
//! The receiving half ([`Mailbox`]) takes part in overflow delivery (see
//! `delivery`): when it takes a message while the actor has messages parked at its
//! shard, it tells the shard once that room has appeared, and it wakes senders
//! waiting for room. The shard therefore never polls and never blocks on one
//! mailbox.
//!
//! It also watches the actor's life: when the last receiving half of a registered
//! mailbox is dropped (the actor's task ended or panicked), the actor is
//! unregistered there and then, as [`Router::unregister`](crate::Router::unregister)
//! would.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Disconnected, TryRecvError};
use crate::message::{ActorMessage, Queued};
use crate::registration::MailboxState;
use crate::sync::{chan, time, Arc};

/// Creates a mailbox holding at most `capacity` messages (at least 1).
///
/// Register the sending half with [`Router::register`](crate::Router::register); the
/// actor keeps the [`Mailbox`].
#[must_use]
pub fn mailbox(capacity: usize) -> (MailboxSender, Mailbox) {
    let capacity = capacity.max(1);
    assemble(capacity, chan::bounded(capacity))
}

/// Creates a mailbox over tokio's bounded `mpsc` channel, holding at most
/// `capacity` messages (at least 1; at most tokio's bound, `usize::MAX >> 3`).
///
/// It is a [`Mailbox`] and a [`MailboxSender`] like any other, with the same
/// guarantees: the router cannot tell them apart, and
/// [`Router::replace_mailbox`](crate::Router::replace_mailbox) moves messages
/// between the two kinds. What differs is the cost. An actor that runs as a tokio
/// task and waits on [`Mailbox::recv_async`] for most messages is woken faster
/// through tokio's channel (no allocation per wait); when messages queue up, flume's
/// is faster (see BENCHMARKS.md, "The mailbox channel"). Async receives take part in
/// tokio's cooperative budget, as tokio's own receiver does; blocking receives work
/// outside a runtime too.
///
/// [`RouterBuilder::tokio_mailboxes`](crate::RouterBuilder::tokio_mailboxes) makes
/// [`Router::mailbox`](crate::Router::mailbox) return these.
#[cfg(feature = "tokio-mailbox")]
#[must_use]
pub fn tokio_mailbox(capacity: usize) -> (MailboxSender, Mailbox) {
    let capacity = capacity.clamp(1, chan::MAX_TOKIO_CAPACITY);
    assemble(capacity, chan::bounded_tokio(capacity))
}

fn assemble(
    capacity: usize,
    (tx, rx): (chan::Sender<Queued>, chan::Receiver<Queued>),
) -> (MailboxSender, Mailbox) {
    let state = Arc::new(MailboxState::new(capacity));
    let sender = MailboxSender { tx, rx: rx.clone(), state: Arc::clone(&state) };
    (sender, Mailbox { rx, state })
}

/// A mailbox constructor: [`mailbox`] or [`tokio_mailbox`].
pub(crate) type MakeMailbox = fn(usize) -> (MailboxSender, Mailbox);

/// The sending half of a mailbox, consumed by registration.
pub struct MailboxSender {
    pub(crate) tx: chan::Sender<Queued>,
    /// Kept by the router, only to move what is left in the mailbox when it is
    /// replaced (`Router::replace_mailbox`).
    pub(crate) rx: chan::Receiver<Queued>,
    pub(crate) state: Arc<MailboxState>,
}

impl fmt::Debug for MailboxSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender").field("capacity", &self.state.capacity()).finish_non_exhaustive()
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
    rx: chan::Receiver<Queued>,
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
        Ok(msg.unpack())
    }

    /// Takes a message if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Disconnected`].
    pub fn try_recv(&self) -> Result<ActorMessage, TryRecvError> {
        // Built where it is returned, then `took_one`: the message is not moved
        // again after it.
        let taken = match self.rx.try_recv() {
            Ok(msg) => Ok(msg.unpack()),
            Err(chan::TryRecvError::Empty) => return Err(TryRecvError::Empty),
            Err(chan::TryRecvError::Disconnected) => return Err(TryRecvError::Disconnected),
        };
        self.took_one();
        taken
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
        Ok(msg.unpack())
    }

    /// Waits for a message without blocking the thread. Runtime-agnostic.
    ///
    /// # Errors
    /// [`Disconnected`] when the actor is unregistered and the mailbox is drained.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when the future completes.
    pub fn recv_async(&self) -> RecvFuture<'_> {
        RecvFuture { mailbox: self, inner: self.rx.recv_async() }
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
        self.state.capacity()
    }

    /// Room has appeared: the overflow protocol hears of it (see `delivery`).
    fn took_one(&self) {
        let state = &self.state;
        state.flow.took_one(|| MailboxState::post_drain(state));
    }
}

/// The future of [`Mailbox::recv_async`]: resolves with the next message, or
/// [`Disconnected`] once the actor is unregistered and the mailbox is drained.
/// Dropping it takes nothing.
#[must_use = "a receive future does nothing unless polled"]
pub struct RecvFuture<'a> {
    mailbox: &'a Mailbox,
    inner: chan::RecvFut<'a, Queued>,
}

impl Future for RecvFuture<'_> {
    type Output = Result<ActorMessage, Disconnected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every queue's receive future is `Unpin`, and so is this one.
        let this = self.get_mut();
        // Built where it is returned, as in `Mailbox::try_recv`.
        let taken = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(msg)) => Poll::Ready(Ok(msg.unpack())),
            Poll::Ready(Err(_)) => return Poll::Ready(Err(Disconnected)),
            Poll::Pending => return Poll::Pending,
        };
        this.mailbox.took_one();
        taken
    }
}

impl fmt::Debug for RecvFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture").finish_non_exhaustive()
    }
}

impl Clone for Mailbox {
    fn clone(&self) -> Self {
        self.state.receiver_added();
        Self { rx: self.rx.clone(), state: Arc::clone(&self.state) }
    }
}

impl Drop for Mailbox {
    /// The last receiving half of a registered actor's mailbox unregisters it.
    fn drop(&mut self) {
        if !self.state.receiver_dropped() {
            return;
        }
        if let Some((who, router)) = self.state.registered_as() {
            router.mailbox_dropped(who, &self.state);
        }
        // A replaced mailbox's messages are the replacement's: the shard moves
        // them.
        if self.state.is_replaced() {
            return;
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
            .field("capacity", &self.state.capacity())
            .finish_non_exhaustive()
    }
}
