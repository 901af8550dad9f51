//! What actors receive, and the one-shot reply slot behind requests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::channels::OpenSlot;
use crate::error::{ChannelError, RequestError};
use crate::ids::{ChannelId, Participant};
use crate::mailbox::MailboxState;
use crate::sync::{time, Arc, AtomicBool, Condvar, Mutex, MutexGuard, Ordering};

/// A message delivered to an actor's [`Mailbox`](crate::Mailbox).
///
/// New variants may be added; match with a wildcard arm.
#[non_exhaustive]
pub enum ActorMessage {
    /// A one-way message.
    Send {
        /// The payload.
        data: Vec<u8>,
    },
    /// A request: answer through `reply`. Dropping `reply` without answering gives
    /// the requester [`RequestError::NoReply`].
    Request {
        /// The payload.
        data: Vec<u8>,
        /// Where the answer goes.
        reply: ReplyHandle,
    },
    /// `initiator` asks to open a channel. Accept or reject through `reply`;
    /// dropping it rejects.
    ChannelOpen {
        /// The channel's id, used by both sides from now on.
        channel_id: ChannelId,
        /// Who asks.
        initiator: Participant,
        /// The initiator's first message.
        initial_msg: Vec<u8>,
        /// The decision goes here.
        reply: ChannelOpenReply,
    },
    /// A message on an open channel, from the other participant.
    ChannelMessage {
        /// The channel.
        channel_id: ChannelId,
        /// The payload.
        data: Vec<u8>,
    },
    /// The other participant closed the channel (or went away). Nothing more
    /// arrives on it.
    ChannelClose {
        /// The channel.
        channel_id: ChannelId,
    },
}

impl ActorMessage {
    /// The payload carried by the message.
    #[must_use]
    ///
    /// `initial_msg` for a channel open, nothing for a close.
    pub fn data(&self) -> &[u8] {
        match self {
            Self::Send { data } | Self::Request { data, .. } | Self::ChannelMessage { data, .. } => data,
            Self::ChannelOpen { initial_msg, .. } => initial_msg,
            Self::ChannelClose { .. } => &[],
        }
    }

    /// The channel a channel message is about.
    #[must_use]
    pub fn channel_id(&self) -> Option<ChannelId> {
        match self {
            Self::ChannelOpen { channel_id, .. }
            | Self::ChannelMessage { channel_id, .. }
            | Self::ChannelClose { channel_id } => Some(*channel_id),
            Self::Send { .. } | Self::Request { .. } => None,
        }
    }

    /// What becomes of a message that can no longer be delivered: requests and
    /// channel opens are resolved with `outcome`; one-way messages are returned as
    /// dead-letter payload.
    pub(crate) fn undeliverable(self, outcome: RequestError) -> Option<Vec<u8>> {
        match self {
            Self::Send { data } | Self::ChannelMessage { data, .. } => Some(data),
            Self::ChannelClose { .. } => Some(Vec::new()),
            Self::Request { reply, .. } => {
                reply.fail(outcome);
                None
            }
            Self::ChannelOpen { reply, .. } => {
                reply.fail(outcome);
                None
            }
        }
    }
}

impl fmt::Debug for ActorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send { data } => f.debug_struct("Send").field("len", &data.len()).finish(),
            Self::Request { data, .. } => {
                f.debug_struct("Request").field("len", &data.len()).finish_non_exhaustive()
            }
            Self::ChannelOpen { channel_id, initiator, initial_msg, .. } => f
                .debug_struct("ChannelOpen")
                .field("channel_id", channel_id)
                .field("initiator", initiator)
                .field("len", &initial_msg.len())
                .finish_non_exhaustive(),
            Self::ChannelMessage { channel_id, data } => f
                .debug_struct("ChannelMessage")
                .field("channel_id", channel_id)
                .field("len", &data.len())
                .finish(),
            Self::ChannelClose { channel_id } => {
                f.debug_struct("ChannelClose").field("channel_id", channel_id).finish()
            }
        }
    }
}

/// Answers one request. Consumed by [`reply`](Self::reply); dropping it unanswered
/// resolves the request with [`RequestError::NoReply`].
pub struct ReplyHandle {
    slot: Arc<ReplySlot<Vec<u8>>>,
}

impl ReplyHandle {
    pub(crate) fn new(slot: Arc<ReplySlot<Vec<u8>>>) -> Self {
        Self { slot }
    }

    /// Sends the answer. Returns the payload if the request was already resolved
    /// (it timed out, its target unregistered, or the router shut down).
    ///
    /// # Errors
    /// `Err(data)` when the requester no longer waits for this answer.
    pub fn reply(self, data: Vec<u8>) -> Result<(), Vec<u8>> {
        self.slot.complete(Ok(data)).map_err(|outcome| outcome.unwrap_or_default())
    }

    /// `true` once the request has an outcome (answered, timed out, ...), so that
    /// replying is pointless.
    #[must_use]
    pub fn is_resolved(&self) -> bool {
        self.slot.is_done()
    }

    pub(crate) fn fail(self, error: RequestError) {
        let _ = self.slot.complete(Err(error));
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        let _ = self.slot.complete(Err(RequestError::NoReply));
    }
}

impl fmt::Debug for ReplyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyHandle").field("resolved", &self.is_resolved()).finish()
    }
}

type Outcome<T> = Result<T, RequestError>;

struct SlotState<T> {
    outcome: Option<Outcome<T>>,
    waker: Option<Waker>,
}

/// A one-shot slot: the first of reply, drop, timeout, unregistration or shutdown to
/// complete it wins; everything after is refused.
pub(crate) struct ReplySlot<T> {
    done: AtomicBool,
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// The target's count of unresolved requests, lowered on completion.
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

    pub(crate) fn targets(&self, state: &Arc<MailboxState>) -> bool {
        self.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, state))
    }

    /// Completes the slot unless it already has an outcome (then hands it back).
    pub(crate) fn complete(&self, outcome: Outcome<T>) -> Result<(), Outcome<T>> {
        let mut state = self.state.lock();
        if self.done.load(Ordering::Acquire) {
            return Err(outcome);
        }
        let waker = self.finish(&mut state, outcome);
        drop(state);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn finish(&self, state: &mut MutexGuard<'_, SlotState<T>>, outcome: Outcome<T>) -> Option<Waker> {
        state.outcome = Some(outcome);
        self.done.store(true, Ordering::Release);
        if let Some(t) = &self.target {
            t.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        state.waker.take()
    }

    /// Blocks until an outcome or `deadline`; `None` if the deadline passed first.
    pub(crate) fn wait_until(&self, deadline: Instant) -> Option<Outcome<T>> {
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = state.outcome.take() {
                return Some(outcome);
            }
            if self.done.load(Ordering::Acquire) {
                // Already taken by an earlier wait: a second wait has nothing left.
                return Some(Err(RequestError::NoReply));
            }
            if time::now() >= deadline || self.ready.wait_until(&mut state, deadline) {
                return state.outcome.take();
            }
        }
    }

    /// Blocks until an outcome; at `deadline` resolves the slot with `Timeout`
    /// itself, unless another outcome got there first.
    pub(crate) fn wait_or_expire(&self, deadline: Instant) -> Outcome<T> {
        match self.wait_until(deadline) {
            Some(outcome) => outcome,
            None => match self.complete(Err(RequestError::Timeout)) {
                Ok(()) => Err(RequestError::Timeout),
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
                return Err(RequestError::NoReply);
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
            return Poll::Ready(Err(RequestError::NoReply));
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The pending answer to [`Router::request_async`](crate::Router::request_async).
///
/// Resolves exactly once: the reply, or a [`RequestError`]. The deadline is kept by
/// the target's shard, so no async runtime is needed.
///
/// # Cancel safety
/// Dropping the future abandons the request; a later reply is refused.
#[must_use = "a response future does nothing unless polled"]
pub struct ResponseFuture {
    pub(crate) inner: Result<Arc<ReplySlot<Vec<u8>>>, Option<RequestError>>,
}

impl Future for ResponseFuture {
    type Output = Result<Vec<u8>, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.inner {
            Ok(slot) => slot.poll_outcome(cx),
            Err(error) => Poll::Ready(Err(error.take().unwrap_or(RequestError::NoReply))),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The receiving half of [`reply_channel`].
pub struct ReplyReceiver {
    slot: Arc<ReplySlot<Vec<u8>>>,
}

impl ReplyReceiver {
    /// Waits for the answer, at most `timeout`; resolves with `Timeout` after it.
    ///
    /// # Errors
    /// [`RequestError::NoReply`] if the handle was dropped, `Timeout` at the deadline.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RequestError> {
        self.slot.wait_or_expire(time::now() + timeout)
    }

    /// Waits for the answer or for the [`ReplyHandle`] to be dropped.
    ///
    /// # Errors
    /// [`RequestError::NoReply`] if the handle was dropped unanswered.
    pub fn recv(&self) -> Result<Vec<u8>, RequestError> {
        self.slot.wait()
    }
}

impl Future for ReplyReceiver {
    type Output = Result<Vec<u8>, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll_outcome(cx)
    }
}

impl fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyReceiver").field("resolved", &self.slot.is_done()).finish()
    }
}

/// A free-standing reply pair, for building an [`ActorMessage::Request`] by hand (as
/// the [`compat`](crate::compat) layer does). The router does not keep a deadline
/// for such a request: bound the wait with [`ReplyReceiver::recv_timeout`].
///
/// ```
/// use sharded_router::{reply_channel, RequestError};
/// let (handle, rx) = reply_channel();
/// handle.reply(b"pong".to_vec()).unwrap();
/// assert_eq!(rx.recv().unwrap(), b"pong");
///
/// let (handle, rx) = reply_channel();
/// drop(handle);
/// assert_eq!(rx.recv(), Err(RequestError::NoReply));
/// ```
#[must_use]
pub fn reply_channel() -> (ReplyHandle, ReplyReceiver) {
    let slot = ReplySlot::new(None);
    (ReplyHandle::new(Arc::clone(&slot)), ReplyReceiver { slot })
}

/// Accepts or rejects one channel open. Dropping it rejects.
pub struct ChannelOpenReply {
    open: Option<Arc<OpenSlot>>,
}

impl ChannelOpenReply {
    pub(crate) fn new(open: Arc<OpenSlot>) -> Self {
        Self { open: Some(open) }
    }

    /// Accepts the channel, optionally with a first message back to the initiator.
    ///
    /// # Errors
    /// [`ChannelError::ChannelNotFound`] if the open was already resolved — it
    /// timed out, a participant went away, or the router shut down — so the
    /// channel does not exist.
    pub fn accept(mut self, response: Option<Vec<u8>>) -> Result<(), ChannelError> {
        match self.open.take() {
            Some(open) if OpenSlot::decide(&open, Ok(OpenDecision::Accepted(response))) => Ok(()),
            _ => Err(ChannelError::ChannelNotFound),
        }
    }

    /// Rejects the channel.
    pub fn reject(mut self) {
        if let Some(open) = self.open.take() {
            OpenSlot::decide(&open, Ok(OpenDecision::Rejected));
        }
    }

    /// `true` once the open has been settled (so accepting would fail).
    #[must_use]
    pub fn is_resolved(&self) -> bool {
        self.open.as_ref().map_or(true, |open| open.is_done())
    }

    pub(crate) fn fail(mut self, error: RequestError) {
        if let Some(open) = self.open.take() {
            OpenSlot::decide(&open, Err(error));
        }
    }
}

impl Drop for ChannelOpenReply {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            OpenSlot::decide(&open, Ok(OpenDecision::Rejected));
        }
    }
}

impl fmt::Debug for ChannelOpenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelOpenReply").finish_non_exhaustive()
    }
}

/// The target's answer to a channel open.
pub(crate) enum OpenDecision {
    Accepted(Option<Vec<u8>>),
    Rejected,
    /// This participant went away before the target decided.
    Left(Participant),
}
