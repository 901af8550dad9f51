//! The channel half of [`Router`]'s API: opening, messaging and closing channels,
//! over the channel table in `channels.rs`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::channels::OpenDecision;
use crate::channels::OpenSlot;
use crate::error::{ChannelError, OpenFailed, RequestError, RequestFailed, SendError, SendErrorKind};
use crate::ids::{ChannelId, Participant};
use crate::message::{ActorMessage, ChannelOpenReply, Queued};
use crate::router::Router;
use crate::sync::{time, Arc};
use crate::timers::Pending;

impl Router {
    /// Creates the channel entry and posts `ChannelOpen` to the target; the
    /// returned slot settles exactly once.
    fn start_open(
        &self,
        initiator: Participant,
        target: Participant,
        initial_msg: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Arc<OpenSlot>, OpenFailed> {
        let inner = &*self.inner;
        let refuse =
            |error: ChannelError, initial_msg: Vec<u8>| Err(OpenFailed::new(error, Some(initial_msg)));
        if inner.is_closed() {
            return refuse(ChannelError::Shutdown, initial_msg);
        }
        if initiator == target {
            return refuse(ChannelError::SameParticipant, initial_msg);
        }
        let Some(initiator_state) = inner.state_of(initiator) else {
            return refuse(ChannelError::ParticipantNotFound(initiator), initial_msg);
        };
        let Some(target_state) = inner.state_of(target) else {
            return refuse(ChannelError::ParticipantNotFound(target), initial_msg);
        };
        let channel_id = ChannelId::random();
        let open = OpenSlot::new(
            channel_id,
            (initiator, Arc::clone(&initiator_state)),
            (target, Arc::clone(&target_state)),
            Arc::clone(&inner.channels),
        );
        inner.channels.insert_opening(&open);
        // Linking fails once a participant has left; its departure would not see
        // this channel, so settle it here.
        if !initiator_state.link_channel(channel_id) {
            OpenSlot::decide(&open, Err(RequestError::ActorNotFound.into()));
            return refuse(ChannelError::ParticipantNotFound(initiator), initial_msg);
        }
        if !target_state.link_channel(channel_id) {
            OpenSlot::decide(&open, Err(RequestError::ActorNotFound.into()));
            return refuse(ChannelError::ParticipantNotFound(target), initial_msg);
        }
        let shard = inner.shard(&target);
        if let Err(error) = shard.file(Pending::Open(Arc::clone(&open)), deadline) {
            OpenSlot::decide(&open, Err(error.into()));
            return refuse(ChannelError::from_open(error, target), initial_msg);
        }
        let msg = ActorMessage::ChannelOpen {
            channel_id,
            initiator,
            initial_msg,
            reply: ChannelOpenReply::new(Arc::clone(&open)),
        };
        if let Err(e) = inner.route(target, Queued::pack(msg), inner.overflow_bound) {
            // Settle with the real cause before the returned reply handle is
            // dropped (dropping it would count as a rejection).
            let error = RequestError::from(e.kind());
            OpenSlot::decide(&open, Err(error.into()));
            let initial_msg = match e.into_inner().unpack() {
                ActorMessage::ChannelOpen { initial_msg, .. } => Some(initial_msg),
                _ => None,
            };
            return Err(OpenFailed::new(ChannelError::from_open(error, target), initial_msg));
        }
        Ok(open)
    }

    /// Opens a channel from `initiator` to `target`, which receives
    /// [`ActorMessage::ChannelOpen`] and accepts or rejects. Blocks until exactly
    /// one outcome: accepted (with the target's optional response), rejected,
    /// timed out, a participant gone, or shutdown. No shard ever waits for the
    /// target.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sharded_router::{ActorId, ActorMessage, Router};
    ///
    /// let router = Router::builder().shards(2).build().unwrap();
    /// let (a, b) = (ActorId::new(), ActorId::new());
    /// let (tx_a, mailbox_a) = router.mailbox();
    /// let (tx_b, mailbox_b) = router.mailbox();
    /// router.register(a, tx_a).unwrap();
    /// router.register(b, tx_b).unwrap();
    ///
    /// // `b` accepts every channel and echoes what arrives on it.
    /// let r = router.clone();
    /// std::thread::spawn(move || {
    ///     while let Ok(msg) = mailbox_b.recv() {
    ///         match msg {
    ///             ActorMessage::ChannelOpen { reply, .. } => reply.accept(Some(b"welcome".to_vec())).unwrap(),
    ///             ActorMessage::ChannelMessage { channel_id, data, .. } => r.channel_send(channel_id, b, data).unwrap(),
    ///             _ => {}
    ///         }
    ///     }
    /// });
    ///
    /// let opened = router.open_channel(a, b, b"hello".to_vec(), Duration::from_secs(5)).unwrap();
    /// assert_eq!(opened.response.as_deref(), Some(&b"welcome"[..]));
    /// router.channel_send(opened.id, a, b"ping".to_vec()).unwrap();
    /// match mailbox_a.recv().unwrap() {
    ///     ActorMessage::ChannelMessage { data, .. } => assert_eq!(data, b"ping"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// router.close_channel(opened.id, a).unwrap();
    /// ```
    ///
    /// # Errors
    /// See [`ChannelError`]; the [`OpenFailed`] hands `initial_msg` back when it
    /// never reached the target.
    pub fn open_channel(
        &self,
        initiator: impl Into<Participant>,
        target: impl Into<Participant>,
        initial_msg: Vec<u8>,
        timeout: Duration,
    ) -> Result<OpenedChannel, OpenFailed> {
        let (initiator, target) = (initiator.into(), target.into());
        let deadline = time::deadline_in(timeout);
        let open = self.start_open(initiator, target, initial_msg, deadline)?;
        let outcome = match open.slot.wait_until(deadline) {
            Some(outcome) => outcome,
            None if OpenSlot::decide(&open, Err(RequestError::Timeout.into())) => {
                Err(RequestError::Timeout.into())
            }
            // Settled by someone else at the deadline: take that outcome.
            None => open.slot.wait(),
        };
        opened(open.channel, target, outcome)
    }

    /// [`open_channel`](Self::open_channel) for async callers; the target's shard
    /// keeps the deadline, so any executor (or none) can drive the future.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes abandons the open: the channel is
    /// removed (unless it was already accepted), and the target's
    /// [`ChannelOpenReply::accept`] fails with `ChannelNotFound`.
    pub fn open_channel_async(
        &self,
        initiator: impl Into<Participant>,
        target: impl Into<Participant>,
        initial_msg: Vec<u8>,
        timeout: Duration,
    ) -> OpenFuture {
        let target = target.into();
        let started = self.start_open(initiator.into(), target, initial_msg, time::deadline_in(timeout));
        OpenFuture { target, open: started.map_err(Some) }
    }

    /// Sends `data` on an open channel to its other participant, through the same
    /// path as [`try_send`](Self::try_send): per-pair FIFO holds across sends, requests and
    /// channel messages. Never blocks.
    ///
    /// # Errors
    /// `ChannelNotFound` (unknown or closed), `ChannelNotOpen`, `NotParticipant`,
    /// or the peer's routing errors (`MailboxFull`, ...), with the payload handed
    /// back.
    pub fn channel_send(
        &self,
        channel_id: ChannelId,
        sender: impl Into<Participant>,
        data: Vec<u8>,
    ) -> Result<(), SendError> {
        let inner = &*self.inner;
        if inner.is_closed() {
            return Err(SendError::new(SendErrorKind::Shutdown, data));
        }
        let sender = sender.into();
        let routed = inner
            .channels
            .map
            .with(&channel_id, data, |entry, data| {
                let peer = match entry.check_open(sender) {
                    Ok(peer) => peer,
                    Err(kind) => {
                        return Err(SendError::new(kind, Queued::channel_message(channel_id, data)));
                    }
                };
                inner.route(peer, Queued::channel_message(channel_id, data), inner.overflow_bound)
            })
            .unwrap_or_else(|data| {
                Err(SendError::new(SendErrorKind::ChannelNotFound, Queued::channel_message(channel_id, data)))
            });
        match routed {
            Ok(()) => {
                inner.channels.counters.messages.bump();
                Ok(())
            }
            Err(e) => Err(e.map(Queued::into_payload)),
        }
    }

    /// Closes a channel on behalf of one of its participants. The caller is checked
    /// before anything is removed: a non-participant gets an error and the channel
    /// stays open. The peer receives [`ActorMessage::ChannelClose`] after every
    /// earlier message on the channel from the closer.
    ///
    /// # Errors
    /// `ChannelNotFound` (unknown or already closed), `NotOpen`, `NotParticipant`,
    /// `Shutdown`.
    pub fn close_channel(
        &self,
        channel_id: ChannelId,
        sender: impl Into<Participant>,
    ) -> Result<(), ChannelError> {
        let inner = &*self.inner;
        if inner.is_closed() {
            return Err(ChannelError::Shutdown);
        }
        let peer = inner.channels.close(channel_id, sender.into())?;
        // Close notices are never refused for a full mailbox: they park behind
        // earlier messages instead.
        let _ = inner.route(peer, Queued::channel_close(channel_id), usize::MAX);
        Ok(())
    }
}

/// A channel the target accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenedChannel {
    /// The channel's id.
    pub id: ChannelId,
    /// What the target sent back with its acceptance, if anything.
    pub response: Option<Vec<u8>>,
}

fn opened(
    id: ChannelId,
    target: Participant,
    outcome: Result<OpenDecision, RequestFailed>,
) -> Result<OpenedChannel, OpenFailed> {
    match outcome {
        Ok(OpenDecision::Accepted(response)) => Ok(OpenedChannel { id, response }),
        Ok(OpenDecision::Rejected) => Err(ChannelError::Rejected.into()),
        Ok(OpenDecision::Left(who)) => Err(ChannelError::ParticipantNotFound(who).into()),
        Err(failed) => {
            let error = ChannelError::from_open(failed.error(), target);
            Err(OpenFailed::new(error, failed.into_payload()))
        }
    }
}

/// The pending outcome of [`Router::open_channel_async`].
#[must_use = "an open future does nothing unless polled"]
pub struct OpenFuture {
    target: Participant,
    open: Result<Arc<OpenSlot>, Option<OpenFailed>>,
}

impl Future for OpenFuture {
    type Output = Result<OpenedChannel, OpenFailed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.open {
            Ok(open) => open.slot.poll_outcome(cx).map(|outcome| opened(open.channel, this.target, outcome)),
            Err(failed) => {
                Poll::Ready(Err(failed.take().unwrap_or_else(|| ChannelError::ChannelNotFound.into())))
            }
        }
    }
}

impl Drop for OpenFuture {
    /// Abandons an open still waiting for the target: the channel is removed, so
    /// the target can no longer accept it. A settled open is left as it is.
    fn drop(&mut self) {
        if let Ok(open) = &self.open {
            OpenSlot::decide(open, Err(RequestError::NoReply.into()));
        }
    }
}

impl fmt::Debug for OpenFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenFuture").field("target", &self.target).finish_non_exhaustive()
    }
}
