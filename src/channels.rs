//! The channel table and its rules.
//!
//! One concurrent map `ChannelId -> ChannelEntry`, shared by every shard. An entry
//! is created *opening* and either becomes *open* or is removed; an open entry is
//! removed by a close. Every transition is decided under the map's lock for that
//! entry, so exactly one of accept, reject, timeout, participant gone or shutdown
//! settles an opening channel, and a close removes a channel only after checking
//! that the caller takes part in it.
//!
//! Channel messages are checked and routed while the entry's read lock is held, so
//! once a close has removed the entry no further message on it is delivered.
//! Lock order: channel entry, then actor table — never the other way round.

use crate::error::{ChannelError, RequestFailed, SendErrorKind};
use crate::ids::{ChannelId, Participant};
use crate::metrics::{Counters, Striped};
use crate::registration::MailboxState;
use crate::slot::ReplySlot;
use crate::sync::{map::ConcurrentMap, Arc, AtomicBool, AtomicU64, Ordering};

/// One channel.
pub(crate) struct ChannelEntry {
    initiator: Participant,
    target: Participant,
    phase: Phase,
}

enum Phase {
    /// Waiting for the target's decision.
    Opening(Arc<OpenSlot>),
    /// Accepted; the participants' states are kept to unlink them on close.
    Open { initiator: Arc<MailboxState>, target: Arc<MailboxState> },
}

impl ChannelEntry {
    /// The other participant, if `who` takes part in the channel.
    pub(crate) fn peer_of(&self, who: Participant) -> Option<Participant> {
        if who == self.initiator {
            Some(self.target)
        } else if who == self.target {
            Some(self.initiator)
        } else {
            None
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// Checks that `sender` may use the open channel; returns the peer.
    pub(crate) fn check_open(&self, sender: Participant) -> Result<Participant, SendErrorKind> {
        let peer = self.peer_of(sender).ok_or(SendErrorKind::NotParticipant)?;
        if self.is_open() {
            Ok(peer)
        } else {
            Err(SendErrorKind::ChannelNotOpen)
        }
    }

    fn unlink(&self, channel: ChannelId) {
        match &self.phase {
            Phase::Opening(open) => {
                open.initiator_state.unlink_channel(channel);
                open.target_state.unlink_channel(channel);
            }
            Phase::Open { initiator, target } => {
                initiator.unlink_channel(channel);
                target.unlink_channel(channel);
            }
        }
    }
}

/// Counters of the channel table.
#[derive(Default)]
pub(crate) struct ChannelCounters {
    pub(crate) opened: AtomicU64,
    pub(crate) messages: Striped,
    pub(crate) rejected: AtomicU64,
}

/// The channel table.
pub(crate) struct ChannelTable {
    pub(crate) map: ConcurrentMap<ChannelId, ChannelEntry>,
    pub(crate) counters: ChannelCounters,
    /// Set at shutdown: no open is accepted after it.
    closed: AtomicBool,
}

/// What [`ChannelTable::settle_for_leaver`] found for one channel.
pub(crate) enum Leaving {
    /// Nothing to tell anyone (already gone, or an open that was resolved).
    Nothing,
    /// An open channel was removed: tell this peer.
    NotifyPeer(Participant),
}

impl ChannelTable {
    pub(crate) fn new() -> Self {
        Self {
            map: ConcurrentMap::new(),
            counters: ChannelCounters::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds an opening channel.
    pub(crate) fn insert_opening(&self, open: &Arc<OpenSlot>) {
        let entry = ChannelEntry {
            initiator: open.initiator,
            target: open.target,
            phase: Phase::Opening(Arc::clone(open)),
        };
        // A fresh 128-bit random id does not collide; if it ever did, the open
        // would simply resolve as not found when it tried to settle.
        let _ = self.map.insert_new(open.channel, entry);
    }

    /// Closes an open channel on behalf of `sender`, checking first that it takes
    /// part; on any error the channel is untouched. Returns the peer to notify.
    pub(crate) fn close(&self, channel: ChannelId, sender: Participant) -> Result<Participant, ChannelError> {
        self.map
            .with(&channel, (), |entry, ()| match entry.check_open(sender) {
                Ok(_) => Ok(()),
                Err(SendErrorKind::ChannelNotOpen) => Err(ChannelError::NotOpen),
                Err(_) => Err(ChannelError::NotParticipant),
            })
            .unwrap_or(Err(ChannelError::ChannelNotFound))?;
        let removed = self.map.remove_if(&channel, |e| e.is_open() && e.peer_of(sender).is_some());
        // Gone between the check and the removal: the other side closed first.
        let entry = removed.ok_or(ChannelError::ChannelNotFound)?;
        entry.unlink(channel);
        entry.peer_of(sender).ok_or(ChannelError::NotParticipant)
    }

    /// Settles one channel of a participant that is leaving (unregistered, or its
    /// endpoint detached): an opening channel resolves with `ParticipantNotFound`
    /// naming the leaver, an open one is removed and its peer must be told.
    pub(crate) fn settle_for_leaver(&self, channel: ChannelId, leaver: Participant) -> Leaving {
        // Phases only move forward (opening -> open -> gone), so this ends.
        loop {
            let phase = self.map.with(&channel, (), |entry, ()| match &entry.phase {
                Phase::Opening(open) => Some(Arc::clone(open)),
                Phase::Open { .. } => None,
            });
            match phase {
                Err(()) => return Leaving::Nothing,
                Ok(Some(open)) => {
                    if OpenSlot::decide(&open, Ok(OpenDecision::Left(leaver))) {
                        return Leaving::Nothing;
                    }
                }
                Ok(None) => {
                    if let Some(entry) = self.map.remove_if(&channel, ChannelEntry::is_open) {
                        entry.unlink(channel);
                        return entry.peer_of(leaver).map_or(Leaving::Nothing, Leaving::NotifyPeer);
                    }
                }
            }
        }
    }

    /// Empties the table of open channels at shutdown; from here on no open is
    /// accepted. Opening channels are left to the target's shard, which holds
    /// every open's deadline and resolves it with `Shutdown` as it stops — after
    /// discarding a parked `ChannelOpen`, so that its initial message is handed
    /// back to the initiator.
    pub(crate) fn clear(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for channel in self.map.keys_where(ChannelEntry::is_open) {
            if let Some(entry) = self.map.remove_if(&channel, ChannelEntry::is_open) {
                entry.unlink(channel);
            }
        }
    }
}

/// An opening channel's decision slot, shared by the initiator (who waits), the
/// target's [`ChannelOpenReply`](crate::ChannelOpenReply), the shard keeping the
/// deadline, and the channel entry.
pub(crate) struct OpenSlot {
    pub(crate) channel: ChannelId,
    pub(crate) initiator: Participant,
    pub(crate) target: Participant,
    pub(crate) initiator_state: Arc<MailboxState>,
    pub(crate) target_state: Arc<MailboxState>,
    pub(crate) slot: ReplySlot<OpenDecision>,
    table: Arc<ChannelTable>,
}

impl OpenSlot {
    pub(crate) fn new(
        channel: ChannelId,
        (initiator, initiator_state): (Participant, Arc<MailboxState>),
        (target, target_state): (Participant, Arc<MailboxState>),
        table: Arc<ChannelTable>,
    ) -> Arc<Self> {
        Arc::new(Self {
            channel,
            initiator,
            target,
            slot: ReplySlot::unshared(Some(Arc::clone(&target_state))),
            initiator_state,
            target_state,
            table,
        })
    }

    /// Settles the open with `outcome` if it is still opening: the table entry moves
    /// to open (accept) or is removed (anything else), then the initiator's wait
    /// completes. Only the first caller succeeds; the others get `false`.
    pub(crate) fn decide(this: &Arc<Self>, outcome: Result<OpenDecision, RequestFailed>) -> bool {
        let won = match &outcome {
            Ok(OpenDecision::Accepted(_)) => this
                .table
                .map
                .with_mut(&this.channel, |entry| match &entry.phase {
                    // Under the entry's lock: `clear` sets `closed` before it looks
                    // for open channels, so an accept either sees it or is seen.
                    Phase::Opening(open)
                        if Arc::ptr_eq(open, this) && !this.table.closed.load(Ordering::SeqCst) =>
                    {
                        entry.phase = Phase::Open {
                            initiator: Arc::clone(&this.initiator_state),
                            target: Arc::clone(&this.target_state),
                        };
                        true
                    }
                    _ => false,
                })
                .unwrap_or(false),
            _ => {
                let removed = this.table.map.remove_if(
                    &this.channel,
                    |e| matches!(&e.phase, Phase::Opening(open) if Arc::ptr_eq(open, this)),
                );
                match removed {
                    Some(entry) => {
                        entry.unlink(this.channel);
                        true
                    }
                    None => false,
                }
            }
        };
        if !won {
            return false;
        }
        match &outcome {
            Ok(OpenDecision::Accepted(_)) => Counters::bump(&this.table.counters.opened),
            Ok(OpenDecision::Rejected) => Counters::bump(&this.table.counters.rejected),
            Ok(OpenDecision::Left(_)) | Err(_) => {}
        }
        let _ = this.slot.complete(outcome);
        true
    }

    pub(crate) fn is_done(&self) -> bool {
        self.slot.is_done()
    }
}

/// The target's answer to a channel open.
pub(crate) enum OpenDecision {
    Accepted(Option<Vec<u8>>),
    Rejected,
    /// This participant went away before the target decided.
    Left(Participant),
}
