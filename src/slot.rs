//! The crate's one complete-once cell: [`ReplySlot`]. The first of reply, drop,
//! timeout, unregistration, shutdown or the waiter walking away completes it;
//! everything after is refused. Requests, channel-open decisions, the flush
//! barrier, `compat`'s oneshot and the send deadlines of
//! [`Router::send_async_timeout`](crate::Router::send_async_timeout) are built on it.
//!
//! A waiter blocks a thread ([`ReplySlot::wait`]) or polls it from a task
//! ([`ReplySlot::poll_outcome`]); whoever completes the slot wakes it.

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::{RequestError, RequestFailed};
use crate::fence;
use crate::registration::MailboxState;
use crate::sync::{time, Arc, AtomicBool, Condvar, Mutex, Ordering};

/// What a slot completes with.
pub(crate) type Outcome<T> = Result<T, RequestFailed>;

struct SlotState<T> {
    outcome: Option<Outcome<T>>,
    waker: Option<Waker>,
}

/// A one-shot slot: the first of reply, drop, timeout, unregistration, shutdown or
/// the requester walking away to complete it wins; everything after is refused.
pub(crate) struct ReplySlot<T> {
    done: AtomicBool,
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// The target's registration: its count of unresolved requests is lowered on
    /// completion, and answers are refused once it has left.
    target: Option<Arc<MailboxState>>,
}

impl<T> ReplySlot<T> {
    pub(crate) fn new(target: Option<Arc<MailboxState>>) -> Arc<Self> {
        Arc::new(Self::unshared(target))
    }

    pub(crate) fn unshared(target: Option<Arc<MailboxState>>) -> Self {
        if let Some(t) = &target {
            t.outstanding.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            done: AtomicBool::new(false),
            state: Mutex::new(SlotState { outcome: None, waker: None }),
            ready: Condvar::new(),
            target,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// `true` if this slot's request is to the registration `state` (or to one
    /// that `state` replaced).
    pub(crate) fn targets(&self, state: &Arc<MailboxState>) -> bool {
        self.target.as_ref().is_some_and(|t| MailboxState::is_or_became(t, state))
    }

    /// `true` once the target's registration has ended (answers are refused).
    pub(crate) fn target_left(&self) -> bool {
        self.target.as_ref().is_some_and(|t| t.left().is_some())
    }

    /// Completes the slot unless it already has an outcome (then hands `outcome`
    /// back), and wakes the waiter.
    pub(crate) fn complete(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        let waker = self.settle(outcome)?;
        fence::wake(waker);
        Ok(())
    }

    /// The target's answer (a reply, or its handle dropped): accepted only while
    /// the target is registered. Once it has left, the request resolves with the
    /// reason it left for, and `outcome` is handed back. The check and the
    /// completion happen under the registration's lock, which unregistration
    /// takes, so no answer is accepted once `unregister` has returned.
    pub(crate) fn answer(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        let Some(target) = &self.target else { return self.complete(outcome) };
        match target.while_registered(outcome, |outcome| self.settle(outcome)) {
            Ok(Ok(waker)) => {
                fence::wake(waker);
                Ok(())
            }
            Ok(Err(outcome)) => Err(outcome),
            Err((reason, outcome)) => {
                let _ = self.complete(Err(reason.into()));
                Err(outcome)
            }
        }
    }

    /// Stores `outcome` unless the slot already has one; returns the waiter to wake.
    fn settle(&self, outcome: Outcome<T>) -> Result<Option<Waker>, Outcome<T>> {
        let mut state = self.state.lock();
        if self.done.load(Ordering::Acquire) {
            return Err(outcome);
        }
        state.outcome = Some(outcome);
        self.done.store(true, Ordering::Release);
        if let Some(t) = &self.target {
            t.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        let waker = state.waker.take();
        drop(state);
        self.ready.notify_all();
        Ok(waker)
    }

    /// The waiter walked away: settles the slot, so that a later answer is
    /// refused, without waking anyone.
    pub(crate) fn abandon(&self) {
        if !self.is_done() {
            let _ = self.settle(Err(RequestError::NoReply.into()));
        }
    }

    /// Blocks until an outcome or `deadline` (`None`: no deadline); `None` if the
    /// deadline passed first.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> Option<Outcome<T>> {
        let Some(deadline) = deadline else { return Some(self.wait()) };
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = state.outcome.take() {
                return Some(outcome);
            }
            if self.done.load(Ordering::Acquire) {
                // Already taken by an earlier wait: a second wait has nothing left.
                return Some(Err(RequestError::NoReply.into()));
            }
            if time::now() >= deadline || self.ready.wait_until(&mut state, deadline) {
                return state.outcome.take();
            }
        }
    }

    /// Blocks until an outcome; at `deadline` resolves the slot with `Timeout`
    /// itself, unless another outcome got there first.
    pub(crate) fn wait_or_expire(&self, deadline: Option<Instant>) -> Outcome<T> {
        match self.wait_until(deadline) {
            Some(outcome) => outcome,
            None => match self.complete(Err(RequestError::Timeout.into())) {
                Ok(()) => Err(RequestError::Timeout.into()),
                Err(_) => self.wait(),
            },
        }
    }

    /// Blocks until an outcome, with no deadline of its own.
    pub(crate) fn wait(&self) -> Outcome<T> {
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = state.outcome.take() {
                return outcome;
            }
            if self.done.load(Ordering::Acquire) {
                return Err(RequestError::NoReply.into());
            }
            self.ready.wait(&mut state);
        }
    }

    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let mut state = self.state.lock();
        if let Some(outcome) = state.outcome.take() {
            return Poll::Ready(outcome);
        }
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(Err(RequestError::NoReply.into()));
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
