//! `ActorHandle`: sends that skip the table keep every guarantee of sends
//! through it. Each test tries to make one claim false under concurrency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

mod common;

use common::router;
use sharded_router::{
    ActorId, ActorMessage, HandleError, Mailbox, RequestError, Router, SendErrorKind, TryRecvError,
};

const LONG: Duration = Duration::from_secs(30);

fn encode(producer: u32, seq: u64) -> Vec<u8> {
    let mut v = producer.to_le_bytes().to_vec();
    v.extend_from_slice(&seq.to_le_bytes());
    v
}

fn decode(data: &[u8]) -> (u32, u64) {
    (u32::from_le_bytes(data[..4].try_into().unwrap()), u64::from_le_bytes(data[4..12].try_into().unwrap()))
}

fn registered(router: &Router, id: ActorId) -> Mailbox {
    let (tx, mailbox) = router.mailbox();
    router.register(id, tx).unwrap();
    mailbox
}

/// Takes messages until the mailbox disconnects, checking each producer's order.
fn consume_in_order(mailbox: &Mailbox) -> u64 {
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut n = 0;
    loop {
        match mailbox.recv_timeout(LONG) {
            Ok(msg) => {
                let (p, s) = decode(msg.data());
                if let Some(prev) = last.insert(p, s) {
                    assert!(s > prev, "producer {p}: {s} arrived after {prev}");
                }
                n += 1;
            }
            Err(TryRecvError::Disconnected) => return n,
            Err(e) => panic!("no disconnection within {LONG:?}: {e:?}"),
        }
    }
}

#[test]
fn a_handle_sends_requests_and_reports_its_registration() {
    let router = router(16, 16);
    let id = ActorId::new();
    let mailbox = registered(&router, id);
    let handle = router.handle(id).unwrap();
    assert_eq!(handle.id(), id);
    assert!(handle.is_registered());
    handle.try_send(b"one".to_vec()).unwrap();
    handle.tell(b"two".to_vec());
    futures_executor::block_on(handle.send_async(b"three".to_vec())).unwrap();
    for want in [&b"one"[..], b"two", b"three"] {
        assert_eq!(mailbox.recv().unwrap().data(), want);
    }
    let echo = thread::spawn(move || {
        for _ in 0..2 {
            if let Ok(ActorMessage::Request { data, reply }) = mailbox.recv() {
                reply.reply(data).unwrap();
            }
        }
        mailbox
    });
    assert_eq!(handle.request(b"ping".to_vec(), LONG).unwrap(), b"ping");
    assert_eq!(futures_executor::block_on(handle.request_async(b"pong".to_vec(), LONG)).unwrap(), b"pong");
    let _mailbox = echo.join().unwrap();
    let unknown = ActorId::new();
    assert_eq!(router.handle(unknown).unwrap_err(), HandleError::ActorNotFound(unknown));
    router.shutdown();
}

#[test]
fn an_old_handle_does_not_reach_a_new_registration_of_the_same_id() {
    let router = router(16, 16);
    let id = ActorId::new();
    let first = registered(&router, id);
    let old = router.handle(id).unwrap();
    router.unregister(id).unwrap();
    let second = registered(&router, id);
    let err = old.try_send(b"stale".to_vec()).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::ActorNotFound);
    assert_eq!(err.into_inner(), b"stale");
    assert!(!old.is_registered());
    let failed = old.request(b"stale request".to_vec(), LONG).unwrap_err();
    assert_eq!(failed.error(), RequestError::ActorNotFound);
    let failed = futures_executor::block_on(old.send_async(b"stale wait".to_vec())).unwrap_err();
    assert_eq!(failed.kind(), SendErrorKind::ActorNotFound);
    old.tell(b"stale tell".to_vec());
    assert_eq!(router.metrics().total().dead_letters, 1);
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);
    router.handle(id).unwrap().try_send(b"new".to_vec()).unwrap();
    assert_eq!(second.recv().unwrap().data(), b"new");
    router.shutdown();
    assert_eq!(old.try_send(vec![]).unwrap_err().kind(), SendErrorKind::Shutdown);
    assert_eq!(router.handle(id).unwrap_err(), HandleError::Shutdown);
}

/// Many threads send through handles (and through the table) while another
/// unregisters. Every send that starts after `unregister` returned is refused;
/// every accepted one is delivered once or counted as a dead letter; each
/// producer's messages arrive in order. Small mailboxes put many of them
/// through the overflow queue.
#[test]
fn no_handle_send_is_delivered_after_unregister_returns() {
    for round in 0..20 {
        let router = router(4, 64);
        let id = ActorId::new();
        let mailbox = registered(&router, id);
        let handle = router.handle(id).unwrap();
        let gone = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(5));
        let producers: Vec<_> = (0..4u32)
            .map(|p| {
                let (router, handle, gone, start) =
                    (router.clone(), handle.clone(), gone.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let (mut accepted, mut seq) = (0u64, 0u64);
                    loop {
                        let after = gone.load(Ordering::SeqCst);
                        seq += 1;
                        let sent = if p == 3 && seq % 2 == 0 {
                            router.try_send(id, encode(p, seq))
                        } else {
                            handle.try_send(encode(p, seq))
                        };
                        match sent {
                            Ok(()) => {
                                assert!(!after, "round {round}: accepted after unregister returned");
                                accepted += 1;
                            }
                            Err(e) if e.kind() == SendErrorKind::MailboxFull => {}
                            Err(e) => {
                                assert_eq!(e.kind(), SendErrorKind::ActorNotFound);
                                if after {
                                    return accepted;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let consumer = thread::spawn(move || consume_in_order(&mailbox));
        start.wait();
        thread::sleep(Duration::from_millis(2));
        router.unregister(id).unwrap();
        gone.store(true, Ordering::SeqCst);
        let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        let delivered = consumer.join().unwrap();
        router.flush();
        let dead = router.metrics().total().dead_letters;
        assert_eq!(delivered + dead, accepted, "round {round}: delivered {delivered} + dead {dead}");
        router.shutdown();
    }
}

/// One thread alternates handle and table sends to a slow consumer: they
/// arrive in the order sent, across the overflow queue.
#[test]
fn handle_and_table_sends_from_one_thread_stay_in_order() {
    let router = router(2, 1 << 16);
    let id = ActorId::new();
    let mailbox = registered(&router, id);
    let handle = router.handle(id).unwrap();
    let consumer = thread::spawn(move || {
        let mut next = 0u64;
        while next < 20_000 {
            let msg = mailbox.recv_timeout(LONG).expect("message");
            let (_, seq) = decode(msg.data());
            assert_eq!(seq, next, "out of order");
            next += 1;
            if next % 1000 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    for seq in 0..20_000u64 {
        if seq % 3 == 0 {
            router.try_send(id, encode(0, seq)).unwrap();
        } else {
            handle.try_send(encode(0, seq)).unwrap();
        }
    }
    consumer.join().unwrap();
    assert!(router.metrics().total().delivered_overflow > 0, "the overflow path was taken");
    router.shutdown();
}

/// Handles follow hot swaps: messages sent through a handle taken before any
/// swap keep arriving, once and in order, across many `replace_mailbox` calls.
#[test]
fn a_handle_follows_replaced_mailboxes() {
    let router = router(4, 1 << 16);
    let id = ActorId::new();
    let mut mailbox = registered(&router, id);
    let handle = router.handle(id).unwrap();
    let total = 20_000u64;
    let sender = {
        let handle = handle.clone();
        thread::spawn(move || {
            for seq in 0..total {
                handle.try_send(encode(0, seq)).unwrap();
            }
        })
    };
    let mut next = 0u64;
    let mut swaps = 0;
    while next < total {
        if next % 500 == 0 && swaps < 40 {
            router.suspend(id).unwrap();
            let (tx, new) = router.mailbox();
            router.replace_mailbox(id, tx).unwrap();
            router.resume(id).unwrap();
            // The old mailbox's messages moved to the new one.
            mailbox = new;
            swaps += 1;
        }
        let msg = mailbox.recv_timeout(LONG).expect("message");
        let (_, seq) = decode(msg.data());
        assert_eq!(seq, next, "once and in order across swaps");
        next += 1;
    }
    sender.join().unwrap();
    assert!(handle.is_registered());
    assert_eq!(router.metrics().total().dead_letters, 0);
    router.unregister(id).unwrap();
    assert_eq!(handle.try_send(vec![]).unwrap_err().kind(), SendErrorKind::ActorNotFound);
    router.shutdown();
}

/// A suspended actor's handle sends are held like table sends, and count
/// against the overflow bound.
#[test]
fn handle_sends_to_a_suspended_actor_are_held() {
    let router = router(8, 3);
    let id = ActorId::new();
    let mailbox = registered(&router, id);
    let handle = router.handle(id).unwrap();
    router.suspend(id).unwrap();
    for i in 0..3u8 {
        handle.try_send(vec![i]).unwrap();
    }
    assert_eq!(handle.try_send(vec![9]).unwrap_err().kind(), SendErrorKind::MailboxFull);
    router.flush();
    assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Empty);
    router.resume(id).unwrap();
    for i in 0..3u8 {
        assert_eq!(mailbox.recv_timeout(LONG).unwrap().data(), [i]);
    }
    router.shutdown();
}

/// Handles taken and used while another thread registers and unregisters the
/// same id over and over: every accepted message is delivered to a mailbox
/// (before its unregistration returned) or counted as a dead letter, once.
#[test]
fn handles_race_churn_of_the_same_id() {
    let router = router(64, 64);
    let id = ActorId::new();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let churn = {
        let (router, stop, delivered) = (router.clone(), stop.clone(), delivered.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mailbox = registered(&router, id);
                let mut n = 0;
                // Stay registered a little, taking what arrives meanwhile.
                for _ in 0..50 {
                    n += u64::from(mailbox.try_recv().is_ok());
                    thread::yield_now();
                }
                router.unregister(id).unwrap();
                while let Ok(_msg) = mailbox.try_recv() {
                    n += 1;
                }
                delivered.fetch_add(n, Ordering::SeqCst);
            }
        })
    };
    let mut accepted = 0u64;
    let mut handles = 0u64;
    for seq in 0..2_000_000u64 {
        if handles >= 2_000 {
            break;
        }
        if let Ok(handle) = router.handle(id) {
            handles += 1;
            for _ in 0..3 {
                accepted += u64::from(handle.try_send(encode(0, seq)).is_ok());
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    router.flush();
    let dead = router.metrics().total().dead_letters;
    assert!(handles > 0);
    assert_eq!(delivered.load(Ordering::SeqCst) + dead, accepted);
    router.shutdown();
}
