//! The hand-rolled baseline: what a user would write instead of a router.
//!
//! A `DashMap<ActorId, tokio::sync::mpsc::Sender>` of actor mailboxes. A send looks
//! the target up and calls `try_send` while holding the map's read guard; when the
//! mailbox is full it clones the sender, drops the guard and awaits `send()` (a guard
//! must not be held across an await). A request puts a tokio `oneshot` in the
//! message and awaits it under `tokio::time::timeout`. Channels are a second
//! `DashMap` from a channel id to its two participants, checked by the sender before
//! the message goes to the peer's mailbox, as ours checks its channel table.
//!
//! Messages are [`AnchorMessage`]s (the same enum the anchor's actors take), so the
//! actors of the anchor, the hand-rolled baseline and the raw tokio hop run the same
//! code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sharded_router::ActorId;
use tokio::sync::{mpsc, oneshot};

use crate::anchor::AnchorMessage;

/// Why a hand-rolled send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandError {
    NotFound,
    AlreadyRegistered,
    /// The mailbox is full and the caller asked not to wait.
    Full,
    Closed,
    NotParticipant,
    TimedOut,
    NoReply,
}

/// The registry and channel table.
#[derive(Default)]
pub struct HandRolled {
    actors: DashMap<ActorId, mpsc::Sender<AnchorMessage>>,
    channels: DashMap<u64, (ActorId, ActorId)>,
    next_channel: AtomicU64,
}

impl HandRolled {
    pub fn register(&self, id: ActorId, mailbox: mpsc::Sender<AnchorMessage>) -> Result<(), HandError> {
        match self.actors.entry(id) {
            Entry::Occupied(_) => Err(HandError::AlreadyRegistered),
            Entry::Vacant(slot) => {
                slot.insert(mailbox);
                Ok(())
            }
        }
    }

    pub fn unregister(&self, id: ActorId) -> Result<(), HandError> {
        self.actors.remove(&id).map(drop).ok_or(HandError::NotFound)
    }

    /// Delivers `message` to `target`: `try_send`, and when the mailbox is full either
    /// refuses (`wait == false`) or awaits `send()` on a clone of the sender.
    pub async fn deliver(
        &self,
        target: ActorId,
        message: AnchorMessage,
        wait: bool,
    ) -> Result<(), HandError> {
        let (message, sender) = {
            let Some(mailbox) = self.actors.get(&target) else {
                return Err(HandError::NotFound);
            };
            match mailbox.try_send(message) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(HandError::Closed),
                Err(mpsc::error::TrySendError::Full(_)) if !wait => return Err(HandError::Full),
                Err(mpsc::error::TrySendError::Full(message)) => (message, mailbox.clone()),
            }
        };
        sender.send(message).await.map_err(|_| HandError::Closed)
    }

    /// A one-way message.
    pub async fn send(&self, target: ActorId, data: Vec<u8>, wait: bool) -> Result<(), HandError> {
        self.deliver(target, AnchorMessage::Send { data }, wait).await
    }

    /// A request answered through a oneshot, awaited under `timeout`.
    pub async fn request(
        &self,
        target: ActorId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, HandError> {
        let (reply, answer) = oneshot::channel();
        self.deliver(target, AnchorMessage::Request { data, reply }, true).await?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(HandError::NoReply),
            Err(_) => Err(HandError::TimedOut),
        }
    }

    /// Records a channel between `initiator` and `target`; returns its id.
    pub fn open_channel(&self, initiator: ActorId, target: ActorId) -> u64 {
        let id = self.next_channel.fetch_add(1, Ordering::Relaxed) + 1;
        self.channels.insert(id, (initiator, target));
        id
    }

    /// A channel message from `sender` to the channel's other participant.
    pub async fn channel_send(
        &self,
        channel: u64,
        sender: ActorId,
        data: Vec<u8>,
        wait: bool,
    ) -> Result<(), HandError> {
        let peer = match self.channels.get(&channel).map(|c| *c) {
            Some((a, b)) if sender == a => b,
            Some((a, b)) if sender == b => a,
            Some(_) => return Err(HandError::NotParticipant),
            None => return Err(HandError::NotFound),
        };
        self.deliver(peer, AnchorMessage::ChannelMessage { channel, data }, wait).await
    }
}
