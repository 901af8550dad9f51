//! Scale-out over NATS (feature `nats`): one [`Router`] per node, every actor of
//! the cluster reachable from every node by its id, through the same `Router`
//! calls.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use sharded_router::cluster::{Cluster, ClusterConfig};
//! use sharded_router::{ActorId, Router};
//!
//! let router = Router::builder().build()?;
//! let cluster = Cluster::join(router.clone(), ClusterConfig::new("demo", "a", "nats://127.0.0.1:4222")).await?;
//! // An actor registered on node "b" is reached from here as if it were local:
//! if let Some(echo) = cluster.resolve("b.echo") {
//!     let reply = router.request_async(echo, b"hi".to_vec(), Duration::from_secs(1)).await?;
//!     assert_eq!(reply, b"hi");
//! }
//! cluster.leave().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! * **Transport.** One NATS connection per node (`async-nats`). Data frames to
//!   a node go to its subject `sr.<cluster>.node.<node>`; membership and
//!   directory announcements to `sr.<cluster>.members`. Frames are a compact
//!   binary format with a version byte (`wire`); payloads are carried untouched;
//!   a frame that does not decode is counted ([`ClusterStats::decode_errors`])
//!   and dropped.
//! * **Routes.** A remote actor is reached through a *route*: a mailbox
//!   registered in the local router under the remote actor's id, drained by one
//!   task that turns each message into a frame (`proxy`). So a send to a local
//!   actor is exactly what it was (no cluster code on its path), and a send to a
//!   remote one takes the same path up to the route: the router's FIFO,
//!   overflow, backpressure, request deadlines and channel rules all apply.
//!   Registering an id that lives on another node fails with
//!   [`RegisterError::OnAnotherNode`](crate::RegisterError::OnAnotherNode).
//! * **Directory** (`directory`): core NATS announcements and snapshots rather
//!   than a JetStream key-value bucket. Each node is the only authority on its
//!   own actors; it numbers the changes to its part and announces each; its
//!   heartbeat carries the current number, and a node that missed one asks the
//!   owner for a snapshot. So the directory needs no state in the server that
//!   could outlive the nodes (a dead node's entries vanish with it, nobody has
//!   to purge a bucket), it survives a server restart without a stream to
//!   recover, and it heals within a heartbeat or two of any lost announcement.
//!   The price: uniqueness is checked against this node's view, so two nodes
//!   registering the same id within one propagation delay both succeed (the
//!   conflict is counted in [`ClusterStats::conflicts`]; each keeps its own).
//! * **Membership and failure detection.** Every node publishes a heartbeat
//!   every [`ClusterConfig::heartbeat`]; a node silent for
//!   [`ClusterConfig::node_timeout`] (or that leaves, or comes back as a new
//!   incarnation) is gone: its routes are removed, which makes the router fail
//!   the requests and opens waiting on them (`ActorNotFound`) and close the
//!   channels through them (the local participant gets `ChannelClose`), and
//!   every request or open waiting for its answer fails. A node cut off from
//!   NATS takes the others for gone the same way, and learns them again when
//!   the connection comes back.
//!
//! # Guarantees across nodes
//!
//! * **Per-pair FIFO** holds for messages (sends, requests, channel messages and
//!   closes) from one sender on node A to one actor on node B: they share one
//!   route, one task publishes its messages in order on A's one connection,
//!   NATS delivers one connection's messages in order, and B delivers frames in
//!   arrival order. Nothing is promised between two routes (two target actors),
//!   nor across a node's restart.
//! * **At-most-once, never silently lost.** A frame is never sent twice. `Ok`
//!   from [`Router::try_send`] to a remote actor means *accepted for
//!   transmission* (put in the route's mailbox), as for a local one. After that,
//!   every one-way message (send, tell, channel message) is delivered, or
//!   becomes a dead letter of the receiving node's router (no such actor there,
//!   no room), or of the sending node's router (the frame could not be
//!   published, the receiver reported it lost, or the receiving node was gone
//!   before acknowledging it; such a message may still have been delivered
//!   when the node died after taking it). Dead letters count in the router's
//!   metrics and reach its sink; those of the cluster also count in
//!   [`ClusterStats`]. Dead letters of the sending side are reported with
//!   [`DeadLetterReason::Unregistered`](crate::DeadLetterReason::Unregistered)
//!   (their route left).
//! * **Requests and opens** have exactly one outcome, as locally: the deadline
//!   is kept by the local shard; an answer from the remote node, a typed error
//!   from it (`ActorNotFound`, `MailboxFull`, ...), or `ActorNotFound` when its
//!   node is gone, whichever comes first.
//!
//! # Limits
//!
//! No authentication or TLS to the NATS server beyond what its URL carries; no
//! placement or migration of actors; a route per remote actor on every node
//! (memory grows with the cluster's actor count).

mod config;
#[cfg(feature = "nats")]
mod directory;
#[cfg(feature = "nats")]
mod inbound;
#[cfg(feature = "nats")]
mod links;
#[cfg(feature = "nats")]
mod node;
#[cfg(feature = "nats")]
mod proxy;
#[cfg(feature = "nats")]
mod tasks;
pub mod wire;

pub use config::{ClusterConfig, ClusterError, ClusterStats, DirectoryEntry};
#[cfg(feature = "nats")]
pub use tasks::Cluster;
