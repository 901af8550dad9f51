//! The gateway's commands, responses and events, and their JSON form.
//!
//! Each frame on the wire is one JSON document (the transport adds the length
//! prefix). A client sends a [`ClientFrame`]; the server sends [`ServerFrame`]s:
//!
//! ```text
//! client -> server   {"request_id": 7, "command": {"SendActorMessage": {"id": "<uuid>", "data": "hi"}}}
//!                    {"request_id": 8, "command": "ListActors"}
//! server -> client   {"request_id": 7, "response": {"SentMessage": {"id": "<uuid>"}}}
//!                    {"event": {"ChannelMessage": {"channel_id": "<32 hex>", "message": "pong"}}}
//! ```
//!
//! * Commands, responses and events are tagged by their name (serde's externally
//!   tagged form); a command without fields may be written as its bare name.
//! * Actor ids are UUID strings; channel ids are 32 hex digits.
//! * **Payloads** (`data`, `message`, `initial_message`, `response`) are a JSON
//!   string, standing for its UTF-8 bytes, or an array of byte values (0–255). Both
//!   are accepted on input; the server writes a string when the bytes are valid
//!   UTF-8 and an array otherwise, so every payload round-trips exactly.
//! * `request_id` is chosen by the client and echoed in the response. An error about
//!   a frame whose `request_id` could not be read carries `"request_id": null`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::serde_forms::{id_text, payload, payload_opt};
use super::stats::StatsReport;
use crate::error::{ChannelError, RequestError, SendErrorKind};
use crate::ids::{ActorId, ChannelId};

/// What a client asks the gateway to do. The names are those of Theater's
/// management protocol. (Presenting a token is not a command: see
/// [`Authenticate`].)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Sends a one-way message to an actor. Answered by [`Response::SentMessage`].
    SendActorMessage {
        /// The target actor.
        #[serde(with = "id_text")]
        id: ActorId,
        /// The payload.
        #[serde(with = "payload")]
        data: Vec<u8>,
    },
    /// Sends a request to an actor and waits for its reply. Answered by
    /// [`Response::RequestedMessage`] or an error (`Timeout`, `NoReply`, ...).
    RequestActorMessage {
        /// The target actor.
        #[serde(with = "id_text")]
        id: ActorId,
        /// The payload.
        #[serde(with = "payload")]
        data: Vec<u8>,
        /// How long to wait for the reply; the session's default when absent, and
        /// never longer than its maximum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Opens a channel from this client to an actor, which accepts or rejects it.
    /// Answered by [`Response::ChannelOpened`] or an error (`Rejected`, `Timeout`, ...).
    OpenChannel {
        /// The actor at the other end.
        #[serde(with = "id_text")]
        actor_id: ActorId,
        /// The first message, handed to the actor with the open.
        #[serde(default, with = "payload")]
        initial_message: Vec<u8>,
    },
    /// Sends a message on one of this client's open channels. Answered by
    /// [`Response::MessageSent`].
    SendOnChannel {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
        /// The payload.
        #[serde(with = "payload")]
        message: Vec<u8>,
    },
    /// Closes one of this client's channels; the actor receives `ChannelClose`.
    /// Answered by [`Response::ChannelClosed`].
    CloseChannel {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
    },
    /// Lists the registered actors. Answered by [`Response::ActorList`].
    ListActors,
    /// Replaces the instance behind an actor with the server's next version of
    /// it (suspend, swap the mailbox, resume: no message lost). Answered by
    /// [`Response::ActorUpdated`], or `UpdateFailed` when the server has no new
    /// version of that actor.
    UpdateActor {
        /// The actor.
        #[serde(with = "id_text")]
        id: ActorId,
    },
    /// Reads the router's counters. Answered by [`Response::Stats`].
    Stats,
}

impl Command {
    /// The command's name on the wire.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::SendActorMessage { .. } => "SendActorMessage",
            Self::RequestActorMessage { .. } => "RequestActorMessage",
            Self::OpenChannel { .. } => "OpenChannel",
            Self::SendOnChannel { .. } => "SendOnChannel",
            Self::CloseChannel { .. } => "CloseChannel",
            Self::ListActors => "ListActors",
            Self::UpdateActor { .. } => "UpdateActor",
            Self::Stats => "Stats",
        }
    }
}

/// The names of every command, as they appear on the wire.
pub const COMMAND_NAMES: [&str; 8] = [
    "SendActorMessage",
    "RequestActorMessage",
    "OpenChannel",
    "SendOnChannel",
    "CloseChannel",
    "ListActors",
    "UpdateActor",
    "Stats",
];

/// The frame that presents a token, the first frame on a server that requires
/// one:
///
/// ```text
/// {"request_id": 0, "command": {"Authenticate": {"token": "<secret>"}}}
/// ```
///
/// It is answered by [`Response::Authenticated`], or by an `Unauthorized` error
/// after which the server closes the connection; a server that requires no token
/// accepts any. It has a command's shape but is not a [`Command`]: admitting a
/// client is the transport's business, done before (and outside) its
/// [`Session`](super::Session), which never sees a token.
///
/// ```
/// use sharded_router::gateway::protocol::{Authenticate, Token};
/// let frame = Authenticate { request_id: 1, token: Token::new("s3cret") };
/// let bytes = frame.encode().unwrap();
/// assert_eq!(Authenticate::decode(&bytes).unwrap(), Some(frame));
/// assert_eq!(Authenticate::decode(br#"{"request_id":2,"command":"ListActors"}"#).unwrap(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// Chosen by the client; echoed in the answer.
    pub request_id: u64,
    /// The secret.
    pub token: Token,
}

/// `Authenticate`'s wire shape.
#[derive(Serialize, Deserialize)]
enum AuthenticateCommand {
    Authenticate { token: Token },
}

impl Authenticate {
    /// The frame's JSON.
    ///
    /// # Errors
    /// Only if serialization fails, which it does not for this type.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct Frame<'a> {
            request_id: u64,
            command: &'a AuthenticateCommand,
        }
        let command = AuthenticateCommand::Authenticate { token: self.token.clone() };
        serde_json::to_vec(&Frame { request_id: self.request_id, command: &command })
    }

    /// Reads an `Authenticate` frame: `Ok(None)` when the bytes are not one (any
    /// other frame, good or bad), an error when they are one with bad fields.
    /// Never panics, whatever the input.
    ///
    /// # Errors
    /// `MalformedFrame` without a readable `request_id`; `BadArguments` when the
    /// token is missing or not a string.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, FrameError> {
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
            return Ok(None);
        };
        let is_authenticate = matches!(
            object.get("command"),
            Some(Value::Object(map)) if map.len() == 1 && map.contains_key("Authenticate")
        );
        if !is_authenticate {
            return Ok(None);
        }
        let request_id = request_id_of(&object)?;
        let command = object.remove("command").unwrap_or(Value::Null);
        match serde_json::from_value::<AuthenticateCommand>(command) {
            Ok(AuthenticateCommand::Authenticate { token }) => Ok(Some(Self { request_id, token })),
            Err(e) => Err(FrameError::new(
                Some(request_id),
                ErrorKind::BadArguments,
                format!("bad arguments to Authenticate: {e}"),
            )),
        }
    }
}

/// A client's secret, as sent in [`Authenticate`].
///
/// Its `Debug` form is `Token(<redacted>)`, so logging a command never shows it.
///
/// ```
/// use sharded_router::gateway::protocol::Token;
/// let token = Token::new("s3cret");
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// assert_eq!(token.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One registered actor, as listed by [`Response::ActorList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// The actor's id.
    #[serde(with = "id_text")]
    pub id: ActorId,
    /// Its name, when the gateway was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The cluster node it lives on, when the gateway lists a cluster's actors
    /// (absent from the JSON otherwise, so older clients and servers read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The answer to one [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The one-way message was accepted for delivery.
    SentMessage {
        /// The target actor.
        #[serde(with = "id_text")]
        id: ActorId,
    },
    /// The actor's reply to a request.
    RequestedMessage {
        /// The actor that replied.
        #[serde(with = "id_text")]
        id: ActorId,
        /// The reply.
        #[serde(with = "payload")]
        message: Vec<u8>,
    },
    /// The actor accepted the channel.
    ChannelOpened {
        /// The new channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
        /// The actor at the other end.
        #[serde(with = "id_text")]
        actor_id: ActorId,
        /// What the actor sent back with its acceptance, if anything.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "payload_opt")]
        response: Option<Vec<u8>>,
    },
    /// The channel message was accepted for delivery.
    MessageSent {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
    },
    /// The channel is closed; the actor has been told.
    ChannelClosed {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
    },
    /// The registered actors.
    ActorList {
        /// One entry per actor.
        actors: Vec<ActorInfo>,
    },
    /// The actor now runs its new version.
    ActorUpdated {
        /// The actor.
        #[serde(with = "id_text")]
        id: ActorId,
        /// The version it runs now, as the server names it.
        version: String,
    },
    /// The token was accepted; the connection may send commands.
    Authenticated,
    /// The command failed, or a frame could not be understood.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
    /// The router's counters, per shard.
    Stats(StatsReport),
}

impl Response {
    /// An error response.
    #[must_use]
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error { kind, message: message.into() }
    }
}

/// Something the server pushes without being asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// The actor sent a message on one of this client's channels.
    ChannelMessage {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
        /// The payload.
        #[serde(with = "payload")]
        message: Vec<u8>,
    },
    /// The actor closed one of this client's channels (or went away).
    ChannelClosed {
        /// The channel.
        #[serde(with = "id_text")]
        channel_id: ChannelId,
    },
}

/// Why a command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The frame is not a JSON object of the expected shape, or lacks a valid
    /// `request_id`.
    MalformedFrame,
    /// The command's name is not one of [`COMMAND_NAMES`].
    UnknownCommand,
    /// A field is missing or has the wrong type.
    BadArguments,
    /// An actor or channel id does not parse.
    BadId,
    /// A frame was longer than the server accepts; the connection is closed.
    FrameTooLarge,
    /// The answer would be longer than a frame may be; it was dropped.
    ResponseTooLarge,
    /// No actor is registered under the id (or it went away).
    ActorNotFound,
    /// The target's mailbox and overflow queue are full.
    MailboxFull,
    /// The target's mailbox was dropped.
    MailboxClosed,
    /// No answer arrived in time.
    Timeout,
    /// The actor dropped the request without replying.
    NoReply,
    /// The actor rejected the channel.
    Rejected,
    /// No open channel has this id.
    ChannelNotFound,
    /// The channel has not been accepted yet.
    ChannelNotOpen,
    /// This client is not a participant of the channel.
    NotParticipant,
    /// The router has shut down.
    Shutdown,
    /// The target's shard holds as many parked messages as it may.
    ShardFull,
    /// The target's shard failed.
    ShardFailed,
    /// Something else went wrong on the server.
    Internal,
    /// The server could not update the actor (it has no new version of it, or
    /// the swap failed; the actor runs on as before).
    UpdateFailed,
    /// The connection did not open with an `Authenticate` frame carrying a valid
    /// token; it is closed.
    Unauthorized,
    /// The server, or this client's address, has as many connections as it
    /// serves; this one is closed.
    TooManyConnections,
    /// This client already has as many requests and channel opens waiting as it
    /// may; the command was not run.
    TooManyInFlight,
    /// This client already has as many channels open (or opening) as it may; the
    /// channel was not opened.
    TooManyChannels,
    /// This client sends commands faster than its rate limit; the command was not
    /// run.
    RateLimited,
    /// The client sent nothing for the idle timeout; the connection is closed.
    IdleTimeout,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<SendErrorKind> for ErrorKind {
    fn from(kind: SendErrorKind) -> Self {
        match kind {
            SendErrorKind::ActorNotFound => Self::ActorNotFound,
            SendErrorKind::MailboxFull => Self::MailboxFull,
            SendErrorKind::MailboxClosed => Self::MailboxClosed,
            SendErrorKind::Shutdown => Self::Shutdown,
            SendErrorKind::ChannelNotFound => Self::ChannelNotFound,
            SendErrorKind::ChannelNotOpen => Self::ChannelNotOpen,
            SendErrorKind::NotParticipant => Self::NotParticipant,
            SendErrorKind::ShardFull => Self::ShardFull,
            SendErrorKind::ShardFailed => Self::ShardFailed,
            SendErrorKind::ChannelOnly => Self::BadArguments,
            SendErrorKind::Timeout => Self::Timeout,
        }
    }
}

impl From<RequestError> for ErrorKind {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::ActorNotFound => Self::ActorNotFound,
            RequestError::MailboxFull => Self::MailboxFull,
            RequestError::MailboxClosed => Self::MailboxClosed,
            RequestError::Timeout => Self::Timeout,
            RequestError::NoReply => Self::NoReply,
            RequestError::Shutdown => Self::Shutdown,
            RequestError::ShardFull => Self::ShardFull,
            RequestError::ShardFailed => Self::ShardFailed,
        }
    }
}

impl From<ChannelError> for ErrorKind {
    fn from(error: ChannelError) -> Self {
        match error {
            ChannelError::ParticipantNotFound(_) => Self::ActorNotFound,
            ChannelError::Rejected => Self::Rejected,
            ChannelError::Timeout => Self::Timeout,
            ChannelError::ChannelNotFound => Self::ChannelNotFound,
            ChannelError::NotOpen => Self::ChannelNotOpen,
            ChannelError::NotParticipant => Self::NotParticipant,
            ChannelError::SameParticipant => Self::BadArguments,
            ChannelError::MailboxFull => Self::MailboxFull,
            ChannelError::MailboxClosed => Self::MailboxClosed,
            ChannelError::Shutdown => Self::Shutdown,
            ChannelError::ShardFull => Self::ShardFull,
            ChannelError::ShardFailed => Self::ShardFailed,
        }
    }
}

/// A command with its correlation id: what a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the response.
    pub request_id: u64,
    /// What to do.
    pub command: Command,
}

/// What the server sends: a response to one command, or an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    /// The answer to the command with this `request_id` (`None` when the frame it
    /// answers had no readable id).
    Response {
        /// The command's correlation id.
        request_id: Option<u64>,
        /// The answer.
        response: Response,
    },
    /// Something that happened on one of the client's channels.
    Event {
        /// What happened.
        event: Event,
    },
}

/// A frame the gateway could not turn into a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// The frame's `request_id`, when it could be read.
    pub request_id: Option<u64>,
    /// What was wrong.
    pub kind: ErrorKind,
    /// A description for people.
    pub message: String,
}

impl FrameError {
    fn new(request_id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { request_id, kind, message: message.into() }
    }

    /// The error frame that answers the bad frame.
    #[must_use]
    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::Response {
            request_id: self.request_id,
            response: Response::error(self.kind, self.message),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for FrameError {}

/// Decodes a client frame, telling apart malformed JSON, an unknown command, a bad
/// id and bad arguments. Never panics, whatever the input.
///
/// ```
/// use sharded_router::gateway::{decode_client_frame, Command, ErrorKind};
/// let frame = decode_client_frame(br#"{"request_id": 1, "command": "ListActors"}"#).unwrap();
/// assert_eq!((frame.request_id, frame.command), (1, Command::ListActors));
///
/// let err = decode_client_frame(br#"{"request_id": 2, "command": "Reboot"}"#).unwrap_err();
/// assert_eq!((err.request_id, err.kind), (Some(2), ErrorKind::UnknownCommand));
/// let err = decode_client_frame(b"{not json").unwrap_err();
/// assert_eq!((err.request_id, err.kind), (None, ErrorKind::MalformedFrame));
/// ```
///
/// # Errors
/// A [`FrameError`] saying what is wrong with the frame.
pub fn decode_client_frame(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| FrameError::new(None, ErrorKind::MalformedFrame, format!("malformed JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(FrameError::new(None, ErrorKind::MalformedFrame, "a frame must be a JSON object"));
    };
    let request_id = request_id_of(&object)?;
    let id = Some(request_id);
    let command = object
        .remove("command")
        .ok_or_else(|| FrameError::new(id, ErrorKind::MalformedFrame, "a frame needs a \"command\""))?;
    let (name, fields) = match &command {
        Value::String(name) => (name.as_str(), None),
        Value::Object(map) if map.len() == 1 => match map.iter().next() {
            Some((name, fields)) => (name.as_str(), Some(fields)),
            None => ("", None),
        },
        _ => {
            return Err(FrameError::new(
                id,
                ErrorKind::MalformedFrame,
                "\"command\" must be a command name or an object with one key, the command's name",
            ))
        }
    };
    if !COMMAND_NAMES.contains(&name) {
        let shown: String = name.chars().take(64).collect();
        return Err(FrameError::new(
            id,
            ErrorKind::UnknownCommand,
            format!("unknown command {shown:?}; known commands: {}", COMMAND_NAMES.join(", ")),
        ));
    }
    if let Some(Value::Object(fields)) = fields {
        check_ids(fields).map_err(|message| FrameError::new(id, ErrorKind::BadId, message))?;
    }
    let name = name.to_owned();
    let command = serde_json::from_value::<Command>(command)
        .map_err(|e| FrameError::new(id, ErrorKind::BadArguments, format!("bad arguments to {name}: {e}")))?;
    Ok(ClientFrame { request_id, command })
}

/// Checks the id fields a command may carry, so a bad id is reported as such.
fn check_ids(fields: &serde_json::Map<String, Value>) -> Result<(), String> {
    for key in ["id", "actor_id"] {
        if let Some(Value::String(text)) = fields.get(key) {
            text.parse::<ActorId>().map_err(|e| format!("\"{key}\": {e}"))?;
        }
    }
    if let Some(Value::String(text)) = fields.get("channel_id") {
        text.parse::<ChannelId>().map_err(|e| format!("\"channel_id\": {e}"))?;
    }
    Ok(())
}

/// A frame's `request_id`: an unsigned integer, or the frame is malformed.
fn request_id_of(object: &serde_json::Map<String, Value>) -> Result<u64, FrameError> {
    object.get("request_id").and_then(Value::as_u64).ok_or_else(|| {
        FrameError::new(
            None,
            ErrorKind::MalformedFrame,
            "a frame needs a \"request_id\" that is an unsigned integer",
        )
    })
}

/// Encodes a frame as JSON.
///
/// # Errors
/// Only if serialization fails, which the gateway's own types do not do.
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(frame)
}

/// Decodes a server frame (for clients).
///
/// # Errors
/// The JSON error when the bytes are not a server frame.
pub fn decode_server_frame(bytes: &[u8]) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_slice(bytes)
}
