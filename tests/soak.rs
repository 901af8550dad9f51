//! Soak: many clients against one gateway, for a while, with exact accounting.
//!
//! 200 clients (`SOAK_CLIENTS`) connect over loopback, authenticate (with either of
//! two rotated tokens) and pipeline batches of sends, requests, channel opens,
//! channel messages, closes, lists and bad frames; sessions end cleanly, abruptly
//! (the socket dropped with commands in flight) or with an oversize frame, and
//! every client reconnects at once. A warm-up of `SOAK_SECS / 3` (at least 5 s)
//! comes first, then the soak proper for `SOAK_SECS` (default 15 s):
//!
//! ```sh
//! SOAK_SECS=60 cargo test --release --features server --test soak -- --nocapture
//! ```
//!
//! Checked: every command got exactly one answer, of the expected kind; every
//! channel event came after its channel's `ChannelOpened` and in order; what the
//! clients were told was delivered is what the actors received and what the
//! router counted; no channel and no client endpoint is left once the clients
//! are gone; and the process's resident memory after the soak is within 10 % of
//! what it was after the warm-up (both measured with every client gone, after the
//! allocator has returned its free memory: see `rss_kib`).

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sharded_router::gateway::protocol::decode_server_frame;
use sharded_router::gateway::{ErrorKind, Event, Response, Server, ServerConfig, ServerFrame, TokenSet};
use sharded_router::{ActorId, ActorMessage, ChannelId, Router};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use common::spawn_actor;

const TOKENS: [&str; 2] = ["soak-token-old", "soak-token-new"];
/// The longest a batch may take to be fully answered before the soak fails.
const BATCH_WAIT: Duration = Duration::from_secs(30);
const MAX_FRAME: usize = 16 * 1024;
/// Channels one client keeps open at most.
const CHANNELS_PER_CLIENT: usize = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident set size of this process, in KiB, after the allocator has handed its
/// free memory back to the system where it can (glibc's `malloc_trim`): what is
/// measured is then the memory still in use, not how much free memory the
/// allocator happened to keep from the busiest moment of the phase before.
fn rss_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free heap memory to the system; it is
    // safe to call at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// What the actors saw.
#[derive(Default)]
struct ActorCounts {
    /// One-way messages the counter actor received.
    counted: AtomicU64,
    /// Opens the scratch actor accepted successfully.
    scratch_accepted: AtomicU64,
}

/// What the clients were told.
#[derive(Default)]
struct Tally {
    commands: AtomicU64,
    requests: AtomicU64,
    sends: AtomicU64,
    opened: AtomicU64,
    channel_messages: AtomicU64,
    echoes: AtomicU64,
    closes: AtomicU64,
    bad_frames: AtomicU64,
    sessions: AtomicU64,
    abrupt: AtomicU64,
    oversize: AtomicU64,
}

struct Actors {
    counter: ActorId,
    echo: ActorId,
    scratch: ActorId,
}

fn actors(router: &Router, counts: &Arc<ActorCounts>) -> Actors {
    let c = Arc::clone(counts);
    let counter = spawn_actor(router, move |_, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Send { .. } => {
                    c.counted.fetch_add(1, Relaxed);
                }
                ActorMessage::Request { data, reply } => drop(reply.reply(data)),
                _ => {}
            }
        }
    });
    // Answers requests; accepts channels and says "hello" on each at once;
    // echoes channel messages.
    let r = router.clone();
    let echo = spawn_actor(router, move |me, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Request { data, reply } => drop(reply.reply(data)),
                ActorMessage::ChannelOpen { channel_id, reply, .. } => {
                    let _ = reply.accept(None).map(|()| r.channel_send(channel_id, me, b"hello".to_vec()));
                }
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    drop(r.channel_send(channel_id, me, data));
                }
                _ => {}
            }
        }
    });
    // For sessions that end abruptly: answers requests after a short pause,
    // accepts channels (counting the accepts that took), says nothing.
    let c = Arc::clone(counts);
    let scratch = spawn_actor(router, move |_, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Request { data, reply } => {
                    thread::sleep(Duration::from_micros(200));
                    drop(reply.reply(data));
                }
                ActorMessage::ChannelOpen { reply, .. } => {
                    let accepted = reply.accept(None).is_ok();
                    c.scratch_accepted.fetch_add(u64::from(accepted), Relaxed);
                }
                _ => {}
            }
        }
    });
    Actors { counter, echo, scratch }
}

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The answer a command must get.
#[derive(Debug)]
enum Expect {
    Sent,
    Requested(Vec<u8>),
    Opened,
    MessageSent(ChannelId),
    Closed(ChannelId),
    List,
    Error(ErrorKind),
}

struct Conn {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    next_id: u64,
}

impl Conn {
    async fn connect(addr: SocketAddr, token: &str) -> Conn {
        let stream = tokio::time::timeout(BATCH_WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut conn = Conn { framed: Framed::new(stream, LengthDelimitedCodec::new()), next_id: 1 };
        conn.send(format!(r#"{{"request_id":0,"command":{{"Authenticate":{{"token":"{token}"}}}}}}"#)).await;
        match conn.recv().await {
            Some(ServerFrame::Response { request_id: Some(0), response: Response::Authenticated }) => conn,
            other => panic!("authentication failed: {other:?}"),
        }
    }

    async fn send(&mut self, json: String) {
        let sent = tokio::time::timeout(BATCH_WAIT, self.framed.send(Bytes::from(json))).await;
        sent.expect("send in time").expect("send");
    }

    /// The next frame, or `None` at end of stream.
    async fn recv(&mut self) -> Option<ServerFrame> {
        match tokio::time::timeout(BATCH_WAIT, self.framed.next()).await.expect("a frame in time") {
            Some(Ok(bytes)) => Some(decode_server_frame(&bytes).expect("a server frame")),
            Some(Err(e)) => panic!("connection broke: {e}"),
            None => None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// One client's session state: the channels it was told of, and what it still
/// expects.
#[derive(Default)]
struct Book {
    open: HashSet<ChannelId>,
    /// Echoes still to come, per channel, in order.
    echoes: HashMap<ChannelId, VecDeque<Vec<u8>>>,
}

/// Runs one batch: pipelines `size` commands, then reads until each is answered
/// exactly once and every echo has arrived.
async fn batch(conn: &mut Conn, book: &mut Book, rng: &mut Rng, actors: &Actors, tally: &Tally, size: u64) {
    let mut expect: HashMap<u64, Expect> = HashMap::new();
    let mut anonymous = 0usize; // answers with no request id (malformed frames)
    let mut touched: HashSet<ChannelId> = HashSet::new();
    let mut opening = 0;
    for _ in 0..size {
        let id = conn.id();
        let (json, expected) = match rng.below(20) {
            0..=5 => {
                let counter = actors.counter;
                (
                    format!(
                        r#"{{"request_id":{id},"command":{{"SendActorMessage":{{"id":"{counter}","data":"n{id}"}}}}}}"#
                    ),
                    Expect::Sent,
                )
            }
            6..=10 => {
                let echo = actors.echo;
                let data = format!("q{id}");
                (
                    format!(
                        r#"{{"request_id":{id},"command":{{"RequestActorMessage":{{"id":"{echo}","data":"{data}"}}}}}}"#
                    ),
                    Expect::Requested(data.into_bytes()),
                )
            }
            11..=12 if book.open.len() + opening < CHANNELS_PER_CLIENT => {
                opening += 1;
                let echo = actors.echo;
                (
                    format!(r#"{{"request_id":{id},"command":{{"OpenChannel":{{"actor_id":"{echo}"}}}}}}"#),
                    Expect::Opened,
                )
            }
            13..=15 => match book.open.iter().find(|c| !touched.contains(*c)).copied() {
                Some(channel) => {
                    touched.insert(channel);
                    let message = format!("m{id}");
                    book.echoes.entry(channel).or_default().push_back(message.clone().into_bytes());
                    (
                        format!(
                            r#"{{"request_id":{id},"command":{{"SendOnChannel":{{"channel_id":"{channel}","message":"{message}"}}}}}}"#
                        ),
                        Expect::MessageSent(channel),
                    )
                }
                None => (format!(r#"{{"request_id":{id},"command":"ListActors"}}"#), Expect::List),
            },
            16 => match book.open.iter().find(|c| !touched.contains(*c)).copied() {
                Some(channel) => {
                    touched.insert(channel);
                    (
                        format!(
                            r#"{{"request_id":{id},"command":{{"CloseChannel":{{"channel_id":"{channel}"}}}}}}"#
                        ),
                        Expect::Closed(channel),
                    )
                }
                None => (format!(r#"{{"request_id":{id},"command":"ListActors"}}"#), Expect::List),
            },
            17 => {
                tally.bad_frames.fetch_add(1, Relaxed);
                match rng.below(3) {
                    0 => {
                        anonymous += 1;
                        tally.commands.fetch_add(1, Relaxed);
                        conn.send(format!("{{not json {id}")).await;
                        continue;
                    }
                    1 => (
                        format!(r#"{{"request_id":{id},"command":"Reboot"}}"#),
                        Expect::Error(ErrorKind::UnknownCommand),
                    ),
                    _ => (
                        format!(
                            r#"{{"request_id":{id},"command":{{"SendActorMessage":{{"id":"not-a-uuid","data":""}}}}}}"#
                        ),
                        Expect::Error(ErrorKind::BadId),
                    ),
                }
            }
            _ => (format!(r#"{{"request_id":{id},"command":"ListActors"}}"#), Expect::List),
        };
        tally.commands.fetch_add(1, Relaxed);
        expect.insert(id, expected);
        conn.send(json).await;
    }

    let waiting_echoes = |book: &Book| book.echoes.values().any(|q| !q.is_empty());
    while !expect.is_empty() || anonymous > 0 || waiting_echoes(book) {
        match conn.recv().await.expect("the server closed a well-behaved connection") {
            ServerFrame::Response { request_id: None, response } => {
                assert!(
                    matches!(response, Response::Error { kind: ErrorKind::MalformedFrame, .. }),
                    "{response:?}"
                );
                assert!(anonymous > 0, "an answer without a request id that nobody expects: {response:?}");
                anonymous -= 1;
            }
            ServerFrame::Response { request_id: Some(id), response } => {
                let Some(expected) = expect.remove(&id) else {
                    panic!("an answer to {id}, which has none coming (a duplicate?): {response:?}")
                };
                match (expected, response) {
                    (Expect::Sent, Response::SentMessage { .. }) => {
                        tally.sends.fetch_add(1, Relaxed);
                    }
                    (Expect::Requested(data), Response::RequestedMessage { message, .. }) => {
                        assert_eq!(message, data);
                        tally.requests.fetch_add(1, Relaxed);
                    }
                    (Expect::Opened, Response::ChannelOpened { channel_id, .. }) => {
                        assert!(book.open.insert(channel_id), "a channel id given twice");
                        book.echoes.entry(channel_id).or_default().push_front(b"hello".to_vec());
                        tally.opened.fetch_add(1, Relaxed);
                    }
                    (Expect::MessageSent(channel), Response::MessageSent { channel_id }) => {
                        assert_eq!(channel, channel_id);
                        tally.channel_messages.fetch_add(1, Relaxed);
                    }
                    (Expect::Closed(channel), Response::ChannelClosed { channel_id }) => {
                        assert_eq!(channel, channel_id);
                        book.open.remove(&channel);
                        assert!(book.echoes.remove(&channel).map_or(true, |q| q.is_empty()));
                        tally.closes.fetch_add(1, Relaxed);
                    }
                    (Expect::List, Response::ActorList { actors }) => assert_eq!(actors.len(), 3),
                    (Expect::Error(kind), Response::Error { kind: got, .. }) => assert_eq!(kind, got),
                    (expected, response) => panic!("request {id}: expected {expected:?}, got {response:?}"),
                }
            }
            ServerFrame::Event { event: Event::ChannelMessage { channel_id, message } } => {
                assert!(book.open.contains(&channel_id), "an event of {channel_id} before its ChannelOpened");
                let queue = book.echoes.get_mut(&channel_id).expect("a channel with echoes due");
                assert_eq!(
                    queue.pop_front().as_deref(),
                    Some(&message[..]),
                    "channel {channel_id} out of order"
                );
                tally.echoes.fetch_add(1, Relaxed);
            }
            ServerFrame::Event { event } => panic!("unexpected event {event:?}"),
        }
    }
}

/// One client: sessions back to back until `until`.
async fn client(index: u64, addr: SocketAddr, actors: Arc<Actors>, tally: Arc<Tally>, until: Instant) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index + 1).wrapping_mul(0x1000_0000_01b3));
    while Instant::now() < until {
        let token = TOKENS[(rng.below(2)) as usize];
        let mut conn = Conn::connect(addr, token).await;
        tally.sessions.fetch_add(1, Relaxed);
        let mut book = Book::default();
        let batches = 1 + rng.below(12);
        for _ in 0..batches {
            let size = 1 + rng.below(16);
            batch(&mut conn, &mut book, &mut rng, &actors, &tally, size).await;
            if Instant::now() >= until {
                break;
            }
        }
        match rng.below(10) {
            // Abrupt: commands in flight, then the socket is dropped unread.
            0 | 1 => {
                let scratch = actors.scratch;
                for _ in 0..1 + rng.below(6) {
                    let id = conn.id();
                    let json = if rng.below(2) == 0 {
                        format!(
                            r#"{{"request_id":{id},"command":{{"RequestActorMessage":{{"id":"{scratch}","data":"x"}}}}}}"#
                        )
                    } else {
                        format!(
                            r#"{{"request_id":{id},"command":{{"OpenChannel":{{"actor_id":"{scratch}"}}}}}}"#
                        )
                    };
                    conn.send(json).await;
                }
                tally.abrupt.fetch_add(1, Relaxed);
            }
            // A frame announced longer than the limit: FrameTooLarge, then the
            // server closes. (Only the length goes out: bytes the server never
            // reads would turn its close into a reset.)
            2 => {
                let announced = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
                conn.framed.get_mut().write_all(&announced).await.expect("write a length");
                match conn.recv().await {
                    Some(ServerFrame::Response {
                        request_id: None,
                        response: Response::Error { kind: ErrorKind::FrameTooLarge, .. },
                    }) => {}
                    other => panic!("expected FrameTooLarge, got {other:?}"),
                }
                assert!(conn.recv().await.is_none(), "the connection should close after an oversize frame");
                tally.oversize.fetch_add(1, Relaxed);
            }
            // Clean: the client leaves with its channels open or not.
            _ => {}
        }
    }
}

/// Runs `clients` clients until `until`; returns when every one has finished.
async fn phase(clients: u64, addr: SocketAddr, actors: &Arc<Actors>, tally: &Arc<Tally>, until: Instant) {
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(i, addr, Arc::clone(actors), Arc::clone(tally), until)))
        .collect();
    for task in tasks {
        task.await.expect("a soak client failed");
    }
}

/// Waits until the router holds no channel and no client endpoint.
async fn quiesce(router: &Router) {
    let start = Instant::now();
    loop {
        router.flush();
        let metrics = router.metrics();
        if metrics.channels.channels == 0 && metrics.total().registered_actors == 3 {
            return;
        }
        assert!(
            start.elapsed() < BATCH_WAIT,
            "left behind: {} channels, {} registered",
            metrics.channels.channels,
            metrics.total().registered_actors
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn soak() {
    let secs = env_or("SOAK_SECS", 15).max(1);
    let clients = env_or("SOAK_CLIENTS", 200).max(1);
    let warm_up = Duration::from_secs((secs / 3).max(5));
    let soak = Duration::from_secs(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bound = warm_up + soak + Duration::from_secs(120);
    let run = async {
        let router = Router::builder().shards(2).build().unwrap();
        let counts = Arc::new(ActorCounts::default());
        let actors = Arc::new(actors(&router, &counts));
        let config = ServerConfig::default()
            .bind("127.0.0.1:0".parse().unwrap())
            .auth(TokenSet::new(TOKENS).unwrap())
            .max_frame_length(MAX_FRAME)
            .max_connections(4 * clients as usize)
            .max_connections_per_peer(4 * clients as usize);
        let server = Server::bind(router.clone(), config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let server = tokio::spawn(server.run());

        let warm_tally = Arc::new(Tally::default());
        phase(clients, addr, &actors, &warm_tally, Instant::now() + warm_up).await;
        quiesce(&router).await;
        let rss_warm = rss_kib();

        let tally = Arc::new(Tally::default());
        let started = Instant::now();
        phase(clients, addr, &actors, &tally, started + soak).await;
        let elapsed = started.elapsed();
        quiesce(&router).await;
        let rss_end = rss_kib();

        // What the clients were told adds up with what the actors and the router saw.
        let total = |f: fn(&Tally) -> &AtomicU64| f(&warm_tally).load(Relaxed) + f(&tally).load(Relaxed);
        // The counter actor may still be working through its mailbox.
        let start = Instant::now();
        while counts.counted.load(Relaxed) < total(|t| &t.sends) && start.elapsed() < BATCH_WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counts.counted.load(Relaxed), total(|t| &t.sends), "one-way messages delivered");
        let metrics = router.metrics();
        assert_eq!(
            metrics.channels.opened,
            total(|t| &t.opened) + counts.scratch_accepted.load(Relaxed),
            "channels opened"
        );
        assert_eq!(total(|t| &t.echoes), total(|t| &t.opened) + total(|t| &t.channel_messages), "echoes");
        assert_eq!(metrics.channels.channels, 0, "channels left in the table");
        assert_eq!(metrics.total().dead_letters, 0, "dead letters");

        let commands = tally.commands.load(Relaxed);
        let per_sec = |n: u64| n as f64 / elapsed.as_secs_f64();
        eprintln!(
            "soak: {clients} clients, {:.1} s: {commands} commands ({:.0}/s), {} requests ({:.0}/s), {} sends, \
             {} opens, {} channel messages, {} closes, {} bad frames; {} sessions ({} abrupt, {} oversize)",
            elapsed.as_secs_f64(),
            per_sec(commands),
            tally.requests.load(Relaxed),
            per_sec(tally.requests.load(Relaxed)),
            tally.sends.load(Relaxed),
            tally.opened.load(Relaxed),
            tally.channel_messages.load(Relaxed),
            tally.closes.load(Relaxed),
            tally.bad_frames.load(Relaxed),
            tally.sessions.load(Relaxed),
            tally.abrupt.load(Relaxed),
            tally.oversize.load(Relaxed),
        );
        eprintln!(
            "soak: RSS after warm-up {rss_warm} KiB, after the soak {rss_end} KiB ({:+.1} %)",
            (rss_end as f64 / rss_warm as f64 - 1.0) * 100.0
        );
        assert!(commands > 0 && tally.sessions.load(Relaxed) >= clients, "the soak did no work");
        assert!(
            rss_end * 10 <= rss_warm * 11,
            "RSS grew more than 10 %: {rss_warm} KiB after warm-up, {rss_end} KiB after the soak"
        );

        router.shutdown();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    };
    let outcome = runtime.block_on(async { tokio::time::timeout(bound, run).await });
    outcome.expect("the soak overran its time bound");
}
