//! The management gateway end to end: real TCP over 127.0.0.1, ephemeral ports.
//! Every wait is bounded by a timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sharded_router::gateway::{
    Client, ClientConfig, ClientError, ErrorKind, Event, Events, Response, Server, ServerConfig, ServerFrame,
    SessionConfig,
};
use sharded_router::{ActorId, ActorMessage, ChannelId, Participant, Router};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use common::{spawn_actor, within, WAIT};

/// A router with demo actors behind a gateway on an ephemeral port.
struct Fixture {
    router: Router,
    addr: SocketAddr,
    /// Replies to requests with the payload.
    echo: ActorId,
    /// Keeps requests and channel opens unanswered (they time out).
    silent: ActorId,
    /// Drops every request unanswered.
    dropper: ActorId,
    /// Accepts channels ("welcome") unless the initial message is "reject"; echoes
    /// channel messages; closes the channel when it receives "close".
    acceptor: ActorId,
    /// Channel closes the acceptor received, with who sent them.
    acceptor_closes: mpsc::UnboundedReceiver<ChannelId>,
}

async fn fixture(config: ServerConfig) -> Fixture {
    let router = Router::builder().shards(2).build().unwrap();
    let echo = spawn_actor(&router, |_, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                let _ = reply.reply(data);
            }
        }
    });
    let silent = spawn_actor(&router, |_, mailbox| {
        let mut held = Vec::new();
        while let Ok(msg) = mailbox.recv() {
            held.push(msg);
        }
    });
    let dropper = spawn_actor(&router, |_, mailbox| while mailbox.recv().is_ok() {});
    let (closes_tx, acceptor_closes) = mpsc::unbounded_channel();
    let r = router.clone();
    let acceptor = spawn_actor(&router, move |me, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::ChannelOpen { initial_msg, reply, .. } => {
                    if initial_msg == b"reject" {
                        reply.reject();
                    } else {
                        let _ = reply.accept(Some(b"welcome".to_vec()));
                    }
                }
                ActorMessage::ChannelMessage { channel_id, data, .. } if data == b"close" => {
                    let _ = r.close_channel(channel_id, me);
                }
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    let _ = r.channel_send(channel_id, me, data);
                }
                ActorMessage::ChannelClose { channel_id, .. } => {
                    let _ = closes_tx.send(channel_id);
                }
                ActorMessage::Request { data, reply } => {
                    let _ = reply.reply(data);
                }
                _ => {}
            }
        }
    });
    let names = [(echo, "echo"), (silent, "silent"), (dropper, "dropper"), (acceptor, "acceptor")];
    let session = config
        .session
        .clone()
        .names(move |id| names.iter().find(|(known, _)| *known == id).map(|(_, name)| (*name).to_owned()));
    let config = config.bind("127.0.0.1:0".parse().unwrap()).session(session);
    let server = Server::bind(router.clone(), config).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    Fixture { router, addr, echo, silent, dropper, acceptor, acceptor_closes }
}

fn quick_opens() -> ServerConfig {
    ServerConfig::default().session(SessionConfig::default().open_timeout(Duration::from_millis(300)))
}

async fn client(addr: SocketAddr) -> (Client, Events) {
    within("connect", Client::connect(addr, ClientConfig::default())).await.unwrap()
}

async fn next_event(events: &mut Events) -> Event {
    within("an event", events.next()).await.expect("connection closed")
}

/// Polls `check` until it holds, for at most `WAIT`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client speaking raw frames, for bad input.
struct Raw {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = within("raw connect", TcpStream::connect(addr)).await.unwrap();
        Self { framed: Framed::new(stream, LengthDelimitedCodec::new()) }
    }

    async fn send(&mut self, json: &str) {
        within("raw send", self.framed.send(Bytes::copy_from_slice(json.as_bytes()))).await.unwrap();
    }

    /// The next frame; `None` at end of stream or a connection error.
    async fn recv(&mut self) -> Option<ServerFrame> {
        match within("raw recv", self.framed.next()).await {
            Some(Ok(bytes)) => Some(serde_json::from_slice(&bytes).expect("a server frame")),
            Some(Err(_)) | None => None,
        }
    }

    async fn recv_response(&mut self) -> (Option<u64>, Response) {
        match self.recv().await {
            Some(ServerFrame::Response { request_id, response }) => (request_id, response),
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

fn error_kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_request_and_list() {
    let f = fixture(ServerConfig::default()).await;
    let (c, _events) = client(f.addr).await;

    let mut actors = within("list", c.list_actors()).await.unwrap();
    actors.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<_> = actors.iter().map(|a| a.name.as_deref().unwrap_or("")).collect();
    assert_eq!(names, ["acceptor", "dropper", "echo", "silent"]);
    assert!(actors.iter().any(|a| a.id == f.echo));

    within("send", c.send(f.echo, b"one-way".to_vec())).await.unwrap();
    let ghost = ActorId::new();
    let err = within("send", c.send(ghost, vec![])).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ActorNotFound));

    let reply = within("request", c.request(f.echo, b"ping".to_vec(), Duration::from_secs(5))).await;
    assert_eq!(reply.unwrap(), b"ping");
    let binary = vec![0u8, 0xff, 0x80, 10];
    let reply = within("request", c.request(f.echo, binary.clone(), Duration::from_secs(5))).await;
    assert_eq!(reply.unwrap(), binary, "binary payloads round-trip");

    let started = Instant::now();
    let err = within("request", c.request(f.silent, vec![], Duration::from_millis(100))).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = within("request", c.request(f.dropper, vec![], Duration::from_secs(5))).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::NoReply));
    let err = within("request", c.request(ghost, vec![], Duration::from_secs(5))).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ActorNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_reject_messages_and_close_from_either_side() {
    let mut f = fixture(quick_opens()).await;
    let (c, mut events) = client(f.addr).await;

    let (ch, welcome) = within("open", c.open_channel(f.acceptor, b"hi".to_vec())).await.unwrap();
    assert_eq!(welcome.as_deref(), Some(&b"welcome"[..]));
    for text in ["one", "two", "three"] {
        within("channel send", c.send_on_channel(ch, text.as_bytes().to_vec())).await.unwrap();
    }
    for text in ["one", "two", "three"] {
        assert_eq!(
            next_event(&mut events).await,
            Event::ChannelMessage { channel_id: ch, message: text.as_bytes().to_vec() }
        );
    }
    // The client closes: the actor is told, and the channel is gone.
    within("close", c.close_channel(ch)).await.unwrap();
    assert_eq!(within("actor's close", f.acceptor_closes.recv()).await, Some(ch));
    let err = within("send", c.send_on_channel(ch, b"late".to_vec())).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ChannelNotFound));

    // The actor closes: the client gets an event.
    let (ch2, _) = within("open", c.open_channel(f.acceptor, vec![])).await.unwrap();
    within("send", c.send_on_channel(ch2, b"close".to_vec())).await.unwrap();
    assert_eq!(next_event(&mut events).await, Event::ChannelClosed { channel_id: ch2 });
    let err = within("close", c.close_channel(ch2)).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ChannelNotFound));

    // Rejection, time-out, missing actor.
    let err = within("open", c.open_channel(f.acceptor, b"reject".to_vec())).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::Rejected));
    let err = within("open", c.open_channel(f.silent, vec![])).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::Timeout));
    let err = within("open", c.open_channel(f.dropper, vec![])).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::Rejected));
    let err = within("open", c.open_channel(ActorId::new(), vec![])).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ActorNotFound));

    f.router.flush();
    eventually("channels gone", || f.router.metrics().channels.channels == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_use_another_clients_channel() {
    let mut f = fixture(ServerConfig::default()).await;
    let (owner, mut owner_events) = client(f.addr).await;
    let (intruder, _intruder_events) = client(f.addr).await;
    let (ch, _) = within("open", owner.open_channel(f.acceptor, vec![])).await.unwrap();

    let err = within("send", intruder.send_on_channel(ch, b"x".to_vec())).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::NotParticipant));
    let err = within("close", intruder.close_channel(ch)).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::NotParticipant));
    let unknown = ChannelId::random();
    let err = within("close", intruder.close_channel(unknown)).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::ChannelNotFound));

    // Untouched: the owner still talks on it, and the actor saw no close.
    within("send", owner.send_on_channel(ch, b"still mine".to_vec())).await.unwrap();
    assert_eq!(
        next_event(&mut owner_events).await,
        Event::ChannelMessage { channel_id: ch, message: b"still mine".to_vec() }
    );
    assert!(f.acceptor_closes.try_recv().is_err());
    assert_eq!(f.router.metrics().channels.channels, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_clients_channels() {
    let mut f = fixture(ServerConfig::default()).await;
    let (c, events) = client(f.addr).await;
    let mut opened = Vec::new();
    for _ in 0..3 {
        opened.push(within("open", c.open_channel(f.acceptor, vec![])).await.unwrap().0);
    }
    // A request still waiting when the client goes is abandoned too.
    let pending = {
        let c = c.clone();
        let silent = f.silent;
        tokio::spawn(async move { c.request(silent, vec![], Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(f.router.metrics().channels.channels, 3);
    drop((c, events));
    pending.abort();

    let mut closed = Vec::new();
    for _ in 0..3 {
        closed.push(within("actor's close", f.acceptor_closes.recv()).await.unwrap());
    }
    closed.sort();
    opened.sort();
    assert_eq!(closed, opened);
    f.router.flush();
    eventually("channels gone", || f.router.metrics().channels.channels == 0).await;
    // Only the four actors stay registered: the client's endpoint is detached.
    eventually("endpoint detached", || f.router.metrics().total().registered_actors == 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_does_not_hold_up_the_next() {
    let f = fixture(quick_opens()).await;
    let mut raw = Raw::connect(f.addr).await;
    let silent = f.silent;
    raw.send(&format!(
        r#"{{"request_id":1,"command":{{"RequestActorMessage":{{"id":"{silent}","data":"","timeout_ms":1500}}}}}}"#
    ))
    .await;
    raw.send(&format!(r#"{{"request_id":2,"command":{{"OpenChannel":{{"actor_id":"{silent}"}}}}}}"#)).await;
    raw.send(r#"{"request_id":3,"command":"ListActors"}"#).await;
    let echo = f.echo;
    raw.send(&format!(
        r#"{{"request_id":4,"command":{{"RequestActorMessage":{{"id":"{echo}","data":[104,105]}}}}}}"#
    ))
    .await;

    let started = Instant::now();
    let (id, response) = raw.recv_response().await;
    assert_eq!(id, Some(3));
    assert!(matches!(response, Response::ActorList { .. }));
    let (id, response) = raw.recv_response().await;
    assert_eq!(id, Some(4));
    assert_eq!(response, Response::RequestedMessage { id: echo, message: b"hi".to_vec() });
    assert!(started.elapsed() < Duration::from_millis(1000), "fast commands waited for slow ones");
    let mut late = [raw.recv_response().await, raw.recv_response().await];
    late.sort_by_key(|(id, _)| *id);
    assert_eq!(late[0].0, Some(1));
    assert_eq!(error_kind(&late[0].1), Some(ErrorKind::Timeout));
    assert_eq!(late[1].0, Some(2));
    assert_eq!(error_kind(&late[1].1), Some(ErrorKind::Timeout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_other_clients_are_unaffected() {
    let f = fixture(ServerConfig::default().max_frame_length(4096)).await;
    let (good, _good_events) = client(f.addr).await;
    let echo = f.echo;
    let keep_serving = {
        let good = good.clone();
        tokio::spawn(async move {
            let mut served = 0;
            let deadline = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < deadline {
                let reply = good.request(echo, b"ok".to_vec(), Duration::from_secs(5)).await.unwrap();
                assert_eq!(reply, b"ok");
                served += 1;
            }
            served
        })
    };

    let mut raw = Raw::connect(f.addr).await;
    let cases: Vec<(String, Option<u64>, ErrorKind)> = vec![
        ("{this is not json".into(), None, ErrorKind::MalformedFrame),
        ("[1, 2, 3]".into(), None, ErrorKind::MalformedFrame),
        (r#"{"command":"ListActors"}"#.into(), None, ErrorKind::MalformedFrame),
        (r#"{"request_id":5}"#.into(), Some(5), ErrorKind::MalformedFrame),
        (r#"{"request_id":6,"command":"Reboot"}"#.into(), Some(6), ErrorKind::UnknownCommand),
        (
            r#"{"request_id":7,"command":{"SendActorMessage":{"id":"not-a-uuid","data":"x"}}}"#.into(),
            Some(7),
            ErrorKind::BadId,
        ),
        (
            r#"{"request_id":8,"command":{"SendOnChannel":{"channel_id":"xyz","message":"x"}}}"#.into(),
            Some(8),
            ErrorKind::BadId,
        ),
        (
            format!(r#"{{"request_id":9,"command":{{"SendActorMessage":{{"id":"{echo}"}}}}}}"#),
            Some(9),
            ErrorKind::BadArguments,
        ),
        (
            format!(r#"{{"request_id":10,"command":{{"SendActorMessage":{{"id":"{echo}","data":[300]}}}}}}"#),
            Some(10),
            ErrorKind::BadArguments,
        ),
    ];
    for (json, request_id, kind) in &cases {
        raw.send(json).await;
        let (id, response) = raw.recv_response().await;
        assert_eq!((id, error_kind(&response)), (*request_id, Some(*kind)), "for {json}");
    }
    // After all that, the same connection still works.
    raw.send(r#"{"request_id":11,"command":"ListActors"}"#).await;
    assert_eq!(raw.recv_response().await.0, Some(11));

    // An oversize frame: an error, then the connection closes.
    raw.send(&format!(
        r#"{{"request_id":12,"command":{{"SendActorMessage":{{"id":"{echo}","data":"{}"}}}}}}"#,
        "x".repeat(5000)
    ))
    .await;
    match raw.recv().await {
        Some(ServerFrame::Response { request_id: None, response }) => {
            assert_eq!(error_kind(&response), Some(ErrorKind::FrameTooLarge));
            assert!(raw.recv().await.is_none(), "the connection closes after an oversize frame");
        }
        None => {} // closed before the error could be read: also a clean close
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }

    // A length prefix promising a huge frame is refused before any of it arrives.
    let mut stream = within("connect", TcpStream::connect(f.addr)).await.unwrap();
    within("write", stream.write_all(&u32::MAX.to_be_bytes())).await.unwrap();
    let mut raw2 = Raw { framed: Framed::new(stream, LengthDelimitedCodec::new()) };
    match raw2.recv().await {
        Some(ServerFrame::Response { response, .. }) => {
            assert_eq!(error_kind(&response), Some(ErrorKind::FrameTooLarge));
            assert!(raw2.recv().await.is_none());
        }
        None => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }

    // A connection that closes mid-frame.
    let mut stream = within("connect", TcpStream::connect(f.addr)).await.unwrap();
    within("write", stream.write_all(&[0, 0, 0, 100, b'{'])).await.unwrap();
    drop(stream);

    let served = within("the good client", keep_serving).await.unwrap();
    assert!(served > 0);
    assert_eq!(
        within("request", good.request(echo, b"after".to_vec(), Duration::from_secs(5))).await.unwrap(),
        b"after"
    );
    eventually("bad clients detached", || f.router.metrics().total().registered_actors == 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let config = ServerConfig::default().outbound_queue(4).write_timeout(Duration::from_millis(500));
    let mut f = fixture(config).await;
    let (good, _good_events) = client(f.addr).await;

    // The reader opens a channel, then floods the echoing actor with big messages
    // and never reads what comes back.
    let mut raw = Raw::connect(f.addr).await;
    let acceptor = f.acceptor;
    raw.send(&format!(r#"{{"request_id":1,"command":{{"OpenChannel":{{"actor_id":"{acceptor}"}}}}}}"#)).await;
    let channel_id = match raw.recv_response().await {
        (_, Response::ChannelOpened { channel_id, .. }) => channel_id,
        other => panic!("expected an open channel, got {other:?}"),
    };
    let payload = "y".repeat(200_000);
    let frame = format!(
        r#"{{"request_id":2,"command":{{"SendOnChannel":{{"channel_id":"{channel_id}","message":"{payload}"}}}}}}"#
    );
    let started = Instant::now();
    let mut refused = false;
    for _ in 0..400 {
        let sent =
            tokio::time::timeout(Duration::from_secs(2), raw.framed.send(Bytes::from(frame.clone()))).await;
        if !matches!(sent, Ok(Ok(()))) {
            refused = true;
            break;
        }
        assert!(started.elapsed() < WAIT, "the server never pushed back");
    }
    assert!(refused, "the server kept accepting from a client that does not read");

    // The server dropped that client (the actor saw its channel close) and serves
    // everyone else.
    assert_eq!(within("actor's close", f.acceptor_closes.recv()).await, Some(channel_id));
    assert_eq!(
        within("request", good.request(f.echo, b"fine".to_vec(), Duration::from_secs(5))).await.unwrap(),
        b"fine"
    );
    f.router.flush();
    eventually("channels gone", || f.router.metrics().channels.channels == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_are_all_answered() {
    let mut f = fixture(ServerConfig::default()).await;
    let (echo, acceptor) = (f.echo, f.acceptor);
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let addr = f.addr;
            tokio::spawn(async move {
                let (c, mut events) = Client::connect(addr, ClientConfig::default()).await?;
                let requests: Vec<_> = (0..10)
                    .map(|i| {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let data = format!("{n}-{i}").into_bytes();
                            let reply = c.request(echo, data.clone(), Duration::from_secs(10)).await?;
                            assert_eq!(reply, data);
                            Ok::<_, ClientError>(())
                        })
                    })
                    .collect();
                let (ch, _) = c.open_channel(acceptor, vec![]).await?;
                for i in 0..5 {
                    c.send_on_channel(ch, format!("{n}:{i}").into_bytes()).await?;
                }
                for i in 0..5 {
                    match events.next_timeout(WAIT).await {
                        Some(Event::ChannelMessage { channel_id, message }) => {
                            assert_eq!((channel_id, message), (ch, format!("{n}:{i}").into_bytes()));
                        }
                        other => panic!("client {n}: expected an echo, got {other:?}"),
                    }
                }
                c.close_channel(ch).await?;
                for r in requests {
                    r.await.expect("request task")?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ch)
            })
        })
        .collect();
    let mut channels = Vec::new();
    for t in tasks {
        channels.push(within("a client", t).await.unwrap().unwrap());
    }
    for _ in 0..50 {
        within("actor's close", f.acceptor_closes.recv()).await.unwrap();
    }
    assert_eq!(channels.len(), 50);
    f.router.flush();
    eventually("channels gone", || f.router.metrics().channels.channels == 0).await;
    assert!(f.router.metrics().channels.opened >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_opens_from_actors_to_clients_are_rejected() {
    let f = fixture(ServerConfig::default()).await;
    let (c, _events) = client(f.addr).await;
    // The client opens a channel; the actor side learns the client's identity from
    // the open and tries to open one back.
    let (tx, mailbox) = f.router.mailbox();
    let actor = ActorId::new();
    f.router.register(actor, tx).unwrap();
    let opening = {
        let c = c.clone();
        tokio::spawn(async move { c.open_channel(actor, vec![]).await })
    };
    // The mailbox comes back with the message: dropping the last one would
    // unregister the actor.
    let (msg, _mailbox) =
        tokio::task::spawn_blocking(move || (mailbox.recv_timeout(WAIT), mailbox)).await.unwrap();
    let msg = msg.unwrap();
    let ActorMessage::ChannelOpen { initiator, reply, .. } = msg else {
        panic!("expected an open, got {msg:?}")
    };
    assert!(matches!(initiator, Participant::External(_)));
    reply.accept(None).unwrap();
    within("open", opening).await.unwrap().unwrap();
    let router = f.router.clone();
    let back = tokio::task::spawn_blocking(move || router.open_channel(actor, initiator, vec![], WAIT));
    assert_eq!(
        within("open back", back).await.unwrap().map_err(sharded_router::ChannelError::from),
        Err(sharded_router::ChannelError::Rejected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_disconnect_abandons_a_held_request() {
    let f = fixture(ServerConfig::default()).await;
    // An actor that keeps the request without answering, and lets the test see it.
    let (tx, mailbox) = f.router.mailbox();
    let holder = ActorId::new();
    f.router.register(holder, tx).unwrap();

    let mut raw = Raw::connect(f.addr).await;
    raw.send(&format!(
        r#"{{"request_id":1,"command":{{"RequestActorMessage":{{"id":"{holder}","data":"held","timeout_ms":60000}}}}}}"#
    ))
    .await;
    let (msg, mailbox) =
        tokio::task::spawn_blocking(move || (mailbox.recv_timeout(WAIT), mailbox)).await.unwrap();
    let ActorMessage::Request { data, reply } = msg.expect("the request reaches the actor") else {
        panic!("expected a request")
    };
    assert_eq!(data, b"held");
    assert!(!reply.is_resolved(), "nobody has answered yet");
    assert_eq!(f.router.metrics().total().registered_actors, 6, "four actors, the holder, the client");

    // The client vanishes: no close frame, the socket is reset.
    let stream = raw.framed.into_inner();
    stream.set_zero_linger().unwrap();
    drop(stream);

    eventually("the held request to be abandoned", || reply.is_resolved()).await;
    assert_eq!(reply.reply(b"too late".to_vec()), Err(b"too late".to_vec()));
    eventually("the client's endpoint detached", || f.router.metrics().total().registered_actors == 5).await;
    f.router.flush();
    eventually("the request's deadline freed", || {
        f.router.flush();
        f.router.metrics().shards.iter().map(|s| s.pending_timers).sum::<usize>() == 0
    })
    .await;
    drop(mailbox);
}
