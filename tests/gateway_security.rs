//! The gateway off loopback: tokens, TLS, the exposure check, per-client limits,
//! the order of `ChannelOpened` and its channel's events, and router shutdown.
//! Real TCP over 127.0.0.1 with ephemeral ports; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sharded_router::gateway::protocol::decode_server_frame;
use sharded_router::gateway::{
    Client, ClientConfig, ErrorKind, Event, RateLimit, Response, Server, ServerConfig, ServerFrame,
    SessionConfig, TlsClient, TlsServer, Token, TokenSet,
};
use sharded_router::{ActorId, ActorMessage, Router};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use common::{spawn_actor, within, WAIT};

struct Fixture {
    router: Router,
    addr: SocketAddr,
    /// Replies to requests with the payload; accepts every channel and at once
    /// sends "first" on it, then echoes what arrives.
    echo: ActorId,
    /// Holds requests and opens unanswered.
    silent: ActorId,
    server: JoinHandle<std::io::Result<()>>,
}

async fn fixture(config: ServerConfig) -> Fixture {
    let router = Router::builder().shards(2).build().unwrap();
    let r = router.clone();
    let echo = spawn_actor(&router, move |me, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Request { data, reply } => drop(reply.reply(data)),
                ActorMessage::ChannelOpen { channel_id, reply, .. } => {
                    // Sends the moment it accepts.
                    let _ = reply.accept(None).map(|()| r.channel_send(channel_id, me, b"first".to_vec()));
                }
                ActorMessage::ChannelMessage { channel_id, data, .. } => {
                    drop(r.channel_send(channel_id, me, data))
                }
                _ => {}
            }
        }
    });
    let silent = spawn_actor(&router, |_, mailbox| {
        let mut held = Vec::new();
        while let Ok(msg) = mailbox.recv() {
            held.push(msg);
        }
    });
    let server = Server::bind(router.clone(), config.bind("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let addr = server.local_addr().unwrap();
    let server = tokio::spawn(server.run());
    Fixture { router, addr, echo, silent, server }
}

/// A client speaking raw frames.
struct Raw {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = within("raw connect", TcpStream::connect(addr)).await.unwrap();
        Self { framed: Framed::new(stream, LengthDelimitedCodec::new()) }
    }

    /// Connects from a chosen local address (another loopback address is
    /// another peer).
    async fn connect_from(local: &str, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let stream = within("raw connect", socket.connect(addr)).await.unwrap();
        Self { framed: Framed::new(stream, LengthDelimitedCodec::new()) }
    }

    async fn send(&mut self, json: &str) {
        within("raw send", self.framed.send(Bytes::copy_from_slice(json.as_bytes()))).await.unwrap();
    }

    /// The next frame; `None` at end of stream or on a connection error.
    async fn recv(&mut self) -> Option<ServerFrame> {
        match within("a frame", self.framed.next()).await {
            Some(Ok(bytes)) => Some(decode_server_frame(&bytes).expect("a server frame")),
            Some(Err(_)) | None => None,
        }
    }

    async fn recv_response(&mut self) -> (Option<u64>, Response) {
        match self.recv().await {
            Some(ServerFrame::Response { request_id, response }) => (request_id, response),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    async fn authenticate(&mut self, token: &str) -> Response {
        self.send(&format!(r#"{{"request_id":0,"command":{{"Authenticate":{{"token":"{token}"}}}}}}"#)).await;
        let (id, response) = self.recv_response().await;
        assert_eq!(id, Some(0));
        response
    }

    /// Asserts that the server closes the connection (after any frames in `allow`).
    async fn expect_closed(&mut self) {
        assert!(self.recv().await.is_none(), "the connection should be closed");
    }
}

fn kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

async fn list_works(client: &Client) {
    let actors = within("list", client.list_actors()).await.expect("the other client keeps working");
    assert_eq!(actors.len(), 2);
}

fn tokens() -> TokenSet {
    TokenSet::parse("# old and new, during a rotation\nold-token-1234\nnew-token-5678\n").unwrap()
}

fn with_token(token: &str) -> ClientConfig {
    ClientConfig::default().token(Token::new(token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_rotated_token_is_admitted_and_a_wrong_one_is_refused_after_the_delay() {
    let delay = Duration::from_millis(300);
    let f = fixture(ServerConfig::default().auth(tokens()).auth_failure_delay(delay)).await;
    for token in ["old-token-1234", "new-token-5678"] {
        let (client, _events) = within("connect", Client::connect(f.addr, with_token(token))).await.unwrap();
        list_works(&client).await;
    }

    // A wrong token: Unauthorized under its request id, after the delay, then closed.
    let mut raw = Raw::connect(f.addr).await;
    let started = Instant::now();
    assert_eq!(kind(&raw.authenticate("new-token-567").await), Some(ErrorKind::Unauthorized));
    assert!(started.elapsed() >= delay, "answered after {:?}", started.elapsed());
    raw.expect_closed().await;

    // The library client reports it as PermissionDenied, with the typed error inside.
    let err = within("connect", Client::connect(f.addr, with_token("guess"))).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    // Nothing leaks the token.
    assert!(!err.to_string().contains("guess"));

    // A first frame that is not Authenticate is refused the same way, and the
    // command is not run.
    let mut raw = Raw::connect(f.addr).await;
    let echo = f.echo;
    raw.send(&format!(r#"{{"request_id":5,"command":{{"SendActorMessage":{{"id":"{echo}","data":"x"}}}}}}"#))
        .await;
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (Some(5), Some(ErrorKind::Unauthorized)));
    raw.expect_closed().await;

    // So is garbage.
    let mut raw = Raw::connect(f.addr).await;
    raw.send("{nope").await;
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::Unauthorized)));
    raw.expect_closed().await;

    // No session was attached for the refused clients: only the actors are registered.
    f.router.flush();
    assert_eq!(f.router.metrics().total().registered_actors, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_refused_at_the_handshake_timeout() {
    let config = ServerConfig::default()
        .auth(tokens())
        .handshake_timeout(Duration::from_millis(300))
        .idle_timeout(WAIT);
    let f = fixture(config).await;
    let mut raw = Raw::connect(f.addr).await;
    let started = Instant::now();
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::Unauthorized)));
    assert!(started.elapsed() >= Duration::from_millis(250));
    raw.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_later_in_a_session_closes_it() {
    let f =
        fixture(ServerConfig::default().auth(tokens()).auth_failure_delay(Duration::from_millis(10))).await;
    let mut raw = Raw::connect(f.addr).await;
    assert_eq!(raw.authenticate("old-token-1234").await, Response::Authenticated);
    assert_eq!(raw.authenticate("new-token-5678").await, Response::Authenticated);
    assert_eq!(kind(&raw.authenticate("wrong").await), Some(ErrorKind::Unauthorized));
    raw.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tokens_accepts_any_authenticate() {
    let f = fixture(ServerConfig::default()).await;
    let (client, _events) = within("connect", Client::connect(f.addr, with_token("anything"))).await.unwrap();
    list_works(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_without_tokens_is_refused_unless_insecure() {
    let router = Router::builder().shards(1).build().unwrap();
    let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = Server::bind(router.clone(), ServerConfig::default().bind(public)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("without authentication"), "{err}");
    Server::bind(router.clone(), ServerConfig::default().bind(public).insecure(true)).await.unwrap();
    Server::bind(router.clone(), ServerConfig::default().bind(public).auth(tokens())).await.unwrap();
}

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1), and
/// their PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sharded-router-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("test CA {tag}"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let pki = Self { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_and_an_untrusted_server_is_refused() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let tls = TlsServer::from_pem_files(&pki.cert, &pki.key).unwrap();
    let f = fixture(ServerConfig::default().tls(tls).auth(tokens())).await;

    for name in ["localhost", "127.0.0.1"] {
        let config = with_token("new-token-5678").tls(TlsClient::from_ca_file(&pki.ca, name).unwrap());
        let (client, mut events) = within("TLS connect", Client::connect(f.addr, config)).await.unwrap();
        let reply = within("request", client.request(f.echo, b"over tls".to_vec(), WAIT)).await.unwrap();
        assert_eq!(reply, b"over tls");
        let (channel, _) = within("open", client.open_channel(f.echo, vec![])).await.unwrap();
        let first = within("event", events.next()).await.unwrap();
        assert_eq!(first, Event::ChannelMessage { channel_id: channel, message: b"first".to_vec() });
    }

    // A client that trusts another CA refuses the server's certificate.
    let config = with_token("new-token-5678").tls(TlsClient::from_ca_file(&other.ca, "localhost").unwrap());
    let err = within("TLS connect", Client::connect(f.addr, config)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    // So does one that expects another name.
    let config = with_token("new-token-5678").tls(TlsClient::from_ca_file(&pki.ca, "example.org").unwrap());
    assert!(within("TLS connect", Client::connect(f.addr, config)).await.is_err());
    // Past the connection limit, a TLS client still gets its typed refusal.
    let busy = fixture(
        ServerConfig::default()
            .tls(TlsServer::from_pem_files(&pki.cert, &pki.key).unwrap())
            .max_connections(1),
    )
    .await;
    let tls = || TlsClient::from_ca_file(&pki.ca, "localhost").unwrap();
    let (first, _events) =
        within("TLS connect", Client::connect(busy.addr, ClientConfig::default().tls(tls()))).await.unwrap();
    let err =
        within("TLS connect", Client::connect(busy.addr, with_token("any").tls(tls()))).await.unwrap_err();
    assert!(err.to_string().contains("TooManyConnections"), "{err}");
    list_works(&first).await;
    // A plain-TCP client gets no answer it can read.
    let plain = within("connect", Client::connect(f.addr, with_token("new-token-5678"))).await;
    assert!(plain.is_err(), "a plain client must not get through a TLS server");
}

#[test]
fn unusable_pem_files_are_reported_by_name() {
    let pki = Pki::new("bad");
    let err = TlsServer::from_pem_files(&pki.key, &pki.key).unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    let err = TlsServer::from_pem_files(pki.dir.join("missing.pem"), &pki.key).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    assert!(TlsClient::from_ca_file(&pki.ca, "not a name!").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_server_limit_are_refused_with_a_final_frame() {
    let f = fixture(ServerConfig::default().max_connections(2)).await;
    let (first, _e1) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let (_second, _e2) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    list_works(&first).await;
    let mut third = Raw::connect(f.addr).await;
    let (id, response) = third.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::TooManyConnections)));
    third.expect_closed().await;
    list_works(&first).await;
    // A place frees when a client leaves.
    drop(first);
    let start = Instant::now();
    loop {
        match Client::connect(f.addr, ClientConfig::default()).await {
            Ok((client, _events)) if client.list_actors().await.is_ok() => break,
            _ => assert!(start.elapsed() < WAIT, "the freed place was never given back"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_peer_limit_are_refused_and_other_peers_are_not() {
    let f = fixture(ServerConfig::default().max_connections_per_peer(2)).await;
    let (first, _e1) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let mut second = Raw::connect_from("127.0.0.1", f.addr).await;
    second.send(r#"{"request_id":1,"command":"ListActors"}"#).await;
    assert!(matches!(second.recv_response().await, (Some(1), Response::ActorList { .. })));
    let mut third = Raw::connect_from("127.0.0.1", f.addr).await;
    let (id, response) = third.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::TooManyConnections)));
    third.expect_closed().await;
    // Another address is another peer.
    let mut elsewhere = Raw::connect_from("127.0.0.2", f.addr).await;
    elsewhere.send(r#"{"request_id":1,"command":"ListActors"}"#).await;
    assert!(matches!(elsewhere.recv_response().await, (Some(1), Response::ActorList { .. })));
    list_works(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_refused_at_once() {
    let f = fixture(ServerConfig::default().max_in_flight(2)).await;
    let (other, _events) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let mut raw = Raw::connect(f.addr).await;
    let silent = f.silent;
    for id in 1..=3 {
        raw.send(&format!(
            r#"{{"request_id":{id},"command":{{"RequestActorMessage":{{"id":"{silent}","data":"","timeout_ms":400}}}}}}"#
        ))
        .await;
    }
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (Some(3), Some(ErrorKind::TooManyInFlight)));
    list_works(&other).await;
    // The two admitted requests time out; then there is room again.
    let mut late = [raw.recv_response().await, raw.recv_response().await];
    late.sort_by_key(|(id, _)| *id);
    assert_eq!(
        late.map(|(id, r)| (id, kind(&r))),
        [(Some(1), Some(ErrorKind::Timeout)), (Some(2), Some(ErrorKind::Timeout))]
    );
    let echo = f.echo;
    raw.send(&format!(
        r#"{{"request_id":4,"command":{{"RequestActorMessage":{{"id":"{echo}","data":"ok"}}}}}}"#
    ))
    .await;
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, response), (Some(4), Response::RequestedMessage { id: echo, message: b"ok".to_vec() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_past_the_limit_are_refused_until_one_closes() {
    let f = fixture(ServerConfig::default().max_channels(2)).await;
    let (other, _other_events) =
        within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let (client, _events) =
        within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let (a, _) = within("open", client.open_channel(f.echo, vec![])).await.unwrap();
    within("open", client.open_channel(f.echo, vec![])).await.unwrap();
    let err = within("open", client.open_channel(f.echo, vec![])).await.unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::TooManyChannels), "{err}");
    // The other client has its own allowance.
    within("open", other.open_channel(f.echo, vec![])).await.unwrap();
    within("close", client.close_channel(a)).await.unwrap();
    within("open", client.open_channel(f.echo, vec![])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_is_closed_with_a_final_frame() {
    let idle = Duration::from_millis(400);
    let f = fixture(ServerConfig::default().idle_timeout(idle)).await;
    let (busy, _events) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let mut raw = Raw::connect(f.addr).await;
    let started = Instant::now();
    // The busy client keeps talking past the idle timeout, and stays.
    while started.elapsed() < idle * 2 {
        list_works(&busy).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::IdleTimeout)));
    raw.expect_closed().await;
    list_works(&busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_not_idleness() {
    let f = fixture(ServerConfig::default().idle_timeout(Duration::from_millis(200))).await;
    let mut raw = Raw::connect(f.addr).await;
    let silent = f.silent;
    raw.send(&format!(
        r#"{{"request_id":1,"command":{{"RequestActorMessage":{{"id":"{silent}","data":"","timeout_ms":600}}}}}}"#
    ))
    .await;
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (Some(1), Some(ErrorKind::Timeout)));
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::IdleTimeout)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_past_the_rate_limit_are_refused_and_each_is_answered_once() {
    let f = fixture(ServerConfig::default().rate_limit(Some(RateLimit::new(5, 5)))).await;
    let (other, _events) = within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let mut raw = Raw::connect(f.addr).await;
    // All in one write, so that the bucket barely refills meanwhile.
    for id in 1..=20 {
        let frame = format!(r#"{{"request_id":{id},"command":"ListActors"}}"#);
        within("feed", raw.framed.feed(Bytes::from(frame))).await.unwrap();
    }
    within("flush", SinkExt::<Bytes>::flush(&mut raw.framed)).await.unwrap();
    let mut answered = Vec::new();
    let mut limited = 0;
    for _ in 1..=20 {
        let (id, response) = raw.recv_response().await;
        answered.push(id.unwrap());
        match kind(&response) {
            Some(ErrorKind::RateLimited) => limited += 1,
            None => assert!(matches!(response, Response::ActorList { .. })),
            Some(other) => panic!("unexpected {other}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=20).collect::<Vec<u64>>(), "each command answered exactly once");
    assert!((10..=15).contains(&limited), "{limited} of 20 limited at 5/s, burst 5");
    list_works(&other).await;
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    raw.send(r#"{"request_id":99,"command":"ListActors"}"#).await;
    assert!(matches!(raw.recv_response().await, (Some(99), Response::ActorList { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_opened_always_precedes_the_channels_events() {
    let f = fixture(ServerConfig::default()).await;
    let echo = f.echo;
    let mut raw = Raw::connect(f.addr).await;
    // Rounds of several opens in flight at once, to an actor that sends on each
    // channel the moment it accepts it.
    for round in 0..200u64 {
        let ids: Vec<u64> = (0..16).map(|i| round * 100 + i).collect();
        for id in &ids {
            raw.send(&format!(
                r#"{{"request_id":{id},"command":{{"OpenChannel":{{"actor_id":"{echo}"}}}}}}"#
            ))
            .await;
        }
        let mut opened = Vec::new();
        let mut firsts = 0;
        while opened.len() < ids.len() || firsts < ids.len() {
            match raw.recv().await.expect("connection open") {
                ServerFrame::Response { response: Response::ChannelOpened { channel_id, .. }, .. } => {
                    opened.push(channel_id);
                }
                ServerFrame::Event { event: Event::ChannelMessage { channel_id, message } } => {
                    assert_eq!(message, b"first");
                    assert!(
                        opened.contains(&channel_id),
                        "round {round}: an event of {channel_id} came before its ChannelOpened"
                    );
                    firsts += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        for (i, channel_id) in opened.iter().enumerate() {
            raw.send(&format!(
                r#"{{"request_id":{},"command":{{"CloseChannel":{{"channel_id":"{channel_id}"}}}}}}"#,
                50_000_000 + i
            ))
            .await;
            assert!(matches!(raw.recv_response().await, (_, Response::ChannelClosed { .. })));
        }
    }
    drop(raw);
    let start = Instant::now();
    while f.router.metrics().channels.channels != 0 {
        assert!(start.elapsed() < WAIT, "channels left in the table");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_shutdown_ends_every_session_promptly_with_a_final_frame() {
    let f = fixture(ServerConfig::default()).await;
    let mut idle = Raw::connect(f.addr).await;
    idle.send(r#"{"request_id":1,"command":"ListActors"}"#).await;
    assert!(matches!(idle.recv_response().await, (Some(1), Response::ActorList { .. })));
    let mut waiting = Raw::connect(f.addr).await;
    let silent = f.silent;
    waiting
        .send(&format!(
            r#"{{"request_id":7,"command":{{"RequestActorMessage":{{"id":"{silent}","data":"","timeout_ms":30000}}}}}}"#
        ))
        .await;
    // Let the request reach the actor.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let router = f.router.clone();
    tokio::task::spawn_blocking(move || router.shutdown()).await.unwrap();
    let started = Instant::now();
    let (id, response) = idle.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::Shutdown)));
    idle.expect_closed().await;
    // The held request is answered (exactly once) before the final frame.
    let (id, response) = waiting.recv_response().await;
    assert_eq!((id, kind(&response)), (Some(7), Some(ErrorKind::Shutdown)));
    let (id, response) = waiting.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::Shutdown)));
    waiting.expect_closed().await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // The listener is closed: the server task has returned.
    within("the server to stop", f.server).await.unwrap().unwrap();
    assert!(TcpStream::connect(f.addr).await.is_err(), "the listener should be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_the_final_frame_as_a_typed_error() {
    let f = fixture(ServerConfig::default().session(SessionConfig::default())).await;
    let (client, _events) =
        within("connect", Client::connect(f.addr, ClientConfig::default())).await.unwrap();
    let pending = {
        let client = client.clone();
        let silent = f.silent;
        tokio::spawn(async move { client.request(silent, vec![], Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let router = f.router.clone();
    tokio::task::spawn_blocking(move || router.shutdown()).await.unwrap();
    let err = within("the request's end", pending).await.unwrap().unwrap_err();
    assert_eq!(err.remote_kind(), Some(ErrorKind::Shutdown), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_shutdown_also_ends_connections_still_authenticating() {
    let f = fixture(ServerConfig::default().auth(tokens()).handshake_timeout(WAIT)).await;
    let mut raw = Raw::connect(f.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let router = f.router.clone();
    tokio::task::spawn_blocking(move || router.shutdown()).await.unwrap();
    let started = Instant::now();
    let (id, response) = raw.recv_response().await;
    assert_eq!((id, kind(&response)), (None, Some(ErrorKind::Shutdown)));
    raw.expect_closed().await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}
