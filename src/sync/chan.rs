//! Loom stand-in for the flume queues the crate uses: a `VecDeque` under a loom
//! mutex, a condition variable for blocking receivers, the wakers of pending
//! [`RecvFut`]s, and sender/receiver counts for disconnection. Same names and
//! semantics as the flume subset used above the seam.
//!
//! Wake protocol: a blocking receiver waits on `not_empty`; an async receiver
//! files its waker in the state under the same lock that it found the queue empty
//! under. Every push and the last sender's drop take that lock, then (after
//! releasing it) notify `not_empty` and wake every filed waker. A receiver can
//! therefore not miss a message or a disconnection between its check and its wait.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{Arc, Condvar, Mutex};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receivers: usize,
    /// Wakers of pending `recv_async` futures, by the future's key.
    wakers: Vec<(u64, Waker)>,
    /// The next key handed to a pending future.
    next_key: u64,
}

impl<T> State<T> {
    /// Takes every filed waker; the caller wakes them after unlocking.
    fn take_wakers(&mut self) -> Vec<Waker> {
        self.wakers.drain(..).map(|(_, w)| w).collect()
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

struct Chan<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    cap: Option<usize>,
}

/// Sending half.
pub(crate) struct Sender<T>(Arc<Chan<T>>);
/// Receiving half.
pub(crate) struct Receiver<T>(Arc<Chan<T>>);

/// Error of `send`: every receiver is gone; the value is handed back.
pub(crate) struct SendError<T>(pub T);

/// Error of `try_send`.
pub(crate) enum TrySendError<T> {
    Full(T),
    Disconnected(T),
}

/// Error of `recv`.
#[derive(Debug)]
pub(crate) struct RecvError;

/// Error of `try_recv`.
#[derive(Debug)]
pub(crate) enum TryRecvError {
    Empty,
    Disconnected,
}

/// Error of `recv_deadline`.
#[derive(Debug)]
pub(crate) enum RecvTimeoutError {
    Timeout,
    Disconnected,
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

fn new<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receivers: 1,
            wakers: Vec::new(),
            next_key: 0,
        }),
        not_empty: Condvar::new(),
        cap,
    });
    (Sender(Arc::clone(&chan)), Receiver(chan))
}

pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    new(Some(cap))
}

/// The stand-in has one kind of queue: a tokio-backed mailbox is modelled by it too.
#[cfg(feature = "tokio-mailbox")]
pub(crate) use bounded as bounded_tokio;

/// No bound beyond memory in the stand-in.
#[cfg(feature = "tokio-mailbox")]
pub(crate) const MAX_TOKIO_CAPACITY: usize = usize::MAX;

pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    new(None)
}

impl<T> Sender<T> {
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.state.lock();
        if state.receivers == 0 {
            return Err(TrySendError::Disconnected(value));
        }
        if self.0.cap.is_some_and(|cap| state.queue.len() >= cap) {
            return Err(TrySendError::Full(value));
        }
        state.queue.push_back(value);
        let wakers = state.take_wakers();
        drop(state);
        self.0.not_empty.notify_all();
        wake_all(wakers);
        Ok(())
    }

    /// Only used on unbounded queues, where it never waits.
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.try_send(value) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(v) | TrySendError::Full(v)) => Err(SendError(v)),
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.state.lock().senders += 1;
        Self(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        let wakers = if last { state.take_wakers() } else { Vec::new() };
        drop(state);
        if last {
            self.0.not_empty.notify_all();
            wake_all(wakers);
        }
    }
}

impl<T> Receiver<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.0.state.lock();
        match state.queue.pop_front() {
            Some(v) => Ok(v),
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.0.state.lock();
        loop {
            if let Some(v) = state.queue.pop_front() {
                return Ok(v);
            }
            if state.senders == 0 {
                return Err(RecvError);
            }
            self.0.not_empty.wait(&mut state);
        }
    }

    /// Loom does not model time: this waits for a message, or returns `Timeout`
    /// once the mock clock has passed `deadline`.
    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        let mut state = self.0.state.lock();
        loop {
            if let Some(v) = state.queue.pop_front() {
                return Ok(v);
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            if self.0.not_empty.wait_until(&mut state, deadline) && state.queue.is_empty() {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// Waits for a message without blocking the thread, as flume's `recv_async`:
    /// resolves with a message, or `RecvError` once the queue is empty and every
    /// sender is gone. Cancel safe: a message is taken only by the poll that
    /// completes the future.
    pub(crate) fn recv_async(&self) -> RecvFut<'_, T> {
        RecvFut { rx: self, key: None }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.state.lock().queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.0.state.lock().receivers += 1;
        Self(Arc::clone(&self.0))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.state.lock().receivers -= 1;
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "a receive future does nothing unless polled"]
pub(crate) struct RecvFut<'a, T> {
    rx: &'a Receiver<T>,
    /// This future's key in the waker list while it has a waker filed.
    key: Option<u64>,
}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.rx.0.state.lock();
        let outcome = match state.queue.pop_front() {
            Some(v) => Some(Ok(v)),
            None if state.senders == 0 => Some(Err(RecvError)),
            None => None,
        };
        if let Some(outcome) = outcome {
            if let Some(key) = this.key.take() {
                state.wakers.retain(|(k, _)| *k != key);
            }
            return Poll::Ready(outcome);
        }
        // Empty with senders left: file (or refresh) the waker under the lock the
        // queue was checked under, so a push or the last sender's drop after this
        // point finds it.
        let filed = this.key.and_then(|key| state.wakers.iter_mut().find(|(k, _)| *k == key));
        match filed {
            Some((_, waker)) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            None => {
                let key = state.next_key;
                state.next_key += 1;
                state.wakers.push((key, cx.waker().clone()));
                this.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        // A cancelled future withdraws its waker; it took nothing from the queue.
        if let Some(key) = self.key.take() {
            self.rx.0.state.lock().wakers.retain(|(k, _)| *k != key);
        }
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut").field("filed", &self.key.is_some()).finish()
    }
}
