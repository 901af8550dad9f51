//! The cluster when things fail, over a real nats-server: a node killed in the
//! middle of traffic, and the server itself restarted in the middle of traffic.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::spawn_echo as echo;
use sharded_router::cluster::{Cluster, ClusterConfig};
use sharded_router::{ActorId, ActorMessage, Router};
use sharded_router_workloads::nats_server::NatsServer;

fn config(url: &str, node: &str, timeout: Duration) -> ClusterConfig {
    ClusterConfig::new("test", node, url).heartbeat(Duration::from_millis(100)).node_timeout(timeout)
}

async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node `c` runs on a thread with its own runtime: an actor that keeps every
/// request unanswered and accepts channels. Sending on the returned channel
/// kills the node: its runtime is dropped without leaving, which cuts its
/// NATS connection.
fn start_doomed_node(url: String) -> (ActorId, mpsc::Sender<()>) {
    let (ready, started) = mpsc::channel();
    let (kill, killed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let router = Router::builder().shards(1).build().unwrap();
        let _cluster = runtime
            .block_on(Cluster::join(router.clone(), config(&url, "c", Duration::from_millis(1000))))
            .unwrap();
        let id = ActorId::new();
        let (tx, mailbox) = router.mailbox();
        router.register(id, tx).unwrap();
        let holder = std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Ok(msg) = mailbox.recv() {
                match msg {
                    ActorMessage::Request { reply, .. } => held.push(reply),
                    ActorMessage::ChannelOpen { reply, .. } => {
                        let _ = reply.accept(None);
                    }
                    _ => {}
                }
            }
            held.len()
        });
        ready.send(id).unwrap();
        let _ = killed.recv();
        drop(runtime);
        // The node's router stays up (its actor holds its requests) until the
        // survivors have judged it; then it goes too.
        std::thread::sleep(Duration::from_secs(3));
        router.shutdown();
        let _ = holder.join();
    });
    (started.recv_timeout(Duration::from_secs(15)).unwrap(), kill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_what_waits_on_it_and_leaves_the_directory() {
    let Some(server) = NatsServer::start_or_skip("a_killed_node_fails_what_waits_on_it") else { return };
    let url = server.url();
    let timeout = Duration::from_millis(1000);
    let router_a = Router::builder().shards(2).build().unwrap();
    let a = Cluster::join(router_a.clone(), config(&url, "a", timeout)).await.unwrap();
    let router_b = Router::builder().shards(2).build().unwrap();
    let b = Cluster::join(router_b.clone(), config(&url, "b", timeout)).await.unwrap();
    let echo_b = echo(&router_b);
    let (doomed, kill) = start_doomed_node(url.clone());
    eventually("a and b see c's actor", Duration::from_secs(10), || {
        a.locate(doomed).as_deref() == Some("c") && b.locate(doomed).as_deref() == Some("c")
    })
    .await;
    eventually("a sees b's actor", Duration::from_secs(10), || a.locate(echo_b).is_some()).await;
    assert_eq!(a.members(), vec!["a", "b", "c"]);

    // A channel from a local actor of `a` to the doomed actor.
    let local = ActorId::new();
    let (tx, local_mailbox) = router_a.mailbox();
    router_a.register(local, tx).unwrap();
    let opened =
        router_a.open_channel_async(local, doomed, Vec::new(), Duration::from_secs(5)).await.unwrap();

    // Requests the doomed actor will never answer, with a long timeout.
    let mut pending = Vec::new();
    for i in 0..20u8 {
        pending.push(tokio::spawn(router_a.request_async(doomed, vec![i], Duration::from_secs(30))));
    }
    // Traffic to it keeps flowing while it dies.
    for i in 0..200u32 {
        router_a.tell(doomed, i.to_le_bytes().to_vec());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed_at = Instant::now();
    kill.send(()).unwrap();

    for request in pending {
        let outcome = tokio::time::timeout(Duration::from_secs(10), request).await.expect("bounded").unwrap();
        assert!(outcome.is_err(), "a request to a dead node got an answer");
    }
    let waited = killed_at.elapsed();
    assert!(waited < Duration::from_secs(6), "requests to the dead node took {waited:?} to fail");

    // Its channel is closed on `a`'s side, its actor leaves the directory, and
    // sends to it are refused.
    let closed = tokio::task::spawn_blocking(move || loop {
        match local_mailbox.recv_timeout(Duration::from_secs(10)) {
            Ok(ActorMessage::ChannelClose { channel_id, .. }) => return Some(channel_id),
            Ok(_) => continue,
            Err(_) => return None,
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(opened.id));
    eventually("the directory forgets c", Duration::from_secs(5), || {
        a.locate(doomed).is_none() && b.locate(doomed).is_none()
    })
    .await;
    assert_eq!(a.members(), vec!["a", "b"]);
    assert_eq!(b.members(), vec!["a", "b"]);
    assert!(router_a.try_send(doomed, b"late".to_vec()).is_err());
    assert!(a.stats().nodes_failed >= 1);

    // The survivors keep working.
    let reply = router_a.request_async(echo_b, b"still here".to_vec(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply, b"still here");
    a.leave().await;
    b.leave().await;
}

/// Every number sent from `a` to `b` while the NATS server restarts is
/// delivered once, refused at the send, or a dead letter of one of the two
/// routers; the cluster heals afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_heals_and_accounts_for_every_message() {
    const ACTORS: usize = 10;
    const TOTAL: u32 = 20_000;
    let Some(mut server) = NatsServer::start_or_skip("a_nats_restart_heals") else { return };
    let url = server.url();
    let timeout = Duration::from_secs(4);
    let dead: Arc<Mutex<Vec<u32>>> = Arc::default();
    let sink = |dead: Arc<Mutex<Vec<u32>>>| {
        move |letter: sharded_router::DeadLetter| {
            if let Ok(bytes) = <[u8; 4]>::try_from(letter.data.as_slice()) {
                dead.lock().unwrap().push(u32::from_le_bytes(bytes));
            }
        }
    };
    let router_a = Router::builder().shards(2).on_dead_letter(sink(dead.clone())).build().unwrap();
    let router_b = Router::builder().shards(2).on_dead_letter(sink(dead.clone())).build().unwrap();
    let a = Cluster::join(router_a.clone(), config(&url, "a", timeout)).await.unwrap();
    let b = Cluster::join(router_b.clone(), config(&url, "b", timeout)).await.unwrap();

    let delivered: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut actors = Vec::new();
    for _ in 0..ACTORS {
        let id = ActorId::new();
        let (tx, mailbox) = router_b.mailbox();
        router_b.register(id, tx).unwrap();
        actors.push(id);
        let delivered = delivered.clone();
        std::thread::spawn(move || {
            while let Ok(msg) = mailbox.recv() {
                match msg {
                    ActorMessage::Send { data } => {
                        delivered.lock().unwrap().push(u32::from_le_bytes(data[..4].try_into().unwrap()));
                    }
                    ActorMessage::Request { data, reply } => {
                        let _ = reply.reply(data);
                    }
                    _ => {}
                }
            }
        });
    }
    eventually("a sees b's actors", Duration::from_secs(10), || {
        actors.iter().all(|id| a.locate(*id).is_some())
    })
    .await;

    // The sender spreads its numbers over about two seconds; the server
    // restarts in the middle.
    let sender = {
        let (router, actors) = (router_a.clone(), actors.clone());
        std::thread::spawn(move || {
            let mut refused = Vec::new();
            for n in 0..TOTAL {
                let to = actors[n as usize % ACTORS];
                if router.try_send(to, n.to_le_bytes().to_vec()).is_err() {
                    refused.push(n);
                }
                if n % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            refused
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    tokio::task::block_in_place(|| server.restart().unwrap());
    let refused = tokio::task::spawn_blocking(move || sender.join().unwrap()).await.unwrap();

    // Healed: requests cross again, and both nodes see each other.
    eventually("the cluster heals", Duration::from_secs(15), || {
        a.members() == vec!["a", "b"] && b.members() == vec!["a", "b"]
    })
    .await;
    let mut healed = false;
    for _ in 0..100 {
        if router_a.request_async(actors[0], b"ok".to_vec(), Duration::from_millis(500)).await.is_ok() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "no request crossed after the restart");
    assert!(a.stats().reconnects >= 1 && b.stats().reconnects >= 1);

    // Every number is accounted for.
    let account = || {
        let delivered = delivered.lock().unwrap().clone();
        let dead: HashSet<u32> = dead.lock().unwrap().iter().copied().collect();
        let refused: HashSet<u32> = refused.iter().copied().collect();
        (delivered, dead, refused)
    };
    eventually("every message accounted for", Duration::from_secs(15), || {
        let (delivered, dead, refused) = account();
        let delivered: HashSet<u32> = delivered.into_iter().collect();
        (0..TOTAL).all(|n| delivered.contains(&n) || dead.contains(&n) || refused.contains(&n))
    })
    .await;
    let (delivered, dead, refused) = account();
    let unique: HashSet<u32> = delivered.iter().copied().collect();
    assert_eq!(unique.len(), delivered.len(), "a message was delivered twice");
    assert!(unique.iter().all(|n| !refused.contains(n)), "a refused message was delivered");
    assert!(unique.iter().all(|n| !dead.contains(n)), "a delivered message was also dead-lettered");
    eprintln!(
        "restart: {} delivered, {} refused, {} dead letters of {TOTAL}; a: {:?}",
        unique.len(),
        refused.len(),
        dead.len(),
        a.stats()
    );
    a.leave().await;
    b.leave().await;
}
