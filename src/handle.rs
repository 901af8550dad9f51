//! [`ActorHandle`]: a registration resolved once, sent to without the table.
//!
//! A handle keeps the registration's gate (see `table`), through which its
//! sends reach the actor's entry directly: no hashing, no table lookup, no
//! table lock. The gate obeys the table's rules — every put happens under its
//! read lock, and unregistration, suspend, resume, replace and shutdown take
//! its write lock (or close it) before they return — so every guarantee of a
//! send through the table holds for a send through a handle.

use std::fmt;
use std::time::Duration;

use crate::delivery::route::{route, OnFull};
use crate::error::{RequestError, RequestFailed, SendError, SendErrorKind};
use crate::ids::{ActorId, Participant};
use crate::message::{Queued, ResponseFuture};
use crate::router::Router;
use crate::send_api::SendFuture;
use crate::sync::{time, Arc};
use crate::table::Gate;

/// Why [`Router::handle`] gave no handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleError {
    /// No actor is registered under this id.
    ActorNotFound(ActorId),
    /// The router has shut down.
    Shutdown,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActorNotFound(id) => write!(f, "actor {id} is not registered"),
            Self::Shutdown => f.write_str("no handle: the router has shut down"),
        }
    }
}

impl std::error::Error for HandleError {}

/// A resolved reference to one registration of an actor, like an actor
/// framework's `ActorRef` or `Addr`: its sends skip the table lookup.
///
/// It refers to the registration it was taken from, not to the id: once that
/// registration ends ([`Router::unregister`] returned, the mailbox was dropped,
/// or the router shut down), every send through it fails with `ActorNotFound`
/// (`Shutdown` after shutdown) and hands the payload back — also when the same
/// id is registered again (take a new handle for the new registration). A
/// hot swap ([`Router::replace_mailbox`]) continues the registration, and the
/// handle follows it to the new mailbox (one more lock per swap it follows;
/// a handle taken after the swap goes straight to the new one).
///
/// Everything else is as for the router's sends: a full mailbox parks the
/// message at the shard up to the overflow bound, and messages from one
/// thread, through handles and through the router alike, arrive in the order
/// sent. A handle keeps the router running (as a [`Router`] clone does) until
/// it is dropped or [`Router::shutdown`] is called. Cloning it is cheap.
///
/// ```
/// use sharded_router::{ActorId, ActorMessage, Router, SendErrorKind};
/// let router = Router::builder().shards(1).build().unwrap();
/// let (tx, mailbox) = router.mailbox();
/// let id = ActorId::new();
/// router.register(id, tx).unwrap();
/// let handle = router.handle(id).unwrap();
/// handle.try_send(b"fast".to_vec()).unwrap();
/// assert!(matches!(mailbox.recv(), Ok(ActorMessage::Send { .. })));
/// router.unregister(id).unwrap();
/// assert_eq!(handle.try_send(b"late".to_vec()).unwrap_err().kind(), SendErrorKind::ActorNotFound);
/// ```
#[derive(Clone)]
pub struct ActorHandle {
    router: Router,
    id: ActorId,
    /// The index of the actor's shard.
    shard: usize,
    gate: Arc<Gate>,
}

impl Router {
    /// A handle to the actor registered under `id` now (see [`ActorHandle`]).
    ///
    /// # Errors
    /// [`HandleError::ActorNotFound`] if no actor is registered under `id`;
    /// [`HandleError::Shutdown`] after shutdown.
    pub fn handle(&self, id: ActorId) -> Result<ActorHandle, HandleError> {
        let who = Participant::Actor(id);
        let inner = &self.inner;
        let shard = inner.shard(&who);
        let not_found =
            || if inner.is_closed() { HandleError::Shutdown } else { HandleError::ActorNotFound(id) };
        // Made under the table's read lock: a removal (write lock, then the
        // gate closed) either comes after and closes it, or came before and
        // the lookup fails.
        let gate = shard.shared.table.with(&who, (), |entry, ()| entry.gate()).map_err(|()| not_found())?;
        let gate = gate.ok_or_else(not_found)?;
        Ok(ActorHandle { router: self.clone(), id, shard: shard.shared.index, gate })
    }
}

impl ActorHandle {
    /// The actor's id.
    #[must_use]
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// `true` while the registration the handle refers to lasts (a snapshot).
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.gate.with((), |_, ()| ()).is_ok()
    }

    /// Routes `msg` as [`Router::deliver`] does, through the gate.
    fn deliver(&self, msg: Queued) -> Result<(), SendError<Queued>> {
        let inner = &self.router.inner;
        let Some(shard) = inner.shards.get(self.shard) else {
            return Err(inner.gone(msg));
        };
        self.gate
            .with(msg, |entry, msg| {
                // Read under the gate's lock, as under the table's: shutdown
                // sets it before it closes the gates.
                if inner.is_closed() {
                    return Err(SendError::new(SendErrorKind::Shutdown, msg));
                }
                route(Participant::Actor(self.id), entry, msg, shard, inner.overflow_bound, OnFull::Park)
            })
            .unwrap_or_else(|msg| Err(inner.gone(msg)))
    }

    /// [`Router::try_send`] through the handle. Never waits.
    ///
    /// # Errors
    /// `ActorNotFound` once the registration ended; otherwise as for
    /// [`Router::try_send`], with the payload handed back.
    pub fn try_send(&self, data: Vec<u8>) -> Result<(), SendError> {
        self.deliver(Queued::Send(data)).map_err(|e| e.map(Queued::into_payload))
    }

    /// [`Router::tell`] through the handle: what cannot be routed becomes a
    /// counted dead letter. Never waits.
    pub fn tell(&self, data: Vec<u8>) {
        if let Err(e) = self.try_send(data) {
            self.router.told_undeliverable(self.id, e);
        }
    }

    /// [`Router::send_async`] through the handle: waits for room when there is
    /// none.
    ///
    /// # Errors
    /// `ActorNotFound` once the registration ended; otherwise as for
    /// [`Router::send_async`], with the payload handed back.
    ///
    /// # Cancel safety
    /// As for [`Router::send_async`]: dropped, it sends nothing.
    pub fn send_async(&self, data: Vec<u8>) -> SendFuture<'_> {
        SendFuture::through(&self.router, self.id, Arc::clone(&self.gate), data)
    }

    /// [`Router::request`] through the handle: blocks until exactly one outcome.
    ///
    /// # Errors
    /// As for [`Router::request`]; `ActorNotFound` once the registration ended.
    pub fn request(&self, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, RequestFailed> {
        #[cfg(feature = "metrics")]
        let probe = self.router.request_probe(self.id);
        let deadline = time::deadline_in(timeout);
        let outcome = self.start_request(data, deadline).and_then(|slot| slot.wait_or_expire(deadline));
        #[cfg(feature = "metrics")]
        probe.finish(outcome.as_ref().err().map(RequestFailed::error));
        outcome
    }

    /// [`Router::request_async`] through the handle.
    ///
    /// # Cancel safety
    /// As for [`Router::request_async`]: dropping the future abandons the
    /// request.
    pub fn request_async(&self, data: Vec<u8>, timeout: Duration) -> ResponseFuture {
        #[cfg(feature = "metrics")]
        let probe = Some(self.router.request_probe(self.id));
        ResponseFuture {
            inner: self.start_request(data, time::deadline_in(timeout)).map_err(Some),
            #[cfg(feature = "metrics")]
            probe,
        }
    }

    fn start_request(
        &self,
        data: Vec<u8>,
        deadline: Option<std::time::Instant>,
    ) -> Result<Arc<crate::slot::ReplySlot<Vec<u8>>>, RequestFailed> {
        let inner = &self.router.inner;
        let gone = |data| {
            let error = if inner.is_closed() { RequestError::Shutdown } else { RequestError::ActorNotFound };
            Err(RequestFailed::new(error, Some(data)))
        };
        let Some(shard) = inner.shards.get(self.shard) else { return gone(data) };
        self.gate
            .with(data, |entry, data| {
                self.router.request_to(shard, Participant::Actor(self.id), entry, data, deadline)
            })
            .unwrap_or_else(gone)
    }
}

impl fmt::Debug for ActorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHandle").field("id", &self.id).finish_non_exhaustive()
    }
}
