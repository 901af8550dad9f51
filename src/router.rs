//! [`Router`]: the public face.

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{BuildError, RegisterError, RequestError, SendError, SendErrorKind, UnregisterError};
use crate::ids::ActorId;
use crate::mailbox::{mailbox, Mailbox, MailboxSender};
use crate::message::{ActorMessage, ReplyHandle, ReplySlot, ResponseFuture};
use crate::metrics::{DeadLetter, DeadLetterReason, RouterMetrics};
use crate::shard::{Cmd, DeadLetterSink, Latch, Shard, ShardConfig, ShardHandle};
use crate::sync::{self, thread, time, Arc, AtomicBool, Mutex, Ordering};
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

    /// How often a shard with unresolved requests wakes to collect newly filed
    /// deadlines. Deadlines it already knows are kept exactly; this only bounds
    /// how late an async request's timeout can fire. Default: 5 ms.
    pub fn timer_resolution(mut self, period: Duration) -> Self {
        self.resolution = period.max(Duration::from_micros(100));
        self
    }

    /// Calls `sink` with every dead letter. It runs on a shard thread or the
    /// sending thread and must not block.
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
            let (handle, rx) = ShardHandle::new(index);
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
        Ok(Router {
            inner: Arc::new(Inner {
                shards: shards.into_boxed_slice(),
                hasher: hasher(),
                closed: AtomicBool::new(false),
                threads: Mutex::new(threads),
                mailbox_capacity: self.mailbox_capacity,
                overflow_bound: self.overflow.bound(),
                dead_letters: self.dead_letters,
            }),
        })
    }
}

#[cfg(not(loom))]
fn hasher() -> ahash::RandomState {
    ahash::RandomState::new()
}

/// Fixed seeds under loom: a model must make the same choices on every run.
#[cfg(loom)]
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(1, 2, 3, 4)
}

struct Inner {
    shards: Box<[ShardHandle]>,
    hasher: ahash::RandomState,
    closed: AtomicBool,
    threads: Mutex<Vec<thread::JoinHandle>>,
    mailbox_capacity: usize,
    overflow_bound: usize,
    dead_letters: Option<DeadLetterSink>,
}

impl Inner {
    fn shard(&self, id: &ActorId) -> &ShardHandle {
        let n = self.shards.len();
        // `n` is at least 1 (checked at build); the modulo keeps the index in range.
        let index = (self.hasher.hash_one(id) % n as u64) as usize;
        &self.shards[index]
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops every shard and joins its thread. Idempotent.
    fn shutdown(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            tracing::info!(shards = self.shards.len(), "router shutting down");
            for shard in self.shards.iter() {
                shard.shared.closing.store(true, Ordering::SeqCst);
            }
            // Emptying the tables first means no caller can post to a shard after
            // its `Shutdown` (posts happen under a table read lock), and actors see
            // their mailboxes disconnect.
            for shard in self.shards.iter() {
                for entry in shard.shared.table.drain() {
                    entry.state.unlink();
                }
            }
            for shard in self.shards.iter() {
                let _ = shard.cmd.send(Cmd::Shutdown);
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            // A dead-letter sink dropping the last router handle runs on a shard
            // thread; that thread cannot join itself and ends on its own.
            if !thread::is_current(&t) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Inner {
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
    /// [`RegisterError::Shutdown`] after shutdown. A registration racing
    /// [`shutdown`](Self::shutdown) may succeed; its mailbox then disconnects
    /// like every other.
    pub fn register(&self, id: ActorId, mailbox: MailboxSender) -> Result<(), RegisterError> {
        let inner = &*self.inner;
        if inner.is_closed() {
            return Err(RegisterError::Shutdown);
        }
        let shard = inner.shard(&id);
        mailbox.state.link(shard.cmd.clone());
        let entry = Arc::new(Entry { id, tx: mailbox.tx, state: mailbox.state });
        let key = entry.key();
        if shard.shared.table.insert_new(id, entry).is_err() {
            return Err(RegisterError::AlreadyRegistered(id));
        }
        // Raced with shutdown. The insert took effect and sends may already have
        // put messages into the mailbox, so the registration succeeded; it ends
        // with the shutdown. Shutdown's table sweep may have run before the insert
        // (then nothing reached the entry: sends check `closed` under the table
        // lock), so take the entry out here if it is still ours; either way the
        // mailbox disconnects.
        if inner.is_closed() {
            if let Some(entry) = shard.shared.table.remove_if(&id, |e| e.key() == key) {
                entry.state.unlink();
            }
        }
        tracing::trace!(actor = %id, shard = shard.shared.index, "registered");
        Ok(())
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

    /// Unregisters an actor. Once this returns no message reaches its mailbox;
    /// messages parked for it become dead letters and its unresolved requests
    /// resolve with `ActorNotFound`. Its mailbox disconnects once drained.
    ///
    /// # Errors
    /// [`UnregisterError::ActorNotFound`] if `id` is not registered;
    /// [`UnregisterError::Shutdown`] after shutdown.
    pub fn unregister(&self, id: ActorId) -> Result<(), UnregisterError> {
        let inner = &*self.inner;
        if inner.is_closed() {
            return Err(UnregisterError::Shutdown);
        }
        let shard = inner.shard(&id);
        let entry = shard.shared.table.remove(&id).ok_or(UnregisterError::ActorNotFound(id))?;
        let state = &entry.state;
        state.unlink();
        // Table readers are done with the entry (the removal took the write lock),
        // so these counts can only fall from here.
        if state.in_flight.load(Ordering::SeqCst) > 0 || state.outstanding.load(Ordering::SeqCst) > 0 {
            let _ = shard.cmd.send(Cmd::Unregistered(entry));
        }
        tracing::trace!(actor = %id, shard = shard.shared.index, "unregistered");
        Ok(())
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
        self.inner.shard(&id).shared.table.contains(&id)
    }

    /// The ids of all registered actors (a snapshot).
    #[must_use]
    pub fn actor_ids(&self) -> Vec<ActorId> {
        self.inner.shards.iter().flat_map(|s| s.shared.table.keys_where(|_| true)).collect()
    }

    /// Routes any [`ActorMessage`] to `id`. Never blocks.
    ///
    /// The message goes straight into the mailbox when it has room and nothing of
    /// the actor's is queued at its shard; otherwise it is parked at the shard (up
    /// to the overflow bound) and delivered in order. `Ok` means accepted: it will
    /// be delivered, or become a dead letter if the actor unregisters first.
    ///
    /// # Errors
    /// Hands the message back with the [`SendErrorKind`].
    pub fn deliver(&self, id: ActorId, msg: ActorMessage) -> Result<(), SendError<ActorMessage>> {
        let inner = &*self.inner;
        let shard = inner.shard(&id);
        let bound = inner.overflow_bound;
        // `closed` is read under the table lock: shutdown sets it before emptying
        // the tables, so an entry that a racing `register` inserts after that
        // (and then removes again) never takes a message.
        shard
            .shared
            .table
            .with(&id, msg, |entry, msg| {
                if inner.is_closed() {
                    return Err(SendError::new(SendErrorKind::Shutdown, msg));
                }
                Entry::route(entry, msg, shard, bound)
            })
            .unwrap_or_else(|msg| {
                let kind =
                    if inner.is_closed() { SendErrorKind::Shutdown } else { SendErrorKind::ActorNotFound };
                Err(SendError::new(kind, msg))
            })
    }

    /// Sends a one-way message and reports whether it was accepted. Never blocks.
    ///
    /// # Errors
    /// `ActorNotFound`, `MailboxFull` (past the overflow bound), `MailboxClosed` or
    /// `Shutdown`, with the payload handed back.
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
                SendErrorKind::ActorNotFound => DeadLetterReason::ActorNotFound,
                SendErrorKind::MailboxFull => DeadLetterReason::MailboxFull,
                SendErrorKind::MailboxClosed => DeadLetterReason::MailboxClosed,
                SendErrorKind::Shutdown => DeadLetterReason::Shutdown,
            };
            let letter = DeadLetter { target: id, data: e.into_inner(), reason };
            self.inner.shard(&id).dead_letter(self.inner.dead_letters.as_ref(), letter);
        }
    }

    /// Posts a request and files its deadline with the target's shard.
    fn start_request(
        &self,
        id: ActorId,
        data: Vec<u8>,
        deadline: Instant,
    ) -> Result<Arc<ReplySlot>, RequestError> {
        let inner = &*self.inner;
        let shard = inner.shard(&id);
        let bound = inner.overflow_bound;
        // `closed` is read under the table lock, as in `deliver`.
        shard
            .shared
            .table
            .with(&id, data, |entry, data| {
                if inner.is_closed() {
                    return Err(RequestError::Shutdown);
                }
                let slot = ReplySlot::new(Some(Arc::clone(&entry.state)));
                if shard.shared.timers.file(&slot, deadline, &shard.cmd).is_err() {
                    let _ = slot.complete(Err(RequestError::Shutdown));
                    return Err(RequestError::Shutdown);
                }
                let msg = ActorMessage::Request { data, reply: ReplyHandle::new(Arc::clone(&slot)) };
                match Entry::route(entry, msg, shard, bound) {
                    Ok(()) => Ok(slot),
                    Err(e) => {
                        // Resolve before the returned reply handle is dropped.
                        let error = RequestError::from(e.kind());
                        let _ = slot.complete(Err(error));
                        Err(error)
                    }
                }
            })
            .unwrap_or_else(|_| {
                Err(if inner.is_closed() { RequestError::Shutdown } else { RequestError::ActorNotFound })
            })
    }

    /// Sends a request and blocks until exactly one outcome: the reply, or a
    /// [`RequestError`].
    ///
    /// # Errors
    /// `Timeout` after `timeout`; `NoReply` if the actor dropped the reply handle;
    /// `ActorNotFound` if it is not registered or unregisters before replying;
    /// `MailboxFull`, `MailboxClosed`; `Shutdown`.
    pub fn request(&self, id: ActorId, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, RequestError> {
        let deadline = deadline_after(timeout);
        self.start_request(id, data, deadline)?.wait_until(deadline)
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
    /// assert_eq!(outcome, Err(RequestError::Timeout));
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; a later reply is refused.
    pub fn request_async(&self, id: ActorId, data: Vec<u8>, timeout: Duration) -> ResponseFuture {
        ResponseFuture { inner: self.start_request(id, data, deadline_after(timeout)).map_err(Some) }
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
        RouterMetrics {
            shards: self
                .inner
                .shards
                .iter()
                .map(|s| s.shared.counters.snapshot(s.shared.index, s.shared.table.len()))
                .collect(),
        }
    }

    /// Stops the router: later calls return `Shutdown`, unresolved requests resolve
    /// with `Shutdown`, parked messages become dead letters, mailboxes disconnect,
    /// and every shard thread is joined before this returns. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// `true` once [`shutdown`](Self::shutdown) has been called.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.inner.is_closed()
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = time::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365))
}
