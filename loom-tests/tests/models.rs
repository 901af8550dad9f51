//! Loom models of the router's real code paths.
//!
//! Every model drives the public [`Router`] API of `sharded-router` built with
//! `--cfg loom`, where the crate's concurrency seam (`src/sync.rs`) swaps flume,
//! dashmap, parking_lot and the clock for loom-visible stand-ins (the actor and
//! channel tables are a reader-writer lock, so lookups interleave as they do
//! under dashmap's read lock). Sizes are shrunk so that the state space stays
//! small: one shard (one shard thread), mailboxes of capacity 1, one to four
//! messages. The channel models (7-9) open their one channel in the model's setup,
//! on one thread, before the racing threads start; loom allows five threads in
//! all, and the shard is one of them.
//!
//! The models, one guarantee each:
//!
//! | model | races | guarantee |
//! |---|---|---|
//! | 1 | register / send | delivered or `ActorNotFound` |
//! | 2 | unregister / overflow send / consumer | delivered once, dead letter, or refused |
//! | 3 | two senders through the overflow queue / consumer | per-pair FIFO, no duplicates |
//! | 4 | overflow drain / consumer | no lost `Drain` notice, in order |
//! | 5, 5b | reply / timeout (blocking and async) | exactly one outcome |
//! | 6a, 6b | request / unregister, request / shutdown | exactly one outcome |
//! | 7a, 7b | channel accept / timeout / unregister | exactly one open outcome |
//! | 8 | channel messages / close | close after earlier messages, nothing after |
//! | 9, 9b | close / close, close / unregister | exactly one close, one notice |
//! | 10a, 10b | shutdown / register, send, overflow | every thread ends, nothing lost |
//! | 11 | two senders, fast path and overflow at once / consumer | exactly once, per-sender FIFO |
//! | 12 | `Mailbox::recv_async` / send / unregister | received, refused or dead letter; the receive ends |
//! | 13a, 13b | dropped `ResponseFuture` (unpolled, polled once) / reply | a reply after the drop is refused |
//! | 14 | `shutdown` / `shutdown` | each call returns after dead letters and outcomes are settled |
//! | 15 | panicking dead-letter sink / overflow sends | the shard keeps working, the panic is counted |
//! | 16a, 16b | a sender waiting for room (`blocking_send`) / consumer (park, reject) | woken, delivered once, in order |
//! | 16c | a sender waiting for room / unregister | the wait ends with `ActorNotFound` |
//! | 17 | `replace_mailbox` / a fast-path send / overflow sends | every message moves or arrives once, in order |
//! | 18 | `suspend` + `resume` / consumer / sender | held messages are released, once, in order |
//! | 19 | `ActorHandle` sends / unregister / consumer | refused once `unregister` returned; else delivered once or a dead letter |
//! | 20 | `ActorHandle` send / `replace_mailbox` | the handle follows the swap: once, in order, in the new mailbox |
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release`
//! (see `.ci/loom` at the repository root). Each model explores every
//! interleaving within a preemption bound: `LOOM_MAX_PREEMPTIONS` for most, one
//! more for the models whose state space stays small ([`Depth::Deeper`]); each
//! prints its bound, iteration count and time (shown with `--nocapture`).

#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loom::thread;
use sharded_router::{
    loom_hooks, ActorId, ActorMessage, ChannelError, ChannelId, Mailbox, OverflowPolicy, Participant,
    RegisterError, RequestError, RequestFailed, ResponseFuture, Router, SendError, SendErrorKind,
    TryRecvError,
};
use uuid::Uuid;

/// A deterministic actor id: a model must make the same choices on every run.
fn id(n: u128) -> ActorId {
    ActorId::from_uuid(Uuid::from_u128(n))
}

/// One shard, mailboxes of capacity 1, up to `park` messages parked per actor.
fn router(park: usize) -> Router {
    Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: park })
        .build()
        .expect("router")
}

/// How deep a model explores.
#[derive(Clone, Copy)]
enum Depth {
    /// The preemption bound from `LOOM_MAX_PREEMPTIONS` (2 if unset).
    Base,
    /// One preemption more, for models whose state space stays small.
    Deeper,
}

/// Runs `f` under loom at `depth` and reports iterations and time.
fn check(name: &str, depth: Depth, f: impl Fn() + Sync + Send + 'static) {
    static ITERATIONS: AtomicUsize = AtomicUsize::new(0);
    let mut builder = loom::model::Builder::new();
    let base = builder.preemption_bound.unwrap_or(2);
    let bound = match depth {
        Depth::Base => base,
        Depth::Deeper => base + 1,
    };
    builder.preemption_bound = Some(bound);
    let start = Instant::now();
    ITERATIONS.store(0, Ordering::Relaxed);
    builder.check(move || {
        ITERATIONS.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: preemption bound {bound}, {} iterations, {:.1?}",
        ITERATIONS.load(Ordering::Relaxed),
        start.elapsed()
    );
}

/// Registers `actor` on `router` and returns its mailbox.
fn registered(router: &Router, actor: ActorId) -> Mailbox {
    let (tx, mailbox) = router.mailbox();
    router.register(actor, tx).unwrap();
    mailbox
}

/// An actor thread that answers every request with its payload until its mailbox
/// disconnects; returns how many answers were accepted.
fn serve_requests(mailbox: Mailbox) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut accepted = 0;
        while let Ok(msg) = mailbox.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                accepted += usize::from(reply.reply(data).is_ok());
            }
        }
        accepted
    })
}

/// Takes every message waiting in `mailbox` without blocking.
fn take_waiting(mailbox: &Mailbox) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        match mailbox.try_recv() {
            Ok(msg) => got.push(msg.data().to_vec()),
            Err(_) => return got,
        }
    }
}

fn dead_letters(router: &Router) -> u64 {
    router.metrics().shards.iter().map(|s| s.dead_letters).sum()
}

/// A send that raced an unregistration: accepted, it was delivered (`data`, once)
/// or became a dead letter; refused, it is `ActorNotFound` and left no trace.
fn sent_once_or_refused(router: &Router, mailbox: &Mailbox, sent: Result<(), SendError>, data: &[u8]) {
    let got = take_waiting(mailbox);
    let dead = dead_letters(router);
    match sent {
        Ok(()) => assert_eq!(got.len() as u64 + dead, 1, "accepted: delivered or dead letter"),
        Err(e) => {
            assert_eq!(e.kind(), SendErrorKind::ActorNotFound);
            assert!(got.is_empty());
            assert_eq!(dead, 0);
        }
    }
    assert!(got.iter().all(|m| m == data));
}

/// Channels in the router's channel table (open or opening).
fn channel_count(router: &Router) -> usize {
    router.metrics().channels.channels
}

/// One message of a channel, as a model compares it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(ChannelId, Vec<u8>),
    Close(ChannelId),
}

fn seen(msg: ActorMessage) -> Seen {
    match msg {
        ActorMessage::ChannelMessage { channel_id, data, .. } => Seen::Message(channel_id, data),
        ActorMessage::ChannelClose { channel_id, .. } => Seen::Close(channel_id),
        other => panic!("unexpected {other:?}"),
    }
}

/// Opens a channel from `initiator` to `target` with the target accepting, on the
/// calling thread only: the open is started, its `ChannelOpen` taken from the
/// target's mailbox and accepted, then the initiator's future is driven.
fn open_accepted(
    router: &Router,
    initiator: ActorId,
    target: ActorId,
    target_mailbox: &Mailbox,
) -> ChannelId {
    let pending = router.open_channel_async(initiator, target, b"hi".to_vec(), Duration::from_secs(60));
    match target_mailbox.try_recv().expect("ChannelOpen waiting") {
        ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).expect("accept"),
        other => panic!("unexpected {other:?}"),
    }
    let channel = loom::future::block_on(pending).expect("opened").id;
    assert_eq!(channel_count(router), 1);
    channel
}

/// Model 1: registration racing a send. The send either fails with
/// `ActorNotFound` (it ran first) or its message is in the mailbox.
#[test]
fn register_vs_send() {
    check("1 register_vs_send", Depth::Deeper, || {
        let router = router(1);
        let (tx, mailbox) = router.mailbox();
        let target = id(1);

        let registrar = {
            let router = router.clone();
            thread::spawn(move || router.register(target, tx))
        };
        let sent = router.try_send(target, b"m".to_vec());
        registrar.join().unwrap().expect("register");

        let got = take_waiting(&mailbox);
        match sent {
            Ok(()) => assert_eq!(got, [b"m".to_vec()]),
            Err(e) => {
                assert_eq!(e.kind(), SendErrorKind::ActorNotFound);
                assert!(got.is_empty());
            }
        }
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 2: unregistration racing a send that has to go through the shard (the
/// mailbox is full), while the actor takes the message that filled it. An
/// accepted message is delivered once or counted as a dead letter; a refused one
/// reports `ActorNotFound`. Nothing is lost, nothing is delivered twice.
#[test]
fn unregister_vs_send() {
    check("2 unregister_vs_send", Depth::Deeper, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"first".to_vec()).unwrap();

        let unregistering = {
            let router = router.clone();
            thread::spawn(move || router.unregister(target))
        };
        let sender = {
            let router = router.clone();
            thread::spawn(move || router.try_send(target, b"second".to_vec()))
        };
        assert_eq!(mailbox.recv().unwrap().data(), b"first");
        unregistering.join().unwrap().expect("unregister");
        let sent = sender.join().unwrap();
        router.flush();

        sent_once_or_refused(&router, &mailbox, sent, b"second");
        // The entry is gone and the mailbox drained: it reports disconnection.
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
        router.shutdown();
    });
}

/// Model 3: per-pair FIFO across overflow. The mailbox is full, so sender A's
/// first message is parked at the shard; A's second message must not overtake it
/// (even when room has appeared by then), while sender B races with both and the
/// actor consumes concurrently.
#[test]
fn overflow_fifo() {
    check("3 overflow_fifo", Depth::Base, || {
        let router = router(4);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"x".to_vec()).unwrap();

        let a = {
            let router = router.clone();
            thread::spawn(move || {
                router.try_send(target, b"a1".to_vec()).unwrap();
                router.try_send(target, b"a2".to_vec()).unwrap();
            })
        };
        let b = {
            let router = router.clone();
            thread::spawn(move || router.try_send(target, b"b1".to_vec()).unwrap())
        };

        // The actor: every accepted message arrives (the parked ones as room appears).
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(mailbox.recv().expect("message").data().to_vec());
        }
        a.join().unwrap();
        b.join().unwrap();

        assert_eq!(got[0], b"x");
        let pos = |m: &[u8]| got.iter().position(|g| g == m).expect("delivered");
        assert!(pos(b"a1") < pos(b"a2"), "per-pair FIFO: {got:?}");
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "no duplicates: {got:?}");
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 4: the shard's overflow drain racing the actor's consumption. Two
/// messages are parked behind a full mailbox of capacity 1; the actor's receives
/// send `Drain` notices that the shard acts on. A lost notice leaves the actor
/// waiting forever (loom reports the deadlock); a wrong drain loses or duplicates.
#[test]
fn overflow_drain_vs_consumer() {
    check("4 overflow_drain_vs_consumer", Depth::Deeper, || {
        let router = router(2);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();

        let actor = thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(mailbox.recv().expect("message").data().to_vec());
            }
            (got, mailbox)
        });
        router.try_send(target, b"1".to_vec()).unwrap();
        router.try_send(target, b"2".to_vec()).unwrap();

        let (got, mailbox) = actor.join().unwrap();
        assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        router.flush();
        assert!(take_waiting(&mailbox).is_empty());
        let metrics = router.metrics();
        assert_eq!(metrics.shards[0].overflow_depth, 0);
        assert_eq!(metrics.shards[0].dead_letters, 0);
        router.shutdown();
    });
}

/// Model 5: a reply racing the request's timeout, the clock driven explicitly.
/// Exactly one outcome reaches the requester, and the actor's `reply` succeeds
/// exactly when that outcome is the reply.
#[test]
fn request_reply_vs_timeout() {
    check("5 request_reply_vs_timeout", Depth::Base, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));

        let actor = thread::spawn(move || match mailbox.recv().expect("request") {
            ActorMessage::Request { data, reply } => reply.reply(data).is_ok(),
            other => panic!("unexpected {other:?}"),
        });
        let clock = {
            let router = router.clone();
            thread::spawn(move || loom_hooks::advance_clock(&router, Duration::from_millis(20)))
        };
        let outcome = router.request(target, b"q".to_vec(), Duration::from_millis(10));
        let replied = actor.join().unwrap();
        clock.join().unwrap();

        match outcome {
            Ok(answer) => {
                assert_eq!(answer, b"q");
                assert!(replied, "the reply that reached the requester was accepted");
            }
            Err(e) => {
                assert_eq!(e, RequestError::Timeout);
                assert!(!replied, "a reply after the timeout is refused");
            }
        }
        router.shutdown();
    });
}

/// Model 5, async: the same race where only the shard's timer can resolve the
/// timeout (the future has no clock of its own).
#[test]
fn request_async_reply_vs_timeout() {
    check("5b request_async_reply_vs_timeout", Depth::Base, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));

        let actor = thread::spawn(move || match mailbox.recv().expect("request") {
            ActorMessage::Request { data, reply } => reply.reply(data).is_ok(),
            other => panic!("unexpected {other:?}"),
        });
        let pending = router.request_async(target, b"q".to_vec(), Duration::from_millis(10));
        let clock = {
            let router = router.clone();
            thread::spawn(move || loom_hooks::advance_clock(&router, Duration::from_millis(20)))
        };
        let outcome = loom::future::block_on(pending);
        let replied = actor.join().unwrap();
        clock.join().unwrap();

        match outcome {
            Ok(answer) => {
                assert_eq!(answer, b"q");
                assert!(replied);
            }
            Err(e) => {
                assert_eq!(e, RequestError::Timeout);
                assert!(!replied);
            }
        }
        router.shutdown();
    });
}

/// Model 6a: a request racing the target's unregistration while the actor serves
/// requests. Exactly one outcome: the reply, or `ActorNotFound`.
#[test]
fn request_vs_unregister() {
    check("6a request_vs_unregister", Depth::Base, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));

        let actor = serve_requests(mailbox);
        let unregistering = {
            let router = router.clone();
            thread::spawn(move || router.unregister(target))
        };
        let outcome = router.request(target, b"q".to_vec(), Duration::from_secs(1));
        unregistering.join().unwrap().expect("unregister");
        let accepted = actor.join().unwrap();

        match outcome {
            Ok(answer) => {
                assert_eq!(answer, b"q");
                assert_eq!(accepted, 1);
            }
            Err(e) => {
                assert_eq!(e, RequestError::ActorNotFound);
                assert_eq!(accepted, 0);
            }
        }
        router.shutdown();
    });
}

/// Model 6b: a request racing the router's shutdown while the actor serves
/// requests. Exactly one outcome, and every thread ends.
#[test]
fn request_vs_shutdown() {
    check("6b request_vs_shutdown", Depth::Base, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));

        let actor = serve_requests(mailbox);
        let requester = {
            let router = router.clone();
            thread::spawn(move || router.request(target, b"q".to_vec(), Duration::from_secs(1)))
        };
        router.shutdown();
        let outcome = requester.join().unwrap();
        let accepted = actor.join().unwrap();

        match outcome {
            Ok(answer) => {
                assert_eq!(answer, b"q");
                assert_eq!(accepted, 1);
            }
            Err(e) => {
                // Not `ActorNotFound`, even when the lookup ran after shutdown
                // emptied the table: `closed` is set before that.
                assert_eq!(e, RequestError::Shutdown);
                assert_eq!(accepted, 0);
            }
        }
    });
}

/// Model 7a: a channel open where the target's accept races the open's timeout
/// (kept by the shard, driven by the mock clock). Exactly one outcome reaches the
/// initiator, the accept succeeds exactly when that outcome is the acceptance, and
/// the channel is in the table exactly then.
#[test]
fn channel_open_accept_vs_timeout() {
    check("7a channel_open_accept_vs_timeout", Depth::Base, || {
        let router = router(1);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));

        let pending = router.open_channel_async(a, b, b"hi".to_vec(), Duration::from_millis(10));
        let (channel, reply) = match mailbox_b.try_recv().expect("ChannelOpen waiting") {
            ActorMessage::ChannelOpen { channel_id, initiator, reply, .. } => {
                assert_eq!(initiator, Participant::from(a));
                (channel_id, reply)
            }
            other => panic!("unexpected {other:?}"),
        };
        let target = thread::spawn(move || reply.accept(Some(b"yes".to_vec())).is_ok());
        let clock = {
            let router = router.clone();
            thread::spawn(move || loom_hooks::advance_clock(&router, Duration::from_millis(20)))
        };
        let outcome = loom::future::block_on(pending);
        let accepted = target.join().unwrap();
        clock.join().unwrap();

        match outcome {
            Ok(opened) => {
                assert_eq!(opened.id, channel);
                assert_eq!(opened.response.as_deref(), Some(&b"yes"[..]));
                assert!(accepted, "the acceptance that reached the initiator was refused");
                assert_eq!(channel_count(&router), 1);
                assert_eq!(router.metrics().channels.opened, 1);
                // The channel works from both sides, then closes cleanly.
                router.close_channel(channel, a).expect("close an accepted channel");
                assert_eq!(seen(mailbox_b.try_recv().expect("close notice")), Seen::Close(channel));
            }
            Err(e) => {
                assert_eq!(e, ChannelError::Timeout);
                assert!(!accepted, "an accept after the timeout succeeded");
                assert_eq!(channel_count(&router), 0, "a timed-out channel stayed in the table");
                assert_eq!(router.metrics().channels.opened, 0);
                assert_eq!(router.close_channel(channel, a), Err(ChannelError::ChannelNotFound));
            }
        }
        assert_eq!(channel_count(&router), 0);
        router.flush();
        assert!(take_waiting(&mailbox_a).is_empty());
        assert!(take_waiting(&mailbox_b).is_empty());
        router.shutdown();
    });
}

/// Model 7b: a channel open where the target's accept races both the open's
/// timeout and the target's unregistration. Exactly one outcome reaches the
/// initiator (accepted, timed out, or the target gone), the accept succeeds
/// exactly when that outcome is the acceptance, and since the target leaves, the
/// table ends empty: an accepted channel is closed by the departure and the
/// initiator told once with `ChannelClose`; any other outcome leaves no trace.
#[test]
fn channel_open_accept_vs_timeout_vs_unregister() {
    check("7b channel_open_accept_vs_timeout_vs_unregister", Depth::Base, || {
        let router = router(1);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));

        let pending = router.open_channel_async(a, b, b"hi".to_vec(), Duration::from_millis(10));
        let (channel, reply) = match mailbox_b.try_recv().expect("ChannelOpen waiting") {
            ActorMessage::ChannelOpen { channel_id, reply, .. } => (channel_id, reply),
            other => panic!("unexpected {other:?}"),
        };
        let target = thread::spawn(move || reply.accept(None).is_ok());
        let leaving = {
            let router = router.clone();
            thread::spawn(move || router.unregister(b))
        };
        // The initiator's thread moves the clock itself (a thread fewer): the
        // timeout is still decided by the shard, racing the other two.
        loom_hooks::advance_clock(&router, Duration::from_millis(20));
        let outcome = loom::future::block_on(pending);
        let accepted = target.join().unwrap();
        leaving.join().unwrap().expect("unregister");
        router.flush();

        let to_initiator: Vec<Seen> = std::iter::from_fn(|| mailbox_a.try_recv().ok()).map(seen).collect();
        match outcome {
            Ok(opened) => {
                assert_eq!(opened.id, channel);
                assert!(accepted, "the acceptance that reached the initiator was refused");
                assert_eq!(router.metrics().channels.opened, 1);
                assert_eq!(to_initiator, [Seen::Close(channel)], "the departure closes the channel once");
            }
            Err(e) => {
                let gone = ChannelError::ParticipantNotFound(b.into());
                assert!(e == ChannelError::Timeout || e == gone, "{e:?}");
                assert!(!accepted, "an accept after another outcome succeeded");
                assert_eq!(router.metrics().channels.opened, 0);
                assert!(to_initiator.is_empty(), "{to_initiator:?}");
            }
        }
        assert_eq!(channel_count(&router), 0, "the channel outlived its target");
        assert_eq!(router.close_channel(channel, a), Err(ChannelError::ChannelNotFound));
        assert_eq!(mailbox_b.try_recv().unwrap_err(), TryRecvError::Disconnected);
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 8: channel messages racing a close from the other side. `b` sends a
/// message and closes; `a` sends two messages meanwhile and (on this thread)
/// receives. `a` sees `b`'s message, then the close (parked behind it when `a`'s
/// mailbox is still full), then nothing on the channel. Each of `a`'s messages is
/// delivered to `b` (in order) or refused with `ChannelNotFound`, and once one is
/// refused so are the later ones.
#[test]
fn channel_message_vs_close() {
    check("8 channel_message_vs_close", Depth::Base, || {
        let router = router(2);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));
        let channel = open_accepted(&router, a, b, &mailbox_b);

        let closer = {
            let router = router.clone();
            thread::spawn(move || {
                router.channel_send(channel, b, b"b1".to_vec()).expect("b1");
                router.close_channel(channel, b).expect("close");
            })
        };
        let sender = {
            let router = router.clone();
            thread::spawn(move || {
                ["a1", "a2"].map(|m| match router.channel_send(channel, a, m.as_bytes().to_vec()) {
                    Ok(()) => true,
                    Err(e) => {
                        assert_eq!(e.kind(), SendErrorKind::ChannelNotFound, "{e:?}");
                        false
                    }
                })
            })
        };
        // `a` receives while the others run: b's messages, then the close.
        let mut to_a = Vec::new();
        for _ in 0..2 {
            to_a.push(seen(mailbox_a.recv().expect("message for a")));
        }
        closer.join().unwrap();
        let sent_by_a = sender.join().unwrap();
        router.flush();

        assert_eq!(to_a, [Seen::Message(channel, b"b1".to_vec()), Seen::Close(channel)]);
        assert_eq!(mailbox_a.try_recv().unwrap_err(), TryRecvError::Empty, "a message after the close");
        assert!(sent_by_a[0] || !sent_by_a[1], "a2 accepted after a1 was refused: {sent_by_a:?}");

        let mut to_b = Vec::new();
        for _ in 0..sent_by_a.iter().filter(|&&ok| ok).count() {
            to_b.push(seen(mailbox_b.recv().expect("accepted message for b")));
        }
        let expected: Vec<Seen> = ["a1", "a2"]
            .iter()
            .zip(sent_by_a)
            .filter(|(_, ok)| *ok)
            .map(|(m, _)| Seen::Message(channel, m.as_bytes().to_vec()))
            .collect();
        assert_eq!(to_b, expected);
        router.flush();
        assert_eq!(mailbox_b.try_recv().unwrap_err(), TryRecvError::Empty);

        // After the close the channel is gone for both sides.
        assert_eq!(channel_count(&router), 0);
        let late = router.channel_send(channel, a, b"late".to_vec()).unwrap_err();
        assert_eq!(late.kind(), SendErrorKind::ChannelNotFound);
        assert_eq!(router.close_channel(channel, a), Err(ChannelError::ChannelNotFound));
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 9: both participants close the channel at once. Exactly one close wins,
/// the other gets `ChannelNotFound`; the winner's peer receives exactly one
/// `ChannelClose`, the winner none; the table ends empty.
#[test]
fn channel_close_vs_close() {
    check("9 channel_close_vs_close", Depth::Deeper, || {
        let router = router(1);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));
        let channel = open_accepted(&router, a, b, &mailbox_b);

        let other = {
            let router = router.clone();
            thread::spawn(move || router.close_channel(channel, b))
        };
        let by_a = router.close_channel(channel, a);
        let by_b = other.join().unwrap();
        router.flush();

        let to_a: Vec<Seen> = std::iter::from_fn(|| mailbox_a.try_recv().ok()).map(seen).collect();
        let to_b: Vec<Seen> = std::iter::from_fn(|| mailbox_b.try_recv().ok()).map(seen).collect();
        match (by_a, by_b) {
            (Ok(()), Err(ChannelError::ChannelNotFound)) => {
                assert_eq!(to_b, [Seen::Close(channel)]);
                assert!(to_a.is_empty(), "{to_a:?}");
            }
            (Err(ChannelError::ChannelNotFound), Ok(())) => {
                assert_eq!(to_a, [Seen::Close(channel)]);
                assert!(to_b.is_empty(), "{to_b:?}");
            }
            other => panic!("not exactly one winner: {other:?}"),
        }
        assert_eq!(channel_count(&router), 0);
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 9b: one participant closes the channel while the other unregisters
/// (its departure closes its channels). Exactly one of them removes the channel:
/// when the close wins the leaver may still be told (before its mailbox
/// disconnects), and when the departure wins the close gets `ChannelNotFound` and
/// the closer is told exactly once. Nobody is told twice; the table ends empty.
#[test]
fn channel_close_vs_unregister() {
    check("9b channel_close_vs_unregister", Depth::Deeper, || {
        let router = router(1);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));
        let channel = open_accepted(&router, a, b, &mailbox_b);

        let leaving = {
            let router = router.clone();
            thread::spawn(move || router.unregister(b))
        };
        let by_a = router.close_channel(channel, a);
        leaving.join().unwrap().expect("unregister");
        router.flush();

        let to_a: Vec<Seen> = std::iter::from_fn(|| mailbox_a.try_recv().ok()).map(seen).collect();
        let to_b: Vec<Seen> = std::iter::from_fn(|| mailbox_b.try_recv().ok()).map(seen).collect();
        match by_a {
            Ok(()) => {
                assert!(to_a.is_empty(), "the closer was told of its own close: {to_a:?}");
                assert!(to_b.is_empty() || to_b == [Seen::Close(channel)], "{to_b:?}");
            }
            Err(e) => {
                assert_eq!(e, ChannelError::ChannelNotFound);
                assert_eq!(to_a, [Seen::Close(channel)], "the departure closes the channel once");
                assert!(to_b.is_empty(), "{to_b:?}");
            }
        }
        assert_eq!(mailbox_b.try_recv().unwrap_err(), TryRecvError::Disconnected);
        assert_eq!(channel_count(&router), 0);
        router.shutdown();
    });
}

/// Model 10a: shutdown racing a registration and a send to the actor being
/// registered. Every thread ends; a message is accepted only by a registration
/// that succeeded, and an accepted message is delivered or a dead letter.
#[test]
fn shutdown_vs_register_and_send() {
    check("10a shutdown_vs_register_and_send", Depth::Deeper, || {
        let router = router(1);
        let (tx, mailbox) = router.mailbox();
        let target = id(1);

        let registrar = {
            let router = router.clone();
            thread::spawn(move || router.register(target, tx))
        };
        let sender = {
            let router = router.clone();
            thread::spawn(move || router.try_send(target, b"m".to_vec()))
        };
        router.shutdown();
        let registered = registrar.join().unwrap();
        let sent = sender.join().unwrap();

        let got = take_waiting(&mailbox);
        match registered {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e, RegisterError::Shutdown);
                assert!(got.is_empty(), "a failed registration received a message");
            }
        }
        match sent {
            Ok(()) => assert_eq!(got.len() as u64 + dead_letters(&router), 1),
            Err(e) => {
                assert!(matches!(e.kind(), SendErrorKind::ActorNotFound | SendErrorKind::Shutdown), "{e:?}");
                assert!(got.is_empty());
            }
        }
        assert!(!router.is_registered(target));
        // Whichever way the registration went, the mailbox ends disconnected.
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
    });
}

/// Model 10b: shutdown racing sends that go through the shard's overflow queue,
/// with the actor consuming. Every thread ends; every accepted message is
/// delivered or counted as a dead letter.
#[test]
fn shutdown_vs_overflow_sends() {
    check("10b shutdown_vs_overflow_sends", Depth::Deeper, || {
        let router = router(2);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();

        let sender = {
            let router = router.clone();
            thread::spawn(move || {
                let a = router.try_send(target, b"1".to_vec()).is_ok();
                let b = router.try_send(target, b"2".to_vec()).is_ok();
                usize::from(a) + usize::from(b)
            })
        };
        let actor = thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(msg) = mailbox.recv() {
                got.push(msg.data().to_vec());
            }
            got
        });
        router.shutdown();
        let accepted = sender.join().unwrap();
        let got = actor.join().unwrap();

        assert_eq!(got.first().map(Vec::as_slice), Some(&b"0"[..]));
        let delivered = got.len() - 1;
        assert!(got.windows(2).all(|w| w[0] < w[1]), "FIFO: {got:?}");
        assert_eq!((delivered as u64) + dead_letters(&router), accepted as u64, "{got:?}");
    });
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Model 11: two senders race, one through the fast path and one through the
/// overflow queue at once. The mailbox (capacity 1) starts empty, so whichever
/// send runs first goes straight in and the others find it full (or find earlier
/// messages in flight) and go through the shard, while the actor consumes. At
/// most three messages are ever in flight, below the overflow bound, so every
/// send is accepted; each message is delivered exactly once and each sender's
/// messages arrive in the order it sent them.
#[test]
fn two_senders_fast_vs_overflow() {
    check("11 two_senders_fast_vs_overflow", Depth::Base, || {
        let router = router(3);
        let (target, mailbox) = (id(1), registered(&router, id(1)));

        let senders = ["a", "b"].map(|name| {
            let router = router.clone();
            thread::spawn(move || {
                for n in 1..=2 {
                    router.try_send(target, format!("{name}{n}").into_bytes()).expect("accepted");
                }
            })
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(String::from_utf8(mailbox.recv().expect("message").data().to_vec()).unwrap());
        }
        for s in senders {
            s.join().unwrap();
        }
        // Joins the shard: nothing can arrive after this.
        router.shutdown();

        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ["a1", "a2", "b1", "b2"], "exactly once: {got:?}");
        let pos = |m: &str| got.iter().position(|g| g == m).unwrap();
        assert!(pos("a1") < pos("a2") && pos("b1") < pos("b2"), "per-sender FIFO: {got:?}");
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
        let total = router.metrics().total();
        assert_eq!(total.delivered_direct + total.delivered_overflow, 4);
        assert_eq!((total.dead_letters, total.overflow_depth), (0, 0));
    });
}

/// Model 12: `Mailbox::recv_async` (driven by `block_on`) racing a send that may
/// go through the shard (the mailbox starts full) and the actor's unregistration.
/// The receive loop ends (a lost wake-up or a missed disconnection is a deadlock
/// loom reports); the second message is received before `Disconnected`, or its
/// send was refused, or it is a counted dead letter — exactly one of these.
#[test]
fn recv_async_vs_send_and_unregister() {
    check("12 recv_async_vs_send_and_unregister", Depth::Deeper, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"first".to_vec()).unwrap();

        let sender = {
            let router = router.clone();
            thread::spawn(move || router.try_send(target, b"second".to_vec()))
        };
        let unregistering = {
            let router = router.clone();
            thread::spawn(move || router.unregister(target))
        };
        let got = loom::future::block_on(async {
            let mut got = Vec::new();
            while let Ok(msg) = mailbox.recv_async().await {
                got.push(msg.data().to_vec());
            }
            got
        });
        let sent = sender.join().unwrap();
        unregistering.join().unwrap().expect("unregister");
        router.flush();

        assert_eq!(got.first().map(Vec::as_slice), Some(&b"first"[..]), "{got:?}");
        let received = &got[1..];
        let dead = dead_letters(&router);
        match sent {
            Ok(()) => {
                assert!(received.iter().all(|m| m == b"second"), "{got:?}");
                assert_eq!(received.len() as u64 + dead, 1, "received xor dead letter: {got:?}");
            }
            Err(e) => {
                assert_eq!(e.kind(), SendErrorKind::ActorNotFound, "{e:?}");
                assert!(received.is_empty(), "{got:?}");
                assert_eq!(dead, 0);
            }
        }
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
        router.shutdown();
    });
}

/// Models 13a/13b: a dropped `ResponseFuture` racing the actor's reply. The
/// requester starts a request, drops the future (never polled, or polled once),
/// then sets `dropped`; the actor takes the request and replies. If the actor saw
/// `dropped` before replying, the handle is already resolved and the reply comes
/// back as `Err(payload)`. A future that completed on its poll got the reply the
/// actor had accepted. Every Arc is freed in every interleaving (loom checks).
fn dropped_response_future_vs_reply(name: &str, poll_first: bool) {
    check(name, Depth::Deeper, move || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        let dropped = loom::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));

        let actor = {
            let dropped = dropped.clone();
            thread::spawn(move || {
                let reply = match mailbox.recv().expect("request") {
                    ActorMessage::Request { reply, .. } => reply,
                    other => panic!("unexpected {other:?}"),
                };
                let after_drop = dropped.load(Ordering::SeqCst);
                if after_drop {
                    assert!(reply.is_resolved(), "the dropped request is still open");
                }
                let replied = reply.reply(b"answer".to_vec());
                if after_drop {
                    assert_eq!(replied, Err(b"answer".to_vec()), "a reply after the drop was accepted");
                }
                (replied.is_ok(), mailbox)
            })
        };
        let mut pending = router.request_async(target, b"q".to_vec(), Duration::from_secs(60));
        let early = if poll_first { poll_once(&mut pending) } else { Poll::Pending };
        drop(pending);
        dropped.store(true, Ordering::SeqCst);
        let (accepted, mailbox) = actor.join().unwrap();

        if let Poll::Ready(outcome) = early {
            assert_eq!(outcome.expect("the only outcome is the reply"), b"answer");
            assert!(accepted);
        }
        router.flush();
        assert!(take_waiting(&mailbox).is_empty());
        router.shutdown();
    });
}

#[test]
fn response_future_unpolled_dropped_vs_reply() {
    dropped_response_future_vs_reply("13a response_future_unpolled_dropped_vs_reply", false);
}

#[test]
fn response_future_polled_dropped_vs_reply() {
    dropped_response_future_vs_reply("13b response_future_polled_dropped_vs_reply", true);
}

/// A request future shared by the threads of model 14, settled by the first
/// thread that polls it.
enum Shared {
    Pending(ResponseFuture),
    Settled(Result<Vec<u8>, RequestFailed>),
}

/// What model 14 checks when a `shutdown` call returns: the parked message is a
/// dead letter, the request's future is ready with `Shutdown`, and `a`'s mailbox
/// reports disconnection once the message in it is taken. Returns how many
/// messages this caller took from `a`'s mailbox.
fn settled_on_return(router: &Router, request: &loom::sync::Mutex<Shared>, mailbox_a: &Mailbox) -> usize {
    router.shutdown();
    assert_eq!(dead_letters(router), 1, "shutdown returned before the parked message was dead-lettered");
    {
        let mut shared = request.lock().unwrap();
        if let Shared::Pending(fut) = &mut *shared {
            match poll_once(fut) {
                Poll::Ready(outcome) => *shared = Shared::Settled(outcome),
                Poll::Pending => panic!("shutdown returned with the request unresolved"),
            }
        }
        match &*shared {
            Shared::Settled(Err(e)) => assert_eq!(*e, RequestError::Shutdown),
            Shared::Settled(Ok(_)) => panic!("nobody replied"),
            Shared::Pending(_) => unreachable!(),
        }
    }
    let mut taken = 0;
    loop {
        match mailbox_a.try_recv() {
            Ok(msg) => {
                assert_eq!(msg.data(), b"fill");
                taken += 1;
            }
            Err(TryRecvError::Disconnected) => return taken,
            Err(e) => panic!("shutdown returned before the mailbox disconnected: {e:?}"),
        }
    }
}

/// Model 14: two threads call `shutdown` at once while a request is pending in an
/// actor's mailbox and a message is parked at the shard (behind a full mailbox).
/// When EACH call returns — not only the first caller's — the parked message is
/// already a counted dead letter, the request already resolved with `Shutdown`
/// (its future is ready on its first poll), and the mailbox disconnected.
#[test]
fn shutdown_vs_shutdown() {
    check("14 shutdown_vs_shutdown", Depth::Deeper, || {
        let router = router(1);
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));
        router.try_send(a, b"fill".to_vec()).unwrap();
        router.try_send(a, b"parked".to_vec()).unwrap();
        let request = router.request_async(b, b"q".to_vec(), Duration::from_secs(60));
        let request = loom::sync::Arc::new(loom::sync::Mutex::new(Shared::Pending(request)));

        let other = {
            let (router, request, mailbox_a) = (router.clone(), request.clone(), mailbox_a.clone());
            thread::spawn(move || settled_on_return(&router, &request, &mailbox_a))
        };
        let taken = settled_on_return(&router, &request, &mailbox_a);
        assert_eq!(taken + other.join().unwrap(), 1, "the message in the mailbox is taken once");

        match mailbox_b.try_recv().expect("the request") {
            ActorMessage::Request { reply, .. } => assert!(reply.is_resolved()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(mailbox_b.try_recv().unwrap_err(), TryRecvError::Disconnected);
    });
}

/// The message of model 15's dead-letter sink, which the panic hook keeps quiet.
const SINK_PANIC: &str = "loom model 15: the dead-letter sink panics";

/// Model 15: a dead-letter sink that panics. Actor `a` unregisters with a message
/// parked at the shard, so the shard calls the sink, which panics; meanwhile a
/// send to actor `b` has to go through the shard (its mailbox is full) and is
/// delivered when `b` takes a message. The panic is caught and counted, the shard
/// thread keeps working: a later overflow send is delivered too, and `flush`
/// returns.
#[test]
fn panicking_dead_letter_sink() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info.payload_as_str() == Some(SINK_PANIC);
            if !ours {
                default(info);
            }
        }));
    });
    check("15 panicking_dead_letter_sink", Depth::Deeper, || {
        let router = Router::builder()
            .shards(1)
            .mailbox_capacity(1)
            .overflow(OverflowPolicy::Park { max_per_actor: 1 })
            .on_dead_letter(|_| panic!("{}", SINK_PANIC))
            .build()
            .expect("router");
        let (a, b) = (id(1), id(2));
        let (mailbox_a, mailbox_b) = (registered(&router, a), registered(&router, b));
        router.try_send(a, b"a0".to_vec()).unwrap();
        router.try_send(a, b"a1".to_vec()).unwrap();

        let leaving = {
            let router = router.clone();
            thread::spawn(move || router.unregister(a))
        };
        router.try_send(b, b"b0".to_vec()).unwrap();
        router.try_send(b, b"b1".to_vec()).unwrap();
        assert_eq!(mailbox_b.recv().expect("b0").data(), b"b0");
        assert_eq!(mailbox_b.recv().expect("b1 through the shard").data(), b"b1");
        leaving.join().unwrap().expect("unregister");
        router.flush();

        let total = router.metrics().total();
        assert_eq!((total.dead_letters, total.callback_panics), (1, 1));
        // After the panic: one more overflow delivery.
        router.try_send(b, b"b2".to_vec()).unwrap();
        router.try_send(b, b"b3".to_vec()).unwrap();
        assert_eq!(mailbox_b.recv().expect("b2").data(), b"b2");
        assert_eq!(mailbox_b.recv().expect("b3 through the shard").data(), b"b3");
        router.flush();
        let total = router.metrics().total();
        assert_eq!((total.dead_letters, total.callback_panics, total.overflow_depth), (1, 1, 0));
        assert_eq!(take_waiting(&mailbox_a), [b"a0".to_vec()]);
        router.shutdown();
    });
}

/// Model 16a: a sender waiting for room (`blocking_send` at the overflow bound)
/// racing the consumer. The mailbox (capacity 1) holds `0` and `1` is parked, the
/// bound; the third send must wait until the shard settles `1`. A lost wake-up
/// leaves the sender parked forever (loom reports the deadlock); the messages
/// arrive once each, in order.
#[test]
fn waiting_send_vs_consumer() {
    check("16a waiting_send_vs_consumer", Depth::Base, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();
        router.try_send(target, b"1".to_vec()).unwrap();

        let sender = {
            let router = router.clone();
            thread::spawn(move || router.blocking_send(target, b"2".to_vec()))
        };
        let got: Vec<Vec<u8>> = (0..3).map(|_| mailbox.recv().expect("message").data().to_vec()).collect();
        sender.join().unwrap().expect("accepted once room appeared");
        assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        router.shutdown();
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
    });
}

/// Model 16b: the same with the `Reject` policy, where the room a waiting sender
/// needs is the mailbox's own: the receiver's take must wake it (no shard on the
/// path).
#[test]
fn waiting_send_vs_receiver_take() {
    check("16b waiting_send_vs_receiver_take", Depth::Deeper, || {
        let router = Router::builder()
            .shards(1)
            .mailbox_capacity(1)
            .overflow(OverflowPolicy::Reject)
            .build()
            .expect("router");
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();

        let sender = {
            let router = router.clone();
            thread::spawn(move || router.blocking_send(target, b"1".to_vec()))
        };
        let got: Vec<Vec<u8>> = (0..2).map(|_| mailbox.recv().expect("message").data().to_vec()).collect();
        sender.join().unwrap().expect("accepted once room appeared");
        assert_eq!(got, [b"0".to_vec(), b"1".to_vec()]);
        router.shutdown();
    });
}

/// Model 16c: a waiting sender racing the target's unregistration (nobody
/// consumes, so no room ever appears). The wait ends — a missed wake-up is a
/// deadlock loom reports — with `ActorNotFound` and the payload back.
#[test]
fn waiting_send_vs_unregister() {
    check("16c waiting_send_vs_unregister", Depth::Deeper, || {
        let router = router(1);
        let (target, _mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();
        router.try_send(target, b"1".to_vec()).unwrap();

        let sender = {
            let router = router.clone();
            thread::spawn(move || router.blocking_send(target, b"2".to_vec()))
        };
        router.unregister(target).unwrap();
        let err = sender.join().unwrap().expect_err("the actor left");
        assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
        assert_eq!(err.into_inner(), b"2");
        router.shutdown();
    });
}

/// Model 17: `replace_mailbox` racing a send that may take the fast path and two
/// that may go through the overflow queue (the mailboxes hold one message). The
/// new mailbox gets every message once, each sender's in order; the old one is
/// left empty and disconnected. A message kept back by the move (a lost `Drain`,
/// a queue never released) is a deadlock loom reports.
#[test]
fn replace_vs_fast_and_overflow_sends() {
    check("17 replace_vs_fast_and_overflow_sends", Depth::Base, || {
        // Moved messages count against the bound until delivered: room for all three.
        let router = router(3);
        let (target, old) = (id(1), registered(&router, id(1)));

        let fast = {
            let router = router.clone();
            thread::spawn(move || router.try_send(target, b"f".to_vec()).expect("accepted"))
        };
        let overflow = {
            let router = router.clone();
            thread::spawn(move || {
                router.try_send(target, b"o1".to_vec()).expect("accepted");
                router.try_send(target, b"o2".to_vec()).expect("accepted");
            })
        };
        let (tx, new) = router.mailbox();
        router.replace_mailbox(target, tx).expect("replaced");
        let mut got: Vec<Vec<u8>> = (0..3).map(|_| new.recv().expect("message").data().to_vec()).collect();
        fast.join().unwrap();
        overflow.join().unwrap();
        router.flush();
        let pos = |m: &[u8]| got.iter().position(|g| g == m).expect("delivered to the new mailbox");
        assert!(pos(b"o1") < pos(b"o2"), "per-pair FIFO across the move: {got:?}");
        got.sort();
        assert_eq!(got, [b"f".to_vec(), b"o1".to_vec(), b"o2".to_vec()], "exactly once");
        assert_eq!(old.try_recv().unwrap_err(), TryRecvError::Disconnected, "the old mailbox was emptied");
        assert!(take_waiting(&new).is_empty());
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}

/// Model 18: suspend and resume racing the consumer and a sender. The mailbox
/// (capacity 1) starts with `0`; messages sent around the suspension are held
/// or delivered, and after the resume everything arrives once, in order. A held
/// queue never released, or a `Drain` lost across the resume, is a deadlock loom
/// reports.
#[test]
fn suspend_resume_vs_consumer() {
    check("18 suspend_resume_vs_consumer", Depth::Base, || {
        let router = router(4);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        router.try_send(target, b"0".to_vec()).unwrap();

        let consumer = thread::spawn(move || {
            let got: Vec<Vec<u8>> =
                (0..3).map(|_| mailbox.recv().expect("message").data().to_vec()).collect();
            (got, mailbox)
        });
        let sender = {
            let router = router.clone();
            thread::spawn(move || {
                router.try_send(target, b"1".to_vec()).expect("accepted");
                router.try_send(target, b"2".to_vec()).expect("accepted");
            })
        };
        router.suspend(target).expect("suspended");
        router.resume(target).expect("resumed");
        sender.join().unwrap();
        let (got, mailbox) = consumer.join().unwrap();
        assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        router.flush();
        assert!(take_waiting(&mailbox).is_empty());
        assert_eq!(router.metrics().total().overflow_depth, 0);
        router.shutdown();
    });
}

/// Model 19: sends through an `ActorHandle` (which skips the table) racing
/// `unregister`, with the mailbox full so one of them may go through the
/// overflow queue, while the actor takes the first message. The unregistering
/// thread then sends through the handle once more: after `unregister` has
/// returned, that send must be refused. Every accepted message is delivered
/// once or counted as a dead letter; nothing arrives after the refusal.
#[test]
fn handle_send_vs_unregister() {
    check("19 handle_send_vs_unregister", Depth::Deeper, || {
        let router = router(1);
        let (target, mailbox) = (id(1), registered(&router, id(1)));
        let handle = router.handle(target).expect("handle");
        handle.try_send(b"first".to_vec()).unwrap();

        let unregistering = {
            let (router, handle) = (router.clone(), handle.clone());
            thread::spawn(move || {
                router.unregister(target).expect("unregister");
                handle.try_send(b"late".to_vec())
            })
        };
        let sender = thread::spawn(move || handle.try_send(b"second".to_vec()));
        assert_eq!(mailbox.recv().unwrap().data(), b"first");
        let late = unregistering.join().unwrap();
        let sent = sender.join().unwrap();
        router.flush();

        let late = late.expect_err("a handle send after unregister returned is refused");
        assert_eq!(late.kind(), SendErrorKind::ActorNotFound);
        sent_once_or_refused(&router, &mailbox, sent, b"second");
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Disconnected);
        router.shutdown();
    });
}

/// Model 20: a handle send racing `replace_mailbox` (mailboxes of one
/// message, the old one full). The handle follows the registration to the new
/// mailbox: its message and the old mailbox's arrive there once, in order;
/// nothing stays in the old mailbox.
#[test]
fn handle_send_vs_replace() {
    check("20 handle_send_vs_replace", Depth::Deeper, || {
        let router = router(2);
        let (target, old) = (id(1), registered(&router, id(1)));
        let handle = router.handle(target).expect("handle");
        handle.try_send(b"a".to_vec()).unwrap();

        let sender = thread::spawn(move || handle.try_send(b"b".to_vec()).expect("accepted"));
        let (tx, new) = router.mailbox();
        router.replace_mailbox(target, tx).expect("replaced");
        let got: Vec<Vec<u8>> = (0..2).map(|_| new.recv().expect("message").data().to_vec()).collect();
        sender.join().unwrap();
        router.flush();
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()], "once, in order, in the new mailbox");
        assert_eq!(old.try_recv().unwrap_err(), TryRecvError::Disconnected);
        assert!(take_waiting(&new).is_empty());
        assert_eq!(dead_letters(&router), 0);
        router.shutdown();
    });
}
