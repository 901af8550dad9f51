//! What a node keeps about its traffic with each other node: the numbered
//! stream of frames it sends to it (and the one-way payloads not yet
//! acknowledged), the stream it receives from it, requests and opens waiting
//! for an answer, and the channels whose other side lives there.
//!
//! # Accounting
//!
//! Every data frame to a node carries the next number of this node's stream to
//! it. The receiver acknowledges the highest number it got, and reports the
//! numbers it never got: NATS keeps one connection's messages in order, so a
//! jump means the frames in between were lost (a server restart, a slow
//! consumer), and a `Sync` frame (sent while anything is unacknowledged) tells it
//! where the stream ends, so that a lost tail is found too. A one-way message
//! acknowledged as received was delivered, or dead-lettered on the receiving
//! node; one reported lost, or unacknowledged when its node is taken for dead, is
//! a dead letter here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{RequestError, RequestFailed};
use crate::ids::{ChannelId, ExternalId, Participant};
use crate::message::{ChannelOpenReply, ReplyHandle};

use super::node::Node;

/// A request or open waiting for its answer from another node.
pub(crate) enum Waiter {
    Request(ReplyHandle),
    Open { reply: ChannelOpenReply, channel: ChannelId, local: Participant, route: Participant },
}

/// A channel whose other participant lives on another node.
#[derive(Clone, Debug)]
pub(crate) struct ChannelLink {
    pub(crate) node: String,
    /// The channel's id on that node.
    pub(crate) remote: u128,
    /// The participant on this node.
    pub(crate) local: Participant,
    /// The route standing for the other participant here.
    pub(crate) route: Participant,
}

/// A one-way payload not yet acknowledged.
pub(crate) struct Unacked {
    pub(crate) seq: u64,
    pub(crate) target: Participant,
    pub(crate) channel: Option<ChannelId>,
    pub(crate) data: Vec<u8>,
}

/// This node's stream to one incarnation of another node.
pub(crate) struct OutStream {
    /// The incarnation of the receiving node.
    pub(crate) peer: u64,
    /// The last number given out; held across a publish, so that numbers
    /// reach the connection in order and a `Sync` never claims a frame not yet
    /// handed to it.
    pub(crate) last: tokio::sync::Mutex<u64>,
    /// One-way payloads not yet acknowledged; `None` once the node is gone.
    pub(crate) unacked: Mutex<Option<VecDeque<Unacked>>>,
    /// Woken by each acknowledgement (room in the window).
    pub(crate) room: tokio::sync::Notify,
}

impl OutStream {
    fn new(peer: u64) -> Self {
        Self {
            peer,
            last: tokio::sync::Mutex::new(0),
            unacked: Mutex::new(Some(VecDeque::new())),
            room: tokio::sync::Notify::new(),
        }
    }

    /// Keeps a payload until it is acknowledged. `Err` hands it back when the
    /// node is gone.
    pub(crate) fn keep(&self, unacked: Unacked) -> Result<(), Unacked> {
        match self.unacked.lock().as_mut() {
            Some(queue) => {
                queue.push_back(unacked);
                Ok(())
            }
            None => Err(unacked),
        }
    }

    /// Takes back the payload numbered `seq` (its frame never left).
    pub(crate) fn unkeep(&self, seq: u64) -> Option<Unacked> {
        let mut guard = self.unacked.lock();
        let queue = guard.as_mut()?;
        let at = queue.iter().rposition(|u| u.seq == seq)?;
        queue.remove(at)
    }

    /// Settles an acknowledgement: what is up to `upto` was received, except
    /// `lost`, which is returned.
    pub(crate) fn acked(&self, upto: u64, lost: Option<(u64, u64)>) -> Vec<Unacked> {
        let mut out = Vec::new();
        let mut guard = self.unacked.lock();
        let Some(queue) = guard.as_mut() else { return out };
        while queue.front().is_some_and(|u| u.seq <= upto) {
            if let Some(u) = queue.pop_front() {
                if lost.is_some_and(|(a, b)| (a..=b).contains(&u.seq)) {
                    out.push(u);
                }
            }
        }
        drop(guard);
        self.room.notify_waiters();
        out
    }

    /// How many payloads wait for an acknowledgement.
    pub(crate) fn in_flight(&self) -> usize {
        self.unacked.lock().as_ref().map_or(0, VecDeque::len)
    }

    /// Whether anything waits for an acknowledgement.
    pub(crate) fn pending(&self) -> bool {
        self.unacked.lock().as_ref().is_some_and(|q| !q.is_empty())
    }

    /// Takes everything unacknowledged and refuses more.
    pub(crate) fn close(&self) -> Vec<Unacked> {
        let taken = self.unacked.lock().take().map(Vec::from).unwrap_or_default();
        self.room.notify_waiters();
        taken
    }
}

/// What this node got of another node's stream to it.
pub(crate) struct InStream {
    pub(crate) incarnation: u64,
    pub(crate) last: u64,
    pub(crate) acked: u64,
    /// Ranges found lost and not yet reported.
    pub(crate) lost: Vec<(u64, u64)>,
}

#[derive(Default)]
pub(crate) struct Links {
    next_corr: AtomicU64,
    waiters: Mutex<HashMap<u64, (String, Waiter)>>,
    pub(crate) channels: Mutex<HashMap<ChannelId, ChannelLink>>,
    /// A channel link was added.
    pub(crate) linked: tokio::sync::Notify,
    pub(crate) out: Mutex<HashMap<String, Arc<OutStream>>>,
    pub(crate) inbound: Mutex<HashMap<String, InStream>>,
    /// Routes to external participants of other nodes, by node.
    pub(crate) externals: Mutex<HashMap<ExternalId, String>>,
}

impl Links {
    pub(crate) fn wait_for(&self, node: &str, waiter: Waiter) -> u64 {
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed) + 1;
        self.waiters.lock().insert(corr, (node.to_owned(), waiter));
        corr
    }

    /// The waiter for `corr`, if it came from `node`.
    pub(crate) fn take(&self, node: &str, corr: u64) -> Option<Waiter> {
        let mut waiters = self.waiters.lock();
        if waiters.get(&corr).is_some_and(|(n, _)| n == node) {
            waiters.remove(&corr).map(|(_, w)| w)
        } else {
            None
        }
    }

    /// Forgets a waiter whose frame never left.
    pub(crate) fn cancel(&self, corr: u64) -> Option<Waiter> {
        self.waiters.lock().remove(&corr).map(|(_, w)| w)
    }

    /// The stream to `node`'s incarnation `peer`. A stream to a former
    /// incarnation is closed; what it left unacknowledged is returned.
    pub(crate) fn stream_to(&self, node: &str, peer: u64) -> (Arc<OutStream>, Vec<Unacked>) {
        let mut out = self.out.lock();
        let stream = out.entry(node.to_owned()).or_insert_with(|| Arc::new(OutStream::new(peer)));
        if stream.peer == peer {
            return (Arc::clone(stream), Vec::new());
        }
        let old = std::mem::replace(stream, Arc::new(OutStream::new(peer)));
        (Arc::clone(stream), old.close())
    }

    /// `node` is gone: its waiters fail with `ActorNotFound`, its channel links
    /// go, its unacknowledged payloads become dead letters. Returns the routes to
    /// remove (external participants of that node).
    pub(crate) fn forget_node(&self, this: &Node, node: &str) -> Vec<Participant> {
        let waiters: Vec<Waiter> = {
            let mut all = self.waiters.lock();
            let corrs: Vec<u64> = all.iter().filter(|(_, (n, _))| n == node).map(|(c, _)| *c).collect();
            corrs.into_iter().filter_map(|c| all.remove(&c)).map(|(_, w)| w).collect()
        };
        for waiter in waiters {
            fail(waiter, RequestError::ActorNotFound);
        }
        self.channels.lock().retain(|_, link| link.node != node);
        let stream = self.out.lock().remove(node);
        if let Some(stream) = stream {
            for lost in stream.close() {
                this.remote_dead_letter(lost.target, lost.channel, lost.data);
            }
        }
        // What arrived of its stream is kept: a node taken for dead that was
        // only cut off comes back with the same stream, and the numbers it
        // sends next must still show what was lost meanwhile.
        let mut externals = self.externals.lock();
        let gone: Vec<ExternalId> = externals.iter().filter(|(_, n)| *n == node).map(|(e, _)| *e).collect();
        gone.into_iter()
            .map(|e| {
                externals.remove(&e);
                Participant::External(e)
            })
            .collect()
    }

    /// Fails every waiter (the node leaves).
    pub(crate) fn fail_all(&self) {
        let all: Vec<Waiter> = self.waiters.lock().drain().map(|(_, (_, w))| w).collect();
        for waiter in all {
            fail(waiter, RequestError::Shutdown);
        }
    }
}

/// Settles a waiter with `error`.
pub(crate) fn fail(waiter: Waiter, error: RequestError) {
    match waiter {
        Waiter::Request(reply) => {
            let _ = reply.fail(RequestFailed::new(error, None));
        }
        Waiter::Open { reply, .. } => {
            let _ = reply.fail(RequestFailed::new(error, None));
        }
    }
}
