//! [`RouterBuilder`]: a router's configuration, and starting its shard threads.

use std::fmt;
use std::time::Duration;

use crate::error::BuildError;
use crate::inbox::{Cmd, DeadLetterSink, ShardHandle};
use crate::metrics::DeadLetter;
use crate::router::Router;
use crate::shard::{Shard, ShardConfig};
use crate::sync::{self, thread};

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
    pub(crate) fn bound(self) -> usize {
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
    make_mailbox: crate::mailbox::MakeMailbox,
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
            make_mailbox: crate::mailbox::mailbox,
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

    /// Whether [`Router::mailbox`] makes tokio-backed mailboxes
    /// ([`tokio_mailbox`](crate::tokio_mailbox)) rather than flume ones. Default:
    /// `false`. Worth it when actors run as tokio tasks and mostly wait for their
    /// next message; mailboxes made elsewhere are registered as they are.
    #[cfg(feature = "tokio-mailbox")]
    pub fn tokio_mailboxes(mut self, on: bool) -> Self {
        self.make_mailbox = if on { crate::mailbox::tokio_mailbox } else { crate::mailbox::mailbox };
        self
    }

    /// What to do when a mailbox is full. Default: park up to 4096 per actor.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The most messages one shard holds for all its actors together: queued to
    /// it or parked in its overflow queues. Past it, sends that would park get
    /// [`SendErrorKind::ShardFull`](crate::SendErrorKind::ShardFull), however far each actor is from its own
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
        Ok(Router::assemble(
            shards,
            threads,
            (self.mailbox_capacity, self.make_mailbox),
            self.overflow.bound(),
            self.dead_letters,
        ))
    }
}

/// The router's constructors live beside the builder they use.
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
}
