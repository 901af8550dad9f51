//! A route to a participant of another node: a mailbox registered in this
//! node's router under the remote participant's id, drained by one task that
//! turns each message into a frame to the participant's node.
//!
//! Because the route is an ordinary registration, every `Router` call reaches
//! remote actors unchanged, local traffic takes its usual path, and the router's
//! per-pair FIFO, overflow, request deadlines and channel rules apply up to the
//! route. One task per route publishes its messages one after the other on the
//! node's one NATS connection, and NATS keeps a connection's messages in order,
//! so per-pair order holds up to the receiving node, which delivers frames in
//! the order they arrive.

use std::sync::Arc;
use std::time::Duration;

use crate::error::RequestError;
use crate::ids::{ActorId, Participant};
use crate::mailbox::Mailbox;
use crate::message::ActorMessage;

use super::links::{fail, Unacked, Waiter};
use super::node::Node;
use super::wire::Body;

/// The most one-way payloads in flight to one node before its acknowledgements.
const WINDOW: usize = 8192;

/// Drains the route to `who` (hosted by `node`, incarnation `incarnation`)
/// until the route is removed.
pub(crate) async fn run(node: Arc<Node>, host: String, incarnation: u64, who: Participant, mailbox: Mailbox) {
    while let Ok(msg) = mailbox.recv_async().await {
        forward(&node, &host, incarnation, who, msg).await;
    }
}

/// Whether `host` is still the incarnation the route was made for.
fn alive(node: &Node, host: &str, incarnation: u64) -> bool {
    node.dir.lock().nodes.get(host).is_some_and(|v| v.incarnation == incarnation)
}

fn wait_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn forward(node: &Arc<Node>, host: &str, incarnation: u64, who: Participant, msg: ActorMessage) {
    let up = alive(node, host, incarnation);
    match msg {
        ActorMessage::Send { data } => {
            let Participant::Actor(to) = who else {
                node.remote_dead_letter(who, None, data);
                return;
            };
            if !up {
                node.remote_dead_letter(who, None, data);
                return;
            }
            send_one_way(node, host, incarnation, who, None, data, |seq, data| Body::Send { seq, to, data })
                .await;
        }
        ActorMessage::Request { data, reply } => {
            let Participant::Actor(to) = who else { return };
            if !up {
                fail(Waiter::Request(reply), RequestError::ActorNotFound);
                return;
            }
            let corr = node.links.wait_for(host, Waiter::Request(reply));
            let wait_ms = wait_ms(node.config.remote_wait);
            let sent =
                numbered(node, host, incarnation, |seq| Body::Request { seq, corr, to, wait_ms, data }).await;
            if !sent {
                if let Some(waiter) = node.links.cancel(corr) {
                    fail(waiter, RequestError::ActorNotFound);
                }
            }
        }
        ActorMessage::ChannelOpen { channel_id, initiator, initial_msg, reply } => {
            let Participant::Actor(target) = who else {
                fail(
                    Waiter::Open { reply, channel: channel_id, local: initiator, route: who },
                    RequestError::ActorNotFound,
                );
                return;
            };
            let waiter = Waiter::Open { reply, channel: channel_id, local: initiator, route: who };
            if !up {
                fail(waiter, RequestError::ActorNotFound);
                return;
            }
            let corr = node.links.wait_for(host, waiter);
            let wait_ms = wait_ms(node.config.remote_wait);
            let channel = channel_id.as_u128();
            let sent = numbered(node, host, incarnation, |seq| Body::Open {
                seq,
                corr,
                channel,
                initiator,
                target,
                wait_ms,
                initial: initial_msg,
            })
            .await;
            if !sent {
                if let Some(waiter) = node.links.cancel(corr) {
                    fail(waiter, RequestError::ActorNotFound);
                }
            }
        }
        ActorMessage::ChannelMessage { channel_id, data, .. } => {
            let Some(link) = link_of(node, channel_id).await else {
                node.remote_dead_letter(who, Some(channel_id), data);
                return;
            };
            if !up {
                node.remote_dead_letter(who, Some(channel_id), data);
                return;
            }
            let (channel, sender) = (link.remote, link.local);
            send_one_way(node, host, incarnation, who, Some(channel_id), data, |seq, data| {
                Body::ChannelData { seq, channel, sender, data }
            })
            .await;
        }
        ActorMessage::ChannelClose { channel_id, .. } => {
            // The channel has left the router's table already: only a link in
            // the making is waited for.
            let linked = node.links.channels.lock().remove(&channel_id);
            let link = match linked {
                Some(link) => Some(link),
                None => link_of(node, channel_id).await,
            };
            node.links.channels.lock().remove(&channel_id);
            if let Some(link) = &link {
                node.release_external(link.route);
            }
            if let (Some(link), true) = (link, up) {
                let (channel, closer) = (link.remote, link.local);
                numbered(node, host, incarnation, |seq| Body::ChannelClose { seq, channel, closer }).await;
            }
        }
    }
}

/// The link of a channel this node's side knows. While the channel is still in
/// the router's table but not linked yet (its open is being answered), waits
/// for the link, at most the remote wait.
async fn link_of(node: &Node, channel: crate::ChannelId) -> Option<super::links::ChannelLink> {
    let deadline = tokio::time::Instant::now() + node.config.remote_wait;
    loop {
        let notified = node.links.linked.notified();
        if let Some(link) = node.links.channels.lock().get(&channel).cloned() {
            return Some(link);
        }
        let exists = node.inner().channels.map.with(&channel, (), |_, ()| ()).is_ok();
        if !exists || tokio::time::Instant::now() >= deadline {
            return None;
        }
        let tick = tokio::time::Instant::now() + Duration::from_millis(10);
        let _ = tokio::time::timeout_at(tick.min(deadline), notified).await;
    }
}

/// Publishes a numbered frame to `host`. `false` if it never left.
pub(crate) async fn numbered(node: &Node, host: &str, peer: u64, body: impl FnOnce(u64) -> Body) -> bool {
    let stream = stream_to(node, host, peer);
    let mut last = stream.last.lock().await;
    let seq = *last + 1;
    let sent = node.publish_to(host, peer, &body(seq)).await;
    if sent {
        *last = seq;
    }
    sent
}

/// Publishes a one-way frame, keeping a copy of its payload until `host`
/// acknowledges it; one that cannot leave is a dead letter at once.
/// The stream to `host`'s incarnation `peer`; what a stream to its former
/// incarnation left unacknowledged becomes dead letters.
fn stream_to(node: &Node, host: &str, peer: u64) -> std::sync::Arc<super::links::OutStream> {
    let (stream, lost) = node.links.stream_to(host, peer);
    for lost in lost {
        node.remote_dead_letter(lost.target, lost.channel, lost.data);
    }
    stream
}

#[allow(clippy::too_many_arguments)]
async fn send_one_way(
    node: &Node,
    host: &str,
    peer: u64,
    target: Participant,
    channel: Option<crate::ChannelId>,
    data: Vec<u8>,
    body: impl FnOnce(u64, Vec<u8>) -> Body,
) {
    let stream = stream_to(node, host, peer);
    let mut last = stream.last.lock().await;
    // Flow control: at most `WINDOW` payloads unacknowledged, so that a
    // receiver that falls behind is never flooded past what its connection
    // buffers (NATS would drop the excess). Bounded by the node timeout: a
    // receiver silent that long is taken for dead, which settles the window.
    let deadline = tokio::time::Instant::now() + node.config.timeout();
    while stream.in_flight() >= WINDOW {
        let room = stream.room.notified();
        if stream.in_flight() < WINDOW || tokio::time::timeout_at(deadline, room).await.is_err() {
            break;
        }
    }
    let seq = *last + 1;
    // Kept before it leaves: its acknowledgement may come back at once.
    if let Err(lost) = stream.keep(Unacked { seq, target, channel, data: data.clone() }) {
        node.remote_dead_letter(lost.target, lost.channel, lost.data);
        return;
    }
    if node.publish_to(host, peer, &body(seq, data)).await {
        *last = seq;
    } else if let Some(lost) = stream.unkeep(seq) {
        node.remote_dead_letter(lost.target, lost.channel, lost.data);
    }
}

/// The actor a route stands for (`None` for external participants).
#[allow(dead_code)]
pub(crate) fn actor_of(who: Participant) -> Option<ActorId> {
    match who {
        Participant::Actor(id) => Some(id),
        Participant::External(_) => None,
    }
}
