//! A send through an `ActorHandle` (no table lookup) against the same send
//! through the router's table, one thread, to actors chosen round robin; each
//! send is followed by the actor's `try_recv`, so the mailboxes never fill and
//! every send takes the fast path. The difference between the two is the
//! lookup: hashing the id, the table's shard lock and the probe.
//!
//! `cargo bench --bench handle`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sharded_router::{ActorHandle, ActorId, Mailbox, Router};

fn setup(actors: usize) -> (Router, Vec<ActorId>, Vec<ActorHandle>, Vec<Mailbox>) {
    let router = Router::builder().shards(2).mailbox_capacity(64).build().unwrap();
    let mut ids = Vec::new();
    let mut handles = Vec::new();
    let mut mailboxes = Vec::new();
    for _ in 0..actors {
        let id = ActorId::new();
        let (tx, mailbox) = router.mailbox();
        router.register(id, tx).unwrap();
        handles.push(router.handle(id).unwrap());
        ids.push(id);
        mailboxes.push(mailbox);
    }
    (router, ids, handles, mailboxes)
}

fn handle_vs_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("handle_vs_table");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(2));
    for actors in [100usize, 100_000] {
        let (router, ids, handles, mailboxes) = setup(actors);
        group.bench_with_input(BenchmarkId::new("table", actors), &actors, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                router.try_send(ids[i], vec![0; 8]).unwrap();
                black_box(mailboxes[i].try_recv().unwrap());
                i = (i + 1) % n;
            });
        });
        group.bench_with_input(BenchmarkId::new("handle", actors), &actors, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                handles[i].try_send(vec![0; 8]).unwrap();
                black_box(mailboxes[i].try_recv().unwrap());
                i = (i + 1) % n;
            });
        });
        drop(handles);
        router.shutdown();
    }
    group.finish();
}

criterion_group!(benches, handle_vs_table);
criterion_main!(benches);
