//! The wire format between nodes: compact binary frames, one per NATS message.
//!
//! Every frame starts with a header: the format's version byte ([`VERSION`]), a
//! kind byte, the sending node's name (a length byte and UTF-8) and its
//! incarnation (a random `u64` drawn when it joined, so that a restarted node is
//! told apart from its former self), and the incarnation of the receiver a
//! numbered frame is meant for (0 for the others). The body follows, fields in a fixed order:
//! integers little-endian, ids as their 16 bytes, strings with a `u16` length,
//! payloads with a `u32` length and their bytes untouched.
//!
//! [`decode`] never panics: a short, long or malformed frame is an error, which
//! the receiver counts and drops.

use crate::error::RequestError;
use crate::ids::{ActorId, ExternalId, Participant};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;

/// The largest frame [`decode`] accepts (NATS' default message limit).
pub const MAX_FRAME: usize = 1024 * 1024;

/// The answer to a channel open: accepted (the channel's id on the answering
/// node, and the target's response), rejected (`Ok(None)`), or failed.
pub type OpenOutcome = Result<Option<(u128, Option<Vec<u8>>)>, RequestError>;

/// Who sent a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sending node's name.
    pub node: String,
    /// The sending node's incarnation.
    pub incarnation: u64,
    /// For a frame of a numbered stream: the incarnation of the receiving node
    /// the stream is meant for (a restarted receiver drops its former self's
    /// frames). 0 for the other frames.
    pub to: u64,
}

/// What a frame says. The fields are the protocol's (see each variant; `seq` is
/// the frame's number in the sender's stream to the receiver, `corr` pairs an
/// answer with its question, `wait_ms` bounds the receiver's wait for its actor).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Membership: the node is alive; its directory is at `version`.
    Heartbeat { version: u64 },
    /// Membership: the node leaves (its actors leave with it).
    Leave,
    /// Directory: a local actor of the sender was registered (or renamed).
    DirAdd { version: u64, id: ActorId, name: Option<String> },
    /// Directory: a local actor of the sender was unregistered.
    DirRemove { version: u64, id: ActorId },
    /// Directory: send me your whole directory.
    SnapshotRequest,
    /// Directory: one part of the sender's whole directory at `version`.
    Snapshot { version: u64, last: bool, entries: Vec<(ActorId, Option<String>)> },
    /// Data: a one-way message to `to`, number `seq` of the sender's stream to this node.
    Send { seq: u64, to: ActorId, data: Vec<u8> },
    /// Data: a request; the answer comes back as a [`Body::Reply`] with `corr`.
    Request { seq: u64, corr: u64, to: ActorId, wait_ms: u64, data: Vec<u8> },
    /// Data: the answer to request `corr`.
    Reply { corr: u64, outcome: Result<Vec<u8>, RequestError> },
    /// Data: `initiator` opens a channel to `target`; answered by [`Body::OpenReply`].
    /// `channel` is the channel's id on the initiator's node.
    Open {
        seq: u64,
        corr: u64,
        channel: u128,
        initiator: Participant,
        target: ActorId,
        wait_ms: u64,
        initial: Vec<u8>,
    },
    /// Data: the answer to open `corr`: `Ok(Some((channel, response)))` accepted
    /// (`channel` is the id on the answering node), `Ok(None)` rejected.
    OpenReply { corr: u64, outcome: OpenOutcome },
    /// Data: a channel message; `channel` is the id on the receiving node.
    ChannelData { seq: u64, channel: u128, sender: Participant, data: Vec<u8> },
    /// Data: `closer` closed the channel (`channel`: the id on the receiving node).
    ChannelClose { seq: u64, channel: u128, closer: Participant },
    /// Delivery: the receiver has every frame of the sender's stream up to `upto`,
    /// and frames `lost.0..=lost.1` never arrived (none when `lost` is `None`).
    Ack { stream: u64, upto: u64, lost: Option<(u64, u64)> },
    /// Delivery: the sender's stream `stream` has sent up to `last`; frames after
    /// the receiver's last one are lost.
    Sync { stream: u64, last: u64 },
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Who sent it.
    pub header: Header,
    /// What it says.
    pub body: Body,
}

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// It ends before its last field.
    Truncated,
    /// Bytes are left after its last field.
    Trailing,
    /// Written by another version of the format.
    Version(u8),
    /// An unknown kind or tag byte.
    Tag(u8),
    /// A string that is not UTF-8.
    Utf8,
    /// Longer than [`MAX_FRAME`].
    TooLong,
}

const HEARTBEAT: u8 = 1;
const LEAVE: u8 = 2;
const DIR_ADD: u8 = 3;
const DIR_REMOVE: u8 = 4;
const SNAPSHOT_REQUEST: u8 = 5;
const SNAPSHOT: u8 = 6;
const SEND: u8 = 10;
const REQUEST: u8 = 11;
const REPLY: u8 = 12;
const OPEN: u8 = 13;
const OPEN_REPLY: u8 = 14;
const CHANNEL_DATA: u8 = 15;
const CHANNEL_CLOSE: u8 = 16;
const ACK: u8 = 20;
const SYNC: u8 = 21;

/// Encodes a frame.
#[must_use]
pub fn encode(header: &Header, body: &Body) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + body_len(body)));
    w.u8(VERSION);
    w.u8(kind(body));
    w.short_str(&header.node);
    w.u64(header.incarnation);
    w.u64(header.to);
    match body {
        Body::Heartbeat { version } => w.u64(*version),
        Body::Leave | Body::SnapshotRequest => {}
        Body::DirAdd { version, id, name } => {
            w.u64(*version);
            w.actor(*id);
            w.opt_str(name.as_deref());
        }
        Body::DirRemove { version, id } => {
            w.u64(*version);
            w.actor(*id);
        }
        Body::Snapshot { version, last, entries } => {
            w.u64(*version);
            w.u8(u8::from(*last));
            w.u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
            for (id, name) in entries {
                w.actor(*id);
                w.opt_str(name.as_deref());
            }
        }
        Body::Send { seq, to, data } => {
            w.u64(*seq);
            w.actor(*to);
            w.bytes(data);
        }
        Body::Request { seq, corr, to, wait_ms, data } => {
            w.u64(*seq);
            w.u64(*corr);
            w.actor(*to);
            w.u64(*wait_ms);
            w.bytes(data);
        }
        Body::Reply { corr, outcome } => {
            w.u64(*corr);
            match outcome {
                Ok(data) => {
                    w.u8(0);
                    w.bytes(data);
                }
                Err(e) => {
                    w.u8(1);
                    w.u8(error_code(*e));
                }
            }
        }
        Body::Open { seq, corr, channel, initiator, target, wait_ms, initial } => {
            w.u64(*seq);
            w.u64(*corr);
            w.u128(*channel);
            w.participant(*initiator);
            w.actor(*target);
            w.u64(*wait_ms);
            w.bytes(initial);
        }
        Body::OpenReply { corr, outcome } => {
            w.u64(*corr);
            match outcome {
                Ok(Some((channel, response))) => {
                    w.u8(0);
                    w.u128(*channel);
                    w.opt_bytes(response.as_deref());
                }
                Ok(None) => w.u8(1),
                Err(e) => {
                    w.u8(2);
                    w.u8(error_code(*e));
                }
            }
        }
        Body::ChannelData { seq, channel, sender, data } => {
            w.u64(*seq);
            w.u128(*channel);
            w.participant(*sender);
            w.bytes(data);
        }
        Body::ChannelClose { seq, channel, closer } => {
            w.u64(*seq);
            w.u128(*channel);
            w.participant(*closer);
        }
        Body::Ack { stream, upto, lost } => {
            w.u64(*stream);
            w.u64(*upto);
            match lost {
                Some((a, b)) => {
                    w.u8(1);
                    w.u64(*a);
                    w.u64(*b);
                }
                None => w.u8(0),
            }
        }
        Body::Sync { stream, last } => {
            w.u64(*stream);
            w.u64(*last);
        }
    }
    w.0
}

/// Decodes a frame written by [`encode`].
///
/// # Errors
/// A [`DecodeError`] for anything that is not exactly one well-formed frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
    if bytes.len() > MAX_FRAME {
        return Err(DecodeError::TooLong);
    }
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let node = r.short_str()?;
    let incarnation = r.u64()?;
    let to = r.u64()?;
    let body = match kind {
        HEARTBEAT => Body::Heartbeat { version: r.u64()? },
        LEAVE => Body::Leave,
        DIR_ADD => Body::DirAdd { version: r.u64()?, id: r.actor()?, name: r.opt_str()? },
        DIR_REMOVE => Body::DirRemove { version: r.u64()?, id: r.actor()? },
        SNAPSHOT_REQUEST => Body::SnapshotRequest,
        SNAPSHOT => {
            let version = r.u64()?;
            let last = r.bool()?;
            let n = r.u32()? as usize;
            // Each entry takes at least 17 bytes: a count beyond what is left is a lie.
            if n > r.0.len() / 17 {
                return Err(DecodeError::Truncated);
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((r.actor()?, r.opt_str()?));
            }
            Body::Snapshot { version, last, entries }
        }
        SEND => Body::Send { seq: r.u64()?, to: r.actor()?, data: r.bytes()? },
        REQUEST => Body::Request {
            seq: r.u64()?,
            corr: r.u64()?,
            to: r.actor()?,
            wait_ms: r.u64()?,
            data: r.bytes()?,
        },
        REPLY => {
            let corr = r.u64()?;
            let outcome = match r.u8()? {
                0 => Ok(r.bytes()?),
                1 => Err(error_of(r.u8()?)?),
                t => return Err(DecodeError::Tag(t)),
            };
            Body::Reply { corr, outcome }
        }
        OPEN => Body::Open {
            seq: r.u64()?,
            corr: r.u64()?,
            channel: r.u128()?,
            initiator: r.participant()?,
            target: r.actor()?,
            wait_ms: r.u64()?,
            initial: r.bytes()?,
        },
        OPEN_REPLY => {
            let corr = r.u64()?;
            let outcome = match r.u8()? {
                0 => Ok(Some((r.u128()?, r.opt_bytes()?))),
                1 => Ok(None),
                2 => Err(error_of(r.u8()?)?),
                t => return Err(DecodeError::Tag(t)),
            };
            Body::OpenReply { corr, outcome }
        }
        CHANNEL_DATA => Body::ChannelData {
            seq: r.u64()?,
            channel: r.u128()?,
            sender: r.participant()?,
            data: r.bytes()?,
        },
        CHANNEL_CLOSE => Body::ChannelClose { seq: r.u64()?, channel: r.u128()?, closer: r.participant()? },
        ACK => {
            let stream = r.u64()?;
            let upto = r.u64()?;
            let lost = if r.bool()? { Some((r.u64()?, r.u64()?)) } else { None };
            Body::Ack { stream, upto, lost }
        }
        SYNC => Body::Sync { stream: r.u64()?, last: r.u64()? },
        other => return Err(DecodeError::Tag(other)),
    };
    if !r.0.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(Frame { header: Header { node, incarnation, to }, body })
}

fn kind(body: &Body) -> u8 {
    match body {
        Body::Heartbeat { .. } => HEARTBEAT,
        Body::Leave => LEAVE,
        Body::DirAdd { .. } => DIR_ADD,
        Body::DirRemove { .. } => DIR_REMOVE,
        Body::SnapshotRequest => SNAPSHOT_REQUEST,
        Body::Snapshot { .. } => SNAPSHOT,
        Body::Send { .. } => SEND,
        Body::Request { .. } => REQUEST,
        Body::Reply { .. } => REPLY,
        Body::Open { .. } => OPEN,
        Body::OpenReply { .. } => OPEN_REPLY,
        Body::ChannelData { .. } => CHANNEL_DATA,
        Body::ChannelClose { .. } => CHANNEL_CLOSE,
        Body::Ack { .. } => ACK,
        Body::Sync { .. } => SYNC,
    }
}

fn body_len(body: &Body) -> usize {
    match body {
        Body::Send { data, .. }
        | Body::Request { data, .. }
        | Body::Reply { outcome: Ok(data), .. }
        | Body::ChannelData { data, .. } => data.len(),
        Body::Open { initial, .. } => initial.len(),
        _ => 0,
    }
}

fn error_code(e: RequestError) -> u8 {
    match e {
        RequestError::ActorNotFound => 0,
        RequestError::MailboxFull => 1,
        RequestError::MailboxClosed => 2,
        RequestError::Timeout => 3,
        RequestError::NoReply => 4,
        RequestError::Shutdown => 5,
        RequestError::ShardFull => 6,
        RequestError::ShardFailed => 7,
    }
}

fn error_of(code: u8) -> Result<RequestError, DecodeError> {
    Ok(match code {
        0 => RequestError::ActorNotFound,
        1 => RequestError::MailboxFull,
        2 => RequestError::MailboxClosed,
        3 => RequestError::Timeout,
        4 => RequestError::NoReply,
        5 => RequestError::Shutdown,
        6 => RequestError::ShardFull,
        7 => RequestError::ShardFailed,
        t => return Err(DecodeError::Tag(t)),
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn actor(&mut self, id: ActorId) {
        self.0.extend_from_slice(id.as_uuid().as_bytes());
    }
    fn participant(&mut self, p: Participant) {
        match p {
            Participant::Actor(id) => {
                self.u8(0);
                self.actor(id);
            }
            Participant::External(id) => {
                self.u8(1);
                self.0.extend_from_slice(id.as_uuid().as_bytes());
            }
        }
    }
    /// A node name: at most 255 bytes (longer names are refused by the config).
    fn short_str(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(255)];
        self.u8(bytes.len() as u8);
        self.0.extend_from_slice(bytes);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
                self.u8(1);
                self.0.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                self.0.extend_from_slice(bytes);
            }
            None => self.u8(0),
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::Tag(t)),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn uuid(&mut self) -> Result<uuid::Uuid, DecodeError> {
        Ok(uuid::Uuid::from_bytes(self.array()?))
    }
    fn actor(&mut self) -> Result<ActorId, DecodeError> {
        Ok(ActorId::from_uuid(self.uuid()?))
    }
    fn participant(&mut self) -> Result<Participant, DecodeError> {
        match self.u8()? {
            0 => Ok(Participant::Actor(self.actor()?)),
            1 => Ok(Participant::External(ExternalId::from_uuid(self.uuid()?))),
            t => Err(DecodeError::Tag(t)),
        }
    }
    fn utf8(&mut self, n: usize) -> Result<String, DecodeError> {
        std::str::from_utf8(self.take(n)?).map(str::to_owned).map_err(|_| DecodeError::Utf8)
    }
    fn short_str(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u8()?);
        self.utf8(n)
    }
    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        if !self.bool()? {
            return Ok(None);
        }
        let n = usize::from(u16::from_le_bytes(self.array()?));
        self.utf8(n).map(Some)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt_bytes(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.bool()? {
            self.bytes().map(Some)
        } else {
            Ok(None)
        }
    }
}
