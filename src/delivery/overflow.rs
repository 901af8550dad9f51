//! The shard's side of the protocol: one FIFO overflow queue per actor whose
//! mailbox was full, moved into the mailbox as room appears.
//!
//! Owned by the shard thread; nothing here is shared. The shard never blocks on a
//! mailbox: it retries an actor's queue when a `Drain` notice says room appeared
//! (invariant 4), or when a new message arrives for it.

use std::collections::VecDeque;

use crate::error::RequestError;
use crate::inbox::{deliver_dead_letter, DeadLetterSink, Shared};
use crate::message::ActorMessage;
use crate::metrics::{Counters, DeadLetter, DeadLetterReason};
use crate::sync::{Arc, HashMap, Ordering};
use crate::table::{Attempt, Entry};

/// One actor's parked messages.
struct Queue {
    entry: Arc<Entry>,
    messages: VecDeque<ActorMessage>,
    /// Not drained: the actor is suspended (invariant 7), or its mailbox was
    /// replaced and the queue waits to be moved (invariant 8). A held queue is
    /// kept even when empty.
    held: bool,
}

/// A shard's overflow queues, keyed by registration ([`Entry::key`]).
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
    pub(crate) fn deliver(&mut self, entry: Arc<Entry>, msg: ActorMessage) {
        let key = entry.key();
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.messages.push_back(msg);
            self.depth += 1;
            self.drain(key);
            return;
        }
        match self.attempt(&entry, msg) {
            Ok(Attempt::Delivered) => self.delivered(&entry),
            Ok(Attempt::Full(msg)) => {
                tracing::debug!(actor = %entry.id, shard = self.shared.index, "mailbox full: parking messages");
                self.park(entry, msg, false);
            }
            Ok(Attempt::Closed(msg)) => self.undeliverable(&entry, msg, DeadLetterReason::MailboxClosed),
            // Sent to a mailbox that has just been replaced: it waits for the
            // `Replace` behind it, which moves it to the new mailbox.
            Err(msg) if entry.is_replaced() => self.park(entry, msg, true),
            Err(msg) => {
                let reason = self.gone_reason();
                self.undeliverable(&entry, msg, reason);
            }
        }
    }

    /// Starts a queue for `entry` with `msg`.
    fn park(&mut self, entry: Arc<Entry>, msg: ActorMessage, held: bool) {
        self.queues.insert(entry.key(), Queue { entry, messages: VecDeque::from([msg]), held });
        self.depth += 1;
        self.publish_depth();
    }

    /// The actor of `entry` is suspended: its queue is held (invariant 7).
    pub(crate) fn suspend(&mut self, entry: Arc<Entry>) {
        let key = entry.key();
        self.queues
            .entry(key)
            .or_insert_with(|| Queue { entry, messages: VecDeque::new(), held: false })
            .held = true;
    }

    /// The actor of `entry` is resumed: its queue drains again, in order.
    pub(crate) fn resume(&mut self, entry: &Entry) {
        let key = entry.key();
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.held = false;
            self.drain(key);
        }
    }

    /// The mailbox of `old` was replaced by that of `new` (invariant 8): what
    /// is left in the old mailbox, then the old queue, go to the head of the new
    /// queue, and the move is over.
    pub(crate) fn replace(&mut self, old: &Entry, new: Arc<Entry>) {
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
        let key = new.key();
        let mut held = new.state.flow.is_suspended();
        if let Some(queue) = self.queues.remove(&key) {
            held |= queue.held;
            messages.extend(queue.messages);
        }
        tracing::debug!(actor = %new.id, shard = self.shared.index, moved, "mailbox replaced");
        self.queues.insert(key, Queue { entry: Arc::clone(&new), messages, held });
        new.state.flow.end_move(moved);
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
            match self.attempt(&queue.entry, msg) {
                Ok(Attempt::Delivered) => {
                    self.depth -= 1;
                    self.delivered(&queue.entry);
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
                    if queue.entry.is_replaced() {
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

    /// The actor of `entry` was unregistered: what is parked for it becomes dead
    /// letters with `reason` (requests and opens among them resolve, with their
    /// payload).
    pub(crate) fn unregistered(&mut self, entry: &Entry, reason: DeadLetterReason) {
        if let Some(queue) = self.queues.remove(&entry.key()) {
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
    pub(crate) fn undeliverable(&self, entry: &Entry, msg: ActorMessage, reason: DeadLetterReason) {
        let outcome = match reason {
            DeadLetterReason::Shutdown => RequestError::Shutdown,
            DeadLetterReason::MailboxClosed => RequestError::MailboxClosed,
            DeadLetterReason::ShardFailed => RequestError::ShardFailed,
            DeadLetterReason::ShardFull => RequestError::ShardFull,
            DeadLetterReason::MailboxFull => RequestError::MailboxFull,
            DeadLetterReason::ActorNotFound | DeadLetterReason::Unregistered => RequestError::ActorNotFound,
        };
        let channel_id = msg.channel_id();
        if let Some(data) = msg.undeliverable(outcome) {
            let letter = DeadLetter { target: entry.id, channel_id, data, reason };
            deliver_dead_letter(&self.shared.counters, self.dead_letters.as_ref(), letter);
        }
        self.shared.load.settled(&entry.state.flow);
    }

    /// Puts `msg` into the mailbox under the table's read lock, if `entry` is
    /// still the registered one (invariant 3).
    fn attempt(&self, entry: &Arc<Entry>, msg: ActorMessage) -> Result<Attempt, ActorMessage> {
        self.shared
            .table
            .with(
                &entry.id,
                msg,
                |current, msg| {
                    if Arc::ptr_eq(current, entry) {
                        Ok(entry.try_put(msg))
                    } else {
                        Err(msg)
                    }
                },
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

    fn delivered(&self, entry: &Entry) {
        Counters::bump(&self.shared.counters.delivered_overflow);
        self.shared.load.settled(&entry.state.flow);
    }

    /// Every parked message of one actor is undeliverable.
    fn discard(&mut self, queue: Queue, reason: DeadLetterReason) {
        self.depth -= queue.messages.len();
        for msg in queue.messages {
            self.undeliverable(&queue.entry, msg, reason);
        }
    }

    fn publish_depth(&self) {
        self.shared.counters.overflow_depth.store(self.depth, Ordering::Relaxed);
    }
}
