//! A gateway client over TCP, for programs, tests and the command-line tool.
//!
//! [`Client::connect`] returns the client and an [`Events`] stream. The client may
//! be cloned and used from many tasks at once: every call gets its own correlation
//! id, and answers are matched to calls whatever order they arrive in. Every call
//! is bounded by a timeout.
//!
//! With [`ClientConfig::token`] the client authenticates as its first frame, and
//! [`Client::connect`] fails with `PermissionDenied` if the server refuses the
//! token. With [`ClientConfig::tls`] (feature `tls`) it speaks TLS and checks the
//! server's certificate against the given authorities.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::config::{frame_codec, DEFAULT_MAX_FRAME_LENGTH};
use super::protocol::{
    decode_server_frame, encode, ActorInfo, Authenticate, ClientFrame, Command, ErrorKind, Event, Response,
    ServerFrame, Token,
};
use super::stats::StatsReport;
#[cfg(feature = "tls")]
use super::tls::TlsClient;
use crate::ids::{ActorId, ChannelId};

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error.
    Remote {
        /// What went wrong.
        kind: ErrorKind,
        /// The server's description.
        message: String,
    },
    /// No answer arrived in time.
    Timeout,
    /// The connection is closed.
    Disconnected,
    /// The server's answer does not fit the command.
    UnexpectedResponse(Box<Response>),
    /// A frame could not be encoded or sent.
    Io(io::Error),
}

impl ClientError {
    /// The server's error kind, for [`ClientError::Remote`].
    #[must_use]
    pub fn remote_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Remote { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote { kind, message } => write!(f, "{kind}: {message}"),
            Self::Timeout => f.write_str("no answer from the gateway in time"),
            Self::Disconnected => f.write_str("the gateway connection is closed"),
            Self::UnexpectedResponse(r) => write!(f, "unexpected answer from the gateway: {r:?}"),
            Self::Io(e) => write!(f, "gateway connection: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// How a client behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long a call waits for its answer (a request waits at least its own
    /// timeout plus this). Default: 10 s.
    pub timeout: Duration,
    /// The longest frame accepted or sent. Default: 1 MiB.
    pub max_frame_length: usize,
    /// Events buffered for the [`Events`] stream; while it is full the client stops
    /// reading from the server. Default: 1024.
    pub event_buffer: usize,
    /// The token presented as the first frame. Default: none.
    pub token: Option<Token>,
    /// TLS: whom to trust and the server's name. Default: none (plain TCP).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsClient>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            event_buffer: 1024,
            token: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClientConfig {
    /// Sets the call timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Authenticates with `token` on connecting.
    #[must_use]
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Connects over TLS.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The calls waiting for answers, or why there will be none.
enum Waiting {
    /// Connected: each waiting call by its request id.
    Open(HashMap<u64, oneshot::Sender<Response>>),
    /// The connection is closed; with the server's last word (an error without
    /// a request id: shutdown, idle timeout, a refused connection, ...) if it
    /// sent one.
    Closed(Option<Response>),
}

impl Waiting {
    fn lock(this: &Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        this.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed (keeping the first reason given) and hands
    /// back the calls that were waiting.
    fn close(&mut self, reason: Option<Response>) -> HashMap<u64, oneshot::Sender<Response>> {
        match self {
            Self::Open(waiters) => {
                let waiters = std::mem::take(waiters);
                *self = Self::Closed(reason);
                waiters
            }
            Self::Closed(_) => HashMap::new(),
        }
    }
}

type Waiters = Arc<Mutex<Waiting>>;

/// A connection to a gateway server. Cheap to clone; the connection closes when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    frames: mpsc::Sender<Bytes>,
    waiters: Waiters,
    next_id: Arc<AtomicU64>,
    config: Arc<ClientConfig>,
}

/// Events the server pushes (messages and closes on this client's channels).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection is closed and every event taken.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event, waiting at most `timeout`; `None` at the timeout or when the
    /// connection is closed.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }
}

impl Client {
    /// Connects to a gateway at `addr`: TCP, then the TLS handshake and the
    /// token if the config has them.
    ///
    /// # Errors
    /// The connect error; `TimedOut` after the config's timeout (for each step);
    /// the TLS error (`InvalidData` for a certificate the client does not trust);
    /// `PermissionDenied` if the server refuses the token, with the
    /// [`ClientError`] inside.
    pub async fn connect(addr: SocketAddr, config: ClientConfig) -> io::Result<(Self, Events)> {
        let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
        let stream = tokio::time::timeout(config.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        let _ = stream.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = config.tls.clone() {
            let handshake = tls.connector().connect(tls.server_name(), stream);
            let stream = tokio::time::timeout(config.timeout, handshake)
                .await
                .map_err(|_| timed_out("TLS handshake"))??;
            return Self::start(stream, config).await;
        }
        Self::start(stream, config).await
    }

    /// Starts the reader and writer over an established stream, and
    /// authenticates if the config has a token.
    async fn start<S>(stream: S, config: ClientConfig) -> io::Result<(Self, Events)>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let (frames, frames_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer.max(1));
        let waiters: Waiters = Arc::new(Mutex::new(Waiting::Open(HashMap::new())));
        tokio::spawn(write_frames(
            FramedWrite::new(write_half, frame_codec(config.max_frame_length)),
            frames_rx,
        ));
        tokio::spawn(read_frames(
            FramedRead::new(read_half, frame_codec(config.max_frame_length)),
            Arc::clone(&waiters),
            events_tx,
        ));
        let token = config.token.clone();
        let client = Self { frames, waiters, next_id: Arc::new(AtomicU64::new(1)), config: Arc::new(config) };
        if let Some(token) = token {
            client.authenticate(token).await.map_err(|e| {
                let kind = match e.remote_kind() {
                    Some(ErrorKind::Unauthorized) => io::ErrorKind::PermissionDenied,
                    _ => io::ErrorKind::ConnectionAborted,
                };
                io::Error::new(kind, e)
            })?;
        }
        Ok((client, Events { rx: events_rx }))
    }

    /// Presents `token` to the server (done by [`connect`](Self::connect) when
    /// the config has a token). On a server that requires tokens this must be
    /// the first call; a server without tokens accepts any.
    ///
    /// # Errors
    /// [`ClientError::Remote`] with `Unauthorized` for a token the server does
    /// not accept (it then closes the connection), or a connection error.
    pub async fn authenticate(&self, token: Token) -> Result<(), ClientError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Authenticate { request_id, token }.encode();
        match self.exchange(request_id, bytes, self.config.timeout).await? {
            Response::Authenticated => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `command` and waits at most `timeout` for its answer (which may be an
    /// [`Response::Error`]).
    ///
    /// # Errors
    /// `Timeout`, `Disconnected`, or `Io` if the command cannot be encoded or is
    /// longer than a frame may be.
    pub async fn call_timeout(&self, command: Command, timeout: Duration) -> Result<Response, ClientError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode(&ClientFrame { request_id, command });
        self.exchange(request_id, bytes, timeout).await
    }

    /// Sends one encoded frame and waits at most `timeout` for the answer under
    /// `request_id`.
    async fn exchange(
        &self,
        request_id: u64,
        bytes: Result<Vec<u8>, serde_json::Error>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let bytes = bytes.map_err(|e| ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        if bytes.len() > self.config.max_frame_length {
            let message = format!("a {}-byte command exceeds the frame limit", bytes.len());
            return Err(ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, message)));
        }
        let (tx, rx) = oneshot::channel();
        match &mut *Waiting::lock(&self.waiters) {
            Waiting::Open(waiters) => waiters.insert(request_id, tx),
            Waiting::Closed(Some(last_word)) => return Err(unexpected(last_word.clone())),
            Waiting::Closed(None) => return Err(ClientError::Disconnected),
        };
        let outcome = tokio::time::timeout(timeout, async {
            self.frames.send(Bytes::from(bytes)).await.map_err(|_| ClientError::Disconnected)?;
            rx.await.map_err(|_| ClientError::Disconnected)
        })
        .await;
        if let Waiting::Open(waiters) = &mut *Waiting::lock(&self.waiters) {
            waiters.remove(&request_id);
        }
        outcome.unwrap_or(Err(ClientError::Timeout))
    }

    /// Sends `command` and waits for its answer, within the configured timeout.
    ///
    /// # Errors
    /// As [`call_timeout`](Self::call_timeout).
    pub async fn call(&self, command: Command) -> Result<Response, ClientError> {
        self.call_timeout(command, self.config.timeout).await
    }

    /// Sends a one-way message to an actor.
    ///
    /// # Errors
    /// [`ClientError::Remote`] with the router's reason, or a connection error.
    pub async fn send(&self, id: ActorId, data: Vec<u8>) -> Result<(), ClientError> {
        match self.call(Command::SendActorMessage { id, data }).await? {
            Response::SentMessage { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a request to an actor and returns its reply; the server waits at most
    /// `timeout` for the actor.
    ///
    /// # Errors
    /// [`ClientError::Remote`] (`Timeout`, `NoReply`, `ActorNotFound`, ...), or a
    /// connection error.
    pub async fn request(
        &self,
        id: ActorId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let command = Command::RequestActorMessage { id, data, timeout_ms: Some(timeout_ms) };
        match self.call_timeout(command, timeout.saturating_add(self.config.timeout)).await? {
            Response::RequestedMessage { message, .. } => Ok(message),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a channel to an actor; returns its id and the actor's optional answer.
    ///
    /// # Errors
    /// [`ClientError::Remote`] (`Rejected`, `Timeout`, `ActorNotFound`, ...), or a
    /// connection error.
    pub async fn open_channel(
        &self,
        actor_id: ActorId,
        initial_message: Vec<u8>,
    ) -> Result<(ChannelId, Option<Vec<u8>>), ClientError> {
        match self.call(Command::OpenChannel { actor_id, initial_message }).await? {
            Response::ChannelOpened { channel_id, response, .. } => Ok((channel_id, response)),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a message on one of this client's channels.
    ///
    /// # Errors
    /// [`ClientError::Remote`] (`NotParticipant`, `ChannelNotFound`, ...), or a
    /// connection error.
    pub async fn send_on_channel(&self, channel_id: ChannelId, message: Vec<u8>) -> Result<(), ClientError> {
        match self.call(Command::SendOnChannel { channel_id, message }).await? {
            Response::MessageSent { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Closes one of this client's channels.
    ///
    /// # Errors
    /// [`ClientError::Remote`] (`NotParticipant`, `ChannelNotFound`, ...), or a
    /// connection error.
    pub async fn close_channel(&self, channel_id: ChannelId) -> Result<(), ClientError> {
        match self.call(Command::CloseChannel { channel_id }).await? {
            Response::ChannelClosed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the server to update an actor to its next version; returns the
    /// version it runs now.
    ///
    /// # Errors
    /// [`ClientError::Remote`] (`UpdateFailed`, ...), or a connection error.
    pub async fn update_actor(&self, id: ActorId) -> Result<String, ClientError> {
        match self.call(Command::UpdateActor { id }).await? {
            Response::ActorUpdated { version, .. } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the router's counters, per shard ([`Command::Stats`]).
    ///
    /// # Errors
    /// A connection error.
    pub async fn stats(&self) -> Result<StatsReport, ClientError> {
        match self.call(Command::Stats).await? {
            Response::Stats(report) => Ok(report),
            other => Err(unexpected(other)),
        }
    }

    /// Lists the registered actors.
    ///
    /// # Errors
    /// A connection error.
    pub async fn list_actors(&self) -> Result<Vec<ActorInfo>, ClientError> {
        match self.call(Command::ListActors).await? {
            Response::ActorList { actors } => Ok(actors),
            other => Err(unexpected(other)),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("connected", &!self.frames.is_closed()).finish_non_exhaustive()
    }
}

fn unexpected(response: Response) -> ClientError {
    match response {
        Response::Error { kind, message } => ClientError::Remote { kind, message },
        other => ClientError::UnexpectedResponse(Box::new(other)),
    }
}

async fn write_frames<W: AsyncWrite>(
    mut sink: FramedWrite<WriteHalf<W>, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    while let Some(frame) = rx.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if sink.feed(frame).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
    // Every client handle is gone: tell the server we are done.
    let _ = SinkExt::<Bytes>::close(&mut sink).await;
}

async fn read_frames<R: AsyncRead>(
    mut frames: FramedRead<ReadHalf<R>, LengthDelimitedCodec>,
    waiters: Waiters,
    events: mpsc::Sender<Event>,
) {
    while let Some(Ok(bytes)) = frames.next().await {
        match decode_server_frame(&bytes) {
            Ok(ServerFrame::Response { request_id: Some(id), response }) => {
                let waiter = match &mut *Waiting::lock(&waiters) {
                    Waiting::Open(waiting) => waiting.remove(&id),
                    Waiting::Closed(_) => None,
                };
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response);
                }
            }
            Ok(ServerFrame::Response { request_id: None, response }) => {
                // The server's last word before it closes the connection (shutdown,
                // idle timeout, ...): every waiting call gets it, and so does
                // every later one.
                tracing::debug!(?response, "gateway error not tied to a call");
                let waiting = Waiting::lock(&waiters).close(Some(response.clone()));
                for waiter in waiting.into_values() {
                    let _ = waiter.send(response.clone());
                }
            }
            Ok(ServerFrame::Event { event }) => {
                // A full buffer pauses reading, which pushes back on the server.
                if events.send(event).await.is_err() {
                    tracing::trace!("gateway events dropped: nobody listens");
                }
            }
            Err(e) => tracing::warn!(error = %e, "gateway sent a frame this client cannot read"),
        }
    }
    // Connection closed: every waiting call fails (dropping its sender).
    drop(Waiting::lock(&waiters).close(None));
}
