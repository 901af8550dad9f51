//! The routing core: the state every caller, mailbox and the shutdown path share
//! (`Inner`: the shards, the channel table, the closed flag), the routing of one
//! message to a participant, registration and its end, and stopping the shards
//! (`Owner`, which the last [`Router`](crate::Router) clone drops).

use std::task::Waker;

use crate::channels::{ChannelTable, Leaving};
use crate::delivery::route::{route, OnFull};
use crate::error::{RegisterError, RequestError, SendError, SendErrorKind};
use crate::ids::{ActorId, Participant};
use crate::inbox::{Cmd, DeadLetterSink, ShardHandle};
use crate::mailbox::MailboxSender;
use crate::message::Queued;
use crate::metrics::DeadLetterReason;
use crate::registration::{MailboxState, Registrar};
use crate::sync::{thread, Arc, AtomicBool, Mutex, Ordering};
use crate::table::{Door, Entry};

/// Why a suspend, resume or replace did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Halt {
    NotFound,
    MailboxClosed,
    ShardFailed,
    Shutdown,
}

/// Where a sender waiting for room is registered (see [`Inner::route_or_wait`]).
#[derive(Default)]
pub(crate) struct Waiting {
    /// In the wait list of this registration's flow, under this ticket.
    actor: Option<(Arc<MailboxState>, u64)>,
    /// In the wait list of the shard with this index, under this ticket.
    shard: Option<(usize, u64)>,
}

/// What became of a message routed by [`Inner::route_or_wait`].
pub(crate) enum Routed {
    /// Refused for want of room; the sender is registered to be woken.
    Wait(Queued),
    /// Refused for good.
    Failed(SendError<Queued>),
}

/// What a node of a cluster (the `cluster` module, feature `nats`) is told about
/// this router's registrations. Set once per router; never consulted on the send
/// path (remote actors are reached through registrations of their own).
pub(crate) trait ClusterHook: Send + Sync {
    /// A local actor was registered.
    fn registered(&self, id: ActorId);
    /// A local actor's registration ended.
    fn unregistered(&self, id: ActorId);
    /// `id` is registered here as the route to an actor of another node.
    fn is_remote(&self, id: ActorId) -> bool;
}

/// The routing core: what callers, mailboxes and the shutdown path share.
pub(crate) struct Inner {
    pub(crate) shards: Box<[ShardHandle]>,
    pub(crate) channels: Arc<ChannelTable>,
    pub(crate) hasher: crate::sync::IdHashState,
    pub(crate) closed: AtomicBool,
    pub(crate) mailbox_capacity: usize,
    /// Makes the mailboxes of [`Router::mailbox`](crate::Router::mailbox).
    pub(crate) make_mailbox: crate::mailbox::MakeMailbox,
    pub(crate) overflow_bound: usize,
    pub(crate) dead_letters: Option<DeadLetterSink>,
    /// Entries taken out of the tables at shutdown. Their mailbox senders are
    /// dropped only after the shards have stopped (see [`Owner::shutdown`]).
    pub(crate) drained: Mutex<Vec<Entry>>,
    /// The cluster this router joined, if any.
    pub(crate) cluster: std::sync::OnceLock<std::sync::Arc<dyn ClusterHook>>,
}

impl Inner {
    pub(crate) fn shard(&self, id: &Participant) -> &ShardHandle {
        let n = self.shards.len();
        // `n` is at least 1 (checked at build); the modulo keeps the index in range.
        let index = (self.hasher.hash_one(id) % n as u64) as usize;
        &self.shards[index]
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Routes `msg` to a participant, parking up to `bound` messages at its shard.
    pub(crate) fn route(&self, to: Participant, msg: Queued, bound: usize) -> Result<(), SendError<Queued>> {
        let shard = self.shard(&to);
        // `closed` is read under the table lock: shutdown sets it before emptying
        // the tables, so an entry that a racing `register` inserts after that (and
        // then removes again) never takes a message.
        shard
            .shared
            .table
            .with(&to, msg, |entry, msg| {
                if self.is_closed() {
                    return Err(SendError::new(SendErrorKind::Shutdown, msg));
                }
                route(to, entry, msg, shard, bound, OnFull::Park)
            })
            .unwrap_or_else(|msg| {
                let kind =
                    if self.is_closed() { SendErrorKind::Shutdown } else { SendErrorKind::ActorNotFound };
                Err(SendError::new(kind, msg))
            })
    }

    /// [`route`](Self::route) for a sender that waits for room (see
    /// `OnFull::Wait`): when the message is refused for want of room (a full
    /// mailbox with nothing parked, the overflow bound, the shard's bound), the
    /// sender's `waker` is registered where room will be announced — the actor's
    /// or the shard's wait list — and the message tried once more (invariant 6 of
    /// `delivery`). `Wait` hands the message back: the waker will be woken when
    /// room appears, the actor leaves or the router shuts down.
    pub(crate) fn route_or_wait(
        &self,
        to: Participant,
        msg: Queued,
        bound: usize,
        waker: &Waker,
        waiting: &mut Waiting,
    ) -> Result<(), Routed> {
        let shard = self.shard(&to);
        shard
            .shared
            .table
            .with(&to, msg, |entry, msg| self.route_or_wait_to(shard, to, entry, msg, bound, waker, waiting))
            .unwrap_or_else(|msg| Err(Routed::Failed(self.gone(msg))))
    }

    /// [`route_or_wait`](Self::route_or_wait) to `to`'s `entry`, found in
    /// `shard`'s table or through a handle's gate, whose lock is held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_or_wait_to(
        &self,
        shard: &ShardHandle,
        to: Participant,
        entry: &Entry,
        mut msg: Queued,
        bound: usize,
        waker: &Waker,
        waiting: &mut Waiting,
    ) -> Result<(), Routed> {
        loop {
            if self.is_closed() {
                return Err(Routed::Failed(SendError::new(SendErrorKind::Shutdown, msg)));
            }
            let refused = match route(to, entry, msg, shard, bound, OnFull::Wait) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match refused.kind() {
                SendErrorKind::MailboxFull if waiting.actor.is_none() => {
                    let ticket = entry.state.flow.waiters.register(waker);
                    waiting.actor = Some((Arc::clone(&entry.state), ticket));
                }
                SendErrorKind::ShardFull if waiting.shard.is_none() => {
                    waiting.shard = Some((shard.shared.index, shard.shared.load.waiters.register(waker)));
                }
                SendErrorKind::MailboxFull | SendErrorKind::ShardFull => {
                    return Err(Routed::Wait(refused.into_inner()));
                }
                _ => return Err(Routed::Failed(refused)),
            }
            msg = refused.into_inner();
        }
    }

    /// The error for a message whose target is not registered.
    pub(crate) fn gone(&self, msg: Queued) -> SendError<Queued> {
        let kind = if self.is_closed() { SendErrorKind::Shutdown } else { SendErrorKind::ActorNotFound };
        SendError::new(kind, msg)
    }

    /// Withdraws the registrations of a sender that no longer waits.
    pub(crate) fn stop_waiting(&self, waiting: &mut Waiting) {
        if let Some((state, ticket)) = waiting.actor.take() {
            state.flow.waiters.remove(ticket);
        }
        if let Some((index, ticket)) = waiting.shard.take() {
            if let Some(shard) = self.shards.get(index) {
                shard.shared.load.waiters.remove(ticket);
            }
        }
    }

    /// The registration state of a participant.
    pub(crate) fn state_of(&self, who: Participant) -> Option<Arc<MailboxState>> {
        self.shard(&who).shared.table.with(&who, (), |entry, ()| Arc::clone(&entry.state)).ok()
    }

    pub(crate) fn add(
        this: &Arc<Self>,
        who: Participant,
        mailbox: MailboxSender,
    ) -> Result<(), RegisterError> {
        if this.is_closed() {
            return Err(RegisterError::Shutdown);
        }
        let shard = this.shard(&who);
        if shard.shared.is_failed() {
            return Err(RegisterError::ShardFailed);
        }
        if mailbox.state.receivers() == 0 {
            return Err(RegisterError::MailboxClosed);
        }
        let state = Arc::clone(&mailbox.state);
        // Linked before the insert: once sends can reach the mailbox, its
        // receiver must be able to tell the shard that room appeared.
        state.link(who, registrar(this));
        let entry = Entry::new(mailbox);
        let key = entry.key();
        if shard.shared.table.insert_new(who, entry).is_err() {
            state.reset_link();
            return Err(match who {
                Participant::Actor(id) if this.cluster.get().is_some_and(|c| c.is_remote(id)) => {
                    RegisterError::OnAnotherNode(id)
                }
                Participant::Actor(id) => RegisterError::AlreadyRegistered(id),
                Participant::External(id) => RegisterError::ExternalIdInUse(id),
            });
        }
        // Raced with shutdown. The insert took effect and sends may already have
        // put messages into the mailbox, so the registration succeeded; it ends
        // with the shutdown. Shutdown's table sweep may have run before the insert
        // (then nothing reached the entry: sends check `closed` under the table
        // lock), so take the entry out here if it is still ours; either way the
        // mailbox disconnects.
        if this.is_closed() {
            if let Some(entry) = shard.shared.table.remove_if(&who, |e| e.key() == key) {
                if let Some(gate) = entry.existing_gate() {
                    gate.close();
                }
                entry.state.unlink(RequestError::Shutdown);
            }
        }
        // The last receiver went away while registering, before the insert: its
        // drop found nothing to remove, so end the registration here.
        if state.receivers() == 0 {
            this.mailbox_dropped(who, &state);
        }
        tracing::trace!(participant = %who, shard = shard.shared.index, "registered");
        if let (Participant::Actor(id), Some(cluster)) = (who, this.cluster.get()) {
            cluster.registered(id);
        }
        Ok(())
    }

    /// Removes a participant: from here on nothing reaches its mailbox and no
    /// answer to its requests is accepted. Its channels are closed (peers get
    /// `ChannelClose`), opens it takes part in resolve, and the shard is told
    /// about anything still in flight (what was parked becomes dead letters with
    /// `reason`). `Err` if `who` is not registered or `is_current` rejects the
    /// registration found.
    pub(crate) fn remove(
        &self,
        who: Participant,
        is_current: impl FnOnce(&Entry) -> bool,
        reason: DeadLetterReason,
    ) -> Result<(), ()> {
        let shard = self.shard(&who);
        let entry = shard.shared.table.remove_if(&who, is_current).ok_or(())?;
        // Handles too: from here on no put is in progress or can start.
        if let Some(gate) = entry.existing_gate() {
            gate.close();
        }
        let Entry { state, .. } = &entry;
        state.unlink(RequestError::ActorNotFound);
        // Senders waiting for room try again, and find the actor gone.
        state.flow.waiters.wake_all();
        for channel in state.take_channels() {
            if let Leaving::NotifyPeer(peer) = self.channels.settle_for_leaver(channel, who) {
                let _ = self.route(peer, Queued::channel_close(channel), usize::MAX);
            }
        }
        // Table readers are done with the entry (the removal took the write lock),
        // so these counts can only fall from here.
        if state.flow.has_in_flight() || state.may_have_requests() {
            let _ = shard.cmd.send(Cmd::Unregistered(Arc::clone(state), reason));
        }
        // The table's sender goes with the entry (the gate's went as it closed):
        // once the mailbox is emptied, its receivers find it disconnected.
        drop(entry);
        tracing::trace!(participant = %who, shard = shard.shared.index, "unregistered");
        if let (Participant::Actor(id), Some(cluster)) = (who, self.cluster.get()) {
            cluster.unregistered(id);
        }
        Ok(())
    }

    /// Why a participant was not found: shutdown empties the tables.
    fn not_found(&self) -> Halt {
        if self.is_closed() {
            Halt::Shutdown
        } else {
            Halt::NotFound
        }
    }

    /// Runs `f` on `who`'s shard and table slot under the entry's write lock
    /// and its handle gate's (if it has one, passed as its door): no put into
    /// the mailbox is in progress, every later one sees what `f` did, and a
    /// command `f` posts is ahead of any message sent after it.
    fn with_slot<R>(
        &self,
        who: Participant,
        f: impl FnOnce(&ShardHandle, &mut Entry, Option<&mut Door>) -> Result<R, Halt>,
    ) -> Result<R, Halt> {
        let shard = self.shard(&who);
        shard
            .shared
            .table
            .with_mut(&who, |slot| {
                if self.is_closed() {
                    return Err(Halt::Shutdown);
                }
                let gate = slot.existing_gate();
                let mut door = gate.as_ref().map(|g| g.hold());
                f(shard, slot, door.as_deref_mut())
            })
            .unwrap_or_else(|| Err(self.not_found()))
    }

    /// Suspends `who` (see `delivery`, invariant 7). `Ok(false)`: it already was.
    pub(crate) fn suspend(&self, who: Participant) -> Result<bool, Halt> {
        self.with_slot(who, |shard, entry, _door| {
            if shard.shared.is_failed() {
                return Err(Halt::ShardFailed);
            }
            if !entry.state.flow.suspend() {
                return Ok(false);
            }
            if shard.cmd.send(Cmd::Suspend(who, Arc::clone(&entry.state))).is_err() {
                entry.state.flow.resume();
                return Err(if shard.shared.is_failed() { Halt::ShardFailed } else { Halt::Shutdown });
            }
            Ok(true)
        })
    }

    /// Resumes `who`: the shard delivers what it held, in order, then sends
    /// flow as before. `Ok(false)`: it was not suspended.
    pub(crate) fn resume(&self, who: Participant) -> Result<bool, Halt> {
        self.with_slot(who, |shard, entry, _door| {
            if !entry.state.flow.resume() {
                return Ok(false);
            }
            // A failed shard holds nothing any more (it let go of its queues).
            let _ = shard.cmd.send(Cmd::Resume(Arc::clone(&entry.state)));
            Ok(true)
        })
    }

    /// Makes `mailbox` the mailbox of `who` (see `delivery`, invariant 8): the
    /// registration goes on — channels, requests, suspension — and the shard
    /// moves what the old mailbox still holds, then what is parked, ahead of
    /// anything sent from now on.
    pub(crate) fn replace(this: &Arc<Self>, who: Participant, mailbox: MailboxSender) -> Result<(), Halt> {
        if this.is_closed() {
            return Err(Halt::Shutdown);
        }
        if mailbox.state.receivers() == 0 {
            return Err(Halt::MailboxClosed);
        }
        let shard = this.shard(&who);
        let state = Arc::clone(&mailbox.state);
        // Linked before the swap, as at registration: once sends can reach the
        // mailbox, its receiver must be able to tell the shard of room.
        state.link(who, registrar(this));
        let new = Entry::new(mailbox);
        let swapped = this.with_slot(who, |shard, slot, door| {
            if shard.shared.is_failed() {
                return Err(Halt::ShardFailed);
            }
            let new_state = Arc::clone(&new.state);
            // Every send to the new entry goes through the shard until the
            // move is over; the old one's suspension carries over.
            new_state.flow.begin_move(slot.state.flow.is_suspended());
            let old = std::mem::replace(slot, new);
            let old_state = Arc::clone(&old.state);
            // Posted under the lock: ahead of any message sent to `new`. The
            // shard, finding `old` no longer in the table, keeps its messages
            // for the move: the hand-over below marks it replaced before the
            // lock is let go.
            let replace = Cmd::Replace { who, old: old.clone(), new: Arc::clone(&new_state) };
            if shard.cmd.send(replace).is_err() {
                *slot = old;
                return Err(Halt::ShardFailed);
            }
            drop(old);
            // Handles of the old registration follow it to the new mailbox.
            if let Some(door) = door {
                if let Some(gate) = slot.gate() {
                    *door = Door::Moved(gate);
                }
            }
            old_state.hand_over_to(&new_state);
            // Senders waiting on the old flow try again, on the new entry.
            old_state.flow.waiters.wake_all();
            Ok(())
        });
        if let Err(halt) = swapped {
            state.reset_link();
            return Err(halt);
        }
        tracing::debug!(participant = %who, shard = shard.shared.index, "mailbox replaced");
        // The new mailbox's last receiver went away during the swap: its drop
        // found nothing to unregister, so end the registration here.
        if state.receivers() == 0 {
            this.mailbox_dropped(who, &state);
        }
        Ok(())
    }

    /// Starts the shutdown, once: later calls fail with `Shutdown`, the tables
    /// are emptied (nobody can post to a shard after its `Shutdown`: posts happen
    /// under a table read lock), opening channels resolve, and every shard is told
    /// to stop. Waits for nothing.
    fn begin_shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(shards = self.shards.len(), "router shutting down");
        for shard in self.shards.iter() {
            shard.shared.closing.store(true, Ordering::SeqCst);
        }
        let mut drained = Vec::new();
        for shard in self.shards.iter() {
            // Registrations end before their entries leave the table: a mailbox
            // dropped meanwhile finds no entry to remove and lets its queue go,
            // and the requests in it must resolve with `Shutdown`, not be
            // answered `NoReply` by a registration that still looks alive.
            let table = &shard.shared.table;
            for who in table.keys_where(|_| true) {
                let _ = table.with(&who, (), |entry, ()| entry.state.unlink(RequestError::Shutdown));
            }
            for entry in shard.shared.table.drain() {
                if let Some(gate) = entry.existing_gate() {
                    gate.close();
                }
                entry.state.unlink(RequestError::Shutdown);
                entry.state.flow.waiters.wake_all();
                drained.push(entry);
            }
            shard.shared.load.waiters.wake_all();
        }
        self.drained.lock().append(&mut drained);
        self.channels.clear();
        for shard in self.shards.iter() {
            let _ = shard.cmd.send(Cmd::Shutdown);
        }
    }
}

/// `this` as the registrar a registration reaches its router through.
#[cfg(not(loom))]
fn registrar(this: &Arc<Inner>) -> Arc<dyn Registrar> {
    Arc::clone(this) as Arc<dyn Registrar>
}

/// Loom's `Arc` cannot coerce to a trait object: the registrar is a forwarding
/// value made in a `std::sync::Arc` and moved into the seam's `Arc`.
#[cfg(loom)]
fn registrar(this: &Arc<Inner>) -> Arc<dyn Registrar> {
    struct Forward(Arc<Inner>);

    impl Registrar for Forward {
        fn post_drain(&self, who: Participant, state: &Arc<MailboxState>) -> bool {
            self.0.post_drain(who, state)
        }

        fn mailbox_dropped(&self, who: Participant, state: &Arc<MailboxState>) {
            self.0.mailbox_dropped(who, state);
        }
    }

    crate::sync::arc_from_std(std::sync::Arc::new(Forward(Arc::clone(this))))
}

impl Registrar for Inner {
    fn post_drain(&self, who: Participant, state: &Arc<MailboxState>) -> bool {
        self.shard(&who).cmd.send(Cmd::Drain(Arc::clone(state))).is_ok()
    }

    /// The last receiving half of `who`'s mailbox was dropped: the actor can take
    /// nothing more, so it is unregistered (if `state` is still its registration).
    fn mailbox_dropped(&self, who: Participant, state: &Arc<MailboxState>) {
        let current = |entry: &Entry| entry.is(state);
        if self.remove(who, current, DeadLetterReason::MailboxClosed).is_ok() {
            tracing::warn!(participant = %who, "mailbox dropped while registered: unregistered");
        }
    }
}

/// Owns the shard threads; the last [`Router`] clone dropping it shuts the router
/// down.
pub(crate) struct Owner {
    pub(crate) inner: Arc<Inner>,
    /// Held by a caller of [`shutdown`](Self::shutdown) until the threads are
    /// joined, so that concurrent callers all wait for the same end.
    pub(crate) threads: Mutex<Vec<thread::JoinHandle>>,
    pub(crate) thread_ids: Vec<std::thread::ThreadId>,
}

impl Owner {
    /// Stops every shard and joins its thread. Every call returns only after the
    /// shards have stopped (requests resolved, parked messages dead-lettered) and
    /// the mailboxes have been let go — except a call from one of the router's
    /// own shard threads (a dead-letter sink), which cannot wait for itself: it
    /// starts the shutdown and returns.
    pub(crate) fn shutdown(&self) {
        if self.thread_ids.contains(&thread::current_id()) {
            self.inner.begin_shutdown();
            return;
        }
        let mut threads = self.threads.lock();
        self.inner.begin_shutdown();
        for t in threads.drain(..) {
            let _ = t.join();
        }
        // The mailbox senders go last. A mailbox whose receiver is gone drops its
        // queued messages with its last sender, and their reply handles would
        // settle requests and opens as unanswered (`NoReply`, `Rejected`) before
        // the channel table and the shards resolve them with `Shutdown`.
        let drained = std::mem::take(&mut *self.inner.drained.lock());
        drop(drained);
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
