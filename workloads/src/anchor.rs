//! The anchor: a single-task router in the shape of Theater's `MessageRouter`.
//!
//! One tokio task owns `HashMap<ActorId, mpsc::Sender<AnchorMessage>>` and takes every
//! command from one tokio `mpsc` queue of 10 000. For a routed message it looks the
//! target up, awaits the mailbox's `send` (so one full mailbox stalls routing for
//! everyone, as in Theater) and answers the command's oneshot with the outcome. A
//! request carries a second oneshot for the answer, which goes from the actor straight
//! back to the requester. Mailboxes are bounded tokio `mpsc` channels; actors are
//! tokio tasks.
//!
//! Channels are kept as Theater keeps them: a table in the router task mapping a
//! channel id to its two participants. A channel message goes through the task, which
//! looks the channel up and awaits the other participant's mailbox. Opening a channel
//! here only records it (Theater's task also awaits the target's accept, which the
//! channel-message benchmark does not measure).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use sharded_router::ActorId;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the router's command queue, as in Theater.
pub const COMMAND_QUEUE: usize = 10_000;

/// What an anchor actor receives.
pub enum AnchorMessage {
    /// A one-way message.
    Send { data: Vec<u8> },
    /// A request; the answer goes to `reply`.
    Request { data: Vec<u8>, reply: oneshot::Sender<Vec<u8>> },
    /// A message on a channel.
    ChannelMessage { channel: u64, data: Vec<u8> },
}

/// Why an anchor command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorError {
    NotFound,
    AlreadyRegistered,
    MailboxClosed,
    RouterGone,
    NoReply,
}

type Ack = oneshot::Sender<Result<(), AnchorError>>;

enum Command {
    Register { id: ActorId, mailbox: mpsc::Sender<AnchorMessage>, ack: Ack },
    Unregister { id: ActorId, ack: Ack },
    Route { target: ActorId, message: AnchorMessage, ack: Ack },
    OpenChannel { initiator: ActorId, target: ActorId, ack: oneshot::Sender<Result<u64, AnchorError>> },
    ChannelMessage { channel: u64, sender: ActorId, data: Vec<u8>, ack: Ack },
}

/// A handle to the router task. Cheap to clone.
#[derive(Clone)]
pub struct Anchor {
    commands: mpsc::Sender<Command>,
}

impl Anchor {
    /// Spawns the router task on `runtime`. It ends when every handle is dropped.
    pub fn start(runtime: &Handle) -> Self {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        runtime.spawn(run(rx));
        Self { commands }
    }

    /// Posts a command and waits for the router's answer.
    async fn call(&self, command: impl FnOnce(Ack) -> Command) -> Result<(), AnchorError> {
        let (ack, outcome) = oneshot::channel();
        self.commands.send(command(ack)).await.map_err(|_| AnchorError::RouterGone)?;
        outcome.await.unwrap_or(Err(AnchorError::RouterGone))
    }

    pub async fn register(
        &self,
        id: ActorId,
        mailbox: mpsc::Sender<AnchorMessage>,
    ) -> Result<(), AnchorError> {
        self.call(|ack| Command::Register { id, mailbox, ack }).await
    }

    pub async fn unregister(&self, id: ActorId) -> Result<(), AnchorError> {
        self.call(|ack| Command::Unregister { id, ack }).await
    }

    /// A one-way message; waits for the route result (as Theater's host functions do).
    pub async fn send(&self, target: ActorId, data: Vec<u8>) -> Result<(), AnchorError> {
        self.call(|ack| Command::Route { target, message: AnchorMessage::Send { data }, ack }).await
    }

    /// A one-way message, fire-and-forget: posts the command and drops the result.
    pub async fn tell(&self, target: ActorId, data: Vec<u8>) -> Result<(), AnchorError> {
        let (ack, _ignored) = oneshot::channel();
        let message = AnchorMessage::Send { data };
        self.commands.send(Command::Route { target, message, ack }).await.map_err(|_| AnchorError::RouterGone)
    }

    /// Records a channel between `initiator` and `target`; returns its id.
    pub async fn open_channel(&self, initiator: ActorId, target: ActorId) -> Result<u64, AnchorError> {
        let (ack, outcome) = oneshot::channel();
        self.commands
            .send(Command::OpenChannel { initiator, target, ack })
            .await
            .map_err(|_| AnchorError::RouterGone)?;
        outcome.await.unwrap_or(Err(AnchorError::RouterGone))
    }

    /// A channel message from `sender`; waits for the route result.
    pub async fn channel_send(
        &self,
        channel: u64,
        sender: ActorId,
        data: Vec<u8>,
    ) -> Result<(), AnchorError> {
        self.call(|ack| Command::ChannelMessage { channel, sender, data, ack }).await
    }

    /// A request: waits for the route result, then for the actor's answer.
    pub async fn request(&self, target: ActorId, data: Vec<u8>) -> Result<Vec<u8>, AnchorError> {
        let (reply, answer) = oneshot::channel();
        self.call(|ack| Command::Route { target, message: AnchorMessage::Request { data, reply }, ack })
            .await?;
        answer.await.map_err(|_| AnchorError::NoReply)
    }
}

/// The router loop: every command, in order, on one task.
async fn run(mut commands: mpsc::Receiver<Command>) {
    let mut actors: HashMap<ActorId, mpsc::Sender<AnchorMessage>> = HashMap::new();
    let mut channels: HashMap<u64, (ActorId, ActorId)> = HashMap::new();
    let mut next_channel = 0u64;
    while let Some(command) = commands.recv().await {
        match command {
            Command::Register { id, mailbox, ack } => {
                let outcome = match actors.entry(id) {
                    Entry::Occupied(_) => Err(AnchorError::AlreadyRegistered),
                    Entry::Vacant(slot) => {
                        slot.insert(mailbox);
                        Ok(())
                    }
                };
                let _ = ack.send(outcome);
            }
            Command::Unregister { id, ack } => {
                let _ = ack.send(actors.remove(&id).map(drop).ok_or(AnchorError::NotFound));
            }
            Command::Route { target, message, ack } => {
                let outcome = match actors.get(&target) {
                    Some(mailbox) => mailbox.send(message).await.map_err(|_| AnchorError::MailboxClosed),
                    None => Err(AnchorError::NotFound),
                };
                let _ = ack.send(outcome);
            }
            Command::OpenChannel { initiator, target, ack } => {
                next_channel += 1;
                channels.insert(next_channel, (initiator, target));
                let _ = ack.send(Ok(next_channel));
            }
            Command::ChannelMessage { channel, sender, data, ack } => {
                let peer = channels.get(&channel).map(|&(a, b)| if sender == a { b } else { a });
                let outcome = match peer.and_then(|p| actors.get(&p)) {
                    Some(mailbox) => mailbox
                        .send(AnchorMessage::ChannelMessage { channel, data })
                        .await
                        .map_err(|_| AnchorError::MailboxClosed),
                    None => Err(AnchorError::NotFound),
                };
                let _ = ack.send(outcome);
            }
        }
    }
}
