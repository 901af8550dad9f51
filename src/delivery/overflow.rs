//! The shard's side of the protocol: one FIFO overflow queue per actor whose
//! mailbox was full, moved into the mailbox as room appears.
//!
//! Owned by the shard thread; nothing here is shared. The shard never blocks on a
//! mailbox: it retries an actor's queue when a `Drain` notice says room appeared
//! (invariant 4), or when a new message arrives for it.

use std::collections::VecDeque;

use crate::error::RequestError;
use crate::ids::Participant;
use crate::inbox::{deliver_dead_letter, DeadLetterSink, Shared};
use crate::message::Queued;
use crate::metrics::{Counters, DeadLetter, DeadLetterReason};
use crate::registration::MailboxState;
use crate::sync::{Arc, HashMap, Ordering};
use crate::table::{self, Attempt, Entry};

/// One actor's parked messages, for its registration `state` as `who`.
struct Queue {
    who: Participant,
    state: Arc<MailboxState>,
    messages: VecDeque<Queued>,
    /// Not drained: the actor is suspended (invariant 7), or its mailbox was
    /// replaced and the queue waits to be moved (invariant 8). A held queue is
    /// kept even when empty.
    held: bool,
}

/// A shard's overflow queues, keyed by registration ([`table::key`]).
pub(crate) struct Overflow {
    shared: Arc<Shared>,
    dead_letters: Option<DeadLetterSink>,
    queues: HashMap<usize, Queue>,
    /// Messages in all queues (published as the shard's overflow depth).
    depth: usize,
}

impl Overflow {
    pub(crate) fn new(shared: Arc<Shared>, dead_letters: Option<DeadLetterSink>) -> Self {
        Self { shared, dead_letters, queues: HashMap::default(), depth: 0 }
    }

    /// A message posted by a sender (`Cmd::Deliver`): behind what is parked for
    /// the actor, or into its mailbox if nothing is.
    pub(crate) fn deliver(&mut self, who: Participant, state: Arc<MailboxState>, msg: Queued) {
        let key = table::key(&state);
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.messages.push_back(msg);
            self.depth += 1;
            self.drain(key);
            return;
        }
        match self.attempt(who, &state, msg) {
            Ok(Attempt::Delivered) => self.delivered(&state),
            Ok(Attempt::Full(msg)) => {
                tracing::debug!(actor = %who, shard = self.shared.index, "mailbox full: parking messages");
                self.park(who, state, msg, false);
            }
            Ok(Attempt::Closed(msg)) => self.undeliverable(who, &state, msg, DeadLetterReason::MailboxClosed),
            // Sent to a mailbox that has just been replaced: it waits for the
            // `Replace` behind it, which moves it to the new mailbox.
            Err(msg) if state.is_replaced() => self.park(who, state, msg, true),
            Err(msg) => {
                let reason = self.gone_reason();
                self.undeliverable(who, &state, msg, reason);
            }
        }
    }

    /// Starts a queue for registration `state` with `msg`.
    fn park(&mut self, who: Participant, state: Arc<MailboxState>, msg: Queued, held: bool) {
        self.queues.insert(table::key(&state), Queue { who, state, messages: VecDeque::from([msg]), held });
        self.depth += 1;
        self.publish_depth();
    }

    /// The actor `who` of `state` is suspended: its queue is held (invariant 7).
    pub(crate) fn suspend(&mut self, who: Participant, state: Arc<MailboxState>) {
        self.queues
            .entry(table::key(&state))
            .or_insert_with(|| Queue { who, state, messages: VecDeque::new(), held: false })
            .held = true;
    }

    /// The actor of `state` is resumed: its queue drains again, in order.
    pub(crate) fn resume(&mut self, state: &Arc<MailboxState>) {
        let key = table::key(state);
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.held = false;
            self.drain(key);
        }
    }

    /// The mailbox of `old` was replaced by that of registration `new` of `who`
    /// (invariant 8): what is left in the old mailbox, then the old queue, go to
    /// the head of the new queue, and the move is over.
    pub(crate) fn replace(&mut self, who: Participant, old: &Entry, new: Arc<MailboxState>) {
        let mut messages = VecDeque::new();
        while let Ok(msg) = old.rx.try_recv() {
            messages.push_back(msg);
        }
        let from_mailbox = messages.len();
        let mut from_queue = 0;
        if let Some(queue) = self.queues.remove(&old.key()) {
            from_queue = queue.messages.len();
            messages.extend(queue.messages);
        }
        self.shared.load.add_parked(from_mailbox);
        self.shared.counters.moved.fetch_add(from_mailbox as u64, Ordering::Relaxed);
        old.state.flow.moved_away(from_queue);
        self.depth += from_mailbox;
        let moved = messages.len();
        let key = table::key(&new);
        let mut held = new.flow.is_suspended();
        if let Some(queue) = self.queues.remove(&key) {
            held |= queue.held;
            messages.extend(queue.messages);
        }
        tracing::debug!(actor = %who, shard = self.shared.index, moved, "mailbox replaced");
        new.flow.end_move(moved);
        self.queues.insert(key, Queue { who, state: new, messages, held });
        self.drain(key);
    }

    /// Moves the parked messages of registration `key` into its mailbox until it
    /// is full again (a `Drain` notice, or a new message behind them).
    pub(crate) fn drain(&mut self, key: usize) {
        let Some(mut queue) = self.queues.remove(&key) else { return };
        if queue.held {
            self.queues.insert(key, queue);
            self.publish_depth();
            return;
        }
        let mut stopped = None;
        while let Some(msg) = queue.messages.pop_front() {
            match self.attempt(queue.who, &queue.state, msg) {
                Ok(Attempt::Delivered) => {
                    self.depth -= 1;
                    self.delivered(&queue.state);
                }
                Ok(Attempt::Full(msg)) => {
                    queue.messages.push_front(msg);
                    break;
                }
                Ok(Attempt::Closed(msg)) => {
                    queue.messages.push_front(msg);
                    stopped = Some(DeadLetterReason::MailboxClosed);
                    break;
                }
                Err(msg) => {
                    queue.messages.push_front(msg);
                    if queue.state.is_replaced() {
                        queue.held = true;
                    } else {
                        stopped = Some(self.gone_reason());
                    }
                    break;
                }
            }
        }
        match stopped {
            Some(reason) => self.discard(queue, reason),
            None if queue.messages.is_empty() && !queue.held => {}
            None => {
                self.queues.insert(key, queue);
            }
        }
        self.publish_depth();
    }

    /// The actor of registration `state` was unregistered: what is parked for it
    /// becomes dead letters with `reason` (requests and opens among them resolve,
    /// with their payload).
    pub(crate) fn unregistered(&mut self, state: &Arc<MailboxState>, reason: DeadLetterReason) {
        if let Some(queue) = self.queues.remove(&table::key(state)) {
            self.discard(queue, reason);
            self.publish_depth();
        }
    }

    /// Lets go of every queue: each message becomes a dead letter with `reason`.
    pub(crate) fn release_all(&mut self, reason: DeadLetterReason) {
        let queues: Vec<Queue> = self.queues.drain().map(|(_, q)| q).collect();
        for queue in queues {
            self.discard(queue, reason);
        }
        self.publish_depth();
    }

    /// A message that cannot be delivered: requests and opens get an outcome
    /// (with their payload back), one-way messages become dead letters. Either
    /// way it is settled (invariant 1).
    pub(crate) fn undeliverable(
        &self,
        who: Participant,
        state: &MailboxState,
        msg: Queued,
        reason: DeadLetterReason,
    ) {
        let outcome = match reason {
            DeadLetterReason::Shutdown => RequestError::Shutdown,
            DeadLetterReason::MailboxClosed => RequestError::MailboxClosed,
            DeadLetterReason::ShardFailed => RequestError::ShardFailed,
            DeadLetterReason::ShardFull => RequestError::ShardFull,
            DeadLetterReason::MailboxFull => RequestError::MailboxFull,
            DeadLetterReason::ActorNotFound | DeadLetterReason::Unregistered => RequestError::ActorNotFound,
        };
        let msg = msg.unpack();
        let channel_id = msg.channel_id();
        if let Some(data) = msg.undeliverable(outcome) {
            let letter = DeadLetter { target: who, channel_id, data, reason };
            deliver_dead_letter(&self.shared.counters, self.dead_letters.as_ref(), letter);
        }
        self.shared.load.settled(&state.flow);
    }

    /// Puts `msg` into the mailbox under the table's read lock, if `who` is
    /// still registered as `state` (invariant 3).
    fn attempt(&self, who: Participant, state: &Arc<MailboxState>, msg: Queued) -> Result<Attempt, Queued> {
        self.shared
            .table
            .with(
                &who,
                msg,
                |current, msg| if current.is(state) { Ok(current.try_put(msg)) } else { Err(msg) },
            )
            .and_then(|r| r)
    }

    fn gone_reason(&self) -> DeadLetterReason {
        if self.shared.closing.load(Ordering::SeqCst) {
            DeadLetterReason::Shutdown
        } else {
            DeadLetterReason::Unregistered
        }
    }

    fn delivered(&self, state: &MailboxState) {
        Counters::bump(&self.shared.counters.delivered_overflow);
        self.shared.load.settled(&state.flow);
    }

    /// Every parked message of one actor is undeliverable.
    fn discard(&mut self, queue: Queue, reason: DeadLetterReason) {
        self.depth -= queue.messages.len();
        for msg in queue.messages {
            self.undeliverable(queue.who, &queue.state, msg, reason);
        }
    }

    fn publish_depth(&self) {
        self.shared.counters.overflow_depth.store(self.depth, Ordering::Relaxed);
    }
}
