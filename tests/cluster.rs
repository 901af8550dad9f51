//! The cluster over a real nats-server (no mocks): two and three nodes in one
//! process, each with its own `Router` and its own NATS connection. Skipped
//! loudly when `nats-server` is not installed; under `CI=true` a missing server
//! fails instead.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use sharded_router::cluster::{Cluster, ClusterConfig};
use sharded_router::{
    ActorId, ActorMessage, ChannelError, RegisterError, RequestError, Router, SendErrorKind,
};
use sharded_router_workloads::nats_server::NatsServer;

fn config(url: &str, node: &str) -> ClusterConfig {
    ClusterConfig::new("test", node, url)
        .heartbeat(Duration::from_millis(100))
        .node_timeout(Duration::from_millis(1000))
}

async fn join(url: &str, node: &str) -> (Router, Cluster) {
    let router = Router::builder().shards(2).mailbox_capacity(1024).build().unwrap();
    let cluster = Cluster::join(router.clone(), config(url, node)).await.unwrap();
    (router, cluster)
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An actor on its own thread: answers requests with their payload, accepts
/// channels with `welcome` and echoes what arrives on them, and reports one-way
/// payloads and channel closes on the returned receiver.
fn echo(router: &Router) -> (ActorId, mpsc::Receiver<String>) {
    let id = ActorId::new();
    let (tx, mailbox) = router.mailbox();
    router.register(id, tx).unwrap();
    let (report, reports) = mpsc::channel();
    let router = router.clone();
    std::thread::spawn(move || {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Send { data } => {
                    let _ = report.send(format!("send {}", String::from_utf8_lossy(&data)));
                }
                ActorMessage::Request { data, reply } => {
                    let _ = reply.reply(data);
                }
                ActorMessage::ChannelOpen { reply, .. } => {
                    let _ = reply.accept(Some(b"welcome".to_vec()));
                }
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    let _ = router.channel_send(channel_id, id, data);
                }
                ActorMessage::ChannelClose { .. } => {
                    let _ = report.send("close".to_owned());
                }
                _ => {}
            }
        }
    });
    (id, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_request_and_channel() {
    let Some(server) = NatsServer::start_or_skip("two_nodes_send_request_and_channel") else { return };
    let url = server.url();
    let (router_a, a) = join(&url, "a").await;
    let (router_b, b) = join(&url, "b").await;
    let (echo_b, reports_b) = echo(&router_b);
    b.set_name(echo_b, "b.echo").unwrap();
    eventually("a learns b.echo", || a.resolve("b.echo") == Some(echo_b)).await;
    assert_eq!(a.members(), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(a.locate(echo_b).as_deref(), Some("b"));
    assert_eq!(b.locate(echo_b).as_deref(), Some("b"));

    // One-way, in order.
    for i in 0..10 {
        router_a.try_send(echo_b, format!("{i}").into_bytes()).unwrap();
    }
    for i in 0..10 {
        assert_eq!(reports_b.recv_timeout(Duration::from_secs(5)).unwrap(), format!("send {i}"));
    }
    router_a.tell(echo_b, b"told".to_vec());
    assert_eq!(reports_b.recv_timeout(Duration::from_secs(5)).unwrap(), "send told");
    router_a.send_async(echo_b, b"awaited".to_vec()).await.unwrap();
    assert_eq!(reports_b.recv_timeout(Duration::from_secs(5)).unwrap(), "send awaited");

    // Requests, async and blocking.
    let reply = router_a.request_async(echo_b, b"ping".to_vec(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply, b"ping");
    let r = router_a.clone();
    let reply =
        tokio::task::spawn_blocking(move || r.request(echo_b, b"blocking".to_vec(), Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(reply, b"blocking");

    // A channel from a local actor of `a` to `b`'s echo, both ways, then closed.
    let (local, local_mailbox) = {
        let id = ActorId::new();
        let (tx, mailbox) = router_a.mailbox();
        router_a.register(id, tx).unwrap();
        (id, mailbox)
    };
    let opened =
        router_a.open_channel_async(local, echo_b, b"hello".to_vec(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(opened.response.as_deref(), Some(&b"welcome"[..]));
    for i in 0..5 {
        router_a.channel_send(opened.id, local, format!("c{i}").into_bytes()).unwrap();
    }
    for i in 0..5 {
        match local_mailbox.recv_timeout(Duration::from_secs(5)).unwrap() {
            ActorMessage::ChannelMessage { channel_id, data, .. } => {
                assert_eq!(channel_id, opened.id);
                assert_eq!(data, format!("c{i}").into_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    router_a.close_channel(opened.id, local).unwrap();
    assert_eq!(reports_b.recv_timeout(Duration::from_secs(5)).unwrap(), "close");
    assert_eq!(
        router_a.channel_send(opened.id, local, b"late".to_vec()).unwrap_err().kind(),
        SendErrorKind::ChannelNotFound
    );

    // Unknown ids stay `ActorNotFound`, locally decided.
    let nobody = ActorId::new();
    assert_eq!(router_a.try_send(nobody, b"x".to_vec()).unwrap_err().kind(), SendErrorKind::ActorNotFound);
    let failed = router_a.request_async(nobody, b"x".to_vec(), Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(failed, RequestError::ActorNotFound);

    // An id that lives on `b` cannot be registered on `a`, nor unregistered there.
    let (tx, _mailbox) = router_a.mailbox();
    assert_eq!(router_a.register(echo_b, tx), Err(RegisterError::OnAnotherNode(echo_b)));
    assert!(router_a.unregister(echo_b).is_err());
    assert!(a.set_name(echo_b, "stolen").is_err());

    // Unregistering on `b` removes it from `a`'s directory.
    router_b.unregister(echo_b).unwrap();
    eventually("a forgets b.echo", || a.locate(echo_b).is_none()).await;
    eventually("route removed", || router_a.try_send(echo_b, b"x".to_vec()).is_err()).await;
    assert_eq!(a.stats().decode_errors, 0);
    assert!(a.stats().frames_sent > 0 && b.stats().frames_received > 0);
    a.leave().await;
    eventually("b sees a leave", || b.members() == vec!["b".to_owned()]).await;
    b.leave().await;
    let _ = ChannelError::Rejected;
}

/// 100k numbered messages from 4 senders on node A to 50 actors on node B,
/// while other actors register and unregister on both nodes: each arrives
/// exactly once, and each sender's messages reach each actor in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_and_fifo_across_nodes_with_churn() {
    const SENDERS: usize = 4;
    const ACTORS: usize = 50;
    const TOTAL: usize = 100_000;
    let Some(server) = NatsServer::start_or_skip("exactly_once_and_fifo_across_nodes_with_churn") else {
        return;
    };
    let url = server.url();
    let (router_a, a) = join(&url, "a").await;
    let (router_b, b) = join(&url, "b").await;

    // Each actor checks per-sender order and counts what it got.
    let mut actors = Vec::new();
    let mut done = Vec::new();
    for _ in 0..ACTORS {
        let id = ActorId::new();
        let (tx, mailbox) = router_b.mailbox();
        router_b.register(id, tx).unwrap();
        actors.push(id);
        let (finished, result) = mpsc::channel();
        done.push(result);
        std::thread::spawn(move || {
            let mut next = [0u64; SENDERS];
            let mut got = 0usize;
            let mut out_of_order = 0usize;
            while let Ok(msg) = mailbox.recv_timeout(Duration::from_secs(20)) {
                if let ActorMessage::Send { data } = msg {
                    let sender = usize::from(data[0]);
                    let n = u64::from_le_bytes(data[1..9].try_into().unwrap());
                    if n != next[sender] {
                        out_of_order += 1;
                    }
                    next[sender] = n + 1;
                    got += 1;
                    if got == TOTAL / ACTORS {
                        break;
                    }
                }
            }
            let _ = finished.send((got, out_of_order));
        });
    }
    eventually("a learns b's actors", || actors.iter().all(|id| a.locate(*id).as_deref() == Some("b"))).await;

    // Churn on both nodes while the traffic flows.
    let churn_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (ra, rb, stop) = (router_a.clone(), router_b.clone(), churn_stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for router in [&ra, &rb] {
                    let id = ActorId::new();
                    let (tx, _mailbox) = router.mailbox();
                    router.register(id, tx).unwrap();
                    router.unregister(id).unwrap();
                }
                rounds += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            rounds
        })
    };

    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (router, actors) = (router_a.clone(), actors.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..(TOTAL / SENDERS / ACTORS) as u64 {
                for id in &actors {
                    let mut data = vec![s as u8];
                    data.extend_from_slice(&n.to_le_bytes());
                    router.send_async(*id, data).await.unwrap();
                }
            }
        }));
    }
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(40), sender).await.expect("senders finish").unwrap();
    }
    let mut total = 0;
    for result in done {
        let (got, out_of_order) =
            tokio::task::spawn_blocking(move || result.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            out_of_order,
            0,
            "per-sender FIFO broken (got {got}); a: {:?} {:?}; b: {:?} {:?}",
            a.stats(),
            router_a.metrics().total(),
            b.stats(),
            router_b.metrics().total()
        );
        total += got;
    }
    churn_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    assert_eq!(total, TOTAL);
    // Nothing lost or refused on the way, and every frame acknowledged.
    assert_eq!(router_a.metrics().total().dead_letters, 0);
    assert_eq!(a.stats().remote_dead_letters, 0);
    assert_eq!(b.stats().inbound_dead_letters, 0);
    assert_eq!(router_b.metrics().total().dead_letters, 0);
    a.leave().await;
    b.leave().await;
}

/// Channels across nodes close from either side: the far actor closing, the far
/// actor unregistering, and an external client (a gateway session) of one node
/// talking to an actor of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_close_from_either_side_and_reach_external_clients() {
    let Some(server) = NatsServer::start_or_skip("channels_close_from_either_side") else { return };
    let url = server.url();
    let (router_a, a) = join(&url, "a").await;
    let (router_b, b) = join(&url, "b").await;
    let (echo_b, reports_b) = echo(&router_b);
    eventually("a learns b's echo", || a.locate(echo_b).is_some()).await;

    // An external client attached on `a` opens a channel to `b`'s echo.
    let (tx, client) = router_a.mailbox();
    let external = router_a.attach_external(tx).unwrap();
    let opened =
        router_a.open_channel_async(external, echo_b, Vec::new(), Duration::from_secs(5)).await.unwrap();
    router_a.channel_send(opened.id, external, b"from a client".to_vec()).unwrap();
    match client.recv_timeout(Duration::from_secs(5)).unwrap() {
        ActorMessage::ChannelMessage { data, .. } => assert_eq!(data, b"from a client"),
        other => panic!("unexpected {other:?}"),
    }
    // The client goes away: the far side sees the channel close.
    router_a.detach_external(external).unwrap();
    assert_eq!(reports_b.recv_timeout(Duration::from_secs(5)).unwrap(), "close");

    // An actor of `b` opens a channel to an actor of `a`, then `b`'s side closes it.
    let local_a = ActorId::new();
    let (tx, mailbox_a) = router_a.mailbox();
    router_a.register(local_a, tx).unwrap();
    let initiator_b = ActorId::new();
    let (tx, mailbox_b) = router_b.mailbox();
    router_b.register(initiator_b, tx).unwrap();
    eventually("b learns a's actor", || b.locate(local_a).is_some()).await;
    let acceptor = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok(msg) = mailbox_a.recv_timeout(Duration::from_secs(10)) {
            match msg {
                ActorMessage::ChannelOpen { reply, initial_msg, .. } => {
                    seen.push(format!("open {}", String::from_utf8_lossy(&initial_msg)));
                    reply.accept(None).unwrap();
                }
                ActorMessage::ChannelMessage { data, .. } => {
                    seen.push(String::from_utf8_lossy(&data).into_owned())
                }
                ActorMessage::ChannelClose { .. } => {
                    seen.push("close".to_owned());
                    if seen.iter().filter(|s| *s == "close").count() == 2 {
                        break;
                    }
                }
                _ => {}
            }
        }
        seen
    });
    let first = router_b
        .open_channel_async(initiator_b, local_a, b"one".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    router_b.channel_send(first.id, initiator_b, b"m1".to_vec()).unwrap();
    router_b.close_channel(first.id, initiator_b).unwrap();
    // A second channel, ended by its initiator leaving its node.
    let second = router_b
        .open_channel_async(initiator_b, local_a, b"two".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    router_b.channel_send(second.id, initiator_b, b"m2".to_vec()).unwrap();
    router_b.unregister(initiator_b).unwrap();
    let seen = tokio::task::spawn_blocking(move || acceptor.join().unwrap()).await.unwrap();
    assert_eq!(seen, vec!["open one", "m1", "close", "open two", "m2", "close"]);
    drop(mailbox_b);

    // A channel open to an actor that left `b` meanwhile is refused, typed.
    let (gone, _reports) = echo(&router_b);
    eventually("a learns the short-lived actor", || a.locate(gone).is_some()).await;
    router_b.unregister(gone).unwrap();
    eventually("a forgets it", || a.locate(gone).is_none()).await;
    let refused =
        router_a.open_channel_async(local_a, gone, Vec::new(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(refused.error(), ChannelError::ParticipantNotFound(_)), "{refused:?}");
    a.leave().await;
    b.leave().await;
}
