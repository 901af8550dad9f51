//! Registry cost per registered actor, in bytes, counted by a global allocator.
//!
//! Mailboxes and ids are made before counting starts, so their buffers are excluded:
//! what is counted is what registration itself allocates and keeps (for ours, the
//! table entry and the table's growth; for the anchor, its `HashMap` growth). The
//! figure is live bytes after registering N actors minus live bytes before, over N.
//!
//! Run: `cargo bench --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sharded_router::{ActorId, Router};
use sharded_router_workloads::anchor;

/// The system allocator, keeping a count of live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// (registry bytes per actor, mailbox bytes per actor) for our router.
fn ours(n: usize) -> (f64, f64) {
    let router = Router::builder().shards(2).build().expect("router");
    let before_mailboxes = live();
    let prepared: Vec<_> = (0..n).map(|_| (ActorId::new(), router.mailbox())).collect();
    let mut receivers = Vec::with_capacity(n);
    let mut pairs = Vec::with_capacity(n);
    for (id, (tx, rx)) in prepared {
        pairs.push((id, tx));
        receivers.push(rx);
    }
    let before = live();
    for (id, tx) in pairs {
        router.register(id, tx).expect("register");
    }
    let after = live();
    // The `pairs` vector was consumed and freed while counting; add its bytes back.
    let pairs_vec = (n * std::mem::size_of::<(ActorId, sharded_router::MailboxSender)>()) as isize;
    let registry = (after - before + pairs_vec) as f64 / n as f64;
    let mailbox = (before
        - before_mailboxes
        - pairs_vec
        - (n * std::mem::size_of::<sharded_router::Mailbox>()) as isize) as f64
        / n as f64;
    router.shutdown();
    drop(receivers);
    (registry, mailbox)
}

/// (registry bytes per actor, mailbox bytes per actor) for the anchor.
fn anchor(n: usize) -> (f64, f64) {
    use tokio::sync::mpsc;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let router = anchor::Anchor::start(runtime.handle());
    let before_mailboxes = live();
    let mut pairs = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel::<anchor::AnchorMessage>(1024);
        pairs.push((ActorId::new(), tx));
        receivers.push(rx);
    }
    let before = live();
    let registrar = router.clone();
    runtime
        .block_on(runtime.spawn(async move {
            for (id, tx) in pairs {
                registrar.register(id, tx).await.expect("register");
            }
        }))
        .expect("registrar");
    let after = live();
    let pairs_vec = (n * std::mem::size_of::<(ActorId, mpsc::Sender<anchor::AnchorMessage>)>()) as isize;
    let registry = (after - before + pairs_vec) as f64 / n as f64;
    let mailbox = (before
        - before_mailboxes
        - pairs_vec
        - (n * std::mem::size_of::<mpsc::Receiver<anchor::AnchorMessage>>()) as isize)
        as f64
        / n as f64;
    drop(router);
    drop(receivers);
    (registry, mailbox)
}

fn main() {
    println!("registry bytes per registered actor (mailbox excluded), counted by a global allocator");
    println!();
    println!("| actors | ours: registry | anchor: registry | ours: mailbox (excluded) | anchor: mailbox (excluded) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [1_000, 10_000, 100_000, 1_000_000] {
        let (ours_registry, ours_mailbox) = ours(n);
        let (anchor_registry, anchor_mailbox) = anchor(n);
        println!(
            "| {n} | {ours_registry:.1} B | {anchor_registry:.1} B | {ours_mailbox:.0} B | {anchor_mailbox:.0} B |"
        );
    }
}
