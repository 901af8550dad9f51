//! Edges (issue 10): what users get wrong, and what the router promises then.
//!
//! One or more tests per item of the "Behaviour" list in the issue: panicking
//! callbacks, `Duration::MAX`, dropped futures, concurrent shutdown, replies racing
//! unregistration, payloads handed back, forged channel traffic, the per-shard
//! parking bound and actors whose mailbox is dropped. Every wait is bounded: a hung
//! test fails with a message instead of hanging the suite.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::spawn_echo as echo;
use sharded_router::compat::{oneshot, MessageCommand, MessageRouter, RouteError};
use sharded_router::{
    reply_channel, ActorId, ActorMessage, ChannelError, ChannelId, DeadLetter, DeadLetterReason, Mailbox,
    OpenFailed, OpenedChannel, OverflowPolicy, Participant, RegisterError, ReplyHandle, RequestError,
    RequestFailed, Router, SendErrorKind, TryRecvError,
};

/// Hang guard for every wait. Generous: it only turns a hang into a failure.
const LONG: Duration = Duration::from_secs(30);
/// A deadline no test reaches.
const HOUR: Duration = Duration::from_secs(3600);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------
// Helpers

/// Runs `f` on its own thread and waits at most `LONG` for its result.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LONG) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

/// Drives `fut` to completion on its own thread, for at most `LONG`.
fn block_on_bounded<F>(what: &str, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    bounded(what, move || futures_executor::block_on(fut))
}

/// Polls `check` until it holds, for at most `LONG`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

/// A waker that panics when woken.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics on wake");
    }

    fn wake_by_ref(self: &Arc<Self>) {
        panic!("this waker panics on wake_by_ref");
    }
}

fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_with(fut, &Waker::from(Arc::new(NoopWaker)))
}

fn actor(router: &Router) -> (ActorId, Mailbox) {
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    (id, rx)
}

/// The error of a request that must have failed (the reply is not printed: it may be
/// a mebibyte).
fn failed(outcome: Result<Vec<u8>, RequestFailed>) -> RequestFailed {
    match outcome {
        Ok(reply) => panic!("expected the request to fail, got a reply of {} bytes", reply.len()),
        Err(e) => e,
    }
}

fn open_failed(outcome: Result<OpenedChannel, OpenFailed>) -> OpenFailed {
    match outcome {
        Ok(opened) => panic!("expected the open to fail, got {opened:?}"),
        Err(e) => e,
    }
}

/// A payload whose bytes say where they came from.
fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag ^ (i as u8)).collect()
}

type Letters = Arc<Mutex<Vec<DeadLetter>>>;

/// A sink that records every dead letter.
fn recording_router(
    configure: impl FnOnce(sharded_router::RouterBuilder) -> sharded_router::RouterBuilder,
) -> (Router, Letters) {
    let letters: Letters = Arc::default();
    let sink = Arc::clone(&letters);
    let builder = Router::builder().on_dead_letter(move |l| sink.lock().unwrap().push(l));
    (configure(builder).build().unwrap(), letters)
}

/// Finds which shard `id` hashes to, by registering it and watching the counts.
fn shard_of(router: &Router, id: ActorId) -> usize {
    let before: Vec<usize> = router.metrics().shards.iter().map(|s| s.registered_actors).collect();
    let (tx, rx) = router.mailbox();
    router.register(id, tx).unwrap();
    let after: Vec<usize> = router.metrics().shards.iter().map(|s| s.registered_actors).collect();
    router.unregister(id).unwrap();
    drop(rx);
    let moved: Vec<usize> = (0..before.len()).filter(|&i| after[i] == before[i] + 1).collect();
    assert_eq!(moved.len(), 1, "no other registrations run during this test");
    moved[0]
}

fn flush_bounded(router: &Router) {
    let r = router.clone();
    bounded("flush", move || r.flush());
}

fn shutdown_bounded(router: &Router) {
    let r = router.clone();
    bounded("shutdown", move || r.shutdown());
}

fn pending_timers(router: &Router) -> usize {
    router.metrics().shards.iter().map(|s| s.pending_timers).sum()
}

fn expect_request(rx: &Mailbox) -> (Vec<u8>, ReplyHandle) {
    match rx.recv_timeout(LONG).expect("a request in time") {
        ActorMessage::Request { data, reply } => (data, reply),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn expect_close(rx: &Mailbox, channel: ChannelId) {
    match rx.recv_timeout(LONG).expect("a close in time") {
        ActorMessage::ChannelClose { channel_id, .. } if channel_id == channel => {}
        other => panic!("expected the close of {channel:?}, got {other:?}"),
    }
}

/// Opens a channel from `from` to `to`, accepting it on `to_rx` by hand.
fn open_by_hand(router: &Router, from: ActorId, to: ActorId, to_rx: &Mailbox) -> ChannelId {
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(from, to, b"open".to_vec(), LONG));
    match to_rx.recv_timeout(LONG).expect("an open in time") {
        ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).unwrap(),
        other => panic!("expected an open, got {other:?}"),
    }
    bounded("the opener", move || opener.join().unwrap()).unwrap().id
}

// ---------------------------------------------------------------------------------
// 1. Callbacks are fenced: a panicking dead-letter sink or waker never takes a shard
//    thread (or a caller) down.

#[test]
fn a_panicking_dead_letter_sink_is_caught_and_the_shard_keeps_working() {
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .on_dead_letter(|l| panic!("the sink refuses a letter of {} bytes", l.data.len()))
        .build()
        .unwrap();

    // Dead letters on the shard thread: the parked messages of an actor that leaves.
    let (victim, victim_rx) = actor(&router);
    for i in 0..3u8 {
        router.try_send(victim, vec![i]).unwrap();
    }
    router.unregister(victim).unwrap();
    flush_bounded(&router);
    drop(victim_rx);

    // A dead letter on the caller's thread: the sink's panic must not reach it.
    let told = catch_unwind(AssertUnwindSafe(|| router.tell(ActorId::new(), b"lost".to_vec())));
    assert!(told.is_ok(), "tell let the sink's panic escape into the caller");

    // The shard still keeps deadlines: an async request (the shard's timer is the
    // only thing that can end it) times out.
    let (silent, silent_rx) = actor(&router);
    let timed_out = failed(block_on_bounded(
        "an async request with a 50 ms timeout",
        router.request_async(silent, b"t".to_vec(), Duration::from_millis(50)),
    ));
    assert_eq!(timed_out.error(), RequestError::Timeout);

    // ... answers requests ...
    let echo = echo(&router);
    let r = router.clone();
    let answer = bounded("a request", move || r.request(echo, b"ping".to_vec(), LONG));
    assert_eq!(answer.unwrap(), b"ping");

    // ... and delivers parked messages in order.
    let (slow, slow_rx) = actor(&router);
    for i in 0..6u8 {
        router.try_send(slow, vec![i]).unwrap();
    }
    for i in 0..6u8 {
        assert_eq!(slow_rx.recv_timeout(LONG).expect("an overflow delivery").data(), [i]);
    }

    // A second batch of shard-thread panics after all that.
    let (victim2, victim2_rx) = actor(&router);
    for i in 0..3u8 {
        router.try_send(victim2, vec![i]).unwrap();
    }
    router.unregister(victim2).unwrap();
    flush_bounded(&router);
    drop(victim2_rx);
    let timed_out = failed(block_on_bounded(
        "an async request after more sink panics",
        router.request_async(silent, b"t2".to_vec(), Duration::from_millis(50)),
    ));
    assert_eq!(timed_out.error(), RequestError::Timeout);

    let m = router.metrics();
    // 2 parked + 1 told + 2 parked: every letter reached the sink, and it panicked.
    assert_eq!(m.shards[0].dead_letters, 5, "dead letters");
    assert_eq!(m.shards[0].callback_panics, 5, "every sink panic is counted");
    assert!(!m.shards[0].failed, "a sink panic does not fail the shard");
    assert!(!router.is_degraded());
    assert!(router.failed_shards().is_empty());
    drop(silent_rx);
    shutdown_bounded(&router);
}

#[test]
fn sink_panics_are_counted_on_the_shard_the_letter_belongs_to() {
    let router = Router::builder().shards(4).on_dead_letter(|_| panic!("the sink panics")).build().unwrap();
    let mut expected = [0u64; 4];
    for _ in 0..16 {
        let id = ActorId::new();
        let shard = shard_of(&router, id);
        let told = catch_unwind(AssertUnwindSafe(|| router.tell(id, vec![1])));
        assert!(told.is_ok(), "tell let the sink's panic escape");
        expected[shard] += 1;
    }
    let counted: Vec<u64> = router.metrics().shards.iter().map(|s| s.callback_panics).collect();
    assert_eq!(counted, expected);
    assert!(!router.is_degraded());
}

#[test]
fn a_sink_panicking_during_shutdown_still_resolves_parked_requests_with_their_payload() {
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .on_dead_letter(|_| panic!("the sink panics at shutdown"))
        .build()
        .unwrap();
    let (id, rx) = actor(&router);
    router.try_send(id, b"m0".to_vec()).unwrap(); // in the mailbox
    router.try_send(id, b"m1".to_vec()).unwrap(); // parked
    let mut parked_request = router.request_async(id, b"parked-q".to_vec(), HOUR); // parked
    assert!(poll_once(&mut parked_request).is_pending());
    router.try_send(id, b"m2".to_vec()).unwrap(); // parked
    flush_bounded(&router);
    assert_eq!(router.metrics().shards[0].overflow_depth, 3);

    shutdown_bounded(&router);
    // The sink panicked on m1 before the shard reached the request: it must still be
    // resolved as a shutdown, with its payload (it never reached the mailbox).
    match poll_once(&mut parked_request) {
        Poll::Ready(outcome) => {
            let e = failed(outcome);
            assert_eq!(e.error(), RequestError::Shutdown);
            assert_eq!(e.into_payload().as_deref(), Some(&b"parked-q"[..]));
        }
        Poll::Pending => panic!("shutdown returned with a parked request unresolved"),
    }
    let m = router.metrics();
    assert_eq!(m.shards[0].dead_letters, 2, "m1 and m2");
    assert_eq!(m.shards[0].callback_panics, 2);
    assert_eq!(m.shards[0].overflow_depth, 0);
    assert_eq!(rx.try_recv().unwrap().data(), b"m0");
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
}

#[test]
fn a_panicking_waker_woken_by_the_shard_does_not_take_it_down() {
    let router = Router::builder().shards(1).mailbox_capacity(1).build().unwrap();
    let (silent, silent_rx) = actor(&router);
    let mut fut = router.request_async(silent, b"w".to_vec(), Duration::from_millis(30));
    assert!(poll_with(&mut fut, &Waker::from(Arc::new(PanickingWaker))).is_pending());
    // Only the shard's timer resolves this request, and it wakes the panicking waker.
    let (_, reply) = expect_request(&silent_rx);
    eventually("the shard to time the request out", || reply.is_resolved());
    match poll_once(&mut fut) {
        Poll::Ready(outcome) => assert_eq!(failed(outcome).error(), RequestError::Timeout),
        Poll::Pending => panic!("resolved, but the future is still pending"),
    }

    // The shard is alive: another deadline fires, parked messages flow.
    let timed_out = failed(block_on_bounded(
        "an async request after the waker panicked",
        router.request_async(silent, b"again".to_vec(), Duration::from_millis(50)),
    ));
    assert_eq!(timed_out.error(), RequestError::Timeout);
    let (slow, slow_rx) = actor(&router);
    for i in 0..4u8 {
        router.try_send(slow, vec![i]).unwrap();
    }
    for i in 0..4u8 {
        assert_eq!(slow_rx.recv_timeout(LONG).expect("an overflow delivery").data(), [i]);
    }
    assert!(!router.is_degraded());
    assert!(!router.metrics().shards[0].failed);
    drop(reply);
    shutdown_bounded(&router);
}

#[test]
fn a_panicking_waker_does_not_escape_reply_unregister_or_shutdown() {
    let router = Router::builder().shards(2).build().unwrap();
    let panicky = Waker::from(Arc::new(PanickingWaker));

    // Woken by the actor's reply.
    let (id, rx) = actor(&router);
    let mut fut = router.request_async(id, b"q".to_vec(), HOUR);
    assert!(poll_with(&mut fut, &panicky).is_pending());
    let (_, reply) = expect_request(&rx);
    let replied = catch_unwind(AssertUnwindSafe(|| reply.reply(b"answer".to_vec())));
    assert!(matches!(replied, Ok(Ok(()))), "reply let the waker's panic escape (or refused)");
    match poll_once(&mut fut) {
        Poll::Ready(outcome) => assert_eq!(outcome.unwrap(), b"answer"),
        Poll::Pending => panic!("answered, but the future is still pending"),
    }

    // Woken by unregistration.
    let mut fut = router.request_async(id, b"q2".to_vec(), HOUR);
    assert!(poll_with(&mut fut, &panicky).is_pending());
    let (_, held) = expect_request(&rx);
    let unregistered = catch_unwind(AssertUnwindSafe(|| router.unregister(id)));
    assert!(matches!(unregistered, Ok(Ok(()))), "unregister let the waker's panic escape");
    assert!(held.is_resolved());
    let outcome = block_on_bounded("the unregistered request", fut);
    assert_eq!(failed(outcome).error(), RequestError::ActorNotFound);

    // Woken by shutdown.
    let (id2, rx2) = actor(&router);
    let mut fut = router.request_async(id2, b"q3".to_vec(), HOUR);
    assert!(poll_with(&mut fut, &panicky).is_pending());
    let (_, held2) = expect_request(&rx2);
    let r = router.clone();
    let shut = bounded("shutdown", move || catch_unwind(AssertUnwindSafe(|| r.shutdown())).is_ok());
    assert!(shut, "shutdown let the waker's panic escape");
    assert!(held2.is_resolved());
    assert_eq!(failed(block_on_bounded("the shut-down request", fut)).error(), RequestError::Shutdown);
}

// ---------------------------------------------------------------------------------
// 2. Duration::MAX means no deadline, anywhere; nothing panics.

#[test]
fn timer_resolution_duration_max_does_not_break_the_shards() {
    let router = Router::builder().shards(2).timer_resolution(Duration::MAX).build().unwrap();
    let echo = echo(&router);
    let big = payload(7, MIB);
    let r = router.clone();
    let expected = big.clone();
    let answer = bounded("a request", move || r.request(echo, big, LONG));
    assert_eq!(answer.unwrap(), expected);
    let answer = block_on_bounded("an async request", router.request_async(echo, b"a".to_vec(), LONG));
    assert_eq!(answer.unwrap(), b"a");

    // A deadline earlier than the shard's (never) next period still fires.
    let (silent, silent_rx) = actor(&router);
    for _ in 0..3 {
        let outcome = block_on_bounded(
            "an async request with a 50 ms timeout",
            router.request_async(silent, vec![], Duration::from_millis(50)),
        );
        assert_eq!(failed(outcome).error(), RequestError::Timeout);
    }
    flush_bounded(&router);
    assert!(!router.is_degraded());
    drop(silent_rx);
    shutdown_bounded(&router);
}

#[test]
fn mailbox_recv_timeout_duration_max_waits_without_a_deadline() {
    let router = Router::builder().shards(1).build().unwrap();
    let (id, rx) = actor(&router);
    let rx = Arc::new(rx);
    let waiting = {
        let rx = Arc::clone(&rx);
        thread::spawn(move || rx.recv_timeout(Duration::MAX).map(|m| m.data().to_vec()))
    };
    thread::sleep(Duration::from_millis(20));
    router.try_send(id, b"late".to_vec()).unwrap();
    let got = bounded("recv_timeout(MAX)", move || waiting.join().expect("recv_timeout(MAX) panicked"));
    assert_eq!(got.unwrap(), b"late");

    // With nothing coming, it ends when the actor unregisters.
    let waiting = {
        let rx = Arc::clone(&rx);
        thread::spawn(move || rx.recv_timeout(Duration::MAX).map(|m| m.data().to_vec()))
    };
    thread::sleep(Duration::from_millis(20));
    router.unregister(id).unwrap();
    let got = bounded("recv_timeout(MAX)", move || waiting.join().expect("recv_timeout(MAX) panicked"));
    assert_eq!(got.unwrap_err(), TryRecvError::Disconnected);
}

#[test]
fn reply_receiver_recv_timeout_duration_max_waits_without_a_deadline() {
    let (handle, rx) = reply_channel();
    let waiting = thread::spawn(move || rx.recv_timeout(Duration::MAX));
    thread::sleep(Duration::from_millis(20));
    handle.reply(b"pong".to_vec()).unwrap();
    let got = bounded("ReplyReceiver::recv_timeout(MAX)", move || waiting.join().expect("it panicked"));
    assert_eq!(got.unwrap(), b"pong");

    let (handle, rx) = reply_channel();
    let waiting = thread::spawn(move || rx.recv_timeout(Duration::MAX));
    thread::sleep(Duration::from_millis(20));
    drop(handle);
    let got = bounded("ReplyReceiver::recv_timeout(MAX)", move || waiting.join().expect("it panicked"));
    assert_eq!(got, Err(RequestError::NoReply));
}

#[test]
fn requests_and_opens_with_duration_max_end_by_reply_or_unregistration() {
    let router = Router::builder().shards(2).build().unwrap();
    let echo = echo(&router);
    let (me, _me_rx) = actor(&router);
    let big = payload(3, MIB);
    let (r, sent) = (router.clone(), big.clone());
    assert_eq!(bounded("request(MAX)", move || r.request(echo, sent, Duration::MAX)).unwrap(), big);
    let answer =
        block_on_bounded("request_async(MAX)", router.request_async(echo, big.clone(), Duration::MAX));
    assert_eq!(answer.unwrap(), big);
    let r = router.clone();
    assert!(bounded("open_channel(MAX)", move || r.open_channel(me, echo, vec![], Duration::MAX)).is_ok());
    let opened = block_on_bounded(
        "open_channel_async(MAX)",
        router.open_channel_async(me, echo, vec![], Duration::MAX),
    );
    assert!(opened.is_ok());

    // No deadline: only the target's departure ends these.
    let (silent, silent_rx) = actor(&router);
    let r = router.clone();
    let waiting = thread::spawn(move || r.request(silent, b"q".to_vec(), Duration::MAX));
    let r = router.clone();
    let opening = thread::spawn(move || r.open_channel(me, silent, b"o".to_vec(), Duration::MAX));
    let mut fut = router.request_async(silent, b"qa".to_vec(), Duration::MAX);
    assert!(poll_once(&mut fut).is_pending());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(silent_rx.recv_timeout(LONG).expect("three messages"));
    }
    router.flush();
    assert!(poll_once(&mut fut).is_pending(), "no deadline: still waiting");
    router.unregister(silent).unwrap();
    let e = failed(bounded("request(MAX)", move || waiting.join().expect("request(MAX) panicked")));
    assert_eq!(e.error(), RequestError::ActorNotFound);
    assert_eq!(e.payload(), None, "the actor got it");
    let e = open_failed(bounded("open_channel(MAX)", move || opening.join().expect("it panicked")));
    assert_eq!(e.error(), ChannelError::ParticipantNotFound(Participant::Actor(silent)));
    assert_eq!(failed(block_on_bounded("request_async(MAX)", fut)).error(), RequestError::ActorNotFound);
    drop(held);
    flush_bounded(&router);
    assert_eq!(pending_timers(&router), 0);
}

#[test]
fn zero_timeouts_resolve_without_hanging() {
    let router = Router::builder().shards(2).timer_resolution(Duration::ZERO).build().unwrap();
    let echo = echo(&router);
    let (me, _me_rx) = actor(&router);
    let (silent, silent_rx) = actor(&router);
    for _ in 0..50 {
        let r = router.clone();
        match bounded("request(ZERO)", move || r.request(echo, b"z".to_vec(), Duration::ZERO)) {
            Ok(reply) => assert_eq!(reply, b"z"),
            Err(e) => assert_eq!(e.error(), RequestError::Timeout),
        }
        match block_on_bounded(
            "request_async(ZERO)",
            router.request_async(echo, b"z".to_vec(), Duration::ZERO),
        ) {
            Ok(reply) => assert_eq!(reply, b"z"),
            Err(e) => assert_eq!(e.error(), RequestError::Timeout),
        }
    }
    let r = router.clone();
    let e = failed(bounded("request(ZERO)", move || r.request(silent, vec![], Duration::ZERO)));
    assert_eq!(e.error(), RequestError::Timeout);
    let e =
        failed(block_on_bounded("request_async(ZERO)", router.request_async(silent, vec![], Duration::ZERO)));
    assert_eq!(e.error(), RequestError::Timeout);
    let r = router.clone();
    let e = open_failed(bounded("open(ZERO)", move || r.open_channel(me, silent, vec![], Duration::ZERO)));
    assert_eq!(e.error(), ChannelError::Timeout);
    // A zero wait on a mailbox neither panics nor blocks.
    let _ = silent_rx.recv_timeout(Duration::ZERO);
    flush_bounded(&router);
    eventually("timers to drain", || {
        router.flush();
        pending_timers(&router) == 0
    });
}

// ---------------------------------------------------------------------------------
// 3. Dropping a future abandons what it waits for.

#[test]
fn dropped_response_futures_abandon_their_requests_and_free_their_deadlines() {
    const N: usize = 3000;
    let router = Router::builder().shards(1).mailbox_capacity(N + 16).build().unwrap();
    let (silent, rx) = actor(&router);

    // The count is visible: a live request holds one deadline.
    let mut live = router.request_async(silent, b"live".to_vec(), HOUR);
    assert!(poll_once(&mut live).is_pending());
    let (_, live_reply) = expect_request(&rx);
    eventually("the live deadline to show", || {
        router.flush();
        pending_timers(&router) >= 1
    });
    drop(live);
    assert!(live_reply.is_resolved(), "dropping the future resolves the request");
    assert_eq!(live_reply.reply(b"late".to_vec()), Err(b"late".to_vec()));
    flush_bounded(&router);
    assert_eq!(pending_timers(&router), 0);

    // Thousands of dropped futures, half of them polled once first.
    for i in 0..N {
        let mut fut = router.request_async(silent, (i as u32).to_le_bytes().to_vec(), HOUR);
        if i % 2 == 0 {
            assert!(poll_once(&mut fut).is_pending());
        }
        drop(fut);
    }
    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        let (data, reply) = expect_request(&rx);
        assert_eq!(data, (i as u32).to_le_bytes());
        assert!(reply.is_resolved(), "request {i}: its future was dropped");
        handles.push((data, reply));
    }
    flush_bounded(&router);
    let m = router.metrics();
    assert_eq!(m.shards[0].pending_timers, 0, "the dropped requests' deadlines are freed");
    for (data, reply) in handles {
        assert_eq!(reply.reply(data.clone()), Err(data));
    }
    shutdown_bounded(&router);
}

#[test]
fn a_future_dropped_while_the_reply_races_it_settles_once() {
    let router = Router::builder().shards(2).build().unwrap();
    let (id, rx) = actor(&router);
    let (to_replier, handles) = mpsc::channel::<ReplyHandle>();
    let (results_tx, results) = mpsc::channel();
    let replier = thread::spawn(move || {
        for reply in handles {
            let outcome = reply.reply(b"r".to_vec());
            let _ = results_tx.send(outcome.is_ok());
        }
    });
    let mut accepted = 0;
    for _ in 0..500 {
        let mut fut = router.request_async(id, b"q".to_vec(), HOUR);
        assert!(poll_once(&mut fut).is_pending());
        let (_, reply) = expect_request(&rx);
        to_replier.send(reply).unwrap();
        drop(fut);
        if results.recv_timeout(LONG).expect("a reply attempt") {
            accepted += 1;
        }
    }
    drop(to_replier);
    bounded("the replier", move || replier.join().unwrap());
    eprintln!("{accepted} of 500 replies beat the drop");
    flush_bounded(&router);
    assert_eq!(pending_timers(&router), 0);
}

#[test]
fn dropped_open_futures_abandon_their_opens() {
    const N: usize = 500;
    let router = Router::builder().shards(2).mailbox_capacity(N + 16).build().unwrap();
    let (a, _a_rx) = actor(&router);
    let (b, b_rx) = actor(&router);
    for i in 0..N {
        let mut fut = router.open_channel_async(a, b, (i as u32).to_le_bytes().to_vec(), HOUR);
        if i % 2 == 0 {
            assert!(poll_once(&mut fut).is_pending());
        }
        drop(fut);
    }
    assert_eq!(router.metrics().channels.channels, 0, "the abandoned opens are removed");
    for i in 0..N {
        match b_rx.recv_timeout(LONG).expect("an open") {
            ActorMessage::ChannelOpen { reply, channel_id, initial_msg, .. } => {
                assert_eq!(initial_msg, (i as u32).to_le_bytes());
                assert!(reply.is_resolved(), "open {i}: its future was dropped");
                assert_eq!(reply.accept(Some(b"too late".to_vec())), Err(ChannelError::ChannelNotFound));
                assert_eq!(
                    router.channel_send(channel_id, b, vec![1]).unwrap_err().kind(),
                    SendErrorKind::ChannelNotFound
                );
            }
            other => panic!("expected an open, got {other:?}"),
        }
    }
    flush_bounded(&router);
    let m = router.metrics();
    assert_eq!(m.channels.channels, 0);
    assert_eq!(m.channels.opened, 0);
    assert_eq!(pending_timers(&router), 0, "the abandoned opens' deadlines are freed");
}

// ---------------------------------------------------------------------------------
// 4. shutdown() from many threads at once: each call returns only when it is done.

#[test]
fn shutdown_from_eight_threads_returns_only_when_everything_is_settled() {
    const THREADS: usize = 8;
    const PARKED: u64 = 18;
    for round in 0..10 {
        let dead = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dead);
        let router = Router::builder()
            .shards(2)
            .mailbox_capacity(2)
            .on_dead_letter(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        // Requests: two fill the mailbox, the rest park at the shard.
        let (held, held_rx) = actor(&router);
        // One-way messages: two fill the mailbox, the rest park.
        let (stuck, stuck_rx) = actor(&router);
        for i in 0..(PARKED + 2) {
            router.try_send(stuck, i.to_le_bytes().to_vec()).unwrap();
        }
        // And one sync requester blocked in `request`.
        let r = router.clone();
        let blocked = thread::spawn(move || r.request(held, b"sync".to_vec(), HOUR));
        let barrier = Arc::new(Barrier::new(THREADS));
        let callers: Vec<_> = (0..THREADS)
            .map(|i| {
                let mut fut = router.request_async(held, vec![i as u8], HOUR);
                assert!(poll_once(&mut fut).is_pending());
                let (router, barrier, dead) = (router.clone(), Arc::clone(&barrier), Arc::clone(&dead));
                let (held_rx, stuck_rx) = (held_rx.clone(), stuck_rx.clone());
                thread::spawn(move || {
                    barrier.wait();
                    router.shutdown();
                    assert!(router.is_shutdown());
                    match poll_once(&mut fut) {
                        Poll::Ready(Err(e)) => assert_eq!(e.error(), RequestError::Shutdown, "caller {i}"),
                        Poll::Ready(Ok(_)) => panic!("caller {i}: nobody answered, yet a reply came"),
                        Poll::Pending => panic!("caller {i}: shutdown returned with its request pending"),
                    }
                    assert_eq!(
                        dead.load(Ordering::SeqCst),
                        PARKED,
                        "caller {i}: shutdown returned before the parked messages were dead letters"
                    );
                    let m = router.metrics().total();
                    assert_eq!((m.dead_letters, m.overflow_depth), (PARKED, 0), "caller {i}");
                    for rx in [&held_rx, &stuck_rx] {
                        let end = loop {
                            match rx.try_recv() {
                                Ok(_) => {}
                                Err(e) => break e,
                            }
                        };
                        assert_eq!(
                            end,
                            TryRecvError::Disconnected,
                            "caller {i}: the mailbox is not disconnected"
                        );
                    }
                })
            })
            .collect();
        let (done_tx, done) = mpsc::channel();
        for (i, caller) in callers.into_iter().enumerate() {
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                let _ = done_tx.send((i, caller.join().is_ok()));
            });
        }
        drop(done_tx);
        for _ in 0..THREADS {
            let (i, ok) =
                done.recv_timeout(LONG).unwrap_or_else(|_| panic!("round {round}: a shutdown hung"));
            assert!(ok, "round {round}: caller {i} failed its checks (see its panic above)");
        }
        let sync = bounded("the blocked request", move || blocked.join().unwrap());
        assert_eq!(failed(sync).error(), RequestError::Shutdown);
        drop((held_rx, stuck_rx));
    }
}

#[test]
fn shutdown_called_from_a_dead_letter_sink_returns_and_so_do_the_others() {
    let holder: Arc<Mutex<Option<Router>>> = Arc::default();
    let in_sink = Arc::clone(&holder);
    let router = Router::builder()
        .shards(2)
        .mailbox_capacity(1)
        .on_dead_letter(move |_| {
            if let Some(r) = in_sink.lock().unwrap().take() {
                // On a shard thread: starts the shutdown and returns.
                r.shutdown();
            }
        })
        .build()
        .unwrap();
    *holder.lock().unwrap() = Some(router.clone());
    let (victim, victim_rx) = actor(&router);
    for i in 0..3u8 {
        router.try_send(victim, vec![i]).unwrap();
    }
    router.unregister(victim).unwrap();
    eventually("the sink to start the shutdown", || router.is_shutdown());
    let barrier = Arc::new(Barrier::new(4));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (r, b) = (router.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                b.wait();
                r.shutdown();
            })
        })
        .collect();
    for c in callers {
        bounded("a concurrent shutdown", move || c.join().unwrap());
    }
    assert!(holder.lock().unwrap().is_none());
    assert_eq!(victim_rx.recv_timeout(LONG).unwrap().data(), [0]);
    assert_eq!(victim_rx.recv_timeout(LONG).unwrap_err(), TryRecvError::Disconnected);
}

// ---------------------------------------------------------------------------------
// 5. Once unregister returns, replies of that registration are refused.

#[test]
fn a_reply_right_after_unregister_returns_is_refused() {
    const TRIES: usize = 2000;
    let router = Router::builder().shards(2).build().unwrap();
    // The actor's replying half: waits for the go signal, then replies at once.
    let (work_tx, work) = mpsc::channel::<(ReplyHandle, Arc<AtomicBool>)>();
    let (results_tx, results) = mpsc::channel();
    let replier = thread::spawn(move || {
        for (reply, go) in work {
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let resolved_before = reply.is_resolved();
            let outcome = reply.reply(b"late".to_vec());
            let _ = results_tx.send((resolved_before, outcome));
        }
    });
    let (mut accepted, mut unresolved, mut not_found, mut still_pending) = (0, 0, 0, 0);
    let mut other_outcomes = Vec::new();
    for i in 0..TRIES {
        let (id, rx) = actor(&router);
        let (fut, sync) = if i % 2 == 0 {
            let mut fut = router.request_async(id, b"q".to_vec(), HOUR);
            assert!(poll_once(&mut fut).is_pending());
            (Some(fut), None)
        } else {
            let r = router.clone();
            (None, Some(thread::spawn(move || r.request(id, b"q".to_vec(), HOUR))))
        };
        let (_, reply) = expect_request(&rx);
        let go = Arc::new(AtomicBool::new(false));
        work_tx.send((reply, Arc::clone(&go))).unwrap();
        router.unregister(id).unwrap();
        go.store(true, Ordering::Release);
        // Right after unregister returned, before looking at the reply attempt.
        let outcome = match (fut, sync) {
            (Some(mut fut), None) => match poll_once(&mut fut) {
                Poll::Ready(outcome) => Some(outcome),
                Poll::Pending => {
                    still_pending += 1;
                    Some(block_on_bounded("the requester", fut))
                }
            },
            (None, Some(sync)) => Some(bounded("the requester", move || sync.join().unwrap())),
            _ => None,
        };
        let (resolved_before, replied) = results.recv_timeout(LONG).expect("the reply attempt");
        if !resolved_before {
            unresolved += 1;
        }
        match replied {
            Ok(()) => accepted += 1,
            Err(data) => assert_eq!(data, b"late", "the refused reply hands its data back"),
        }
        match outcome {
            Some(Err(e)) if e.error() == RequestError::ActorNotFound => {
                assert_eq!(e.payload(), None, "try {i}: the actor had received it");
                not_found += 1;
            }
            Some(Err(e)) => other_outcomes.push(format!("try {i}: {:?}", e.error())),
            Some(Ok(reply)) => other_outcomes.push(format!("try {i}: a reply of {} bytes", reply.len())),
            None => unreachable!(),
        }
    }
    drop(work_tx);
    bounded("the replier", move || replier.join().unwrap());
    // The outcome is decided when unregister returns; the requester may learn it a
    // moment later (from the shard), which the promise allows.
    eprintln!(
        "{still_pending} of {} async requesters were still pending when unregister returned",
        TRIES / 2
    );
    assert_eq!(
        (accepted, unresolved, not_found),
        (0, 0, TRIES),
        "(replies accepted after unregister returned, handles not resolved after it, requesters told \
         ActorNotFound); other outcomes: {other_outcomes:?}"
    );
    flush_bounded(&router);
    assert_eq!(pending_timers(&router), 0);
}

#[test]
fn a_parked_request_of_an_unregistered_actor_comes_back_with_its_payload() {
    let router = Router::builder().shards(1).mailbox_capacity(1).build().unwrap();
    let (id, rx) = actor(&router);
    router.try_send(id, b"fill".to_vec()).unwrap();
    let big = payload(9, MIB);
    let mut parked = router.request_async(id, big.clone(), HOUR);
    assert!(poll_once(&mut parked).is_pending());
    let r = router.clone();
    let sync_big = payload(10, MIB);
    let sent = sync_big.clone();
    let sync = thread::spawn(move || r.request(id, sent, HOUR));
    eventually("both requests to park", || router.metrics().shards[0].overflow_depth == 2);
    router.unregister(id).unwrap();
    let e = failed(block_on_bounded("the parked request", parked));
    assert_eq!(e.error(), RequestError::ActorNotFound);
    assert!(e.payload() == Some(&big[..]), "a parked request never reached the mailbox: payload back");
    let e = failed(bounded("the parked sync request", move || sync.join().unwrap()));
    assert_eq!(e.error(), RequestError::ActorNotFound);
    assert!(e.into_payload() == Some(sync_big));
    drop(rx);
}

// ---------------------------------------------------------------------------------
// 6. Refused requests and opens hand the payload back.

#[test]
fn refused_requests_hand_the_payload_back() {
    let big = payload(0xAB, MIB);

    // ActorNotFound.
    let router =
        Router::builder().shards(2).mailbox_capacity(1).overflow(OverflowPolicy::Reject).build().unwrap();
    let ghost = ActorId::new();
    let (r, sent) = (router.clone(), big.clone());
    let e = failed(bounded("request", move || r.request(ghost, sent, LONG)));
    assert_eq!(e.error(), RequestError::ActorNotFound);
    assert_eq!(e, RequestError::ActorNotFound);
    let debug = format!("{e:?}");
    assert!(
        debug.len() < 300 && !debug.contains("171, 171"),
        "Debug prints the payload: {}",
        &debug[..debug.len().min(300)]
    );
    assert!(!e.to_string().is_empty());
    let as_error: &dyn std::error::Error = &e;
    assert!(!as_error.to_string().is_empty());
    assert_eq!(RequestError::from(e.clone()), RequestError::ActorNotFound);
    assert_eq!(e.payload().map(<[u8]>::len), Some(MIB));
    assert!(e.into_payload() == Some(big.clone()));
    let e = failed(block_on_bounded("request_async", router.request_async(ghost, big.clone(), LONG)));
    assert_eq!(e.error(), RequestError::ActorNotFound);
    assert!(e.into_payload() == Some(big.clone()));

    // MailboxFull, with the Reject policy.
    let (full, full_rx) = actor(&router);
    router.try_send(full, b"fill".to_vec()).unwrap();
    let (r, sent) = (router.clone(), big.clone());
    let e = failed(bounded("request", move || r.request(full, sent, LONG)));
    assert_eq!(e.error(), RequestError::MailboxFull);
    assert!(e.into_payload() == Some(big.clone()));
    let e = failed(block_on_bounded("request_async", router.request_async(full, big.clone(), LONG)));
    assert_eq!(e.error(), RequestError::MailboxFull);
    assert!(e.into_payload() == Some(big.clone()));

    // MailboxFull past the per-actor parking bound.
    let parking = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: 1 })
        .build()
        .unwrap();
    let (p, p_rx) = actor(&parking);
    parking.try_send(p, b"fill".to_vec()).unwrap();
    parking.try_send(p, b"parked".to_vec()).unwrap();
    let (r, sent) = (parking.clone(), big.clone());
    let e = failed(bounded("request", move || r.request(p, sent, LONG)));
    assert_eq!(e.error(), RequestError::MailboxFull);
    assert!(e.into_payload() == Some(big.clone()));
    let e = failed(block_on_bounded("request_async", parking.request_async(p, big.clone(), LONG)));
    assert_eq!(e.error(), RequestError::MailboxFull);
    assert!(e.into_payload() == Some(big.clone()));

    // Parked, then the router shuts down.
    let (q, q_rx) = actor(&parking);
    parking.try_send(q, b"fill".to_vec()).unwrap();
    let mut parked = parking.request_async(q, b"parked-at-shutdown".to_vec(), HOUR);
    assert!(poll_once(&mut parked).is_pending());
    shutdown_bounded(&parking);
    match poll_once(&mut parked) {
        Poll::Ready(outcome) => {
            let e = failed(outcome);
            assert_eq!(e.error(), RequestError::Shutdown);
            assert_eq!(e.into_payload().as_deref(), Some(&b"parked-at-shutdown"[..]));
        }
        Poll::Pending => panic!("shutdown returned with a parked request unresolved"),
    }
    // Refused at the send after shutdown.
    let (r, sent) = (parking.clone(), big.clone());
    let e = failed(bounded("request", move || r.request(p, sent, LONG)));
    assert_eq!(e.error(), RequestError::Shutdown);
    assert!(e.into_payload() == Some(big.clone()));
    let e = failed(block_on_bounded("request_async", parking.request_async(p, big.clone(), LONG)));
    assert_eq!(e.error(), RequestError::Shutdown);
    assert!(e.into_payload() == Some(big.clone()));
    drop((p_rx, q_rx, full_rx));
}

#[test]
fn requests_the_actor_received_fail_without_a_payload() {
    let router = Router::builder().shards(2).build().unwrap();
    let (id, rx) = actor(&router);
    let actor_thread = thread::spawn(move || {
        // Keeps the first, drops the second, keeps the third until unregistered.
        let mut kept = Vec::new();
        while let Ok(msg) = rx.recv() {
            match msg {
                ActorMessage::Request { data, reply } if data == b"drop" => drop(reply),
                other => kept.push(other),
            }
        }
    });
    let r = router.clone();
    let e = failed(bounded("request", move || r.request(id, b"keep".to_vec(), Duration::from_millis(30))));
    assert_eq!((e.error(), e.payload()), (RequestError::Timeout, None));
    let e = failed(block_on_bounded(
        "request_async",
        router.request_async(id, b"keep".to_vec(), Duration::from_millis(30)),
    ));
    assert_eq!((e.error(), e.payload()), (RequestError::Timeout, None));
    let r = router.clone();
    let e = failed(bounded("request", move || r.request(id, b"drop".to_vec(), LONG)));
    assert_eq!((e.error(), e.payload()), (RequestError::NoReply, None));
    let e = failed(block_on_bounded("request_async", router.request_async(id, b"drop".to_vec(), LONG)));
    assert_eq!((e.error(), e.payload()), (RequestError::NoReply, None));
    let r = router.clone();
    let waiting = thread::spawn(move || r.request(id, b"keep".to_vec(), LONG));
    eventually("the actor to take the request", || router.metrics().total().delivered_direct >= 5);
    router.unregister(id).unwrap();
    let e = failed(bounded("request", move || waiting.join().unwrap()));
    assert_eq!((e.error(), e.payload()), (RequestError::ActorNotFound, None));
    bounded("the actor", move || actor_thread.join().unwrap());
}

#[test]
fn refused_opens_hand_the_initial_message_back() {
    let big = payload(0x5A, MIB);
    let router =
        Router::builder().shards(2).mailbox_capacity(1).overflow(OverflowPolicy::Reject).build().unwrap();
    let (me, _me_rx) = actor(&router);

    // The target is not registered.
    let ghost = ActorId::new();
    let (r, sent) = (router.clone(), big.clone());
    let e = open_failed(bounded("open", move || r.open_channel(me, ghost, sent, LONG)));
    assert_eq!(e.error(), ChannelError::ParticipantNotFound(Participant::Actor(ghost)));
    assert_eq!(e, ChannelError::ParticipantNotFound(Participant::Actor(ghost)));
    let debug = format!("{e:?}");
    assert!(debug.len() < 300, "Debug prints the initial message");
    assert_eq!(ChannelError::from(e.clone()), ChannelError::ParticipantNotFound(Participant::Actor(ghost)));
    assert_eq!(e.initial_msg().map(<[u8]>::len), Some(MIB));
    assert!(e.into_initial_msg() == Some(big.clone()));
    let e =
        open_failed(block_on_bounded("open_async", router.open_channel_async(me, ghost, big.clone(), LONG)));
    assert!(e.into_initial_msg() == Some(big.clone()));

    // The target's mailbox is full.
    let (full, full_rx) = actor(&router);
    router.try_send(full, b"fill".to_vec()).unwrap();
    let (r, sent) = (router.clone(), big.clone());
    let e = open_failed(bounded("open", move || r.open_channel(me, full, sent, LONG)));
    assert_eq!(e.error(), ChannelError::MailboxFull);
    assert!(e.into_initial_msg() == Some(big.clone()));
    let e =
        open_failed(block_on_bounded("open_async", router.open_channel_async(me, full, big.clone(), LONG)));
    assert_eq!(e.error(), ChannelError::MailboxFull);
    assert!(e.into_initial_msg() == Some(big.clone()));

    // The target got it and said no, or said nothing: no payload.
    let (silent, silent_rx) = actor(&router);
    let r = router.clone();
    let e = open_failed(bounded("open", move || {
        r.open_channel(me, silent, b"x".to_vec(), Duration::from_millis(30))
    }));
    assert_eq!((e.error(), e.initial_msg()), (ChannelError::Timeout, None));
    let (rejecter, rejecter_rx) = actor(&router);
    thread::spawn(move || {
        while let Ok(msg) = rejecter_rx.recv() {
            if let ActorMessage::ChannelOpen { reply, .. } = msg {
                reply.reject();
            }
        }
    });
    let r = router.clone();
    let e = open_failed(bounded("open", move || r.open_channel(me, rejecter, b"x".to_vec(), LONG)));
    assert_eq!((e.error(), e.initial_msg()), (ChannelError::Rejected, None));

    // After shutdown.
    shutdown_bounded(&router);
    let (r, sent) = (router.clone(), big.clone());
    let e = open_failed(bounded("open", move || r.open_channel(me, full, sent, LONG)));
    assert_eq!(e.error(), ChannelError::Shutdown);
    assert!(e.into_initial_msg() == Some(big.clone()));
    let e =
        open_failed(block_on_bounded("open_async", router.open_channel_async(me, full, big.clone(), LONG)));
    assert_eq!(e.error(), ChannelError::Shutdown);
    assert!(e.into_initial_msg() == Some(big));
    drop((full_rx, silent_rx));
}

#[test]
fn opens_refused_before_routing_hand_the_initial_message_back() {
    let router = Router::builder().shards(2).build().unwrap();
    let (me, _me_rx) = actor(&router);
    let r = router.clone();
    let e = open_failed(bounded("open", move || r.open_channel(me, me, b"self".to_vec(), LONG)));
    assert_eq!(e.error(), ChannelError::SameParticipant);
    assert_eq!(e.into_initial_msg().as_deref(), Some(&b"self"[..]));
    let ghost = ActorId::new();
    let r = router.clone();
    let e = open_failed(bounded("open", move || r.open_channel(ghost, me, b"from a ghost".to_vec(), LONG)));
    assert_eq!(e.error(), ChannelError::ParticipantNotFound(Participant::Actor(ghost)));
    assert_eq!(e.into_initial_msg().as_deref(), Some(&b"from a ghost"[..]));
}

// ---------------------------------------------------------------------------------
// 7. Channel traffic cannot be forged through `deliver`.

#[test]
fn forged_channel_traffic_is_refused_by_deliver() {
    let router = Router::builder().shards(2).build().unwrap();
    let (a, a_rx) = actor(&router);
    let (b, b_rx) = actor(&router);
    let (c, c_rx) = actor(&router);

    // A real open, forwarded elsewhere before it is answered.
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, b, b"hello".to_vec(), LONG));
    let open = b_rx.recv_timeout(LONG).expect("an open");
    assert!(matches!(open, ActorMessage::ChannelOpen { .. }));
    let err = router.deliver(c, open).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ChannelOnly);
    let ActorMessage::ChannelOpen { reply, initial_msg, .. } = err.into_inner() else {
        panic!("deliver handed back something else")
    };
    assert_eq!(initial_msg, b"hello");
    reply.accept(None).unwrap();
    let ch = bounded("the opener", move || opener.join().unwrap()).unwrap().id;

    // A real channel message, forwarded to a third actor and to the real peer.
    router.channel_send(ch, a, b"secret".to_vec()).unwrap();
    let msg = b_rx.recv_timeout(LONG).expect("a channel message");
    let err = router.deliver(c, msg).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ChannelOnly);
    let msg = err.into_inner();
    match &msg {
        ActorMessage::ChannelMessage { channel_id, data, .. } => {
            assert_eq!((*channel_id, data.as_slice()), (ch, &b"secret"[..]));
        }
        other => panic!("deliver handed back {other:?}"),
    }
    let err = router.deliver(a, msg).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ChannelOnly);

    // Through the compat layer too.
    let compat = MessageRouter::from_router(router.clone());
    let (tx, rx) = oneshot();
    let routed = futures_executor::block_on(compat.route_message(MessageCommand::SendMessage {
        target_id: c,
        message: err.into_inner(),
        response_tx: tx,
    }));
    assert_eq!(routed, Err(RouteError::Send(SendErrorKind::ChannelOnly)));
    let refused = rx.recv().expect("an outcome").unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::ChannelOnly);
    assert!(matches!(refused.into_inner(), ActorMessage::ChannelMessage { .. }));

    // A real close, forwarded back.
    router.close_channel(ch, a).unwrap();
    let close = b_rx.recv_timeout(LONG).expect("a close");
    assert!(matches!(close, ActorMessage::ChannelClose { channel_id, .. } if channel_id == ch));
    let err = router.deliver(a, close).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ChannelOnly);
    assert!(matches!(err.into_inner(), ActorMessage::ChannelClose { .. }));

    // Nothing forged arrived anywhere; ordinary messages still go through deliver.
    router.flush();
    assert_eq!(a_rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(c_rx.try_recv().unwrap_err(), TryRecvError::Empty);
    router.deliver(c, ActorMessage::Send { data: b"plain".to_vec() }).unwrap();
    assert_eq!(c_rx.try_recv().unwrap().data(), b"plain");
}

/// What a refused `deliver` or `channel_send` hands back is what was given, field
/// for field, from both places a refusal comes from: before the mailbox (no such
/// actor) and from the mailbox itself (full, nothing may park). The router carries
/// messages in a packed form; this is the unpacking on the way back.
#[test]
fn a_refused_message_comes_back_whole() {
    for tokio_mailboxes in [false, true] {
        let router = Router::builder()
            .shards(1)
            .mailbox_capacity(1)
            .overflow(OverflowPolicy::Reject)
            .tokio_mailboxes(tokio_mailboxes)
            .build()
            .unwrap();
        let (a, a_rx) = actor(&router);
        let (b, _b_rx) = actor(&router);
        router.try_send(a, b"fills the mailbox".to_vec()).unwrap();

        for (to, kind) in [(ActorId::new(), SendErrorKind::ActorNotFound), (a, SendErrorKind::MailboxFull)] {
            let (reply, answer) = reply_channel();
            let err = router.deliver(to, ActorMessage::Request { data: b"q".to_vec(), reply }).unwrap_err();
            assert_eq!(err.kind(), kind);
            let ActorMessage::Request { data, reply } = err.into_inner() else {
                panic!("deliver handed back something else")
            };
            assert_eq!(data, b"q");
            // The handle still answers the requester that made it.
            reply.reply(b"answer".to_vec()).unwrap();
            assert_eq!(answer.recv().unwrap(), b"answer");

            let err = router.try_send(to, b"one-way".to_vec()).unwrap_err();
            assert_eq!((err.kind(), err.into_inner()), (kind, b"one-way".to_vec()));
        }

        // A channel message from a participant to a full mailbox, and from a
        // non-participant: the payload comes back either way.
        assert_eq!(a_rx.try_recv().unwrap().data(), b"fills the mailbox");
        let r = router.clone();
        let opener = thread::spawn(move || r.open_channel(b, a, Vec::new(), LONG));
        let ActorMessage::ChannelOpen { reply, initiator, .. } = a_rx.recv_timeout(LONG).expect("an open")
        else {
            panic!("expected the open")
        };
        assert_eq!(initiator, Participant::Actor(b));
        reply.accept(None).unwrap();
        let ch = bounded("the opener", move || opener.join().unwrap()).unwrap().id;
        router.channel_send(ch, b, b"fills it again".to_vec()).unwrap();
        let err = router.channel_send(ch, b, b"refused".to_vec()).unwrap_err();
        assert_eq!((err.kind(), err.into_inner()), (SendErrorKind::MailboxFull, b"refused".to_vec()));
        let err = router.channel_send(ch, ActorId::new(), b"stranger".to_vec()).unwrap_err();
        assert_eq!((err.kind(), err.into_inner()), (SendErrorKind::NotParticipant, b"stranger".to_vec()));
        match a_rx.recv_timeout(LONG).expect("the channel message") {
            ActorMessage::ChannelMessage { channel_id, data, .. } => {
                assert_eq!((channel_id, data), (ch, b"fills it again".to_vec()));
            }
            other => panic!("expected the channel message, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// 8. The per-shard parking bound.

#[test]
fn max_parked_per_shard_refuses_past_the_bound_but_never_a_close_notice() {
    const CAP: usize = 8;
    let (router, letters) = recording_router(|b| {
        b.shards(1)
            .mailbox_capacity(1)
            .overflow(OverflowPolicy::Park { max_per_actor: 100 })
            .max_parked_per_shard(CAP)
    });
    let (x, x_rx) = actor(&router);
    let (y, y_rx) = actor(&router);
    let (x2, _x2_rx) = actor(&router);
    let (y2, y2_rx) = actor(&router);
    let ch = open_by_hand(&router, x, y, &y_rx);
    let ch2 = open_by_hand(&router, x2, y2, &y2_rx);

    let full: Vec<(ActorId, Mailbox)> = (0..4).map(|_| actor(&router)).collect();
    router.try_send(y, b"y0".to_vec()).unwrap();
    router.try_send(y2, b"y2-0".to_vec()).unwrap();
    for (id, _) in &full {
        router.try_send(*id, b"0".to_vec()).unwrap();
    }

    // Park round-robin until the shard refuses.
    let mut accepted = 0usize;
    let refused = loop {
        let (id, _) = &full[accepted % full.len()];
        match router.try_send(*id, (accepted as u32).to_le_bytes().to_vec()) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= CAP, "more than {CAP} messages parked");
    };
    assert_eq!(accepted, CAP);
    assert_eq!(refused.kind(), SendErrorKind::ShardFull);
    assert_eq!(refused.into_inner(), (CAP as u32).to_le_bytes());
    flush_bounded(&router);
    assert_eq!(router.metrics().shards[0].overflow_depth, CAP);

    // Everything else that needs the shard is refused too, with the payload back.
    assert_eq!(router.try_send(y, b"more".to_vec()).unwrap_err().kind(), SendErrorKind::ShardFull);
    let r = router.clone();
    let e = failed(bounded("request", move || r.request(y, b"req".to_vec(), LONG)));
    assert_eq!(e.error(), RequestError::ShardFull);
    assert_eq!(e.into_payload().as_deref(), Some(&b"req"[..]));
    let e = failed(block_on_bounded("request_async", router.request_async(y, b"req2".to_vec(), LONG)));
    assert_eq!(e.error(), RequestError::ShardFull);
    assert_eq!(e.into_payload().as_deref(), Some(&b"req2"[..]));
    let r = router.clone();
    let e = open_failed(bounded("open", move || r.open_channel(x, y, b"open".to_vec(), LONG)));
    assert_eq!(e.error(), ChannelError::ShardFull);
    assert_eq!(e.into_initial_msg().as_deref(), Some(&b"open"[..]));
    router.tell(full[0].0, b"told".to_vec());
    router.flush();
    {
        let letters = letters.lock().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (letters[0].reason, letters[0].data.as_slice()),
            (DeadLetterReason::ShardFull, &b"told"[..])
        );
    }

    // A mailbox with room does not need the shard.
    router.try_send(x, b"direct".to_vec()).unwrap();

    // Close notices are never refused: one by close_channel, one by unregistration.
    router.close_channel(ch, x).unwrap();
    router.unregister(x2).unwrap();
    assert_eq!(
        router.try_send(full[1].0, b"still full".to_vec()).unwrap_err().kind(),
        SendErrorKind::ShardFull
    );

    // Draining delivers everything in order, close notices last.
    assert_eq!(y_rx.recv_timeout(LONG).unwrap().data(), b"y0");
    expect_close(&y_rx, ch);
    assert_eq!(y2_rx.recv_timeout(LONG).unwrap().data(), b"y2-0");
    expect_close(&y2_rx, ch2);
    for (k, (_, rx)) in full.iter().enumerate() {
        assert_eq!(rx.recv_timeout(LONG).unwrap().data(), b"0");
        for n in (k..CAP).step_by(full.len()) {
            assert_eq!(rx.recv_timeout(LONG).unwrap().data(), (n as u32).to_le_bytes());
        }
    }
    assert_eq!(x_rx.recv_timeout(LONG).unwrap().data(), b"direct");
    flush_bounded(&router);
    assert_eq!(router.metrics().shards[0].overflow_depth, 0);

    // Room again: sends park fine.
    for (id, _) in &full {
        router.try_send(*id, b"a".to_vec()).unwrap();
        router.try_send(*id, b"b".to_vec()).unwrap();
    }
    flush_bounded(&router);
    assert_eq!(router.metrics().shards[0].overflow_depth, full.len());
}

#[test]
fn max_parked_per_shard_holds_exactly_under_concurrent_senders() {
    const CAP: usize = 64;
    const ACTORS: usize = 4;
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: 1000 })
        .max_parked_per_shard(CAP)
        .build()
        .unwrap();
    let actors: Vec<(ActorId, Mailbox)> = (0..ACTORS).map(|_| actor(&router)).collect();
    for (id, _) in &actors {
        router.try_send(*id, vec![]).unwrap();
    }
    let ids: Vec<ActorId> = actors.iter().map(|(id, _)| *id).collect();
    let barrier = Arc::new(Barrier::new(8));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (router, ids, barrier) = (router.clone(), ids.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let mut accepted = [0usize; ACTORS];
                for i in 0..100 {
                    let k = (t + i) % ACTORS;
                    match router.try_send(ids[k], vec![t as u8]) {
                        Ok(()) => accepted[k] += 1,
                        Err(e) => assert_eq!(e.kind(), SendErrorKind::ShardFull),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut per_actor = [0usize; ACTORS];
    for s in senders {
        let accepted = bounded("a sender", move || s.join().unwrap());
        for k in 0..ACTORS {
            per_actor[k] += accepted[k];
        }
    }
    assert_eq!(per_actor.iter().sum::<usize>(), CAP, "exactly the bound is parked when nobody drains");
    flush_bounded(&router);
    assert_eq!(router.metrics().shards[0].overflow_depth, CAP);
    for (k, (_, rx)) in actors.iter().enumerate() {
        for _ in 0..=per_actor[k] {
            rx.recv_timeout(LONG).expect("every accepted message is delivered");
        }
    }
    flush_bounded(&router);
    for (_, rx) in &actors {
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    }
    assert_eq!(router.metrics().shards[0].overflow_depth, 0);
}

#[test]
fn many_deadlines_filed_out_of_order_each_fire_and_are_freed() {
    let router = Router::builder().shards(1).mailbox_capacity(4096).build().unwrap();
    let (silent, rx) = actor(&router);
    // Long deadlines first, then shorter ones: each must fire at or after its own.
    let mut futs: Vec<_> = (0..1000u64)
        .map(|i| {
            let timeout = Duration::from_millis(10 + (997 * i) % 300);
            let started = Instant::now();
            (started, timeout, Some(router.request_async(silent, vec![], timeout)))
        })
        .collect();
    let begin = Instant::now();
    let mut left = futs.len();
    while left > 0 {
        assert!(begin.elapsed() < LONG, "{left} deadlines never fired");
        for (started, timeout, slot) in &mut futs {
            if let Some(fut) = slot {
                if let Poll::Ready(outcome) = poll_once(fut) {
                    assert!(started.elapsed() >= *timeout, "a deadline fired early");
                    assert_eq!(failed(outcome).error(), RequestError::Timeout);
                    *slot = None;
                    left -= 1;
                }
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    flush_bounded(&router);
    assert_eq!(pending_timers(&router), 0);
    drop(rx);
}

// ---------------------------------------------------------------------------------
// 9. Dropping the last Mailbox unregisters.

#[test]
fn dropping_the_last_mailbox_unregisters_the_actor() {
    let (router, letters) = recording_router(|b| b.shards(2).mailbox_capacity(2));
    let (doomed, doomed_rx) = actor(&router);
    let (peer, peer_rx) = actor(&router);
    let ch = open_by_hand(&router, peer, doomed, &doomed_rx);

    let mut in_mailbox = router.request_async(doomed, b"q".to_vec(), HOUR);
    assert!(poll_once(&mut in_mailbox).is_pending());
    router.try_send(doomed, b"m0".to_vec()).unwrap(); // the mailbox is full now
    router.try_send(doomed, b"m1".to_vec()).unwrap(); // parked
    let mut parked = router.request_async(doomed, b"pq".to_vec(), HOUR); // parked
    assert!(poll_once(&mut parked).is_pending());
    let r = router.clone();
    let sync = thread::spawn(move || r.request(doomed, b"sq".to_vec(), HOUR)); // parked
    eventually("three parked", || router.metrics().total().overflow_depth == 3);

    let clone = doomed_rx.clone();
    drop(doomed_rx);
    assert!(router.is_registered(doomed), "a clone of the mailbox is still alive");
    drop(clone);
    // Synchronous in the dropping thread.
    assert!(!router.is_registered(doomed));
    match poll_once(&mut in_mailbox) {
        Poll::Ready(outcome) => {
            let e = failed(outcome);
            assert_eq!(e.error(), RequestError::ActorNotFound);
            assert_eq!(e.payload(), None, "it had reached the mailbox");
        }
        Poll::Pending => panic!("the mailbox is dropped, the request still pending"),
    }
    // Requests still parked at the shard never reached the mailbox: they come
    // back with their payload and the reason they could not be delivered.
    let e = failed(block_on_bounded("the parked request", parked));
    assert_eq!(e.error(), RequestError::MailboxClosed);
    assert_eq!(e.into_payload().as_deref(), Some(&b"pq"[..]));
    let e = failed(bounded("the parked sync request", move || sync.join().unwrap()));
    assert_eq!(e.error(), RequestError::MailboxClosed);
    assert_eq!(e.into_payload().as_deref(), Some(&b"sq"[..]));

    expect_close(&peer_rx, ch);
    assert_eq!(router.channel_send(ch, peer, vec![]).unwrap_err().kind(), SendErrorKind::ChannelNotFound);
    flush_bounded(&router);
    {
        let letters = letters.lock().unwrap();
        assert!(
            letters.iter().all(|l| l.reason == DeadLetterReason::MailboxClosed && l.target == doomed.into()),
            "{letters:?}"
        );
        assert_eq!(letters.iter().filter(|l| l.data == b"m1").count(), 1, "{letters:?}");
    }
    let m = router.metrics();
    assert_eq!(m.channels.channels, 0);
    assert_eq!(m.total().overflow_depth, 0);
    assert_eq!(m.total().registered_actors, 1);
    assert_eq!(pending_timers(&router), 0);
    assert_eq!(router.try_send(doomed, vec![]).unwrap_err().kind(), SendErrorKind::ActorNotFound);

    // The id is free again.
    let (tx, rx) = router.mailbox();
    router.register(doomed, tx).unwrap();
    router.try_send(doomed, b"new".to_vec()).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap().data(), b"new");
}

#[test]
fn register_with_a_dropped_mailbox_is_refused() {
    let router = Router::builder().shards(2).build().unwrap();
    let id = ActorId::new();
    let (tx, rx) = router.mailbox();
    drop(rx);
    assert_eq!(router.register(id, tx), Err(RegisterError::MailboxClosed));
    assert!(!router.is_registered(id));
    let (tx, rx) = router.mailbox();
    drop(rx);
    assert_eq!(router.attach_external(tx), Err(RegisterError::MailboxClosed));
    assert_eq!(router.metrics().total().registered_actors, 0);

    // A mailbox outliving its router, or never registered, drops harmlessly.
    let (tx, never) = router.mailbox();
    drop(tx);
    drop(never);
    let (_, rx) = actor(&router);
    drop(router);
    drop(rx);
}

#[test]
fn dropping_an_external_endpoint_detaches_it() {
    let router = Router::builder().shards(2).build().unwrap();
    let (a, a_rx) = actor(&router);
    let (tx, client) = router.mailbox();
    let ext = router.attach_external(tx).unwrap();
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(ext, a, vec![], LONG));
    match a_rx.recv_timeout(LONG).unwrap() {
        ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).unwrap(),
        other => panic!("expected an open, got {other:?}"),
    }
    let ch = bounded("the opener", move || opener.join().unwrap()).unwrap().id;
    assert_eq!(router.metrics().total().registered_actors, 2);
    drop(client);
    expect_close(&a_rx, ch);
    let m = router.metrics();
    assert_eq!((m.total().registered_actors, m.channels.channels), (1, 0));
    assert!(router.detach_external(ext).is_err(), "already detached");
}

#[test]
fn a_waiting_requester_learns_when_the_mailbox_is_dropped_elsewhere() {
    let router = Router::builder().shards(2).build().unwrap();
    for _ in 0..50 {
        let (id, rx) = actor(&router);
        let r = router.clone();
        let waiting = thread::spawn(move || r.request(id, b"q".to_vec(), HOUR));
        let dropper = thread::spawn(move || {
            // Takes the request, then the whole mailbox goes (the handle with it).
            let msg = rx.recv_timeout(LONG).expect("the request");
            drop(rx);
            msg
        });
        let msg = bounded("the dropper", move || dropper.join().unwrap());
        let e = failed(bounded("the requester", move || waiting.join().unwrap()));
        assert_eq!(e.error(), RequestError::ActorNotFound);
        assert!(!router.is_registered(id));
        let ActorMessage::Request { reply, .. } = msg else { panic!("expected a request") };
        assert!(reply.is_resolved());
        assert_eq!(reply.reply(b"late".to_vec()), Err(b"late".to_vec()));
    }
}

#[test]
fn dropping_mailboxes_races_unregister_and_shutdown_safely() {
    for round in 0..20 {
        let router = Router::builder().shards(2).mailbox_capacity(1).build().unwrap();
        let actors: Vec<(ActorId, Mailbox)> = (0..32).map(|_| actor(&router)).collect();
        for (id, _) in &actors {
            router.try_send(*id, vec![0]).unwrap();
            router.try_send(*id, vec![1]).unwrap(); // parked
        }
        let ids: Vec<ActorId> = actors.iter().map(|(id, _)| *id).collect();
        let barrier = Arc::new(Barrier::new(3));
        let unregistering = {
            let (r, ids, b) = (router.clone(), ids.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                b.wait();
                for id in ids {
                    let _ = r.unregister(id);
                }
            })
        };
        let shutting = {
            let (r, b) = (router.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                b.wait();
                if round % 2 == 0 {
                    r.shutdown();
                }
            })
        };
        let dropping = {
            let b = Arc::clone(&barrier);
            thread::spawn(move || {
                b.wait();
                drop(actors);
            })
        };
        for (what, t) in [("unregistering", unregistering), ("shutdown", shutting), ("dropping", dropping)] {
            bounded(what, move || t.join().unwrap());
        }
        flush_bounded(&router);
        for id in ids {
            assert!(!router.is_registered(id), "round {round}");
        }
        let m = router.metrics().total();
        assert_eq!((m.overflow_depth, m.registered_actors), (0, 0), "round {round}");
        assert!(!router.is_degraded());
        shutdown_bounded(&router);
    }
}

#[test]
fn a_mailbox_dropped_inside_a_dead_letter_sink_unregisters_its_actor() {
    let doomed_mailbox: Arc<Mutex<Option<Mailbox>>> = Arc::default();
    let in_sink = Arc::clone(&doomed_mailbox);
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .on_dead_letter(move |_| {
            // Out of the lock first: the drop may call back into this sink.
            let taken = in_sink.lock().unwrap().take();
            drop(taken);
        })
        .build()
        .unwrap();
    let (doomed, rx) = actor(&router);
    router.try_send(doomed, b"d0".to_vec()).unwrap();
    router.try_send(doomed, b"d1".to_vec()).unwrap(); // parked: its discard re-enters the shard
    *doomed_mailbox.lock().unwrap() = Some(rx);
    let (victim, victim_rx) = actor(&router);
    router.try_send(victim, vec![0]).unwrap();
    router.try_send(victim, vec![1]).unwrap(); // parked
    router.unregister(victim).unwrap(); // its dead letter runs the sink on the shard thread
    eventually("the sink to drop the mailbox", || doomed_mailbox.lock().unwrap().is_none());
    eventually("the doomed actor to be unregistered", || !router.is_registered(doomed));
    flush_bounded(&router);
    let (silent, silent_rx) = actor(&router);
    let e = failed(block_on_bounded(
        "a request on the same shard",
        router.request_async(silent, vec![], Duration::from_millis(50)),
    ));
    assert_eq!(e.error(), RequestError::Timeout);
    let m = router.metrics();
    assert_eq!((m.shards[0].overflow_depth, m.shards[0].dead_letters), (0, 2));
    assert!(!router.is_degraded());
    drop((victim_rx, silent_rx));
}
