//! What actors receive ([`ActorMessage`]) and the handles they answer through
//! ([`ReplyHandle`], [`ChannelOpenReply`]); the requester's side of a request
//! ([`ResponseFuture`], [`reply_channel`]). All of them are built on the reply slot
//! (`slot.rs`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::channels::{OpenDecision, OpenSlot};
use crate::error::{ChannelError, RequestError, RequestFailed};
use crate::ids::{ChannelId, Participant};
use crate::slot::ReplySlot;
use crate::sync::{time, Arc};

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
    ///
    /// Only the router builds it (the variant is `#[non_exhaustive]`), and
    /// [`Router::deliver`](crate::Router::deliver) refuses to forward it: a
    /// channel message always comes from the channel's other participant.
    #[non_exhaustive]
    ChannelMessage {
        /// The channel.
        channel_id: ChannelId,
        /// The payload.
        data: Vec<u8>,
    },
    /// The other participant closed the channel (or went away). Nothing more
    /// arrives on it. Only the router builds it, as for
    /// [`ChannelMessage`](Self::ChannelMessage).
    #[non_exhaustive]
    ChannelClose {
        /// The channel.
        channel_id: ChannelId,
    },
}

impl ActorMessage {
    /// The payload carried by the message: `initial_msg` for a channel open,
    /// nothing for a close.
    #[must_use]
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
            | Self::ChannelClose { channel_id, .. } => Some(*channel_id),
            Self::Send { .. } | Self::Request { .. } => None,
        }
    }

    /// `true` for the messages only the channel API may route.
    pub(crate) fn is_channel_traffic(&self) -> bool {
        matches!(self, Self::ChannelOpen { .. } | Self::ChannelMessage { .. } | Self::ChannelClose { .. })
    }

    /// What becomes of a message that can no longer be delivered: requests and
    /// channel opens are resolved with `outcome`, handing their payload back to
    /// the requester (it never reached the actor). What is returned becomes a
    /// dead letter: a one-way message's payload, or that of a request or open
    /// that already had an outcome (it timed out, or its requester walked away).
    pub(crate) fn undeliverable(self, outcome: RequestError) -> Option<Vec<u8>> {
        match self {
            Self::Send { data } | Self::ChannelMessage { data, .. } => Some(data),
            Self::ChannelClose { .. } => Some(Vec::new()),
            Self::Request { data, reply } => reply.fail(RequestFailed::new(outcome, Some(data))),
            Self::ChannelOpen { initial_msg, reply, .. } => {
                reply.fail(RequestFailed::new(outcome, Some(initial_msg)))
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
            Self::ChannelMessage { channel_id, data, .. } => f
                .debug_struct("ChannelMessage")
                .field("channel_id", channel_id)
                .field("len", &data.len())
                .finish(),
            Self::ChannelClose { channel_id, .. } => {
                f.debug_struct("ChannelClose").field("channel_id", channel_id).finish()
            }
        }
    }
}

/// An [`ActorMessage`] as the router carries it, from the send API through the
/// shard's overflow queues to the mailbox's queue, where the receive unpacks
/// it: 40 bytes instead of 80.
///
/// A queue's slots are written by the sender and read by the receiver, so each
/// line of a slot is a cache miss on both sides: a smaller slot is fewer of
/// them per message. The kinds of the hot paths (one-way, request, channel
/// message) are stored inline, the channel id as two words (a `u128` would
/// align the whole slot to 16); the others, one or two per channel, are boxed.
/// The send API builds the packed form directly;
/// [`Router::deliver`](crate::Router::deliver) packs what it is given.
pub(crate) enum Queued {
    Send(Vec<u8>),
    Request(Vec<u8>, ReplyHandle),
    ChannelMessage([u64; 2], Vec<u8>),
    Other(Box<ActorMessage>),
}

impl Queued {
    /// Packs `msg`, boxing the kinds that are not stored inline.
    #[inline]
    pub(crate) fn pack(msg: ActorMessage) -> Self {
        match msg {
            ActorMessage::Send { data } => Self::Send(data),
            ActorMessage::Request { data, reply } => Self::Request(data, reply),
            ActorMessage::ChannelMessage { channel_id, data } => Self::channel_message(channel_id, data),
            other => Self::Other(Box::new(other)),
        }
    }

    /// [`ActorMessage::ChannelMessage`], packed.
    pub(crate) fn channel_message(channel_id: ChannelId, data: Vec<u8>) -> Self {
        let bits = channel_id.as_u128();
        Self::ChannelMessage([bits as u64, (bits >> 64) as u64], data)
    }

    /// [`ActorMessage::ChannelClose`], packed.
    pub(crate) fn channel_close(channel_id: ChannelId) -> Self {
        Self::Other(Box::new(ActorMessage::ChannelClose { channel_id }))
    }

    /// The payload a refused send hands back: that of a one-way message, a
    /// request or a channel message, an open's first message, nothing for a
    /// close.
    pub(crate) fn into_payload(self) -> Vec<u8> {
        match self {
            Self::Send(data) | Self::Request(data, _) | Self::ChannelMessage(_, data) => data,
            Self::Other(msg) => match *msg {
                ActorMessage::ChannelOpen { initial_msg, .. } => initial_msg,
                other => other.data().to_vec(),
            },
        }
    }

    /// The message as the actor receives it.
    #[inline]
    pub(crate) fn unpack(self) -> ActorMessage {
        match self {
            Self::Send(data) => ActorMessage::Send { data },
            Self::Request(data, reply) => ActorMessage::Request { data, reply },
            Self::ChannelMessage([low, high], data) => ActorMessage::ChannelMessage {
                channel_id: ChannelId::from_u128(u128::from(low) | u128::from(high) << 64),
                data,
            },
            Self::Other(msg) => *msg,
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
    /// (it timed out, the requester dropped its future, or the router shut down)
    /// or the actor is no longer registered: once
    /// [`unregister`](crate::Router::unregister) has returned, every answer is
    /// refused and the requester gets `ActorNotFound`.
    ///
    /// # Errors
    /// `Err(data)` when the requester no longer waits for this answer.
    pub fn reply(self, data: Vec<u8>) -> Result<(), Vec<u8>> {
        self.slot.answer(Ok(data)).map_err(|outcome| outcome.unwrap_or_default())
    }

    /// `true` once the request has an outcome (answered, timed out, abandoned by
    /// the requester, ...) or its actor is no longer registered, so that replying
    /// is pointless.
    #[must_use]
    pub fn is_resolved(&self) -> bool {
        self.slot.is_done() || self.slot.target_left()
    }

    /// Resolves the request with `failed`; if it already had an outcome (it
    /// timed out, or its requester walked away), hands `failed`'s payload back.
    pub(crate) fn fail(self, failed: RequestFailed) -> Option<Vec<u8>> {
        self.slot.complete(Err(failed)).err().and_then(|outcome| outcome.err()?.into_payload())
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        // Answered (the common case) or otherwise settled: nothing to do.
        if !self.slot.is_done() {
            let _ = self.slot.answer(Err(RequestError::NoReply.into()));
        }
    }
}

impl fmt::Debug for ReplyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyHandle").field("resolved", &self.is_resolved()).finish()
    }
}

/// The pending answer to [`Router::request_async`](crate::Router::request_async).
///
/// Resolves exactly once: the reply, or a [`RequestError`]. The deadline is kept by
/// the target's shard, so no async runtime is needed.
///
/// # Cancel safety
/// Dropping the future before it completes abandons the request, as dropping
/// tokio's `oneshot::Receiver` does: the actor's
/// [`ReplyHandle::is_resolved`] turns `true`, a later
/// [`reply`](ReplyHandle::reply) is refused with the payload handed back, and
/// the shard lets go of the deadline.
#[must_use = "a response future does nothing unless polled"]
pub struct ResponseFuture {
    pub(crate) inner: Result<Arc<ReplySlot<Vec<u8>>>, Option<RequestFailed>>,
    /// Times the request, until the outcome is polled (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) probe: Option<crate::latency::Probe>,
}

impl Future for ResponseFuture {
    type Output = Result<Vec<u8>, RequestFailed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.inner {
            Ok(slot) => slot.poll_outcome(cx),
            Err(failed) => Poll::Ready(Err(failed.take().unwrap_or_else(|| RequestError::NoReply.into()))),
        };
        #[cfg(feature = "metrics")]
        if let Poll::Ready(result) = &outcome {
            if let Some(probe) = this.probe.take() {
                probe.finish(result.as_ref().err().map(RequestFailed::error));
            }
        }
        outcome
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Ok(slot) = &self.inner {
            slot.abandon();
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
    /// Waits for the answer, at most `timeout` (`Duration::MAX`: no limit);
    /// resolves with `Timeout` after it.
    ///
    /// # Errors
    /// [`RequestError::NoReply`] if the handle was dropped, `Timeout` at the deadline.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RequestError> {
        self.slot.wait_or_expire(time::deadline_in(timeout)).map_err(RequestError::from)
    }

    /// Waits for the answer or for the [`ReplyHandle`] to be dropped.
    ///
    /// # Errors
    /// [`RequestError::NoReply`] if the handle was dropped unanswered.
    pub fn recv(&self) -> Result<Vec<u8>, RequestError> {
        self.slot.wait().map_err(RequestError::from)
    }
}

impl Future for ReplyReceiver {
    type Output = Result<Vec<u8>, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll_outcome(cx).map_err(RequestError::from)
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

    /// Settles the open with `failed`; if it was already settled, hands
    /// `failed`'s payload back.
    pub(crate) fn fail(mut self, failed: RequestFailed) -> Option<Vec<u8>> {
        let open = self.open.take()?;
        let payload = failed.payload().map(<[u8]>::to_vec);
        if OpenSlot::decide(&open, Err(failed)) {
            None
        } else {
            payload
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

#[cfg(test)]
mod tests {
    use super::{reply_channel, ActorMessage, Queued};
    use crate::ids::ChannelId;

    /// A queue slot stays at five words (checked here rather than at compile
    /// time, as `tokio_chan` does: the layout of `Vec` is std's).
    #[test]
    fn a_queued_message_is_five_words() {
        assert!(std::mem::size_of::<Queued>() <= 40, "{} bytes", std::mem::size_of::<Queued>());
    }

    #[test]
    fn packing_and_unpacking_keep_every_field() {
        let round = |msg| Queued::pack(msg).unpack();

        assert!(
            matches!(round(ActorMessage::Send { data: vec![1, 2] }), ActorMessage::Send { data } if data == [1, 2])
        );

        let (reply, answer) = reply_channel();
        match round(ActorMessage::Request { data: vec![3], reply }) {
            ActorMessage::Request { data, reply } => {
                assert_eq!(data, [3]);
                reply.reply(vec![4]).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answer.recv().unwrap(), [4]);

        // Halves that differ, each with its top or bottom bit set.
        let id = ChannelId::from_u128(0x8000_0000_0000_0002_4000_0000_0000_0001);
        match round(ActorMessage::ChannelMessage { channel_id: id, data: vec![5] }) {
            ActorMessage::ChannelMessage { channel_id, data } => {
                assert_eq!((channel_id, data), (id, vec![5]));
            }
            other => panic!("{other:?}"),
        }
        match round(ActorMessage::ChannelClose { channel_id: id }) {
            ActorMessage::ChannelClose { channel_id } => assert_eq!(channel_id, id),
            other => panic!("{other:?}"),
        }
    }
}
