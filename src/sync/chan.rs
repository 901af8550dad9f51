//! Loom stand-in for the flume queues the crate uses: a `VecDeque` under a loom
//! mutex, two condition variables, and sender/receiver counts for disconnection.
//! Same names and semantics as the flume subset used above the seam.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use super::{Arc, Condvar, Mutex};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receivers: usize,
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
        state: Mutex::new(State { queue: VecDeque::new(), senders: 1, receivers: 1 }),
        not_empty: Condvar::new(),
        cap,
    });
    (Sender(Arc::clone(&chan)), Receiver(chan))
}

pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    new(Some(cap))
}

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
        drop(state);
        self.0.not_empty.notify_all();
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
        drop(state);
        if last {
            self.0.not_empty.notify_all();
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
