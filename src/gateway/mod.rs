//! The management gateway: external clients talk to actors over the network.
//!
//! * [`Session`] (feature `gateway`, runtime-free): one client's endpoint on the
//!   router, with its own [`ExternalId`](crate::ExternalId). It executes
//!   [`Command`]s and yields [`Event`]s, and knows nothing of any transport.
//! * [`protocol`]: the commands, responses and events and their JSON form.
//! * [`Server`] and [`Client`] (feature `server`, over tokio): TCP, each frame a
//!   4-byte big-endian length followed by one JSON document. The server admits
//!   clients by token ([`TokenSet`]) and bounds each one (connections, requests in
//!   flight, channels, idle time, command rate): see [`ServerConfig`].
//! * [`TlsServer`] and [`TlsClient`] (feature `tls`): the same over TLS (rustls).
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
mod auth;
#[cfg(feature = "server")]
mod channel_book;
#[cfg(feature = "server")]
mod client;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod handshake;
#[cfg(feature = "server")]
mod limits;
#[cfg(feature = "server")]
mod outbound;
pub mod protocol;
#[cfg(test)]
mod protocol_tests;
mod serde_forms;
#[cfg(feature = "server")]
mod server;
mod session;
mod stats;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "server")]
pub use auth::{first_token, TokenSet};
#[cfg(feature = "server")]
pub use client::{Client, ClientConfig, ClientError, Events};
#[cfg(feature = "server")]
pub use config::{frame_codec, ServerConfig, DEFAULT_BIND, DEFAULT_MAX_FRAME_LENGTH};
#[cfg(feature = "server")]
pub use limits::RateLimit;
pub use protocol::{
    decode_client_frame, ActorInfo, ClientFrame, Command, ErrorKind, Event, FrameError, Response,
    ServerFrame, Token,
};
#[cfg(feature = "server")]
pub use server::Server;
pub use session::{DirectoryLookup, FrameReply, NameLookup, Pending, Session, SessionConfig, Updater};
pub use stats::{ChannelStats, ShardStats, StatsReport};
#[cfg(feature = "tls")]
pub use tls::{TlsClient, TlsServer};
