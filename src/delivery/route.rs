//! The sender's side of the protocol: direct into the mailbox, or through the
//! shard.

use crate::error::{SendError, SendErrorKind};
use crate::ids::Participant;
use crate::inbox::{Cmd, ShardHandle};
use crate::message::Queued;
use crate::metrics::Counters;
use crate::sync::{queue, Arc};
use crate::table::{Attempt, Entry};

use super::Refusal;

/// What a send does when the mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnFull {
    /// Park the message at the shard, within the bounds; refusals are counted.
    Park,
    /// The sender waits for room instead (a waiting send): while nothing of the
    /// actor's is in flight it waits for the mailbox itself, as a bounded
    /// channel's send does, and is woken by the receiver's take. With messages
    /// in flight it parks behind them as [`Park`](Self::Park) does (its order
    /// depends on it), and waits at the bound. Nothing it is refused is counted:
    /// it tries again.
    Wait,
}

/// Routes `msg` to `who`, registered as `entry`. Called with the table's read
/// lock for the entry held (invariant 3).
///
/// Fast path: nothing of the actor's is in flight, so the message goes straight
/// into the mailbox and the ack is known here. Otherwise (mailbox full, or earlier
/// messages still at the shard) the message is counted in flight and posted to the
/// shard, behind everything posted before it (invariants 1 and 2).
///
/// Two bounds apply to the slow path (invariant 5): `bound` messages in flight
/// for this actor (`MailboxFull`), and the shard's cap for all its actors together
/// (`ShardFull`). A failed shard refuses the slow path (`ShardFailed`).
pub(crate) fn route(
    who: Participant,
    entry: &Entry,
    msg: Queued,
    shard: &ShardHandle,
    bound: usize,
    on_full: OnFull,
) -> Result<(), SendError<Queued>> {
    let shared = &shard.shared;
    let flow = &entry.state.flow;
    let msg = if flow.direct() {
        match entry.try_put(msg) {
            Attempt::Delivered => {
                shared.counters.delivered_direct.bump();
                return Ok(());
            }
            Attempt::Full(m) if on_full == OnFull::Wait => {
                return Err(SendError::new(SendErrorKind::MailboxFull, m));
            }
            Attempt::Full(m) => m,
            Attempt::Closed(m) => return Err(SendError::new(SendErrorKind::MailboxClosed, m)),
        }
    } else {
        msg
    };
    if shared.is_failed() {
        return Err(SendError::new(SendErrorKind::ShardFailed, msg));
    }
    if let Err(refusal) = shared.load.admit(flow, bound) {
        if on_full == OnFull::Park {
            Counters::bump(&shared.counters.rejected);
        }
        let kind = match refusal {
            Refusal::MailboxFull => SendErrorKind::MailboxFull,
            Refusal::ShardFull => SendErrorKind::ShardFull,
        };
        tracing::debug!(participant = %who, shard = shared.index, ?kind, "message refused");
        return Err(SendError::new(kind, msg));
    }
    // The only command posted here is a `Deliver`, so that is all a failed post
    // can hand back.
    if let Err(queue::SendError(Cmd::Deliver { msg, .. })) =
        shard.cmd.send(Cmd::Deliver { who, state: Arc::clone(&entry.state), msg })
    {
        shared.load.unadmit(flow);
        let kind = if shared.is_failed() { SendErrorKind::ShardFailed } else { SendErrorKind::Shutdown };
        return Err(SendError::new(kind, msg));
    }
    Ok(())
}
