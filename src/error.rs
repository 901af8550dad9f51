//! Error types. Every failed send hands its payload back.

use std::fmt;

use crate::ids::{ActorId, ExternalId, Participant};

/// Why a message could not be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// No actor is registered under the target id.
    ActorNotFound,
    /// The mailbox is full and the actor's overflow bound is reached.
    MailboxFull,
    /// The actor's receiving half was dropped while it was still registered.
    MailboxClosed,
    /// The router has shut down.
    Shutdown,
    /// No channel has this id (never opened, or already closed).
    ChannelNotFound,
    /// The channel is still waiting for its target to accept.
    ChannelNotOpen,
    /// The sender is not one of the channel's two participants.
    NotParticipant,
    /// The target's shard holds as many messages as
    /// [`max_parked_per_shard`](crate::RouterBuilder::max_parked_per_shard) allows.
    ShardFull,
    /// The target's shard failed (see [`Router::is_degraded`](crate::Router::is_degraded)).
    ShardFailed,
    /// Channel opens, messages and closes travel only through the channel API
    /// ([`Router::open_channel`](crate::Router::open_channel),
    /// [`channel_send`](crate::Router::channel_send),
    /// [`close_channel`](crate::Router::close_channel)), never through
    /// [`Router::deliver`](crate::Router::deliver).
    ChannelOnly,
    /// No room appeared before the deadline of a bounded send
    /// ([`Router::send_async_timeout`](crate::Router::send_async_timeout),
    /// [`blocking_send_timeout`](crate::Router::blocking_send_timeout)).
    Timeout,
}

impl SendErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::ActorNotFound => "no actor is registered under the target id",
            Self::MailboxFull => "the target's mailbox and overflow queue are full",
            Self::MailboxClosed => "the target's mailbox was dropped",
            Self::Shutdown => "the router has shut down",
            Self::ChannelNotFound => "no open channel has this id",
            Self::ChannelNotOpen => "the channel has not been accepted yet",
            Self::NotParticipant => "the sender is not a participant of the channel",
            Self::ShardFull => "the target's shard holds as many parked messages as it may",
            Self::ShardFailed => "the target's shard failed",
            Self::ChannelOnly => "channel messages travel only through the channel API",
            Self::Timeout => "no room appeared in the target's mailbox before the deadline",
        }
    }
}

impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A message that could not be routed, handed back with the reason.
///
/// `Debug` does not print the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct SendError<T = Vec<u8>> {
    kind: SendErrorKind,
    payload: T,
}

impl<T> SendError<T> {
    pub(crate) fn new(kind: SendErrorKind, payload: T) -> Self {
        Self { kind, payload }
    }

    /// Why the send failed.
    #[must_use]
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// Returns the message that could not be sent.
    #[must_use]
    pub fn into_inner(self) -> T {
        self.payload
    }

    /// `true` if the target's mailbox and overflow were full.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.kind == SendErrorKind::MailboxFull
    }

    /// `true` if no actor was registered under the target id.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.kind == SendErrorKind::ActorNotFound
    }

    /// `true` if the router has shut down.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.kind == SendErrorKind::Shutdown
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        SendError { kind: self.kind, payload: f(self.payload) }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.kind)
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The outcome of a request that did not produce a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestError {
    /// No actor is registered under the target id, or it unregistered before replying.
    ActorNotFound,
    /// The target's mailbox and overflow queue were full.
    MailboxFull,
    /// The target's mailbox was dropped.
    MailboxClosed,
    /// No reply arrived before the deadline.
    Timeout,
    /// The actor dropped the reply handle without replying.
    NoReply,
    /// The router shut down before a reply arrived.
    Shutdown,
    /// The target's shard holds as many parked messages as it may.
    ShardFull,
    /// The target's shard failed before a reply arrived (see
    /// [`Router::is_degraded`](crate::Router::is_degraded)).
    ShardFailed,
}

impl From<SendErrorKind> for RequestError {
    fn from(kind: SendErrorKind) -> Self {
        match kind {
            SendErrorKind::MailboxFull => Self::MailboxFull,
            SendErrorKind::MailboxClosed => Self::MailboxClosed,
            SendErrorKind::Shutdown => Self::Shutdown,
            SendErrorKind::ShardFull => Self::ShardFull,
            SendErrorKind::ShardFailed => Self::ShardFailed,
            SendErrorKind::Timeout => Self::Timeout,
            SendErrorKind::ActorNotFound
            | SendErrorKind::ChannelNotFound
            | SendErrorKind::ChannelNotOpen
            | SendErrorKind::NotParticipant
            | SendErrorKind::ChannelOnly => Self::ActorNotFound,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ActorNotFound => "request failed: the target actor is not registered",
            Self::MailboxFull => "request failed: the target's mailbox and overflow queue are full",
            Self::MailboxClosed => "request failed: the target's mailbox was dropped",
            Self::Timeout => "request timed out",
            Self::NoReply => "the actor dropped the request without replying",
            Self::Shutdown => "request failed: the router has shut down",
            Self::ShardFull => "request failed: the target's shard holds as many parked messages as it may",
            Self::ShardFailed => "request failed: the target's shard failed",
        })
    }
}

impl std::error::Error for RequestError {}

/// A request that ended without a reply: the [`RequestError`], and the payload when
/// it never reached the actor.
///
/// The payload comes back when the request was refused at the send (`ActorNotFound`,
/// `MailboxFull`, `ShardFull`, `MailboxClosed`, `Shutdown`, `ShardFailed`) or was
/// parked at the target's shard and discarded there (the actor unregistered, the
/// router shut down, the shard failed). Once the actor has taken the request, the
/// payload is its own and [`payload`](Self::payload) is `None`.
///
/// Compares equal to a bare [`RequestError`] of the same kind; `Debug` does not
/// print the payload.
///
/// ```
/// use std::time::Duration;
/// use sharded_router::{ActorId, RequestError, Router};
/// let router = Router::builder().shards(1).build().unwrap();
/// let failed = router.request(ActorId::new(), b"ping".to_vec(), Duration::from_secs(1)).unwrap_err();
/// assert_eq!(failed, RequestError::ActorNotFound);
/// assert_eq!(failed.into_payload().as_deref(), Some(&b"ping"[..]));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RequestFailed {
    error: RequestError,
    payload: Option<Vec<u8>>,
}

impl RequestFailed {
    pub(crate) fn new(error: RequestError, payload: Option<Vec<u8>>) -> Self {
        Self { error, payload }
    }

    /// Why the request failed.
    #[must_use]
    pub fn error(&self) -> RequestError {
        self.error
    }

    /// The request's payload, if it never reached the actor.
    #[must_use]
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// Takes the request's payload, if it never reached the actor.
    #[must_use]
    pub fn into_payload(self) -> Option<Vec<u8>> {
        self.payload
    }
}

impl From<RequestError> for RequestFailed {
    fn from(error: RequestError) -> Self {
        Self { error, payload: None }
    }
}

impl From<RequestFailed> for RequestError {
    fn from(failed: RequestFailed) -> Self {
        failed.error
    }
}

impl PartialEq<RequestError> for RequestFailed {
    fn eq(&self, other: &RequestError) -> bool {
        self.error == *other
    }
}

impl fmt::Debug for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFailed")
            .field("error", &self.error)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish()
    }
}

impl fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for RequestFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why a registration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// An actor is already registered under this id.
    AlreadyRegistered(ActorId),
    /// A freshly drawn external id was already attached (a random 122-bit
    /// collision; attaching again draws a new one).
    ExternalIdInUse(ExternalId),
    /// The router has shut down.
    Shutdown,
    /// Every receiving half of the mailbox was already dropped.
    MailboxClosed,
    /// The shard this id hashes to failed (see
    /// [`Router::is_degraded`](crate::Router::is_degraded)).
    ShardFailed,
    /// The router is a node of a cluster and this id is registered on another
    /// node (feature `nats`).
    OnAnotherNode(ActorId),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MailboxClosed => f.write_str("register failed: the mailbox's receiving half was dropped"),
            Self::ShardFailed => f.write_str("register failed: the id's shard failed"),
            Self::AlreadyRegistered(id) => write!(f, "actor {id} is already registered"),
            Self::OnAnotherNode(id) => write!(f, "actor {id} is registered on another node of the cluster"),
            Self::ExternalIdInUse(id) => write!(f, "external id {id} is already attached"),
            Self::Shutdown => f.write_str("register failed: the router has shut down"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why an unregistration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnregisterError {
    /// No actor is registered under this id.
    ActorNotFound(ActorId),
    /// No external endpoint is attached under this id.
    ExternalNotFound(ExternalId),
    /// The router has shut down.
    Shutdown,
}

impl fmt::Display for UnregisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActorNotFound(id) => write!(f, "actor {id} is not registered"),
            Self::ExternalNotFound(id) => write!(f, "external endpoint {id} is not attached"),
            Self::Shutdown => f.write_str("unregister failed: the router has shut down"),
        }
    }
}

impl std::error::Error for UnregisterError {}

/// Why a hot-reload call ([`Router::suspend`](crate::Router::suspend),
/// [`resume`](crate::Router::resume),
/// [`replace_mailbox`](crate::Router::replace_mailbox)) failed. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadError {
    /// No actor is registered under this id.
    ActorNotFound(ActorId),
    /// The new mailbox's receiving half was already dropped.
    MailboxClosed,
    /// The actor's shard failed: it can hold or move nothing.
    ShardFailed,
    /// The router has shut down.
    Shutdown,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActorNotFound(id) => write!(f, "actor {id} is not registered"),
            Self::MailboxClosed => f.write_str("the new mailbox's receiving half was dropped"),
            Self::ShardFailed => f.write_str("the actor's shard failed"),
            Self::Shutdown => f.write_str("the router has shut down"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Why a channel could not be opened or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelError {
    /// This participant is not registered (or went away while the channel opened).
    ParticipantNotFound(Participant),
    /// The target rejected the channel, or dropped the open request unanswered.
    Rejected,
    /// The target did not answer before the deadline.
    Timeout,
    /// No channel has this id (never opened, or already closed).
    ChannelNotFound,
    /// The channel is still waiting for its target to accept.
    NotOpen,
    /// The caller is not one of the channel's two participants.
    NotParticipant,
    /// A channel needs two different participants.
    SameParticipant,
    /// The target's mailbox and overflow queue were full.
    MailboxFull,
    /// The target's mailbox was dropped.
    MailboxClosed,
    /// The router has shut down.
    Shutdown,
    /// The target's shard holds as many parked messages as it may.
    ShardFull,
    /// The target's shard failed.
    ShardFailed,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShardFull => f.write_str("the target's shard holds as many parked messages as it may"),
            Self::ShardFailed => f.write_str("the target's shard failed"),
            Self::ParticipantNotFound(p) => write!(f, "{p} is not registered"),
            Self::Rejected => f.write_str("the target rejected the channel"),
            Self::Timeout => f.write_str("the target did not answer the channel open in time"),
            Self::ChannelNotFound => f.write_str("no open channel has this id"),
            Self::NotOpen => f.write_str("the channel has not been accepted yet"),
            Self::NotParticipant => f.write_str("the caller is not a participant of the channel"),
            Self::SameParticipant => f.write_str("a channel needs two different participants"),
            Self::MailboxFull => f.write_str("the target's mailbox and overflow queue are full"),
            Self::MailboxClosed => f.write_str("the target's mailbox was dropped"),
            Self::Shutdown => f.write_str("the router has shut down"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl ChannelError {
    /// The error for an open to `target` that ended without an answer.
    pub(crate) fn from_open(error: RequestError, target: Participant) -> Self {
        match error {
            RequestError::Timeout => Self::Timeout,
            RequestError::NoReply => Self::Rejected,
            RequestError::MailboxFull => Self::MailboxFull,
            RequestError::MailboxClosed => Self::MailboxClosed,
            RequestError::Shutdown => Self::Shutdown,
            RequestError::ActorNotFound => Self::ParticipantNotFound(target),
            RequestError::ShardFull => Self::ShardFull,
            RequestError::ShardFailed => Self::ShardFailed,
        }
    }
}

/// A channel open that did not succeed: the [`ChannelError`], and the initial
/// message when it never reached the target (as for [`RequestFailed`]).
///
/// Compares equal to a bare [`ChannelError`] of the same kind; `Debug` does not
/// print the message.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenFailed {
    error: ChannelError,
    initial_msg: Option<Vec<u8>>,
}

impl OpenFailed {
    pub(crate) fn new(error: ChannelError, initial_msg: Option<Vec<u8>>) -> Self {
        Self { error, initial_msg }
    }

    /// Why the open failed.
    #[must_use]
    pub fn error(&self) -> ChannelError {
        self.error
    }

    /// The initial message, if it never reached the target.
    #[must_use]
    pub fn initial_msg(&self) -> Option<&[u8]> {
        self.initial_msg.as_deref()
    }

    /// Takes the initial message, if it never reached the target.
    #[must_use]
    pub fn into_initial_msg(self) -> Option<Vec<u8>> {
        self.initial_msg
    }
}

impl From<ChannelError> for OpenFailed {
    fn from(error: ChannelError) -> Self {
        Self { error, initial_msg: None }
    }
}

impl From<OpenFailed> for ChannelError {
    fn from(failed: OpenFailed) -> Self {
        failed.error
    }
}

impl PartialEq<ChannelError> for OpenFailed {
    fn eq(&self, other: &ChannelError) -> bool {
        self.error == *other
    }
}

impl fmt::Debug for OpenFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenFailed")
            .field("error", &self.error)
            .field("initial_msg_len", &self.initial_msg.as_ref().map(Vec::len))
            .finish()
    }
}

impl fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for OpenFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why a router could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `shards(0)` was requested.
    ZeroShards,
    /// `mailbox_capacity(0)` was requested; mailboxes must hold at least one message.
    ZeroCapacity,
    /// A shard thread could not be spawned.
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroShards => f.write_str("a router needs at least one shard"),
            Self::ZeroCapacity => f.write_str("mailbox capacity must be at least 1"),
            Self::Spawn(e) => write!(f, "could not spawn a shard thread: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// The mailbox's sending side is gone: the actor is unregistered (or the router
/// shut down) and every queued message has been received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mailbox disconnected: the actor is no longer registered")
    }
}

impl std::error::Error for Disconnected {}

/// Why [`Mailbox::try_recv`](crate::Mailbox::try_recv) or a timed receive returned
/// without a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is waiting (or none arrived before the deadline).
    Empty,
    /// The mailbox is disconnected and drained.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no message waiting"),
            Self::Disconnected => fmt::Display::fmt(&Disconnected, f),
        }
    }
}

impl std::error::Error for TryRecvError {}
