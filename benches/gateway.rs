//! Requests per second through the management gateway over loopback TCP.
//!
//! One echo actor behind a gateway on 127.0.0.1; one client connection sends
//! requests either one at a time (round-trip latency bound) or with up to
//! `window` in flight (pipelined over the same connection).
//!
//! `cargo bench --bench gateway`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use sharded_router::gateway::{Client, ClientConfig, Server, ServerConfig};
use sharded_router::{ActorId, ActorMessage, Router};

fn start(rt: &tokio::runtime::Runtime) -> (Router, ActorId, Client) {
    let router = Router::builder().shards(2).build().expect("router");
    let (tx, mailbox) = router.mailbox();
    let echo = ActorId::new();
    router.register(echo, tx).expect("register");
    std::thread::spawn(move || {
        while let Ok(msg) = mailbox.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                let _ = reply.reply(data);
            }
        }
    });
    let client = rt.block_on(async {
        let config = ServerConfig::default().bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = Server::bind(router.clone(), config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(server.run());
        let (client, _events) = Client::connect(addr, ClientConfig::default()).await.expect("connect");
        client
    });
    (router, echo, client)
}

async fn run(client: &Client, echo: ActorId, n: u64, window: usize) -> Duration {
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < n || !in_flight.is_empty() {
        while sent < n && in_flight.len() < window {
            in_flight.push(client.request(echo, b"ping".to_vec(), Duration::from_secs(10)));
            sent += 1;
        }
        if let Some(reply) = in_flight.next().await {
            black_box(reply.expect("reply"));
        }
    }
    start.elapsed()
}

fn requests(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (router, echo, client) = start(&rt);
    let mut group = c.benchmark_group("gateway_requests");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for window in [1usize, 64] {
        group.bench_with_input(BenchmarkId::new("in_flight", window), &window, |b, &window| {
            b.iter_custom(|iters| rt.block_on(run(&client, echo, iters, window)));
        });
    }
    group.finish();
    drop(client);
    router.shutdown();
}

criterion_group!(benches, requests);
criterion_main!(benches);
