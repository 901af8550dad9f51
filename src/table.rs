//! The sharded actor table and the caller-side data path.
//!
//! Each router shard owns one partition: a concurrent map from [`ActorId`] to the
//! actor's [`Entry`]. Callers read it directly; nobody waits for a shard thread.
//!
//! Every delivery into a mailbox — by a caller or by the shard — happens while the
//! table's read lock for that entry is held, and registration and unregistration
//! take the write lock. That makes the table write the linearization point: once
//! `unregister` has removed an entry, no message reaches its mailbox.

use crate::error::{SendError, SendErrorKind};
use crate::ids::Participant;
use crate::mailbox::MailboxState;
use crate::message::ActorMessage;
use crate::metrics::Counters;
use crate::shard::{Cmd, ShardHandle, Shared};
use crate::sync::{chan, map::ConcurrentMap, Arc, Ordering};

/// One table partition.
pub(crate) type Table = ConcurrentMap<Participant, Arc<Entry>>;

/// A registered actor.
pub(crate) struct Entry {
    pub(crate) id: Participant,
    pub(crate) tx: chan::Sender<ActorMessage>,
    pub(crate) state: Arc<MailboxState>,
}

/// The outcome of one attempt to put a message into a mailbox.
pub(crate) enum Attempt {
    Delivered,
    Full(ActorMessage),
    Closed(ActorMessage),
}

impl Entry {
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

    /// Routes `msg` to this actor. Called with the table read lock held.
    ///
    /// Fast path: nothing of this actor's is in flight through the shard, so the
    /// message goes straight into the mailbox and the ack is known here. Otherwise
    /// (mailbox full, or earlier messages still at the shard) the message is counted
    /// in flight and posted to the shard, behind everything posted before it.
    ///
    /// Two bounds apply to the slow path: `overflow_bound` messages in flight for
    /// this actor (`MailboxFull`), and the shard's cap for all its actors together
    /// (`ShardFull`). An `overflow_bound` of `usize::MAX` (close notices, which a
    /// peer must receive) is never refused; such messages still count toward the
    /// shard's cap. A failed shard refuses the slow path (`ShardFailed`).
    pub(crate) fn route(
        this: &Arc<Self>,
        msg: ActorMessage,
        shard: &ShardHandle,
        overflow_bound: usize,
    ) -> Result<(), SendError<ActorMessage>> {
        let counters = &shard.shared.counters;
        let in_flight = &this.state.in_flight;
        let msg = if in_flight.load(Ordering::SeqCst) == 0 {
            match this.try_put(msg) {
                Attempt::Delivered => {
                    counters.delivered_direct.bump();
                    return Ok(());
                }
                Attempt::Full(m) => m,
                Attempt::Closed(m) => return Err(SendError::new(SendErrorKind::MailboxClosed, m)),
            }
        } else {
            msg
        };
        if shard.shared.is_failed() {
            return Err(SendError::new(SendErrorKind::ShardFailed, msg));
        }
        let shared = &shard.shared;
        if in_flight.fetch_add(1, Ordering::SeqCst) >= overflow_bound {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Counters::bump(&counters.rejected);
            tracing::debug!(participant = %this.id, shard = shared.index, "mailbox full: message rejected");
            return Err(SendError::new(SendErrorKind::MailboxFull, msg));
        }
        if shared.parked.fetch_add(1, Ordering::SeqCst) >= shared.max_parked && overflow_bound != usize::MAX {
            shared.parked.fetch_sub(1, Ordering::SeqCst);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Counters::bump(&counters.rejected);
            tracing::debug!(participant = %this.id, shard = shared.index, "shard full: message rejected");
            return Err(SendError::new(SendErrorKind::ShardFull, msg));
        }
        // The only command posted here is a `Deliver`, so that is all a failed
        // post can hand back.
        if let Err(chan::SendError(Cmd::Deliver { msg, .. })) =
            shard.cmd.send(Cmd::Deliver { entry: Arc::clone(this), msg })
        {
            shared.parked.fetch_sub(1, Ordering::SeqCst);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let kind = if shared.is_failed() { SendErrorKind::ShardFailed } else { SendErrorKind::Shutdown };
            return Err(SendError::new(kind, msg));
        }
        Ok(())
    }

    /// One message of this actor's that went through the shard is settled
    /// (delivered or discarded): it is no longer in flight.
    pub(crate) fn settled(&self, shared: &Shared) {
        shared.parked.fetch_sub(1, Ordering::SeqCst);
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
