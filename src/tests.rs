//! A shard that fails: a panic in the shard's own code cannot be caused from
//! outside the crate (user callbacks are fenced), so these tests inject one.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::{
    ActorId, ActorMessage, ChannelError, DeadLetterReason, OverflowPolicy, RegisterError, RequestError,
    Router, SendErrorKind,
};

const HANG_GUARD: Duration = Duration::from_secs(10);

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(Noop));
    std::pin::Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

/// Polls `fut` until it is ready, at most [`HANG_GUARD`].
fn settle<F: Future + Unpin>(fut: &mut F) -> F::Output {
    let start = Instant::now();
    loop {
        if let Poll::Ready(out) = poll_once(fut) {
            return out;
        }
        assert!(start.elapsed() < HANG_GUARD, "future did not resolve");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `cond` holds, at most [`HANG_GUARD`].
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG_GUARD, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn letters(reason: DeadLetterReason) -> (Router, Arc<Mutex<Vec<DeadLetterReason>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .overflow(OverflowPolicy::Park { max_per_actor: 8 })
        .on_dead_letter(move |letter| {
            if letter.reason == reason {
                sink.lock().unwrap().push(letter.reason);
            }
        })
        .build()
        .unwrap();
    (router, seen)
}

#[test]
fn a_failed_shard_resolves_what_it_held_and_refuses_what_needs_it() {
    let (router, dead) = letters(DeadLetterReason::ShardFailed);
    let (a, b) = (ActorId::new(), ActorId::new());
    let (tx, mailbox_a) = router.mailbox();
    router.register(a, tx).unwrap();
    let (tx, mailbox_b) = router.mailbox();
    router.register(b, tx).unwrap();

    // `a`'s mailbox holds a request; a one-way message and a second request park.
    let mut held = router.request_async(a, b"held".to_vec(), Duration::from_secs(3600));
    router.try_send(a, b"parked".to_vec()).unwrap();
    let mut parked = router.request_async(a, b"parked request".to_vec(), Duration::MAX);
    let mut open = router.open_channel_async(b, a, b"open".to_vec(), Duration::from_secs(3600));
    router.flush();
    assert_eq!(router.metrics().total().overflow_depth, 3);
    assert!(poll_once(&mut held).is_pending());

    router.crash_shard(0);
    eventually("the shard is reported failed", || router.is_degraded());
    assert_eq!(router.failed_shards(), vec![0]);
    assert!(router.metrics().shards[0].failed);

    // Everything the shard held has an outcome, with payloads handed back where
    // they never reached the actor.
    assert_eq!(settle(&mut held).unwrap_err(), RequestError::ShardFailed);
    let parked = settle(&mut parked).unwrap_err();
    assert_eq!(parked, RequestError::ShardFailed);
    assert_eq!(parked.payload(), Some(&b"parked request"[..]));
    let open = settle(&mut open).unwrap_err();
    assert_eq!(open, ChannelError::ShardFailed);
    assert_eq!(open.initial_msg(), Some(&b"open"[..]));
    eventually("the parked one-way message is a dead letter", || dead.lock().unwrap().len() == 1);
    assert_eq!(router.metrics().total().overflow_depth, 0);

    // What needs the shard is refused at once; a mailbox with room still works.
    let req = router.request(b, b"q".to_vec(), Duration::from_secs(3600)).unwrap_err();
    assert_eq!(req, RequestError::ShardFailed);
    assert_eq!(req.into_payload().as_deref(), Some(&b"q"[..]));
    assert_eq!(router.register(ActorId::new(), router.mailbox().0), Err(RegisterError::ShardFailed));
    router.try_send(b, b"direct".to_vec()).unwrap();
    let full = router.try_send(b, b"would park".to_vec()).unwrap_err();
    assert_eq!(full.kind(), SendErrorKind::ShardFailed);
    assert_eq!(full.into_inner(), b"would park");
    match mailbox_b.try_recv().unwrap() {
        ActorMessage::Send { data } => assert_eq!(data, b"direct"),
        other => panic!("unexpected {other:?}"),
    }

    // Barriers, unregistration and shutdown still return.
    router.flush();
    router.unregister(a).unwrap();
    drop(mailbox_a);
    router.shutdown();
    assert!(router.is_shutdown());
}

#[test]
fn other_shards_carry_on_when_one_fails() {
    let router = Router::builder().shards(2).mailbox_capacity(4).build().unwrap();
    router.crash_shard(1);
    eventually("shard 1 is reported failed", || router.is_degraded());
    assert_eq!(router.failed_shards(), vec![1]);

    // Find an id on the healthy shard and serve requests on it.
    let (id, mailbox) = loop {
        let id = ActorId::new();
        let (tx, mailbox) = router.mailbox();
        if router.register(id, tx).is_ok() {
            break (id, mailbox);
        }
    };
    let server = std::thread::spawn(move || {
        while let Ok(msg) = mailbox.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                let _ = reply.reply(data);
            }
        }
    });
    for i in 0..100u8 {
        assert_eq!(router.request(id, vec![i], HANG_GUARD).unwrap(), vec![i]);
    }
    // A request nobody answers still times out on the healthy shard; ids on the
    // failed one are refused.
    let (silent, _silent_mailbox) = loop {
        let id = ActorId::new();
        let (tx, mailbox) = router.mailbox();
        match router.register(id, tx) {
            Ok(()) => break (id, mailbox),
            Err(e) => assert_eq!(e, RegisterError::ShardFailed),
        }
    };
    let outcome = router.request(silent, vec![], Duration::from_millis(20)).unwrap_err();
    assert_eq!(outcome, RequestError::Timeout);
    router.shutdown();
    server.join().unwrap();
}

#[test]
fn a_panicking_waker_is_fenced() {
    struct Bomb(AtomicUsize);
    impl Wake for Bomb {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("waker panics");
        }
    }
    let router = Router::builder().shards(1).build().unwrap();
    let id = ActorId::new();
    let (tx, _mailbox) = router.mailbox();
    router.register(id, tx).unwrap();
    let bomb = Arc::new(Bomb(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&bomb));
    let mut fut = router.request_async(id, vec![], Duration::from_millis(5));
    assert!(std::pin::Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)).is_pending());
    // The shard wakes the bomb at the deadline, and survives it.
    eventually("the waker ran", || bomb.0.load(Ordering::SeqCst) == 1);
    assert_eq!(settle(&mut fut).unwrap_err(), RequestError::Timeout);
    assert!(!router.is_degraded());
    let later = router.request(id, vec![], Duration::from_millis(5)).unwrap_err();
    assert_eq!(later, RequestError::Timeout);
}
