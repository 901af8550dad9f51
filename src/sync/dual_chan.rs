//! The mailbox queue when the `tokio-mailbox` feature is on: each mailbox is
//! either a flume queue ([`bounded`], what [`mailbox`](crate::mailbox) makes) or
//! a tokio-backed one ([`bounded_tokio`], what
//! [`tokio_mailbox`](crate::tokio_mailbox) makes), behind the flume names the code
//! above the seam uses. Each call is one branch on the kind.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub(crate) use flume_chan::{RecvError, RecvTimeoutError, TryRecvError, TrySendError};

use super::{flume_chan, tokio_chan};

pub(crate) use tokio_chan::MAX_CAPACITY as MAX_TOKIO_CAPACITY;

/// Sending half.
pub(crate) enum Sender<T> {
    Flume(flume_chan::Sender<T>),
    Tokio(tokio_chan::Sender<T>),
}

/// Receiving half.
pub(crate) enum Receiver<T> {
    Flume(flume_chan::Receiver<T>),
    Tokio(tokio_chan::Receiver<T>),
}

/// A flume queue of at most `cap` messages.
pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = flume_chan::bounded(cap);
    (Sender::Flume(tx), Receiver::Flume(rx))
}

/// A tokio-backed queue of at most `cap` messages (1 ..= [`MAX_TOKIO_CAPACITY`]).
pub(crate) fn bounded_tokio<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_chan::bounded(cap);
    (Sender::Tokio(tx), Receiver::Tokio(rx))
}

impl<T> Sender<T> {
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        match self {
            Self::Flume(tx) => tx.try_send(value),
            Self::Tokio(tx) => tx.try_send(value),
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Flume(tx) => Self::Flume(tx.clone()),
            Self::Tokio(tx) => Self::Tokio(tx.clone()),
        }
    }
}

impl<T> Receiver<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        match self {
            Self::Flume(rx) => rx.try_recv(),
            Self::Tokio(rx) => rx.try_recv(),
        }
    }

    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        match self {
            Self::Flume(rx) => rx.recv(),
            Self::Tokio(rx) => rx.recv(),
        }
    }

    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        match self {
            Self::Flume(rx) => rx.recv_deadline(deadline),
            Self::Tokio(rx) => rx.recv_deadline(deadline),
        }
    }

    pub(crate) fn recv_async(&self) -> RecvFut<'_, T> {
        match self {
            Self::Flume(rx) => RecvFut::Flume(rx.recv_async()),
            Self::Tokio(rx) => RecvFut::Tokio(rx.recv_async()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Flume(rx) => rx.len(),
            Self::Tokio(rx) => rx.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Flume(rx) => rx.is_empty(),
            Self::Tokio(rx) => rx.is_empty(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Flume(rx) => Self::Flume(rx.clone()),
            Self::Tokio(rx) => Self::Tokio(rx.clone()),
        }
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "a receive future does nothing unless polled"]
pub(crate) enum RecvFut<'a, T> {
    Flume(flume_chan::RecvFut<'a, T>),
    Tokio(tokio_chan::RecvFut<'a, T>),
}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both futures are `Unpin`, and so is this enum.
        match self.get_mut() {
            Self::Flume(fut) => Pin::new(fut).poll(cx),
            Self::Tokio(fut) => Pin::new(fut).poll(cx),
        }
    }
}
