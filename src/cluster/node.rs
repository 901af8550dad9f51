//! One joined node: the state its tasks share ([`Node`]), what it publishes, its
//! routes to remote actors, and the router hook that tells it of local
//! registrations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ids::{ActorId, Participant};
use crate::metrics::{DeadLetter, DeadLetterReason};
use crate::router::Router;
use crate::routing::{ClusterHook, Inner};

use super::config::{ClusterConfig, ClusterStats};
use super::directory::{Action, Directory};
use super::links::Links;
use super::wire::{self, Body, Header};

/// Counters behind [`ClusterStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) remote_dead_letters: AtomicU64,
    pub(crate) inbound_dead_letters: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) nodes_failed: AtomicU64,
    pub(crate) conflicts: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ClusterStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterStats {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            decode_errors: get(&self.decode_errors),
            remote_dead_letters: get(&self.remote_dead_letters),
            inbound_dead_letters: get(&self.inbound_dead_letters),
            reconnects: get(&self.reconnects),
            nodes_failed: get(&self.nodes_failed),
            conflicts: get(&self.conflicts),
        }
    }
}

/// The state a node's tasks share.
pub(crate) struct Node {
    pub(crate) router: Router,
    pub(crate) client: async_nats::Client,
    pub(crate) config: ClusterConfig,
    pub(crate) header: Header,
    pub(crate) members_subject: String,
    pub(crate) dir: Mutex<Directory>,
    pub(crate) links: Links,
    pub(crate) counters: Counters,
    /// Membership and directory frames, published in order by one task.
    pub(crate) announce: mpsc::UnboundedSender<(String, Vec<u8>)>,
    /// The proxy tasks of the routes to remote participants.
    pub(crate) proxies: Mutex<HashMap<Participant, JoinHandle<()>>>,
    pub(crate) stopped: AtomicBool,
    /// Announcements queued and not yet published.
    pub(crate) queued: AtomicU64,
}

impl Node {
    /// The data subject of `node`.
    pub(crate) fn subject_of(&self, node: &str) -> String {
        format!("sr.{}.node.{node}", self.config.cluster)
    }

    pub(crate) fn encode(&self, body: &Body) -> Vec<u8> {
        wire::encode(&self.header, body)
    }

    /// Publishes a frame of this node's numbered stream to `node`'s
    /// incarnation `to` (see [`Node::publish`]).
    pub(crate) async fn publish_to(&self, node: &str, to: u64, body: &Body) -> bool {
        let header = Header { node: self.header.node.clone(), incarnation: self.header.incarnation, to };
        self.publish_bytes(node, wire::encode(&header, body)).await
    }

    /// Queues a membership or directory frame for the members subject.
    pub(crate) fn announce(&self, body: &Body) {
        self.queue(self.members_subject.clone(), body);
    }

    /// Queues a frame for `node`, behind the announcements queued before it.
    pub(crate) fn announce_to(&self, node: &str, body: &Body) {
        self.queue(self.subject_of(node), body);
    }

    fn queue(&self, subject: String, body: &Body) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.announce.send((subject, self.encode(body))).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The announcer published one queued frame.
    pub(crate) fn announced_one(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn pending_announcements(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Publishes a data frame to `node`, bounded by the publish timeout. `false`
    /// when it could not be handed to the connection.
    pub(crate) async fn publish(&self, node: &str, body: &Body) -> bool {
        self.publish_bytes(node, self.encode(body)).await
    }

    async fn publish_bytes(&self, node: &str, frame: Vec<u8>) -> bool {
        let payload = Bytes::from(frame);
        let publish = self.client.publish(self.subject_of(node), payload);
        match tokio::time::timeout(self.config.publish_timeout, publish).await {
            Ok(Ok(())) => {
                Counters::bump(&self.counters.frames_sent);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.router.inner
    }

    /// Counts `data`, meant for `target` on another node, as a dead letter of
    /// this node's router.
    pub(crate) fn remote_dead_letter(
        &self,
        target: Participant,
        channel: Option<crate::ChannelId>,
        data: Vec<u8>,
    ) {
        Counters::bump(&self.counters.remote_dead_letters);
        self.dead_letter(target, channel, data, DeadLetterReason::Unregistered);
    }

    pub(crate) fn dead_letter(
        &self,
        target: Participant,
        channel_id: Option<crate::ChannelId>,
        data: Vec<u8>,
        reason: DeadLetterReason,
    ) {
        let inner = self.inner();
        let letter = DeadLetter { target, channel_id, data, reason };
        inner.shard(&target).dead_letter(inner.dead_letters.as_ref(), letter);
    }

    /// Carries out directory actions: routes to add and remove.
    pub(crate) fn apply(self: &Arc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Route { node, incarnation, id } => {
                    self.add_route(Participant::Actor(id), node, incarnation)
                }
                Action::Unroute { id } => self.unroute_after_channels(Participant::Actor(id)),
            }
        }
    }

    /// Registers a proxy for `who` (hosted on `node`) in the router.
    pub(crate) fn add_route(self: &Arc<Self>, who: Participant, node: String, incarnation: u64) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let (tx, mailbox) = self.router.mailbox();
        match Inner::add(self.inner(), who, tx) {
            Ok(()) => {
                let task = tokio::spawn(super::proxy::run(Arc::clone(self), node, incarnation, who, mailbox));
                if let Some(old) = self.proxies.lock().insert(who, task) {
                    old.abort();
                }
            }
            Err(e) => {
                // A local actor holds the id: two nodes registered it at once.
                tracing::warn!(participant = %who, node = %node, error = %e, "route to a remote actor refused");
                Counters::bump(&self.counters.conflicts);
                if let Participant::Actor(id) = who {
                    let mut dir = self.dir.lock();
                    if dir.routes.get(&id).is_some_and(|(n, _)| *n == node) {
                        dir.routes.remove(&id);
                    }
                }
            }
        }
    }

    /// Removes the route to `who`, an actor that left its node's directory.
    /// Its node closes the channels through the route itself, on the same
    /// ordered stream as their messages; the announcement may overtake those,
    /// so while channels still go through the route, its removal waits for
    /// their closes (at most the node timeout).
    pub(crate) fn unroute_after_channels(self: &Arc<Self>, who: Participant) {
        let busy = move |node: &Node| node.links.channels.lock().values().any(|l| l.route == who);
        if !busy(self) {
            self.remove_route(who);
            return;
        }
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let deadline = Instant::now() + node.config.timeout();
            while busy(&node) && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            node.remove_route(who);
        });
    }

    /// Removes the proxy of `who`: its requests and opens fail, its channels
    /// close (their local participants get `ChannelClose`), and what is still in
    /// its mailbox is dead-lettered by its task.
    pub(crate) fn remove_route(&self, who: Participant) {
        let removed = self.inner().remove(who, |_| true, DeadLetterReason::Unregistered);
        if removed.is_ok() {
            tracing::debug!(participant = %who, "route to a remote participant removed");
        }
    }

    /// Removes the route to an external client of another node once no
    /// channel goes through it any more.
    pub(crate) fn release_external(&self, route: Participant) {
        let Participant::External(e) = route else { return };
        let in_use = self.links.channels.lock().values().any(|l| l.route == route);
        if !in_use && self.links.externals.lock().remove(&e).is_some() {
            self.remove_route(route);
        }
    }

    /// `node` left or was taken for dead: its actors leave the directory, the
    /// routes to them go, and what waits on it fails.
    pub(crate) fn node_gone(self: &Arc<Self>, node: &str) {
        let mut actions = Vec::new();
        let known = self.dir.lock().remove_node(node, &mut actions);
        if !known {
            return;
        }
        tracing::info!(node, "cluster node gone");
        self.apply(actions);
        for who in self.links.forget_node(self, node) {
            self.remove_route(who);
        }
    }

    /// A node's former incarnation is gone (`actions` from the directory).
    pub(crate) fn node_gone_actions(self: &Arc<Self>, node: &str, actions: Vec<Action>) {
        tracing::info!(node, "cluster node restarted");
        self.apply(actions);
        for who in self.links.forget_node(self, node) {
            self.remove_route(who);
        }
    }

    /// Publishes this node's directory part to `node`, in parts.
    pub(crate) fn send_snapshot(&self, node: &str) {
        const PART: usize = 2048;
        let dir = self.dir.lock();
        let version = dir.version;
        let entries: Vec<(ActorId, Option<String>)> =
            dir.local.iter().map(|(id, n)| (*id, n.clone())).collect();
        let parts = entries.len().div_ceil(PART).max(1);
        let mut chunks = entries.chunks(PART);
        for i in 0..parts {
            let entries = chunks.next().map(<[_]>::to_vec).unwrap_or_default();
            self.announce_to(node, &Body::Snapshot { version, last: i + 1 == parts, entries });
        }
    }

    pub(crate) fn seen_at(&self) -> Instant {
        Instant::now()
    }
}

/// The router's view of its node: local registrations go into the directory.
pub(crate) struct Hook(pub(crate) std::sync::Weak<Node>);

impl ClusterHook for Hook {
    fn registered(&self, id: ActorId) {
        let Some(node) = self.0.upgrade() else { return };
        let mut dir = node.dir.lock();
        if dir.routes.contains_key(&id) {
            return;
        }
        dir.local.insert(id, None);
        dir.version += 1;
        let body = Body::DirAdd { version: dir.version, id, name: None };
        node.announce(&body);
    }

    fn unregistered(&self, id: ActorId) {
        let Some(node) = self.0.upgrade() else { return };
        let mut dir = node.dir.lock();
        if dir.local.remove(&id).is_none() {
            return;
        }
        dir.version += 1;
        let body = Body::DirRemove { version: dir.version, id };
        node.announce(&body);
    }

    fn is_remote(&self, id: ActorId) -> bool {
        self.0.upgrade().is_some_and(|node| node.dir.lock().routes.contains_key(&id))
    }
}
