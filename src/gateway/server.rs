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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::channel_book::ChannelBook;
use super::config::{frame_codec, ServerConfig};
use super::handshake::authenticate;
use super::limits::{PeerGuard, PeerTable, TokenBucket};
use super::outbound::{deadline_after, error_frame, linger, write_final, write_frames, End, Outbound};
use super::protocol::{
    decode_client_frame, Authenticate, ClientFrame, Command, ErrorKind, Event, FrameError, Response,
    ServerFrame,
};
use super::session::Session;
use crate::router::Router;

/// How often the server looks whether the router has shut down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// How long a closing connection may take to hand over the answers that settle
/// as the router shuts down.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// Connections being refused (sent their `TooManyConnections` frame) at once;
/// past this, a connection over the limits is closed without a word.
const MAX_REFUSING: usize = 64;

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
