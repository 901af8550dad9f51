//! The `wire_frames` check: raw bytes through the gateway's framing, parsing and
//! a live session.
//!
//! The input is the byte stream a client would send. It is split into frames by
//! the server's own codec ([`frame_codec`] with a [`MAX_FRAME`]-byte limit, so the
//! oversize path is reached), read [`CHUNK`] bytes at a time as a socket read
//! would deliver them, and compared with a plain re-implementation of the
//! framing: the same frames, then a clean end, the codec's `InvalidData` error for
//! an oversize length, or its end-of-stream error for a truncated frame (a stream
//! that ends right after a length prefix, with none of the frame's bytes, ends
//! cleanly for the codec: it has already taken the prefix off its buffer). The
//! decoder's buffer never holds more than one frame, its header and one chunk.
//!
//! Each frame goes to [`Session::execute_frame`], the function the server runs on
//! every frame it reads, over a real [`Router`] (one shard) with two actors at
//! fixed ids that the harness drives inline after every frame: [`ECHO`] answers
//! requests with their payload, accepts channels (answering with the initial
//! message), echoes channel messages and closes a channel when it receives
//! `close` on it; [`REFUSER`] drops requests and rejects channels. [`ABSENT`] is
//! never registered. The checks:
//!
//! * a frame that does not decode is answered at once with `Error { kind, .. }`
//!   of a frame-level kind, carrying its `request_id` exactly when the frame is a
//!   JSON object whose `request_id` is an unsigned integer;
//! * a frame that decodes re-encodes to a frame that decodes to the same command,
//!   and gets exactly one response with its `request_id` (requests and opens are
//!   waited for, bounded);
//! * each response is the one a model of the two actors and the client's
//!   channels predicts (content, ids, error kinds), every message an actor
//!   receives is the one the model expects, in order, and so is every event the
//!   session yields;
//! * when the session is dropped its channels close, each open one with a
//!   `ChannelClose` to the echo actor (in any order), and the router holds no
//!   channel.
//!
//! Channel ids are random, so a fuzzer cannot guess them: a decoded command whose
//! channel id is below 2^16 is rewritten (re-encoded, then handed to
//! `execute_frame` as bytes) to name one of the channels this session opened, the
//! number taken modulo how many there are.
//!
//! This file is shared by the `wire_frames` fuzz target and the stable corpus
//! replay test at the repository root (`tests/fuzz_corpus.rs`), so it depends on
//! nothing but `std`, the crate and the crate's own `bytes`, `tokio-util` and
//! `serde_json`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Value;
use sharded_router::gateway::protocol::encode;
use sharded_router::gateway::{
    decode_client_frame, frame_codec, ActorInfo, ClientFrame, Command, ErrorKind, Event, FrameReply, Pending,
    Response, ServerFrame, Session, SessionConfig,
};
use sharded_router::{ActorId, ActorMessage, ChannelId, Mailbox, Router};
use tokio_util::codec::Decoder;

/// The largest frame the target's codec accepts.
pub const MAX_FRAME: usize = 4096;
/// The length prefix.
pub const HEADER: usize = 4;
/// Bytes handed to the decoder per read.
pub const CHUNK: usize = 1000;
/// Frames past this many are not executed, which keeps one execution short.
pub const MAX_FRAMES: usize = 64;
/// The echo actor's id.
pub const ECHO: &str = "00000000-0000-4000-8000-0000000000e1";
/// The refusing actor's id.
pub const REFUSER: &str = "00000000-0000-4000-8000-0000000000e2";
/// An id no actor is registered under.
pub const ABSENT: &str = "00000000-0000-4000-8000-0000000000e3";
/// The payload on which the echo actor closes the channel instead of echoing.
pub const CLOSE: &[u8] = b"close";

/// The sessions' request timeout (and its maximum) and channel-open timeout.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// The longest the harness waits for a request or open to be answered.
const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// Channel ids below this name one of the session's channels.
const CHANNEL_SLOTS: u128 = 1 << 16;

/// How a byte stream ends, by the plain framing model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Right after a whole frame (or empty).
    Clean,
    /// A length prefix announces more than [`MAX_FRAME`] bytes.
    Oversize(u64),
    /// A length prefix or a frame is cut short; this many bytes of it arrived.
    Truncated(usize),
}

/// Splits `data` into frames as the wire format defines them, independently of
/// the codec.
#[must_use]
pub fn split(mut data: &[u8]) -> (Vec<&[u8]>, Tail) {
    let mut frames = Vec::new();
    loop {
        if data.is_empty() {
            return (frames, Tail::Clean);
        }
        if data.len() < HEADER {
            return (frames, Tail::Truncated(data.len()));
        }
        let (head, rest) = data.split_at(HEADER);
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if len as usize > MAX_FRAME {
            return (frames, Tail::Oversize(u64::from(len)));
        }
        if rest.len() < len as usize {
            return (frames, Tail::Truncated(data.len()));
        }
        let (frame, rest) = rest.split_at(len as usize);
        frames.push(frame);
        data = rest;
    }
}

/// One length-prefixed frame, for writing inputs.
#[must_use]
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(json.len()).expect("a frame fits a u32").to_be_bytes().to_vec();
    out.extend_from_slice(json);
    out
}

/// Runs one input; panics on the first broken invariant.
pub fn run(data: &[u8]) {
    let (model_frames, tail) = split(data);
    let mut harness = Harness::new();
    let mut codec = frame_codec(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut index = 0;
    let bound = HEADER + MAX_FRAME + CHUNK;
    loop {
        let decoded = codec.decode(&mut buf);
        assert!(
            buf.len() <= bound && buf.capacity() <= 2 * bound,
            "the decoder buffers {} bytes (capacity {}), more than a frame, its header and a read",
            buf.len(),
            buf.capacity()
        );
        match decoded {
            Ok(Some(bytes)) => {
                let want =
                    model_frames.get(index).unwrap_or_else(|| panic!("frame {index}: the model has none"));
                assert_eq!(&bytes[..], *want, "frame {index}: the codec and the model disagree");
                if index < MAX_FRAMES {
                    harness.frame(index, &bytes);
                }
                index += 1;
            }
            Ok(None) if rest.is_empty() => {
                let end = codec.decode_eof(&mut buf);
                match (tail, end) {
                    // The codec takes a length prefix off the buffer as soon as
                    // it is whole, so a stream that ends right after one ends
                    // cleanly for it: no frame, no error (the peer is simply gone).
                    (Tail::Clean, Ok(None)) | (Tail::Truncated(HEADER), Ok(None)) => {}
                    (Tail::Truncated(_), Err(e)) => {
                        assert_ne!(e.kind(), io::ErrorKind::InvalidData, "a truncated frame is not oversize");
                    }
                    (tail, end) => panic!("end of stream: model {tail:?}, codec {end:?}"),
                }
                break;
            }
            Ok(None) => {
                let (chunk, more) = rest.split_at(rest.len().min(CHUNK));
                buf.extend_from_slice(chunk);
                rest = more;
            }
            Err(e) => {
                assert!(matches!(tail, Tail::Oversize(_)), "codec error {e} where the model has {tail:?}");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "an oversize frame: {e}");
                break;
            }
        }
    }
    assert_eq!(index, model_frames.len(), "frames decoded: codec {index}, model {}", model_frames.len());
    harness.finish();
}

// ---------------------------------------------------------------------------------

/// A message the model expects in an actor's mailbox.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Send(Vec<u8>),
    Request(Vec<u8>),
    /// A channel open with its initial message; the id is learnt from it.
    Open(Vec<u8>),
    ChannelMessage(ChannelId, Vec<u8>),
    Close(ChannelId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Echo,
    Refuser,
    Absent,
    Other,
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

struct Harness {
    router: Router,
    session: Option<Session>,
    echo: ActorId,
    refuser: ActorId,
    absent: ActorId,
    mailboxes: [Mailbox; 2],
    expect: [VecDeque<Expect>; 2],
    /// Ids of the channels the echo actor accepted, in order.
    accepted: Vec<ChannelId>,
    /// The session's channels, in the order they opened, and whether still open.
    channels: Vec<(ChannelId, bool)>,
    events: VecDeque<Event>,
    waker: Waker,
}

impl Harness {
    fn new() -> Self {
        let router = Router::builder()
            .shards(1)
            .mailbox_capacity(64)
            .thread_name("fuzz-wire")
            .build()
            .expect("router builds");
        let echo: ActorId = ECHO.parse().expect("echo id");
        let refuser: ActorId = REFUSER.parse().expect("refuser id");
        let absent: ActorId = ABSENT.parse().expect("absent id");
        let mut mailboxes = Vec::new();
        for id in [echo, refuser] {
            let (tx, rx) = router.mailbox();
            router.register(id, tx).expect("actor registers");
            mailboxes.push(rx);
        }
        let [echo_rx, refuser_rx]: [Mailbox; 2] = mailboxes.try_into().expect("two mailboxes");
        let config = SessionConfig::default()
            .request_timeout(TIMEOUT)
            .max_request_timeout(TIMEOUT)
            .open_timeout(TIMEOUT)
            .names(move |id| {
                if id == echo {
                    Some("echo".to_owned())
                } else if id == refuser {
                    Some("refuser".to_owned())
                } else {
                    None
                }
            });
        let session = Session::attach(&router, config).expect("session attaches");
        Self {
            router,
            session: Some(session),
            echo,
            refuser,
            absent,
            mailboxes: [echo_rx, refuser_rx],
            expect: [VecDeque::new(), VecDeque::new()],
            accepted: Vec::new(),
            channels: Vec::new(),
            events: VecDeque::new(),
            waker: Waker::from(Arc::new(NoopWake)),
        }
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("the session lives until finish")
    }

    fn who(&self, id: ActorId) -> Who {
        if id == self.echo {
            Who::Echo
        } else if id == self.refuser {
            Who::Refuser
        } else if id == self.absent {
            Who::Absent
        } else {
            Who::Other
        }
    }

    /// Gives a small channel id the id of one of the session's channels.
    fn resolve_channel(&self, id: ChannelId) -> ChannelId {
        if id.as_u128() < CHANNEL_SLOTS && !self.channels.is_empty() {
            let slot = (id.as_u128() % self.channels.len() as u128) as usize;
            self.channels[slot].0
        } else {
            id
        }
    }

    /// One frame through `execute_frame`, its answer checked against the model.
    fn frame(&mut self, index: usize, bytes: &[u8]) {
        // The correlation id as the wire format defines it, read independently.
        let readable_id = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("request_id").and_then(Value::as_u64));
        let (rewritten, command) = match decode_client_frame(bytes) {
            Ok(frame) => {
                let again = encode(&frame).expect("a frame encodes");
                assert_eq!(
                    decode_client_frame(&again).as_ref(),
                    Ok(&frame),
                    "frame {index}: re-encoded as {}",
                    String::from_utf8_lossy(&again)
                );
                let rewritten = self.rewrite(frame.clone());
                let bytes = (rewritten != frame).then(|| encode(&rewritten).expect("a frame encodes"));
                self.predict(&rewritten.command);
                (bytes, Some(rewritten.command))
            }
            Err(_) => (None, None),
        };
        let reply = self.session().execute_frame(rewritten.as_deref().unwrap_or(bytes));
        let (request_id, response) = match reply {
            FrameReply::Ready(ServerFrame::Response { request_id, response }) => (request_id, response),
            FrameReply::Ready(other) => panic!("frame {index}: answered with {other:?}"),
            FrameReply::InFlight { request_id, pending } => (Some(request_id), self.wait(index, pending)),
        };
        assert_eq!(request_id, readable_id, "frame {index}: the request_id of {response:?}");
        match command {
            None => {
                let Response::Error { kind, .. } = &response else {
                    panic!("frame {index}: a bad frame got {response:?}")
                };
                assert!(
                    matches!(
                        kind,
                        ErrorKind::MalformedFrame
                            | ErrorKind::UnknownCommand
                            | ErrorKind::BadId
                            | ErrorKind::BadArguments
                    ),
                    "frame {index}: a bad frame got {kind:?}"
                );
            }
            Some(command) => self.check(index, command, response),
        }
        self.drain(index);
        self.check_quiet(index);
    }

    /// What the actors will receive when `command` runs.
    fn predict(&mut self, command: &Command) {
        let slot = |who| match who {
            Who::Echo => Some(0),
            Who::Refuser => Some(1),
            Who::Absent | Who::Other => None,
        };
        match command {
            Command::SendActorMessage { id, data } => {
                if let Some(a) = slot(self.who(*id)) {
                    self.expect[a].push_back(Expect::Send(data.clone()));
                }
            }
            Command::RequestActorMessage { id, data, .. } => {
                if let Some(a) = slot(self.who(*id)) {
                    self.expect[a].push_back(Expect::Request(data.clone()));
                }
            }
            Command::OpenChannel { actor_id, initial_message } => {
                if let Some(a) = slot(self.who(*actor_id)) {
                    self.expect[a].push_back(Expect::Open(initial_message.clone()));
                }
            }
            Command::SendOnChannel { channel_id, message } if self.is_open(*channel_id) => {
                self.expect[0].push_back(Expect::ChannelMessage(*channel_id, message.clone()));
            }
            Command::CloseChannel { channel_id } if self.is_open(*channel_id) => {
                self.expect[0].push_back(Expect::Close(*channel_id));
            }
            _ => {}
        }
    }

    /// Points small channel ids at the session's channels.
    fn rewrite(&self, mut frame: ClientFrame) -> ClientFrame {
        match &mut frame.command {
            Command::SendOnChannel { channel_id, .. } | Command::CloseChannel { channel_id } => {
                *channel_id = self.resolve_channel(*channel_id);
            }
            _ => {}
        }
        frame
    }

    /// Polls a request or open to its answer, driving the actors meanwhile.
    fn wait(&mut self, index: usize, mut pending: Pending) -> Response {
        let start = Instant::now();
        loop {
            self.drain(index);
            let mut cx = Context::from_waker(&self.waker);
            if let Poll::Ready(response) = Pin::new(&mut pending).poll(&mut cx) {
                return response;
            }
            assert!(start.elapsed() < ANSWER_WAIT, "frame {index}: no answer within {ANSWER_WAIT:?}");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Lets both actors act on everything in their mailboxes, checking each
    /// message against the model, and collects the session's events.
    fn drain(&mut self, index: usize) {
        loop {
            let mut any = false;
            for a in 0..2 {
                while let Ok(msg) = self.mailboxes[a].try_recv() {
                    any = true;
                    self.act(index, a, msg);
                }
            }
            while let Some(event) = self.session().try_next_event() {
                any = true;
                let want = self.events.pop_front();
                assert_eq!(want.as_ref(), Some(&event), "frame {index}: session event");
            }
            if !any {
                return;
            }
        }
    }

    fn act(&mut self, index: usize, a: usize, msg: ActorMessage) {
        let name = ["echo", "refuser"][a];
        let want = self.expect[a].pop_front();
        let me = [self.echo, self.refuser][a];
        match (msg, want) {
            (ActorMessage::Send { data }, Some(Expect::Send(want))) => assert_eq!(data, want),
            (ActorMessage::Request { data, reply }, Some(Expect::Request(want))) => {
                assert_eq!(data, want, "frame {index}: {name}'s request");
                if a == 0 {
                    // Refused only when the request already timed out.
                    let _ = reply.reply(data);
                } else {
                    drop(reply);
                }
            }
            (ActorMessage::ChannelOpen { channel_id, initial_msg, reply, .. }, Some(Expect::Open(want))) => {
                assert_eq!(initial_msg, want, "frame {index}: {name}'s channel open");
                if a == 0 {
                    let response = (!initial_msg.is_empty()).then_some(initial_msg);
                    if reply.accept(response).is_ok() {
                        self.accepted.push(channel_id);
                    }
                } else {
                    reply.reject();
                }
            }
            (
                ActorMessage::ChannelMessage { channel_id, data, .. },
                Some(Expect::ChannelMessage(id, want)),
            ) => {
                assert_eq!((channel_id, &data), (id, &want), "frame {index}: {name}'s channel message");
                assert_eq!(a, 0, "only the echo actor has channels");
                if data == CLOSE {
                    self.router.close_channel(channel_id, me).expect("the echo actor closes its channel");
                    self.mark_closed(channel_id);
                    self.events.push_back(Event::ChannelClosed { channel_id });
                } else {
                    self.router.channel_send(channel_id, me, data.clone()).expect("the echo actor echoes");
                    self.events.push_back(Event::ChannelMessage { channel_id, message: data });
                }
            }
            (ActorMessage::ChannelClose { channel_id, .. }, Some(Expect::Close(id))) => {
                assert_eq!(channel_id, id, "frame {index}: {name}'s channel close");
            }
            (msg, want) => panic!("frame {index}: {name} received {msg:?}, the model expects {want:?}"),
        }
    }

    fn mark_closed(&mut self, id: ChannelId) {
        if let Some(ch) = self.channels.iter_mut().find(|(c, _)| *c == id) {
            ch.1 = false;
        }
    }

    fn is_open(&self, id: ChannelId) -> bool {
        self.channels.iter().any(|&(c, open)| c == id && open)
    }

    /// After a frame: nothing more expected anywhere.
    fn check_quiet(&self, index: usize) {
        for (a, name) in ["echo", "refuser"].iter().enumerate() {
            assert!(self.expect[a].is_empty(), "frame {index}: {name} never received {:?}", self.expect[a]);
        }
        assert!(self.events.is_empty(), "frame {index}: the session never yielded {:?}", self.events);
    }

    /// Checks a command's response against the model and records what follows.
    #[allow(clippy::too_many_lines)]
    fn check(&mut self, index: usize, command: Command, response: Response) {
        let err = |response: &Response| match response {
            Response::Error { kind, .. } => Some(*kind),
            _ => None,
        };
        let ctx = format!("frame {index}: {command:?} -> {response:?}");
        match command {
            Command::SendActorMessage { id, .. } => match self.who(id) {
                Who::Echo | Who::Refuser => assert_eq!(response, Response::SentMessage { id }, "{ctx}"),
                Who::Absent | Who::Other => {
                    assert_eq!(err(&response), Some(ErrorKind::ActorNotFound), "{ctx}")
                }
            },
            Command::RequestActorMessage { id, data, timeout_ms } => {
                let short = timeout_ms.is_some_and(|t| u128::from(t) < TIMEOUT.as_millis());
                match (self.who(id), &response) {
                    (Who::Echo, Response::RequestedMessage { id: from, message }) => {
                        assert_eq!((*from, message), (id, &data), "{ctx}");
                    }
                    (Who::Echo | Who::Refuser, Response::Error { kind: ErrorKind::Timeout, .. }) if short => {
                    }
                    (Who::Refuser, Response::Error { kind: ErrorKind::NoReply, .. }) => {}
                    (Who::Absent | Who::Other, Response::Error { kind: ErrorKind::ActorNotFound, .. }) => {}
                    _ => panic!("{ctx}"),
                }
            }
            Command::OpenChannel { actor_id, initial_message } => match (self.who(actor_id), &response) {
                (Who::Echo, Response::ChannelOpened { channel_id, actor_id: to, response: answer }) => {
                    assert_eq!(*to, actor_id, "{ctx}");
                    assert_eq!(
                        self.accepted.last(),
                        Some(channel_id),
                        "{ctx}: not the channel the actor accepted"
                    );
                    let want = (!initial_message.is_empty()).then_some(initial_message);
                    assert_eq!(answer, &want, "{ctx}");
                    assert!(self.channels.iter().all(|(c, _)| c != channel_id), "{ctx}: a reused channel id");
                    self.channels.push((*channel_id, true));
                }
                (Who::Refuser, Response::Error { kind: ErrorKind::Rejected, .. }) => {}
                (Who::Absent | Who::Other, Response::Error { kind: ErrorKind::ActorNotFound, .. }) => {}
                _ => panic!("{ctx}"),
            },
            Command::SendOnChannel { channel_id, .. } => {
                if self.is_open(channel_id) {
                    assert_eq!(response, Response::MessageSent { channel_id }, "{ctx}");
                } else {
                    assert_eq!(err(&response), Some(ErrorKind::ChannelNotFound), "{ctx}");
                }
            }
            Command::CloseChannel { channel_id } => {
                if self.is_open(channel_id) {
                    assert_eq!(response, Response::ChannelClosed { channel_id }, "{ctx}");
                    self.mark_closed(channel_id);
                } else {
                    assert_eq!(err(&response), Some(ErrorKind::ChannelNotFound), "{ctx}");
                }
            }
            Command::ListActors => {
                let actors = vec![
                    ActorInfo { id: self.echo, name: Some("echo".to_owned()), node: None },
                    ActorInfo { id: self.refuser, name: Some("refuser".to_owned()), node: None },
                ];
                assert_eq!(response, Response::ActorList { actors }, "{ctx}");
            }
            // The harness's session has no updater: every update is refused.
            Command::UpdateActor { .. } => {
                assert_eq!(err(&response), Some(ErrorKind::UpdateFailed), "{ctx}");
            }
            Command::Stats => {
                let Response::Stats(report) = &response else {
                    panic!("{ctx}: stats answered with {response:?}")
                };
                assert!(!report.shards.is_empty(), "{ctx}: stats without shards");
            }
            other => panic!("frame {index}: a command the harness does not know: {other:?}"),
        }
    }

    /// Drops the session: its open channels close, the echo actor is told (in
    /// any order: the router leaves open the order of the close notices one
    /// detach sends to one peer), and the router is left without channels.
    fn finish(mut self) {
        self.drain(usize::MAX);
        let mut want: Vec<ChannelId> =
            self.channels.iter().filter(|(_, open)| *open).map(|(id, _)| *id).collect();
        drop(self.session.take());
        self.router.flush();
        let mut got = Vec::new();
        while let Ok(msg) = self.mailboxes[0].try_recv() {
            match msg {
                ActorMessage::ChannelClose { channel_id, .. } => got.push(channel_id),
                other => panic!("after the session: the echo actor received {other:?}"),
            }
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "after the session: the echo actor's close notices");
        assert!(self.mailboxes[1].try_recv().is_err(), "after the session: the refuser received a message");
        assert_eq!(self.router.metrics().channels.channels, 0, "channels left after the session");
        self.router.shutdown();
    }
}
