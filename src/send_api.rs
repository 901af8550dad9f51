//! [`Router`]'s one-way send family, named as tokio's channels name theirs:
//!
//! | call | when the target has no room | blocks a thread? |
//! |---|---|---|
//! | [`try_send`](Router::try_send), [`deliver`](Router::deliver) | `MailboxFull` / `ShardFull` at once | never |
//! | [`tell`](Router::tell) | a counted dead letter | never |
//! | [`send_async`](Router::send_async)`.await` | waits for room | never (a future) |
//! | [`send_async_timeout`](Router::send_async_timeout)`.await` | waits, at most the timeout | never (a future) |
//! | [`blocking_send`](Router::blocking_send), [`blocking_send_timeout`](Router::blocking_send_timeout) | waits, parking the thread | yes |
//!
//! For `try_send`, `deliver` and `tell`, "no room" means the actor's overflow
//! bound is reached (`MailboxFull`), or its shard's (`ShardFull`): below the bound
//! a message that finds the mailbox full is parked at the shard and accepted at
//! once. The waiting sends do not park when nothing else is parked: they wait for
//! the mailbox itself, as a bounded channel's `send().await` does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{RequestError, SendError, SendErrorKind};
use crate::ids::{ActorId, Participant};
use crate::message::{ActorMessage, Queued};
use crate::metrics::{DeadLetter, DeadLetterReason};
use crate::router::Router;
use crate::routing::{Routed, Waiting};
use crate::slot::ReplySlot;
use crate::sync::{thread, time, Arc};
use crate::table::Gate;
use crate::timers::Pending;

impl Router {
    /// Routes an [`ActorMessage`] to `id`. Never waits.
    ///
    /// The message goes straight into the mailbox when it has room and nothing of
    /// the actor's is queued at its shard; otherwise it is parked at the shard (up
    /// to the overflow bound) and delivered in order. `Ok` means accepted: it will
    /// be delivered, or become a dead letter if the actor unregisters first.
    ///
    /// Channel traffic (`ChannelOpen`, `ChannelMessage`, `ChannelClose`) is refused
    /// with [`SendErrorKind::ChannelOnly`]: it goes only through the channel API,
    /// which checks that the sender takes part in the channel.
    ///
    /// # Errors
    /// Hands the message back with the [`SendErrorKind`].
    pub fn deliver(&self, id: ActorId, msg: ActorMessage) -> Result<(), SendError<ActorMessage>> {
        if msg.is_channel_traffic() {
            return Err(SendError::new(SendErrorKind::ChannelOnly, msg));
        }
        self.inner
            .route(Participant::Actor(id), Queued::pack(msg), self.inner.overflow_bound)
            .map_err(|e| e.map(Queued::unpack))
    }

    /// Sends a one-way message and reports whether it was accepted. Never waits:
    /// past the overflow bound it fails with `MailboxFull` (use
    /// [`send_async`](Self::send_async) to wait for room instead).
    ///
    /// # Errors
    /// `ActorNotFound`, `MailboxFull` (past the overflow bound), `ShardFull`,
    /// `MailboxClosed`, `ShardFailed` or `Shutdown`, with the payload handed back.
    ///
    /// ```
    /// use sharded_router::{ActorId, Router, SendErrorKind};
    /// let router = Router::builder().shards(1).build().unwrap();
    /// let err = router.try_send(ActorId::new(), b"lost?".to_vec()).unwrap_err();
    /// assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
    /// assert_eq!(err.into_inner(), b"lost?");
    /// ```
    pub fn try_send(&self, id: ActorId, data: Vec<u8>) -> Result<(), SendError> {
        self.inner
            .route(Participant::Actor(id), Queued::Send(data), self.inner.overflow_bound)
            .map_err(|e| e.map(Queued::into_payload))
    }

    /// The former name of [`try_send`](Self::try_send), which it calls.
    ///
    /// # Errors
    /// As for [`try_send`](Self::try_send).
    #[deprecated(since = "0.2.0", note = "renamed `try_send`; `send_async` waits for room")]
    pub fn send(&self, id: ActorId, data: Vec<u8>) -> Result<(), SendError> {
        self.try_send(id, data)
    }

    /// Sends a one-way message, fire-and-forget: a message that cannot be routed
    /// becomes a counted dead letter (and goes to the sink, if one is set).
    /// Never waits.
    pub fn tell(&self, id: ActorId, data: Vec<u8>) {
        if let Err(e) = self.try_send(id, data) {
            self.told_undeliverable(id, e);
        }
    }

    /// A message [`tell`](Self::tell) could not route becomes a dead letter.
    pub(crate) fn told_undeliverable(&self, id: ActorId, e: SendError) {
        {
            let reason = match e.kind() {
                SendErrorKind::MailboxFull => DeadLetterReason::MailboxFull,
                SendErrorKind::MailboxClosed => DeadLetterReason::MailboxClosed,
                SendErrorKind::Shutdown => DeadLetterReason::Shutdown,
                SendErrorKind::ShardFull => DeadLetterReason::ShardFull,
                SendErrorKind::ShardFailed => DeadLetterReason::ShardFailed,
                _ => DeadLetterReason::ActorNotFound,
            };
            let who = Participant::Actor(id);
            let letter = DeadLetter { target: who, channel_id: None, data: e.into_inner(), reason };
            self.inner.shard(&who).dead_letter(self.inner.dead_letters.as_ref(), letter);
        }
    }

    /// Sends a one-way message, waiting for room when there is none.
    /// Runtime-agnostic: the router's threads and the actor's mailbox wake the
    /// future, no timer or runtime is needed.
    ///
    /// Where it waits: while nothing of the actor's is parked at its shard, a
    /// full mailbox makes it wait for the mailbox itself, as a bounded channel's
    /// `send().await` does (the actor's next take wakes it) — it does not park.
    /// While messages are parked (sent by [`try_send`](Self::try_send) or
    /// [`tell`](Self::tell)), it parks behind them, which keeps per-pair order,
    /// and waits only at the overflow bound (or the shard's).
    ///
    /// Messages a sender awaits one after the other arrive in that order (and in
    /// order with its other sends). The wait ends by room, or by an error: the
    /// actor unregisters (`ActorNotFound`), its mailbox is dropped, its shard
    /// fails, or the router shuts down. To bound it, use
    /// [`send_async_timeout`](Self::send_async_timeout).
    ///
    /// # Errors
    /// `ActorNotFound`, `MailboxClosed`, `ShardFailed` or `Shutdown`, with the
    /// payload handed back.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it completes leaves the message
    /// unsent (it is dropped with the future) and withdraws its place in the wait;
    /// nothing reaches the actor.
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// use sharded_router::{ActorId, ActorMessage, Router};
    /// let router = Router::builder().shards(1).mailbox_capacity(1).build().unwrap();
    /// let (tx, mailbox) = router.mailbox();
    /// let id = ActorId::new();
    /// router.register(id, tx).unwrap();
    /// router.send_async(id, b"waits for room if it must".to_vec()).await.unwrap();
    /// assert!(matches!(mailbox.recv(), Ok(ActorMessage::Send { .. })));
    /// # });
    /// ```
    pub fn send_async(&self, id: ActorId, data: Vec<u8>) -> SendFuture<'_> {
        SendFuture::new(self, id, data, None)
    }

    /// [`send_async`](Self::send_async), waiting at most `timeout` for room
    /// (`Duration::MAX`: no limit). The deadline is kept by the target's shard,
    /// as a request's is: still no runtime needed.
    ///
    /// # Errors
    /// [`SendErrorKind::Timeout`] when no room appeared in time, or any error of
    /// [`send_async`](Self::send_async); the payload is handed back.
    ///
    /// # Cancel safety
    /// As for [`send_async`](Self::send_async).
    pub fn send_async_timeout(&self, id: ActorId, data: Vec<u8>, timeout: Duration) -> SendFuture<'_> {
        SendFuture::new(self, id, data, Some(time::deadline_in(timeout)))
    }

    /// [`send_async`](Self::send_async) for threads: parks the calling thread
    /// until the message is accepted or refused for good.
    ///
    /// # Blocking
    /// Blocks the thread. Do not call it from an async task: a task that blocks
    /// its runtime's worker can keep the very actor it waits for from running
    /// (use [`send_async`](Self::send_async) there).
    ///
    /// # Errors
    /// As for [`send_async`](Self::send_async).
    pub fn blocking_send(&self, id: ActorId, data: Vec<u8>) -> Result<(), SendError> {
        thread::block_on(self.send_async(id, data))
    }

    /// [`blocking_send`](Self::blocking_send), waiting at most `timeout` for room.
    ///
    /// # Blocking
    /// Blocks the thread; see [`blocking_send`](Self::blocking_send).
    ///
    /// # Errors
    /// As for [`send_async_timeout`](Self::send_async_timeout).
    pub fn blocking_send_timeout(
        &self,
        id: ActorId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        thread::block_on(self.send_async_timeout(id, data, timeout))
    }
}

/// A send waiting for room: [`Router::send_async`],
/// [`Router::send_async_timeout`].
///
/// Resolves once: `Ok` when the message is accepted (delivered, or parked below
/// the bound), or a [`SendError`] with the payload. Polling it again after that
/// returns `Pending`.
///
/// # Cancel safety
/// Dropping it before it completes sends nothing and withdraws its wait.
#[must_use = "a send future sends nothing unless polled"]
pub struct SendFuture<'a> {
    router: &'a Router,
    to: Participant,
    /// The message, until it is accepted or handed back.
    msg: Option<Queued>,
    /// `None`: no limit. `Some(None)`: a timeout too long for an `Instant`, also
    /// no limit. `Some(Some(at))`: give up at `at`.
    deadline: Option<Option<Instant>>,
    /// Filed with the target's shard the first time the send has to wait; the
    /// shard completes it at the deadline (or at shutdown), which wakes the task.
    timer: Option<Arc<ReplySlot<()>>>,
    waiting: Waiting,
    /// Set for a send through an [`ActorHandle`](crate::ActorHandle): the
    /// registration's gate, instead of a table lookup.
    gate: Option<Arc<Gate>>,
}

impl<'a> SendFuture<'a> {
    fn new(router: &'a Router, id: ActorId, data: Vec<u8>, deadline: Option<Option<Instant>>) -> Self {
        Self {
            router,
            to: Participant::Actor(id),
            msg: Some(Queued::Send(data)),
            deadline,
            timer: None,
            waiting: Waiting::default(),
            gate: None,
        }
    }

    /// A send through a handle's `gate` (see [`ActorHandle`](crate::ActorHandle)).
    pub(crate) fn through(router: &'a Router, id: ActorId, gate: Arc<Gate>, data: Vec<u8>) -> Self {
        let mut send = Self::new(router, id, data, None);
        send.gate = Some(gate);
        send
    }

    /// Ends the send: withdraws its wait and lets go of its deadline.
    fn finish(&mut self, outcome: Result<(), SendError<Queued>>) -> Poll<Result<(), SendError>> {
        self.router.inner.stop_waiting(&mut self.waiting);
        if let Some(timer) = self.timer.take() {
            timer.abandon();
        }
        Poll::Ready(outcome.map_err(|e| e.map(Queued::into_payload)))
    }

    /// Whether the deadline has ended the wait: `Ready` with why (`Timeout`, or
    /// the shard stopped taking deadlines), after registering the task's waker.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<SendErrorKind> {
        let Some(Some(at)) = self.deadline else { return Poll::Pending };
        if self.timer.is_none() {
            if time::now() >= at {
                return Poll::Ready(SendErrorKind::Timeout);
            }
            let timer = ReplySlot::new(None);
            let shard = self.router.inner.shard(&self.to);
            if let Err(error) = shard.file(Pending::Send(Arc::clone(&timer)), Some(at)) {
                return Poll::Ready(kind_of(error));
            }
            self.timer = Some(timer);
        }
        match self.timer.as_ref().map(|t| t.poll_outcome(cx)) {
            Some(Poll::Ready(outcome)) => {
                Poll::Ready(outcome.map_or_else(|f| kind_of(f.error()), |()| SendErrorKind::Timeout))
            }
            Some(Poll::Pending) | None => Poll::Pending,
        }
    }
}

/// The send error for why a shard ended a wait.
fn kind_of(error: RequestError) -> SendErrorKind {
    match error {
        RequestError::Shutdown => SendErrorKind::Shutdown,
        RequestError::ShardFailed => SendErrorKind::ShardFailed,
        _ => SendErrorKind::Timeout,
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(msg) = this.msg.take() else { return Poll::Pending };
        // Registrations from an earlier poll are withdrawn: the attempt below
        // registers anew if it must wait.
        this.router.inner.stop_waiting(&mut this.waiting);
        let inner = &this.router.inner;
        let bound = inner.overflow_bound;
        let routed = match &this.gate {
            None => inner.route_or_wait(this.to, msg, bound, cx.waker(), &mut this.waiting),
            Some(gate) => {
                let (shard, waiting) = (inner.shard(&this.to), &mut this.waiting);
                gate.with(msg, |entry, msg| {
                    inner.route_or_wait_to(shard, this.to, entry, msg, bound, cx.waker(), waiting)
                })
                .unwrap_or_else(|msg| Err(Routed::Failed(inner.gone(msg))))
            }
        };
        match routed {
            Ok(()) => this.finish(Ok(())),
            Err(Routed::Failed(e)) => this.finish(Err(e)),
            Err(Routed::Wait(msg)) => match this.poll_deadline(cx) {
                Poll::Ready(kind) => this.finish(Err(SendError::new(kind, msg))),
                Poll::Pending => {
                    this.msg = Some(msg);
                    Poll::Pending
                }
            },
        }
    }
}

impl Drop for SendFuture<'_> {
    fn drop(&mut self) {
        self.router.inner.stop_waiting(&mut self.waiting);
        if let Some(timer) = self.timer.take() {
            timer.abandon();
        }
    }
}

impl fmt::Debug for SendFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("to", &self.to)
            .field("pending", &self.msg.is_some())
            .finish_non_exhaustive()
    }
}
