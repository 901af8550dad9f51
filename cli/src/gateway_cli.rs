//! `sharded-router serve` and the gateway client verbs (`list`, `send`, `request`,
//! `channel`).
//!
//! Payloads on the command line are UTF-8 text. Answers are printed as text when
//! they are valid UTF-8, and as hex otherwise.

use std::collections::HashMap;
use std::error::Error;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::{Args, Subcommand};
use sharded_router::gateway::{
    Client, ClientConfig, Event, Server, ServerConfig, SessionConfig, DEFAULT_BIND, DEFAULT_MAX_FRAME_LENGTH,
};
use sharded_router::{ActorId, ActorMessage, Mailbox, Router};

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Run a router with demo actors (echo, counter, channel-echo) behind the
    /// management gateway, until interrupted.
    Serve(ServeArgs),
    /// List the actors of a running gateway.
    List(ConnectArgs),
    /// Send a one-way message (UTF-8 text) to an actor.
    Send(SendArgs),
    /// Send a request (UTF-8 text) to an actor and print its reply.
    Request(RequestArgs),
    /// Open a channel to an actor: stdin lines go out on it, incoming messages are
    /// printed. At end of input the channel is closed once the actor has been
    /// quiet for `--linger-ms`.
    Channel(ChannelArgs),
    /// Watch a running gateway's router: per shard messages/s, overflow depth,
    /// rejects, dead letters, requests/s, request latency, actors; refreshed
    /// every second (`--once`: one snapshot).
    Stats(crate::stats::StatsArgs),
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
    /// Serve the router's metrics at http://ADDR/metrics (Prometheus text format);
    /// the flag alone serves them on 127.0.0.1:9420. Logging follows RUST_LOG.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_METRICS_BIND)]
    pub metrics_bind: Option<SocketAddr>,
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
    let mut names = HashMap::new();
    for (name, kind) in
        [("echo", DemoActor::Echo), ("counter", DemoActor::Counter), ("channel-echo", DemoActor::ChannelEcho)]
    {
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx)?;
        let r = router.clone();
        thread::Builder::new().name(format!("demo-{name}")).spawn(move || kind.run(&r, id, &mailbox))?;
        names.insert(id, name.to_owned());
        println!("{id}  {name}");
    }
    let _metrics = match args.metrics_bind {
        Some(addr) => {
            let metrics = crate::observe::serve_metrics(&router, addr)?;
            println!("metrics at http://{addr}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let names = Arc::new(names);
    let session = SessionConfig::default().names(move |id| names.get(&id).cloned());
    let config =
        ServerConfig::default().bind(args.bind).max_frame_length(args.max_frame_length).session(session);
    let server = Server::bind(router, config).await?;
    println!("gateway listening on {} (Ctrl-C to stop)", server.local_addr()?);
    server.run().await?;
    Ok(())
}

#[derive(Clone, Copy)]
enum DemoActor {
    /// Replies to every request with its payload.
    Echo,
    /// Counts one-way messages; replies to a request with the count.
    Counter,
    /// Accepts every channel ("welcome") and sends back what arrives on it.
    ChannelEcho,
}

impl DemoActor {
    fn run(self, router: &Router, me: ActorId, mailbox: &Mailbox) {
        let mut count = 0u64;
        while let Ok(msg) = mailbox.recv() {
            match (self, msg) {
                (Self::Echo | Self::ChannelEcho, ActorMessage::Request { data, reply }) => {
                    let _ = reply.reply(data);
                }
                (Self::Counter, ActorMessage::Send { .. }) => {
                    count += 1;
                }
                (Self::Counter, ActorMessage::Request { reply, .. }) => {
                    let _ = reply.reply(count.to_string().into_bytes());
                }
                (Self::ChannelEcho, ActorMessage::ChannelOpen { reply, .. }) => {
                    let _ = reply.accept(Some(b"welcome".to_vec()));
                }
                (Self::ChannelEcho, ActorMessage::ChannelMessage { channel_id, data, .. }) => {
                    let _ = router.channel_send(channel_id, me, data);
                }
                // Everything else is dropped; a dropped channel open is a rejection.
                _ => {}
            }
        }
    }
}

async fn connect(args: &ConnectArgs) -> Result<(Client, sharded_router::gateway::Events), Box<dyn Error>> {
    let config = ClientConfig::default().timeout(Duration::from_millis(args.timeout_ms));
    Client::connect(args.connect, config)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.connect).into())
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
        println!("{}  {}", actor.id, actor.name.as_deref().unwrap_or("-"));
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
