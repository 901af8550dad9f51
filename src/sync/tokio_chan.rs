//! A bounded MPMC queue over tokio's `mpsc` channel: the queue of
//! [`tokio_mailbox`](crate::tokio_mailbox) (feature `tokio-mailbox`).
//!
//! tokio's channel has one receiver and one waker slot; a mailbox can have several
//! receiving halves ([`Mailbox`](crate::Mailbox) is `Clone`, and the router keeps
//! one to move messages on `replace_mailbox`). So the receiver sits behind a mutex
//! that every receive takes (uncontended in the usual case of one actor task), and
//! the waker slot is shared by this protocol, all of it under that mutex:
//!
//! * A future that has to wait takes a key and counts itself in `waiting`.
//! * **Alone** (no other future waits), a receive hands its own waker to tokio's
//!   `poll_recv`, which does the rest as for tokio's own receiver. The waker is
//!   kept in `direct` as well, so that the next receive of the same task can tell
//!   (`will_wake`) that nothing needs cloning, and so that it can be moved onto the
//!   relay if another future comes to wait.
//! * **With others**, a receive first looks at the queue itself; if it must wait,
//!   it files its waker in the relay's list and tokio holds the relay's waker, which
//!   wakes the whole list. The first future to switch to the relay moves the direct
//!   waiter's waker onto the list, since tokio forgets a waker it replaces without
//!   waking it.
//! * A future that completes, or is dropped, withdraws its key.
//!
//! tokio's `poll_recv` files the waker before its last look at the queue, so a
//! message sent at any point after that look wakes whichever waker was filed, and
//! every waiting future is reachable from it: none sleeps through a message or the
//! last sender's drop. A relay wake takes the list; the woken futures file again
//! if they find nothing.
//!
//! Async receives use tokio's cooperative budget as its own receiver does (a task
//! that has used its budget gets `Pending` and is woken at once). Blocking
//! receives poll the same future without a budget and park the thread between
//! polls (`park::block_until`).

use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use flume::{RecvError, RecvTimeoutError, TryRecvError, TrySendError};
use tokio::sync::mpsc;

use super::{park, Mutex};

/// The most messages a tokio channel can be bounded to.
pub(crate) const MAX_CAPACITY: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Sending half.
pub(crate) struct Sender<T>(mpsc::Sender<T>);

/// Receiving half; clones share the queue.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// Aligned to a cache line, with the lock and its state first: a receive that
/// finds nobody else waiting touches one line of it (the `Arc`'s counts sit in
/// the line before).
#[repr(C, align(64))]
struct Shared<T> {
    inner: Mutex<Inner<T>>,
    relay: Arc<Relay>,
    /// A waker of `relay`, made once: tokio's `will_wake` then sees the same waker
    /// on every registration and does not clone it.
    relay_waker: Waker,
}

struct Inner<T> {
    rx: mpsc::Receiver<T>,
    /// The waker last handed to tokio directly (kept after its future completes,
    /// for `will_wake`).
    direct: Option<Waker>,
    /// Futures that have had to wait and have not completed or been dropped.
    waiting: usize,
    /// The next key to hand out (keys are never reused: 2^64 of them).
    next_key: NonZeroU64,
    /// The key of the future whose waker tokio holds directly, if it still waits.
    direct_key: Option<NonZeroU64>,
    /// Tokio holds the relay's waker.
    relaying: bool,
}

/// A waiting future's key.
type Key = NonZeroU64;

/// Wakes every filed waker: the waker tokio holds while several futures wait.
struct Relay {
    list: Mutex<Vec<(Key, Waker)>>,
}

impl Relay {
    fn file(&self, key: Key, waker: &Waker) {
        let mut list = self.list.lock();
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some((_, filed)) => {
                if !filed.will_wake(waker) {
                    filed.clone_from(waker);
                }
            }
            None => list.push((key, waker.clone())),
        }
    }

    fn withdraw(&self, key: Key) {
        self.list.lock().retain(|(k, _)| *k != key);
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Woken outside the lock: a waker may do anything, including receive.
        let wakers = std::mem::take(&mut *self.list.lock());
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

/// Creates a queue holding at most `cap` messages (1 ..= [`MAX_CAPACITY`]; the
/// caller clamps).
pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(cap.clamp(1, MAX_CAPACITY));
    let relay = Arc::new(Relay { list: Mutex::new(Vec::new()) });
    let shared = Shared {
        inner: Mutex::new(Inner {
            rx,
            direct: None,
            waiting: 0,
            next_key: NonZeroU64::MIN,
            direct_key: None,
            relaying: false,
        }),
        relay_waker: Waker::from(Arc::clone(&relay)),
        relay,
    };
    (Sender(tx), Receiver(Arc::new(shared)))
}

impl<T> Sender<T> {
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.0.try_send(value).map_err(|e| match e {
            mpsc::error::TrySendError::Full(v) => TrySendError::Full(v),
            mpsc::error::TrySendError::Closed(v) => TrySendError::Disconnected(v),
        })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Receiver<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        self.0.inner.lock().rx.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }

    /// Waits without blocking the thread. Cancel safe: a message is taken only by
    /// the poll that completes the future.
    pub(crate) fn recv_async(&self) -> RecvFut<'_, T> {
        RecvFut { rx: self, key: None }
    }

    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        park::recv_until(self.unbudgeted(), None, || self.try_recv()).map_err(|_| RecvError::Disconnected)
    }

    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        park::recv_until(self.unbudgeted(), Some(deadline), || self.try_recv())
    }

    /// A receive outside tokio's budget, for blocking receives: one called in a
    /// task that used its budget would otherwise spin.
    fn unbudgeted(&self) -> tokio::task::coop::Unconstrained<RecvFut<'_, T>> {
        tokio::task::coop::unconstrained(self.recv_async())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.inner.lock().rx.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "a receive future does nothing unless polled"]
pub(crate) struct RecvFut<'a, T> {
    rx: &'a Receiver<T>,
    /// This future's key while it counts as waiting.
    key: Option<Key>,
}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared: &Shared<T> = &this.rx.0;
        let mut guard = shared.inner.lock();
        let inner = &mut *guard;
        if inner.waiting != usize::from(this.key.is_some()) {
            return poll_with_others(&mut this.key, shared, inner, cx);
        }
        // Alone: tokio holds this future's own waker, and its `poll_recv` does the
        // rest (a unit of budget, a look at the queue before and after filing the
        // waker).
        let polled = match &mut inner.direct {
            // Tokio is handed the same waker as before: the caller's context
            // will do.
            Some(w) if w.will_wake(cx.waker()) => inner.rx.poll_recv(cx),
            slot => inner.rx.poll_recv(&mut Context::from_waker(slot.insert(cx.waker().clone()))),
        };
        if inner.relaying {
            // Tokio now holds the direct waker, not the relay's.
            leave_relay(this.key, shared, inner);
        }
        match polled {
            Poll::Ready(value) => {
                if this.key.take().is_some() {
                    // Alone, the only waiting future is this one: if tokio held its
                    // waker directly, that ends here too.
                    inner.waiting = 0;
                    inner.direct_key = None;
                }
                Poll::Ready(value.ok_or(RecvError::Disconnected))
            }
            Poll::Pending => {
                inner.direct_key = Some(register(&mut this.key, inner));
                Poll::Pending
            }
        }
    }
}

/// The alone path found tokio holding the relay's waker (the others have gone):
/// this future, if it was on the relay's list, leaves it.
#[cold]
#[inline(never)]
fn leave_relay<T>(key: Option<Key>, shared: &Shared<T>, inner: &mut Inner<T>) {
    inner.relaying = false;
    if let Some(key) = key {
        shared.relay.withdraw(key);
    }
}

/// A poll while another future waits too.
#[inline(never)]
fn poll_with_others<T>(
    key: &mut Option<Key>,
    shared: &Shared<T>,
    inner: &mut Inner<T>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, RecvError>> {
    // One unit of the task's budget, as tokio's receiver takes: a task that used
    // its budget yields here (and is woken at once).
    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    // A message already queued is taken without touching the waker slot.
    let polled = match inner.rx.try_recv() {
        Ok(v) => {
            coop.made_progress();
            Poll::Ready(Some(v))
        }
        Err(mpsc::error::TryRecvError::Disconnected) => Poll::Ready(None),
        Err(mpsc::error::TryRecvError::Empty) => {
            // `poll_recv` takes its own unit: give this one back first.
            drop(coop);
            let k = register(key, inner);
            if !inner.relaying {
                inner.relaying = true;
                // Tokio drops the waker it replaces without waking it: the future
                // it belonged to moves onto the relay's list.
                if let (Some(d), Some(w)) = (inner.direct_key.take(), inner.direct.as_ref()) {
                    shared.relay.file(d, w);
                }
            }
            shared.relay.file(k, cx.waker());
            inner.rx.poll_recv(&mut Context::from_waker(&shared.relay_waker))
        }
    };
    match polled {
        Poll::Ready(value) => {
            withdraw(key, shared, inner);
            Poll::Ready(value.ok_or(RecvError::Disconnected))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Counts a future as waiting (if it is not yet) and returns its key.
fn register<T>(key: &mut Option<Key>, inner: &mut Inner<T>) -> Key {
    *key.get_or_insert_with(|| {
        let key = inner.next_key;
        inner.next_key = key.saturating_add(1);
        inner.waiting += 1;
        key
    })
}

/// Stops a future counting as waiting (it completed or was dropped).
fn withdraw<T>(key: &mut Option<Key>, shared: &Shared<T>, inner: &mut Inner<T>) {
    let Some(key) = key.take() else { return };
    inner.waiting -= 1;
    if inner.direct_key == Some(key) {
        inner.direct_key = None;
    }
    if inner.relaying {
        shared.relay.withdraw(key);
    }
}

impl<T> Drop for RecvFut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.key.is_some() {
            self.withdraw_on_drop();
        }
    }
}

impl<T> RecvFut<'_, T> {
    /// A dropped future that was waiting withdraws.
    #[inline(never)]
    fn withdraw_on_drop(&mut self) {
        let shared: &Shared<T> = &self.rx.0;
        withdraw(&mut self.key, shared, &mut shared.inner.lock());
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut").field("waiting", &self.key.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Inner, Mutex};

    /// The lock and what it guards fill at most the one line `Shared` starts on
    /// (checked here rather than at compile time: a dependency's layout may
    /// change, and that costs a cache line, not a build).
    #[test]
    fn the_lock_and_its_state_fit_in_one_cache_line() {
        assert!(std::mem::size_of::<Mutex<Inner<()>>>() <= 64);
    }
}
