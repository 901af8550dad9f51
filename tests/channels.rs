//! Channels: open/accept/reject, messages, close, clean-up, external participants.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use sharded_router::compat::{oneshot, MessageCommand, MessageRouter};
use sharded_router::{
    ActorId, ActorMessage, ChannelError, ChannelId, Mailbox, Participant, Router, SendErrorKind,
};

const LONG: Duration = Duration::from_secs(30);

fn router() -> Router {
    Router::builder().shards(2).build().unwrap()
}

fn actor(router: &Router) -> (ActorId, Mailbox) {
    let (tx, rx) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    (id, rx)
}

/// An actor thread that answers channel opens according to the initial message
/// ("accept", "reject", "drop", anything else: accept), and echoes channel messages.
fn acceptor(router: &Router) -> ActorId {
    let (id, rx) = actor(router);
    let r = router.clone();
    thread::spawn(move || {
        while let Ok(msg) = rx.recv() {
            match msg {
                ActorMessage::ChannelOpen { initial_msg, reply, .. } => match initial_msg.as_slice() {
                    b"reject" => reply.reject(),
                    b"drop" => drop(reply),
                    _ => reply.accept(Some([b"ok:".as_slice(), &initial_msg].concat())).unwrap(),
                },
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    let _ = r.channel_send(channel_id, id, data);
                }
                _ => {}
            }
        }
    });
    id
}

fn expect_channel_message(rx: &Mailbox, channel: ChannelId) -> Vec<u8> {
    match rx.recv_timeout(LONG).unwrap() {
        ActorMessage::ChannelMessage { channel_id, data, .. } if channel_id == channel => data,
        other => panic!("expected a message on {channel:?}, got {other:?}"),
    }
}

fn expect_close(rx: &Mailbox, channel: ChannelId) {
    match rx.recv_timeout(LONG).unwrap() {
        ActorMessage::ChannelClose { channel_id, .. } if channel_id == channel => {}
        other => panic!("expected a close of {channel:?}, got {other:?}"),
    }
}

#[test]
fn open_outcomes_accept_reject_drop() {
    let router = router();
    let (a, _rx) = actor(&router);
    let b = acceptor(&router);

    let opened = router.open_channel(a, b, b"hi".to_vec(), LONG).unwrap();
    assert_eq!(opened.response.as_deref(), Some(&b"ok:hi"[..]));
    assert_eq!(
        router.open_channel(a, b, b"reject".to_vec(), LONG).map_err(ChannelError::from),
        Err(ChannelError::Rejected)
    );
    assert_eq!(
        router.open_channel(a, b, b"drop".to_vec(), LONG).map_err(ChannelError::from),
        Err(ChannelError::Rejected)
    );
    let m = router.metrics().channels;
    assert_eq!((m.channels, m.opened, m.rejected), (1, 1, 2), "only the accepted channel stays");
}

#[test]
fn open_errors_for_missing_or_identical_participants() {
    let router = router();
    let (a, _rx) = actor(&router);
    let ghost = ActorId::new();
    assert_eq!(
        router.open_channel(a, ghost, vec![], LONG).map_err(ChannelError::from),
        Err(ChannelError::ParticipantNotFound(Participant::Actor(ghost)))
    );
    assert_eq!(
        router.open_channel(ghost, a, vec![], LONG).map_err(ChannelError::from),
        Err(ChannelError::ParticipantNotFound(Participant::Actor(ghost)))
    );
    assert_eq!(
        router.open_channel(a, a, vec![], LONG).map_err(ChannelError::from),
        Err(ChannelError::SameParticipant)
    );
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn open_times_out_and_a_late_accept_fails() {
    let router = router();
    let (a, _rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    assert_eq!(
        router.open_channel(a, b, vec![], Duration::from_millis(30)).map_err(ChannelError::from),
        Err(ChannelError::Timeout)
    );
    let ActorMessage::ChannelOpen { reply, channel_id, .. } = rx_b.recv().unwrap() else {
        panic!("expected open")
    };
    assert!(reply.is_resolved());
    assert_eq!(reply.accept(None), Err(ChannelError::ChannelNotFound));
    assert_eq!(
        router.channel_send(channel_id, b, vec![1]).unwrap_err().kind(),
        SendErrorKind::ChannelNotFound
    );
    assert_eq!(router.metrics().channels.channels, 0);

    // Async: the target's shard keeps the deadline.
    let fut = router.open_channel_async(a, b, vec![], Duration::from_millis(30));
    assert_eq!(futures_executor::block_on(fut).map_err(ChannelError::from), Err(ChannelError::Timeout));
    router.flush();
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn target_unregistering_while_opening_resolves_the_open() {
    let router = router();
    let (a, _rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, b, vec![], LONG));
    let open = rx_b.recv_timeout(LONG).unwrap();
    assert!(matches!(open, ActorMessage::ChannelOpen { .. }));
    router.unregister(b).unwrap();
    assert_eq!(
        opener.join().unwrap().map_err(ChannelError::from),
        Err(ChannelError::ParticipantNotFound(Participant::Actor(b)))
    );
    let ActorMessage::ChannelOpen { reply, .. } = open else { unreachable!() };
    assert_eq!(reply.accept(None), Err(ChannelError::ChannelNotFound));
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn shutdown_while_opening_resolves_with_shutdown() {
    let router = router();
    let (a, _rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, b, vec![], LONG));
    let fut = router.open_channel_async(a, b, vec![], LONG);
    let first = rx_b.recv_timeout(LONG).unwrap();
    let second = rx_b.recv_timeout(LONG).unwrap();
    router.shutdown();
    assert_eq!(opener.join().unwrap().map_err(ChannelError::from), Err(ChannelError::Shutdown));
    assert_eq!(futures_executor::block_on(fut).map_err(ChannelError::from), Err(ChannelError::Shutdown));
    drop((first, second));
    assert_eq!(
        router.open_channel(a, b, vec![], LONG).map_err(ChannelError::from),
        Err(ChannelError::Shutdown)
    );
}

#[test]
fn messages_flow_both_ways_in_order_and_close_comes_last() {
    let router = router();
    let (a, rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    let r = router.clone();
    let accept = thread::spawn(move || {
        let ActorMessage::ChannelOpen { reply, initiator, .. } = rx_b.recv_timeout(LONG).unwrap() else {
            panic!("expected open")
        };
        assert_eq!(initiator, Participant::Actor(a));
        reply.accept(None).unwrap();
        rx_b
    });
    let ch = router.open_channel(a, b, vec![], LONG).unwrap().id;
    let rx_b = accept.join().unwrap();
    drop(r);

    for i in 0..500u32 {
        router.channel_send(ch, a, i.to_le_bytes().to_vec()).unwrap();
        router.channel_send(ch, b, (i + 1000).to_le_bytes().to_vec()).unwrap();
    }
    router.close_channel(ch, a).unwrap();
    for i in 0..500u32 {
        assert_eq!(expect_channel_message(&rx_b, ch), i.to_le_bytes());
        assert_eq!(expect_channel_message(&rx_a, ch), (i + 1000).to_le_bytes());
    }
    expect_close(&rx_b, ch);
    assert!(rx_a.try_recv().is_err(), "the closer is not sent its own close");
    assert_eq!(router.channel_send(ch, b, vec![]).unwrap_err().kind(), SendErrorKind::ChannelNotFound);
    assert_eq!(router.close_channel(ch, b), Err(ChannelError::ChannelNotFound));
    let m = router.metrics().channels;
    assert_eq!((m.channels, m.messages), (0, 1000));
}

#[test]
fn fifo_holds_across_sends_requests_and_channel_messages() {
    let router = Router::builder().shards(2).mailbox_capacity(4).build().unwrap();
    let (a, _rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, b, vec![], LONG));
    let ActorMessage::ChannelOpen { reply, .. } = rx_b.recv_timeout(LONG).unwrap() else { panic!() };
    reply.accept(None).unwrap();
    let ch = opener.join().unwrap().unwrap().id;
    // With a 4-slot mailbox most of these park at the shard; order must hold.
    for i in 0..200u32 {
        if i % 2 == 0 {
            router.try_send(b, i.to_le_bytes().to_vec()).unwrap();
        } else {
            router.channel_send(ch, a, i.to_le_bytes().to_vec()).unwrap();
        }
    }
    router.close_channel(ch, a).unwrap();
    for i in 0..200u32 {
        let msg = rx_b.recv_timeout(LONG).unwrap();
        assert_eq!(msg.data(), i.to_le_bytes());
        assert_eq!(matches!(msg, ActorMessage::ChannelMessage { .. }), i % 2 == 1);
    }
    expect_close(&rx_b, ch);
}

#[test]
fn non_participants_and_unknown_channels_are_refused_without_side_effects() {
    let router = router();
    let (a, rx_a) = actor(&router);
    let b = acceptor(&router);
    let (intruder, _rx) = actor(&router);
    let ch = router.open_channel(a, b, vec![], LONG).unwrap().id;

    let err = router.channel_send(ch, intruder, b"x".to_vec()).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::NotParticipant);
    assert_eq!(err.into_inner(), b"x");
    assert_eq!(router.close_channel(ch, intruder), Err(ChannelError::NotParticipant));
    let unknown = ChannelId::random();
    assert_eq!(router.channel_send(unknown, a, vec![]).unwrap_err().kind(), SendErrorKind::ChannelNotFound);
    assert_eq!(router.close_channel(unknown, a), Err(ChannelError::ChannelNotFound));

    // Still open for its participants: the echo comes back.
    router.channel_send(ch, a, b"still open".to_vec()).unwrap();
    assert_eq!(expect_channel_message(&rx_a, ch), b"still open");
    assert_eq!(router.metrics().channels.channels, 1);
}

#[test]
fn sending_on_a_channel_that_is_still_opening_is_refused() {
    let router = router();
    let (a, _rx_a) = actor(&router);
    let (b, rx_b) = actor(&router);
    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, b, vec![], LONG));
    let ActorMessage::ChannelOpen { reply, channel_id, .. } = rx_b.recv_timeout(LONG).unwrap() else {
        panic!()
    };
    assert_eq!(router.channel_send(channel_id, b, vec![]).unwrap_err().kind(), SendErrorKind::ChannelNotOpen);
    assert_eq!(router.close_channel(channel_id, a), Err(ChannelError::NotOpen));
    reply.accept(None).unwrap();
    assert_eq!(opener.join().unwrap().unwrap().id, channel_id);
}

#[test]
fn unregistering_an_actor_with_1000_channels_closes_all_and_notifies_every_peer() {
    let router = router();
    let hub = acceptor(&router);
    let peers: Vec<(ActorId, Mailbox)> = (0..50).map(|_| actor(&router)).collect();
    let mut opened: HashMap<ActorId, Vec<ChannelId>> = HashMap::new();
    for _ in 0..20 {
        for (peer, _) in &peers {
            let ch = router.open_channel(*peer, hub, vec![], LONG).unwrap().id;
            opened.entry(*peer).or_default().push(ch);
        }
    }
    assert_eq!(router.metrics().channels.channels, 1000);

    router.unregister(hub).unwrap();
    assert_eq!(router.metrics().channels.channels, 0, "no entry is left in the table");
    for (peer, rx) in &peers {
        let mut closed = Vec::new();
        for _ in 0..opened[peer].len() {
            match rx.recv_timeout(LONG).unwrap() {
                ActorMessage::ChannelClose { channel_id, .. } => closed.push(channel_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        // One close per channel, in the order the channels were opened.
        assert_eq!(&closed, &opened[peer]);
        router.flush();
        assert!(rx.try_recv().is_err(), "nothing more than one close per channel");
    }
}

#[test]
fn concurrent_open_message_close_loses_and_duplicates_nothing() {
    const THREADS: usize = 4;
    const CHANNELS_EACH: usize = 50;
    const MESSAGES: u32 = 100;
    let router = Router::builder().shards(2).mailbox_capacity(16).build().unwrap();
    let (target, rx) = actor(&router);
    let r = router.clone();
    // The target accepts everything and records what arrives on each channel.
    let recorder = thread::spawn(move || {
        let mut seen: HashMap<ChannelId, (u32, bool)> = HashMap::new();
        let mut closes = 0;
        while closes < THREADS * CHANNELS_EACH {
            let msg = rx.recv_timeout(LONG).expect("every channel is closed in time");
            match msg {
                ActorMessage::ChannelOpen { reply, .. } => reply.accept(None).unwrap(),
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    let entry = seen.entry(channel_id).or_default();
                    assert!(!entry.1, "message after close");
                    assert_eq!(data, entry.0.to_le_bytes(), "in order, no gaps, no duplicates");
                    entry.0 += 1;
                }
                ActorMessage::ChannelClose { channel_id, .. } => {
                    let entry = seen.entry(channel_id).or_default();
                    assert!(!entry.1, "closed twice");
                    entry.1 = true;
                    closes += 1;
                }
                _ => {}
            }
        }
        seen
    });
    drop(r);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let router = router.clone();
            thread::spawn(move || {
                let (me, _rx) = actor(&router);
                let mut mine = Vec::new();
                for _ in 0..CHANNELS_EACH {
                    let ch = router.open_channel(me, target, vec![], LONG).unwrap().id;
                    for i in 0..MESSAGES {
                        // The mailbox is small: retry refusals so every message lands once.
                        let mut data = i.to_le_bytes().to_vec();
                        loop {
                            match router.channel_send(ch, me, data) {
                                Ok(()) => break,
                                Err(e) if e.is_full() => {
                                    data = e.into_inner();
                                    thread::yield_now();
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    router.close_channel(ch, me).unwrap();
                    mine.push(ch);
                }
                mine
            })
        })
        .collect();
    let channels: Vec<ChannelId> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let seen = recorder.join().unwrap();
    assert_eq!(channels.len(), THREADS * CHANNELS_EACH);
    for ch in &channels {
        assert_eq!(seen.get(ch), Some(&(MESSAGES, true)), "channel {ch}");
    }
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn actor_to_external_channel_reaches_the_clients_endpoint() {
    let router = router();
    let (a, rx_a) = actor(&router);
    let (tx, client) = router.mailbox();
    let ext = router.attach_external(tx).unwrap();

    let r = router.clone();
    let opener = thread::spawn(move || r.open_channel(a, ext, b"hello client".to_vec(), LONG));
    let ActorMessage::ChannelOpen { reply, initiator, initial_msg, channel_id } =
        client.recv_timeout(LONG).unwrap()
    else {
        panic!("expected open")
    };
    assert_eq!((initiator, initial_msg.as_slice()), (Participant::Actor(a), &b"hello client"[..]));
    reply.accept(None).unwrap();
    let ch = opener.join().unwrap().unwrap().id;
    assert_eq!(ch, channel_id);

    router.channel_send(ch, a, b"to client".to_vec()).unwrap();
    assert_eq!(expect_channel_message(&client, ch), b"to client");
    router.channel_send(ch, ext, b"to actor".to_vec()).unwrap();
    assert_eq!(expect_channel_message(&rx_a, ch), b"to actor");

    // The client goes away: the actor is told, nothing is left behind.
    router.detach_external(ext).unwrap();
    expect_close(&rx_a, ch);
    assert_eq!(router.metrics().channels.channels, 0);
    assert!(client.recv().is_err(), "the endpoint disconnects");
}

#[test]
fn external_client_opens_to_an_actor() {
    let router = router();
    let b = acceptor(&router);
    let (tx, client) = router.mailbox();
    let ext = router.attach_external(tx).unwrap();
    let ch = router.open_channel(ext, b, b"x".to_vec(), LONG).unwrap().id;
    router.channel_send(ch, ext, b"echo me".to_vec()).unwrap();
    assert_eq!(expect_channel_message(&client, ch), b"echo me");
    router.close_channel(ch, ext).unwrap();
    assert_eq!(router.metrics().channels.channels, 0);
}

#[test]
fn compat_channel_commands() {
    futures_executor::block_on(async {
        let compat = MessageRouter::from_router(router());
        let router = compat.router().clone();
        let (a, rx_a) = actor(&router);
        let b = acceptor(&router);

        let (tx, rx) = oneshot();
        compat
            .route_message(MessageCommand::OpenChannel {
                initiator_id: a.into(),
                target_id: b.into(),
                initial_message: b"hi".to_vec(),
                response_tx: tx,
            })
            .await
            .unwrap();
        let ch = rx.await.unwrap().unwrap().id;

        let (tx, rx) = oneshot();
        compat
            .route_message(MessageCommand::ChannelMessage {
                channel_id: ch,
                sender_id: a.into(),
                message: b"ping".to_vec(),
                response_tx: tx,
            })
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        assert_eq!(expect_channel_message(&rx_a, ch), b"ping");

        // A non-participant cannot close it.
        let (tx, rx) = oneshot();
        let outsider = ActorId::new();
        let refused = compat
            .route_message(MessageCommand::ChannelClose {
                channel_id: ch,
                sender_id: outsider.into(),
                response_tx: tx,
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(rx.await.unwrap(), Err(ChannelError::NotParticipant));

        let (tx, rx) = oneshot();
        compat
            .route_message(MessageCommand::ChannelClose {
                channel_id: ch,
                sender_id: a.into(),
                response_tx: tx,
            })
            .await
            .unwrap();
        assert_eq!(rx.await.unwrap(), Ok(()));
        assert_eq!(router.metrics().channels.channels, 0);
    });
}

#[test]
fn an_open_whose_initiator_leaves_names_the_initiator() {
    let router = router();
    let (a, _mailbox_a) = actor(&router);
    let (b, mailbox_b) = actor(&router);
    let open = router.open_channel_async(a, b, b"hi".to_vec(), LONG);
    router.unregister(a).unwrap();
    let outcome = futures_executor::block_on(open).map_err(ChannelError::from);
    assert_eq!(outcome, Err(ChannelError::ParticipantNotFound(Participant::Actor(a))));
    // The target still gets the request, already settled.
    match mailbox_b.recv_timeout(LONG).unwrap() {
        ActorMessage::ChannelOpen { reply, .. } => assert!(reply.accept(None).is_err()),
        other => panic!("expected a channel open, got {other:?}"),
    }
}
