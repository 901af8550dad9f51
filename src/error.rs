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
}

impl From<SendErrorKind> for RequestError {
    fn from(kind: SendErrorKind) -> Self {
        match kind {
            SendErrorKind::MailboxFull => Self::MailboxFull,
            SendErrorKind::MailboxClosed => Self::MailboxClosed,
            SendErrorKind::Shutdown => Self::Shutdown,
            SendErrorKind::ActorNotFound
            | SendErrorKind::ChannelNotFound
            | SendErrorKind::ChannelNotOpen
            | SendErrorKind::NotParticipant => Self::ActorNotFound,
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
        })
    }
}

impl std::error::Error for RequestError {}

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
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyRegistered(id) => write!(f, "actor {id} is already registered"),
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
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
        }
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
