//! Theater-compatible names, so code written against Theater's single-task
//! `MessageRouter` moves over with few edits.
//!
//! | Theater | here |
//! |---|---|
//! | `MessageRouter::new()` | [`MessageRouter::new`] (sharded underneath) |
//! | `register_actor(id, mailbox_tx).await` | [`MessageRouter::register_actor`] |
//! | `unregister_actor(id).await` | [`MessageRouter::unregister_actor`] |
//! | `route_message(MessageCommand::SendMessage { .. }).await` | [`MessageRouter::route_message`] |
//! | `MessageCommand::OpenChannel { .. }` | same, with [`Participant`]s and a generated [`ChannelId`] |
//! | `MessageCommand::ChannelMessage { .. }` | same, plus `sender_id` (checked against the channel) |
//! | `MessageCommand::ChannelClose { .. }` | same, plus `sender_id` (checked before anything is removed) |
//! | `tokio::sync::oneshot::channel()` | [`oneshot`] (runtime-agnostic) |
//!
//! ```
//! use sharded_router::compat::{oneshot, MessageCommand, MessageRouter};
//! use sharded_router::{ActorId, ActorMessage};
//!
//! # futures_executor::block_on(async {
//! let router = MessageRouter::new();
//! let (mailbox_tx, mailbox) = router.mailbox();
//! let id = ActorId::new();
//! router.register_actor(id, mailbox_tx).await.unwrap();
//!
//! let (response_tx, response_rx) = oneshot();
//! router
//!     .route_message(MessageCommand::SendMessage {
//!         target_id: id,
//!         message: ActorMessage::Send { data: b"hi".to_vec() },
//!         response_tx,
//!     })
//!     .await
//!     .unwrap();
//! assert!(response_rx.await.unwrap().is_ok());
//! assert_eq!(mailbox.recv().unwrap().data(), b"hi");
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::channel_api::OpenedChannel;
use crate::error::{ChannelError, RegisterError, RequestError, SendError, SendErrorKind, UnregisterError};
use crate::ids::{ActorId, ChannelId, Participant};
use crate::mailbox::{Mailbox, MailboxSender};
use crate::message::ActorMessage;
use crate::router::Router;
use crate::slot::ReplySlot;
use crate::sync::Arc;

/// The outcome of routing one message, as delivered on a command's `response_tx`.
pub type RouteResult = Result<(), SendError<ActorMessage>>;

/// Commands understood by [`MessageRouter::route_message`].
#[non_exhaustive]
pub enum MessageCommand {
    /// Route `message` to `target_id`; the outcome goes to `response_tx`.
    SendMessage {
        /// The recipient.
        target_id: ActorId,
        /// The message, as the actor will receive it.
        message: ActorMessage,
        /// Receives the routing outcome.
        response_tx: ResponseSender<RouteResult>,
    },
    /// Open a channel from `initiator_id` to `target_id`; the target's decision
    /// (or the timeout, see [`MessageRouter::with_open_timeout`]) goes to
    /// `response_tx`.
    OpenChannel {
        /// Who opens the channel.
        initiator_id: Participant,
        /// Who is asked to accept it.
        target_id: Participant,
        /// The first message, delivered with the open request.
        initial_message: Vec<u8>,
        /// Receives the channel, or why it was not opened.
        response_tx: ResponseSender<Result<OpenedChannel, ChannelError>>,
    },
    /// Send `message` on a channel from `sender_id` to the other participant.
    ChannelMessage {
        /// The channel.
        channel_id: ChannelId,
        /// The participant sending; must take part in the channel.
        sender_id: Participant,
        /// The payload.
        message: Vec<u8>,
        /// Receives the routing outcome.
        response_tx: ResponseSender<Result<(), SendError>>,
    },
    /// Close a channel on behalf of `sender_id`.
    ChannelClose {
        /// The channel.
        channel_id: ChannelId,
        /// The participant closing; must take part in the channel.
        sender_id: Participant,
        /// Receives the outcome.
        response_tx: ResponseSender<Result<(), ChannelError>>,
    },
}

/// Why [`MessageRouter::route_message`] failed (also sent on the command's
/// `response_tx`, in full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// A message could not be routed.
    Send(SendErrorKind),
    /// A channel could not be opened or closed.
    Channel(ChannelError),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(kind) => write!(f, "send failed: {kind}"),
            Self::Channel(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RouteError {}

impl fmt::Debug for MessageCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SendMessage { target_id, message, .. } => f
                .debug_struct("SendMessage")
                .field("target_id", target_id)
                .field("message", message)
                .finish_non_exhaustive(),
            Self::OpenChannel { initiator_id, target_id, initial_message, .. } => f
                .debug_struct("OpenChannel")
                .field("initiator_id", initiator_id)
                .field("target_id", target_id)
                .field("len", &initial_message.len())
                .finish_non_exhaustive(),
            Self::ChannelMessage { channel_id, sender_id, message, .. } => f
                .debug_struct("ChannelMessage")
                .field("channel_id", channel_id)
                .field("sender_id", sender_id)
                .field("len", &message.len())
                .finish_non_exhaustive(),
            Self::ChannelClose { channel_id, sender_id, .. } => f
                .debug_struct("ChannelClose")
                .field("channel_id", channel_id)
                .field("sender_id", sender_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Theater's `MessageRouter`, backed by a sharded [`Router`].
#[derive(Clone, Debug)]
pub struct MessageRouter {
    router: Router,
    open_timeout: Duration,
}

/// How long `OpenChannel` waits for the target's decision unless configured.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

impl MessageRouter {
    /// A router with the default configuration.
    ///
    /// # Panics
    /// If the operating system refuses to spawn the shard threads (as
    /// `std::thread::spawn` does); use [`Router::builder`] to handle that error.
    #[must_use]
    pub fn new() -> Self {
        match Router::new() {
            Ok(router) => Self::from_router(router),
            Err(e) => panic!("sharded-router: {e}"),
        }
    }

    /// Wraps an existing router.
    #[must_use]
    pub fn from_router(router: Router) -> Self {
        Self { router, open_timeout: DEFAULT_OPEN_TIMEOUT }
    }

    /// Sets how long `OpenChannel` waits for the target (default
    /// [`DEFAULT_OPEN_TIMEOUT`]).
    #[must_use]
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// The underlying router.
    #[must_use]
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// A mailbox with the router's configured capacity.
    #[must_use]
    pub fn mailbox(&self) -> (MailboxSender, Mailbox) {
        self.router.mailbox()
    }

    /// Registers an actor's mailbox.
    ///
    /// # Errors
    /// As for [`Router::register`].
    pub async fn register_actor(
        &self,
        actor_id: ActorId,
        mailbox_tx: MailboxSender,
    ) -> Result<(), RegisterError> {
        self.router.register(actor_id, mailbox_tx)
    }

    /// Unregisters an actor.
    ///
    /// # Errors
    /// As for [`Router::unregister`].
    pub async fn unregister_actor(&self, actor_id: ActorId) -> Result<(), UnregisterError> {
        self.router.unregister(actor_id)
    }

    /// Routes a command. Never waits on a mailbox, and no other command waits on
    /// this one: the outcome is sent on the command's `response_tx` and its kind is
    /// also returned. `OpenChannel` completes when the target decides (or at the
    /// timeout); only the caller awaiting it waits.
    ///
    /// # Errors
    /// The [`RouteError`] when the command failed.
    pub async fn route_message(&self, command: MessageCommand) -> Result<(), RouteError> {
        match command {
            MessageCommand::SendMessage { target_id, message, response_tx } => {
                let outcome = self.router.deliver(target_id, message);
                let kind = outcome.as_ref().map_err(|e| RouteError::Send(e.kind())).copied();
                response_tx.send(outcome);
                kind
            }
            MessageCommand::OpenChannel { initiator_id, target_id, initial_message, response_tx } => {
                let outcome = self
                    .router
                    .open_channel_async(initiator_id, target_id, initial_message, self.open_timeout)
                    .await
                    .map_err(ChannelError::from);
                let kind = outcome.as_ref().map(|_| ()).map_err(|e| RouteError::Channel(*e));
                response_tx.send(outcome);
                kind
            }
            MessageCommand::ChannelMessage { channel_id, sender_id, message, response_tx } => {
                let outcome = self.router.channel_send(channel_id, sender_id, message);
                let kind = outcome.as_ref().map_err(|e| RouteError::Send(e.kind())).copied();
                response_tx.send(outcome);
                kind
            }
            MessageCommand::ChannelClose { channel_id, sender_id, response_tx } => {
                let outcome = self.router.close_channel(channel_id, sender_id);
                response_tx.send(outcome);
                outcome.map_err(RouteError::Channel)
            }
        }
    }
}

impl Default for MessageRouter {
    fn default() -> Self {
        Self::new()
    }
}

/// A runtime-agnostic one-shot channel, standing in for `tokio::sync::oneshot`;
/// built on the crate's one complete-once cell, the reply slot behind requests.
#[must_use]
pub fn oneshot<T>() -> (ResponseSender<T>, ResponseReceiver<T>) {
    let slot = ReplySlot::new(None);
    (ResponseSender { slot: Arc::clone(&slot) }, ResponseReceiver { slot })
}

/// The sending half of [`oneshot`].
pub struct ResponseSender<T> {
    slot: Arc<ReplySlot<T>>,
}

impl<T> ResponseSender<T> {
    /// Sends the value (consuming the sender). A value nobody receives is dropped.
    pub fn send(self, value: T) {
        let _ = self.slot.complete(Ok(value));
    }
}

impl<T> Drop for ResponseSender<T> {
    /// Dropped without sending: the receiver gets [`Canceled`].
    fn drop(&mut self) {
        let _ = self.slot.complete(Err(RequestError::NoReply.into()));
    }
}

impl<T> fmt::Debug for ResponseSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSender").finish_non_exhaustive()
    }
}

/// The sender of a [`oneshot`] was dropped without sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canceled;

impl fmt::Display for Canceled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response sender was dropped without sending")
    }
}

impl std::error::Error for Canceled {}

/// The receiving half of [`oneshot`]; await it, or call [`recv`](Self::recv).
pub struct ResponseReceiver<T> {
    slot: Arc<ReplySlot<T>>,
}

impl<T> ResponseReceiver<T> {
    /// Blocks until the value arrives or the sender is dropped.
    ///
    /// # Errors
    /// [`Canceled`] if the sender was dropped without sending.
    pub fn recv(self) -> Result<T, Canceled> {
        self.slot.wait().map_err(|_| Canceled)
    }
}

impl<T> Future for ResponseReceiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll_outcome(cx).map_err(|_| Canceled)
    }
}

impl<T> fmt::Debug for ResponseReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseReceiver").finish_non_exhaustive()
    }
}
