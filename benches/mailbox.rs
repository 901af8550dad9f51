//! The mailbox channel in tokio tasks: flume 0.12's async receive (what
//! `Mailbox::recv_async` uses) against tokio's `mpsc`, with our mailbox through
//! the router beside them, with flume mailboxes (`ours`) and with tokio-backed
//! ones (`ours_tokio_mailbox`, `tokio_mailbox`). Two shapes, on a two-worker
//! multi-thread runtime:
//!
//! * **ping-pong**: two tasks pass one message back and forth, so every
//!   receive finds the channel empty and waits (registers a waker, is woken);
//! * **burst**: one task sends 1 024 messages as fast as it can, another
//!   receives them, so most receives find a message waiting.
//!
//! Besides the times, it prints heap allocations per message (a counting
//! global allocator): flume allocates a waker hook per receive that waits.
//!
//! `cargo bench --bench mailbox`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sharded_router::{ActorId, Router};
use tokio::runtime::Runtime;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BURST: u64 = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `n` round trips between two tasks over two flume channels.
async fn flume_ping_pong(n: u64) {
    let (to_b, b_rx) = flume::bounded::<u64>(1024);
    let (to_a, a_rx) = flume::bounded::<u64>(1024);
    let b = tokio::spawn(async move {
        while let Ok(v) = b_rx.recv_async().await {
            if to_a.send_async(v).await.is_err() {
                break;
            }
        }
    });
    for i in 0..n {
        to_b.send_async(i).await.unwrap();
        a_rx.recv_async().await.unwrap();
    }
    drop(to_b);
    b.await.unwrap();
}

async fn tokio_ping_pong(n: u64) {
    let (to_b, mut b_rx) = tokio::sync::mpsc::channel::<u64>(1024);
    let (to_a, mut a_rx) = tokio::sync::mpsc::channel::<u64>(1024);
    let b = tokio::spawn(async move {
        while let Some(v) = b_rx.recv().await {
            if to_a.send(v).await.is_err() {
                break;
            }
        }
    });
    for i in 0..n {
        to_b.send(i).await.unwrap();
        a_rx.recv().await.unwrap();
    }
    drop(to_b);
    b.await.unwrap();
}

/// A router whose `mailbox()` makes flume mailboxes, or tokio-backed ones.
fn router(tokio_mailboxes: bool) -> Router {
    Router::builder().shards(2).mailbox_capacity(1024).tokio_mailboxes(tokio_mailboxes).build().unwrap()
}

/// Round trips between two actors registered with a router: `try_send`, then
/// `Mailbox::recv_async`.
async fn ours_ping_pong(n: u64, tokio_mailboxes: bool) {
    let router = router(tokio_mailboxes);
    let (a, b) = (ActorId::new(), ActorId::new());
    let (a_tx, a_mailbox) = router.mailbox();
    let (b_tx, b_mailbox) = router.mailbox();
    router.register(a, a_tx).unwrap();
    router.register(b, b_tx).unwrap();
    let echo = {
        let router = router.clone();
        tokio::spawn(async move {
            while let Ok(msg) = b_mailbox.recv_async().await {
                if router.try_send(a, msg.data().to_vec()).is_err() {
                    break;
                }
            }
        })
    };
    for _ in 0..n {
        router.try_send(b, vec![0; 8]).unwrap();
        a_mailbox.recv_async().await.unwrap();
    }
    router.shutdown();
    echo.await.unwrap();
}

async fn flume_burst(n: u64) {
    let (tx, rx) = flume::bounded::<u64>(1024);
    let consumer = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            rx.recv_async().await.unwrap();
            got += 1;
        }
    });
    for i in 0..n {
        tx.send_async(i).await.unwrap();
    }
    consumer.await.unwrap();
}

async fn tokio_burst(n: u64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1024);
    let consumer = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            rx.recv().await.unwrap();
            got += 1;
        }
    });
    for i in 0..n {
        tx.send(i).await.unwrap();
    }
    consumer.await.unwrap();
}

async fn ours_burst(n: u64, tokio_mailboxes: bool) {
    let router = router(tokio_mailboxes);
    let id = ActorId::new();
    let (tx, mailbox) = router.mailbox();
    router.register(id, tx).unwrap();
    let consumer = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            mailbox.recv_async().await.unwrap();
            got += 1;
        }
    });
    for _ in 0..n {
        router.send_async(id, vec![0; 8]).await.unwrap();
    }
    consumer.await.unwrap();
    router.shutdown();
}

type Case = (&'static str, fn(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

fn cases(shape: &str) -> Vec<Case> {
    match shape {
        "ping_pong" => vec![
            ("flume", |n| Box::pin(flume_ping_pong(n))),
            ("tokio_mpsc", |n| Box::pin(tokio_ping_pong(n))),
            ("ours", |n| Box::pin(ours_ping_pong(n, false))),
            ("ours_tokio_mailbox", |n| Box::pin(ours_ping_pong(n, true))),
        ],
        _ => vec![
            ("flume", |n| Box::pin(flume_burst(n))),
            ("tokio_mpsc", |n| Box::pin(tokio_burst(n))),
            ("ours", |n| Box::pin(ours_burst(n, false))),
            ("ours_tokio_mailbox", |n| Box::pin(ours_burst(n, true))),
        ],
    }
}

fn mailbox_channel(c: &mut Criterion) {
    let rt = runtime();
    for shape in ["ping_pong", "burst"] {
        let mut group = c.benchmark_group(format!("mailbox_{shape}"));
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
        for (name, run) in cases(shape) {
            // Allocations per message, from one run of 10 000 (setup included,
            // so per-message figures below 0.01 are setup).
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            rt.block_on(run(10_000));
            let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
            eprintln!("{shape} {name}: {:.2} allocations per message", allocations as f64 / 10_000.0);
            group.bench_function(BenchmarkId::new(name, BURST), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    rt.block_on(run(iters.max(BURST)));
                    start.elapsed().mul_f64(iters as f64 / iters.max(BURST) as f64)
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, mailbox_channel);
criterion_main!(benches);
