//! The directory: which node hosts which actor, as this node knows it.
//!
//! Each node is the only authority on its own actors. It numbers the changes
//! to its part (`version`) and announces each on the members subject
//! (`DirAdd`, `DirRemove`); its heartbeat carries the current version. A node
//! that sees a version it cannot reach by the announcements it got (one was
//! lost, it joined late, the server restarted) asks the owner for a snapshot of
//! its part, which replaces what it knew. So every node caches every location,
//! learns changes without asking per message, and heals by itself within a
//! heartbeat or two of any loss.
//!
//! This type is plain state: it returns what must be done (routes to add or
//! remove) and the caller does it outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::ids::ActorId;

use super::config::DirectoryEntry;

/// What the caller must do after a directory change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Register a route (a proxy) to `id` on `node`.
    Route { node: String, incarnation: u64, id: ActorId },
    /// Remove the route to `id`.
    Unroute { id: ActorId },
}

/// What a frame told of its sender's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Known,
    New,
    Replaced,
}

/// Another node, as this one knows it.
pub(crate) struct NodeView {
    pub(crate) incarnation: u64,
    /// The version of its part that `entries` reflect.
    pub(crate) version: u64,
    /// The newest version it announced.
    pub(crate) announced: u64,
    pub(crate) last_seen: Instant,
    pub(crate) entries: HashMap<ActorId, Option<String>>,
    /// Snapshot parts received so far, and when it was asked for.
    pub(crate) incoming: Vec<(ActorId, Option<String>)>,
    pub(crate) asked: Option<Instant>,
    /// A snapshot was applied: announcements can be applied on top.
    pub(crate) synced: bool,
}

/// This node's view of the cluster.
pub(crate) struct Directory {
    pub(crate) node: String,
    /// This node's actors and their names.
    pub(crate) local: HashMap<ActorId, Option<String>>,
    pub(crate) version: u64,
    pub(crate) nodes: BTreeMap<String, NodeView>,
    /// Routes registered in the router: remote actor -> (node, incarnation).
    pub(crate) routes: HashMap<ActorId, (String, u64)>,
    /// The incarnation of each node that said it leaves: its late frames are
    /// ignored rather than taken for a new arrival.
    pub(crate) left: HashMap<String, u64>,
}

impl Directory {
    pub(crate) fn new(node: String) -> Self {
        Self {
            node,
            local: HashMap::new(),
            version: 0,
            nodes: BTreeMap::new(),
            routes: HashMap::new(),
            left: HashMap::new(),
        }
    }

    /// Records that `node` is alive: `Known`, `New`, or `Replaced` (a new
    /// incarnation; the actions for the old one's departure are in `out`).
    pub(crate) fn seen(&mut self, node: &str, incarnation: u64, now: Instant, out: &mut Vec<Action>) -> Seen {
        let mut seen = Seen::New;
        if let Some(view) = self.nodes.get_mut(node) {
            if view.incarnation == incarnation {
                view.last_seen = now;
                return Seen::Known;
            }
            self.remove_node(node, out);
            seen = Seen::Replaced;
        }
        let view = NodeView {
            incarnation,
            version: 0,
            announced: 0,
            last_seen: now,
            entries: HashMap::new(),
            incoming: Vec::new(),
            asked: None,
            synced: false,
        };
        self.nodes.insert(node.to_owned(), view);
        seen
    }

    /// `node` left or died: its actors leave the directory.
    pub(crate) fn remove_node(&mut self, node: &str, out: &mut Vec<Action>) -> bool {
        let Some(view) = self.nodes.remove(node) else { return false };
        for id in view.entries.into_keys() {
            self.unroute(id, node, out);
        }
        true
    }

    fn route(&mut self, id: ActorId, node: &str, incarnation: u64, out: &mut Vec<Action>) {
        if self.local.contains_key(&id) || self.routes.contains_key(&id) {
            return;
        }
        self.routes.insert(id, (node.to_owned(), incarnation));
        out.push(Action::Route { node: node.to_owned(), incarnation, id });
    }

    /// Claims the route to `id` on `node` ahead of the directory (a channel
    /// opened by an actor this node has not heard of yet). `false` if the id is
    /// local or routed already.
    pub(crate) fn claim_route(&mut self, id: ActorId, node: &str, incarnation: u64) -> bool {
        let mut out = Vec::new();
        self.route(id, node, incarnation, &mut out);
        !out.is_empty()
    }

    fn unroute(&mut self, id: ActorId, node: &str, out: &mut Vec<Action>) {
        if self.routes.get(&id).is_some_and(|(n, _)| n == node) {
            self.routes.remove(&id);
            out.push(Action::Unroute { id });
        }
    }

    /// Whether `node`'s announced version is ahead of what this node has, so a
    /// snapshot should be asked for (not more often than `retry` apart).
    pub(crate) fn wants_snapshot(&mut self, node: &str, now: Instant, retry: std::time::Duration) -> bool {
        let Some(view) = self.nodes.get_mut(node) else { return false };
        if view.synced && view.announced <= view.version {
            return false;
        }
        if view.asked.is_some_and(|at| now.saturating_duration_since(at) < retry) {
            return false;
        }
        view.asked = Some(now);
        view.incoming.clear();
        true
    }

    /// A heartbeat of `node` at `version`.
    pub(crate) fn announced(&mut self, node: &str, version: u64) {
        if let Some(view) = self.nodes.get_mut(node) {
            view.announced = view.announced.max(version);
        }
    }

    /// An announced change of `node`'s part, at `version`.
    pub(crate) fn delta(
        &mut self,
        node: &str,
        version: u64,
        id: ActorId,
        add: Option<Option<String>>,
        out: &mut Vec<Action>,
    ) {
        let Some(view) = self.nodes.get_mut(node) else { return };
        view.announced = view.announced.max(version);
        if !view.synced || version != view.version + 1 {
            // A gap (or a snapshot is on its way): the snapshot will bring it.
            return;
        }
        view.version = version;
        let incarnation = view.incarnation;
        match add {
            Some(name) => {
                view.entries.insert(id, name);
                self.route(id, node, incarnation, out);
            }
            None => {
                view.entries.remove(&id);
                self.unroute(id, node, out);
            }
        }
    }

    /// One part of `node`'s snapshot at `version`; the last part replaces its
    /// entries.
    pub(crate) fn snapshot(
        &mut self,
        node: &str,
        version: u64,
        last: bool,
        entries: Vec<(ActorId, Option<String>)>,
        out: &mut Vec<Action>,
    ) {
        let Some(view) = self.nodes.get_mut(node) else { return };
        view.incoming.extend(entries);
        if !last {
            return;
        }
        view.asked = None;
        if view.synced && version < view.version {
            view.incoming.clear();
            return;
        }
        let new: HashMap<ActorId, Option<String>> = std::mem::take(&mut view.incoming).into_iter().collect();
        let old = std::mem::replace(&mut view.entries, new);
        view.version = version;
        view.synced = true;
        view.announced = view.announced.max(version);
        let incarnation = view.incarnation;
        let added: Vec<ActorId> = view.entries.keys().filter(|id| !old.contains_key(id)).copied().collect();
        let gone: Vec<ActorId> = old.keys().filter(|id| !view.entries.contains_key(id)).copied().collect();
        for id in gone {
            self.unroute(id, node, out);
        }
        for id in added {
            self.route(id, node, incarnation, out);
        }
        // Entries whose route was refused earlier (a conflict) are not retried.
    }

    /// The nodes silent since before `limit`.
    pub(crate) fn silent_since(&self, limit: Instant) -> Vec<String> {
        self.nodes.iter().filter(|(_, v)| v.last_seen < limit).map(|(n, _)| n.clone()).collect()
    }

    /// Every actor of the cluster this node knows of.
    pub(crate) fn entries(&self) -> Vec<DirectoryEntry> {
        let mut out: Vec<DirectoryEntry> = self
            .local
            .iter()
            .map(|(id, name)| DirectoryEntry { id: *id, node: self.node.clone(), name: name.clone() })
            .collect();
        for (node, view) in &self.nodes {
            out.extend(view.entries.iter().map(|(id, name)| DirectoryEntry {
                id: *id,
                node: node.clone(),
                name: name.clone(),
            }));
        }
        out.sort_by(|a, b| (&a.node, a.id).cmp(&(&b.node, b.id)));
        out
    }

    pub(crate) fn locate(&self, id: ActorId) -> Option<String> {
        if self.local.contains_key(&id) {
            return Some(self.node.clone());
        }
        self.nodes.iter().find(|(_, v)| v.entries.contains_key(&id)).map(|(n, _)| n.clone())
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<ActorId> {
        let named = |entries: &HashMap<ActorId, Option<String>>| {
            entries.iter().find(|(_, n)| n.as_deref() == Some(name)).map(|(id, _)| *id)
        };
        named(&self.local).or_else(|| self.nodes.values().find_map(|v| named(&v.entries)))
    }
}
