//! `sharded-router demo`: an in-process run of the router.
//!
//! Actors run the way an actor runtime runs them: as tasks on a tokio runtime with
//! two worker threads, taking messages with `Mailbox::recv_async`. The one-way and
//! request/response phases run the `sharded-router bench` workloads (the
//! `sharded-router-workloads` crate) for our router, the hand-rolled `DashMap` of
//! tokio senders and the single-task anchor, so their rates are comparable; the
//! channel, churn and hot-reload phases use the demo's own router.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sharded_router::{ActorId, ActorMessage, ChannelId, Router, SendErrorKind};
use sharded_router_workloads::{Fixture, Full, Impl, Mode, Spec};

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Router shards (default: available parallelism).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Actors, each a task on a two-worker tokio runtime.
    #[arg(long, default_value_t = 100)]
    pub actors: usize,
    /// Producer tasks for the one-way and channel phases.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// One-way messages per producer.
    #[arg(long, default_value_t = 200_000)]
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
            messages: 200_000,
            requests: 20_000,
            churn: 200_000,
            swaps: 200,
        }
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else {
        format!("{:.1} k/s", per_sec / 1e3)
    }
}

/// Implementations the comparison phases run, ours first.
const COMPARED: [Impl; 3] = [Impl::Ours, Impl::HandRolled, Impl::Anchor];
/// Timed runs per implementation (interleaved); the median is printed.
const ROUNDS: usize = 3;

/// Runs `phase` on a fixture of each compared implementation: a warm-up with a
/// tenth of `n`, then [`ROUNDS`] interleaved timed runs; prints the medians and
/// ours against each.
fn compare(what: &str, spec: Spec, n: u64, phase: impl Fn(&Fixture, u64) -> Duration) {
    let fixtures: Vec<Fixture> = COMPARED.iter().map(|&imp| Fixture::new(imp, spec)).collect();
    for f in &fixtures {
        phase(f, (n / 10).max(1));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); fixtures.len()];
    for _ in 0..ROUNDS {
        for (k, f) in fixtures.iter().enumerate() {
            rates[k].push(per_sec(n, phase(f, n)));
        }
    }
    let medians: Vec<f64> = rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    let others: Vec<String> = COMPARED
        .iter()
        .zip(&medians)
        .skip(1)
        .map(|(imp, &r)| format!("{} {} (ours {:.2}x)", imp.name(), rate(r), medians[0] / r))
        .collect();
    println!("{what}: ours {}; {}", rate(medians[0]), others.join(", "));
}

pub fn run(args: &DemoArgs) -> Result<(), Box<dyn Error>> {
    let actors = args.actors.max(1);
    let producers = args.producers.max(1);
    println!(
        "sharded-router demo: {actors} actors as tokio tasks on 2 worker threads; medians of {ROUNDS} runs, \
         ours beside the hand-rolled DashMap of tokio senders and the single-task (Theater-shaped) anchor"
    );

    // One-way, acked: every send's result is known to the producer.
    let total = args.messages * producers as u64;
    compare(
        &format!("one-way: {total} acked sends by {producers} producer tasks"),
        Spec::actors(actors),
        total,
        |f, n| f.one_way(producers, Mode::Acked, Full::Wait, n).elapsed,
    );
    // Request/response round trips, 1 and 4 concurrent requesters.
    for requesters in [1usize, 4] {
        let n = args.requests * requesters as u64;
        compare(
            &format!("request/response: {n} round trips by {requesters} requester task(s)"),
            Spec::actors(actors),
            n,
            |f, n| f.round_trips(requesters, n).elapsed,
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo-worker")
        .enable_time()
        .build()?;
    let mut builder = Router::builder();
    if let Some(n) = args.shards {
        builder = builder.shards(n);
    }
    let router = builder.build()?;
    println!("\nthe demo's router: {} shards", router.shard_count());

    // Actors: count one-way messages, answer requests with the payload reversed.
    let received = Arc::new(AtomicU64::new(0));
    let ids: Vec<ActorId> = (0..actors)
        .map(|_| {
            let (tx, mailbox) = router.mailbox();
            let id = ActorId::new();
            router.register(id, tx)?;
            let received = Arc::clone(&received);
            runtime.spawn(async move {
                while let Ok(msg) = mailbox.recv_async().await {
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

    // A request from a task, checked.
    let answer = runtime.block_on(router.request_async(ids[0], vec![1, 2, 3], Duration::from_secs(5)))?;
    println!("request to one actor answered {answer:?}");

    // Channel messages: one external client opens a channel to every actor, then
    // producer tasks send on them, waiting for room when a mailbox is full.
    let (endpoint, _client) = router.mailbox();
    let client = router.attach_external(endpoint)?;
    let channels: Vec<ChannelId> = ids
        .iter()
        .map(|&id| router.open_channel(client, id, Vec::new(), Duration::from_secs(5)).map(|c| c.id))
        .collect::<Result<_, _>>()?;
    let before = received.load(Ordering::Relaxed);
    let per_producer = args.messages / 2;
    let start = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let router = router.clone();
            let channels = channels.clone();
            runtime.spawn(async move {
                let mut refused = 0u64;
                for i in 0..per_producer {
                    let channel = channels[(i as usize + p * 31) % channels.len()];
                    let mut data = i.to_le_bytes().to_vec();
                    loop {
                        match router.channel_send(channel, client, data) {
                            Ok(()) => break,
                            Err(e) if e.kind() == SendErrorKind::MailboxFull => {
                                data = e.into_inner();
                                tokio::task::yield_now().await;
                            }
                            Err(_) => {
                                refused += 1;
                                break;
                            }
                        }
                    }
                    if i % 32 == 31 {
                        tokio::task::yield_now().await;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = runtime.block_on(async {
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap_or(0);
        }
        refused
    });
    let total = per_producer * producers as u64;
    while received.load(Ordering::Relaxed) - before + refused < total
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "channels: {} opened; {total} channel messages by {producers} producer tasks, {refused} refused: {}",
        channels.len(),
        rate(per_sec(total, start.elapsed())),
    );
    router.detach_external(client)?;

    // Registration churn on one thread.
    let start = Instant::now();
    for _ in 0..args.churn {
        let (tx, _mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx)?;
        router.unregister(id)?;
    }
    println!(
        "churn: {} register+unregister pairs: {}",
        args.churn,
        rate(per_sec(args.churn, start.elapsed()))
    );

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
