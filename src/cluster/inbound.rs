//! What a node does with the frames it receives: membership and directory
//! frames from the members subject, data frames from its own subject. Frames
//! are handled one at a time in arrival order; only waits for an actor's
//! answer (requests, channel opens) run as tasks of their own.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{ChannelError, RequestError};
use crate::ids::{ActorId, ChannelId, Participant};
use crate::message::{reply_channel, Queued};
use crate::metrics::DeadLetterReason;

use super::directory::Seen;
use super::links::{fail, ChannelLink, InStream, Waiter};
use super::node::{Counters, Node};
use super::wire::{self, Body, Frame, Header, OpenOutcome};

/// Handles one received NATS message.
pub(crate) async fn handle(node: &Arc<Node>, payload: &[u8]) {
    let frame = match wire::decode(payload) {
        Ok(frame) => frame,
        Err(e) => {
            Counters::bump(&node.counters.decode_errors);
            tracing::debug!(error = ?e, "undecodable cluster frame dropped");
            return;
        }
    };
    if frame.header.node == node.header.node {
        if frame.header.incarnation != node.header.incarnation {
            Counters::bump(&node.counters.conflicts);
            tracing::warn!(node = %frame.header.node, "another node uses this node's name");
        }
        return;
    }
    Counters::bump(&node.counters.frames_received);
    let Frame { header, body } = frame;
    let from = header.node.as_str();
    if node.dir.lock().left.get(from) == Some(&header.incarnation) {
        return;
    }
    // Any frame of a node shows it alive.
    let mut actions = Vec::new();
    let seen = node.dir.lock().seen(from, header.incarnation, node.seen_at(), &mut actions);
    if seen == Seen::Replaced {
        node.node_gone_actions(from, actions);
    }
    if seen != Seen::Known {
        tracing::info!(node = from, "cluster node joined");
        let version = node.dir.lock().version;
        node.announce(&Body::Heartbeat { version });
    }
    match body {
        Body::Heartbeat { version } => node.dir.lock().announced(from, version),
        Body::Leave => {
            node.dir.lock().left.insert(from.to_owned(), header.incarnation);
            node.node_gone(from);
        }
        Body::DirAdd { version, id, name } => directory(node, from, version, id, Some(name)),
        Body::DirRemove { version, id } => directory(node, from, version, id, None),
        Body::SnapshotRequest => node.send_snapshot(from),
        Body::Snapshot { version, last, entries } => {
            let mut actions = Vec::new();
            node.dir.lock().snapshot(from, version, last, entries, &mut actions);
            node.apply(actions);
        }
        Body::Send { seq, to, data } => {
            if track(node, &header, seq) {
                deliver(node, to, data);
            }
        }
        Body::Request { seq, corr, to, wait_ms, data } => {
            if track(node, &header, seq) {
                request(node, from, corr, to, wait_ms, data).await;
            }
        }
        Body::Reply { corr, outcome } => match (node.links.take(from, corr), outcome) {
            (Some(Waiter::Request(reply)), Ok(data)) => {
                let _ = reply.reply(data);
            }
            (Some(waiter), Err(e)) => fail(waiter, e),
            (Some(waiter), Ok(_)) => fail(waiter, RequestError::NoReply),
            (None, _) => {}
        },
        Body::Open { seq, corr, channel, initiator, target, wait_ms, initial } => {
            if track(node, &header, seq) {
                open(node, from, header.incarnation, corr, channel, initiator, target, wait_ms, initial)
                    .await;
            }
        }
        Body::OpenReply { corr, outcome } => opened(node, from, header.incarnation, corr, outcome).await,
        Body::ChannelData { seq, channel, sender, data } => {
            if !track(node, &header, seq) {
                return;
            }
            let channel = ChannelId::from_u128(channel);
            if let Err(e) = node.router.channel_send(channel, sender, data) {
                Counters::bump(&node.counters.inbound_dead_letters);
                let target = node.links.channels.lock().get(&channel).map_or(sender, |l| l.local);
                node.dead_letter(target, Some(channel), e.into_inner(), DeadLetterReason::ActorNotFound);
            }
        }
        Body::ChannelClose { seq, channel, closer } => {
            if !track(node, &header, seq) {
                return;
            }
            let channel = ChannelId::from_u128(channel);
            let link = node.links.channels.lock().remove(&channel);
            let _ = node.router.close_channel(channel, closer);
            if let Some(link) = link {
                node.release_external(link.route);
            }
        }
        Body::Ack { stream, upto, lost } => {
            if stream == node.header.incarnation {
                let out = node.links.out.lock().get(from).cloned();
                if let Some(out) = out {
                    for lost in out.acked(upto, lost) {
                        node.remote_dead_letter(lost.target, lost.channel, lost.data);
                    }
                }
            }
        }
        Body::Sync { stream, last } => {
            if stream == header.incarnation && header.to == node.header.incarnation {
                let mut inbound = node.links.inbound.lock();
                let s = inbound.entry(from.to_owned()).or_insert_with(|| fresh(stream, 0));
                if s.incarnation != stream {
                    *s = fresh(stream, 0);
                }
                if last > s.last {
                    s.lost.push((s.last + 1, last));
                    s.last = last;
                }
            }
        }
    }
}

fn fresh(incarnation: u64, last: u64) -> InStream {
    InStream { incarnation, last, acked: last, lost: Vec::new() }
}

/// Notes frame `seq` of the sender's stream; a jump records the frames lost.
/// `false` for a frame meant for a former incarnation of this node: it is
/// dropped (its sender settles it when it learns of this incarnation).
fn track(node: &Node, header: &Header, seq: u64) -> bool {
    if header.to != node.header.incarnation {
        tracing::debug!(node = %header.node, "frame for a former incarnation dropped");
        return false;
    }
    let mut inbound = node.links.inbound.lock();
    let s = inbound.entry(header.node.clone()).or_insert_with(|| fresh(header.incarnation, 0));
    if s.incarnation != header.incarnation {
        *s = fresh(header.incarnation, 0);
    }
    if seq > s.last + 1 {
        s.lost.push((s.last + 1, seq - 1));
    }
    s.last = s.last.max(seq);
    true
}

fn directory(node: &Arc<Node>, from: &str, version: u64, id: ActorId, add: Option<Option<String>>) {
    let mut actions = Vec::new();
    node.dir.lock().delta(from, version, id, add, &mut actions);
    node.apply(actions);
}

/// Whether `id` is an actor of this node (not a route to another's).
fn is_local(node: &Node, id: ActorId) -> bool {
    node.dir.lock().local.contains_key(&id)
}

/// Delivers a one-way message to a local actor, or dead-letters it here.
fn deliver(node: &Node, to: ActorId, data: Vec<u8>) {
    let who = Participant::Actor(to);
    let refused = if is_local(node, to) {
        let inner = node.inner();
        match inner.route(who, Queued::Send(data), inner.overflow_bound) {
            Ok(()) => return,
            Err(e) => {
                let reason = match e.kind() {
                    crate::SendErrorKind::MailboxFull => DeadLetterReason::MailboxFull,
                    crate::SendErrorKind::ShardFull => DeadLetterReason::ShardFull,
                    crate::SendErrorKind::Shutdown => DeadLetterReason::Shutdown,
                    crate::SendErrorKind::MailboxClosed => DeadLetterReason::MailboxClosed,
                    crate::SendErrorKind::ShardFailed => DeadLetterReason::ShardFailed,
                    _ => DeadLetterReason::ActorNotFound,
                };
                (e.into_inner().into_payload(), reason)
            }
        }
    } else {
        (data, DeadLetterReason::ActorNotFound)
    };
    Counters::bump(&node.counters.inbound_dead_letters);
    node.dead_letter(who, None, refused.0, refused.1);
}

async fn request(node: &Arc<Node>, from: &str, corr: u64, to: ActorId, wait_ms: u64, data: Vec<u8>) {
    let outcome = if is_local(node, to) {
        let (handle, rx) = reply_channel();
        let inner = node.inner();
        match inner.route(Participant::Actor(to), Queued::Request(data, handle), inner.overflow_bound) {
            Ok(()) => {
                let (node, from) = (Arc::clone(node), from.to_owned());
                let wait = Duration::from_millis(wait_ms);
                tokio::spawn(async move {
                    let outcome = match tokio::time::timeout(wait, rx).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(RequestError::Timeout),
                    };
                    node.publish(&from, &Body::Reply { corr, outcome }).await;
                });
                return;
            }
            Err(e) => Err(RequestError::from(e.kind())),
        }
    } else {
        Err(RequestError::ActorNotFound)
    };
    node.publish(from, &Body::Reply { corr, outcome }).await;
}

#[allow(clippy::too_many_arguments)]
async fn open(
    node: &Arc<Node>,
    from: &str,
    incarnation: u64,
    corr: u64,
    remote: u128,
    initiator: Participant,
    target: ActorId,
    wait_ms: u64,
    initial: Vec<u8>,
) {
    if !is_local(node, target) {
        node.publish(from, &Body::OpenReply { corr, outcome: Err(RequestError::ActorNotFound) }).await;
        return;
    }
    // The initiator needs a route here, for the channel table's checks and for
    // the target's answers; an external client's is made on demand.
    if node.inner().state_of(initiator).is_none() {
        let claimed = match initiator {
            Participant::External(e) => {
                node.links.externals.lock().insert(e, from.to_owned());
                true
            }
            Participant::Actor(id) => node.dir.lock().claim_route(id, from, incarnation),
        };
        if claimed {
            node.add_route(initiator, from.to_owned(), incarnation);
        }
    }
    let wait = Duration::from_millis(wait_ms);
    let future = node.router.open_channel_async(initiator, target, initial, wait);
    let (node, from) = (Arc::clone(node), from.to_owned());
    tokio::spawn(async move {
        let outcome = match future.await {
            Ok(opened) => Ok(Some((opened.id.as_u128(), opened.response))),
            Err(failed) => match failed.error() {
                ChannelError::Rejected => Ok(None),
                ChannelError::Timeout => Err(RequestError::Timeout),
                ChannelError::Shutdown => Err(RequestError::Shutdown),
                ChannelError::MailboxFull => Err(RequestError::MailboxFull),
                _ => Err(RequestError::ActorNotFound),
            },
        };
        let accepted = match &outcome {
            Ok(Some((id, _))) => Some(ChannelId::from_u128(*id)),
            _ => None,
        };
        node.publish(&from, &Body::OpenReply { corr, outcome }).await;
        // Linked after the answer left: the target's first messages on the
        // channel wait for the link, so they follow the answer.
        if let Some(channel) = accepted {
            let link =
                ChannelLink { node: from, remote, local: Participant::Actor(target), route: initiator };
            node.links.channels.lock().insert(channel, link);
            node.links.linked.notify_waiters();
        }
    });
}

async fn opened(node: &Arc<Node>, from: &str, incarnation: u64, corr: u64, outcome: OpenOutcome) {
    let Some(waiter) = node.links.take(from, corr) else {
        // The open is no longer waited for here: close what was opened there.
        if let Ok(Some(_)) = outcome {
            tracing::debug!(node = from, "channel accepted after its open was given up");
        }
        return;
    };
    let Waiter::Open { reply, channel, local, route } = waiter else {
        fail(waiter, RequestError::NoReply);
        return;
    };
    match outcome {
        Ok(Some((remote, response))) => {
            let link = ChannelLink { node: from.to_owned(), remote, local, route };
            node.links.channels.lock().insert(channel, link);
            node.links.linked.notify_waiters();
            if reply.accept(response).is_err() {
                // Settled here meanwhile (timed out): the far side closes too.
                node.links.channels.lock().remove(&channel);
                super::proxy::numbered(node, from, incarnation, |seq| Body::ChannelClose {
                    seq,
                    channel: remote,
                    closer: local,
                })
                .await;
            }
        }
        Ok(None) => reply.reject(),
        Err(e) => fail(Waiter::Open { reply, channel, local, route }, e),
    }
}
