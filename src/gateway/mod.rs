//! The management gateway: external clients talk to actors over the network.
//!
//! * [`Session`] (feature `gateway`, runtime-free): one client's endpoint on the
//!   router, with its own [`ExternalId`](crate::ExternalId). It executes
//!   [`Command`]s and yields [`Event`]s, and knows nothing of any transport.
//! * [`protocol`]: the commands, responses and events and their JSON form.
//! * [`Server`] and [`Client`] (feature `server`, over tokio): TCP, each frame a
//!   4-byte big-endian length followed by one JSON document.
//!
//! ```no_run
//! # #[cfg(feature = "server")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sharded_router::gateway::{Client, ClientConfig, Server, ServerConfig};
//! use sharded_router::Router;
//!
//! let router = Router::builder().build()?;
//! let server = Server::bind(router, ServerConfig::default()).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(server.run());
//!
//! let (client, _events) = Client::connect(addr, ClientConfig::default()).await?;
//! for actor in client.list_actors().await? {
//!     println!("{} {}", actor.id, actor.name.unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "server")]
mod client;
pub mod protocol;
#[cfg(test)]
mod protocol_tests;
#[cfg(feature = "server")]
mod server;
mod session;
mod stats;

#[cfg(feature = "server")]
pub use client::{Client, ClientConfig, ClientError, Events};
pub use protocol::{
    decode_client_frame, ActorInfo, ClientFrame, Command, ErrorKind, Event, FrameError, Response, ServerFrame,
};
#[cfg(feature = "server")]
pub use server::{frame_codec, Server, ServerConfig, DEFAULT_BIND, DEFAULT_MAX_FRAME_LENGTH};
pub use session::{FrameReply, NameLookup, Pending, Session, SessionConfig};
pub use stats::{ChannelStats, ShardStats, StatsReport};
