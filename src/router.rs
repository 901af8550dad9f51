//! [`Router`]: the public face.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::channels::{ChannelTable, Leaving, OpenSlot};
use crate::error::{
    BuildError, ChannelError, OpenFailed, RegisterError, RequestError, RequestFailed, SendError,
    SendErrorKind, UnregisterError,
};
use crate::ids::{ActorId, ChannelId, ExternalId, Participant};
use crate::mailbox::{mailbox, Mailbox, MailboxSender, MailboxState};
use crate::message::{ActorMessage, ChannelOpenReply, OpenDecision, ReplyHandle, ReplySlot, ResponseFuture};
use crate::metrics::{ChannelMetrics, DeadLetter, DeadLetterReason, RouterMetrics};
use crate::shard::{Cmd, DeadLetterSink, Latch, Pending, Shard, ShardConfig, ShardHandle};
use crate::sync::{self, random_state, thread, time, Arc, AtomicBool, Mutex, Ordering};
use crate::table::Entry;

/// What happens to a message whose target's mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse it at once with `MailboxFull`.
    Reject,
    /// Park up to `max_per_actor` messages per actor at its shard, delivered in
    /// order as room appears; refuse past that with `MailboxFull`.
    Park {
        /// The most messages in flight through the shard for one actor.
        max_per_actor: usize,
    },
}

impl OverflowPolicy {
    fn bound(self) -> usize {
        match self {
            Self::Reject => 0,
            Self::Park { max_per_actor } => max_per_actor,
        }
    }
}

impl Default for OverflowPolicy {
    fn default() -> Self {
        Self::Park { max_per_actor: 4096 }
    }
}

/// Configures and starts a [`Router`].
///
/// ```
/// use sharded_router::{OverflowPolicy, Router};
/// let router = Router::builder()
///     .shards(2)
///     .mailbox_capacity(256)
///     .overflow(OverflowPolicy::Park { max_per_actor: 1024 })
///     .build()
///     .unwrap();
/// assert_eq!(router.shard_count(), 2);
/// ```
#[must_use]
pub struct RouterBuilder {
    shards: usize,
    mailbox_capacity: usize,
    overflow: OverflowPolicy,
    max_parked_per_shard: usize,
    resolution: Duration,
    dead_letters: Option<DeadLetterSink>,
    thread_name: String,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map_or(1, usize::from),
            mailbox_capacity: 1024,
            overflow: OverflowPolicy::default(),
            max_parked_per_shard: 1 << 20,
            resolution: Duration::from_millis(5),
            dead_letters: None,
            thread_name: "sharded-router".to_owned(),
        }
    }
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("shards", &self.shards)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("overflow", &self.overflow)
            .field("max_parked_per_shard", &self.max_parked_per_shard)
            .field("timer_resolution", &self.resolution)
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    /// Number of shards, each on its own thread. Default: available parallelism.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// Capacity of mailboxes made by [`Router::mailbox`]. Default: 1024.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n;
        self
    }

    /// What to do when a mailbox is full. Default: park up to 4096 per actor.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The most messages one shard holds for all its actors together: queued to
    /// it or parked in its overflow queues. Past it, sends that would park get
    /// [`SendErrorKind::ShardFull`], however far each actor is from its own
    /// bound. Channel close notices are never refused (a peer must learn that a
    /// channel closed), so they may pass the cap by at most one per channel.
    /// Default: 1 048 576.
    pub fn max_parked_per_shard(mut self, n: usize) -> Self {
        self.max_parked_per_shard = n;
        self
    }

    /// How often a shard with unresolved requests wakes to collect newly filed
    /// deadlines. Deadlines it already knows are kept exactly; this only bounds
    /// how late an async request's timeout can fire. Default: 5 ms; at least
    /// 100 µs; `Duration::MAX` means the shard wakes only for the deadlines it
    /// knows and when a requester's deadline is earlier than its next wake.
    pub fn timer_resolution(mut self, period: Duration) -> Self {
        self.resolution = period.max(Duration::from_micros(100));
        self
    }

    /// Calls `sink` with every dead letter. It runs on a shard thread or the
    /// sending thread and must not block. A panic in it is caught, logged and
    /// counted in [`ShardMetrics::callback_panics`](crate::ShardMetrics::callback_panics);
    /// the router carries on.
    pub fn on_dead_letter(mut self, sink: impl Fn(DeadLetter) + Send + Sync + 'static) -> Self {
        let sink: std::sync::Arc<dyn Fn(DeadLetter) + Send + Sync> = std::sync::Arc::new(sink);
        self.dead_letters = Some(sync::arc_from_std(sink));
        self
    }

    /// Prefix of shard thread names (`{prefix}-{index}`). Default: `sharded-router`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Starts the shard threads.
    ///
    /// # Errors
    /// [`BuildError`] for zero shards or capacity, or if a thread cannot be spawned.
    pub fn build(self) -> Result<Router, BuildError> {
        if self.shards == 0 {
            return Err(BuildError::ZeroShards);
        }
        if self.mailbox_capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        let mut shards = Vec::with_capacity(self.shards);
        let mut threads = Vec::with_capacity(self.shards);
        for index in 0..self.shards {
            let (handle, rx) = ShardHandle::new(index, self.max_parked_per_shard);
            let config = ShardConfig { resolution: self.resolution, dead_letters: self.dead_letters.clone() };
            let shard = Shard::new(&handle, rx, config);
            shards.push(handle);
            match thread::spawn(format!("{}-{index}", self.thread_name), move || shard.run()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop what was started before reporting.
                    for s in &shards {
                        let _ = s.cmd.send(Cmd::Shutdown);
                    }
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        tracing::debug!(shards = self.shards, "router started");
        let inner = Arc::new(Inner {
            shards: shards.into_boxed_slice(),
            hasher: random_state(),
            closed: AtomicBool::new(false),
            channels: Arc::new(ChannelTable::new()),
            mailbox_capacity: self.mailbox_capacity,
            overflow_bound: self.overflow.bound(),
            dead_letters: self.dead_letters,
            drained: Mutex::new(Vec::new()),
        });
        let owner = Owner {
            inner: Arc::clone(&inner),
            thread_ids: threads.iter().filter_map(thread::id_of).collect(),
            threads: Mutex::new(threads),
        };
        Ok(Router { inner, owner: Arc::new(owner) })
    }
}

/// The routing core: what callers, mailboxes and the shutdown path share.
pub(crate) struct Inner {
    shards: Box<[ShardHandle]>,
    channels: Arc<ChannelTable>,
    hasher: ahash::RandomState,
    closed: AtomicBool,
    mailbox_capacity: usize,
    overflow_bound: usize,
    dead_letters: Option<DeadLetterSink>,
    /// Entries taken out of the tables at shutdown. Their mailbox senders are
    /// dropped only after the shards have stopped (see [`Owner::shutdown`]).
    drained: Mutex<Vec<Arc<Entry>>>,
}

impl Inner {
    pub(crate) fn shard(&self, id: &Participant) -> &ShardHandle {
        let n = self.shards.len();
        // `n` is at least 1 (checked at build); the modulo keeps the index in range.
        let index = (self.hasher.hash_one(id) % n as u64) as usize;
        &self.shards[index]
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Routes `msg` to a participant, parking up to `bound` messages at its shard.
    fn route(&self, to: Participant, msg: ActorMessage, bound: usize) -> Result<(), SendError<ActorMessage>> {
        let shard = self.shard(&to);
        // `closed` is read under the table lock: shutdown sets it before emptying
        // the tables, so an entry that a racing `register` inserts after that (and
        // then removes again) never takes a message.
        shard
            .shared
            .table
            .with(&to, msg, |entry, msg| {
                if self.is_closed() {
                    return Err(SendError::new(SendErrorKind::Shutdown, msg));
                }
                Entry::route(entry, msg, shard, bound)
            })
            .unwrap_or_else(|msg| {
                let kind =
                    if self.is_closed() { SendErrorKind::Shutdown } else { SendErrorKind::ActorNotFound };
                Err(SendError::new(kind, msg))
            })
    }

    /// The registration state of a participant.
    fn state_of(&self, who: Participant) -> Option<Arc<MailboxState>> {
        self.shard(&who).shared.table.with(&who, (), |entry, ()| Arc::clone(&entry.state)).ok()
    }

    fn add(this: &Arc<Self>, who: Participant, mailbox: MailboxSender) -> Result<(), RegisterError> {
        if this.is_closed() {
            return Err(RegisterError::Shutdown);
        }
        let shard = this.shard(&who);
        if shard.shared.is_failed() {
            return Err(RegisterError::ShardFailed);
        }
        if mailbox.state.receivers() == 0 {
            return Err(RegisterError::MailboxClosed);
        }
        let state = Arc::clone(&mailbox.state);
        // Linked before the insert: once sends can reach the mailbox, its
        // receiver must be able to tell the shard that room appeared.
        state.link(who, Arc::clone(this));
        let entry = Arc::new(Entry { id: who, tx: mailbox.tx, state: mailbox.state });
        let key = entry.key();
        if shard.shared.table.insert_new(who, entry).is_err() {
            state.reset_link();
            return Err(match who {
                Participant::Actor(id) => RegisterError::AlreadyRegistered(id),
                Participant::External(id) => RegisterError::ExternalIdInUse(id),
            });
        }
        // Raced with shutdown. The insert took effect and sends may already have
        // put messages into the mailbox, so the registration succeeded; it ends
        // with the shutdown. Shutdown's table sweep may have run before the insert
        // (then nothing reached the entry: sends check `closed` under the table
        // lock), so take the entry out here if it is still ours; either way the
        // mailbox disconnects.
        if this.is_closed() {
            if let Some(entry) = shard.shared.table.remove_if(&who, |e| e.key() == key) {
                entry.state.unlink(RequestError::Shutdown);
            }
        }
        // The last receiver went away while registering, before the insert: its
        // drop found nothing to remove, so end the registration here.
        if state.receivers() == 0 {
            this.mailbox_dropped(who, &state);
        }
        tracing::trace!(participant = %who, shard = shard.shared.index, "registered");
        Ok(())
    }

    /// Removes a participant: from here on nothing reaches its mailbox and no
    /// answer to its requests is accepted. Its channels are closed (peers get
    /// `ChannelClose`), opens it takes part in resolve, and the shard is told
    /// about anything still in flight (what was parked becomes dead letters with
    /// `reason`). `Err` if `who` is not registered or `is_current` rejects the
    /// registration found.
    fn remove(
        &self,
        who: Participant,
        is_current: impl FnOnce(&Arc<Entry>) -> bool,
        reason: DeadLetterReason,
    ) -> Result<(), ()> {
        let shard = self.shard(&who);
        let entry = shard.shared.table.remove_if(&who, is_current).ok_or(())?;
        let state = &entry.state;
        state.unlink(RequestError::ActorNotFound);
        for channel in state.take_channels() {
            if let Leaving::NotifyPeer(peer) = self.channels.settle_for_leaver(channel, who) {
                let _ = self.route(peer, ActorMessage::ChannelClose { channel_id: channel }, usize::MAX);
            }
        }
        // Table readers are done with the entry (the removal took the write lock),
        // so these counts can only fall from here.
        if state.in_flight.load(Ordering::SeqCst) > 0 || state.outstanding.load(Ordering::SeqCst) > 0 {
            let _ = shard.cmd.send(Cmd::Unregistered(entry, reason));
        }
        tracing::trace!(participant = %who, shard = shard.shared.index, "unregistered");
        Ok(())
    }

    /// The last receiving half of `who`'s mailbox was dropped: the actor can take
    /// nothing more, so it is unregistered (if `state` is still its registration).
    pub(crate) fn mailbox_dropped(&self, who: Participant, state: &Arc<MailboxState>) {
        let current = |entry: &Arc<Entry>| Arc::ptr_eq(&entry.state, state);
        if self.remove(who, current, DeadLetterReason::MailboxClosed).is_ok() {
            tracing::warn!(participant = %who, "mailbox dropped while registered: unregistered");
        }
    }

    /// Starts the shutdown, once: later calls fail with `Shutdown`, the tables
    /// are emptied (nobody can post to a shard after its `Shutdown`: posts happen
    /// under a table read lock), opening channels resolve, and every shard is told
    /// to stop. Waits for nothing.
    fn begin_shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(shards = self.shards.len(), "router shutting down");
        for shard in self.shards.iter() {
            shard.shared.closing.store(true, Ordering::SeqCst);
        }
        let mut drained = Vec::new();
        for shard in self.shards.iter() {
            for entry in shard.shared.table.drain() {
                entry.state.unlink(RequestError::Shutdown);
                drained.push(entry);
            }
        }
        self.drained.lock().append(&mut drained);
        self.channels.clear();
        for shard in self.shards.iter() {
            let _ = shard.cmd.send(Cmd::Shutdown);
        }
    }
}

/// Owns the shard threads; the last [`Router`] clone dropping it shuts the router
/// down.
struct Owner {
    inner: Arc<Inner>,
    /// Held by a caller of [`shutdown`](Self::shutdown) until the threads are
    /// joined, so that concurrent callers all wait for the same end.
    threads: Mutex<Vec<thread::JoinHandle>>,
    thread_ids: Vec<std::thread::ThreadId>,
}

impl Owner {
    /// Stops every shard and joins its thread. Every call returns only after the
    /// shards have stopped (requests resolved, parked messages dead-lettered) and
    /// the mailboxes have been let go — except a call from one of the router's
    /// own shard threads (a dead-letter sink), which cannot wait for itself: it
    /// starts the shutdown and returns.
    fn shutdown(&self) {
        if self.thread_ids.contains(&thread::current_id()) {
            self.inner.begin_shutdown();
            return;
        }
        let mut threads = self.threads.lock();
        self.inner.begin_shutdown();
        for t in threads.drain(..) {
            let _ = t.join();
        }
        // The mailbox senders go last. A mailbox whose receiver is gone drops its
        // queued messages with its last sender, and their reply handles would
        // settle requests and opens as unanswered (`NoReply`, `Rejected`) before
        // the channel table and the shards resolve them with `Shutdown`.
        let drained = std::mem::take(&mut *self.inner.drained.lock());
        drop(drained);
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

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
/// router.send(id, b"hello".to_vec()).unwrap();
/// let answer = router.request(id, b"abc".to_vec(), Duration::from_secs(5)).unwrap();
/// assert_eq!(answer, b"cba");
///
/// router.unregister(id).unwrap();
/// assert_eq!(actor.join().unwrap(), 1);
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
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
    /// A builder with the defaults.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// A router with the default configuration.
    ///
    /// # Errors
    /// [`BuildError::Spawn`] if a shard thread cannot be spawned.
    pub fn new() -> Result<Self, BuildError> {
        Self::builder().build()
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// A mailbox with the router's configured capacity.
    #[must_use]
    pub fn mailbox(&self) -> (MailboxSender, Mailbox) {
        mailbox(self.inner.mailbox_capacity)
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

    /// Routes an [`ActorMessage`] to `id`. Never blocks.
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
        self.inner.route(Participant::Actor(id), msg, self.inner.overflow_bound)
    }

    /// Sends a one-way message and reports whether it was accepted. Never blocks.
    ///
    /// # Errors
    /// `ActorNotFound`, `MailboxFull` (past the overflow bound), `ShardFull`,
    /// `MailboxClosed`, `ShardFailed` or `Shutdown`, with the payload handed back.
    ///
    /// ```
    /// use sharded_router::{ActorId, Router, SendErrorKind};
    /// let router = Router::builder().shards(1).build().unwrap();
    /// let err = router.send(ActorId::new(), b"lost?".to_vec()).unwrap_err();
    /// assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
    /// assert_eq!(err.into_inner(), b"lost?");
    /// ```
    pub fn send(&self, id: ActorId, data: Vec<u8>) -> Result<(), SendError> {
        self.deliver(id, ActorMessage::Send { data }).map_err(|e| {
            e.map(|msg| match msg {
                ActorMessage::Send { data } => data,
                other => other.data().to_vec(),
            })
        })
    }

    /// Sends a one-way message, fire-and-forget: a message that cannot be routed
    /// becomes a counted dead letter (and goes to the sink, if one is set).
    pub fn tell(&self, id: ActorId, data: Vec<u8>) {
        if let Err(e) = self.send(id, data) {
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
        let bound = inner.overflow_bound;
        // `closed` is read under the table lock, as in `deliver`.
        shard
            .shared
            .table
            .with(&id, data, |entry, data| {
                if inner.is_closed() {
                    return Err(RequestFailed::new(RequestError::Shutdown, Some(data)));
                }
                let slot = ReplySlot::new(Some(Arc::clone(&entry.state)));
                if let Err(error) =
                    shard.shared.timers.file(Pending::Request(Arc::clone(&slot)), deadline, &shard.cmd)
                {
                    let _ = slot.complete(Err(error.into()));
                    return Err(RequestFailed::new(error, Some(data)));
                }
                let msg = ActorMessage::Request { data, reply: ReplyHandle::new(Arc::clone(&slot)) };
                match Entry::route(entry, msg, shard, bound) {
                    Ok(()) => Ok(slot),
                    Err(e) => {
                        // Resolve before the returned reply handle is dropped.
                        let error = RequestError::from(e.kind());
                        let _ = slot.complete(Err(error.into()));
                        let payload = match e.into_inner() {
                            ActorMessage::Request { data, .. } => Some(data),
                            _ => None,
                        };
                        Err(RequestFailed::new(error, payload))
                    }
                }
            })
            .unwrap_or_else(|data| {
                let error =
                    if inner.is_closed() { RequestError::Shutdown } else { RequestError::ActorNotFound };
                Err(RequestFailed::new(error, Some(data)))
            })
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
        let deadline = time::deadline_in(timeout);
        self.start_request(id, data, deadline)?.wait_or_expire(deadline)
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
        ResponseFuture { inner: self.start_request(id, data, time::deadline_in(timeout)).map_err(Some) }
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
        if let Err(error) = shard.shared.timers.file(Pending::Open(Arc::clone(&open)), deadline, &shard.cmd) {
            OpenSlot::decide(&open, Err(error.into()));
            return refuse(ChannelError::from_open(error, target), initial_msg);
        }
        let msg = ActorMessage::ChannelOpen {
            channel_id,
            initiator,
            initial_msg,
            reply: ChannelOpenReply::new(Arc::clone(&open)),
        };
        if let Err(e) = inner.route(target, msg, inner.overflow_bound) {
            // Settle with the real cause before the returned reply handle is
            // dropped (dropping it would count as a rejection).
            let error = RequestError::from(e.kind());
            OpenSlot::decide(&open, Err(error.into()));
            let initial_msg = match e.into_inner() {
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
    /// path as [`send`](Self::send): per-pair FIFO holds across sends, requests and
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
                        return Err(SendError::new(kind, ActorMessage::ChannelMessage { channel_id, data }));
                    }
                };
                inner.route(peer, ActorMessage::ChannelMessage { channel_id, data }, inner.overflow_bound)
            })
            .unwrap_or_else(|data| {
                Err(SendError::new(
                    SendErrorKind::ChannelNotFound,
                    ActorMessage::ChannelMessage { channel_id, data },
                ))
            });
        match routed {
            Ok(()) => {
                inner.channels.counters.messages.bump();
                Ok(())
            }
            Err(e) => Err(e.map(|msg| match msg {
                ActorMessage::ChannelMessage { data, .. } => data,
                other => other.data().to_vec(),
            })),
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
        let _ = inner.route(peer, ActorMessage::ChannelClose { channel_id }, usize::MAX);
        Ok(())
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
    /// callbacks are fenced: see [`RouterBuilder::on_dead_letter`]). A failed
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

#[cfg(test)]
impl Router {
    /// Makes shard `index` panic in its own code, as a bug in it would.
    pub(crate) fn crash_shard(&self, index: usize) {
        let _ = self.inner.shards[index].cmd.send(Cmd::Crash);
    }
}
