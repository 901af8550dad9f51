//! Hot reload: `suspend`, `resume`, `replace_mailbox`. Each test tries to make a
//! message go missing, arrive twice or out of order across a swap, or a request,
//! channel or registration not survive it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::router;
use sharded_router::{
    ActorId, ActorMessage, DeadLetterReason, Mailbox, Participant, ReloadError, RequestError, Router,
    SendErrorKind, TryRecvError,
};

const WAIT: Duration = Duration::from_secs(10);

fn registered(router: &Router) -> (ActorId, Mailbox) {
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    (id, mailbox)
}

fn data(msg: ActorMessage) -> Vec<u8> {
    msg.data().to_vec()
}

/// Takes `n` messages, each within the bounded wait.
fn take(mailbox: &Mailbox, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| data(mailbox.recv_timeout(WAIT).expect("a message"))).collect()
}

fn bytes(range: std::ops::Range<u8>) -> Vec<Vec<u8>> {
    range.map(|b| vec![b]).collect()
}

#[test]
fn a_suspended_actor_gets_nothing_new_until_resumed_then_everything_in_order() {
    let router = router(16, 64);
    let (id, mailbox) = registered(&router);
    router.try_send(id, vec![0]).unwrap();
    router.suspend(id).unwrap();
    assert!(router.is_suspended(id));
    for b in 1..5u8 {
        router.try_send(id, vec![b]).unwrap();
    }
    router.flush();
    assert_eq!(take(&mailbox, 1), bytes(0..1), "what was sent before the suspension arrives");
    assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Empty, "held, not delivered");
    assert_eq!(router.metrics().total().overflow_depth, 4);

    router.resume(id).unwrap();
    assert!(!router.is_suspended(id));
    router.try_send(id, vec![5]).unwrap();
    assert_eq!(take(&mailbox, 5), bytes(1..6));
    router.flush();
    assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn suspend_and_resume_are_idempotent_and_typed_on_unknown_ids() {
    let router = router(4, 4);
    let (id, mailbox) = registered(&router);
    router.resume(id).unwrap();
    router.suspend(id).unwrap();
    router.suspend(id).unwrap();
    router.try_send(id, vec![1]).unwrap();
    router.resume(id).unwrap();
    router.resume(id).unwrap();
    assert_eq!(take(&mailbox, 1), bytes(1..2));

    let unknown = ActorId::new();
    assert_eq!(router.suspend(unknown), Err(ReloadError::ActorNotFound(unknown)));
    assert_eq!(router.resume(unknown), Err(ReloadError::ActorNotFound(unknown)));
    let (tx, _new) = router.mailbox();
    assert_eq!(router.replace_mailbox(unknown, tx), Err(ReloadError::ActorNotFound(unknown)));
    assert!(!router.is_suspended(unknown));

    router.shutdown();
    assert_eq!(router.suspend(id), Err(ReloadError::Shutdown));
    assert_eq!(router.resume(id), Err(ReloadError::Shutdown));
}

#[test]
fn a_suspension_holds_up_to_the_overflow_bound_and_loses_nothing_before_it() {
    let router = router(4, 3);
    let (id, mailbox) = registered(&router);
    router.suspend(id).unwrap();
    for b in 0..3u8 {
        router.try_send(id, vec![b]).unwrap();
    }
    let refused = router.try_send(id, vec![3]).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::MailboxFull);
    assert_eq!(refused.into_inner(), vec![3]);
    let timed_out = router.blocking_send_timeout(id, vec![4], Duration::from_millis(20)).unwrap_err();
    assert_eq!(timed_out.kind(), SendErrorKind::Timeout, "a waiting send waits for the resume");

    router.resume(id).unwrap();
    assert_eq!(take(&mailbox, 3), bytes(0..3));
    router.flush();
    assert_eq!(mailbox.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn unregistering_a_suspended_actor_dead_letters_what_was_held() {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&letters);
    let router = Router::builder()
        .shards(1)
        .on_dead_letter(move |l| sink.lock().unwrap().push((l.data, l.reason)))
        .build()
        .unwrap();
    let (id, _mailbox) = registered(&router);
    router.suspend(id).unwrap();
    router.try_send(id, vec![1]).unwrap();
    router.try_send(id, vec![2]).unwrap();
    router.unregister(id).unwrap();
    router.flush();
    let letters = letters.lock().unwrap().clone();
    assert_eq!(
        letters,
        vec![(vec![1], DeadLetterReason::Unregistered), (vec![2], DeadLetterReason::Unregistered)]
    );
}

#[test]
fn a_replacement_gets_the_old_mailbox_then_the_parked_messages_then_new_ones() {
    let router = router(2, 16);
    let (id, old) = registered(&router);
    for b in 0..5u8 {
        router.try_send(id, vec![b]).unwrap(); // 0, 1 in the mailbox; 2, 3, 4 parked
    }
    let (tx, new) = router.mailbox();
    router.replace_mailbox(id, tx).unwrap();
    router.try_send(id, vec![5]).unwrap();
    assert_eq!(take(&new, 6), bytes(0..6));
    router.flush();
    assert_eq!(new.try_recv().unwrap_err(), TryRecvError::Empty);
    // The old mailbox was emptied into the new one and is disconnected.
    assert_eq!(old.recv_timeout(WAIT).unwrap_err(), TryRecvError::Disconnected);
    drop(old);
    assert!(router.is_registered(id), "dropping a replaced mailbox unregisters nothing");
    router.try_send(id, vec![6]).unwrap();
    assert_eq!(take(&new, 1), bytes(6..7));
    drop(new);
    assert!(!router.is_registered(id), "dropping the current mailbox does");
}

#[test]
fn a_request_in_a_moved_message_is_answered_by_the_new_instance() {
    let router = router(4, 4);
    let (id, old) = registered(&router);
    let pending = router.request_async(id, b"ping".to_vec(), WAIT);
    let (tx, new) = router.mailbox();
    router.replace_mailbox(id, tx).unwrap();
    drop(old);
    match new.recv_timeout(WAIT).unwrap() {
        ActorMessage::Request { data, reply } => reply.reply([b"re:".as_slice(), &data].concat()).unwrap(),
        other => panic!("expected the request, got {other:?}"),
    }
    assert_eq!(futures_executor::block_on(pending).unwrap(), b"re:ping");

    // A request the old instance took before the swap is still answered: the
    // registration goes on.
    let (tx, newer) = router.mailbox();
    let pending = router.request_async(id, b"late".to_vec(), WAIT);
    let taken = new.recv_timeout(WAIT).unwrap();
    router.replace_mailbox(id, tx).unwrap();
    drop(new);
    match taken {
        ActorMessage::Request { data, reply } => reply.reply(data).unwrap(),
        other => panic!("expected the request, got {other:?}"),
    }
    assert_eq!(futures_executor::block_on(pending).unwrap(), b"late");

    // Once the actor unregisters, an answer from any of its mailboxes is refused.
    let pending = router.request_async(id, b"gone".to_vec(), WAIT);
    let taken = newer.recv_timeout(WAIT).unwrap();
    router.unregister(id).unwrap();
    match taken {
        ActorMessage::Request { data, reply } => assert_eq!(reply.reply(data), Err(b"gone".to_vec())),
        other => panic!("expected the request, got {other:?}"),
    }
    assert_eq!(futures_executor::block_on(pending).unwrap_err().error(), RequestError::ActorNotFound);
}

#[test]
fn channels_survive_a_replacement_and_close_with_the_actor() {
    let router = router(8, 8);
    let (id, old) = registered(&router);
    let (endpoint, client_mailbox) = router.mailbox();
    let client = router.attach_external(endpoint).unwrap();
    let opener = {
        let router = router.clone();
        thread::spawn(move || router.open_channel(client, Participant::Actor(id), b"hi".to_vec(), WAIT))
    };
    match old.recv_timeout(WAIT).unwrap() {
        ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).unwrap(),
        other => panic!("expected the open, got {other:?}"),
    }
    let channel = opener.join().unwrap().unwrap().id;

    let (tx, new) = router.mailbox();
    router.replace_mailbox(id, tx).unwrap();
    drop(old);
    router.channel_send(channel, client, b"after".to_vec()).unwrap();
    match new.recv_timeout(WAIT).unwrap() {
        ActorMessage::ChannelMessage { channel_id, data, .. } => {
            assert_eq!((channel_id, data), (channel, b"after".to_vec()));
        }
        other => panic!("expected the channel message, got {other:?}"),
    }
    router.channel_send(channel, Participant::Actor(id), b"back".to_vec()).unwrap();
    match client_mailbox.recv_timeout(WAIT).unwrap() {
        ActorMessage::ChannelMessage { data, .. } => assert_eq!(data, b"back"),
        other => panic!("expected the answer, got {other:?}"),
    }

    // Unregistering the actor closes the channel it took over, and tells the peer.
    router.unregister(id).unwrap();
    match client_mailbox.recv_timeout(WAIT).unwrap() {
        ActorMessage::ChannelClose { channel_id, .. } => assert_eq!(channel_id, channel),
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn replacing_a_suspended_actor_keeps_it_suspended_and_orders_everything() {
    let router = router(2, 16);
    let (id, old) = registered(&router);
    router.try_send(id, vec![0]).unwrap();
    router.try_send(id, vec![1]).unwrap();
    router.suspend(id).unwrap();
    router.try_send(id, vec![2]).unwrap();
    let (tx, new) = router.mailbox();
    router.replace_mailbox(id, tx).unwrap();
    assert!(router.is_suspended(id));
    router.try_send(id, vec![3]).unwrap();
    router.flush();
    assert_eq!(new.try_recv().unwrap_err(), TryRecvError::Empty, "still suspended");
    router.resume(id).unwrap();
    assert_eq!(take(&new, 4), bytes(0..4));
    drop(old);
}

#[test]
fn a_replacement_whose_receiver_is_gone_is_refused_and_nothing_changes() {
    let router = router(4, 4);
    let (id, old) = registered(&router);
    router.try_send(id, vec![1]).unwrap();
    let (tx, new) = router.mailbox();
    drop(new);
    assert_eq!(router.replace_mailbox(id, tx), Err(ReloadError::MailboxClosed));
    router.try_send(id, vec![2]).unwrap();
    assert_eq!(take(&old, 2), bytes(1..3));
}

/// One instance of the actor: takes messages until told to stop, records
/// `(producer, seq)` of each, answers requests with their payload.
fn instance(mailbox: Mailbox, stop: Arc<AtomicBool>) -> thread::JoinHandle<(Vec<(u8, u32)>, Mailbox)> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let msg = match mailbox.recv_timeout(Duration::from_millis(1)) {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => continue,
                Err(_) => break,
            };
            let (payload, reply) = match msg {
                ActorMessage::Send { data } => (data, None),
                ActorMessage::Request { data, reply } => (data, Some(reply)),
                ActorMessage::ChannelMessage { data, .. } => (data, None),
                other => panic!("unexpected {other:?}"),
            };
            seen.push((payload[0], u32::from_le_bytes(payload[1..5].try_into().unwrap())));
            if let Some(reply) = reply {
                reply.reply(payload).expect("the requester waits");
            }
        }
        (seen, mailbox)
    })
}

/// Four producers send numbered messages (every eighth a request) to one actor,
/// and a client sends numbered messages on a channel open with it, while the
/// actor's instance is replaced `SWAPS` times; with `suspend`, each swap is
/// suspend → stop the old instance → replace → start the new → resume.
fn swap_under_load(suspend: bool) {
    const PRODUCERS: u8 = 4;
    const SWAPS: usize = 200;
    let router = router(4, 64);
    let (id, first) = registered(&router);
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    // The channel, accepted by the first instance's mailbox.
    let (endpoint, _client_mailbox) = router.mailbox();
    let client = router.attach_external(endpoint).unwrap();
    let opener = {
        let router = router.clone();
        thread::spawn(move || router.open_channel(client, Participant::Actor(id), Vec::new(), WAIT))
    };
    match first.recv_timeout(WAIT).unwrap() {
        ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).unwrap(),
        other => panic!("expected the open, got {other:?}"),
    }
    let channel = opener.join().unwrap().unwrap().id;
    let talker = {
        let (router, done, sent) = (router.clone(), Arc::clone(&done), Arc::clone(&sent));
        thread::spawn(move || {
            let mut seq = 0u32;
            while !done.load(Ordering::SeqCst) || seq < 64 {
                let mut payload = vec![PRODUCERS];
                payload.extend_from_slice(&seq.to_le_bytes());
                loop {
                    match router.channel_send(channel, client, payload) {
                        Ok(()) => break,
                        Err(e) if e.kind() == SendErrorKind::MailboxFull => {
                            payload = e.into_inner();
                            thread::yield_now();
                        }
                        Err(e) => panic!("the channel keeps working: {e}"),
                    }
                }
                seq += 1;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            seq
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (router, done, sent) = (router.clone(), Arc::clone(&done), Arc::clone(&sent));
            thread::spawn(move || {
                let mut seq = 0u32;
                while !done.load(Ordering::SeqCst) || seq < 64 {
                    let mut payload = vec![p];
                    payload.extend_from_slice(&seq.to_le_bytes());
                    if seq % 8 == 7 {
                        // A request does not wait for room: at the bound (a
                        // suspension holds messages) it is refused, with nothing
                        // delivered, and tried again.
                        loop {
                            match router.request(id, payload.clone(), WAIT) {
                                Ok(answer) => {
                                    assert_eq!(answer, payload);
                                    break;
                                }
                                Err(e) if e.error() == RequestError::MailboxFull => {
                                    assert_eq!(e.into_payload(), Some(payload.clone()));
                                    thread::sleep(Duration::from_micros(100));
                                }
                                Err(e) => panic!("exactly one outcome, the reply, not {e:?}"),
                            }
                        }
                    } else {
                        router.blocking_send(id, payload).expect("accepted");
                    }
                    seq += 1;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                seq
            })
        })
        .collect();

    let mut seen = Vec::new();
    let mut stop = Arc::new(AtomicBool::new(false));
    let mut running = instance(first, Arc::clone(&stop));
    for _ in 0..SWAPS {
        // Let traffic build up between swaps, so that every swap happens with
        // messages in the mailbox, parked and on their way.
        let before = sent.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(1);
        while sent.load(Ordering::SeqCst) < before + 16 && Instant::now() < deadline {
            thread::yield_now();
        }
        if suspend {
            router.suspend(id).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let (records, old) = running.join().unwrap();
        seen.extend(records);
        let (tx, next) = router.mailbox();
        router.replace_mailbox(id, tx).unwrap();
        drop(old);
        stop = Arc::new(AtomicBool::new(false));
        running = instance(next, Arc::clone(&stop));
        if suspend {
            router.resume(id).unwrap();
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut counts: Vec<u32> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    counts.push(talker.join().unwrap());
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    assert_eq!(total, sent.load(Ordering::SeqCst));
    let deadline = Instant::now() + WAIT;
    router.flush();
    while router.metrics().total().overflow_depth > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let (records, last) = running.join().unwrap();
    seen.extend(records);
    // Whatever the last instance had not taken yet.
    while let Ok(msg) = last.try_recv() {
        let payload = data(msg);
        seen.push((payload[0], u32::from_le_bytes(payload[1..5].try_into().unwrap())));
    }

    let mut next = vec![0u32; usize::from(PRODUCERS) + 1];
    for &(p, seq) in &seen {
        assert_eq!(
            seq,
            next[usize::from(p)],
            "producer {p}: every message once, in order, across every swap"
        );
        next[usize::from(p)] += 1;
    }
    assert_eq!(next, counts, "nothing lost");
    let total = router.metrics().total();
    assert_eq!(total.dead_letters, 0);
    assert!(total.moved > 0, "some swaps found messages to move");
    assert_eq!(router.metrics().channels.channels, 1, "the channel is still open");
    eprintln!(
        "{SWAPS} swaps (suspend: {suspend}) under {} messages from {PRODUCERS} producers and a channel; {} moved from a replaced mailbox",
        seen.len(),
        total.moved
    );
}

#[test]
fn two_hundred_swaps_under_load_lose_duplicate_and_reorder_nothing() {
    swap_under_load(false);
}

#[test]
fn two_hundred_suspended_swaps_under_load_lose_duplicate_and_reorder_nothing() {
    swap_under_load(true);
}
