//! The gateway's TCP server.
//!
//! Each connection is one [`Session`]. Frames are a 4-byte big-endian length and
//! then that many bytes of JSON ([`LengthDelimitedCodec`]); the JSON is described in
//! [`protocol`](super::protocol).
//!
//! Per connection, one task reads frames, executes commands and collects answers
//! and events, and a second task writes. Bounds, so that no client can hold up
//! another or grow the server's memory without limit:
//!
//! * at most `max_in_flight` requests and opens wait at once; past that the
//!   connection stops reading until one finishes (TCP pushes back on the client);
//! * answers and events go through an outbound queue of `outbound_queue` frames; a
//!   client that lets it fill is disconnected, and so is one whose socket accepts
//!   no bytes for `write_timeout`;
//! * a frame longer than `max_frame_length` gets a `FrameTooLarge` error and the
//!   connection is closed (the stream cannot be resynchronised);
//! * malformed JSON, unknown commands, bad ids and bad arguments get an `Error`
//!   answer and the connection goes on.
//!
//! When a connection ends, for whatever reason, its session is dropped: the
//! client's channels close and their actors receive `ChannelClose`. A client that
//! closes its sending side counts as gone: answers not ready by then are dropped.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::protocol::{encode, ErrorKind, Response, ServerFrame};
use super::session::{FrameReply, Session, SessionConfig};
use crate::router::Router;

/// The default address: loopback only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));

/// The default largest frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// How the server behaves.
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
    /// Frames queued for one client before it counts as too slow. Default: 1024.
    pub outbound_queue: usize,
    /// How long one write may make no progress before the client is dropped.
    /// Default: 10 s.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed as they arrive. Default: 1024.
    pub max_connections: usize,
    /// Each session's settings.
    pub session: SessionConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_in_flight: 64,
            outbound_queue: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
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

    /// Sets the sessions' settings.
    #[must_use]
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
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
    /// The bind error.
    pub async fn bind(router: Router, config: ServerConfig) -> io::Result<Self> {
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

    /// Accepts and serves clients, each connection on its own task. Returns once a
    /// connection arrives after the router shut down (open connections end by
    /// themselves then).
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Like [`run`](Self::run), but stops accepting once `stop` completes.
    /// Connections already open go on until their clients leave or the router
    /// shuts down.
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> io::Result<()> {
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        tokio::pin!(stop);
        tracing::info!(addr = ?self.listener.local_addr().ok(), "gateway listening");
        loop {
            let accepted = tokio::select! {
                () = &mut stop => return Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            if self.router.is_shutdown() {
                return Ok(());
            }
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        tracing::warn!(%peer, "gateway at its connection limit; closing new connection");
                        drop(stream);
                        continue;
                    };
                    let router = self.router.clone();
                    let config = Arc::clone(&self.config);
                    tokio::spawn(async move {
                        serve_connection(stream, &router, &config).await;
                        drop(permit);
                    });
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
}

/// Serves one client until it leaves, misbehaves or the router shuts down.
async fn serve_connection(stream: TcpStream, router: &Router, config: &ServerConfig) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let session = match Session::attach(router, config.session.clone()) {
        Ok(session) => session,
        Err(e) => {
            tracing::debug!(?peer, error = %e, "gateway cannot attach a session");
            return;
        }
    };
    tracing::debug!(?peer, client = %session.id(), "gateway client connected");
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::new(read_half, frame_codec(config.max_frame_length));
    let (out, out_rx) = mpsc::channel::<Bytes>(config.outbound_queue);
    let writer = tokio::spawn(write_frames(
        FramedWrite::new(write_half, frame_codec(config.max_frame_length)),
        out_rx,
        config.write_timeout,
    ));
    let out = Outbound { tx: out, max_frame_length: config.max_frame_length };

    let mut in_flight = FuturesUnordered::new();
    let end = loop {
        tokio::select! {
            biased;
            Some((request_id, response)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(end) = out.push(&ServerFrame::Response { request_id: Some(request_id), response }) {
                    break end;
                }
            }
            event = session.next_event() => match event {
                Some(event) => {
                    if let Err(end) = out.push(&ServerFrame::Event { event }) {
                        break end;
                    }
                }
                None => break End::RouterGone,
            },
            frame = frames.next(), if in_flight.len() < config.max_in_flight => match frame {
                Some(Ok(bytes)) => {
                    let reply = match session.execute_frame(&bytes) {
                        FrameReply::Ready(reply) => Some(reply),
                        FrameReply::InFlight { request_id, pending } => {
                            in_flight.push(async move { (request_id, pending.await) });
                            None
                        }
                    };
                    if let Some(reply) = reply {
                        if let Err(end) = out.push(&reply) {
                            break end;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(?peer, error = %e, "gateway frame stream broke");
                    if e.kind() == io::ErrorKind::InvalidData {
                        let message = format!("frame longer than {} bytes; closing", config.max_frame_length);
                        let _ = out.push(&ServerFrame::Response {
                            request_id: None,
                            response: Response::error(ErrorKind::FrameTooLarge, message),
                        });
                    }
                    break End::BadStream;
                }
                // End of stream is a disconnect: answers still pending are dropped.
                None => break End::ClientDone,
            },
            () = out.tx.closed() => break End::WriterGone,
        }
    };
    tracing::debug!(?peer, client = %session.id(), ?end, "gateway client disconnected");
    // Detach first: the actors learn at once that the client's channels closed.
    drop(in_flight);
    drop(session);
    drop(frames);
    match end {
        End::TooSlow | End::WriterGone => writer.abort(),
        End::ClientDone | End::BadStream | End::RouterGone => {
            // Let the writer send what is queued (the error for a bad stream), within
            // its write timeout per batch.
            drop(out);
            let _ = tokio::time::timeout(config.write_timeout, writer).await;
        }
    }
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
                let error = ServerFrame::Response {
                    request_id,
                    response: Response::error(ErrorKind::ResponseTooLarge, message),
                };
                encode(&error).map_err(|_| End::BadStream)?
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
async fn write_frames(
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
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
