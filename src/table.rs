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

use crate::ids::Participant;
use crate::mailbox::MailboxSender;
use crate::message::ActorMessage;
use crate::registration::MailboxState;
use crate::sync::{chan, map::ConcurrentMap, Arc, AtomicBool, Ordering};

/// One table partition.
pub(crate) type Table = ConcurrentMap<Participant, Arc<Entry>>;

/// A registered actor.
pub(crate) struct Entry {
    pub(crate) id: Participant,
    pub(crate) tx: chan::Sender<ActorMessage>,
    /// A receiving handle of the mailbox, used only by the shard to move what is
    /// left in it when the mailbox is replaced.
    pub(crate) rx: chan::Receiver<ActorMessage>,
    pub(crate) state: Arc<MailboxState>,
    /// Set (under the table's write lock) when another entry took this one's
    /// place with a new mailbox (see `delivery`, invariant 8).
    replaced: AtomicBool,
}

/// The outcome of one attempt to put a message into a mailbox.
pub(crate) enum Attempt {
    Delivered,
    Full(ActorMessage),
    Closed(ActorMessage),
}

impl Entry {
    pub(crate) fn new(id: Participant, mailbox: MailboxSender) -> Self {
        Self { id, tx: mailbox.tx, rx: mailbox.rx, state: mailbox.state, replaced: AtomicBool::new(false) }
    }

    /// `true` once a replacement took this entry's place.
    pub(crate) fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::SeqCst)
    }

    pub(crate) fn set_replaced(&self, replaced: bool) {
        self.replaced.store(replaced, Ordering::SeqCst);
    }

    /// A key for this registration, distinct from every other live registration.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.state) as usize
    }

    pub(crate) fn try_put(&self, msg: ActorMessage) -> Attempt {
        match self.tx.try_send(msg) {
            Ok(()) => Attempt::Delivered,
            Err(chan::TrySendError::Full(m)) => Attempt::Full(m),
            Err(chan::TrySendError::Disconnected(m)) => Attempt::Closed(m),
        }
    }
}
