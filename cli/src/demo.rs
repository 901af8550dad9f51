//! `sharded-router demo`: an in-process run of the router.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use sharded_router::{ActorId, ActorMessage, ChannelId, Router};

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Router shards (default: available parallelism).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Actors, each on its own thread.
    #[arg(long, default_value_t = 100)]
    pub actors: usize,
    /// Producer threads for the one-way phase.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// One-way messages per producer.
    #[arg(long, default_value_t = 500_000)]
    pub messages: u64,
    /// Request/response round trips per requester.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Register + unregister pairs in the churn phase.
    #[arg(long, default_value_t = 200_000)]
    pub churn: u64,
    /// Hot swaps of one actor's instance in the reload phase.
    #[arg(long, default_value_t = 200)]
    pub swaps: usize,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            shards: None,
            actors: 100,
            producers: 2,
            messages: 500_000,
            requests: 20_000,
            churn: 200_000,
            swaps: 200,
        }
    }
}

fn rate(n: u64, elapsed: Duration) -> String {
    let per_sec = n as f64 / elapsed.as_secs_f64();
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else {
        format!("{:.1} k/s", per_sec / 1e3)
    }
}

pub fn run(args: &DemoArgs) -> Result<(), Box<dyn Error>> {
    let mut builder = Router::builder();
    if let Some(n) = args.shards {
        builder = builder.shards(n);
    }
    let router = builder.build()?;
    println!(
        "sharded-router demo: {} shards, {} actors (one thread each)",
        router.shard_count(),
        args.actors
    );

    // Actors: count one-way messages, answer requests with the payload reversed.
    let received = Arc::new(AtomicU64::new(0));
    let ids: Vec<ActorId> = (0..args.actors.max(1))
        .map(|_| {
            let (tx, mailbox) = router.mailbox();
            let id = ActorId::new();
            router.register(id, tx)?;
            let received = Arc::clone(&received);
            thread::spawn(move || {
                while let Ok(msg) = mailbox.recv() {
                    match msg {
                        ActorMessage::Send { .. } | ActorMessage::ChannelMessage { .. } => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        ActorMessage::ChannelOpen { reply, .. } => {
                            let _ = reply.accept(None);
                        }
                        ActorMessage::Request { mut data, reply } => {
                            data.reverse();
                            let _ = reply.reply(data);
                        }
                        _ => {}
                    }
                }
            });
            Ok(id)
        })
        .collect::<Result<_, Box<dyn Error>>>()?;
    println!("registered {} actors", ids.len());

    // One-way, acked: every send's result is checked by the producer.
    let total = args.messages * args.producers as u64;
    let start = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|p| {
            let router = router.clone();
            let ids = ids.clone();
            let n = args.messages;
            thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..n {
                    let target = ids[(i as usize + p * 31) % ids.len()];
                    if router.try_send(target, i.to_le_bytes().to_vec()).is_err() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = producers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let routed = start.elapsed();
    while received.load(Ordering::Relaxed) + refused < total && start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(1));
    }
    let consumed = start.elapsed();
    println!(
        "one-way: {total} sends by {} producers, {refused} refused: routed at {}, consumed at {}",
        args.producers,
        rate(total, routed),
        rate(received.load(Ordering::Relaxed), consumed),
    );

    // Request/response round trips, 1 and 4 concurrent requesters.
    for requesters in [1usize, 4] {
        let start = Instant::now();
        let handles: Vec<_> = (0..requesters)
            .map(|r| {
                let router = router.clone();
                let ids = ids.clone();
                let n = args.requests;
                thread::spawn(move || {
                    let mut failed = 0u64;
                    for i in 0..n {
                        let target = ids[(i as usize + r * 17) % ids.len()];
                        match router.request(target, vec![1, 2, 3], Duration::from_secs(5)) {
                            Ok(reply) if reply == [3, 2, 1] => {}
                            _ => failed += 1,
                        }
                    }
                    failed
                })
            })
            .collect();
        let failed: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        let n = args.requests * requesters as u64;
        println!(
            "request/response: {n} round trips by {requesters} requester(s), {failed} failed: {}",
            rate(n, start.elapsed())
        );
    }

    // Channel messages: one external client opens a channel to every actor, then
    // the producers send on them.
    let (endpoint, _client) = router.mailbox();
    let client = router.attach_external(endpoint)?;
    let channels: Vec<ChannelId> = ids
        .iter()
        .map(|&id| router.open_channel(client, id, Vec::new(), Duration::from_secs(5)).map(|c| c.id))
        .collect::<Result<_, _>>()?;
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|p| {
            let router = router.clone();
            let channels = channels.clone();
            let n = args.messages / 2;
            thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..n {
                    let channel = channels[(i as usize + p * 31) % channels.len()];
                    if router.channel_send(channel, client, i.to_le_bytes().to_vec()).is_err() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = producers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let routed = start.elapsed();
    let total = args.messages / 2 * args.producers as u64;
    println!(
        "channels: {} opened; {total} channel messages by {} producers, {refused} refused: routed at {}",
        channels.len(),
        args.producers,
        rate(total, routed),
    );
    while received.load(Ordering::Relaxed) - before + refused < total
        && start.elapsed() < Duration::from_secs(60)
    {
        thread::sleep(Duration::from_millis(1));
    }
    router.detach_external(client)?;

    // Registration churn on one thread.
    let start = Instant::now();
    for _ in 0..args.churn {
        let (tx, _mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx)?;
        router.unregister(id)?;
    }
    println!("churn: {} register+unregister pairs: {}", args.churn, rate(args.churn, start.elapsed()));

    // Hot reload: one actor's instance swapped under load.
    let t = crate::reload_demo::run(&router, args.swaps, 4, 20_000)?;
    println!(
        "hot reload: {} swaps under {} messages from {} producers: {} lost, {} duplicated, {} reordered \
         ({} message moves between mailboxes, {:.2?})",
        t.swaps, t.sent, t.producers, t.lost, t.duplicated, t.reordered, t.moved, t.elapsed
    );

    router.flush();
    let m = router.metrics().total();
    println!(
        "metrics: delivered direct {}, via overflow {}, rejected {}, dead letters {}, registered {}",
        m.delivered_direct, m.delivered_overflow, m.rejected, m.dead_letters, m.registered_actors
    );
    let c = router.metrics().channels;
    println!(
        "channels: {} opened, {} messages, {} rejected, {} left in the table",
        c.opened, c.messages, c.rejected, c.channels
    );
    router.shutdown();
    println!("shut down: every shard thread joined");
    Ok(())
}
