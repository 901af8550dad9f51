//! The concurrency seam.
//!
//! Every primitive the crate uses — atomics, `Arc`, locks, the mailbox and command
//! queues, the concurrent map, thread spawning and the clock — comes from this
//! module. Normal builds wrap `std`, `parking_lot`, `flume`, `crossbeam-channel`
//! and `dashmap` (and tokio's `mpsc` for the `tokio-mailbox` feature). Builds with
//! `--cfg loom` get stand-ins built from loom's primitives with the same method
//! names, so the routing code above this module is the same code under the model
//! checker (loom cannot see inside flume, tokio, crossbeam-channel or dashmap).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

pub(crate) use lock::{Condvar, Mutex, RwLock};

/// The plain (single-owner) hash map the crate keeps inside a thread or a lock.
/// Under loom its hasher is fixed, so that iterating it visits entries in the same
/// order on every run of a model (loom replays schedules and needs determinism).
/// Keys that are addresses (the shard's overflow queues) can still differ between
/// runs; the models park messages for one actor at a time.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, HashState>;

#[cfg(not(loom))]
pub(crate) type HashState = std::collections::hash_map::RandomState;
#[cfg(loom)]
pub(crate) type HashState = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Moves a `std::sync::Arc` into the seam's `Arc`. Unsized values (`dyn Fn`) are
/// made this way, since loom's `Arc` cannot coerce to an unsized type.
pub(crate) fn arc_from_std<T: ?Sized>(arc: std::sync::Arc<T>) -> Arc<T> {
    #[cfg(loom)]
    return Arc::from_std(arc);
    #[cfg(not(loom))]
    return arc;
}

#[cfg(not(loom))]
mod lock {
    use std::time::Instant;

    /// A mutex whose `lock` never fails (no poisoning).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// A reader-writer lock whose `read` and `write` never fail (no poisoning).
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(parking_lot::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> parking_lot::RwLockReadGuard<'_, T> {
            self.0.read()
        }

        pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            self.0.wait(guard);
        }

        /// Waits until notified or `deadline`; returns `true` if the deadline passed.
        pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) -> bool {
            self.0.wait_until(guard, deadline).timed_out()
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(loom)]
mod lock {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    /// Loom stand-in with the `parking_lot` calling convention.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard that can be handed to [`Condvar::wait`] by `&mut`.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap_or_else(|e| e.into_inner())))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard present")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard present")
        }
    }

    /// Loom stand-in with the `parking_lot` calling convention.
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// Loom stand-in. Loom does not model time: `wait_until` waits for a
    /// notification and reports whether the (mock) clock has passed the deadline.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard present");
            guard.0 = Some(self.0.wait(inner).unwrap_or_else(|e| e.into_inner()));
        }

        pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) -> bool {
            if super::time::now() >= deadline {
                return true;
            }
            self.wait(guard);
            super::time::now() >= deadline
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

/// The hasher for the crate's hash maps and shard selection: randomly keyed
/// normally, fixed under loom (a model must make the same choices on every run).
///
/// The key is drawn once per process from the operating system's source through
/// `uuid` (ahash's own `runtime-rng` would bring a second `getrandom`); each
/// instance then differs by a counter, as std's `RandomState` does.
pub(crate) fn random_state() -> ahash::RandomState {
    #[cfg(not(loom))]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;

        static KEY: OnceLock<[u64; 4]> = OnceLock::new();
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let [a, b, c, d] = *KEY.get_or_init(|| {
            let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
            let (c, d) = uuid::Uuid::new_v4().as_u64_pair();
            [a, b, c, d]
        });
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        ahash::RandomState::with_seeds(a, b, c, d.wrapping_add(instance))
    }
    #[cfg(loom)]
    return ahash::RandomState::with_seeds(1, 2, 3, 4);
}

mod id_hash;
pub(crate) use id_hash::IdHashState;

/// The clock. Under loom it is a mock that models advance explicitly.
pub(crate) mod time {
    use std::time::{Duration, Instant};

    /// The instant `timeout` from now, or `None` when that is past what an
    /// `Instant` can hold (`Duration::MAX`): no deadline at all. Every deadline in
    /// the crate is made here, so no `Instant + Duration` can overflow.
    pub(crate) fn deadline_in(timeout: Duration) -> Option<Instant> {
        now().checked_add(timeout)
    }

    #[cfg(not(loom))]
    pub(crate) fn now() -> Instant {
        Instant::now()
    }

    #[cfg(loom)]
    loom::lazy_static! {
        static ref BASE: Instant = Instant::now();
        static ref OFFSET_NANOS: loom::sync::atomic::AtomicU64 = loom::sync::atomic::AtomicU64::new(0);
    }

    /// Mock clock: a fixed base plus an offset that only [`advance`] moves.
    #[cfg(loom)]
    pub(crate) fn now() -> Instant {
        use loom::sync::atomic::Ordering;
        *BASE + std::time::Duration::from_nanos(OFFSET_NANOS.load(Ordering::SeqCst))
    }

    /// Moves the mock clock forward (loom builds only).
    #[cfg(loom)]
    pub fn advance(by: std::time::Duration) {
        use loom::sync::atomic::Ordering;
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        OFFSET_NANOS.fetch_add(nanos, Ordering::SeqCst);
    }
}

/// Thread spawning.
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) type JoinHandle = std::thread::JoinHandle<()>;
    #[cfg(loom)]
    pub(crate) type JoinHandle = loom::thread::JoinHandle<()>;

    /// Spawns a named thread (loom threads are unnamed).
    #[cfg(not(loom))]
    pub(crate) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle> {
        std::thread::Builder::new().name(name).spawn(f)
    }

    #[cfg(loom)]
    pub(crate) fn spawn(_name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle> {
        Ok(loom::thread::spawn(f))
    }

    /// The running thread's id.
    pub(crate) fn current_id() -> std::thread::ThreadId {
        std::thread::current().id()
    }

    /// The id of the thread behind `handle` (`None` under loom, whose threads the
    /// crate never needs to tell apart).
    #[cfg(not(loom))]
    pub(crate) fn id_of(handle: &JoinHandle) -> Option<std::thread::ThreadId> {
        Some(handle.thread().id())
    }

    #[cfg(loom)]
    pub(crate) fn id_of(_handle: &JoinHandle) -> Option<std::thread::ThreadId> {
        None
    }

    /// Runs a future to completion on this thread, parking it between polls.
    /// Used by the `blocking_*` calls, whose futures are woken by the router.
    #[cfg(not(loom))]
    pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);

        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }

            fn wake_by_ref(self: &Arc<Self>) {
                self.0.unpark();
            }
        }

        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(output) => return output,
                // A wake before the park leaves a token: the park returns at once.
                // Spurious returns just poll again.
                Poll::Pending => std::thread::park(),
            }
        }
    }

    #[cfg(loom)]
    pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
        loom::future::block_on(future)
    }
}

/// The actor mailbox: a bounded MPMC queue with blocking and async receives,
/// flume's by default (`flume_chan`).
///
/// Measured against tokio's `mpsc` in tokio tasks (`benches/mailbox.rs`,
/// BENCHMARKS.md): tokio's is 4.6x faster when every receive waits (flume
/// allocates a hook per wait, and its wake-up costs more), flume 2.7x faster
/// when messages queue up. Flume stays the default: the routing workloads are the
/// second shape, and it keeps the default build free of a runtime. The
/// `tokio-mailbox` feature adds tokio-backed mailboxes beside it.
#[cfg(all(not(loom), not(feature = "tokio-mailbox")))]
pub(crate) use flume_chan as chan;
#[cfg(not(loom))]
pub(crate) mod flume_chan;
#[cfg(not(loom))]
mod park;

/// With the `tokio-mailbox` feature a mailbox is a flume queue or a tokio-backed
/// one, chosen per mailbox ([`tokio_mailbox`](crate::tokio_mailbox)).
#[cfg(all(not(loom), feature = "tokio-mailbox"))]
pub(crate) use dual_chan as chan;
#[cfg(all(not(loom), feature = "tokio-mailbox"))]
pub(crate) mod dual_chan;
#[cfg(all(not(loom), feature = "tokio-mailbox"))]
mod tokio_chan;

#[cfg(loom)]
pub(crate) mod chan;

/// The shard command queue: unbounded, many producers, one thread receiving.
/// crossbeam-channel, which measured faster than flume for this shape (see
/// `benches/queue.rs` and BENCHMARKS.md). Under loom it is the same stand-in as
/// the mailbox.
#[cfg(not(loom))]
pub(crate) mod queue {
    pub(crate) use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, SendError, Sender};
}

#[cfg(loom)]
pub(crate) mod queue {
    pub(crate) use super::chan::{unbounded, Receiver, RecvTimeoutError, SendError, Sender};
}

/// The concurrent map used for actor-table partitions and the channel table.
#[cfg(not(loom))]
pub(crate) mod map {
    use std::hash::Hash;

    /// A concurrent hash map. Closures run while the entry's lock is held; they
    /// must not block.
    pub(crate) struct ConcurrentMap<K, V>(dashmap::DashMap<K, V, super::IdHashState>);

    impl<K: Eq + Hash, V> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self(dashmap::DashMap::with_hasher_and_shard_amount(super::IdHashState::new(), 16))
        }

        /// Runs `f` on the value for `key` under a read lock, passing `arg` along;
        /// hands `arg` back if the key is absent.
        pub(crate) fn with<A, R>(&self, key: &K, arg: A, f: impl FnOnce(&V, A) -> R) -> Result<R, A> {
            match self.0.get(key) {
                Some(guard) => Ok(f(guard.value(), arg)),
                None => Err(arg),
            }
        }

        pub(crate) fn contains(&self, key: &K) -> bool {
            self.0.contains_key(key)
        }

        /// Inserts unless present; hands the value back if the key is taken.
        pub(crate) fn insert_new(&self, key: K, value: V) -> Result<(), V> {
            match self.0.entry(key) {
                dashmap::mapref::entry::Entry::Occupied(_) => Err(value),
                dashmap::mapref::entry::Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            }
        }

        pub(crate) fn remove(&self, key: &K) -> Option<V> {
            self.0.remove(key).map(|(_, v)| v)
        }

        /// Removes `key` only if `pred` holds for its value, deciding under the lock.
        pub(crate) fn remove_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
            self.0.remove_if(key, |_, v| pred(v)).map(|(_, v)| v)
        }

        /// Runs `f` on the value for `key` under a write lock.
        pub(crate) fn with_mut<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
            self.0.get_mut(key).map(|mut guard| f(guard.value_mut()))
        }

        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }

        /// Removes and returns every value.
        pub(crate) fn drain(&self) -> Vec<V>
        where
            K: Clone,
        {
            let keys: Vec<K> = self.0.iter().map(|e| e.key().clone()).collect();
            keys.iter().filter_map(|k| self.remove(k)).collect()
        }

        /// Keys whose value satisfies `pred` (a snapshot; entries may change after).
        pub(crate) fn keys_where(&self, mut pred: impl FnMut(&V) -> bool) -> Vec<K>
        where
            K: Clone,
        {
            self.0.iter().filter(|e| pred(e.value())).map(|e| e.key().clone()).collect()
        }
    }
}

#[cfg(loom)]
pub(crate) mod map {
    use std::hash::Hash;

    use super::HashMap;

    /// Loom stand-in: a reader-writer lock around a `HashMap`. Lookups (`with`,
    /// `contains`, `len`, `keys_where`) share the read lock, so two of them can
    /// interleave inside their closures as they do under dashmap's shard read
    /// lock; changes (`insert_new`, `remove`, `remove_if`, `with_mut`, `drain`)
    /// take the write lock. One lock for the whole map is coarser than dashmap's
    /// per-shard locks, which only removes interleavings between different keys
    /// (the models use one or two keys per map).
    pub(crate) struct ConcurrentMap<K, V>(loom::sync::RwLock<HashMap<K, V>>);

    impl<K: Eq + Hash, V> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self(loom::sync::RwLock::new(HashMap::default()))
        }

        fn read(&self) -> loom::sync::RwLockReadGuard<'_, HashMap<K, V>> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        fn write(&self) -> loom::sync::RwLockWriteGuard<'_, HashMap<K, V>> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }

        /// Runs `f` on the value for `key` under the read lock, passing `arg` along;
        /// hands `arg` back if the key is absent.
        pub(crate) fn with<A, R>(&self, key: &K, arg: A, f: impl FnOnce(&V, A) -> R) -> Result<R, A> {
            let map = self.read();
            match map.get(key) {
                Some(v) => Ok(f(v, arg)),
                None => Err(arg),
            }
        }

        pub(crate) fn contains(&self, key: &K) -> bool {
            self.read().contains_key(key)
        }

        /// Inserts unless present; hands the value back if the key is taken.
        pub(crate) fn insert_new(&self, key: K, value: V) -> Result<(), V> {
            let mut map = self.write();
            if map.contains_key(&key) {
                return Err(value);
            }
            map.insert(key, value);
            Ok(())
        }

        // Same methods as the dashmap-backed map, used or not under loom.
        #[allow(dead_code)]
        pub(crate) fn remove(&self, key: &K) -> Option<V> {
            self.write().remove(key)
        }

        /// Removes `key` only if `pred` holds for its value, deciding under the lock.
        pub(crate) fn remove_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
            let mut map = self.write();
            if map.get(key).is_some_and(pred) {
                map.remove(key)
            } else {
                None
            }
        }

        /// Runs `f` on the value for `key` under the write lock.
        pub(crate) fn with_mut<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
            self.write().get_mut(key).map(f)
        }

        pub(crate) fn len(&self) -> usize {
            self.read().len()
        }

        /// Removes and returns every value (in the fixed hasher's order).
        pub(crate) fn drain(&self) -> Vec<V>
        where
            K: Clone,
        {
            // Taken out under the lock, dropped after it: a value's drop must not
            // run while the map is locked.
            let taken = std::mem::take(&mut *self.write());
            taken.into_values().collect()
        }

        /// Keys whose value satisfies `pred` (a snapshot; entries may change after).
        pub(crate) fn keys_where(&self, mut pred: impl FnMut(&V) -> bool) -> Vec<K>
        where
            K: Clone,
        {
            self.read().iter().filter(|(_, v)| pred(v)).map(|(k, _)| k.clone()).collect()
        }
    }
}
