//! Our router against the hand-rolled `DashMap` of tokio senders, the single-task
//! anchor and the raw-channel limits (flume and tokio `mpsc`), and our router's
//! variants: ours-tokio (tokio-backed mailboxes) and ours-handle (sends through
//! handles resolved at setup).
//!
//! Every group runs the seven implementations on the same workload (ours-handle
//! is left out of channel messages and churn, where no handle applies, and the
//! raw hops out of churn); the workload
//! code is the `sharded-router bench` subcommand's (the `sharded-router-workloads`
//! crate, `workloads/`), so both report the same thing. How actors and producers run is
//! described there: all of them are tokio tasks on one two-worker runtime, and a run
//! is timed end to end, from the producers' start until every message is taken.
//!
//! One iteration is one message (one round trip, one register + unregister pair), so
//! `Throughput::Elements(1)` makes criterion report messages per second. Fixtures
//! (runtime, router, actors) are built once per benchmark, outside the timing, and
//! reused by every `iter_custom` call.
//!
//! Run: `cargo bench --bench router`; one group: `cargo bench --bench router -- 4_scale`.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput,
};

use sharded_router_workloads::{Fixture, Full, Impl, Mode, Spec};

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g
}

/// Group 1: one-way sends to 100 actors, acked (the producer waits for the route
/// result of each message) and fire-and-forget, from 2 and 4 producers.
fn one_way(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = Impl::ALL.iter().map(|&imp| Fixture::new(imp, Spec::actors(100))).collect();
    for (mode, name) in [(Mode::Acked, "1_one_way_acked"), (Mode::Tell, "1_one_way_tell")] {
        let mut g = group(c, name);
        for producers in [2usize, 4] {
            for (imp, fixture) in Impl::ALL.iter().zip(&fixtures) {
                g.bench_function(BenchmarkId::new(imp.name(), format!("{producers}_producers")), |b| {
                    b.iter_custom(|n| fixture.one_way(producers, mode, Full::Wait, n).elapsed)
                });
            }
        }
        g.finish();
    }
    if let Some(n) = fixtures[0].overflowed() {
        eprintln!("1_one_way/ours: {n} messages went through a shard's overflow queue (mailbox full)");
    }
}

/// Group 2: request/response round trips to 100 actors from 1 and 8 concurrent
/// requesters, each waiting for its answer before the next request.
fn request_response(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = Impl::ALL.iter().map(|&imp| Fixture::new(imp, Spec::actors(100))).collect();
    let mut g = group(c, "2_request_response");
    for requesters in [1usize, 8] {
        for (imp, fixture) in Impl::ALL.iter().zip(&fixtures) {
            g.bench_function(BenchmarkId::new(imp.name(), format!("{requesters}_requesters")), |b| {
                b.iter_custom(|n| fixture.round_trips(requesters, n).elapsed)
            });
        }
    }
    g.finish();
}

/// Group 3: acked channel messages from 2 producers on open channels, one to each of
/// 100 actors. Ours checks the sender against the channel table and delivers
/// straight into the mailbox; the anchor routes each message through its task, as
/// Theater does; the limit is the same raw flume hop as in group 1. Ours-handle has
/// no handle for a channel and is not run.
fn channel_messages(c: &mut Criterion) {
    let mut g = group(c, "3_channel_messages");
    for imp in Impl::ALL.into_iter().filter(|i| i.sends_in(Mode::Channel)) {
        let fixture = Fixture::new(imp, Spec::channels(100));
        g.bench_function(BenchmarkId::new(imp.name(), "2_producers"), |b| {
            b.iter_custom(|n| fixture.one_way(2, Mode::Channel, Full::Wait, n).elapsed)
        });
    }
    g.finish();
}

/// Group 4: acked sends from 2 producers to random actors among 100, 10k and 100k
/// registered.
fn scale(c: &mut Criterion) {
    let mut g = group(c, "4_scale");
    for actors in [100usize, 10_000, 100_000] {
        for imp in Impl::ALL {
            let fixture = Fixture::new(imp, Spec::actors(actors));
            g.bench_function(BenchmarkId::new(imp.name(), actors), |b| {
                b.iter_custom(|n| fixture.one_way(2, Mode::Acked, Full::Wait, n).elapsed)
            });
        }
    }
    g.finish();
}

/// Group 5: register + unregister pairs from one task, 100 actors registered. Ids and
/// mailboxes are made outside the timing. The raw channels have no registry, and
/// registering involves no handle (ours-handle would be ours again).
fn churn(c: &mut Criterion) {
    let mut g = group(c, "5_churn");
    for imp in Impl::ALL.into_iter().filter(|i| i.churns()) {
        let fixture = Fixture::new(imp, Spec::actors(100));
        g.bench_function(BenchmarkId::new(imp.name(), 100), |b| {
            b.iter_custom(|n| fixture.churn(n).expect("a registry to churn"))
        });
    }
    g.finish();
}

/// Group 8: Theater's shapes: acked sends from 2 producers to 1, 10, 100 and 1000
/// actors with mailboxes of 100, waiting for room when a mailbox is full (ours:
/// `send_async`). Theater states 500k, 100k, 80k and 50k msgs/s for these.
fn theater(c: &mut Criterion) {
    let mut g = group(c, "8_theater");
    for actors in [1usize, 10, 100, 1000] {
        for imp in Impl::ALL {
            let fixture = Fixture::new(imp, Spec::theater(actors));
            g.bench_function(BenchmarkId::new(imp.name(), actors), |b| {
                b.iter_custom(|n| fixture.one_way(2, Mode::Acked, Full::Await, n).elapsed)
            });
        }
    }
    g.finish();
}

/// Group 6: acked sends from 2 producers to 100 actors (mailboxes of 64), one of which
/// takes one message per millisecond. Ours parks up to 256 messages for it and then
/// refuses; the limit refuses when its channel is full; the anchor's task waits for
/// the slow mailbox, stalling every other send. Timed until every message to the 99
/// others is taken.
fn overflow(c: &mut Criterion) {
    let mut g = group(c, "6_overflow");
    for imp in Impl::ALL {
        let fixture = Fixture::new(imp, Spec::overflow());
        let (mut sent, mut refused) = (0u64, 0u64);
        g.bench_function(BenchmarkId::new(imp.name(), 100), |b| {
            b.iter_custom(|n| {
                let run = fixture.one_way(2, Mode::Acked, Full::Refuse, n);
                sent += n;
                refused += run.refused;
                run.elapsed
            })
        });
        eprintln!("6_overflow/{}: {refused} of {sent} sends refused", imp.name());
    }
    g.finish();
}

/// Group 7: back-pressure. Acked sends from 4 producers to 4 actors whose
/// mailboxes (8) and overflow bounds (8) keep filling, so producers wait for room:
/// ours awaits `send_async` (woken by the shard or the mailbox), the anchor's task
/// awaits tokio mpsc's `send().await` into the full mailbox, the limit awaits
/// flume's `send_async`. Nothing is refused or lost.
fn backpressure(c: &mut Criterion) {
    let mut g = group(c, "7_backpressure");
    for imp in Impl::ALL {
        let fixture = Fixture::new(imp, Spec::backpressure());
        g.bench_function(BenchmarkId::new(imp.name(), "4_producers"), |b| {
            b.iter_custom(|n| fixture.one_way(4, Mode::Acked, Full::Await, n).elapsed)
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = one_way, request_response, channel_messages, scale, churn, overflow, backpressure, theater
}
criterion_main!(benches);
