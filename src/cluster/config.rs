//! [`ClusterConfig`], [`ClusterError`], [`ClusterStats`] and [`DirectoryEntry`]:
//! the plain data of the cluster's API.

// Built without the client for the fuzz targets, where the crate-private
// helpers go unused.
#![cfg_attr(not(feature = "nats"), allow(dead_code))]

use std::fmt;
use std::time::Duration;

use crate::ids::ActorId;

/// How a node joins a cluster.
///
/// ```
/// use std::time::Duration;
/// use sharded_router::cluster::ClusterConfig;
/// let config = ClusterConfig::new("demo", "a", "nats://127.0.0.1:4222")
///     .heartbeat(Duration::from_millis(200))
///     .node_timeout(Duration::from_secs(1));
/// assert_eq!(config.node_name(), "a");
/// ```
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub(crate) cluster: String,
    pub(crate) node: String,
    pub(crate) url: String,
    pub(crate) heartbeat: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) remote_wait: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) publish_timeout: Duration,
}

impl ClusterConfig {
    /// A node named `node` of the cluster `cluster`, over the NATS server at
    /// `url`. Defaults: heartbeat every 500 ms, a node silent for 3 s is dead,
    /// a request or channel open waits at most 30 s on the remote node.
    pub fn new(cluster: impl Into<String>, node: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            node: node.into(),
            url: url.into(),
            heartbeat: Duration::from_millis(500),
            node_timeout: Duration::from_secs(3),
            remote_wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(2),
        }
    }

    /// How often this node says it is alive (at least 10 ms).
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// How long a node may stay silent before the others take it for dead:
    /// its actors leave their directories, requests and opens to them fail and
    /// channels to them close. At least twice the heartbeat.
    #[must_use]
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// The longest the node hosting an actor waits for its answer to a request
    /// or channel open from another node (the requester's own timeout still
    /// applies, on its side).
    #[must_use]
    pub fn remote_wait(mut self, wait: Duration) -> Self {
        self.remote_wait = wait;
        self
    }

    /// How long [`Cluster::join`](super::Cluster::join) tries to reach the server.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The cluster's name.
    #[must_use]
    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    /// This node's name.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The effective node timeout: as configured, but at least two heartbeats.
    pub(crate) fn timeout(&self) -> Duration {
        self.node_timeout.max(self.heartbeat * 2)
    }
}

/// Why a cluster call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// A cluster or node name that cannot be a NATS subject token (empty, over
    /// 255 bytes, or with `.`, `*`, `>` or whitespace).
    InvalidName(String),
    /// The NATS server could not be reached or refused the node.
    Connect(String),
    /// The router already belongs to a cluster.
    AlreadyJoined,
    /// The router has shut down.
    Shutdown,
    /// The actor is not registered on this node.
    NotLocal(ActorId),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(name) => write!(f, "invalid cluster or node name {name:?}"),
            Self::Connect(why) => write!(f, "cannot connect to NATS: {why}"),
            Self::AlreadyJoined => f.write_str("the router already belongs to a cluster"),
            Self::Shutdown => f.write_str("the router has shut down"),
            Self::NotLocal(id) => write!(f, "actor {id} is not registered on this node"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// One actor of the cluster, as a node's directory knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryEntry {
    /// The actor.
    pub id: ActorId,
    /// The node it is registered on.
    pub node: String,
    /// Its display name, if one was set ([`Cluster::set_name`](super::Cluster::set_name)).
    pub name: Option<String>,
}

/// What a node has seen, counted since it joined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Frames published.
    pub frames_sent: u64,
    /// Frames received and decoded.
    pub frames_received: u64,
    /// Frames that did not decode, dropped.
    pub decode_errors: u64,
    /// One-way and channel messages accepted for another node that did not reach
    /// it (lost in transit, its node died or was unreachable): each is also a
    /// dead letter of this node's router.
    pub remote_dead_letters: u64,
    /// Messages from other nodes that this node could not deliver to a local
    /// actor (each also a dead letter of this node's router).
    pub inbound_dead_letters: u64,
    /// Times the connection to NATS was re-established.
    pub reconnects: u64,
    /// Nodes taken for dead (silent past the node timeout).
    pub nodes_failed: u64,
    /// Ids that two nodes registered at once (each node keeps routing to its own).
    pub conflicts: u64,
}

/// `name` as one NATS subject token.
pub(crate) fn valid_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}
