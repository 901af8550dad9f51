//! The sharded actor table.
//!
//! Each router shard owns one partition: a concurrent map from
//! [`Participant`] to the actor's [`Entry`]. Callers read it directly; nobody waits
//! for a shard thread.
//!
//! Every delivery into a mailbox — by a caller or by the shard — happens while the
//! table's read lock for that entry is held, and registration and unregistration
//! take the write lock. That makes the table write the linearization point: once
//! `unregister` has removed an entry, no message reaches its mailbox (see
//! `delivery`).
//!
//! An [`ActorHandle`](crate::ActorHandle) reaches its entry without the table,
//! through the registration's [`Gate`]: the same rule with a lock of the entry's
//! own. Its sends put under the gate's read lock; whatever takes the table's
//! write lock for the entry (unregistration, suspend, resume, replace, shutdown)
//! also takes the gate's write lock, or closes the gate, before it returns.

use crate::ids::Participant;
use crate::mailbox::MailboxSender;
use crate::message::Queued;
use crate::registration::MailboxState;
use crate::sync::{chan, map::ConcurrentMap, Arc, RwLock};

/// One table partition. The entries live in the map's own buckets: a send reads
/// the mailbox's sender beside its key and goes from there to the registration
/// (its in-flight count) and the queue, with no allocation of the table's own
/// between them.
pub(crate) type Table = ConcurrentMap<Participant, Entry>;

/// A registered actor: its mailbox's two ends and its registration. Cloned
/// only where the mailbox must be reached outside the table: a handle's gate,
/// a replaced mailbox on its way to the shard, the entries held until shutdown
/// ends. The mailbox disconnects when the last clone goes.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) tx: chan::Sender<Queued>,
    /// A receiving handle of the mailbox, used only by the shard to move what is
    /// left in it when the mailbox is replaced.
    pub(crate) rx: chan::Receiver<Queued>,
    pub(crate) state: Arc<MailboxState>,
}

/// The outcome of one attempt to put a message into a mailbox.
pub(crate) enum Attempt {
    Delivered,
    Full(Queued),
    Closed(Queued),
}

impl Entry {
    pub(crate) fn new(mailbox: MailboxSender) -> Self {
        Self { tx: mailbox.tx, rx: mailbox.rx, state: mailbox.state }
    }

    /// A key for this registration, distinct from every other live registration.
    pub(crate) fn key(&self) -> usize {
        key(&self.state)
    }

    /// `true` if this entry is the registration `state`.
    pub(crate) fn is(&self, state: &Arc<MailboxState>) -> bool {
        Arc::ptr_eq(&self.state, state)
    }

    pub(crate) fn try_put(&self, msg: Queued) -> Attempt {
        match self.tx.try_send(msg) {
            Ok(()) => Attempt::Delivered,
            Err(chan::TrySendError::Full(m)) => Attempt::Full(m),
            Err(chan::TrySendError::Disconnected(m)) => Attempt::Closed(m),
        }
    }
}

/// The key of registration `state` (see [`Entry::key`]).
pub(crate) fn key(state: &Arc<MailboxState>) -> usize {
    Arc::as_ptr(state) as usize
}

/// Where a registration's handles reach its entry (see the module docs). Made
/// with the first handle; the table's rules then apply to it too.
pub(crate) struct Gate {
    door: RwLock<Door>,
}

/// What a handle finds behind the gate.
pub(crate) enum Door {
    /// The registration's entry, registered.
    Open(Entry),
    /// The mailbox was replaced: the registration goes on behind this gate.
    Moved(Arc<Gate>),
    /// The registration ended (unregistered, the mailbox dropped, shutdown).
    Closed,
}

impl Gate {
    /// Runs `f` on the entry the gate leads to under its read lock (following
    /// the moves of replaced mailboxes), passing `arg` along; hands `arg` back if
    /// the registration ended.
    pub(crate) fn with<A, R>(&self, arg: A, f: impl FnOnce(&Entry, A) -> R) -> Result<R, A> {
        let mut next: Option<Arc<Gate>> = None;
        loop {
            let gate = next.as_deref().unwrap_or(self);
            let door = gate.door.read();
            let moved = match &*door {
                Door::Open(entry) => return Ok(f(entry, arg)),
                Door::Closed => return Err(arg),
                Door::Moved(to) => Arc::clone(to),
            };
            drop(door);
            next = Some(moved);
        }
    }

    /// Ends the registration for handles: once this returns, no handle send is
    /// in progress and none will reach the entry. Waits only for sends already
    /// inside (none of which blocks).
    pub(crate) fn close(&self) {
        self.set(Door::Closed);
    }

    fn set(&self, door: Door) {
        let old = std::mem::replace(&mut *self.door.write(), door);
        // Dropped outside the lock.
        drop(old);
    }

    /// Keeps handle sends out while the returned guard lives, for a change made
    /// under the table's write lock (suspend, resume, replace), which may
    /// change the door.
    pub(crate) fn hold(&self) -> impl std::ops::DerefMut<Target = Door> + '_ {
        self.door.write()
    }
}

impl Entry {
    /// The gate of this entry's registration, made on the first call. Called with
    /// the entry in the table (under its read or write lock), so a removal, which
    /// takes the write lock and then closes the gate, cannot miss it.
    pub(crate) fn gate(&self) -> Option<Arc<Gate>> {
        self.state.gate_or_insert_with(|| Arc::new(Gate { door: RwLock::new(Door::Open(self.clone())) }))
    }

    /// The gate of this entry's registration, if a handle made one.
    pub(crate) fn existing_gate(&self) -> Option<Arc<Gate>> {
        self.state.gate::<Arc<Gate>>()
    }
}
