//! The waiting send family: `send_async`, `send_async_timeout`, `blocking_send`,
//! `blocking_send_timeout`. Each test makes the target refuse for want of room,
//! then checks what the waiting send does: waits, wakes when room appears, keeps
//! order, gives up at its deadline, or ends with the error that ended the wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use sharded_router::{ActorId, ActorMessage, Mailbox, OverflowPolicy, Router, SendErrorKind};

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Arc<CountingWaker>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(waker));
    Pin::new(future).poll(&mut Context::from_waker(&waker))
}

/// Polls `future` as an executor would: again after each wake-up, until it is
/// ready (bounded: a send that is never woken fails the test).
fn await_ready<F: Future + Unpin>(future: &mut F, waker: &Arc<CountingWaker>) -> F::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = waker.wakes();
        if let Poll::Ready(output) = poll_once(future, waker) {
            return output;
        }
        while waker.wakes() == seen {
            assert!(Instant::now() < deadline, "the waiting send was never woken");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn payload_of(msg: ActorMessage) -> Vec<u8> {
    match msg {
        ActorMessage::Send { data } => data,
        other => panic!("expected a one-way message, got {other:?}"),
    }
}

/// A router with one shard whose actor has a mailbox of one and may park `bound`
/// messages at its shard; the actor is filled up to its bound.
fn full_actor(bound: usize) -> (Router, ActorId, Mailbox) {
    let policy =
        if bound == 0 { OverflowPolicy::Reject } else { OverflowPolicy::Park { max_per_actor: bound } };
    let router = Router::builder().shards(1).mailbox_capacity(1).overflow(policy).build().unwrap();
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    for i in 0..=bound {
        router.try_send(id, vec![i as u8]).unwrap();
    }
    let refused = router.try_send(id, vec![0xff]).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::MailboxFull, "the actor is at its bound");
    (router, id, mailbox)
}

#[test]
fn waits_while_parked_messages_fill_the_bound_and_completes_once_there_is_room() {
    let (router, id, mailbox) = full_actor(1);
    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(id, vec![2]);
    assert!(poll_once(&mut send, &waker).is_pending(), "no room yet: the send waits");
    assert!(poll_once(&mut send, &waker).is_pending(), "a second poll still waits");
    assert_eq!(waker.wakes(), 0);

    // Taking `0` lets the shard move the parked `1` into the mailbox, which
    // settles it and wakes the send; the send then finds the mailbox full with
    // nothing parked and waits for the mailbox itself, until `1` is taken.
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![0]);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![1]);
    assert!(matches!(await_ready(&mut send, &waker), Ok(())));
    assert!(waker.wakes() >= 1);
    drop(send);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![2], "the waited-for message comes last");
}

#[test]
fn with_nothing_parked_a_waiting_send_waits_for_the_mailbox_instead_of_parking() {
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: 4 })
        .build()
        .unwrap();
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    router.try_send(id, vec![0]).unwrap();

    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(id, vec![1]);
    assert!(poll_once(&mut send, &waker).is_pending(), "the mailbox is full: wait, do not park");
    router.flush();
    assert_eq!(router.metrics().total().overflow_depth, 0, "nothing went to the shard");
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![0]);
    assert!(waker.wakes() >= 1, "the receiver's take wakes the send");
    assert!(matches!(poll_once(&mut send, &waker), Poll::Ready(Ok(()))));
    drop(send);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![1]);
    let total = router.metrics().total();
    assert_eq!((total.delivered_direct, total.delivered_overflow, total.rejected), (2, 0, 0));
}

#[test]
fn with_the_reject_policy_a_take_from_the_mailbox_wakes_the_send() {
    let (router, id, mailbox) = full_actor(0);
    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(id, vec![1]);
    assert!(poll_once(&mut send, &waker).is_pending());
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![0]);
    assert!(waker.wakes() >= 1, "the receiver wakes the waiting send as it takes");
    assert!(matches!(poll_once(&mut send, &waker), Poll::Ready(Ok(()))));
    drop(send);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![1]);
}

#[test]
fn a_dropped_send_sends_nothing_and_does_not_hold_up_another() {
    let (router, id, mailbox) = full_actor(1);
    let first_waker = Arc::new(CountingWaker::default());
    let second_waker = Arc::new(CountingWaker::default());
    let mut dropped = router.send_async(id, b"never".to_vec());
    let mut kept = router.send_async(id, b"kept".to_vec());
    assert!(poll_once(&mut dropped, &first_waker).is_pending());
    assert!(poll_once(&mut kept, &second_waker).is_pending());
    drop(dropped);

    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![0]);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![1]);
    assert!(matches!(await_ready(&mut kept, &second_waker), Ok(())));
    drop(kept);
    assert_eq!(first_waker.wakes(), 0, "a withdrawn send is not woken");
    assert_eq!(payload_of(mailbox.recv().unwrap()), b"kept");
    router.flush();
    assert!(mailbox.try_recv().is_err(), "the dropped send's message never arrives");
}

#[test]
fn the_timeout_variant_gives_up_with_the_payload_and_sends_nothing() {
    let (router, id, mailbox) = full_actor(1);
    let started = Instant::now();
    let err = futures_executor::block_on(router.send_async_timeout(
        id,
        b"late".to_vec(),
        Duration::from_millis(30),
    ))
    .unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(30), "not before its deadline");
    assert_eq!(err.into_inner(), b"late");

    let zero = router.blocking_send_timeout(id, b"zero".to_vec(), Duration::ZERO).unwrap_err();
    assert_eq!(zero.kind(), SendErrorKind::Timeout);

    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![0]);
    assert_eq!(payload_of(mailbox.recv().unwrap()), vec![1]);
    router.flush();
    assert!(mailbox.try_recv().is_err(), "timed-out sends deliver nothing");
}

#[test]
fn a_timeout_with_room_available_just_sends() {
    let router = Router::builder().shards(1).build().unwrap();
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    router.blocking_send_timeout(id, b"a".to_vec(), Duration::ZERO).unwrap();
    futures_executor::block_on(router.send_async_timeout(id, b"b".to_vec(), Duration::MAX)).unwrap();
    assert_eq!(payload_of(mailbox.recv().unwrap()), b"a");
    assert_eq!(payload_of(mailbox.recv().unwrap()), b"b");
}

#[test]
fn duration_max_waits_without_a_limit_until_room_appears() {
    let (router, id, mailbox) = full_actor(1);
    let consumer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        (0..3).map(|_| payload_of(mailbox.recv().unwrap())).collect::<Vec<_>>()
    });
    router.blocking_send_timeout(id, vec![2], Duration::MAX).unwrap();
    assert_eq!(consumer.join().unwrap(), vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn unregistering_the_target_ends_the_wait_with_actor_not_found() {
    let (router, id, _mailbox) = full_actor(1);
    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(id, b"orphan".to_vec());
    assert!(poll_once(&mut send, &waker).is_pending());
    router.unregister(id).unwrap();
    assert!(waker.wakes() >= 1, "unregistration wakes the waiting send");
    match poll_once(&mut send, &waker) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), SendErrorKind::ActorNotFound);
            assert_eq!(e.into_inner(), b"orphan");
        }
        other => panic!("expected ActorNotFound, got {other:?}"),
    }
}

#[test]
fn dropping_the_mailbox_ends_the_wait() {
    let (router, id, mailbox) = full_actor(1);
    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(id, b"x".to_vec());
    assert!(poll_once(&mut send, &waker).is_pending());
    drop(mailbox);
    assert!(waker.wakes() >= 1);
    match poll_once(&mut send, &waker) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), SendErrorKind::ActorNotFound),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn shutdown_ends_every_wait_with_shutdown() {
    let (router, id, _mailbox) = full_actor(1);
    let waker = Arc::new(CountingWaker::default());
    let mut plain = router.send_async(id, b"a".to_vec());
    let mut bounded = router.send_async_timeout(id, b"b".to_vec(), Duration::from_secs(3600));
    assert!(poll_once(&mut plain, &waker).is_pending());
    assert!(poll_once(&mut bounded, &waker).is_pending());
    router.shutdown();
    assert!(waker.wakes() >= 2, "shutdown wakes both");
    for send in [&mut plain, &mut bounded] {
        match poll_once(send, &waker) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), SendErrorKind::Shutdown),
            other => panic!("expected Shutdown, got {other:?}"),
        }
    }
}

#[test]
fn errors_that_room_cannot_cure_return_at_once() {
    let router = Router::builder().shards(1).build().unwrap();
    let unknown = ActorId::new();
    let err = futures_executor::block_on(router.send_async(unknown, b"?".to_vec())).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
    assert_eq!(err.into_inner(), b"?");
    let err = router.blocking_send(unknown, b"?".to_vec()).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
}

#[test]
fn a_send_refused_by_the_shard_bound_waits_for_the_shard() {
    // One shard that may park two messages in all; `a` and `b` each have one
    // parked behind a full mailbox, so the shard is at its bound.
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: 8 })
        .max_parked_per_shard(2)
        .build()
        .unwrap();
    let (tx_a, mailbox_a) = router.mailbox();
    let (tx_b, mailbox_b) = router.mailbox();
    let (a, b) = (ActorId::new(), ActorId::new());
    router.register(a, tx_a).unwrap();
    router.register(b, tx_b).unwrap();
    for actor in [a, b] {
        router.try_send(actor, vec![0]).unwrap();
        router.try_send(actor, vec![1]).unwrap();
    }
    assert_eq!(router.try_send(b, vec![2]).unwrap_err().kind(), SendErrorKind::ShardFull);

    // `b` has a message parked, so its waiting send must park too (behind it):
    // it waits for the shard's load to fall.
    let waker = Arc::new(CountingWaker::default());
    let mut send = router.send_async(b, vec![2]);
    assert!(poll_once(&mut send, &waker).is_pending());
    // `a` takes one: its parked message moves in, the shard's load falls.
    assert_eq!(payload_of(mailbox_a.recv().unwrap()), vec![0]);
    assert!(matches!(await_ready(&mut send, &waker), Ok(())));
    drop(send);
    let got: Vec<Vec<u8>> = (0..3).map(|_| payload_of(mailbox_b.recv().unwrap())).collect();
    assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn producers_blocking_on_a_slow_consumer_lose_nothing_and_keep_their_order() {
    const PRODUCERS: u8 = 4;
    const EACH: u32 = 2_000;
    let router = Router::builder()
        .shards(2)
        .mailbox_capacity(4)
        .overflow(OverflowPolicy::Park { max_per_actor: 8 })
        .build()
        .unwrap();
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let router = router.clone();
            thread::spawn(move || {
                for seq in 0..EACH {
                    let mut data = vec![p];
                    data.extend_from_slice(&seq.to_le_bytes());
                    if p % 2 == 0 {
                        router.blocking_send(id, data).unwrap();
                    } else {
                        futures_executor::block_on(router.send_async(id, data)).unwrap();
                    }
                }
            })
        })
        .collect();

    let mut next = [0u32; PRODUCERS as usize];
    for _ in 0..u32::from(PRODUCERS) * EACH {
        let data = payload_of(mailbox.recv_timeout(Duration::from_secs(30)).expect("a producer stalled"));
        let p = usize::from(data[0]);
        let seq = u32::from_le_bytes(data[1..5].try_into().unwrap());
        assert_eq!(seq, next[p], "producer {p}'s messages arrive in order, each once");
        next[p] += 1;
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(next, [EACH; PRODUCERS as usize]);
    router.flush();
    assert!(mailbox.try_recv().is_err(), "nothing more than what was sent");
}
