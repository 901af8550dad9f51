//! The actors: one task per actor, taking messages with its implementation's async
//! receive and draining with `try_recv` while messages wait. They count one-way
//! messages (and, in a latency run, record how long each took) and echo requests.

use std::time::Duration;

use sharded_router::{ActorMessage, Mailbox, TryRecvError};
use tokio::sync::mpsc;

use crate::anchor::AnchorMessage;
use crate::sink::Tally;

/// A slow actor takes one message per this long.
const SLOW_PACE: Duration = Duration::from_millis(1);

/// What a raw flume consumer receives.
pub enum RawMessage {
    Send { data: Vec<u8> },
    Request { data: Vec<u8>, reply: flume::Sender<Vec<u8>> },
}

pub(crate) async fn ours_actor(mailbox: Mailbox, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv_async().await {
                    Ok(msg) => msg,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            ActorMessage::Send { data } | ActorMessage::ChannelMessage { data, .. } => tally.one(&data),
            ActorMessage::Request { data, reply } => {
                let _ = reply.reply(data);
            }
            ActorMessage::ChannelOpen { reply, .. } => {
                let _ = reply.accept(None);
            }
            _ => {}
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}

/// The actor of the anchor, the hand-rolled baseline and the raw tokio hop: a tokio
/// `mpsc` mailbox.
pub(crate) async fn tokio_actor(mut mailbox: mpsc::Receiver<AnchorMessage>, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv().await {
                    Some(msg) => msg,
                    None => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            AnchorMessage::Send { data } => tally.one(&data),
            AnchorMessage::ChannelMessage { channel, data } => {
                std::hint::black_box(channel);
                tally.one(&data);
            }
            AnchorMessage::Request { data, reply } => {
                let _ = reply.send(data);
            }
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}

/// The raw flume hop's consumer.
pub(crate) async fn flume_actor(mailbox: flume::Receiver<RawMessage>, mut tally: Tally, slow: bool) {
    loop {
        let msg = match mailbox.try_recv() {
            Ok(msg) => msg,
            Err(flume::TryRecvError::Empty) => {
                tally.flush();
                match mailbox.recv_async().await {
                    Ok(msg) => msg,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        match msg {
            RawMessage::Send { data } => tally.one(&data),
            RawMessage::Request { data, reply } => {
                let _ = reply.send(data);
            }
        }
        if slow {
            tokio::time::sleep(SLOW_PACE).await;
        }
    }
}
