//! The `router_ops` differential check.
//!
//! An input is a list of [`Op`]s. Each op runs against a real [`Router`] (one or
//! two shards, mailboxes of [`CAPACITY`], [`OverflowPolicy::Park`] with
//! [`PARK`] per actor, so overflow is reached after a few sends) and against a
//! plain sequential model of what the router promises. After every op the driver
//! calls [`Router::flush`], so everything the shards were handed has been acted
//! on, and then compares: the op's result (success or the error kind, and the
//! payload handed back), the outcome of every request and channel open still
//! being waited on (with the payload or initial message a failure hands back),
//! how many messages each mailbox holds, the dead letters, and a few metrics.
//! Messages are compared one by one, in order, when an op consumes them.
//!
//! What is deterministic after `flush`: the harness is the only thread that
//! sends or receives, so whether a message went straight into a mailbox or was
//! parked at the shard depends only on the counts the model keeps. A parked
//! message enters the mailbox when the mailbox reports that it took a message
//! (its `Drain` notice reaches the shard); that is why a consume takes exactly
//! one message before the next flush. Requests and channel opens are driven with
//! `request_async` / `open_channel_async` futures polled by hand; the target
//! resolves them by acting on its mailbox message (reply, drop, accept, reject),
//! or later through a held handle, and the harness may drop (abandon) a pending
//! future. A "short" request or open uses a 1 ms timeout, and the driver waits
//! (bounded) until the shard's deadline resolves it, so the timeout always wins;
//! at most [`MAX_TIMED`] such ops run per input. Others use a long timeout or
//! `Duration::MAX` (no deadline), which behave alike here. The one order the
//! router leaves open is that of the `ChannelClose` notices one unregistration
//! sends to one peer; the model accepts them in any order.
//!
//! Dropping a registered participant's only [`Mailbox`] unregisters (detaches)
//! it at once, as `unregister` would, except that its parked messages become
//! dead letters with reason `MailboxClosed`. A leaving participant's opening
//! channels are settled before its parked messages are discarded, so an open
//! still parked for it fails without its initial message, which becomes a dead
//! letter; so does the payload of any parked request or open that already had
//! an outcome (timed out or abandoned) when the shard discards it (unregister,
//! dropped mailbox, shutdown). [`Op::ShutdownRace`] calls
//! `shutdown` from several threads at once and checks, in each thread as soon as
//! its call returns, that everything is already resolved.
//!
//! This file is shared by the `router_ops` fuzz target and the stable corpus
//! replay test at the repository root (`tests/fuzz_corpus.rs`), so it depends on
//! nothing but `std`, `arbitrary` and the crate.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use sharded_router::{
    ActorId, ActorMessage, ChannelError, ChannelId, ChannelOpenReply, DeadLetter, DeadLetterReason,
    ExternalId, Mailbox, OpenFailed, OpenFuture, OpenedChannel, OverflowPolicy, Participant, RegisterError,
    ReplyHandle, RequestError, RequestFailed, ResponseFuture, Router, SendErrorKind, TryRecvError,
    UnregisterError,
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

/// The timeout of a request or channel open.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// An hour: never reached during a run.
    Long,
    /// 1 ms, and the driver waits for the deadline to fire (at most
    /// [`MAX_TIMED`] per input; later ones use `Long`).
    Short,
    /// `Duration::MAX`: no deadline at all.
    Max,
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
    /// `request_async`.
    Request {
        /// Actor slot.
        to: u8,
        /// Its timeout.
        wait: Wait,
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
        /// Its timeout.
        wait: Wait,
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
    /// Drop a participant's receiving half (its only one): a registered
    /// participant leaves at once.
    DropMailbox {
        /// Participant slot.
        who: u8,
    },
    /// `shutdown`.
    Shutdown,
    /// Drop the future of a request that has no outcome yet (abandon it).
    AbandonRequest {
        /// Index into the pending requests.
        pending: u8,
    },
    /// Drop the future of a channel open that has no outcome yet (abandon it).
    AbandonOpen {
        /// Index into the pending opens.
        pending: u8,
    },
    /// `shutdown` from 2 to 4 threads at once.
    ShutdownRace {
        /// Threads: 2 + this modulo 3.
        threads: u8,
    },
    /// `register` (actor slot) or `attach_external` (endpoint slot) with a
    /// sending half whose receiving half was already dropped.
    RegisterClosed {
        /// Participant slot.
        who: u8,
    },
}

/// Decodes an input exactly as the fuzz target does.
///
/// # Errors
/// Only if `arbitrary` rejects the bytes (it never does for `Vec<Op>`).
pub fn decode(bytes: &[u8]) -> arbitrary::Result<Vec<Op>> {
    Vec::<Op>::arbitrary_take_rest(Unstructured::new(bytes))
}

/// Variants of [`Op`], for [`encode`].
const OP_VARIANTS: u64 = 18;

/// The bytes that [`decode`] turns into `ops`, for writing seed inputs.
#[must_use]
pub fn encode(ops: &[Op]) -> Vec<u8> {
    fn tag(out: &mut Vec<u8>, index: u64, count: u64) {
        // The derive picks variant `(u32 * count) >> 32`.
        let x = (index << 32).div_ceil(count);
        out.extend_from_slice(&u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes());
    }
    fn op(out: &mut Vec<u8>, index: u64) {
        tag(out, index, OP_VARIANTS);
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
    fn wait(out: &mut Vec<u8>, w: Wait) {
        let index = match w {
            Wait::Long => 0,
            Wait::Short => 1,
            Wait::Max => 2,
        };
        tag(out, index, 3);
    }
    let mut out = Vec::new();
    for o in ops {
        out.push(1); // "another element follows"
        match *o {
            Op::Register { actor } => {
                op(&mut out, 0);
                out.push(actor);
            }
            Op::Unregister { actor } => {
                op(&mut out, 1);
                out.push(actor);
            }
            Op::Send { to } => {
                op(&mut out, 2);
                out.push(to);
            }
            Op::Tell { to } => {
                op(&mut out, 3);
                out.push(to);
            }
            Op::Request { to, wait: w } => {
                op(&mut out, 4);
                out.push(to);
                wait(&mut out, w);
            }
            Op::Consume { who, answer: a } => {
                op(&mut out, 5);
                out.push(who);
                answer(&mut out, a);
            }
            Op::Resolve { held, answer: a } => {
                op(&mut out, 6);
                out.push(held);
                answer(&mut out, a);
            }
            Op::Open { from, to, wait: w } => {
                op(&mut out, 7);
                out.extend([from, to]);
                wait(&mut out, w);
            }
            Op::ChannelSend { channel, from } => {
                op(&mut out, 8);
                out.extend([channel, from]);
            }
            Op::Close { channel, from } => {
                op(&mut out, 9);
                out.extend([channel, from]);
            }
            Op::Attach { external } => {
                op(&mut out, 10);
                out.push(external);
            }
            Op::Detach { external } => {
                op(&mut out, 11);
                out.push(external);
            }
            Op::DropMailbox { who } => {
                op(&mut out, 12);
                out.push(who);
            }
            Op::Shutdown => op(&mut out, 13),
            Op::AbandonRequest { pending } => {
                op(&mut out, 14);
                out.push(pending);
            }
            Op::AbandonOpen { pending } => {
                op(&mut out, 15);
                out.push(pending);
            }
            Op::ShutdownRace { threads } => {
                op(&mut out, 16);
                out.push(threads);
            }
            Op::RegisterClosed { who } => {
                op(&mut out, 17);
                out.push(who);
            }
        }
    }
    out.push(0);
    out
}

/// The router's configuration for an input: one or two shards, and a timer
/// resolution of 1 ms or `Duration::MAX`, both from the number of ops.
#[must_use]
pub fn config(ops: &[Op]) -> (usize, Duration) {
    let n = ops.len().min(MAX_OPS);
    let resolution = if (n / 2) % 2 == 1 { Duration::MAX } else { TIMER_RESOLUTION };
    (1 + n % 2, resolution)
}

/// Runs `ops` against a real router and the model; panics on the first
/// difference, naming the op and what differed.
pub fn run(ops: &[Op]) {
    let ops = &ops[..ops.len().min(MAX_OPS)];
    let (shards, resolution) = config(ops);
    let mut h = Harness::new(shards, resolution);
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
    /// What the mailbox queue holds.
    mailbox: VecDeque<Expect>,
    /// What is in flight through the shard, in order.
    parked: VecDeque<Expect>,
}

/// A request's outcome: the reply, or the error and the payload handed back.
type ReqOutcome = Result<Vec<u8>, (RequestError, Option<Vec<u8>>)>;
/// An open's outcome: the response, or the error and the initial message handed back.
type OpenOutcome = Result<Option<Vec<u8>>, (ChannelError, Option<Vec<u8>>)>;

struct Req {
    seq: u32,
    target: usize,
    epoch: u64,
    outcome: Option<ReqOutcome>,
    fut: Option<ResponseFuture>,
}

struct Chan {
    seq: u32,
    initiator: (usize, Participant),
    target: (usize, Participant),
    phase: Phase,
    real: Option<ChannelId>,
    outcome: Option<OpenOutcome>,
    fut: Option<OpenFuture>,
    /// The group of the close notice sent for this channel (0: none yet).
    close_group: u64,
}

enum Held {
    Request(usize, ReplyHandle),
    Open(usize, ChannelOpenReply),
}

type Letter = (Participant, Option<u128>, Vec<u8>, String);

/// A pending future during [`Op::ShutdownRace`]: its index, the future, and its
/// output once a thread has seen it ready.
type Racing<F> = (usize, F, Option<<F as Future>::Output>);

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

/// What a request parked at the shard resolves with when the shard gives up on
/// it for `reason`.
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

fn same_request(got: &Result<Vec<u8>, RequestFailed>, want: Option<&ReqOutcome>) -> bool {
    match (got, want) {
        (Ok(data), Some(Ok(want))) => data == want,
        (Err(e), Some(Err((error, data)))) => e.error() == *error && e.payload() == data.as_deref(),
        _ => false,
    }
}

fn same_open(
    got: &Result<OpenedChannel, OpenFailed>,
    real: Option<ChannelId>,
    want: Option<&OpenOutcome>,
) -> bool {
    match (got, want) {
        (Ok(opened), Some(Ok(response))) => Some(opened.id) == real && opened.response == *response,
        (Err(e), Some(Err((error, initial)))) => e.error() == *error && e.initial_msg() == initial.as_deref(),
        _ => false,
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
    fn new(shards: usize, resolution: Duration) -> Self {
        let letters = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&letters);
        let router = Router::builder()
            .shards(shards)
            .mailbox_capacity(CAPACITY)
            .overflow(OverflowPolicy::Park { max_per_actor: PARK })
            .timer_resolution(resolution)
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
                mailbox: VecDeque::new(),
                parked: VecDeque::new(),
            })
            .collect();
        Self {
            router,
            letters,
            step: 0,
            log: format!("shards: {shards}, timer resolution: {resolution:?}\n"),
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
        if ep.parked.is_empty() && ep.mailbox.len() < CAPACITY {
            ep.mailbox.push_back(msg);
            return Ok(());
        }
        if ep.parked.len() >= bound {
            return Err(SendErrorKind::MailboxFull);
        }
        ep.parked.push_back(msg);
        Ok(())
    }

    /// A parked message the shard gives up on: one-way messages become dead
    /// letters; requests and opens fail, handing their payload back (it never
    /// reached the mailbox). A request or open that already had an outcome (timed
    /// out, abandoned, or an open settled because a participant left) cannot take
    /// it back: its payload becomes a dead letter with `reason`.
    fn undeliverable(&mut self, slot: usize, msg: Expect, reason: DeadLetterReason) {
        let target = self.eps[slot].pid;
        match msg {
            Expect::Send(seq) => self.dead.push((target, None, payload(seq), reason)),
            Expect::ChannelMessage(c, seq) => self.dead.push((target, Some(c), payload(seq), reason)),
            Expect::Close(c, _) => self.dead.push((target, Some(c), Vec::new(), reason)),
            Expect::Request(r) => {
                let data = payload(self.reqs[r].seq);
                if !self.resolve_request(r, Err((request_error(reason), Some(data.clone())))) {
                    self.dead.push((target, None, data, reason));
                }
            }
            Expect::Open(c) => {
                // Only shutdown reaches a parked open that is still opening: a
                // leaving target settles its opens first (see `leave`).
                let error = match reason {
                    DeadLetterReason::Shutdown => ChannelError::Shutdown,
                    _ => ChannelError::ParticipantNotFound(self.chans[c].target.1),
                };
                let initial = payload(self.chans[c].seq);
                if !self.decide(c, Err((error, Some(initial.clone())))) {
                    self.dead.push((target, Some(c), initial, reason));
                }
            }
        }
    }

    /// Gives request `r` its outcome; `false` if it already had one.
    fn resolve_request(&mut self, r: usize, outcome: ReqOutcome) -> bool {
        let req = &mut self.reqs[r];
        if req.outcome.is_some() {
            return false;
        }
        req.outcome = Some(outcome);
        true
    }

    /// Settles an opening channel; `false` if it was already settled.
    fn decide(&mut self, c: usize, outcome: OpenOutcome) -> bool {
        let ch = &mut self.chans[c];
        if ch.phase != Phase::Opening {
            return false;
        }
        ch.phase = if outcome.is_ok() { Phase::Open } else { Phase::Gone };
        ch.outcome = Some(outcome);
        true
    }

    /// A participant leaves: unregister or detach (`Unregistered`), or its last
    /// mailbox was dropped (`MailboxClosed`, the reason its parked messages get).
    fn leave(&mut self, slot: usize, reason: DeadLetterReason) {
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
                    self.decide(c, Err((ChannelError::ParticipantNotFound(leaver), None)));
                }
                Phase::Open => {
                    self.chans[c].phase = Phase::Gone;
                    self.chans[c].close_group = group;
                    let _ = self.route(peer, Expect::Close(c, group), usize::MAX);
                }
                Phase::Gone => {}
            }
        }
        // Then the shard discards what was parked: requests among it fail with
        // their payload; opens were settled above (the leaver is one of their
        // participants), so their initial messages become dead letters.
        let parked: Vec<Expect> = self.eps[slot].parked.drain(..).collect();
        for m in parked {
            self.undeliverable(slot, m, reason);
        }
        for r in 0..self.reqs.len() {
            if self.reqs[r].target == slot && self.reqs[r].epoch == epoch {
                self.resolve_request(r, Err((RequestError::ActorNotFound, None)));
            }
        }
    }

    /// The shard moves parked messages in as room appears.
    fn settle_parked(&mut self) {
        for ep in &mut self.eps {
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
            Op::Request { to, wait } => self.request(usize::from(to) % ACTORS, wait),
            Op::Consume { who, answer } => self.consume(usize::from(who) % PARTICIPANTS, answer),
            Op::Resolve { held, answer } => self.resolve_held(held, answer),
            Op::Open { from, to, wait } => {
                self.open(usize::from(from) % PARTICIPANTS, usize::from(to) % PARTICIPANTS, wait);
            }
            Op::ChannelSend { channel, from } => self.channel_send(channel, usize::from(from) % PARTICIPANTS),
            Op::Close { channel, from } => self.close(channel, usize::from(from) % PARTICIPANTS),
            Op::Attach { external } => self.attach(ACTORS + usize::from(external) % EXTERNALS),
            Op::Detach { external } => self.detach(ACTORS + usize::from(external) % EXTERNALS),
            Op::DropMailbox { who } => self.drop_mailbox(usize::from(who) % PARTICIPANTS),
            Op::Shutdown => self.shutdown(),
            Op::AbandonRequest { pending } => self.abandon_request(pending),
            Op::AbandonOpen { pending } => self.abandon_open(pending),
            Op::ShutdownRace { threads } => self.shutdown_race(2 + usize::from(threads) % 3),
            Op::RegisterClosed { who } => self.register_closed(usize::from(who) % PARTICIPANTS),
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

    /// Registers (or attaches) a sending half whose receiver is gone: refused
    /// (`Shutdown` first, then `MailboxClosed`, even for a taken id), and nothing
    /// changes.
    fn register_closed(&mut self, slot: usize) {
        let (tx, rx) = self.router.mailbox();
        drop(rx);
        if self.eps[slot].external {
            let got = self.router.attach_external(tx);
            let want = if self.shut { RegisterError::Shutdown } else { RegisterError::MailboxClosed };
            match got {
                Err(e) if e == want => {}
                got => self.fail(&format!("attach with a closed mailbox: got {got:?}, model Err({want:?})")),
            }
            return;
        }
        let id = self.actor_id(slot);
        let got = self.router.register(id, tx);
        // The sending half is looked at before the table.
        let want = if self.shut { RegisterError::Shutdown } else { RegisterError::MailboxClosed };
        if got != Err(want) {
            self.fail(&format!("register with a closed mailbox: got {got:?}, model Err({want:?})"));
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
            self.leave(slot, DeadLetterReason::Unregistered);
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
            self.leave(slot, DeadLetterReason::Unregistered);
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
        match (self.router.try_send(id, payload(seq)), want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(kind)) if e.kind() == kind => {
                if e.into_inner() != payload(seq) {
                    self.fail("send: the payload handed back differs");
                }
            }
            (got, want) => self.fail(&format!("send: got {:?}, model {want:?}", got.map_err(|e| e.kind()))),
        }
    }

    /// The timeout for a request or open; `true` if it is a short one the
    /// driver waits out.
    fn timeout(&mut self, wait: Wait) -> (Duration, bool) {
        match wait {
            Wait::Short if self.timed < MAX_TIMED => {
                self.timed += 1;
                (SHORT, true)
            }
            Wait::Short | Wait::Long => (LONG, false),
            Wait::Max => (Duration::MAX, false),
        }
    }

    fn request(&mut self, slot: usize, wait: Wait) {
        let (timeout, short) = self.timeout(wait);
        let seq = self.next_seq();
        let id = self.actor_id(slot);
        let fut = self.router.request_async(id, payload(seq), timeout);
        let r = self.reqs.len();
        let epoch = self.eps[slot].epoch;
        self.reqs.push(Req { seq, target: slot, epoch, outcome: None, fut: Some(fut) });
        if let Err(kind) = self.route(slot, Expect::Request(r), PARK) {
            // Refused at the send: the payload comes back.
            self.resolve_request(r, Err((request_error_of(kind), Some(payload(seq)))));
        }
        if short && self.reqs[r].outcome.is_none() {
            self.resolve_request(r, Err((RequestError::Timeout, None)));
            let fut = self.reqs[r].fut.as_mut().expect("just made");
            match wait_ready(fut) {
                Some(Err(e)) if e == RequestError::Timeout && e.payload().is_none() => {
                    self.reqs[r].fut = None
                }
                other => self.fail(&format!("short request: got {other:?} instead of a timeout")),
            }
        }
    }

    fn open(&mut self, from: usize, to: usize, wait: Wait) {
        let (timeout, short) = self.timeout(wait);
        let seq = self.next_seq();
        let (a, b) = (self.eps[from].pid, self.eps[to].pid);
        let fut = self.router.open_channel_async(a, b, payload(seq), timeout);
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
        // Refused before reaching the target: the initial message comes back.
        if let Some(e) = early {
            self.decide(c, Err((e, Some(payload(seq)))));
        } else if let Err(kind) = self.route(to, Expect::Open(c), PARK) {
            self.decide(c, Err((open_error(request_error_of(kind), b), Some(payload(seq)))));
        }
        if short && self.chans[c].phase == Phase::Opening {
            self.decide(c, Err((ChannelError::Timeout, None)));
            let fut = self.chans[c].fut.as_mut().expect("just made");
            match wait_ready(fut) {
                Some(Err(e)) if e == ChannelError::Timeout && e.initial_msg().is_none() => {
                    self.chans[c].fut = None;
                }
                other => self.fail(&format!("short open: got {other:?} instead of a timeout")),
            }
        }
    }

    /// Drops the future of a pending request: the request is abandoned, so its
    /// reply handle reads resolved and a later reply is refused.
    fn abandon_request(&mut self, index: u8) {
        let pending: Vec<usize> = (0..self.reqs.len()).filter(|&r| self.reqs[r].fut.is_some()).collect();
        if pending.is_empty() {
            return;
        }
        let r = pending[usize::from(index) % pending.len()];
        let _ = writeln!(self.log, "    (request {r})");
        drop(self.reqs[r].fut.take());
        // Never compared (the future is gone); it only marks the request resolved.
        if !self.resolve_request(r, Err((RequestError::NoReply, None))) {
            self.fail(&format!("request {r} had an outcome but its future was pending"));
        }
    }

    /// Drops the future of a pending open: the channel is removed, so its open
    /// handle reads resolved and a later accept gets `ChannelNotFound`.
    fn abandon_open(&mut self, index: u8) {
        let pending: Vec<usize> = (0..self.chans.len()).filter(|&c| self.chans[c].fut.is_some()).collect();
        if pending.is_empty() {
            return;
        }
        let c = pending[usize::from(index) % pending.len()];
        let _ = writeln!(self.log, "    (channel {c})");
        drop(self.chans[c].fut.take());
        if !self.decide(c, Err((ChannelError::ChannelNotFound, None))) {
            self.fail(&format!("channel {c} was settled but its future was pending"));
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

    /// Drops the participant's only receiving half. A registered participant
    /// leaves at once, as if unregistered, its parked messages dead-lettered
    /// with `MailboxClosed`; what its mailbox held goes with the queue.
    fn drop_mailbox(&mut self, slot: usize) {
        let Some(rx) = self.eps[slot].rx.take() else { return };
        drop(rx);
        if self.eps[slot].registered && !self.shut {
            self.leave(slot, DeadLetterReason::MailboxClosed);
        }
        self.eps[slot].mailbox.clear();
    }

    fn shutdown(&mut self) {
        self.router.shutdown();
        self.model_shutdown();
    }

    /// The model's side of `shutdown`: parked messages are discarded (requests
    /// and opens among them hand their payload back), then every other pending
    /// request and open fails with `Shutdown`.
    fn model_shutdown(&mut self) {
        if self.shut {
            return;
        }
        for slot in 0..self.eps.len() {
            let parked: Vec<Expect> = self.eps[slot].parked.drain(..).collect();
            for m in parked {
                self.undeliverable(slot, m, DeadLetterReason::Shutdown);
            }
        }
        self.shut = true;
        for r in 0..self.reqs.len() {
            self.resolve_request(r, Err((RequestError::Shutdown, None)));
        }
        for c in 0..self.chans.len() {
            self.decide(c, Err((ChannelError::Shutdown, None)));
            self.chans[c].phase = Phase::Gone;
        }
        for ep in &mut self.eps {
            ep.registered = false;
        }
    }

    /// `shutdown` from several threads at once. Each thread, as soon as its call
    /// returns, checks that the shutdown is complete: every pending future is
    /// ready, every held handle resolved, every parked message dead-lettered
    /// (delivered to the sink and counted), nothing registered, parked or open.
    fn shutdown_race(&mut self, threads: usize) {
        self.model_shutdown();
        let want_letters = self.dead.len();
        // The pending futures, polled by whichever thread gets there first.
        let reqs: Mutex<Vec<Racing<ResponseFuture>>> = Mutex::new(
            (0..self.reqs.len()).filter_map(|r| self.reqs[r].fut.take().map(|f| (r, f, None))).collect(),
        );
        let chans: Mutex<Vec<Racing<OpenFuture>>> = Mutex::new(
            (0..self.chans.len()).filter_map(|c| self.chans[c].fut.take().map(|f| (c, f, None))).collect(),
        );
        let problems = Mutex::new(Vec::<String>::new());
        let barrier = Barrier::new(threads);
        let (router, letters, held) = (&self.router, &self.letters, &self.held);
        std::thread::scope(|s| {
            let mut handles = Vec::with_capacity(threads);
            for t in 0..threads {
                let (reqs, chans, problems, barrier) = (&reqs, &chans, &problems, &barrier);
                handles.push(s.spawn(move || {
                    barrier.wait();
                    router.shutdown();
                    let mut found = Vec::new();
                    if !router.is_shutdown() {
                        found.push("is_shutdown() is false".to_owned());
                    }
                    let sunk = letters.lock().unwrap_or_else(|e| e.into_inner()).len();
                    if sunk != want_letters {
                        found.push(format!("{sunk} dead letters in the sink, model {want_letters}"));
                    }
                    let metrics = router.metrics();
                    let total = metrics.total();
                    let got = (
                        total.registered_actors,
                        total.overflow_depth,
                        total.dead_letters,
                        metrics.channels.channels,
                    );
                    if got != (0, 0, want_letters as u64, 0) {
                        found.push(format!(
                            "metrics (registered, parked, dead letters, channels): {got:?}, model (0, 0, {want_letters}, 0)"
                        ));
                    }
                    for (i, h) in held.iter().enumerate() {
                        let resolved = match h {
                            Held::Request(_, reply) => reply.is_resolved(),
                            Held::Open(_, reply) => reply.is_resolved(),
                        };
                        if !resolved {
                            found.push(format!("held handle {i} is not resolved"));
                        }
                    }
                    for (r, fut, outcome) in reqs.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                        if outcome.is_none() {
                            match poll_now(fut) {
                                Poll::Ready(v) => *outcome = Some(v),
                                Poll::Pending => found.push(format!("request {r} is pending")),
                            }
                        }
                    }
                    for (c, fut, outcome) in chans.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                        if outcome.is_none() {
                            match poll_now(fut) {
                                Poll::Ready(v) => *outcome = Some(v),
                                Poll::Pending => found.push(format!("channel open {c} is pending")),
                            }
                        }
                    }
                    let mut problems = problems.lock().unwrap_or_else(|e| e.into_inner());
                    problems.extend(found.into_iter().map(|p| format!("thread {t}: {p}")));
                }));
            }
            // Join each thread explicitly: the scope alone waits for the closures,
            // not for the threads to exit, and a thread still running its
            // thread-local destructors reads as a leak to LeakSanitizer.
            for handle in handles {
                if handle.join().is_err() {
                    problems.lock().unwrap_or_else(|e| e.into_inner()).push("a thread panicked".to_owned());
                }
            }
        });
        let problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
        if !problems.is_empty() {
            self.fail(&format!("after its shutdown() returned:\n  {}", problems.join("\n  ")));
        }
        for (r, _, got) in reqs.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let Some(got) = got else { continue };
            if !same_request(&got, self.reqs[r].outcome.as_ref()) {
                self.fail(&format!("request {r}: got {got:?}, model {:?}", self.reqs[r].outcome));
            }
        }
        for (c, _, got) in chans.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let Some(got) = got else { continue };
            if !same_open(&got, self.chans[c].real, self.chans[c].outcome.as_ref()) {
                self.fail(&format!("channel {c}: got {got:?}, model {:?}", self.chans[c].outcome));
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
        // When a message is known to be waiting, a wait without a deadline
        // returns it at once.
        let waiting = !self.eps[slot].mailbox.is_empty() && !rx.is_empty();
        let got = if waiting { rx.recv_timeout(Duration::MAX) } else { rx.try_recv() };
        let real_close = match &got {
            Ok(ActorMessage::ChannelClose { channel_id, .. }) => Some(*channel_id),
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
            (ActorMessage::ChannelMessage { channel_id, data, .. }, Expect::ChannelMessage(c, seq))
                if Some(channel_id) == self.chans[c].real && data == payload(seq) =>
            {
                None
            }
            (ActorMessage::ChannelClose { channel_id, .. }, Expect::Close(c, _))
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
                self.resolve_request(r, Err((RequestError::NoReply, None)));
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
                self.decide(c, Err((ChannelError::Rejected, None)));
            }
            (Held::Open(c, reply), Answer::Drop) => {
                drop(reply);
                self.decide(c, Err((ChannelError::Rejected, None)));
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
                Poll::Ready(got) if same_request(&got, self.reqs[r].outcome.as_ref()) => {
                    self.reqs[r].fut = None
                }
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
            let same = match &got {
                Poll::Pending => ch.outcome.is_none(),
                Poll::Ready(got) => same_open(got, ch.real, ch.outcome.as_ref()),
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
    /// parked is open too: those are named by their group. An open's initial
    /// message that never reached the target's mailbox carries an id the model
    /// never saw: it is named by the channel's index.
    fn letter_channel(&self, c: usize, data: &[u8]) -> u128 {
        let ch = &self.chans[c];
        if data.is_empty() && ch.close_group != 0 {
            (1 << 127) | u128::from(ch.close_group)
        } else if let Some(id) = ch.real {
            id.as_u128()
        } else {
            (1 << 126) | c as u128
        }
    }

    /// The channel of a real dead letter: the one with that id, or else the
    /// channel whose id the model never saw and whose initial message `data` is
    /// (an open discarded while parked; payloads are unique).
    fn letter_channel_of(&self, id: ChannelId, data: &[u8]) -> Option<usize> {
        self.chans.iter().position(|ch| ch.real == Some(id)).or_else(|| {
            self.chans.iter().position(|ch| ch.real.is_none() && data == payload(ch.seq).as_slice())
        })
    }

    fn check_letters(&self, op: Op) {
        let mut got: Vec<Letter> = self
            .letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| {
                let id = l.channel_id.map(|id| match self.letter_channel_of(id, &l.data) {
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
