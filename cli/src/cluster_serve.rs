//! `serve --nats URL --node NAME`: the served router joins a cluster over NATS.
//! Its demo actors are then named `NAME.echo`, `NAME.counter`,
//! `NAME.channel-echo` and `NAME.greeter`, its gateway lists every actor of the
//! cluster with its node, and its clients reach any of them by name or id.

use std::error::Error;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use sharded_router::cluster::{Cluster, ClusterConfig};
use sharded_router::gateway::ActorInfo;
use sharded_router::{ActorId, Router};

/// The cluster a node joins when `--cluster` is not given.
pub const DEFAULT_CLUSTER: &str = "sharded-router";

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Join a cluster over the NATS server at this URL (e.g. nats://127.0.0.1:4222);
    /// needs --node.
    #[arg(long, value_name = "URL", requires = "node")]
    pub nats: Option<String>,
    /// This node's name, unique in its cluster (no dots, wildcards or spaces); its
    /// demo actors are named NAME.echo, NAME.counter, NAME.channel-echo and
    /// NAME.greeter. Needs --nats.
    #[arg(long, value_name = "NAME", requires = "nats")]
    pub node: Option<String>,
    /// The cluster's name: nodes that give the same name on one NATS server form
    /// one cluster.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER)]
    pub cluster: String,
    /// How often this node tells the others it is alive, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub heartbeat_ms: u64,
    /// How long a node may stay silent before the others take it for dead (its
    /// actors leave the listing, requests to them fail), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub node_timeout_ms: u64,
}

impl ClusterArgs {
    /// What this node's actor names start with: `NAME.` in a cluster, nothing
    /// when the router runs alone.
    pub fn name_prefix(&self) -> String {
        match (&self.nats, &self.node) {
            (Some(_), Some(node)) => format!("{node}."),
            _ => String::new(),
        }
    }

    /// Joins the cluster when `--nats` was given.
    pub async fn join(&self, router: &Router) -> Result<Option<Cluster>, Box<dyn Error>> {
        let (Some(url), Some(node)) = (&self.nats, &self.node) else {
            return Ok(None);
        };
        let config = ClusterConfig::new(self.cluster.as_str(), node.as_str(), url.as_str())
            .heartbeat(Duration::from_millis(self.heartbeat_ms))
            .node_timeout(Duration::from_millis(self.node_timeout_ms));
        let cluster = Cluster::join(router.clone(), config)
            .await
            .map_err(|e| format!("cannot join cluster {:?} as node {node:?} via {url}: {e}", self.cluster))?;
        Ok(Some(cluster))
    }
}

/// The gateway's view of a cluster, set once the node has joined: until then
/// (and when it runs alone) it lists nothing beyond the router's own actors.
#[derive(Clone, Default)]
pub struct Directory(Arc<OnceLock<Cluster>>);

impl Directory {
    /// Makes the listing cluster-wide.
    pub fn set(&self, cluster: Cluster) {
        let _ = self.0.set(cluster);
    }

    /// Every actor of the cluster, with its node and its name.
    pub fn list(&self) -> Vec<ActorInfo> {
        let Some(cluster) = self.0.get() else { return Vec::new() };
        cluster
            .directory()
            .into_iter()
            .map(|entry| ActorInfo { id: entry.id, name: entry.name, node: Some(entry.node) })
            .collect()
    }

    /// Publishes a local actor's name to the whole cluster (nothing alone).
    pub fn name(&self, id: ActorId, name: &str) -> Result<(), Box<dyn Error>> {
        if let Some(cluster) = self.0.get() {
            cluster.set_name(id, name).map_err(|e| format!("cannot name {name}: {e}"))?;
        }
        Ok(())
    }
}
