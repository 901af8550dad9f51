//! The router's guarantees, written as tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sharded_router::{
    ActorId, ActorMessage, DeadLetterReason, Mailbox, OverflowPolicy, RegisterError, RequestError, Router,
    SendErrorKind, TryRecvError, UnregisterError,
};

const LONG: Duration = Duration::from_secs(30);

fn encode(producer: u32, seq: u64) -> Vec<u8> {
    let mut v = producer.to_le_bytes().to_vec();
    v.extend_from_slice(&seq.to_le_bytes());
    v
}

fn decode(data: &[u8]) -> (u32, u64) {
    let p = u32::from_le_bytes(data[..4].try_into().unwrap());
    let s = u64::from_le_bytes(data[4..12].try_into().unwrap());
    (p, s)
}

/// Consumes a mailbox until it disconnects, checking per-producer order; returns
/// how many messages arrived. A slow consumer naps now and then, so its mailbox
/// fills and messages take the overflow path.
fn consume_in_order(mailbox: Mailbox, slow: bool) -> u64 {
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut n = 0;
    while let Ok(msg) = mailbox.recv() {
        let (p, s) = decode(msg.data());
        if let Some(prev) = last.insert(p, s) {
            assert!(s > prev, "producer {p}: seq {s} arrived after {prev}");
        }
        n += 1;
        if slow && n % 200 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    n
}

#[test]
fn exactly_once_and_fifo_under_concurrency_with_churn() {
    const PRODUCERS: u32 = 4;
    const ACTORS: usize = 128;
    const CHURNING: usize = 16;
    const PER_PRODUCER: u64 = 260_000;

    let dead = Arc::new(AtomicU64::new(0));
    let dead_in_sink = Arc::clone(&dead);
    let router = Router::builder()
        .shards(2)
        .mailbox_capacity(32)
        .overflow(OverflowPolicy::Park { max_per_actor: 256 })
        .on_dead_letter(move |_| {
            dead_in_sink.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();

    let ids: Vec<ActorId> = (0..ACTORS).map(|_| ActorId::new()).collect();
    let consumers = Arc::new(Mutex::new(Vec::new()));
    for (i, &id) in ids.iter().enumerate() {
        let (tx, rx) = router.mailbox();
        router.register(id, tx).unwrap();
        consumers.lock().unwrap().push(thread::spawn(move || consume_in_order(rx, i % 8 == 0)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let router = router.clone();
        let ids = ids[..CHURNING].to_vec();
        let stop = Arc::clone(&stop);
        let consumers = Arc::clone(&consumers);
        thread::spawn(move || {
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &id in &ids {
                    router.unregister(id).unwrap();
                    let (tx, rx) = router.mailbox();
                    router.register(id, tx).unwrap();
                    consumers.lock().unwrap().push(thread::spawn(move || consume_in_order(rx, true)));
                }
                cycles += 1;
                thread::sleep(Duration::from_millis(1));
            }
            cycles
        })
    };

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let router = router.clone();
            let ids = ids.clone();
            thread::spawn(move || {
                let mut seq = 0u64;
                let mut failed = 0u64;
                for i in 0..PER_PRODUCER {
                    let target = ids[(i as usize * 7 + p as usize) % ids.len()];
                    seq += 1;
                    if let Err(e) = router.try_send(target, encode(p, seq)) {
                        assert!(matches!(
                            e.kind(),
                            SendErrorKind::ActorNotFound | SendErrorKind::MailboxFull
                        ));
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();

    let failed: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let cycles = churn.join().unwrap();
    router.flush();
    for &id in &ids {
        router.unregister(id).unwrap();
    }
    router.flush();
    let handles = std::mem::take(&mut *consumers.lock().unwrap());
    let delivered: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let dead = dead.load(Ordering::Relaxed);

    let total = u64::from(PRODUCERS) * PER_PRODUCER;
    assert!(total >= 1_000_000);
    assert!(cycles > 0, "the churn thread never ran");
    assert_eq!(delivered + failed + dead, total, "delivered {delivered}, failed {failed}, dead {dead}");
    let m = router.metrics().total();
    eprintln!("delivered {delivered} (via overflow {}), failed {failed}, dead {dead}", m.delivered_overflow);
    assert!(m.delivered_overflow > 0, "the overflow path was exercised");
    assert_eq!(m.delivered_direct + m.delivered_overflow, delivered);
    assert_eq!(m.dead_letters, dead);
    assert_eq!(m.overflow_depth, 0);
    assert_eq!(m.registered_actors, 0);
}

#[test]
fn full_mailbox_parks_then_delivers_in_order_without_stalling_others() {
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(4)
        .overflow(OverflowPolicy::Park { max_per_actor: 8 })
        .build()
        .unwrap();
    let (slow_tx, slow) = router.mailbox();
    let slow_id = ActorId::new();
    router.register(slow_id, slow_tx).unwrap();
    let (fast_tx, fast) = router.mailbox();
    let fast_id = ActorId::new();
    router.register(fast_id, fast_tx).unwrap();

    // 4 fill the mailbox, 8 are parked, the 13th is refused and handed back.
    for i in 0..12u64 {
        router.try_send(slow_id, encode(0, i)).unwrap();
    }
    let err = router.try_send(slow_id, encode(0, 12)).unwrap_err();
    assert!(err.is_full());
    assert_eq!(decode(&err.into_inner()), (0, 12));
    router.flush();
    let m = router.metrics().total();
    assert_eq!((m.delivered_direct, m.overflow_depth, m.rejected), (4, 8, 1));

    // The stalled actor does not hold up another one on the same shard.
    for i in 0..100u64 {
        router.try_send(fast_id, encode(1, i)).unwrap();
        assert_eq!(decode(fast.recv_timeout(LONG).unwrap().data()), (1, i));
    }

    // Draining the slow mailbox lets the parked messages in, in order, and later
    // sends queue behind them.
    for i in 0..12u64 {
        assert_eq!(decode(slow.recv_timeout(LONG).unwrap().data()), (0, i));
        if i == 5 {
            router.try_send(slow_id, encode(0, 100)).unwrap();
        }
    }
    assert_eq!(decode(slow.recv_timeout(LONG).unwrap().data()), (0, 100));
    router.flush();
    let m = router.metrics().total();
    assert_eq!(m.overflow_depth, 0);
    assert_eq!(m.delivered_overflow, 9);
}

#[test]
fn reject_policy_refuses_at_once() {
    let router =
        Router::builder().shards(1).mailbox_capacity(2).overflow(OverflowPolicy::Reject).build().unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    router.try_send(id, vec![1]).unwrap();
    router.try_send(id, vec![2]).unwrap();
    assert_eq!(router.try_send(id, vec![3]).unwrap_err().kind(), SendErrorKind::MailboxFull);
    assert_eq!(rx.try_recv().unwrap().data(), [1]);
    router.try_send(id, vec![4]).unwrap();
    assert_eq!(rx.try_recv().unwrap().data(), [2]);
    assert_eq!(rx.try_recv().unwrap().data(), [4]);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn parked_messages_become_dead_letters_when_the_actor_unregisters() {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&letters);
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .on_dead_letter(move |l| sink.lock().unwrap().push(l))
        .build()
        .unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    for i in 0..4u8 {
        router.try_send(id, vec![i]).unwrap();
    }
    router.unregister(id).unwrap();
    router.flush();
    // The one delivered before unregistering is still there; then disconnect.
    assert_eq!(rx.recv().unwrap().data(), [0]);
    assert!(rx.recv().is_err());
    let letters = letters.lock().unwrap();
    assert_eq!(letters.iter().map(|l| l.data[0]).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(letters.iter().all(|l| l.target == id.into() && l.reason == DeadLetterReason::Unregistered));
    assert_eq!(router.metrics().total().dead_letters, 3);
}

#[test]
fn tell_counts_undeliverable_messages_as_dead_letters() {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&letters);
    let router =
        Router::builder().shards(2).on_dead_letter(move |l| sink.lock().unwrap().push(l)).build().unwrap();
    let nobody = ActorId::new();
    router.tell(nobody, b"x".to_vec());
    assert_eq!(router.metrics().total().dead_letters, 1);
    let letters = letters.lock().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].target, letters[0].reason), (nobody.into(), DeadLetterReason::ActorNotFound));
    assert_eq!(letters[0].data, b"x");
}

#[test]
fn registration_errors_are_typed() {
    let router = Router::builder().shards(2).build().unwrap();
    let id = ActorId::new();
    let (tx, _rx) = router.mailbox();
    router.register(id, tx).unwrap();
    let (tx2, _rx2) = router.mailbox();
    assert_eq!(router.register(id, tx2), Err(RegisterError::AlreadyRegistered(id)));
    assert!(router.is_registered(id));
    assert_eq!(router.actor_ids(), vec![id]);
    router.unregister(id).unwrap();
    assert_eq!(router.unregister(id), Err(UnregisterError::ActorNotFound(id)));
    assert_eq!(router.try_send(id, vec![]).unwrap_err().kind(), SendErrorKind::ActorNotFound);
}

#[test]
fn registration_is_visible_to_other_threads_at_once() {
    let router = Router::builder().shards(2).build().unwrap();
    for _ in 0..200 {
        let id = ActorId::new();
        let (tx, rx) = router.mailbox();
        router.register(id, tx).unwrap();
        let r = router.clone();
        thread::spawn(move || r.try_send(id, vec![7]).unwrap()).join().unwrap();
        assert_eq!(rx.try_recv().unwrap().data(), [7]);
        router.unregister(id).unwrap();
        let r = router.clone();
        let err = thread::spawn(move || r.try_send(id, vec![8]).unwrap_err()).join().unwrap();
        assert!(err.is_not_found());
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
    }
}

fn spawn_answering_actor(router: &Router) -> ActorId {
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    thread::spawn(move || {
        while let Ok(msg) = rx.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                match data.as_slice() {
                    b"drop" => drop(reply),
                    // Never answered and never dropped: only the deadline ends it.
                    b"ignore" => std::mem::forget(reply),
                    _ => {
                        let _ = reply.reply([b"re:".as_slice(), &data].concat());
                    }
                }
            }
        }
    });
    id
}

#[test]
fn request_outcomes() {
    let router = Router::builder().shards(2).build().unwrap();
    let id = spawn_answering_actor(&router);
    assert_eq!(router.request(id, b"a".to_vec(), LONG).unwrap(), b"re:a");
    assert_eq!(
        router.request(id, b"drop".to_vec(), LONG).map_err(RequestError::from),
        Err(RequestError::NoReply)
    );
    assert_eq!(
        router.request(id, b"ignore".to_vec(), Duration::from_millis(30)).map_err(RequestError::from),
        Err(RequestError::Timeout)
    );
    assert_eq!(
        router.request(ActorId::new(), vec![], LONG).map_err(RequestError::from),
        Err(RequestError::ActorNotFound)
    );
    // Async, on a plain executor: the shard keeps the deadline.
    let fut = router.request_async(id, b"ignore".to_vec(), Duration::from_millis(30));
    assert_eq!(futures_executor::block_on(fut).map_err(RequestError::from), Err(RequestError::Timeout));
    let fut = router.request_async(id, b"b".to_vec(), LONG);
    assert_eq!(futures_executor::block_on(fut).unwrap(), b"re:b");
}

#[test]
fn request_to_an_actor_that_unregisters_mid_request_gets_actor_not_found() {
    let router = Router::builder().shards(1).build().unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    let r = router.clone();
    let requester = thread::spawn(move || r.request(id, b"q".to_vec(), LONG));
    // The actor receives the request but keeps the handle, then unregisters.
    let ActorMessage::Request { reply, .. } = rx.recv_timeout(LONG).unwrap() else {
        panic!("expected a request")
    };
    router.unregister(id).unwrap();
    assert_eq!(requester.join().unwrap().map_err(RequestError::from), Err(RequestError::ActorNotFound));
    assert_eq!(reply.reply(b"late".to_vec()), Err(b"late".to_vec()));
}

#[test]
fn async_request_resolves_when_the_target_unregisters() {
    let router = Router::builder().shards(1).build().unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    let fut = router.request_async(id, vec![], LONG);
    let msg = rx.recv_timeout(LONG).unwrap();
    router.unregister(id).unwrap();
    assert_eq!(futures_executor::block_on(fut).map_err(RequestError::from), Err(RequestError::ActorNotFound));
    drop(msg);
}

#[test]
fn shutdown_mid_request_resolves_with_shutdown() {
    let router = Router::builder().shards(2).build().unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    let r = router.clone();
    let sync_req = thread::spawn(move || r.request(id, b"1".to_vec(), LONG));
    let async_req = router.request_async(id, b"2".to_vec(), LONG);
    let first = rx.recv_timeout(LONG).unwrap();
    let second = rx.recv_timeout(LONG).unwrap();
    router.shutdown();
    assert_eq!(sync_req.join().unwrap().map_err(RequestError::from), Err(RequestError::Shutdown));
    assert_eq!(
        futures_executor::block_on(async_req).map_err(RequestError::from),
        Err(RequestError::Shutdown)
    );
    drop((first, second));
    // Everything after shutdown says so.
    assert_eq!(router.request(id, vec![], LONG).map_err(RequestError::from), Err(RequestError::Shutdown));
    assert_eq!(router.try_send(id, vec![]).unwrap_err().kind(), SendErrorKind::Shutdown);
    let (tx, _rx) = router.mailbox();
    assert_eq!(router.register(ActorId::new(), tx), Err(RegisterError::Shutdown));
    assert_eq!(router.unregister(id), Err(UnregisterError::Shutdown));
    assert!(rx.recv().is_err(), "mailboxes disconnect at shutdown");
}

fn live_threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn shutdown_under_load_returns_and_joins_every_shard_thread() {
    let router = Router::builder().shards(4).thread_name("srt-load").mailbox_capacity(8).build().unwrap();
    if cfg!(target_os = "linux") {
        // A thread names itself once it runs; give them a moment to start.
        let start = std::time::Instant::now();
        while live_threads_named("srt-load") < 4 && start.elapsed() < LONG {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(live_threads_named("srt-load"), 4);
    }
    let ids: Vec<ActorId> = (0..32)
        .map(|i| {
            let (tx, rx) = router.mailbox();
            let id = ActorId::new();
            router.register(id, tx).unwrap();
            // Half the actors never read, so overflow queues are busy at shutdown.
            thread::spawn(move || {
                if i % 2 == 0 {
                    while rx.recv().is_ok() {}
                } else {
                    thread::sleep(LONG);
                }
            });
            id
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let router = router.clone();
            let ids = ids.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = p;
                while !stop.load(Ordering::Relaxed) {
                    match router.try_send(ids[i % ids.len()], vec![0; 8]) {
                        Err(e) if e.is_shutdown() => return,
                        _ => i += 1,
                    }
                    drop(router.request_async(ids[i % ids.len()], vec![], LONG));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let r = router.clone();
    thread::spawn(move || {
        r.shutdown();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(LONG).expect("shutdown returned");
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    if cfg!(target_os = "linux") {
        assert_eq!(live_threads_named("srt-load"), 0, "every shard thread is joined");
    }
    assert_eq!(router.metrics().total().overflow_depth, 0);
}

#[test]
fn dropping_the_last_handle_shuts_down() {
    let router = Router::builder().shards(2).thread_name("srt-drop").build().unwrap();
    let (tx, rx) = router.mailbox();
    router.register(ActorId::new(), tx).unwrap();
    drop(router);
    assert!(rx.recv().is_err());
    if cfg!(target_os = "linux") {
        assert_eq!(live_threads_named("srt-drop"), 0);
    }
}

#[test]
fn async_registration_and_receive() {
    futures_executor::block_on(async {
        let router = Router::builder().shards(1).build().unwrap();
        let (tx, rx) = router.mailbox();
        let id = ActorId::new();
        router.register_async(id, tx).await.unwrap();
        router.try_send(id, b"hi".to_vec()).unwrap();
        assert_eq!(rx.recv_async().await.unwrap().data(), b"hi");
        router.unregister_async(id).await.unwrap();
        assert!(rx.recv_async().await.is_err());
    });
}

#[test]
fn shutdown_resolves_requests_queued_in_a_dropped_mailbox() {
    // A request whose reply handle is dropped with the mailbox's queue gets the
    // router's outcome, never `NoReply`. Dropping the last mailbox unregisters the
    // actor, so that outcome is `ActorNotFound`, and a later shutdown keeps it.
    let router = Router::builder().shards(1).build().unwrap();
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    let pending = router.request_async(id, b"q".to_vec(), LONG);
    drop(mailbox);
    router.shutdown();
    assert_eq!(
        futures_executor::block_on(pending).map_err(RequestError::from),
        Err(RequestError::ActorNotFound)
    );

    // The mailbox dropped while the router shuts down: one of the router's outcomes.
    for _ in 0..50 {
        let router = Router::builder().shards(1).build().unwrap();
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx).unwrap();
        let pending = router.request_async(id, b"q".to_vec(), LONG);
        let dropper = thread::spawn(move || drop(mailbox));
        router.shutdown();
        dropper.join().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || tx.send(futures_executor::block_on(pending).map_err(RequestError::from)));
        let outcome = rx.recv_timeout(LONG).expect("the request resolves");
        assert!(matches!(outcome, Err(RequestError::ActorNotFound | RequestError::Shutdown)), "{outcome:?}");
    }
}

#[test]
fn parked_messages_never_reach_a_later_registration_under_the_same_id() {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&letters);
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .on_dead_letter(move |l| sink.lock().unwrap().push(l.data))
        .build()
        .unwrap();
    let id = ActorId::new();
    let (tx, first) = router.mailbox();
    router.register(id, tx).unwrap();
    for i in 0..3u8 {
        router.try_send(id, vec![i]).unwrap();
    }
    router.unregister(id).unwrap();
    let (tx, second) = router.mailbox();
    router.register(id, tx).unwrap();
    router.try_send(id, vec![9]).unwrap();
    router.flush();
    // The new registration sees only what was sent to it.
    assert_eq!(second.try_recv().unwrap().data(), [9]);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);
    // The old one keeps what it had before unregistering; the parked rest are dead letters.
    assert_eq!(first.recv().unwrap().data(), [0]);
    assert!(first.recv().is_err());
    assert_eq!(*letters.lock().unwrap(), vec![vec![1], vec![2]]);
}

#[test]
fn a_dead_letter_sink_may_drop_the_last_router_handle_on_a_shard_thread() {
    let holder: Arc<Mutex<Option<Router>>> = Arc::new(Mutex::new(None));
    let in_sink = Arc::clone(&holder);
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(1)
        .thread_name("srt-sink")
        .on_dead_letter(move |_| {
            // Runs on the shard thread; dropping the last handle shuts down there.
            drop(in_sink.lock().unwrap().take());
        })
        .build()
        .unwrap();
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    router.try_send(id, vec![0]).unwrap();
    router.try_send(id, vec![1]).unwrap(); // parked: the mailbox holds one
    {
        // The sink waits for this lock, so the handle it drops is the last one.
        let mut held = holder.lock().unwrap();
        *held = Some(router.clone());
        drop(router);
        held.as_ref().unwrap().unregister(id).unwrap();
    }
    assert_eq!(rx.recv_timeout(LONG).unwrap().data(), [0]);
    assert_eq!(rx.recv_timeout(LONG).unwrap_err(), TryRecvError::Disconnected);
    // The parked message becomes a dead letter on the shard thread, after the
    // unregistration returned; its sink takes the last handle.
    let start = std::time::Instant::now();
    while holder.lock().unwrap().is_some() && start.elapsed() < LONG {
        thread::sleep(Duration::from_millis(1));
    }
    if cfg!(target_os = "linux") {
        let start = std::time::Instant::now();
        while live_threads_named("srt-sink") > 0 && start.elapsed() < LONG {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(live_threads_named("srt-sink"), 0, "the shard thread ends on its own");
    }
    assert!(holder.lock().unwrap().is_none());
}
