//! [`Router`]'s hot-reload calls: swap the instance behind a running actor at a
//! message boundary without losing, duplicating or reordering a message.
//!
//! A runtime replaces an actor's code as Erlang does — suspend, change, resume:
//!
//! 1. [`suspend`](Router::suspend): messages to the actor are accepted and held
//!    at its shard (in order, within the overflow bound) instead of delivered;
//! 2. the old instance finishes the message it is on and stops taking more; its
//!    state goes to the new instance;
//! 3. [`replace_mailbox`](Router::replace_mailbox) with the new instance's
//!    mailbox: what the old mailbox still holds moves to the new one, ahead of
//!    what was held, ahead of anything sent later;
//! 4. [`resume`](Router::resume): the held messages are delivered, in order.
//!
//! If the new instance cannot be started, `resume` without a replace lets the old
//! one carry on: nothing moved, nothing lost. The calls do not wait for the
//! shard; what they promise holds from their return on.

use crate::error::ReloadError;
use crate::ids::{ActorId, Participant};
use crate::mailbox::MailboxSender;
use crate::router::Router;
use crate::routing::{Halt, Inner};

impl Router {
    /// Suspends an actor: from now on messages to it are accepted and held at
    /// its shard, in order, instead of delivered. Sends still return at once;
    /// the held messages count against the overflow bound (`MailboxFull` past
    /// it; waiting sends wait). What its mailbox already holds stays there, and
    /// a message accepted before the call may still be delivered.
    ///
    /// Suspending a suspended actor does nothing. Unregistering a suspended actor
    /// dead-letters what was held, as for any parked message.
    ///
    /// # Errors
    /// [`ReloadError::ActorNotFound`], [`ReloadError::ShardFailed`] (a failed
    /// shard cannot hold messages), [`ReloadError::Shutdown`].
    pub fn suspend(&self, id: ActorId) -> Result<(), ReloadError> {
        self.inner.suspend(Participant::Actor(id)).map(|_| ()).map_err(|h| reload_error(h, id))
    }

    /// Ends a suspension: the shard delivers what it held, in order, and then
    /// the actor's messages flow as before. Resuming an actor that is not
    /// suspended does nothing.
    ///
    /// # Errors
    /// [`ReloadError::ActorNotFound`], [`ReloadError::Shutdown`].
    pub fn resume(&self, id: ActorId) -> Result<(), ReloadError> {
        self.inner.resume(Participant::Actor(id)).map(|_| ()).map_err(|h| reload_error(h, id))
    }

    /// `true` if the actor is registered and suspended.
    #[must_use]
    pub fn is_suspended(&self, id: ActorId) -> bool {
        self.inner.state_of(Participant::Actor(id)).is_some_and(|state| state.flow.is_suspended())
    }

    /// Makes `mailbox` the actor's mailbox, atomically: the registration goes on
    /// — same id, channels, pending requests (a [`ReplyHandle`](crate::ReplyHandle)
    /// inside a moved message still answers its requester), suspension. The
    /// messages still waiting in the old mailbox, then those parked at the
    /// shard, move to the new mailbox ahead of anything sent from now on, in
    /// their order; the old [`Mailbox`](crate::Mailbox) reports `Disconnected`
    /// once empty, and dropping it unregisters nothing.
    ///
    /// Moved messages wait at the shard until the new mailbox has room, and
    /// count against the overflow bound meanwhile, as parked messages do.
    ///
    /// The old instance should have stopped taking messages (suspend first):
    /// what it still takes meanwhile is delivered to it, and only the rest
    /// moves.
    ///
    /// # Errors
    /// [`ReloadError::ActorNotFound`], [`ReloadError::MailboxClosed`] (the new
    /// mailbox's receiver is gone), [`ReloadError::ShardFailed`],
    /// [`ReloadError::Shutdown`]; the actor keeps its old mailbox.
    pub fn replace_mailbox(&self, id: ActorId, mailbox: MailboxSender) -> Result<(), ReloadError> {
        Inner::replace(&self.inner, Participant::Actor(id), mailbox).map_err(|h| reload_error(h, id))
    }
}

fn reload_error(halt: Halt, id: ActorId) -> ReloadError {
    match halt {
        Halt::NotFound => ReloadError::ActorNotFound(id),
        Halt::MailboxClosed => ReloadError::MailboxClosed,
        Halt::ShardFailed => ReloadError::ShardFailed,
        Halt::Shutdown => ReloadError::Shutdown,
    }
}
