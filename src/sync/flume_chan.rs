//! The flume mailbox queue, with receives that cannot sleep through a message.
//!
//! flume 0.12 loses waiters when a queue has several receivers (a [`Mailbox`]
//! and its clones, or the copy the router keeps for `replace_mailbox`):
//!
//! * A blocking receive's signal can be taken off the waiting list and fired with
//!   nothing for it (when a woken async receive is dropped without receiving,
//!   flume passes the wake on by firing every blocking waiter it finds). The
//!   blocking receiver wakes, finds no message, and goes back to sleep without
//!   filing its signal again: no later message or disconnection reaches it.
//!   So blocking receives here poll flume's async receive with a waker that
//!   unparks the thread instead (`park::block_until`).
//! * An async receive that was woken and finds nothing (another receiver took the
//!   message) files its waker again after its last look at the queue, so a
//!   message sent in between wakes nobody. After such a poll this wrapper looks
//!   once more and, if a message is waiting, has the future polled again.
//!
//! `tests/mailbox_kinds.rs` makes the first happen on purpose and races the second.
//!
//! [`Mailbox`]: crate::Mailbox

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub(crate) use flume::{RecvError, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use super::park;

/// Receiving half.
pub(crate) struct Receiver<T>(flume::Receiver<T>);

/// A queue of at most `cap` messages.
pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = flume::bounded(cap);
    (tx, Receiver(rx))
}

impl<T> Receiver<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        self.0.try_recv()
    }

    /// Cancel safe: a message is taken only by the poll that completes the future.
    pub(crate) fn recv_async(&self) -> RecvFut<'_, T> {
        RecvFut { rx: &self.0, inner: self.0.recv_async(), polled: false }
    }

    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        park::recv_until(self.recv_async(), None, || self.0.try_recv()).map_err(|_| RecvError::Disconnected)
    }

    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        park::recv_until(self.recv_async(), Some(deadline), || self.0.try_recv())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "a receive future does nothing unless polled"]
pub(crate) struct RecvFut<'a, T> {
    rx: &'a flume::Receiver<T>,
    inner: flume::r#async::RecvFut<'a, T>,
    /// Polled before: flume's first poll files its waker under the lock it looked
    /// at the queue under, later polls do not.
    polled: bool,
}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll(cx);
        if polled.is_pending() {
            if this.polled && !this.rx.is_empty() {
                // A message may have come between flume's look and its filing.
                cx.waker().wake_by_ref();
            }
            this.polled = true;
        }
        polled
    }
}
