//! Sharded, high-throughput message routing for actor runtimes.
//!
//! Actors are hashed across N router **shards**, each on a dedicated thread. A send
//! looks up the target in its shard's partition of a concurrent actor table and
//! puts the message straight into the actor's bounded mailbox, so the ack is known
//! in the caller without a hop through any thread. Only when a mailbox is full does
//! a message go to the shard, which parks it in that actor's overflow queue and
//! delivers it, in order, as room appears: one slow actor never stalls anyone else.
//!
//! # Guarantees
//!
//! * **At-most-once, never silently lost:** every message is delivered once, or its
//!   send returns an error handing the payload back ([`SendError`],
//!   [`RequestFailed`], [`OpenFailed`]), or it is counted as a [`DeadLetter`].
//! * **Per-pair FIFO:** messages from one sender to one receiver arrive in the order
//!   sent, including across overflow.
//! * **Linearizable registration:** once [`Router::register`] returns, sends route;
//!   once [`Router::unregister`] returns, none do and no answer from the actor is
//!   accepted. Dropping an actor's last [`Mailbox`] unregisters it.
//! * **Exactly one outcome** per request: reply, `Timeout`, `ActorNotFound`,
//!   `NoReply`, `MailboxFull`, `ShardFull`, `MailboxClosed`, `ShardFailed` or
//!   `Shutdown` (see [`RequestError`]); dropping a [`ResponseFuture`] abandons it.
//! * **No unbounded wait:** every blocking call ends by a reply, a timeout or
//!   shutdown; `Duration::MAX` means no deadline. A send waiting for room
//!   ([`Router::send_async`]) is woken when room appears or the wait ends for good.
//! * **Fenced user code:** a panicking dead-letter sink or waker is caught and
//!   counted; a shard that panics in its own code is fenced, not restarted (see
//!   [`Router::is_degraded`]).
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use sharded_router::{ActorId, ActorMessage, Router};
//!
//! let router = Router::builder().shards(2).mailbox_capacity(64).build()?;
//! let (tx, mailbox) = router.mailbox();
//! let echo = ActorId::new();
//! router.register(echo, tx)?;
//!
//! std::thread::spawn(move || {
//!     while let Ok(msg) = mailbox.recv() {
//!         if let ActorMessage::Request { data, reply } = msg {
//!             let _ = reply.reply(data);
//!         }
//!     }
//! });
//!
//! router.try_send(echo, b"one-way".to_vec())?;
//! let reply = router.request(echo, b"ping".to_vec(), Duration::from_secs(1))?;
//! assert_eq!(reply, b"ping");
//! router.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where things are
//!
//! * Routing: [`Router`] ([`Router::try_send`], [`Router::send_async`],
//!   [`Router::blocking_send`], [`Router::tell`], [`Router::request`],
//!   [`Router::request_async`], [`Router::deliver`]).
//! * Actors' side: [`Mailbox`], [`ActorMessage`], [`ReplyHandle`].
//! * Hot reload: [`Router::suspend`], [`Router::replace_mailbox`],
//!   [`Router::resume`].
//! * Observing: [`Router::metrics`], [`RouterBuilder::on_dead_letter`]; `observe`
//!   (feature `metrics`) hands the counters to the `metrics` crate's recorder.
//! * Moving from Theater's single-task router: [`compat`].
//! * External clients over TCP: `gateway` (features `gateway` and `server`).
//! * One router across several processes and machines, over NATS: `cluster`
//!   (feature `nats`).

#![warn(missing_docs)]
#![deny(unsafe_code)]

// The face: what users call.
mod builder;
mod channel_api;
// The wire format alone is also built for the fuzz targets (`cfg(fuzzing)`),
// without the NATS client.
#[cfg(all(any(feature = "nats", fuzzing), not(loom)))]
pub mod cluster;
pub mod compat;
#[cfg(all(feature = "gateway", not(loom)))]
pub mod gateway;
mod handle;
#[cfg(all(feature = "metrics", not(loom)))]
pub mod observe;
mod reload;
mod router;
mod send_api;
// Routing: the core every call goes through, and the channel table.
mod channels;
mod routing;
// The shards: their threads, what callers post to them, and the overflow protocol.
mod delivery;
mod inbox;
mod shard;
mod timers;
// One actor: its table entry, mailbox, registration and messages.
mod mailbox;
mod message;
mod registration;
mod slot;
mod table;
// The ground: ids, errors, metrics, fenced user code, the loom seam.
mod error;
mod fence;
mod ids;
mod latency;
mod metrics;
mod sync;
#[cfg(test)]
mod tests;

pub use builder::{OverflowPolicy, RouterBuilder};
pub use channel_api::{OpenFuture, OpenedChannel};
pub use error::{
    BuildError, ChannelError, Disconnected, OpenFailed, RegisterError, ReloadError, RequestError,
    RequestFailed, SendError, SendErrorKind, TryRecvError, UnregisterError,
};
pub use handle::{ActorHandle, HandleError};
pub use ids::{ActorId, ChannelId, ExternalId, ParseIdError, Participant};
pub use latency::{LatencySnapshot, RequestCounts, RequestOutcome};
#[cfg(feature = "tokio-mailbox")]
pub use mailbox::tokio_mailbox;
pub use mailbox::{mailbox, Mailbox, MailboxSender, RecvFuture};
pub use message::{
    reply_channel, ActorMessage, ChannelOpenReply, ReplyHandle, ReplyReceiver, ResponseFuture,
};
pub use metrics::{ChannelMetrics, DeadLetter, DeadLetterReason, RouterMetrics, ShardMetrics};
pub use router::Router;
pub use send_api::SendFuture;

/// Hooks for the loom models in `loom-tests/`. Built only with `--cfg loom`; not
/// part of the public API.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_hooks {
    use std::time::Duration;

    use crate::Router;

    /// Loom does not model time. This moves the crate's mock clock forward by `by`
    /// and posts a wake-up to every shard of `router`, which then resolves the
    /// request deadlines that have passed. Returns without waiting for the shards.
    pub fn advance_clock(router: &Router, by: Duration) {
        crate::sync::time::advance(by);
        router.wake_shards();
    }
}
