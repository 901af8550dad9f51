//! The demo's hot-reload phase: an actor's instance is swapped `swaps` times
//! (suspend → stop the old instance → replace the mailbox → start the new one →
//! resume) while producers send it numbered messages; then every message is
//! accounted for.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sharded_router::{ActorId, ActorMessage, Mailbox, Router, TryRecvError};

/// What the instances received, and what the producers sent.
pub struct Tally {
    pub swaps: usize,
    pub producers: usize,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub moved: u64,
    pub elapsed: Duration,
}

/// One instance: takes messages until told to stop; records `(producer, seq)`.
fn instance(mailbox: Mailbox, stop: Arc<AtomicBool>) -> thread::JoinHandle<(Vec<(u32, u64)>, Mailbox)> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match mailbox.recv_timeout(Duration::from_millis(1)) {
                Ok(ActorMessage::Send { data }) if data.len() == 12 => {
                    let producer = u32::from_le_bytes(data[..4].try_into().unwrap_or_default());
                    let seq = u64::from_le_bytes(data[4..].try_into().unwrap_or_default());
                    seen.push((producer, seq));
                }
                Ok(_) | Err(TryRecvError::Empty) => {}
                Err(_) => break,
            }
        }
        (seen, mailbox)
    })
}

pub fn run(
    router: &Router,
    swaps: usize,
    producers: usize,
    per_producer: u64,
) -> Result<Tally, Box<dyn Error>> {
    let start = Instant::now();
    let (tx, first) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx)?;
    let moved_before = router.metrics().total().moved;

    let senders: Vec<_> = (0..producers)
        .map(|p| {
            let router = router.clone();
            thread::spawn(move || {
                let mut sent = 0u64;
                for seq in 0..per_producer {
                    let mut data = (p as u32).to_le_bytes().to_vec();
                    data.extend_from_slice(&seq.to_le_bytes());
                    if router.blocking_send(id, data).is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();

    let mut seen = Vec::new();
    let mut stop = Arc::new(AtomicBool::new(false));
    let mut running = instance(first, Arc::clone(&stop));
    let pause = Duration::from_micros(200);
    for _ in 0..swaps {
        thread::sleep(pause);
        router.suspend(id)?;
        stop.store(true, Ordering::SeqCst);
        let (records, old) = running.join().map_err(|_| "an instance panicked")?;
        seen.extend(records);
        let (tx, next) = router.mailbox();
        router.replace_mailbox(id, tx)?;
        drop(old);
        stop = Arc::new(AtomicBool::new(false));
        running = instance(next, Arc::clone(&stop));
        router.resume(id)?;
    }
    let sent: u64 = senders.into_iter().map(|s| s.join().unwrap_or(0)).sum();
    // Let the last instance take what is still on its way (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < sent && Instant::now() < deadline {
        router.flush();
        thread::sleep(Duration::from_millis(5));
        if router.metrics().total().overflow_depth == 0 {
            break;
        }
    }
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let (records, last) = running.join().map_err(|_| "an instance panicked")?;
    seen.extend(records);
    while let Ok(msg) = last.try_recv() {
        if let ActorMessage::Send { data } = msg {
            let producer = u32::from_le_bytes(data[..4].try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(data[4..].try_into().unwrap_or_default());
            seen.push((producer, seq));
        }
    }
    router.unregister(id)?;

    // Per producer: the next sequence number expected.
    let mut next = vec![0u64; producers];
    let mut received = vec![std::collections::HashSet::new(); producers];
    let (mut duplicated, mut reordered) = (0u64, 0u64);
    for (p, seq) in seen {
        let p = p as usize;
        if !received[p].insert(seq) {
            duplicated += 1;
        } else if seq != next[p] {
            reordered += 1;
        }
        next[p] = next[p].max(seq + 1);
    }
    let unique: u64 = received.iter().map(|r| r.len() as u64).sum();
    Ok(Tally {
        swaps,
        producers,
        sent,
        lost: sent.saturating_sub(unique),
        duplicated,
        reordered,
        moved: router.metrics().total().moved - moved_before,
        elapsed: start.elapsed(),
    })
}
