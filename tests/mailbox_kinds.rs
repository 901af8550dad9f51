//! Both kinds of mailbox, flume's (`mailbox`) and tokio's (`tokio_mailbox`), keep
//! the same guarantees: each test runs on both and asserts the same behaviour.
//! The receiving side is where they differ (flume's waiting list against one
//! tokio receiver and one waker slot shared by every clone of the mailbox), so
//! most tests wait on it in every way at once: async receives, blocking ones,
//! deadlines, cancelled futures.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{within, WAIT};
use sharded_router::{
    mailbox, tokio_mailbox, ActorId, ActorMessage, Mailbox, MailboxSender, OverflowPolicy, RecvFuture,
    Router, SendErrorKind, TryRecvError,
};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Flume,
    Tokio,
}

const KINDS: [Kind; 2] = [Kind::Flume, Kind::Tokio];

impl Kind {
    fn mailbox(self, capacity: usize) -> (MailboxSender, Mailbox) {
        match self {
            Self::Flume => mailbox(capacity),
            Self::Tokio => tokio_mailbox(capacity),
        }
    }

    /// A router of [`Kind::router`] and an actor registered with a mailbox it made.
    fn registered(self, capacity: usize, park: usize) -> (Router, ActorId, Mailbox) {
        let router = self.router(capacity, park);
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx).unwrap();
        (router, id, mailbox)
    }

    /// Two shards; `Router::mailbox` makes this kind, of `capacity`, and up to
    /// `park` messages per actor wait at its shard.
    fn router(self, capacity: usize, park: usize) -> Router {
        Router::builder()
            .shards(2)
            .mailbox_capacity(capacity)
            .overflow(OverflowPolicy::Park { max_per_actor: park })
            .tokio_mailboxes(matches!(self, Self::Tokio))
            .build()
            .unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn payload(msg: ActorMessage) -> Vec<u8> {
    match msg {
        ActorMessage::Send { data } => data,
        other => panic!("expected a one-way message, got {other:?}"),
    }
}

fn number(msg: ActorMessage) -> u64 {
    u64::from_le_bytes(payload(msg).try_into().unwrap())
}

#[test]
fn the_router_makes_the_configured_kind() {
    for kind in KINDS {
        let router = kind.router(3, 0);
        let (tx, mailbox) = router.mailbox();
        assert_eq!(mailbox.capacity(), 3, "{kind:?}");
        let id = ActorId::new();
        router.register(id, tx).unwrap();
        for i in 0..3u64 {
            router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
        }
        assert_eq!(mailbox.len(), 3, "{kind:?}");
        let refused = router.try_send(id, vec![9]).unwrap_err();
        assert_eq!(refused.kind(), SendErrorKind::MailboxFull, "{kind:?}: nothing parks with a bound of 0");
        assert_eq!((0..3).map(|_| number(mailbox.try_recv().unwrap())).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(mailbox.is_empty());
        assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Empty, "{kind:?}");
    }
}

#[test]
fn capacities_at_the_edges_are_clamped_not_fatal() {
    assert_eq!(tokio_mailbox(0).1.capacity(), 1);
    let (tx, rx) = tokio_mailbox(usize::MAX);
    assert_eq!(rx.capacity(), usize::MAX >> 3, "tokio's largest bound");
    let router = Kind::Tokio.router(4, 0);
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    for i in 0..10_000u64 {
        router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
    }
    assert_eq!(rx.len(), 10_000);
    assert_eq!((0..10_000).map(|_| number(rx.try_recv().unwrap())).sum::<u64>(), (0..10_000).sum::<u64>());
}

#[test]
fn fifo_per_sender_with_four_producers_waiting_for_room() {
    for kind in KINDS {
        let rt = runtime();
        let (router, id, mailbox) = kind.registered(16, 64);
        const PER: u64 = 5_000;
        let actor = rt.spawn(async move {
            let mut next = [0u64; 4];
            for _ in 0..4 * PER {
                let n = number(mailbox.recv_async().await.unwrap());
                let (producer, seq) = ((n >> 32) as usize, n & 0xffff_ffff);
                assert_eq!(seq, next[producer], "producer {producer} out of order");
                next[producer] += 1;
            }
            next
        });
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let router = router.clone();
                rt.spawn(async move {
                    for seq in 0..PER {
                        router.send_async(id, ((p << 32) | seq).to_le_bytes().to_vec()).await.unwrap();
                    }
                })
            })
            .collect();
        rt.block_on(async {
            for p in producers {
                within("the producers", p).await.unwrap();
            }
            assert_eq!(within("the actor", actor).await.unwrap(), [PER; 4], "{kind:?}");
        });
    }
}

#[test]
fn parked_messages_reach_a_blocking_receiver_in_order() {
    for kind in KINDS {
        let (router, id, mailbox) = kind.registered(2, 1_000);
        // Two fit; 498 park at the shard and move in as the actor takes messages
        // (each take that makes room tells the shard once).
        for i in 0..500u64 {
            router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
        }
        let taker = thread::spawn(move || {
            (0..500)
                .map(|_| number(mailbox.recv_timeout(WAIT).expect("a parked message")))
                .collect::<Vec<_>>()
        });
        assert_eq!(taker.join().unwrap(), (0..500).collect::<Vec<_>>(), "{kind:?}");
    }
}

#[test]
fn parked_messages_reach_an_async_receiver_in_order() {
    for kind in KINDS {
        let rt = runtime();
        let (router, id, mailbox) = kind.registered(2, 1_000);
        for i in 0..500u64 {
            router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
        }
        let got = rt.block_on(within("the parked messages", async move {
            let mut got = Vec::new();
            for _ in 0..500 {
                got.push(number(mailbox.recv_async().await.unwrap()));
            }
            got
        }));
        assert_eq!(got, (0..500).collect::<Vec<_>>(), "{kind:?}");
    }
}

#[test]
fn unregistering_wakes_every_kind_of_waiting_receiver() {
    for kind in KINDS {
        let rt = runtime();
        let (router, id, mailbox) = kind.registered(8, 0);
        let (a, b, c) = (mailbox.clone(), mailbox.clone(), mailbox.clone());
        let async_waiter = rt.spawn(async move { a.recv_async().await });
        let blocking = thread::spawn(move || b.recv());
        let far_deadline = thread::spawn(move || c.recv_deadline(Instant::now() + Duration::from_secs(3600)));
        // Let all three settle into waiting before the registration ends.
        thread::sleep(Duration::from_millis(50));
        router.unregister(id).unwrap();
        rt.block_on(async {
            assert!(within("the async receiver", async_waiter).await.unwrap().is_err(), "{kind:?}");
        });
        assert!(blocking.join().unwrap().is_err(), "{kind:?}");
        assert_eq!(far_deadline.join().unwrap().unwrap_err(), TryRecvError::Disconnected, "{kind:?}");
        assert_eq!(mailbox.recv_timeout(Duration::MAX).unwrap_err(), TryRecvError::Disconnected);
        assert_eq!(mailbox.recv_timeout(Duration::ZERO).unwrap_err(), TryRecvError::Disconnected);
    }
}

#[test]
fn what_was_delivered_before_unregister_is_still_received() {
    for kind in KINDS {
        let (router, id, mailbox) = kind.registered(8, 0);
        for i in 0..3u64 {
            router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
        }
        router.unregister(id).unwrap();
        let refused = router.try_send(id, vec![]).unwrap_err();
        assert_eq!(refused.kind(), SendErrorKind::ActorNotFound);
        let got = futures_executor::block_on(async {
            let mut got = Vec::new();
            while let Ok(msg) = mailbox.recv_async().await {
                got.push(number(msg));
            }
            got
        });
        assert_eq!(got, [0, 1, 2], "{kind:?}");
    }
}

#[test]
fn timeouts_at_the_edges() {
    for kind in KINDS {
        let (router, id, mailbox) = kind.registered(8, 0);
        assert_eq!(mailbox.recv_timeout(Duration::ZERO).unwrap_err(), TryRecvError::Empty, "{kind:?}");
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
        assert_eq!(mailbox.recv_deadline(past).unwrap_err(), TryRecvError::Empty, "{kind:?}");
        let start = Instant::now();
        assert_eq!(mailbox.recv_timeout(Duration::from_millis(20)).unwrap_err(), TryRecvError::Empty);
        assert!(start.elapsed() >= Duration::from_millis(20), "{kind:?}: returned before its timeout");
        // No limit: the message sent later is the one that ends the wait.
        let sender = {
            let router = router.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                router.try_send(id, 7u64.to_le_bytes().to_vec()).unwrap();
            })
        };
        assert_eq!(number(mailbox.recv_timeout(Duration::MAX).unwrap()), 7, "{kind:?}");
        sender.join().unwrap();
    }
}

/// Several clones wait at once, in every way, and most of the async waits are
/// cancelled part-way by short timeouts: every message is still taken exactly
/// once, and nobody sleeps through one (each waiter would hang the test).
#[test]
fn clones_waiting_at_once_take_each_message_exactly_once() {
    for kind in KINDS {
        let rt = runtime();
        let (router, id, mailbox) = kind.registered(16, 256);
        const N: u64 = 20_000;
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let record = |seen: &Arc<Mutex<HashSet<u64>>>, msg: ActorMessage| {
            assert!(seen.lock().unwrap().insert(number(msg)), "a message was taken twice");
        };
        let async_takers: Vec<_> = (0..3u64)
            .map(|t| {
                let (mailbox, seen) = (mailbox.clone(), Arc::clone(&seen));
                rt.spawn(async move {
                    let mut round = 0u64;
                    loop {
                        round += 1;
                        // Cancelled while waiting now and then: the future withdraws.
                        let wait = Duration::from_micros(1 + (round * 7 + t * 13) % 200);
                        match tokio::time::timeout(wait, mailbox.recv_async()).await {
                            Ok(Ok(msg)) => record(&seen, msg),
                            Ok(Err(_)) => return,
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        let blocking_takers: Vec<_> = (0..2)
            .map(|i| {
                let (mailbox, seen) = (mailbox.clone(), Arc::clone(&seen));
                thread::spawn(move || loop {
                    if i == 0 {
                        match mailbox.recv() {
                            Ok(msg) => record(&seen, msg),
                            Err(_) => return,
                        }
                    } else {
                        match mailbox.recv_timeout(Duration::from_micros(300)) {
                            Ok(msg) => record(&seen, msg),
                            Err(TryRecvError::Disconnected) => return,
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        drop(mailbox);
        rt.block_on(within("the sends", async {
            for i in 0..N {
                router.send_async(id, i.to_le_bytes().to_vec()).await.unwrap();
            }
        }));
        let deadline = Instant::now() + WAIT;
        while seen.lock().unwrap().len() < N as usize {
            assert!(Instant::now() < deadline, "{kind:?}: only {} of {N} taken", seen.lock().unwrap().len());
            thread::sleep(Duration::from_millis(5));
        }
        router.unregister(id).unwrap();
        rt.block_on(async {
            for t in async_takers {
                within("an async taker to see the end", t).await.unwrap();
            }
        });
        for t in blocking_takers {
            t.join().unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), N as usize, "{kind:?}");
    }
}

/// An async receive is woken by a message, then dropped before it takes it, while
/// a clone waits in a blocking receive: the message (and the next) must reach the
/// blocking receiver. flume 0.12's own blocking receive sleeps through both: the
/// dropped future passes its wake on by firing the blocking waiter's signal, which
/// takes it off flume's waiting list for good.
#[test]
fn a_blocking_receiver_gets_what_a_dropped_async_receiver_was_woken_for() {
    for kind in KINDS {
        for how in ["recv", "recv_timeout(MAX)", "recv_deadline(in an hour)"] {
            let (router, id, mailbox) = kind.registered(8, 0);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let mut waiting = Box::pin(mailbox.recv_async());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            let (got_tx, got) = std::sync::mpsc::channel();
            let blocking = mailbox.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let msg = match how {
                        "recv" => blocking.recv().map_err(|_| TryRecvError::Disconnected),
                        "recv_timeout(MAX)" => blocking.recv_timeout(Duration::MAX),
                        _ => blocking.recv_deadline(Instant::now() + Duration::from_secs(3600)),
                    };
                    if got_tx.send(msg.map(number)).is_err() {
                        return;
                    }
                }
            });
            // Let the blocking receiver file itself behind the async one.
            thread::sleep(Duration::from_millis(50));
            router.try_send(id, 1u64.to_le_bytes().to_vec()).unwrap();
            drop(waiting);
            assert_eq!(got.recv_timeout(WAIT), Ok(Ok(1)), "{kind:?}, {how}");
            router.try_send(id, 2u64.to_le_bytes().to_vec()).unwrap();
            assert_eq!(got.recv_timeout(WAIT), Ok(Ok(2)), "{kind:?}, {how}");
        }
    }
}

/// Counts its wake-ups.
struct Wakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counting_waker() -> (std::task::Waker, Arc<Wakes>) {
    let count = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
    (std::task::Waker::from(Arc::clone(&count)), count)
}

fn wakes(count: &Wakes) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

/// Receives on `a` and on `b`, each polled once and found waiting.
fn both_waiting<'m>(
    a: &'m Mailbox,
    b: &'m Mailbox,
    cx_a: &mut std::task::Context<'_>,
    cx_b: &mut std::task::Context<'_>,
) -> (Pin<Box<RecvFuture<'m>>>, Pin<Box<RecvFuture<'m>>>) {
    let (mut a, mut b) = (Box::pin(a.recv_async()), Box::pin(b.recv_async()));
    assert!(a.as_mut().poll(cx_a).is_pending());
    assert!(b.as_mut().poll(cx_b).is_pending());
    (a, b)
}

/// Step by step through the ways two clones can wait together (a tokio-backed
/// mailbox hands tokio's one waker slot from one waiting future to a relay and
/// back): whoever still waits is woken by the next message.
#[test]
fn two_waiting_clones_are_each_woken_whatever_the_other_does() {
    use std::task::{Context, Poll};
    for kind in KINDS {
        let (router, id, mailbox) = kind.registered(8, 0);
        let other = mailbox.clone();
        let send = |n: u64| router.try_send(id, n.to_le_bytes().to_vec()).unwrap();
        let (wa, ca) = counting_waker();
        let (wb, cb) = counting_waker();
        let (mut cx_a, mut cx_b) = (Context::from_waker(&wa), Context::from_waker(&wb));

        // A waits alone, B joins, B is cancelled: the message wakes A.
        let (mut a, b) = both_waiting(&mailbox, &other, &mut cx_a, &mut cx_b);
        drop(b);
        send(1);
        assert!(wakes(&ca) >= 1, "{kind:?}: the waiter left alone was not woken");
        match a.as_mut().poll(&mut cx_a) {
            Poll::Ready(Ok(msg)) => assert_eq!(number(msg), 1),
            other => panic!("{kind:?}: expected message 1, got {other:?}"),
        }
        drop(a);

        // Both wait; each message wakes someone, and the one that did not get the
        // first is woken for the second.
        let (mut a, mut b) = both_waiting(&mailbox, &other, &mut cx_a, &mut cx_b);
        let (before_a, before_b) = (wakes(&ca), wakes(&cb));
        send(2);
        assert!(wakes(&ca) + wakes(&cb) > before_a + before_b, "{kind:?}: nobody was woken");
        let got_a = a.as_mut().poll(&mut cx_a);
        let got_b = b.as_mut().poll(&mut cx_b);
        let (mut still, cx_still, count) = match (got_a, got_b) {
            (Poll::Ready(Ok(msg)), Poll::Pending) => {
                assert_eq!(number(msg), 2);
                (b, &mut cx_b, &cb)
            }
            (Poll::Pending, Poll::Ready(Ok(msg))) => {
                assert_eq!(number(msg), 2);
                (a, &mut cx_a, &ca)
            }
            (x, y) => panic!("{kind:?}: expected exactly one to get message 2: {x:?}, {y:?}"),
        };
        let before = wakes(count);
        send(3);
        assert!(wakes(count) > before, "{kind:?}: the remaining waiter was not woken for the next message");
        match still.as_mut().poll(cx_still) {
            Poll::Ready(Ok(msg)) => assert_eq!(number(msg), 3),
            other => panic!("{kind:?}: expected message 3, got {other:?}"),
        }
        drop(still);

        // A waits, then unregistering wakes it with the end of the mailbox.
        let (mut a, mut b) = both_waiting(&mailbox, &other, &mut cx_a, &mut cx_b);
        let (before_a, before_b) = (wakes(&ca), wakes(&cb));
        router.unregister(id).unwrap();
        assert!(wakes(&ca) > before_a && wakes(&cb) > before_b, "{kind:?}: unregister left a waiter asleep");
        assert!(matches!(a.as_mut().poll(&mut cx_a), Poll::Ready(Err(_))), "{kind:?}");
        assert!(matches!(b.as_mut().poll(&mut cx_b), Poll::Ready(Err(_))), "{kind:?}");
    }
}

#[test]
fn dropping_the_last_receiving_half_unregisters() {
    for kind in KINDS {
        let (router, id, mailbox) = kind.registered(8, 0);
        let clone = mailbox.clone();
        drop(mailbox);
        assert!(router.is_registered(id), "{kind:?}: a clone still receives");
        drop(clone);
        assert!(!router.is_registered(id), "{kind:?}");
        assert_eq!(router.try_send(id, vec![1]).unwrap_err().kind(), SendErrorKind::ActorNotFound);
    }
}

#[test]
fn replace_mailbox_moves_messages_between_the_kinds_in_order() {
    for (from, to) in [(Kind::Flume, Kind::Tokio), (Kind::Tokio, Kind::Flume), (Kind::Tokio, Kind::Tokio)] {
        let router = from.router(64, 64);
        let (tx, old) = from.mailbox(64);
        let id = ActorId::new();
        router.register(id, tx).unwrap();
        for i in 0..10u64 {
            router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
        }
        let (tx, new) = to.mailbox(64);
        router.replace_mailbox(id, tx).unwrap();
        let handle = router.handle(id).unwrap();
        for i in 10..20u64 {
            if i % 2 == 0 {
                router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
            } else {
                handle.try_send(i.to_le_bytes().to_vec()).unwrap();
            }
        }
        let got: Vec<_> = (0..20).map(|_| number(new.recv_timeout(WAIT).unwrap())).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>(), "{from:?} -> {to:?}");
        assert!(old.is_empty());
        drop(old);
        assert!(router.is_registered(id), "{from:?} -> {to:?}: the replaced mailbox no longer counts");
    }
}

#[test]
fn requests_round_trip_through_tokio_mailboxes() {
    let rt = runtime();
    let (router, id, mailbox) = Kind::Tokio.registered(32, 1_024);
    rt.spawn(async move {
        while let Ok(msg) = mailbox.recv_async().await {
            if let ActorMessage::Request { data, reply } = msg {
                let _ = reply.reply(data);
            }
        }
    });
    let requesters: Vec<_> = (0..8u64)
        .map(|r| {
            let router = router.clone();
            rt.spawn(async move {
                for i in 0..500u64 {
                    let asked = (r * 1_000 + i).to_le_bytes().to_vec();
                    let answer = router.request_async(id, asked.clone(), WAIT).await.unwrap();
                    assert_eq!(answer, asked);
                }
            })
        })
        .collect();
    rt.block_on(async {
        for r in requesters {
            within("the requesters", r).await.unwrap();
        }
    });
    // Blocking requests from plain threads reach the same task.
    for i in 0..50u8 {
        assert_eq!(router.request(id, vec![i], WAIT).unwrap(), [i]);
    }
}

/// An async receive takes part in tokio's budget: a task that keeps finding
/// messages yields now and then instead of starving its worker, and a blocking
/// receive called from such a task still returns what is queued.
#[test]
fn a_task_that_used_its_budget_still_receives() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (router, id, mailbox) = Kind::Tokio.registered(1_000, 0);
    for i in 0..1_000u64 {
        router.try_send(id, i.to_le_bytes().to_vec()).unwrap();
    }
    let got = rt.block_on(within("a thousand queued messages", async {
        // A second task gets a turn while the first drains: it runs only if the
        // receiving task yields.
        let other = tokio::spawn(async { Instant::now() });
        let mut got = Vec::new();
        for _ in 0..999 {
            got.push(number(mailbox.recv_async().await.unwrap()));
        }
        let finished = Instant::now();
        got.push(number(mailbox.recv_timeout(WAIT).unwrap()));
        assert!(other.await.unwrap() < finished, "the receiving task never yielded");
        got
    }));
    assert_eq!(got, (0..1_000).collect::<Vec<_>>());
}
