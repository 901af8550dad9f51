//! The gateway's TCP server.
//!
//! Each connection is one [`Session`]. Frames are a 4-byte big-endian length and
//! then that many bytes of JSON ([`LengthDelimitedCodec`]); the JSON is described in
//! [`protocol`](super::protocol). With [`ServerConfig::tls`] (feature `tls`) the
//! frames travel inside TLS.
//!
//! # Admission
//!
//! * **Exposure.** [`Server::bind`] refuses an address that is not loopback unless
//!   tokens are configured ([`ServerConfig::auth`]) or the risk is accepted
//!   explicitly ([`ServerConfig::insecure`]).
//! * **Connections.** At most `max_connections` at once, and `max_connections_per_peer`
//!   from one IP address; a connection past either gets a final
//!   `TooManyConnections` error frame and is closed.
//! * **Authentication.** With tokens configured, the first frame must be
//!   [`Authenticate`](super::protocol::Authenticate) with one of them, within
//!   `handshake_timeout`. A wrong token or any other first frame is answered
//!   `Unauthorized` after `auth_failure_delay` (the same fixed delay whatever was
//!   wrong), silence at `handshake_timeout`, and the connection is closed. No
//!   session exists until then. A later `Authenticate` is checked again (a wrong
//!   token closes the connection); a server without tokens accepts any.
//!
//! # Per connection
//!
//! One task reads frames, executes commands and collects answers and events, and a
//! second task writes. Bounds, so that no client can hold up another or grow the
//! server's memory without limit; each is answered with its own [`ErrorKind`]:
//!
//! * at most `max_in_flight` requests and opens wait at once; one more is answered
//!   `TooManyInFlight` at once, and the connection goes on;
//! * at most `max_channels` channels open or opening; one more open is answered
//!   `TooManyChannels`;
//! * with a `rate_limit`, a frame beyond it is answered `RateLimited` without
//!   being run;
//! * a client that sends nothing for `idle_timeout` while nothing of its is in
//!   flight gets `IdleTimeout` and is closed;
//! * answers and events go through an outbound queue of `outbound_queue` frames; a
//!   client that lets it fill is disconnected, and so is one whose socket accepts
//!   no bytes for `write_timeout`;
//! * a frame longer than `max_frame_length` gets a `FrameTooLarge` error and the
//!   connection is closed (the stream cannot be resynchronised);
//! * malformed JSON, unknown commands, bad ids and bad arguments get an `Error`
//!   answer and the connection goes on.
//!
//! # Order and shutdown
//!
//! A client learns a channel's id from `ChannelOpened`; no event of that channel
//! is sent before it (events that race ahead of the answer are held back until
//! it has been queued). When the router shuts down, the listener closes and every
//! connection is sent the answers that settle by then and a final `Shutdown`
//! error, and is closed, within about a tenth of a second.
//!
//! When a connection ends, for whatever reason, its session is dropped: the
//! client's channels close and their actors receive `ChannelClose`. A client that
//! closes its sending side counts as gone: answers not ready by then are dropped.
//! A connection closed with a final error frame reads (and drops) what the
//! client still sends for up to half a second before the socket closes, so the
//! close cannot turn into a reset that destroys the frame unread.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::auth::TokenSet;
use super::limits::{PeerGuard, PeerTable, RateLimit, TokenBucket};
use super::protocol::{
    decode_client_frame, encode, Authenticate, ClientFrame, Command, ErrorKind, Event, FrameError, Response,
    ServerFrame,
};
use super::session::{Session, SessionConfig};
#[cfg(feature = "tls")]
use super::tls::TlsServer;
use crate::ids::ChannelId;
use crate::router::Router;

/// The default address: loopback only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));

/// The default largest frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// How often the server looks whether the router has shut down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// How long a closing connection may take to hand over the answers that settle
/// as the router shuts down.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// How long a connection closed with a final frame waits for the client to close
/// its side, reading what it still sends (see [`linger`]).
const LINGER: Duration = Duration::from_millis(500);

/// The most a lingering connection reads before it closes anyway.
const LINGER_BYTES: usize = 1 << 20;

/// Connections being refused (sent their `TooManyConnections` frame) at once;
/// past this, a connection over the limits is closed without a word.
const MAX_REFUSING: usize = 64;

/// How the server behaves. Every limit has a default meant to be safe to expose
/// (see the module docs for what each limit does when it is reached).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen. Default: [`DEFAULT_BIND`] (127.0.0.1:7420).
    pub bind: SocketAddr,
    /// The longest frame accepted or sent, not counting the length prefix.
    /// Default: 1 MiB.
    pub max_frame_length: usize,
    /// Requests and channel opens one client may have waiting at once. Default: 64.
    pub max_in_flight: usize,
    /// Channels one client may have open or opening at once. Default: 256.
    pub max_channels: usize,
    /// Frames queued for one client before it counts as too slow. Default: 1024.
    pub outbound_queue: usize,
    /// How long one write may make no progress before the client is dropped.
    /// Default: 10 s.
    pub write_timeout: Duration,
    /// Connections served at once. Default: 1024.
    pub max_connections: usize,
    /// Connections served at once from one IP address. Default: 64.
    pub max_connections_per_peer: usize,
    /// How long a client may send nothing (with nothing in flight) before it is
    /// closed. Default: 5 min.
    pub idle_timeout: Duration,
    /// The command rate one client may send. Default: none (the `serve` command
    /// sets 1000 a second, in bursts of up to 2000).
    pub rate_limit: Option<RateLimit>,
    /// The tokens a client must present first. Default: none (every connection is
    /// admitted, which [`Server::bind`] allows only on loopback).
    pub auth: Option<TokenSet>,
    /// How long a failed authentication waits before its `Unauthorized` answer
    /// and the close. Default: 500 ms.
    pub auth_failure_delay: Duration,
    /// How long a new connection has for its TLS handshake and its
    /// `Authenticate` frame. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Allows serving a non-loopback address without tokens. Default: `false`.
    pub insecure: bool,
    /// TLS: the server's certificate and key. Default: none (plain TCP).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsServer>,
    /// Each session's settings.
    pub session: SessionConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_in_flight: 64,
            max_channels: 256,
            outbound_queue: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_peer: 64,
            idle_timeout: Duration::from_secs(300),
            rate_limit: None,
            auth: None,
            auth_failure_delay: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            insecure: false,
            #[cfg(feature = "tls")]
            tls: None,
            session: SessionConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Sets the listening address.
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Sets the longest frame.
    #[must_use]
    pub fn max_frame_length(mut self, n: usize) -> Self {
        self.max_frame_length = n.max(64);
        self
    }

    /// Sets how many requests and opens one client may have waiting.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets how many channels one client may have open or opening.
    #[must_use]
    pub fn max_channels(mut self, n: usize) -> Self {
        self.max_channels = n;
        self
    }

    /// Sets the outbound queue length per client.
    #[must_use]
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.outbound_queue = n.max(1);
        self
    }

    /// Sets the write timeout.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the most connections served at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the most connections served at once from one IP address.
    #[must_use]
    pub fn max_connections_per_peer(mut self, n: usize) -> Self {
        self.max_connections_per_peer = n.max(1);
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets (or, with `None`, lifts) the command rate limit per client.
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Requires every connection to authenticate with one of `tokens`.
    #[must_use]
    pub fn auth(mut self, tokens: TokenSet) -> Self {
        self.auth = Some(tokens);
        self
    }

    /// Sets the delay before a failed authentication is answered.
    #[must_use]
    pub fn auth_failure_delay(mut self, delay: Duration) -> Self {
        self.auth_failure_delay = delay;
        self
    }

    /// Sets how long a new connection has to complete TLS and authenticate.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Allows (`true`) serving a non-loopback address without tokens.
    #[must_use]
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Serves over TLS with this certificate and key.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the sessions' settings.
    #[must_use]
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Whether connections arrive over TLS.
    fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Refuses an exposure that lets anyone who can connect message every actor.
    fn check_exposure(&self) -> io::Result<()> {
        let ip = self.bind.ip();
        if ip.is_loopback() || self.auth.is_some() {
            if !ip.is_loopback() && !self.uses_tls() {
                tracing::warn!(
                    addr = %self.bind,
                    "gateway serves a non-loopback address without TLS: tokens and traffic travel in clear"
                );
            }
            return Ok(());
        }
        if self.insecure {
            tracing::warn!(
                addr = %self.bind,
                "gateway serves a non-loopback address WITHOUT authentication (insecure): \
                 anyone who can connect can message every actor"
            );
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to serve the gateway on {} without authentication: anyone who can reach \
                 it could message every actor. Configure tokens (`--token-file`, ServerConfig::auth), \
                 bind a loopback address, or accept the risk explicitly (`--insecure`, \
                 ServerConfig::insecure)",
                self.bind
            ),
        ))
    }
}

/// The codec the server and client use in both directions: a 4-byte big-endian
/// length, then the frame. Decoding a length above `max_frame_length` fails with
/// [`io::ErrorKind::InvalidData`]; the decoder reserves at most the announced
/// frame (so at most `max_frame_length` plus the 4-byte header is buffered).
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// let mut codec = sharded_router::gateway::frame_codec(64);
/// let mut buf = BytesMut::from(&b"\0\0\0\x02{}"[..]);
/// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"{}");
/// let mut big = BytesMut::from(&b"\0\0\x01\0"[..]);
/// assert_eq!(codec.decode(&mut big).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
/// ```
#[must_use]
pub fn frame_codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

/// A bound gateway listener. Run it inside a tokio runtime.
///
/// ```no_run
/// # async fn serve() -> std::io::Result<()> {
/// use sharded_router::gateway::{Server, ServerConfig};
/// let router = sharded_router::Router::builder().build().unwrap();
/// let server = Server::bind(router, ServerConfig::default()).await?;
/// println!("listening on {}", server.local_addr()?);
/// server.run().await
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
}

impl Server {
    /// Binds `config.bind`.
    ///
    /// # Errors
    /// `PermissionDenied` for an address that is not loopback when no tokens are
    /// configured and `insecure` is not set; otherwise the bind error.
    pub async fn bind(router: Router, config: ServerConfig) -> io::Result<Self> {
        config.check_exposure()?;
        let listener = TcpListener::bind(config.bind).await?;
        Ok(Self { listener, router, config: Arc::new(config) })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves clients, each connection on its own task, until the
    /// router shuts down: then the listener closes and every connection is ended
    /// with a final `Shutdown` error frame.
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Like [`run`](Self::run), but also stops accepting once `stop` completes.
    /// Connections already open go on until their clients leave or the router
    /// shuts down.
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> io::Result<()> {
        let shared = Arc::new(Shared {
            connections: Arc::new(Semaphore::new(self.config.max_connections.min(Semaphore::MAX_PERMITS))),
            peers: Arc::new(PeerTable::default()),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            router: self.router,
            config: self.config,
        });
        let (shutdown_tx, shutdown) = watch::channel(false);
        tokio::spawn(watch_router(shared.router.clone(), shutdown_tx));
        let router_gone = router_shutdown(shutdown.clone());
        tokio::pin!(stop, router_gone);
        tracing::info!(addr = ?self.listener.local_addr().ok(), "gateway listening");
        loop {
            let accepted = tokio::select! {
                () = &mut router_gone => {
                    tracing::info!("gateway: the router shut down; closing the listener");
                    return Ok(());
                }
                () = &mut stop => return Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match shared.admit(peer) {
                        Ok(admission) => {
                            let shared = Arc::clone(&shared);
                            let shutdown = shutdown.clone();
                            tokio::spawn(async move {
                                serve_tcp(stream, peer, &shared, shutdown).await;
                                drop(admission);
                            });
                        }
                        Err(message) => shared.refuse(stream, peer, message),
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: back off and go on.
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// What every connection of one server shares.
struct Shared {
    router: Router,
    config: Arc<ServerConfig>,
    connections: Arc<Semaphore>,
    peers: Arc<PeerTable>,
    refusing: Arc<Semaphore>,
}

/// A connection's places under the server-wide and per-peer limits.
struct Admission {
    _connection: OwnedSemaphorePermit,
    _peer: PeerGuard,
}

impl Shared {
    fn admit(&self, peer: SocketAddr) -> Result<Admission, String> {
        let config = &self.config;
        let Ok(connection) = Arc::clone(&self.connections).try_acquire_owned() else {
            return Err(format!(
                "the gateway serves {} connections, its limit; try later",
                config.max_connections
            ));
        };
        let Some(peer_guard) = self.peers.admit(peer.ip(), config.max_connections_per_peer) else {
            return Err(format!(
                "{} already has {} connections, the limit per address",
                peer.ip(),
                config.max_connections_per_peer
            ));
        };
        Ok(Admission { _connection: connection, _peer: peer_guard })
    }

    /// Sends a connection over the limits its `TooManyConnections` frame and
    /// closes it, on a task of its own, bounded in number and time.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, message: String) {
        tracing::warn!(%peer, reason = %message, "gateway refuses a connection");
        let Ok(permit) = Arc::clone(&self.refusing).try_acquire_owned() else {
            return;
        };
        let config = Arc::clone(&self.config);
        tokio::spawn(async move {
            let frame = error_frame(None, ErrorKind::TooManyConnections, message);
            let write = async {
                #[cfg(feature = "tls")]
                if let Some(tls) = &config.tls {
                    if let Ok(stream) = tls.acceptor().accept(stream).await {
                        write_final(stream, &frame).await;
                    }
                    return;
                }
                write_final(stream, &frame).await;
            };
            let _ = tokio::time::timeout(config.handshake_timeout, write).await;
            drop(permit);
        });
    }
}

/// Writes one frame, shuts the sending side and lingers before the close.
async fn write_final<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, frame: &ServerFrame) {
    let Ok(bytes) = encode(frame) else { return };
    let Ok(len) = u32::try_from(bytes.len()) else { return };
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes);
    if stream.write_all(&buf).await.is_ok() && stream.shutdown().await.is_ok() {
        linger(stream).await;
    }
}

fn error_frame(request_id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Response { request_id, response: Response::error(kind, message) }
}

/// Sets the watch once the router has shut down; ends then, or once nobody
/// watches any more.
async fn watch_router(router: Router, shutdown: watch::Sender<bool>) {
    loop {
        if router.is_shutdown() {
            let _ = shutdown.send(true);
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(SHUTDOWN_POLL) => {}
            () = shutdown.closed() => return,
        }
    }
}

/// Completes once the router has shut down (never, if the watch goes away first).
async fn router_shutdown(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|gone| *gone).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the TLS handshake when the server has TLS, then serves the connection.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, shared: &Shared, shutdown: watch::Receiver<bool>) {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        match tokio::time::timeout(shared.config.handshake_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => serve_stream(stream, peer, shared, shutdown).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gateway TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "gateway TLS handshake timed out"),
        }
        return;
    }
    serve_stream(stream, peer, shared, shutdown).await;
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed its side (answers not yet ready are dropped).
    ClientDone,
    /// The frame stream broke (oversize frame, I/O error).
    BadStream,
    /// The client did not keep up with its answers and events.
    TooSlow,
    /// The writer stopped (write error or timeout).
    WriterGone,
    /// The router shut down.
    RouterGone,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The client presented a wrong token.
    Unauthorized,
}

/// Serves one client until it leaves, misbehaves or the router shuts down.
async fn serve_stream<S>(stream: S, peer: SocketAddr, shared: &Shared, shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = &*shared.config;
    let (read_half, write_half) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read_half, frame_codec(config.max_frame_length));
    let (out, out_rx) = mpsc::channel::<Bytes>(config.outbound_queue.max(1));
    let writer = tokio::spawn(write_frames(
        FramedWrite::new(write_half, frame_codec(config.max_frame_length)),
        out_rx,
        config.write_timeout,
    ));
    let out = Outbound { tx: out, max_frame_length: config.max_frame_length };

    let admitted = match &config.auth {
        None => Ok(true),
        Some(tokens) => tokio::select! {
            admitted = authenticate(&mut frames, &out, tokens, config, peer) => Ok(admitted),
            () = router_shutdown(shutdown.clone()) => Err(End::RouterGone),
        },
    };
    let end = match admitted {
        Ok(true) => admit(&mut frames, &out, peer, shared, shutdown).await,
        Ok(false) => End::Unauthorized,
        Err(end) => {
            let _ = out.push(&error_frame(None, ErrorKind::Shutdown, "the router shut down; closing"));
            end
        }
    };
    match end {
        End::TooSlow | End::WriterGone => writer.abort(),
        End::ClientDone => {
            drop(out);
            let _ = tokio::time::timeout(config.write_timeout, writer).await;
        }
        End::BadStream | End::RouterGone | End::Idle | End::Unauthorized => {
            // Let the writer send what is queued (the final error), within its
            // write timeout per batch; then give the client time to read it.
            drop(out);
            if let Ok(Ok(Ok(()))) = tokio::time::timeout(config.write_timeout, writer).await {
                linger(frames.into_inner()).await;
            }
        }
    }
}

/// After a final frame has been written and the sending side shut: reads and
/// discards what the client still sends, until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] have come. Closing a socket with unread bytes resets the
/// connection, and a reset can destroy the final frame before the client has
/// read it.
async fn linger<R: AsyncRead + Unpin>(mut read: R) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Attaches an admitted client's session and serves it.
async fn admit<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LengthDelimitedCodec>,
    out: &Outbound,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) -> End {
    let config = &*shared.config;
    match Session::attach(&shared.router, config.session.clone()) {
        Ok(session) => {
            tracing::debug!(%peer, client = %session.id(), "gateway client connected");
            let mut connection = Connection {
                config,
                session,
                out,
                in_flight: FuturesUnordered::new(),
                channels: ChannelBook::default(),
                bucket: config.rate_limit.map(|limit| TokenBucket::new(limit, Instant::now())),
            };
            let end = connection.run(frames, shutdown).await;
            tracing::debug!(%peer, client = %connection.session.id(), ?end, "gateway client disconnected");
            // Detach first: the actors learn at once that the client's channels closed.
            drop(connection);
            end
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "gateway cannot attach a session");
            let _ = out.push(&error_frame(None, ErrorKind::Shutdown, "the router has shut down"));
            End::RouterGone
        }
    }
}

/// The authentication handshake: `true` once the first frame presented a valid
/// token (answered `Authenticated`); otherwise, after the fixed failure delay,
/// `Unauthorized` is queued and `false` returned.
async fn authenticate<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LengthDelimitedCodec>,
    out: &Outbound,
    tokens: &TokenSet,
    config: &ServerConfig,
    peer: SocketAddr,
) -> bool {
    let first = tokio::time::timeout(config.handshake_timeout, frames.next()).await;
    let in_time = first.is_ok();
    let (request_id, refusal) = match first {
        Ok(Some(Ok(bytes))) => match Authenticate::decode(&bytes) {
            Ok(Some(Authenticate { request_id, token })) => {
                if tokens.verify(token.expose()) {
                    tracing::debug!(%peer, "gateway client authenticated");
                    return out
                        .push(&ServerFrame::Response {
                            request_id: Some(request_id),
                            response: Response::Authenticated,
                        })
                        .is_ok();
                }
                (Some(request_id), "the token is not valid")
            }
            Ok(None) => (readable_request_id(&bytes), FIRST_FRAME),
            Err(e) => (e.request_id, FIRST_FRAME),
        },
        // Gone before a word, or a broken stream: nobody to answer.
        Ok(Some(Err(_)) | None) => {
            tracing::debug!(%peer, "gateway client left before authenticating");
            return false;
        }
        Err(_) => (None, "no Authenticate frame in time"),
    };
    tracing::warn!(%peer, reason = refusal, "gateway refuses a client: unauthorized");
    if in_time {
        tokio::time::sleep(config.auth_failure_delay).await;
    }
    let _ = out.push(&error_frame(request_id, ErrorKind::Unauthorized, refusal));
    false
}

const FIRST_FRAME: &str = "this gateway requires a token: the first frame must be Authenticate";

/// The `request_id` of a frame, when it can be read.
fn readable_request_id(bytes: &[u8]) -> Option<u64> {
    match decode_client_frame(bytes) {
        Ok(frame) => Some(frame.request_id),
        Err(e) => e.request_id,
    }
}

/// A frame read from an admitted client.
enum Incoming {
    Command(ClientFrame),
    Authenticate(Authenticate),
    Bad(FrameError),
}

impl Incoming {
    /// Commands first (the common case); an unknown command may be an
    /// `Authenticate`.
    fn decode(bytes: &[u8]) -> Self {
        match decode_client_frame(bytes) {
            Ok(frame) => Self::Command(frame),
            Err(e) if e.kind == ErrorKind::UnknownCommand => match Authenticate::decode(bytes) {
                Ok(Some(auth)) => Self::Authenticate(auth),
                Ok(None) => Self::Bad(e),
                Err(bad) => Self::Bad(bad),
            },
            Err(e) => Self::Bad(e),
        }
    }

    fn request_id(&self) -> Option<u64> {
        match self {
            Self::Command(frame) => Some(frame.request_id),
            Self::Authenticate(auth) => Some(auth.request_id),
            Self::Bad(e) => e.request_id,
        }
    }
}

/// What one finished request or open produced.
struct Settled {
    request_id: u64,
    open: bool,
    response: Response,
}

type InFlight = FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Settled> + Send>>>;

/// One admitted client's state.
struct Connection<'a> {
    config: &'a ServerConfig,
    session: Session,
    out: &'a Outbound,
    in_flight: InFlight,
    channels: ChannelBook,
    bucket: Option<TokenBucket>,
}

impl Connection<'_> {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        frames: &mut FramedRead<R, LengthDelimitedCodec>,
        shutdown: watch::Receiver<bool>,
    ) -> End {
        let router_gone = router_shutdown(shutdown);
        let idle_timeout = self.config.idle_timeout;
        let mut last_frame = Instant::now();
        let idle = tokio::time::sleep_until(deadline_after(idle_timeout));
        tokio::pin!(router_gone, idle);
        loop {
            let step = tokio::select! {
                biased;
                () = &mut router_gone => return self.close_for_shutdown().await,
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => self.settled(settled),
                event = self.session.next_event() => match event {
                    Some(event) => self.event(event),
                    None => return self.close_for_shutdown().await,
                },
                frame = frames.next() => match frame {
                    Some(Ok(bytes)) => {
                        last_frame = Instant::now();
                        self.frame(&bytes).await
                    }
                    Some(Err(e)) => {
                        if e.kind() == io::ErrorKind::InvalidData {
                            let message =
                                format!("frame longer than {} bytes; closing", self.config.max_frame_length);
                            let _ = self.out.push(&error_frame(None, ErrorKind::FrameTooLarge, message));
                        }
                        Err(End::BadStream)
                    }
                    // End of stream is a disconnect: answers still pending are dropped.
                    None => Err(End::ClientDone),
                },
                () = &mut idle => {
                    let quiet = last_frame.elapsed();
                    if quiet >= idle_timeout && self.in_flight.is_empty() {
                        let message = format!("nothing received for {} s; closing", quiet.as_secs());
                        let _ = self.out.push(&error_frame(None, ErrorKind::IdleTimeout, message));
                        Err(End::Idle)
                    } else {
                        // Busy or recently heard from: look again once it could
                        // have been quiet for a whole idle timeout.
                        let rest = if self.in_flight.is_empty() { idle_timeout.saturating_sub(quiet) } else { idle_timeout };
                        idle.as_mut().reset(deadline_after(rest.max(Duration::from_millis(10))));
                        Ok(())
                    }
                }
                () = self.out.tx.closed() => Err(End::WriterGone),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Hands over the answers that settle as the router shuts down (each request
    /// still gets exactly one answer), then the final `Shutdown` error.
    async fn close_for_shutdown(&mut self) -> End {
        let drain = async {
            while let Some(settled) = self.in_flight.next().await {
                if self.settled(settled).is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, drain).await;
        let _ = self.out.push(&error_frame(None, ErrorKind::Shutdown, "the router shut down; closing"));
        End::RouterGone
    }

    /// An `Authenticate` after admission: a server without tokens accepts any; a
    /// server with tokens checks it again, and closes the connection if it is wrong.
    async fn authenticate_again(&mut self, auth: Authenticate) -> Result<(), End> {
        let answer = |response| ServerFrame::Response { request_id: Some(auth.request_id), response };
        match &self.config.auth {
            Some(tokens) if !tokens.verify(auth.token.expose()) => {
                tracing::warn!(client = %self.session.id(), "gateway client presented a wrong token");
                tokio::time::sleep(self.config.auth_failure_delay).await;
                let message = "the token is not valid";
                let _ = self.out.push(&answer(Response::error(ErrorKind::Unauthorized, message)));
                Err(End::Unauthorized)
            }
            _ => self.out.push(&answer(Response::Authenticated)),
        }
    }

    fn settled(&mut self, settled: Settled) -> Result<(), End> {
        let Settled { request_id, open, response } = settled;
        let opened = match &response {
            Response::ChannelOpened { channel_id, .. } => Some(*channel_id),
            _ => None,
        };
        self.out.push(&ServerFrame::Response { request_id: Some(request_id), response })?;
        if open {
            for event in self.channels.open_settled(opened) {
                self.out.push(&ServerFrame::Event { event })?;
            }
        }
        Ok(())
    }

    fn event(&mut self, event: Event) -> Result<(), End> {
        match self.channels.event(event) {
            Some(event) => self.out.push(&ServerFrame::Event { event }),
            None if self.channels.held.len() > self.config.outbound_queue => Err(End::TooSlow),
            None => Ok(()),
        }
    }

    async fn frame(&mut self, bytes: &[u8]) -> Result<(), End> {
        let incoming = Incoming::decode(bytes);
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_take(Instant::now()) {
                let message = format!(
                    "over the rate limit of {} commands/s; retry in {} ms",
                    self.config.rate_limit.map_or(0, |l| l.per_second),
                    bucket.retry_after().as_millis().max(1)
                );
                return self.out.push(&error_frame(incoming.request_id(), ErrorKind::RateLimited, message));
            }
        }
        let ClientFrame { request_id, command } = match incoming {
            Incoming::Command(frame) => frame,
            Incoming::Authenticate(auth) => return self.authenticate_again(auth).await,
            Incoming::Bad(e) => {
                tracing::debug!(client = %self.session.id(), error = %e, "gateway bad frame");
                return self.out.push(&e.into_frame());
            }
        };
        let answer = |response| ServerFrame::Response { request_id: Some(request_id), response };
        let slow = matches!(command, Command::RequestActorMessage { .. } | Command::OpenChannel { .. });
        if slow && self.in_flight.len() >= self.config.max_in_flight {
            let message = format!("{} requests and opens already wait, the limit", self.config.max_in_flight);
            return self.out.push(&answer(Response::error(ErrorKind::TooManyInFlight, message)));
        }
        let open = matches!(command, Command::OpenChannel { .. });
        if open && self.channels.in_use() >= self.config.max_channels {
            let message = format!("{} channels already open or opening, the limit", self.config.max_channels);
            return self.out.push(&answer(Response::error(ErrorKind::TooManyChannels, message)));
        }
        let mut pending = self.session.execute(command);
        match pending.take_ready() {
            Some(response) => {
                if let Response::ChannelClosed { channel_id } = &response {
                    self.channels.open.remove(channel_id);
                }
                self.out.push(&answer(response))
            }
            None => {
                if open {
                    self.channels.opening += 1;
                }
                self.in_flight
                    .push(Box::pin(async move { Settled { request_id, open, response: pending.await } }));
                Ok(())
            }
        }
    }
}

/// The channels of one client, as the server has told it of them: the ones
/// whose `ChannelOpened` it has been sent, and how many opens are pending.
///
/// An event for a channel the client has not been told of, while an open is
/// pending, is held back until that open's answer has been queued: the actor may
/// accept and send at once, and its message must not reach the client before
/// the id it belongs to.
#[derive(Default)]
struct ChannelBook {
    open: HashSet<ChannelId>,
    opening: usize,
    held: VecDeque<Event>,
}

impl ChannelBook {
    fn in_use(&self) -> usize {
        self.open.len() + self.opening
    }

    /// The event to send now, or `None` if it is held back.
    fn event(&mut self, event: Event) -> Option<Event> {
        let (channel_id, closed) = match &event {
            Event::ChannelMessage { channel_id, .. } => (*channel_id, false),
            Event::ChannelClosed { channel_id } => (*channel_id, true),
        };
        if self.opening > 0 && !self.open.contains(&channel_id) {
            self.held.push_back(event);
            return None;
        }
        if closed {
            self.open.remove(&channel_id);
        }
        Some(event)
    }

    /// An open settled (`opened` is the channel if it was accepted, and its
    /// answer is queued): the held events that may follow now, in order.
    fn open_settled(&mut self, opened: Option<ChannelId>) -> Vec<Event> {
        self.opening = self.opening.saturating_sub(1);
        if let Some(id) = opened {
            self.open.insert(id);
        }
        let mut release = Vec::new();
        let mut keep = VecDeque::new();
        for event in self.held.drain(..) {
            let (channel_id, closed) = match &event {
                Event::ChannelMessage { channel_id, .. } => (*channel_id, false),
                Event::ChannelClosed { channel_id } => (*channel_id, true),
            };
            if self.opening == 0 || self.open.contains(&channel_id) {
                if closed {
                    self.open.remove(&channel_id);
                }
                release.push(event);
            } else {
                keep.push_back(event);
            }
        }
        self.held = keep;
        release
    }
}

/// `now + after`, or a year from now when that does not fit (the idle check
/// then re-arms itself).
fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after).or_else(|| now.checked_add(Duration::from_secs(60 * 60 * 24 * 365))).unwrap_or(now)
}

/// The bounded queue of frames for one client.
struct Outbound {
    tx: mpsc::Sender<Bytes>,
    max_frame_length: usize,
}

impl Outbound {
    /// Queues a frame without waiting; a full queue means the client is too slow.
    fn push(&self, frame: &ServerFrame) -> Result<(), End> {
        let bytes = match encode(frame) {
            Ok(bytes) if bytes.len() <= self.max_frame_length => bytes,
            Ok(bytes) => {
                let request_id = match frame {
                    ServerFrame::Response { request_id, .. } => *request_id,
                    ServerFrame::Event { .. } => None,
                };
                let message = format!(
                    "an answer of {} bytes exceeds the {}-byte frame limit and was dropped",
                    bytes.len(),
                    self.max_frame_length
                );
                encode(&error_frame(request_id, ErrorKind::ResponseTooLarge, message))
                    .map_err(|_| End::BadStream)?
            }
            Err(e) => {
                tracing::error!(error = %e, "gateway could not encode a frame");
                return Ok(());
            }
        };
        self.tx.try_send(Bytes::from(bytes)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => End::TooSlow,
            mpsc::error::TrySendError::Closed(_) => End::WriterGone,
        })
    }
}

/// Writes queued frames, flushing when the queue runs dry. Ends when the queue is
/// closed and drained, on a write error, or when a write makes no progress for
/// `write_timeout`.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<WriteHalf<W>, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
    write_timeout: Duration,
) -> io::Result<()> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the client is not reading");
    while let Some(frame) = rx.recv().await {
        tokio::time::timeout(write_timeout, sink.feed(frame)).await.map_err(|_| timed_out())??;
        while let Ok(frame) = rx.try_recv() {
            tokio::time::timeout(write_timeout, sink.feed(frame)).await.map_err(|_| timed_out())??;
        }
        tokio::time::timeout(write_timeout, SinkExt::<Bytes>::flush(&mut sink))
            .await
            .map_err(|_| timed_out())??;
    }
    tokio::time::timeout(write_timeout, SinkExt::<Bytes>::close(&mut sink)).await.map_err(|_| timed_out())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel_id: ChannelId, text: &str) -> Event {
        Event::ChannelMessage { channel_id, message: text.as_bytes().to_vec() }
    }

    #[test]
    fn events_wait_for_their_channels_open_answer() {
        let (a, b) = (ChannelId::random(), ChannelId::random());
        let mut book = ChannelBook { opening: 2, ..ChannelBook::default() };
        assert!(book.event(message(a, "a1")).is_none());
        assert!(book.event(message(b, "b1")).is_none());
        assert!(book.event(Event::ChannelClosed { channel_id: a }).is_none());
        // `a` opened: its events follow, in order; `b`'s wait for its own answer.
        assert_eq!(
            book.open_settled(Some(a)),
            vec![message(a, "a1"), Event::ChannelClosed { channel_id: a }]
        );
        assert!(!book.open.contains(&a), "the held close was applied");
        assert_eq!(book.held.len(), 1);
        assert_eq!(book.open_settled(Some(b)), vec![message(b, "b1")]);
        // Nothing pending: events pass straight through.
        assert_eq!(book.event(message(b, "b2")), Some(message(b, "b2")));
        assert_eq!(book.in_use(), 1);
    }

    #[test]
    fn a_failed_open_releases_what_no_open_can_claim() {
        let stray = ChannelId::random();
        let mut book = ChannelBook { opening: 1, ..ChannelBook::default() };
        assert!(book.event(message(stray, "late")).is_none());
        assert_eq!(book.open_settled(None), vec![message(stray, "late")]);
        assert_eq!(book.in_use(), 0);
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_insecure() {
        let public: SocketAddr = "0.0.0.0:7420".parse().unwrap();
        let err = ServerConfig::default().bind(public).check_exposure().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("--insecure"));
        assert!(ServerConfig::default().bind(public).insecure(true).check_exposure().is_ok());
        let tokens = TokenSet::new(["t"]).unwrap();
        assert!(ServerConfig::default().bind(public).auth(tokens).check_exposure().is_ok());
        assert!(ServerConfig::default().check_exposure().is_ok());
        let v6: SocketAddr = "[::1]:7420".parse().unwrap();
        assert!(ServerConfig::default().bind(v6).check_exposure().is_ok());
    }
}
