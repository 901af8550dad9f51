//! The shard command queue: unbounded, many producers, one consumer on its own
//! thread that blocks when the queue is empty (as a shard does). flume against
//! crossbeam-channel (which the router uses, on these figures), the same workload
//! for both.
//!
//! `cargo bench --bench queue`

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Messages per producer in one timed run.
const PER_PRODUCER: u64 = 20_000;

/// A command-sized message (the router posts an `Arc` and an enum of 40 bytes).
type Msg = [u64; 5];

/// `producers` threads send `PER_PRODUCER` messages each through one queue made
/// by `make`; one consumer receives them all. Returns the time from the start of
/// sending to the last receive.
fn run<S, R>(
    producers: u64,
    make: impl Fn() -> (S, R),
    send: fn(&S, Msg),
    recv: fn(&R) -> Option<Msg>,
) -> Duration
where
    S: Clone + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = make();
    let total = producers * PER_PRODUCER;
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for _ in 0..total {
            match recv(&rx) {
                Some(m) => sum = sum.wrapping_add(m[0]),
                None => break,
            }
        }
        black_box(sum);
    });
    let start = Instant::now();
    let senders: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    send(&tx, [p, i, 0, 0, 0]);
                }
            })
        })
        .collect();
    drop(tx);
    for s in senders {
        s.join().expect("producer");
    }
    consumer.join().expect("consumer");
    start.elapsed()
}

fn shard_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_queue");
    group.sample_size(20);
    for producers in [1u64, 2, 4] {
        group.throughput(Throughput::Elements(producers * PER_PRODUCER));
        group.bench_with_input(BenchmarkId::new("flume", producers), &producers, |b, &n| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(
                            n,
                            flume::unbounded::<Msg>,
                            |tx, m| tx.send(m).expect("receiver alive"),
                            |rx| rx.recv().ok(),
                        )
                    })
                    .sum()
            });
        });
        group.bench_with_input(BenchmarkId::new("crossbeam", producers), &producers, |b, &n| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(
                            n,
                            crossbeam_channel::unbounded::<Msg>,
                            |tx, m| tx.send(m).expect("receiver alive"),
                            |rx| rx.recv().ok(),
                        )
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, shard_queue);
criterion_main!(benches);
