//! `sharded-router serve` and the gateway client verbs (`list`, `send`, `request`,
//! `channel`, `update`). With `--nats`, `serve` joins a cluster
//! (`cluster_serve.rs`) and the verbs reach every actor of it through any node.
//!
//! Payloads on the command line are UTF-8 text. Answers are printed as text when
//! they are valid UTF-8, and as hex otherwise.
//!
//! `serve` refuses a non-loopback `--bind` without `--token-file` unless
//! `--insecure` is given. Token files hold one token per line (the server accepts
//! each; a client presents the first); their path may also come from
//! `SHARDED_ROUTER_TOKEN_FILE`.

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use clap::{Args, Subcommand};
use sharded_router::gateway::{
    first_token, Client, ClientConfig, Event, RateLimit, Server, ServerConfig, SessionConfig, TlsClient,
    TlsServer, TokenSet, DEFAULT_BIND, DEFAULT_MAX_FRAME_LENGTH,
};
use sharded_router::{ActorId, Router};

use crate::cluster_serve::{ClusterArgs, Directory};
use crate::demo_actors::DEMO_ACTORS;
use crate::greeter::Greeter;

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Run a router with demo actors (echo, counter, channel-echo, greeter) behind
    /// the management gateway, until interrupted; with --nats, as one node of a
    /// cluster (its actors named NODE.echo, ...).
    Serve(ServeArgs),
    /// List the actors of a running gateway: id, name and, in a cluster, node
    /// (every actor of the cluster).
    List(ConnectArgs),
    /// Send a one-way message (UTF-8 text) to an actor.
    Send(SendArgs),
    /// Send a request (UTF-8 text) to an actor and print its reply.
    Request(RequestArgs),
    /// Open a channel to an actor: stdin lines go out on it, incoming messages are
    /// printed. At end of input the channel is closed once the actor has been
    /// quiet for `--linger-ms`.
    Channel(ChannelArgs),
    /// Update an actor to the server's next version of it (the demo's `greeter`
    /// goes from v1 to v2), with no message lost.
    Update(UpdateArgs),
    /// Watch a running gateway's router: per shard messages/s, overflow depth,
    /// rejects, dead letters, requests/s, request latency, actors; refreshed
    /// every second (`--once`: one snapshot).
    Stats(crate::stats::StatsArgs),
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The actor: its id, or its name as shown by `list`.
    pub actor: String,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value_t = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Router shards (default: available parallelism).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_LENGTH)]
    pub max_frame_length: usize,
    /// Require clients to authenticate with one of the tokens in this file (one
    /// per line; several allow rotation).
    #[arg(long, env = "SHARDED_ROUTER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow a non-loopback --bind without --token-file: anyone who can connect
    /// can then message every actor.
    #[arg(long)]
    pub insecure: bool,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_peer: usize,
    /// Requests and channel opens one client may have waiting.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Channels one client may have open or opening.
    #[arg(long, default_value_t = 256)]
    pub max_channels: usize,
    /// Seconds a client may send nothing before it is closed.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Commands per second one client may send (0: no limit).
    #[arg(long, default_value_t = 1000)]
    pub rate_limit: u32,
    /// Commands one client may send at once after a quiet spell.
    #[arg(long, default_value_t = 2000)]
    pub rate_burst: u32,
    /// Serve the router's metrics at http://ADDR/metrics (Prometheus text format);
    /// the flag alone serves them on 127.0.0.1:9420. Logging follows RUST_LOG.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_METRICS_BIND)]
    pub metrics_bind: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Where `serve --metrics-bind` listens when given no address: loopback only.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9420";

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The gateway's address.
    #[arg(long, default_value_t = DEFAULT_BIND)]
    pub connect: SocketAddr,
    /// How long to wait for each answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Authenticate with the first token in this file.
    #[arg(long, env = "SHARDED_ROUTER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect over TLS, trusting the certificate authorities in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the --connect IP
    /// address).
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The actor: its id, or its name as shown by `list`.
    pub actor: String,
    /// The message.
    pub text: String,
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The actor: its id, or its name as shown by `list`.
    pub actor: String,
    /// The request.
    pub text: String,
    /// How long the actor has to reply, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub reply_timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct ChannelArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The actor: its id, or its name as shown by `list`.
    pub actor: String,
    /// The first message, sent with the open.
    #[arg(long, default_value = "")]
    pub initial: String,
    /// After end of input, how long the actor must stay quiet before the channel
    /// is closed, in milliseconds (at most ten times this in all): the answers to
    /// the last lines still arrive.
    #[arg(long, default_value_t = 300)]
    pub linger_ms: u64,
}

pub fn run(command: GatewayCommand) -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            GatewayCommand::Serve(args) => serve(args).await,
            GatewayCommand::List(args) => list(args).await,
            GatewayCommand::Send(args) => send(args).await,
            GatewayCommand::Request(args) => request(args).await,
            GatewayCommand::Channel(args) => channel(args).await,
            GatewayCommand::Update(args) => update(args).await,
            GatewayCommand::Stats(args) => crate::stats::run(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    crate::observe::init_logging();
    let mut builder = Router::builder();
    if let Some(n) = args.shards {
        builder = builder.shards(n);
    }
    let router = builder.build()?;
    // Bound first, so that a refused exposure stops before any actor starts; the
    // names, the greeter and the cluster's directory are filled in once the
    // actors are registered.
    let names: Arc<OnceLock<HashMap<ActorId, String>>> = Arc::default();
    let greeter: Arc<OnceLock<Arc<Greeter>>> = Arc::default();
    let directory = Directory::default();
    let lookup = Arc::clone(&names);
    let updatable = Arc::clone(&greeter);
    let listing = directory.clone();
    let session = SessionConfig::default()
        .names(move |id| lookup.get().and_then(|names| names.get(&id).cloned()))
        .directory(move || listing.list())
        .updater(move |id| match updatable.get() {
            Some(greeter) if greeter.id() == id => greeter.update(),
            _ => Err("the server has no other version of this actor".to_owned()),
        });
    let config = server_config(&args)?.session(session);
    let server = Server::bind(router.clone(), config).await?;
    let cluster = args.cluster.join(&router).await?;
    if let Some(cluster) = &cluster {
        directory.set(cluster.clone());
    }
    let prefix = args.cluster.name_prefix();
    let mut registered = HashMap::new();
    for (name, kind) in DEMO_ACTORS {
        let name = format!("{prefix}{name}");
        let id = kind.start(&router, &name)?;
        directory.name(id, &name)?;
        println!("{id}  {name}");
        registered.insert(id, name);
    }
    let started = Greeter::start(&router)?;
    let name = format!("{prefix}greeter");
    directory.name(started.id(), &name)?;
    println!("{}  {name}", started.id());
    registered.insert(started.id(), name);
    let _ = greeter.set(started);
    let _ = names.set(registered);
    let _metrics = match args.metrics_bind {
        Some(addr) => {
            let metrics = crate::observe::serve_metrics(&router, addr)?;
            println!("metrics at http://{addr}/metrics");
            Some(metrics)
        }
        None => None,
    };
    if let Some(cluster) = &cluster {
        println!(
            "node {} of cluster {:?} (members: {})",
            cluster.node(),
            args.cluster.cluster,
            cluster.members().join(", ")
        );
    }
    let security = match (args.token_file.is_some(), args.tls_cert.is_some()) {
        (true, true) => "tokens, TLS",
        (true, false) => "tokens",
        (false, true) => "TLS, no tokens",
        (false, false) => "no tokens",
    };
    println!("gateway listening on {} ({security}; Ctrl-C to stop)", server.local_addr()?);
    match cluster {
        // Interrupted, the node leaves the cluster at once (the others need not
        // wait for its silence to time out).
        Some(cluster) => tokio::select! {
            served = server.run() => served?,
            interrupted = tokio::signal::ctrl_c() => {
                interrupted?;
                cluster.leave().await;
            }
        },
        None => server.run().await?,
    }
    Ok(())
}

/// The server's settings from the command line (all but the session).
fn server_config(args: &ServeArgs) -> Result<ServerConfig, Box<dyn Error>> {
    let rate_limit = (args.rate_limit > 0).then(|| RateLimit::new(args.rate_limit, args.rate_burst));
    let mut config = ServerConfig::default()
        .bind(args.bind)
        .max_frame_length(args.max_frame_length)
        .max_connections(args.max_connections)
        .max_connections_per_peer(args.max_connections_per_peer)
        .max_in_flight(args.max_in_flight)
        .max_channels(args.max_channels)
        .idle_timeout(Duration::from_secs(args.idle_timeout_secs))
        .rate_limit(rate_limit)
        .insecure(args.insecure);
    if let Some(path) = &args.token_file {
        config = config.auth(TokenSet::from_file(path)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.tls(TlsServer::from_pem_files(cert, key)?);
    }
    Ok(config)
}

async fn connect(args: &ConnectArgs) -> Result<(Client, sharded_router::gateway::Events), Box<dyn Error>> {
    let mut config = ClientConfig::default().timeout(Duration::from_millis(args.timeout_ms));
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let token =
            first_token(&text).ok_or_else(|| format!("token file {} holds no token", path.display()))?;
        config = config.token(token);
    }
    if let Some(ca) = &args.tls_ca {
        let name = args.tls_server_name.clone().unwrap_or_else(|| args.connect.ip().to_string());
        config = config.tls(TlsClient::from_ca_file(ca, &name)?);
    }
    Client::connect(args.connect, config).await.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::UnexpectedEof if args.tls_ca.is_none() => {
                " (if the gateway serves TLS, give --tls-ca)"
            }
            _ => "",
        };
        format!("cannot connect to {}: {e}{hint}", args.connect).into()
    })
}

/// An actor given by id or by name.
async fn resolve(client: &Client, actor: &str) -> Result<ActorId, Box<dyn Error>> {
    if let Ok(id) = actor.parse() {
        return Ok(id);
    }
    let actors = client.list_actors().await?;
    let mut matching = actors.iter().filter(|a| a.name.as_deref() == Some(actor));
    match (matching.next(), matching.next()) {
        (Some(a), None) => Ok(a.id),
        (Some(_), Some(_)) => Err(format!("more than one actor is named {actor:?}; use its id").into()),
        (None, _) => Err(format!("no actor has the id or name {actor:?} (see `sharded-router list`)").into()),
    }
}

fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("<{} bytes: {hex}>", bytes.len())
        }
    }
}

async fn list(args: ConnectArgs) -> Result<(), Box<dyn Error>> {
    let (client, _events) = connect(&args).await?;
    for actor in client.list_actors().await? {
        let name = actor.name.as_deref().unwrap_or("-");
        match &actor.node {
            Some(node) => println!("{}  {name}  {node}", actor.id),
            None => println!("{}  {name}", actor.id),
        }
    }
    Ok(())
}

async fn send(args: SendArgs) -> Result<(), Box<dyn Error>> {
    let (client, _events) = connect(&args.conn).await?;
    let id = resolve(&client, &args.actor).await?;
    client.send(id, args.text.into_bytes()).await?;
    println!("sent");
    Ok(())
}

async fn request(args: RequestArgs) -> Result<(), Box<dyn Error>> {
    let (client, _events) = connect(&args.conn).await?;
    let id = resolve(&client, &args.actor).await?;
    let reply =
        client.request(id, args.text.into_bytes(), Duration::from_millis(args.reply_timeout_ms)).await?;
    println!("{}", show(&reply));
    Ok(())
}

async fn channel(args: ChannelArgs) -> Result<(), Box<dyn Error>> {
    let (client, mut events) = connect(&args.conn).await?;
    let id = resolve(&client, &args.actor).await?;
    let (channel_id, response) = client.open_channel(id, args.initial.into_bytes()).await?;
    match response {
        Some(response) => println!("channel {channel_id} open; the actor says: {}", show(&response)),
        None => println!("channel {channel_id} open"),
    }

    // Stdin is read on its own thread; lines arrive here, `None` at end of input.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    })?;

    // After end of input, answers to the last lines may still be on their way:
    // the channel closes once the actor has been quiet for `linger`, and at the
    // latest ten lingers after the input ended (an actor that never stops
    // talking does not keep it open).
    let linger = Duration::from_millis(args.linger_ms);
    let mut input_ended = None;
    loop {
        let close_at = input_ended.map(|ended: tokio::time::Instant| {
            (tokio::time::Instant::now() + linger).min(ended + linger.saturating_mul(10))
        });
        tokio::select! {
            line = lines.recv(), if input_ended.is_none() => match line {
                Some(line) => client.send_on_channel(channel_id, line.into_bytes()).await?,
                None => input_ended = Some(tokio::time::Instant::now()),
            },
            () = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)), if close_at.is_some() => {
                client.close_channel(channel_id).await?;
                println!("channel closed");
                return Ok(());
            },
            event = events.next() => match event {
                Some(Event::ChannelMessage { channel_id: c, message }) if c == channel_id => println!("< {}", show(&message)),
                Some(Event::ChannelClosed { channel_id: c }) if c == channel_id => {
                    println!("the actor closed the channel");
                    return Ok(());
                }
                Some(_) => {}
                None => return Err("the gateway closed the connection".into()),
            },
        }
    }
}

async fn update(args: UpdateArgs) -> Result<(), Box<dyn Error>> {
    let (client, _events) = connect(&args.conn).await?;
    let id = resolve(&client, &args.actor).await?;
    let version = client.update_actor(id).await?;
    println!("{} now runs {version}", args.actor);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: GatewayCommand,
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["sharded-router", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            GatewayCommand::Serve(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn bind(args: &[&str]) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = server_config(&serve_args(args)).map_err(|e| e.to_string())?;
        let router = Router::builder().shards(1).build().unwrap();
        runtime.block_on(Server::bind(router, config)).map(drop).map_err(|e| e.to_string())
    }

    #[test]
    fn a_public_bind_without_a_token_is_refused_unless_insecure() {
        let err = bind(&["--bind", "0.0.0.0:0"]).unwrap_err();
        assert!(err.contains("without authentication") && err.contains("--insecure"), "{err}");
        bind(&["--bind", "0.0.0.0:0", "--insecure"]).unwrap();
        bind(&["--bind", "127.0.0.1:0"]).unwrap();

        let dir = std::env::temp_dir().join(format!("sharded-router-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, "# rotation\nold\nnew\n").unwrap();
        bind(&["--bind", "0.0.0.0:0", "--token-file", tokens.to_str().unwrap()]).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = bind(&["--bind", "0.0.0.0:0", "--token-file", empty.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("no token"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_come_from_flags() {
        let config = server_config(&serve_args(&["--max-in-flight", "3", "--rate-limit", "0"])).unwrap();
        assert_eq!((config.max_in_flight, config.rate_limit), (3, None));
        let config = server_config(&serve_args(&[])).unwrap();
        assert_eq!(config.rate_limit, Some(RateLimit::new(1000, 2000)));
        assert_eq!(config.max_connections_per_peer, 64);
    }
}
