//! The `router_ops` differential check.
//!
//! An input is a list of [`Op`]s. Each op runs against a real [`Router`] (one or
//! two shards, mailboxes of [`CAPACITY`], [`OverflowPolicy::Park`] with
//! [`PARK`] per actor, so overflow is reached after a few sends) and against a
//! plain sequential model of what the router promises. After every op the driver
//! calls [`Router::flush`], so everything the shards were handed has been acted
//! on, and then compares: the op's result (success or the error kind), the
//! outcome of every request and channel open still being waited on, how many
//! messages each mailbox holds, the dead letters, and a few metrics. Messages
//! are compared one by one, in order, when an op consumes them.
//!
//! What is deterministic after `flush`: the harness is the only thread that
//! sends or receives, so whether a message went straight into a mailbox or was
//! parked at the shard depends only on the counts the model keeps. A parked
//! message enters the mailbox when the mailbox reports that it took a message
//! (its `Drain` notice reaches the shard); that is why a consume takes exactly
//! one message before the next flush. Requests and channel opens are driven with
//! `request_async` / `open_channel_async` futures polled by hand; the target
//! resolves them by acting on its mailbox message (reply, drop, accept, reject),
//! or later through a held handle. A "short" request or open uses a 1 ms
//! timeout, and the driver waits (bounded) until the shard's deadline resolves
//! it, so the timeout always wins; at most [`MAX_TIMED`] such ops run per input.
//! The one order the router leaves open is that of the `ChannelClose` notices one
//! unregistration sends to one peer; the model accepts them in any order.
//!
//! This file is shared by the `router_ops` fuzz target and the stable corpus
//! replay test at the repository root (`tests/fuzz_corpus.rs`), so it depends on
//! nothing but `std`, `arbitrary` and the crate.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use sharded_router::{
    ActorId, ActorMessage, ChannelError, ChannelId, ChannelOpenReply, DeadLetter, DeadLetterReason,
    ExternalId, Mailbox, OpenFuture, OverflowPolicy, Participant, RegisterError, ReplyHandle, RequestError,
    ResponseFuture, Router, SendErrorKind, TryRecvError, UnregisterError,
};

/// Actor ids in the pool; fuzz indices are taken modulo this.
pub const ACTORS: usize = 4;
/// External endpoint slots; participant indices past the actors pick one.
pub const EXTERNALS: usize = 2;
const PARTICIPANTS: usize = ACTORS + EXTERNALS;
/// Mailbox capacity of every actor and endpoint.
pub const CAPACITY: usize = 2;
/// Messages parked per actor before `MailboxFull`.
pub const PARK: usize = 3;
/// Ops past this many are ignored, which keeps one execution short.
pub const MAX_OPS: usize = 128;
/// Short-timeout requests and opens per input; later ones use the long timeout.
pub const MAX_TIMED: usize = 3;

const SHORT: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(3600);
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);
/// The longest the driver waits for a short deadline to fire.
const DEADLINE_WAIT: Duration = Duration::from_secs(5);

/// What the receiver does with a request or channel open it takes.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Reply with a payload / accept with a response.
    Accept,
    /// Reply with an empty payload / accept without a response.
    AcceptEmpty,
    /// Drop the reply handle / reject the channel.
    Reject,
    /// Drop the handle unanswered (for an open: dropping rejects).
    Drop,
    /// Keep the handle for a later [`Op::Resolve`].
    Hold,
}

/// One step of a fuzz input. Indices are reduced modulo the pool they pick from.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Register actor `actor` with a fresh mailbox.
    Register {
        /// Actor slot.
        actor: u8,
    },
    /// Unregister actor `actor`.
    Unregister {
        /// Actor slot.
        actor: u8,
    },
    /// `send` a one-way message.
    Send {
        /// Actor slot.
        to: u8,
    },
    /// `tell` a one-way message (failures become dead letters).
    Tell {
        /// Actor slot.
        to: u8,
    },
    /// `request_async`; `short` uses a 1 ms timeout and waits for it to fire.
    Request {
        /// Actor slot.
        to: u8,
        /// Use the short timeout.
        short: bool,
    },
    /// Take one message from a participant's mailbox and act on it.
    Consume {
        /// Participant slot (actors, then external endpoints).
        who: u8,
        /// What to do with a request or channel open.
        answer: Answer,
    },
    /// Act on a held reply handle.
    Resolve {
        /// Index into the held handles.
        held: u8,
        /// What to do with it (`Hold` keeps it).
        answer: Answer,
    },
    /// `open_channel_async` between two participants.
    Open {
        /// Initiator slot.
        from: u8,
        /// Target slot.
        to: u8,
        /// Use the short timeout.
        short: bool,
    },
    /// `channel_send` on a channel whose id is known.
    ChannelSend {
        /// Index into the known channels (one past them: an unknown id).
        channel: u8,
        /// Sender slot.
        from: u8,
    },
    /// `close_channel`.
    Close {
        /// Index into the known channels (one past them: an unknown id).
        channel: u8,
        /// Closer slot.
        from: u8,
    },
    /// `attach_external` into an empty endpoint slot.
    Attach {
        /// Endpoint slot.
        external: u8,
    },
    /// `detach_external`.
    Detach {
        /// Endpoint slot.
        external: u8,
    },
    /// Drop a participant's receiving half.
    DropMailbox {
        /// Participant slot.
        who: u8,
    },
    /// `shutdown`.
    Shutdown,
}

/// Decodes an input exactly as the fuzz target does.
///
/// # Errors
/// Only if `arbitrary` rejects the bytes (it never does for `Vec<Op>`).
pub fn decode(bytes: &[u8]) -> arbitrary::Result<Vec<Op>> {
    Vec::<Op>::arbitrary_take_rest(Unstructured::new(bytes))
}

/// The bytes that [`decode`] turns into `ops`, for writing seed inputs.
#[must_use]
pub fn encode(ops: &[Op]) -> Vec<u8> {
    fn tag(out: &mut Vec<u8>, index: u64, count: u64) {
        // The derive picks variant `(u32 * count) >> 32`.
        let x = (index << 32).div_ceil(count);
        out.extend_from_slice(&u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes());
    }
    fn answer(out: &mut Vec<u8>, a: Answer) {
        let index = match a {
            Answer::Accept => 0,
            Answer::AcceptEmpty => 1,
            Answer::Reject => 2,
            Answer::Drop => 3,
            Answer::Hold => 4,
        };
        tag(out, index, 5);
    }
    let mut out = Vec::new();
    for op in ops {
        out.push(1); // "another element follows"
        match *op {
            Op::Register { actor } => {
                tag(&mut out, 0, 14);
                out.push(actor);
            }
            Op::Unregister { actor } => {
                tag(&mut out, 1, 14);
                out.push(actor);
            }
            Op::Send { to } => {
                tag(&mut out, 2, 14);
                out.push(to);
            }
            Op::Tell { to } => {
                tag(&mut out, 3, 14);
                out.push(to);
            }
            Op::Request { to, short } => {
                tag(&mut out, 4, 14);
                out.extend([to, u8::from(short)]);
            }
            Op::Consume { who, answer: a } => {
                tag(&mut out, 5, 14);
                out.push(who);
                answer(&mut out, a);
            }
            Op::Resolve { held, answer: a } => {
                tag(&mut out, 6, 14);
                out.push(held);
                answer(&mut out, a);
            }
            Op::Open { from, to, short } => {
                tag(&mut out, 7, 14);
                out.extend([from, to, u8::from(short)]);
            }
            Op::ChannelSend { channel, from } => {
                tag(&mut out, 8, 14);
                out.extend([channel, from]);
            }
            Op::Close { channel, from } => {
                tag(&mut out, 9, 14);
                out.extend([channel, from]);
            }
            Op::Attach { external } => {
                tag(&mut out, 10, 14);
                out.push(external);
            }
            Op::Detach { external } => {
                tag(&mut out, 11, 14);
                out.push(external);
            }
            Op::DropMailbox { who } => {
                tag(&mut out, 12, 14);
                out.push(who);
            }
            Op::Shutdown => tag(&mut out, 13, 14),
        }
    }
    out.push(0);
    out
}

/// Runs `ops` against a real router and the model; panics on the first
/// difference, naming the op and what differed.
pub fn run(ops: &[Op]) {
    let ops = &ops[..ops.len().min(MAX_OPS)];
    let shards = 1 + ops.len() % 2;
    let mut h = Harness::new(shards);
    for (i, op) in ops.iter().enumerate() {
        h.step = i;
        h.apply(*op);
        h.check(*op);
    }
    h.finish();
}

// ---------------------------------------------------------------------------------
// The model's view of messages

/// A message the model expects in a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Send(u32),
    Request(usize),
    Open(usize),
    ChannelMessage(usize, u32),
    /// A close notice; notices of one group may arrive in any order.
    Close(usize, u64),
}

fn payload(seq: u32) -> Vec<u8> {
    seq.to_le_bytes().to_vec()
}

fn answer_payload(seq: u32) -> Vec<u8> {
    let mut v = vec![0xA5];
    v.extend_from_slice(&seq.to_le_bytes());
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    Open,
    Gone,
}

struct Endpoint {
    external: bool,
    /// Current identity: an actor's fixed id, or the endpoint's latest id (a
    /// never-attached one before the first attach).
    pid: Participant,
    registered: bool,
    epoch: u64,
    rx: Option<Mailbox>,
    /// The receiving half was dropped during the current registration.
    rx_dropped: bool,
    /// What the mailbox queue holds.
    mailbox: VecDeque<Expect>,
    /// What is in flight through the shard, in order.
    parked: VecDeque<Expect>,
}

struct Req {
    seq: u32,
    target: usize,
    epoch: u64,
    outcome: Option<Result<Vec<u8>, RequestError>>,
    fut: Option<ResponseFuture>,
}

struct Chan {
    seq: u32,
    initiator: (usize, Participant),
    target: (usize, Participant),
    phase: Phase,
    real: Option<ChannelId>,
    outcome: Option<Result<Option<Vec<u8>>, ChannelError>>,
    fut: Option<OpenFuture>,
    /// The group of the close notice sent for this channel (0: none yet).
    close_group: u64,
}

enum Held {
    Request(usize, ReplyHandle),
    Open(usize, ChannelOpenReply),
}

type Letter = (Participant, Option<u128>, Vec<u8>, String);

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

fn poll_now<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    Pin::new(f).poll(&mut cx)
}

/// Polls until ready, at most [`DEADLINE_WAIT`].
fn wait_ready<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = poll_now(f) {
            return Some(v);
        }
        if start.elapsed() > DEADLINE_WAIT {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn request_error(reason: DeadLetterReason) -> RequestError {
    match reason {
        DeadLetterReason::Shutdown => RequestError::Shutdown,
        DeadLetterReason::MailboxClosed => RequestError::MailboxClosed,
        _ => RequestError::ActorNotFound,
    }
}

fn open_error(error: RequestError, target: Participant) -> ChannelError {
    match error {
        RequestError::Timeout => ChannelError::Timeout,
        RequestError::NoReply => ChannelError::Rejected,
        RequestError::MailboxFull => ChannelError::MailboxFull,
        RequestError::MailboxClosed => ChannelError::MailboxClosed,
        RequestError::Shutdown => ChannelError::Shutdown,
        _ => ChannelError::ParticipantNotFound(target),
    }
}

fn request_error_of(kind: SendErrorKind) -> RequestError {
    match kind {
        SendErrorKind::MailboxFull => RequestError::MailboxFull,
        SendErrorKind::MailboxClosed => RequestError::MailboxClosed,
        SendErrorKind::Shutdown => RequestError::Shutdown,
        _ => RequestError::ActorNotFound,
    }
}

struct Harness {
    router: Router,
    letters: Arc<Mutex<Vec<DeadLetter>>>,
    step: usize,
    log: String,
    shut: bool,
    eps: Vec<Endpoint>,
    reqs: Vec<Req>,
    chans: Vec<Chan>,
    held: Vec<Held>,
    dead: Vec<(Participant, Option<usize>, Vec<u8>, DeadLetterReason)>,
    seq: u32,
    groups: u64,
    timed: usize,
    unknown_channel: ChannelId,
}

impl Harness {
    fn new(shards: usize) -> Self {
        let letters = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&letters);
        let router = Router::builder()
            .shards(shards)
            .mailbox_capacity(CAPACITY)
            .overflow(OverflowPolicy::Park { max_per_actor: PARK })
            .timer_resolution(TIMER_RESOLUTION)
            .thread_name("fuzz-shard")
            .on_dead_letter(move |letter| sink.lock().unwrap_or_else(|e| e.into_inner()).push(letter))
            .build()
            .expect("router builds");
        let eps = (0..PARTICIPANTS)
            .map(|i| Endpoint {
                external: i >= ACTORS,
                pid: if i >= ACTORS {
                    Participant::External(ExternalId::new())
                } else {
                    Participant::Actor(ActorId::new())
                },
                registered: false,
                epoch: 0,
                rx: None,
                rx_dropped: false,
                mailbox: VecDeque::new(),
                parked: VecDeque::new(),
            })
            .collect();
        Self {
            router,
            letters,
            step: 0,
            log: format!("shards: {shards}\n"),
            shut: false,
            eps,
            reqs: Vec::new(),
            chans: Vec::new(),
            held: Vec::new(),
            dead: Vec::new(),
            seq: 0,
            groups: 0,
            timed: 0,
            unknown_channel: ChannelId::from_u128(0x5eed),
        }
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!("router_ops: step {}: {what}\nops so far:\n{}", self.step, self.log);
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn actor_id(&self, slot: usize) -> ActorId {
        match self.eps[slot].pid {
            Participant::Actor(id) => id,
            Participant::External(_) => unreachable!("actor slots hold actor ids"),
        }
    }

    /// Channels whose real id the harness knows, in creation order.
    fn known_channel(&self, index: u8) -> Option<usize> {
        let known: Vec<usize> = (0..self.chans.len()).filter(|&c| self.chans[c].real.is_some()).collect();
        let pick = usize::from(index) % (known.len() + 1);
        known.get(pick).copied()
    }

    // -----------------------------------------------------------------------------
    // The model's routing rules

    /// Routes a message as the router does: straight into the mailbox while
    /// nothing is in flight and there is room, else in flight through the shard
    /// up to `bound`.
    fn route(&mut self, slot: usize, msg: Expect, bound: usize) -> Result<(), SendErrorKind> {
        if self.shut {
            return Err(SendErrorKind::Shutdown);
        }
        let ep = &mut self.eps[slot];
        if !ep.registered {
            return Err(SendErrorKind::ActorNotFound);
        }
        if ep.parked.is_empty() {
            if ep.rx_dropped {
                return Err(SendErrorKind::MailboxClosed);
            }
            if ep.mailbox.len() < CAPACITY {
                ep.mailbox.push_back(msg);
                return Ok(());
            }
        }
        if ep.parked.len() >= bound {
            return Err(SendErrorKind::MailboxFull);
        }
        ep.parked.push_back(msg);
        if ep.rx_dropped {
            // The shard tries the queue, finds the mailbox closed, and gives up
            // on everything parked.
            let all: Vec<Expect> = ep.parked.drain(..).collect();
            for m in all {
                self.undeliverable(slot, m, DeadLetterReason::MailboxClosed);
            }
        }
        Ok(())
    }

    /// A message that can no longer be delivered.
    fn undeliverable(&mut self, slot: usize, msg: Expect, reason: DeadLetterReason) {
        let target = self.eps[slot].pid;
        match msg {
            Expect::Send(seq) => self.dead.push((target, None, payload(seq), reason)),
            Expect::ChannelMessage(c, seq) => self.dead.push((target, Some(c), payload(seq), reason)),
            Expect::Close(c, _) => self.dead.push((target, Some(c), Vec::new(), reason)),
            Expect::Request(r) => {
                self.resolve_request(r, Err(request_error(reason)));
            }
            Expect::Open(c) => {
                let t = self.chans[c].target.1;
                self.decide(c, Err(open_error(request_error(reason), t)));
            }
        }
    }

    fn resolve_request(&mut self, r: usize, outcome: Result<Vec<u8>, RequestError>) -> bool {
        let req = &mut self.reqs[r];
        if req.outcome.is_some() {
            return false;
        }
        req.outcome = Some(outcome);
        true
    }

    /// Settles an opening channel; `false` if it was already settled.
    fn decide(&mut self, c: usize, outcome: Result<Option<Vec<u8>>, ChannelError>) -> bool {
        let ch = &mut self.chans[c];
        if ch.phase != Phase::Opening {
            return false;
        }
        ch.phase = if outcome.is_ok() { Phase::Open } else { Phase::Gone };
        ch.outcome = Some(outcome);
        true
    }

    /// A participant leaves (unregister or detach).
    fn leave(&mut self, slot: usize) {
        let leaver = self.eps[slot].pid;
        let epoch = self.eps[slot].epoch;
        self.eps[slot].registered = false;
        self.groups += 1;
        let group = self.groups;
        for c in 0..self.chans.len() {
            let ch = &self.chans[c];
            let peer = if ch.initiator.0 == slot && ch.initiator.1 == leaver {
                ch.target.0
            } else if ch.target.0 == slot && ch.target.1 == leaver {
                ch.initiator.0
            } else {
                continue;
            };
            match ch.phase {
                Phase::Opening => {
                    self.decide(c, Err(ChannelError::ParticipantNotFound(leaver)));
                }
                Phase::Open => {
                    self.chans[c].phase = Phase::Gone;
                    self.chans[c].close_group = group;
                    let _ = self.route(peer, Expect::Close(c, group), usize::MAX);
                }
                Phase::Gone => {}
            }
        }
        let parked: Vec<Expect> = self.eps[slot].parked.drain(..).collect();
        for m in parked {
            self.undeliverable(slot, m, DeadLetterReason::Unregistered);
        }
        for r in 0..self.reqs.len() {
            if self.reqs[r].target == slot && self.reqs[r].epoch == epoch {
                self.resolve_request(r, Err(RequestError::ActorNotFound));
            }
        }
    }

    /// The shard moves parked messages in as room appears.
    fn settle_parked(&mut self) {
        for ep in &mut self.eps {
            if ep.rx_dropped {
                continue;
            }
            while ep.mailbox.len() < CAPACITY {
                match ep.parked.pop_front() {
                    Some(m) => ep.mailbox.push_back(m),
                    None => break,
                }
            }
        }
    }

    fn fresh_endpoint(&mut self, slot: usize, rx: Mailbox) {
        let ep = &mut self.eps[slot];
        ep.registered = true;
        ep.epoch += 1;
        ep.rx = Some(rx);
        ep.rx_dropped = false;
        ep.mailbox.clear();
        ep.parked.clear();
    }

    // -----------------------------------------------------------------------------
    // Ops

    fn apply(&mut self, op: Op) {
        let _ = writeln!(self.log, "  {op:?}");
        match op {
            Op::Register { actor } => self.register(usize::from(actor) % ACTORS),
            Op::Unregister { actor } => self.unregister(usize::from(actor) % ACTORS),
            Op::Send { to } => self.send(usize::from(to) % ACTORS, false),
            Op::Tell { to } => self.send(usize::from(to) % ACTORS, true),
            Op::Request { to, short } => self.request(usize::from(to) % ACTORS, short),
            Op::Consume { who, answer } => self.consume(usize::from(who) % PARTICIPANTS, answer),
            Op::Resolve { held, answer } => self.resolve_held(held, answer),
            Op::Open { from, to, short } => {
                self.open(usize::from(from) % PARTICIPANTS, usize::from(to) % PARTICIPANTS, short);
            }
            Op::ChannelSend { channel, from } => self.channel_send(channel, usize::from(from) % PARTICIPANTS),
            Op::Close { channel, from } => self.close(channel, usize::from(from) % PARTICIPANTS),
            Op::Attach { external } => self.attach(ACTORS + usize::from(external) % EXTERNALS),
            Op::Detach { external } => self.detach(ACTORS + usize::from(external) % EXTERNALS),
            Op::DropMailbox { who } => self.drop_mailbox(usize::from(who) % PARTICIPANTS),
            Op::Shutdown => self.shutdown(),
        }
    }

    fn register(&mut self, slot: usize) {
        let id = self.actor_id(slot);
        let (tx, rx) = self.router.mailbox();
        let got = self.router.register(id, tx);
        let want = if self.shut {
            Err(RegisterError::Shutdown)
        } else if self.eps[slot].registered {
            Err(RegisterError::AlreadyRegistered(id))
        } else {
            Ok(())
        };
        if got != want {
            self.fail(&format!("register: got {got:?}, model {want:?}"));
        }
        if want.is_ok() {
            self.fresh_endpoint(slot, rx);
        }
    }

    fn unregister(&mut self, slot: usize) {
        let id = self.actor_id(slot);
        let got = self.router.unregister(id);
        let want = if self.shut {
            Err(UnregisterError::Shutdown)
        } else if !self.eps[slot].registered {
            Err(UnregisterError::ActorNotFound(id))
        } else {
            Ok(())
        };
        if got != want {
            self.fail(&format!("unregister: got {got:?}, model {want:?}"));
        }
        if want.is_ok() {
            self.leave(slot);
        }
    }

    fn attach(&mut self, slot: usize) {
        if self.eps[slot].registered {
            return;
        }
        let (tx, rx) = self.router.mailbox();
        let got = self.router.attach_external(tx);
        match (got, self.shut) {
            (Ok(id), false) => {
                self.eps[slot].pid = Participant::External(id);
                self.fresh_endpoint(slot, rx);
            }
            (Err(RegisterError::Shutdown), true) => {}
            (got, _) => self.fail(&format!("attach: got {got:?}, shut: {}", self.shut)),
        }
    }

    fn detach(&mut self, slot: usize) {
        let Participant::External(id) = self.eps[slot].pid else {
            unreachable!("endpoint slots hold external ids")
        };
        let got = self.router.detach_external(id);
        let want = if self.shut {
            Err(UnregisterError::Shutdown)
        } else if !self.eps[slot].registered {
            Err(UnregisterError::ExternalNotFound(id))
        } else {
            Ok(())
        };
        if got != want {
            self.fail(&format!("detach: got {got:?}, model {want:?}"));
        }
        if want.is_ok() {
            self.leave(slot);
        }
    }

    fn send(&mut self, slot: usize, tell: bool) {
        let seq = self.next_seq();
        let id = self.actor_id(slot);
        let want = self.route(slot, Expect::Send(seq), PARK);
        if tell {
            self.router.tell(id, payload(seq));
            if let Err(kind) = want {
                let reason = match kind {
                    SendErrorKind::MailboxFull => DeadLetterReason::MailboxFull,
                    SendErrorKind::MailboxClosed => DeadLetterReason::MailboxClosed,
                    SendErrorKind::Shutdown => DeadLetterReason::Shutdown,
                    _ => DeadLetterReason::ActorNotFound,
                };
                self.dead.push((self.eps[slot].pid, None, payload(seq), reason));
            }
            return;
        }
        match (self.router.send(id, payload(seq)), want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(kind)) if e.kind() == kind => {
                if e.into_inner() != payload(seq) {
                    self.fail("send: the payload handed back differs");
                }
            }
            (got, want) => self.fail(&format!("send: got {:?}, model {want:?}", got.map_err(|e| e.kind()))),
        }
    }

    fn request(&mut self, slot: usize, short: bool) {
        let short = short && self.timed < MAX_TIMED;
        if short {
            self.timed += 1;
        }
        let seq = self.next_seq();
        let id = self.actor_id(slot);
        let fut = self.router.request_async(id, payload(seq), if short { SHORT } else { LONG });
        let r = self.reqs.len();
        let epoch = self.eps[slot].epoch;
        self.reqs.push(Req { seq, target: slot, epoch, outcome: None, fut: Some(fut) });
        let routed = if self.shut {
            Err(SendErrorKind::Shutdown)
        } else if !self.eps[slot].registered {
            Err(SendErrorKind::ActorNotFound)
        } else {
            self.route(slot, Expect::Request(r), PARK)
        };
        if let Err(kind) = routed {
            self.resolve_request(r, Err(request_error_of(kind)));
        }
        if short && self.reqs[r].outcome.is_none() {
            self.resolve_request(r, Err(RequestError::Timeout));
            let fut = self.reqs[r].fut.as_mut().expect("just made");
            match wait_ready(fut) {
                Some(Err(RequestError::Timeout)) => self.reqs[r].fut = None,
                other => self.fail(&format!("short request: got {other:?} instead of a timeout")),
            }
        }
    }

    fn open(&mut self, from: usize, to: usize, short: bool) {
        let short = short && self.timed < MAX_TIMED;
        if short {
            self.timed += 1;
        }
        let seq = self.next_seq();
        let (a, b) = (self.eps[from].pid, self.eps[to].pid);
        let fut = self.router.open_channel_async(a, b, payload(seq), if short { SHORT } else { LONG });
        let c = self.chans.len();
        self.chans.push(Chan {
            seq,
            initiator: (from, a),
            target: (to, b),
            phase: Phase::Opening,
            real: None,
            outcome: None,
            fut: Some(fut),
            close_group: 0,
        });
        let early = if self.shut {
            Some(ChannelError::Shutdown)
        } else if a == b {
            Some(ChannelError::SameParticipant)
        } else if !self.eps[from].registered {
            Some(ChannelError::ParticipantNotFound(a))
        } else if !self.eps[to].registered {
            Some(ChannelError::ParticipantNotFound(b))
        } else {
            None
        };
        if let Some(e) = early {
            self.decide(c, Err(e));
        } else if let Err(kind) = self.route(to, Expect::Open(c), PARK) {
            self.decide(c, Err(open_error(request_error_of(kind), b)));
        }
        if short && self.chans[c].phase == Phase::Opening {
            self.decide(c, Err(ChannelError::Timeout));
            let fut = self.chans[c].fut.as_mut().expect("just made");
            match wait_ready(fut) {
                Some(Err(ChannelError::Timeout)) => self.chans[c].fut = None,
                other => self.fail(&format!("short open: got {other:?} instead of a timeout")),
            }
        }
    }

    /// The channel an op names, its real id, and the model's verdict on the
    /// sender: `Ok(peer slot)` or the error kind.
    fn channel_check(
        &self,
        index: u8,
        from: usize,
    ) -> (Option<usize>, ChannelId, Result<usize, SendErrorKind>) {
        let c = self.known_channel(index);
        let id = c.and_then(|c| self.chans[c].real).unwrap_or(self.unknown_channel);
        let verdict = match c {
            _ if self.shut => Err(SendErrorKind::Shutdown),
            None => Err(SendErrorKind::ChannelNotFound),
            Some(c) => {
                let ch = &self.chans[c];
                let sender = self.eps[from].pid;
                if ch.phase == Phase::Gone {
                    Err(SendErrorKind::ChannelNotFound)
                } else if sender != ch.initiator.1 && sender != ch.target.1 {
                    Err(SendErrorKind::NotParticipant)
                } else if ch.phase == Phase::Opening {
                    Err(SendErrorKind::ChannelNotOpen)
                } else if sender == ch.initiator.1 {
                    Ok(ch.target.0)
                } else {
                    Ok(ch.initiator.0)
                }
            }
        };
        (c, id, verdict)
    }

    fn channel_send(&mut self, index: u8, from: usize) {
        let seq = self.next_seq();
        let (c, id, verdict) = self.channel_check(index, from);
        let got = self.router.channel_send(id, self.eps[from].pid, payload(seq));
        let want = match (verdict, c) {
            (Ok(peer), Some(c)) => self.route(peer, Expect::ChannelMessage(c, seq), PARK),
            (Ok(_), None) => unreachable!("a verdict of Ok names a channel"),
            (Err(kind), _) => Err(kind),
        };
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(kind)) if e.kind() == kind => {
                if e.into_inner() != payload(seq) {
                    self.fail("channel_send: the payload handed back differs");
                }
            }
            (got, want) => {
                self.fail(&format!("channel_send: got {:?}, model {want:?}", got.map_err(|e| e.kind())));
            }
        }
    }

    fn close(&mut self, index: u8, from: usize) {
        let (c, id, verdict) = self.channel_check(index, from);
        let got = self.router.close_channel(id, self.eps[from].pid);
        let want = match (verdict, c) {
            (Ok(peer), Some(c)) => {
                self.chans[c].phase = Phase::Gone;
                self.groups += 1;
                self.chans[c].close_group = self.groups;
                let _ = self.route(peer, Expect::Close(c, self.groups), usize::MAX);
                Ok(())
            }
            (Ok(_), None) => unreachable!("a verdict of Ok names a channel"),
            (Err(SendErrorKind::Shutdown), _) => Err(ChannelError::Shutdown),
            (Err(SendErrorKind::NotParticipant), _) => Err(ChannelError::NotParticipant),
            (Err(SendErrorKind::ChannelNotOpen), _) => Err(ChannelError::NotOpen),
            (Err(_), _) => Err(ChannelError::ChannelNotFound),
        };
        if got != want {
            self.fail(&format!("close: got {got:?}, model {want:?}"));
        }
    }

    fn drop_mailbox(&mut self, slot: usize) {
        let Some(rx) = self.eps[slot].rx.take() else { return };
        drop(rx);
        let ep = &mut self.eps[slot];
        if ep.registered && !self.shut {
            // The queue lives on with the registration's sending half.
            ep.rx_dropped = true;
        } else {
            ep.mailbox.clear();
        }
    }

    fn shutdown(&mut self) {
        self.router.shutdown();
        if self.shut {
            return;
        }
        self.shut = true;
        for r in 0..self.reqs.len() {
            self.resolve_request(r, Err(RequestError::Shutdown));
        }
        for c in 0..self.chans.len() {
            self.decide(c, Err(ChannelError::Shutdown));
            self.chans[c].phase = Phase::Gone;
        }
        for slot in 0..self.eps.len() {
            let parked: Vec<Expect> = self.eps[slot].parked.drain(..).collect();
            for m in parked {
                self.undeliverable(slot, m, DeadLetterReason::Shutdown);
            }
            let ep = &mut self.eps[slot];
            ep.registered = false;
            if ep.rx_dropped {
                ep.mailbox.clear();
                ep.rx_dropped = false;
            }
        }
    }

    /// Removes the model's next message for `slot`, given the real one; close
    /// notices of one group may be taken in any order.
    fn take_expected(&mut self, slot: usize, real_close: Option<ChannelId>) -> Option<Expect> {
        let front = self.eps[slot].mailbox.pop_front()?;
        let (Expect::Close(c, group), Some(real)) = (front, real_close) else { return Some(front) };
        if self.chans[c].real == Some(real) {
            return Some(front);
        }
        let chans = &self.chans;
        let ep = &mut self.eps[slot];
        for m in ep.mailbox.iter_mut().chain(ep.parked.iter_mut()) {
            if let Expect::Close(other, g) = *m {
                if g == group && chans[other].real == Some(real) {
                    *m = Expect::Close(c, group);
                    return Some(Expect::Close(other, group));
                }
            }
        }
        // Not queued in the model: the model made that notice a dead letter (its
        // peer left while it was parked) where the router dead-lettered this one.
        // Dead close notices are compared by group, so the two simply trade places.
        if let Some(other) = chans.iter().position(|ch| ch.close_group == group && ch.real == Some(real)) {
            return Some(Expect::Close(other, group));
        }
        Some(front)
    }

    fn consume(&mut self, slot: usize, answer: Answer) {
        let Some(rx) = self.eps[slot].rx.as_ref() else { return };
        let got = rx.try_recv();
        let real_close = match &got {
            Ok(ActorMessage::ChannelClose { channel_id }) => Some(*channel_id),
            _ => None,
        };
        let want = self.take_expected(slot, real_close);
        let msg = match (got, want) {
            (Ok(msg), Some(want)) => self.compare(slot, msg, want),
            (Err(e), None) => {
                let ep = &self.eps[slot];
                let live = ep.registered && !self.shut;
                let expected = if live { TryRecvError::Empty } else { TryRecvError::Disconnected };
                if e != expected {
                    self.fail(&format!("consume: got {e:?}, model {expected:?} (empty mailbox)"));
                }
                return;
            }
            (got, want) => self.fail(&format!("consume: got {got:?}, model {want:?}")),
        };
        if let Some(held) = msg {
            self.act(held, answer);
        }
    }

    /// Compares a received message with the expected one; hands back a reply
    /// handle to act on.
    fn compare(&mut self, slot: usize, msg: ActorMessage, want: Expect) -> Option<Held> {
        match (msg, want) {
            (ActorMessage::Send { data }, Expect::Send(seq)) if data == payload(seq) => None,
            (ActorMessage::Request { data, reply }, Expect::Request(r))
                if data == payload(self.reqs[r].seq) =>
            {
                if reply.is_resolved() != self.reqs[r].outcome.is_some() {
                    self.fail(&format!("request {r}: handle resolved: {}", reply.is_resolved()));
                }
                Some(Held::Request(r, reply))
            }
            (ActorMessage::ChannelOpen { channel_id, initiator, initial_msg, reply }, Expect::Open(c))
                if initiator == self.chans[c].initiator.1 && initial_msg == payload(self.chans[c].seq) =>
            {
                if self.chans.iter().any(|ch| ch.real == Some(channel_id)) {
                    self.fail(&format!("channel {c}: id {channel_id:?} already in use"));
                }
                self.chans[c].real = Some(channel_id);
                if reply.is_resolved() != (self.chans[c].phase != Phase::Opening) {
                    self.fail(&format!("channel {c}: handle resolved: {}", reply.is_resolved()));
                }
                Some(Held::Open(c, reply))
            }
            (ActorMessage::ChannelMessage { channel_id, data }, Expect::ChannelMessage(c, seq))
                if Some(channel_id) == self.chans[c].real && data == payload(seq) =>
            {
                None
            }
            (ActorMessage::ChannelClose { channel_id }, Expect::Close(c, _))
                if Some(channel_id) == self.chans[c].real =>
            {
                None
            }
            (msg, want) => self.fail(&format!("consume at {slot}: got {msg:?}, model {want:?}")),
        }
    }

    fn resolve_held(&mut self, index: u8, answer: Answer) {
        if self.held.is_empty() {
            return;
        }
        let held = self.held.remove(usize::from(index) % self.held.len());
        self.act(held, answer);
    }

    fn act(&mut self, held: Held, answer: Answer) {
        match (held, answer) {
            (held, Answer::Hold) => self.held.push(held),
            (Held::Request(r, reply), Answer::Accept | Answer::AcceptEmpty) => {
                let data =
                    if answer == Answer::Accept { answer_payload(self.reqs[r].seq) } else { Vec::new() };
                let got = reply.reply(data.clone());
                let want = if self.resolve_request(r, Ok(data.clone())) { Ok(()) } else { Err(data) };
                if got != want {
                    self.fail(&format!("reply to request {r}: got {got:?}, model {want:?}"));
                }
            }
            (Held::Request(r, reply), Answer::Reject | Answer::Drop) => {
                drop(reply);
                self.resolve_request(r, Err(RequestError::NoReply));
            }
            (Held::Open(c, reply), Answer::Accept | Answer::AcceptEmpty) => {
                let response = (answer == Answer::Accept).then(|| answer_payload(self.chans[c].seq));
                let got = reply.accept(response.clone());
                let want =
                    if self.decide(c, Ok(response)) { Ok(()) } else { Err(ChannelError::ChannelNotFound) };
                if got != want {
                    self.fail(&format!("accept channel {c}: got {got:?}, model {want:?}"));
                }
            }
            (Held::Open(c, reply), Answer::Reject) => {
                reply.reject();
                self.decide(c, Err(ChannelError::Rejected));
            }
            (Held::Open(c, reply), Answer::Drop) => {
                drop(reply);
                self.decide(c, Err(ChannelError::Rejected));
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Comparison after each op

    fn check(&mut self, op: Op) {
        self.router.flush();
        self.settle_parked();
        for r in 0..self.reqs.len() {
            let Some(fut) = self.reqs[r].fut.as_mut() else { continue };
            match poll_now(fut) {
                Poll::Pending if self.reqs[r].outcome.is_none() => {}
                Poll::Ready(got) if Some(&got) == self.reqs[r].outcome.as_ref() => self.reqs[r].fut = None,
                got => self.fail(&format!(
                    "after {op:?}: request {r}: got {got:?}, model {:?}",
                    self.reqs[r].outcome
                )),
            }
        }
        for c in 0..self.chans.len() {
            let Some(fut) = self.chans[c].fut.as_mut() else { continue };
            let got = poll_now(fut);
            let ch = &self.chans[c];
            let same = match (&got, &ch.outcome) {
                (Poll::Pending, None) => true,
                (Poll::Ready(Ok(opened)), Some(Ok(response))) => {
                    Some(opened.id) == ch.real && opened.response == *response
                }
                (Poll::Ready(Err(e)), Some(Err(want))) => e == want,
                _ => false,
            };
            if !same {
                self.fail(&format!("after {op:?}: channel {c}: got {got:?}, model {:?}", ch.outcome));
            }
            if got.is_ready() {
                self.chans[c].fut = None;
            }
        }
        for (slot, ep) in self.eps.iter().enumerate() {
            if let Some(rx) = &ep.rx {
                if rx.len() != ep.mailbox.len() {
                    self.fail(&format!(
                        "after {op:?}: mailbox {slot} holds {}, model {}",
                        rx.len(),
                        ep.mailbox.len()
                    ));
                }
            }
            if !ep.external {
                let id = self.actor_id(slot);
                if self.router.is_registered(id) != (ep.registered && !self.shut) {
                    self.fail(&format!("after {op:?}: actor {slot} registered: {}", !ep.registered));
                }
            }
        }
        self.check_letters(op);
        self.check_metrics(op);
    }

    /// How a dead letter names its channel in the comparison. Close notices of
    /// one group reach the peer in any order, so which of them were still
    /// parked is open too: those are named by their group.
    fn letter_channel(&self, c: usize, data: &[u8]) -> u128 {
        let ch = &self.chans[c];
        if data.is_empty() && ch.close_group != 0 {
            (1 << 127) | u128::from(ch.close_group)
        } else {
            ch.real.map_or(0, |id| id.as_u128())
        }
    }

    fn check_letters(&self, op: Op) {
        let mut got: Vec<Letter> = self
            .letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| {
                let id = l.channel_id.map(|id| match self.chans.iter().position(|ch| ch.real == Some(id)) {
                    Some(c) => self.letter_channel(c, &l.data),
                    None => id.as_u128(),
                });
                (l.target, id, l.data.clone(), format!("{:?}", l.reason))
            })
            .collect();
        let mut want: Vec<Letter> = self
            .dead
            .iter()
            .map(|(target, c, data, reason)| {
                let id = c.map(|c| self.letter_channel(c, data));
                (*target, id, data.clone(), format!("{reason:?}"))
            })
            .collect();
        got.sort();
        want.sort();
        if got != want {
            self.fail(&format!("after {op:?}: dead letters\n  got   {got:?}\n  model {want:?}"));
        }
    }

    fn check_metrics(&self, op: Op) {
        let metrics = self.router.metrics();
        let total = metrics.total();
        let registered = if self.shut { 0 } else { self.eps.iter().filter(|e| e.registered).count() };
        let parked: usize = self.eps.iter().map(|e| e.parked.len()).sum();
        let channels = self.chans.iter().filter(|c| c.phase != Phase::Gone).count();
        let want = (registered, parked, self.dead.len() as u64, channels);
        let got =
            (total.registered_actors, total.overflow_depth, total.dead_letters, metrics.channels.channels);
        if got != want {
            self.fail(&format!(
                "after {op:?}: metrics (registered, parked, dead letters, channels): got {got:?}, model {want:?}"
            ));
        }
    }

    /// Ends the run: shut down, then every outcome must be final.
    fn finish(mut self) {
        self.step += 1;
        let _ = writeln!(self.log, "  (end: Shutdown)");
        self.shutdown();
        self.check(Op::Shutdown);
        if let Some(r) = self.reqs.iter().position(|r| r.fut.is_some()) {
            self.fail(&format!("request {r} still unresolved after shutdown"));
        }
        if let Some(c) = self.chans.iter().position(|c| c.fut.is_some()) {
            self.fail(&format!("channel {c} still unresolved after shutdown"));
        }
    }
}
