//! [`Router`]: the public face — registration, sends, requests, shutdown. The
//! routing core it stands on is in `routing.rs`, the builder in `builder.rs`, the
//! channel API in `channel_api.rs`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::channels::ChannelTable;
use crate::delivery::route::{route, OnFull};
use crate::error::{RegisterError, RequestError, RequestFailed, UnregisterError};
use crate::ids::{ActorId, ExternalId, Participant};
use crate::inbox::{Cmd, DeadLetterSink, Latch, ShardHandle};
use crate::mailbox::{Mailbox, MailboxSender};
use crate::message::{Queued, ReplyHandle, ResponseFuture};
use crate::metrics::{ChannelMetrics, DeadLetterReason, RouterMetrics};
use crate::routing::{Inner, Owner};
use crate::slot::ReplySlot;
use crate::sync::{thread, time, Arc, AtomicBool, Mutex, Ordering};
use crate::table::Entry;
use crate::timers::Pending;

/// A sharded message router.
///
/// Cheap to clone; all clones share one router. The router stops when
/// [`shutdown`](Self::shutdown) is called or the last clone is dropped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sharded_router::{ActorId, ActorMessage, Router};
///
/// let router = Router::builder().shards(2).build().unwrap();
/// let (tx, mailbox) = router.mailbox();
/// let id = ActorId::new();
/// router.register(id, tx).unwrap();
///
/// // An actor on its own thread: answers requests, counts one-way messages.
/// let actor = std::thread::spawn(move || {
///     let mut seen = 0;
///     while let Ok(msg) = mailbox.recv() {
///         match msg {
///             ActorMessage::Send { .. } => seen += 1,
///             ActorMessage::Request { data, reply } => {
///                 let _ = reply.reply(data.iter().rev().copied().collect());
///             }
///             _ => {}
///         }
///     }
///     seen
/// });
///
/// router.try_send(id, b"hello".to_vec()).unwrap();
/// let answer = router.request(id, b"abc".to_vec(), Duration::from_secs(5)).unwrap();
/// assert_eq!(answer, b"cba");
///
/// router.unregister(id).unwrap();
/// assert_eq!(actor.join().unwrap(), 1);
/// ```
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<Inner>,
    owner: Arc<Owner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("shards", &self.inner.shards.len())
            .field("closed", &self.inner.is_closed())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Puts a router together from its started shards (see [`RouterBuilder::build`]).
    pub(crate) fn assemble(
        shards: Vec<ShardHandle>,
        threads: Vec<thread::JoinHandle>,
        (mailbox_capacity, make_mailbox): (usize, crate::mailbox::MakeMailbox),
        overflow_bound: usize,
        dead_letters: Option<DeadLetterSink>,
    ) -> Self {
        let inner = Arc::new(Inner {
            shards: shards.into_boxed_slice(),
            hasher: crate::sync::IdHashState::new(),
            closed: AtomicBool::new(false),
            channels: Arc::new(ChannelTable::new()),
            mailbox_capacity,
            make_mailbox,
            overflow_bound,
            dead_letters,
            drained: Mutex::new(Vec::new()),
            cluster: std::sync::OnceLock::new(),
        });
        let owner = Owner {
            inner: Arc::clone(&inner),
            thread_ids: threads.iter().filter_map(thread::id_of).collect(),
            threads: Mutex::new(threads),
        };
        Self { inner, owner: Arc::new(owner) }
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// A mailbox with the router's configured capacity (and kind: see
    /// [`RouterBuilder::tokio_mailboxes`](crate::RouterBuilder::tokio_mailboxes)).
    #[must_use]
    pub fn mailbox(&self) -> (MailboxSender, Mailbox) {
        (self.inner.make_mailbox)(self.inner.mailbox_capacity)
    }

    /// Registers an actor. Once this returns, messages to `id` reach `mailbox`.
    ///
    /// Never waits for a shard thread: the table write is the whole registration.
    ///
    /// # Errors
    /// [`RegisterError::AlreadyRegistered`] if `id` is taken;
    /// [`RegisterError::MailboxClosed`] if every [`Mailbox`] of the pair was
    /// already dropped; [`RegisterError::ShardFailed`] if `id`'s shard failed;
    /// [`RegisterError::Shutdown`] after shutdown. A registration racing
    /// [`shutdown`](Self::shutdown) may succeed; its mailbox then disconnects
    /// like every other.
    pub fn register(&self, id: ActorId, mailbox: MailboxSender) -> Result<(), RegisterError> {
        Inner::add(&self.inner, Participant::Actor(id), mailbox)
    }

    /// [`register`](Self::register) for async callers; it completes without waiting.
    ///
    /// # Errors
    /// As for [`register`](Self::register).
    ///
    /// # Cancel safety
    /// The registration happens on the first poll, which completes it.
    pub async fn register_async(&self, id: ActorId, mailbox: MailboxSender) -> Result<(), RegisterError> {
        self.register(id, mailbox)
    }

    /// Unregisters an actor. Once this returns no message reaches its mailbox
    /// and no answer to its requests is accepted ([`ReplyHandle::reply`] hands the
    /// payload back); messages parked for it become dead letters and its
    /// unresolved requests resolve with `ActorNotFound`. Its channels are closed,
    /// each peer receiving `ChannelClose`, and channel opens it takes part in
    /// resolve. Its mailbox disconnects once drained.
    ///
    /// Dropping the last clone of the actor's [`Mailbox`] does the same.
    ///
    /// # Errors
    /// [`UnregisterError::ActorNotFound`] if `id` is not registered;
    /// [`UnregisterError::Shutdown`] after shutdown.
    pub fn unregister(&self, id: ActorId) -> Result<(), UnregisterError> {
        if self.inner.is_closed() {
            return Err(UnregisterError::Shutdown);
        }
        // The route to another node's actor is the cluster's, not the caller's.
        if self.inner.cluster.get().is_some_and(|c| c.is_remote(id)) {
            return Err(UnregisterError::ActorNotFound(id));
        }
        self.inner
            .remove(Participant::Actor(id), |_| true, DeadLetterReason::Unregistered)
            .map_err(|()| UnregisterError::ActorNotFound(id))
    }

    /// [`unregister`](Self::unregister) for async callers; it completes without waiting.
    ///
    /// # Errors
    /// As for [`unregister`](Self::unregister).
    ///
    /// # Cancel safety
    /// The unregistration happens on the first poll, which completes it.
    pub async fn unregister_async(&self, id: ActorId) -> Result<(), UnregisterError> {
        self.unregister(id)
    }

    /// `true` if an actor is registered under `id`.
    #[must_use]
    pub fn is_registered(&self, id: ActorId) -> bool {
        let who = Participant::Actor(id);
        self.inner.shard(&who).shared.table.contains(&who)
    }

    /// The ids of all registered actors (a snapshot).
    #[must_use]
    pub fn actor_ids(&self) -> Vec<ActorId> {
        self.inner
            .shards
            .iter()
            .flat_map(|s| s.shared.table.keys_where(|_| true))
            .filter_map(|who| match who {
                Participant::Actor(id) => Some(id),
                Participant::External(_) => None,
            })
            .collect()
    }

    /// Posts a request and files its deadline (`None`: none) with the target's
    /// shard. A request that does not reach the actor hands its payload back.
    fn start_request(
        &self,
        id: ActorId,
        data: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Arc<ReplySlot<Vec<u8>>>, RequestFailed> {
        let inner = &*self.inner;
        let id = Participant::Actor(id);
        let shard = inner.shard(&id);
        // `closed` is read under the table lock, as in `deliver`.
        shard
            .shared
            .table
            .with(&id, data, |entry, data| self.request_to(shard, id, entry, data, deadline))
            .unwrap_or_else(|data| {
                let error =
                    if inner.is_closed() { RequestError::Shutdown } else { RequestError::ActorNotFound };
                Err(RequestFailed::new(error, Some(data)))
            })
    }

    /// [`start_request`](Self::start_request) to `to`'s `entry`, found in
    /// `shard`'s table or through a handle's gate, whose lock is held.
    pub(crate) fn request_to(
        &self,
        shard: &ShardHandle,
        to: Participant,
        entry: &Entry,
        data: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Arc<ReplySlot<Vec<u8>>>, RequestFailed> {
        if self.inner.is_closed() {
            return Err(RequestFailed::new(RequestError::Shutdown, Some(data)));
        }
        let slot = ReplySlot::new(Some(Arc::clone(&entry.state)));
        if let Err(error) = shard.file(Pending::Request(Arc::clone(&slot)), deadline) {
            let _ = slot.complete(Err(error.into()));
            return Err(RequestFailed::new(error, Some(data)));
        }
        let msg = Queued::Request(data, ReplyHandle::new(Arc::clone(&slot)));
        match route(to, entry, msg, shard, self.inner.overflow_bound, OnFull::Park) {
            Ok(()) => Ok(slot),
            Err(e) => {
                // Resolve before the returned reply handle is dropped.
                let error = RequestError::from(e.kind());
                let _ = slot.complete(Err(error.into()));
                let payload = match e.into_inner() {
                    Queued::Request(data, _) => Some(data),
                    _ => None,
                };
                Err(RequestFailed::new(error, payload))
            }
        }
    }

    /// Sends a request and blocks until exactly one outcome: the reply, or a
    /// [`RequestFailed`] (with the payload, if the request never reached the
    /// actor). `Duration::MAX` waits without a deadline.
    ///
    /// # Errors
    /// `Timeout` after `timeout`; `NoReply` if the actor dropped the reply handle;
    /// `ActorNotFound` if it is not registered or unregisters before replying
    /// (the shard resolves it right after the unregistration);
    /// `MailboxFull`, `ShardFull`, `MailboxClosed`; `ShardFailed`; `Shutdown`.
    pub fn request(&self, id: ActorId, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, RequestFailed> {
        #[cfg(feature = "metrics")]
        let probe = self.request_probe(id);
        let deadline = time::deadline_in(timeout);
        let outcome = self.start_request(id, data, deadline).and_then(|slot| slot.wait_or_expire(deadline));
        #[cfg(feature = "metrics")]
        probe.finish(outcome.as_ref().err().map(RequestFailed::error));
        outcome
    }

    /// Starts timing a request to `id`, counted on its shard (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) fn request_probe(&self, id: ActorId) -> crate::latency::Probe {
        let shard = self.inner.shard(&Participant::Actor(id));
        crate::latency::Probe::start(&shard.shared.counters.requests)
    }

    /// Sends a request; the future resolves with exactly one outcome, as for
    /// [`request`](Self::request). The target's shard keeps the deadline, so any
    /// executor (or none) can drive it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sharded_router::{ActorId, RequestError, Router};
    /// let router = Router::builder().shards(1).build().unwrap();
    /// let (tx, _mailbox) = router.mailbox();
    /// let id = ActorId::new();
    /// router.register(id, tx).unwrap();
    /// // Nobody answers: the shard resolves the request at its deadline.
    /// let outcome = futures_executor::block_on(router.request_async(id, vec![], Duration::from_millis(20)));
    /// assert_eq!(outcome.unwrap_err(), RequestError::Timeout);
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future before it completes abandons the request: the actor's
    /// [`ReplyHandle::is_resolved`] turns `true` and a later reply is refused.
    pub fn request_async(&self, id: ActorId, data: Vec<u8>, timeout: Duration) -> ResponseFuture {
        #[cfg(feature = "metrics")]
        let probe = Some(self.request_probe(id));
        ResponseFuture {
            inner: self.start_request(id, data, time::deadline_in(timeout)).map_err(Some),
            #[cfg(feature = "metrics")]
            probe,
        }
    }

    /// Attaches an external client's endpoint (a mailbox like an actor's) and
    /// returns the client's new identity. Channel messages and closes addressed to
    /// it arrive in `mailbox`.
    ///
    /// # Errors
    /// [`RegisterError::Shutdown`] after shutdown; `MailboxClosed` and
    /// `ShardFailed` as for [`register`](Self::register).
    pub fn attach_external(&self, mailbox: MailboxSender) -> Result<ExternalId, RegisterError> {
        let id = ExternalId::new();
        Inner::add(&self.inner, Participant::External(id), mailbox)?;
        Ok(id)
    }

    /// Detaches an external endpoint, closing its channels as
    /// [`unregister`](Self::unregister) does for an actor.
    ///
    /// # Errors
    /// [`UnregisterError::ExternalNotFound`] if `id` is not attached;
    /// [`UnregisterError::Shutdown`] after shutdown.
    pub fn detach_external(&self, id: ExternalId) -> Result<(), UnregisterError> {
        if self.inner.is_closed() {
            return Err(UnregisterError::Shutdown);
        }
        self.inner
            .remove(Participant::External(id), |_| true, DeadLetterReason::Unregistered)
            .map_err(|()| UnregisterError::ExternalNotFound(id))
    }

    /// Waits until every shard has handled everything posted to it before this
    /// call (parked deliveries attempted, clean-ups done). Returns at once after
    /// shutdown.
    pub fn flush(&self) {
        let latch = Latch::new();
        for shard in self.inner.shards.iter() {
            // A failed post drops its token at once.
            let _ = shard.cmd.send(Cmd::Flush(latch.token()));
        }
        latch.wait();
    }

    /// Posts a `Wake` to every shard, so that each sweeps its request deadlines
    /// against the clock. Returns without waiting.
    #[cfg(loom)]
    pub(crate) fn wake_shards(&self) {
        for shard in self.inner.shards.iter() {
            let _ = shard.cmd.send(Cmd::Wake);
        }
    }

    /// A snapshot of every shard's counters.
    #[must_use]
    pub fn metrics(&self) -> RouterMetrics {
        let channels = &self.inner.channels;
        RouterMetrics {
            channels: ChannelMetrics {
                channels: channels.map.len(),
                opened: channels.counters.opened.load(Ordering::Relaxed),
                messages: channels.counters.messages.sum(),
                rejected: channels.counters.rejected.load(Ordering::Relaxed),
            },
            shards: self
                .inner
                .shards
                .iter()
                .map(|s| {
                    s.shared.counters.snapshot(s.shared.index, s.shared.table.len(), s.shared.is_failed())
                })
                .collect(),
        }
    }

    /// Stops the router: later calls return `Shutdown`, unresolved requests resolve
    /// with `Shutdown`, parked messages become dead letters, mailboxes disconnect,
    /// and every shard thread is joined before this returns. Idempotent, and safe
    /// to call from many threads at once: every call returns only once all of that
    /// is done.
    ///
    /// Called from a dead-letter sink (on one of the router's own shard threads,
    /// which cannot wait for itself), it starts the shutdown and returns at once.
    pub fn shutdown(&self) {
        self.owner.shutdown();
    }

    /// `true` once [`shutdown`](Self::shutdown) has been called.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.inner.is_closed()
    }

    /// `true` if a shard has failed.
    ///
    /// A shard fails only through a panic in the router's own code (user
    /// callbacks are fenced: see [`RouterBuilder::on_dead_letter`](crate::RouterBuilder::on_dead_letter)). A failed
    /// shard is not restarted, since its state can no longer be trusted; it is
    /// fenced instead. Its unresolved requests and opens resolve with
    /// `ShardFailed`, its parked messages become dead letters, and from then on
    /// everything that needs it — a send that would park, a request, a channel
    /// open or a registration for an id hashed to it — is refused with
    /// `ShardFailed`, while sends into a mailbox with room still go through. The
    /// other shards carry on. The event is logged at `error`, and
    /// [`failed_shards`](Self::failed_shards) and
    /// [`ShardMetrics::failed`](crate::ShardMetrics::failed) name the shard. A
    /// runtime that wants all or nothing shuts the router down and builds a new one.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.inner.shards.iter().any(|s| s.shared.is_failed())
    }

    /// The indices of the shards that have failed (see
    /// [`is_degraded`](Self::is_degraded)).
    #[must_use]
    pub fn failed_shards(&self) -> Vec<usize> {
        self.inner.shards.iter().filter(|s| s.shared.is_failed()).map(|s| s.shared.index).collect()
    }
}

#[cfg(test)]
impl Router {
    /// Makes shard `index` panic in its own code, as a bug in it would.
    pub(crate) fn crash_shard(&self, index: usize) {
        let _ = self.inner.shards[index].cmd.send(Cmd::Crash);
    }
}
