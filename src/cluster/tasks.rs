//! [`Cluster`]: joining (the connection, the subscriptions, the node's tasks),
//! the API, and leaving.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ids::{ActorId, Participant};
use crate::router::Router;

use super::config::{valid_token, ClusterConfig, ClusterError, ClusterStats, DirectoryEntry};
use super::directory::Directory;
use super::links::Links;
use super::node::{Counters, Hook, Node};
use super::wire::{Body, Header};

/// How often acknowledgements go out.
const ACK_PERIOD: Duration = Duration::from_millis(20);

/// A node of a cluster: a [`Router`] joined to the others over NATS. Cheap to
/// clone; [`leave`](Self::leave) ends it.
#[derive(Clone)]
pub struct Cluster {
    node: Arc<Node>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    reconnects: Arc<AtomicU64>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &self.node.config.cluster)
            .field("node", &self.node.header.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins `router` to the cluster `config` names: connects to NATS, starts
    /// the node's tasks on the current tokio runtime, and announces the actors
    /// already registered. Returns once connected and subscribed; the other
    /// nodes and their actors become known within a heartbeat or so.
    ///
    /// # Errors
    /// [`ClusterError::InvalidName`], [`ClusterError::Connect`] (the server is
    /// unreachable within the connect timeout), [`ClusterError::AlreadyJoined`],
    /// [`ClusterError::Shutdown`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn join(router: Router, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        for name in [&config.cluster, &config.node] {
            if !valid_token(name) {
                return Err(ClusterError::InvalidName(name.clone()));
            }
        }
        if router.is_shutdown() {
            return Err(ClusterError::Shutdown);
        }
        if router.inner.cluster.get().is_some() {
            return Err(ClusterError::AlreadyJoined);
        }
        let reconnects = Arc::new(AtomicU64::new(0));
        let client = connect(&config, Arc::clone(&reconnects)).await?;
        let members_subject = format!("sr.{}.members", config.cluster);
        let own_subject = format!("sr.{}.node.{}", config.cluster, config.node);
        let subscribe_error = |e: async_nats::SubscribeError| ClusterError::Connect(e.to_string());
        let members = client.subscribe(members_subject.clone()).await.map_err(subscribe_error)?;
        let own = client.subscribe(own_subject).await.map_err(subscribe_error)?;
        let (announce, announced) = mpsc::unbounded_channel();
        let incarnation = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
        let node = Arc::new(Node {
            router: router.clone(),
            client,
            header: Header { node: config.node.clone(), incarnation, to: 0 },
            dir: Mutex::new(Directory::new(config.node.clone())),
            config,
            members_subject,
            links: Links::default(),
            counters: Counters::default(),
            announce,
            proxies: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            queued: AtomicU64::new(0),
        });
        let hook = Arc::new(Hook(Arc::downgrade(&node)));
        if router.inner.cluster.set(hook).is_err() {
            return Err(ClusterError::AlreadyJoined);
        }
        // Actors registered before the hook was set; later ones come through it.
        {
            let mut dir = node.dir.lock();
            for id in router.actor_ids() {
                if dir.local.insert(id, None).is_none() {
                    dir.version += 1;
                }
            }
            node.announce(&Body::Heartbeat { version: dir.version });
        }
        let tasks = vec![
            tokio::spawn(announcer(Arc::clone(&node), announced)),
            tokio::spawn(receive(Arc::clone(&node), members)),
            tokio::spawn(receive(Arc::clone(&node), own)),
            tokio::spawn(heartbeat(Arc::clone(&node))),
            tokio::spawn(acknowledge(Arc::clone(&node))),
        ];
        tracing::info!(node = %node.header.node, cluster = %node.config.cluster, "joined the cluster");
        Ok(Cluster { node, tasks: Arc::new(Mutex::new(tasks)), reconnects })
    }

    /// This node's name.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node.header.node
    }

    /// The live nodes, this one included, sorted by name.
    #[must_use]
    pub fn members(&self) -> Vec<String> {
        let dir = self.node.dir.lock();
        let mut all: Vec<String> = dir.nodes.keys().cloned().collect();
        all.push(self.node.header.node.clone());
        all.sort();
        all
    }

    /// Every actor of the cluster this node knows of, with its node and name,
    /// sorted by node then id.
    #[must_use]
    pub fn directory(&self) -> Vec<DirectoryEntry> {
        self.node.dir.lock().entries()
    }

    /// The node `id` is registered on, if the directory knows it.
    #[must_use]
    pub fn locate(&self, id: ActorId) -> Option<String> {
        self.node.dir.lock().locate(id)
    }

    /// Gives a local actor a display name, published in the directory (names
    /// are not checked for uniqueness: [`resolve`](Self::resolve) returns one
    /// of the actors with it).
    ///
    /// # Errors
    /// [`ClusterError::NotLocal`] if `id` is not registered on this node.
    pub fn set_name(&self, id: ActorId, name: impl Into<String>) -> Result<(), ClusterError> {
        let mut dir = self.node.dir.lock();
        let Some(slot) = dir.local.get_mut(&id) else { return Err(ClusterError::NotLocal(id)) };
        let name = name.into();
        *slot = Some(name.clone());
        dir.version += 1;
        self.node.announce(&Body::DirAdd { version: dir.version, id, name: Some(name) });
        Ok(())
    }

    /// The actor with display name `name`, on any node.
    #[must_use]
    pub fn resolve(&self, name: &str) -> Option<ActorId> {
        self.node.dir.lock().resolve(name)
    }

    /// What this node has counted since it joined.
    #[must_use]
    pub fn stats(&self) -> ClusterStats {
        let mut stats = self.node.counters.snapshot();
        stats.reconnects = self.reconnects.load(Ordering::Relaxed);
        stats
    }

    /// Leaves the cluster: announces it (the others drop this node's actors at
    /// once), removes the routes to other nodes' actors (requests and opens
    /// waiting on them fail, channels through them close), and stops the
    /// node's tasks. Local actors stay registered in the router. Waits at most
    /// about a second for the announcement to leave.
    pub async fn leave(self) {
        let node = &self.node;
        if node.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        node.announce(&Body::Leave);
        // Let the announcer publish what is queued, then flush the connection.
        let deadline = Instant::now() + Duration::from_secs(1);
        while !node.announce.is_closed() && Instant::now() < deadline {
            if node.pending_announcements() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), node.client.flush()).await;
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let routes: Vec<Participant> = node.proxies.lock().keys().copied().collect();
        let nodes: Vec<String> = node.dir.lock().nodes.keys().cloned().collect();
        for n in nodes {
            node.node_gone(&n);
        }
        for who in routes {
            node.remove_route(who);
        }
        for (_, task) in node.proxies.lock().drain() {
            task.abort();
        }
        node.links.fail_all();
        tracing::info!(node = %node.header.node, "left the cluster");
    }
}

async fn connect(
    config: &ClusterConfig,
    reconnects: Arc<AtomicU64>,
) -> Result<async_nats::Client, ClusterError> {
    let was_down = Arc::new(AtomicBool::new(false));
    let options = async_nats::ConnectOptions::new()
        .name(format!("sharded-router {}/{}", config.cluster, config.node))
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
        .event_callback(move |event| {
            let (reconnects, was_down) = (Arc::clone(&reconnects), Arc::clone(&was_down));
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        was_down.store(true, Ordering::SeqCst);
                        tracing::warn!("cluster: NATS connection lost");
                    }
                    async_nats::Event::Connected => {
                        if was_down.swap(false, Ordering::SeqCst) {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("cluster: NATS connection back");
                        }
                    }
                    other => tracing::debug!(event = %other, "cluster: NATS event"),
                }
            }
        });
    let connecting = options.connect(config.url.as_str());
    match tokio::time::timeout(config.connect_timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(ClusterError::Connect(e.to_string())),
        Err(_) => Err(ClusterError::Connect("timed out".to_owned())),
    }
}

/// Publishes membership and directory frames in the order they were queued.
async fn announcer(node: Arc<Node>, mut queue: mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    while let Some((subject, frame)) = queue.recv().await {
        let publish = node.client.publish(subject, Bytes::from(frame));
        if let Ok(Ok(())) = tokio::time::timeout(node.config.publish_timeout, publish).await {
            Counters::bump(&node.counters.frames_sent);
        }
        node.announced_one();
    }
}

async fn receive(node: Arc<Node>, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        super::inbound::handle(&node, &message.payload).await;
    }
}

/// Says this node is alive, takes silent nodes for dead, asks for missing
/// directory parts, and tells receivers where unacknowledged streams end.
async fn heartbeat(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        {
            let dir = node.dir.lock();
            node.announce(&Body::Heartbeat { version: dir.version });
        }
        let now = Instant::now();
        let timeout = node.config.timeout();
        let silent = node.dir.lock().silent_since(now.checked_sub(timeout).unwrap_or(now));
        for gone in silent {
            Counters::bump(&node.counters.nodes_failed);
            tracing::warn!(node = %gone, "cluster node silent past the timeout: taken for dead");
            node.node_gone(&gone);
        }
        let nodes: Vec<String> = node.dir.lock().nodes.keys().cloned().collect();
        for other in &nodes {
            if node.dir.lock().wants_snapshot(other, now, timeout) {
                node.announce_to(other, &Body::SnapshotRequest);
            }
        }
        let streams: Vec<(String, Arc<super::links::OutStream>)> =
            node.links.out.lock().iter().map(|(n, s)| (n.clone(), Arc::clone(s))).collect();
        for (other, stream) in streams {
            // A stream busy publishing is skipped: its Sync goes next beat.
            if let (true, Ok(last)) = (stream.pending(), stream.last.try_lock()) {
                let sync = Body::Sync { stream: node.header.incarnation, last: *last };
                node.publish_to(&other, stream.peer, &sync).await;
            }
        }
    }
}

/// Acknowledges what arrived of other nodes' streams, lost ranges first.
async fn acknowledge(node: Arc<Node>) {
    let mut tick = tokio::time::interval(ACK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut acks = Vec::new();
        {
            let mut inbound = node.links.inbound.lock();
            for (from, s) in inbound.iter_mut() {
                for (a, b) in s.lost.drain(..) {
                    acks.push((
                        from.clone(),
                        Body::Ack { stream: s.incarnation, upto: b, lost: Some((a, b)) },
                    ));
                }
                if s.last > s.acked {
                    acks.push((from.clone(), Body::Ack { stream: s.incarnation, upto: s.last, lost: None }));
                    s.acked = s.last;
                }
            }
        }
        for (to, ack) in acks {
            node.publish(&to, &ack).await;
        }
    }
}
