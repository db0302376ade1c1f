//! The overlay peers of each node: for every network a node's tasks join, where the
//! other tasks on it run. Agents program their VXLAN forwarding entries from it (no
//! multicast, no learning, no gossip), and learn only the networks their own tasks
//! join.
//!
//! Two followers (tasks and nodes) keep one table; a subscriber's view is computed
//! from it whenever it changes, and sent only when it differs from the last one sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use shoal_store::objects::{Follower, Item};
use shoal_store::{ObjectStore, Revision};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::pb;

/// A task as the peer table needs it: its node and its addresses (network, vni, ip).
#[derive(Clone, Debug, PartialEq)]
struct Endpoint {
    node: String,
    attachments: Vec<(String, u32, String)>,
}

#[derive(Default)]
struct Table {
    tasks: HashMap<String, Endpoint>,
    /// node → its underlay address
    nodes: HashMap<String, String>,
}

pub struct PeerTable {
    table: Mutex<Table>,
    /// Moves on every change; subscribers recompute on it.
    generation: watch::Sender<u64>,
}

#[derive(serde::Deserialize, Default)]
struct StoredTask {
    #[serde(default)]
    spec: StoredSpec,
    #[serde(default)]
    status: StoredStatus,
}

#[derive(serde::Deserialize, Default)]
struct StoredSpec {
    #[serde(default)]
    node: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct StoredStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    attachments: Vec<shoal_api::Attachment>,
}

/// A task that may have a container on its node and holds addresses; ended tasks
/// have none (their addresses are released).
fn endpoint(stored: &[u8]) -> Option<Endpoint> {
    let t: StoredTask = serde_json::from_slice(stored).ok()?;
    let node = t.spec.node.filter(|n| !n.is_empty())?;
    if matches!(
        t.status.state.as_str(),
        "complete" | "failed" | "rejected" | "shutdown" | "orphaned"
    ) {
        return None;
    }
    let attachments: Vec<(String, u32, String)> = t
        .status
        .attachments
        .into_iter()
        .filter(|a| a.vni != 0)
        .filter_map(|a| {
            let ip = a.address.split('/').next()?.to_string();
            Some((a.network, a.vni, ip))
        })
        .collect();
    (!attachments.is_empty()).then_some(Endpoint { node, attachments })
}

#[derive(serde::Deserialize, Default)]
struct StoredNode {
    #[serde(default)]
    status: StoredNodeStatus,
}

#[derive(serde::Deserialize, Default)]
struct StoredNodeStatus {
    #[serde(default)]
    address: String,
}

/// The node's registered address, as an IP (it may carry the node API's port).
fn node_ip(stored: &[u8]) -> Option<String> {
    let n: StoredNode = serde_json::from_slice(stored).ok()?;
    let a = n.status.address;
    let ip = a
        .parse::<IpAddr>()
        .ok()
        .or_else(|| a.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_string())
}

struct Tasks(Arc<PeerTable>);
struct Nodes(Arc<PeerTable>);

impl Follower<Option<Endpoint>> for Tasks {
    fn listed(&mut self, items: Vec<Item<Option<Endpoint>>>, _: Revision) {
        self.0.change(|t| {
            t.tasks = items
                .into_iter()
                .filter_map(|i| Some((i.name, i.value?)))
                .collect();
        });
    }
    fn applied(&mut self, item: Item<Option<Endpoint>>) {
        self.0.change(|t| match item.value {
            Some(e) => {
                t.tasks.insert(item.name, e);
            }
            None => {
                t.tasks.remove(&item.name);
            }
        });
    }
    fn deleted(&mut self, name: &str, _: Revision) {
        self.0.change(|t| {
            t.tasks.remove(name);
        });
    }
}

impl Follower<Option<String>> for Nodes {
    fn listed(&mut self, items: Vec<Item<Option<String>>>, _: Revision) {
        self.0.change(|t| {
            t.nodes = items
                .into_iter()
                .filter_map(|i| Some((i.name, i.value?)))
                .collect();
        });
    }
    fn applied(&mut self, item: Item<Option<String>>) {
        self.0.change(|t| match item.value {
            Some(ip) => {
                t.nodes.insert(item.name, ip);
            }
            None => {
                t.nodes.remove(&item.name);
            }
        });
    }
    fn deleted(&mut self, name: &str, _: Revision) {
        self.0.change(|t| {
            t.nodes.remove(name);
        });
    }
}

impl Table {
    /// What `node` needs: every network its tasks join, with the other nodes' tasks
    /// on it. Sorted, so equal views compare equal.
    fn view(&self, node: &str) -> pb::PeerSet {
        let mine: BTreeSet<(&str, u32)> = self
            .tasks
            .values()
            .filter(|e| e.node == node)
            .flat_map(|e| e.attachments.iter().map(|(n, v, _)| (n.as_str(), *v)))
            .collect();
        let mut peers: BTreeMap<(&str, u32), BTreeSet<(&str, &str)>> =
            mine.iter().map(|k| (*k, BTreeSet::new())).collect();
        for e in self.tasks.values().filter(|e| e.node != node) {
            let Some(at) = self.nodes.get(&e.node) else {
                continue;
            };
            for (net, vni, ip) in &e.attachments {
                if let Some(set) = peers.get_mut(&(net.as_str(), *vni)) {
                    set.insert((ip.as_str(), at.as_str()));
                }
            }
        }
        pb::PeerSet {
            networks: peers
                .into_iter()
                .map(|((network, vni), set)| pb::NetworkPeers {
                    network: network.to_string(),
                    vni,
                    peers: set
                        .into_iter()
                        .map(|(address, node_address)| pb::Peer {
                            address: address.to_string(),
                            node_address: node_address.to_string(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl PeerTable {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let (generation, _) = watch::channel(0);
        let table = Arc::new(PeerTable {
            table: Mutex::new(Table::default()),
            generation,
        });
        let (tasks, nodes) = (Tasks(table.clone()), Nodes(table.clone()));
        tokio::spawn(follow::<shoal_api::Task, _, _>(
            objects.clone(),
            tasks,
            endpoint,
            shutdown.clone(),
        ));
        tokio::spawn(follow::<shoal_api::Node, _, _>(
            objects, nodes, node_ip, shutdown,
        ));
        table
    }

    fn change(&self, f: impl FnOnce(&mut Table)) {
        f(&mut self.table.lock().unwrap_or_else(|p| p.into_inner()));
        self.generation.send_modify(|g| *g += 1);
    }

    fn view(&self, node: &str) -> pb::PeerSet {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .view(node)
    }

    /// `node`'s peer set now and whenever it changes, until the receiver goes.
    pub fn subscribe(self: &Arc<Self>, node: &str) -> mpsc::Receiver<pb::PeerSet> {
        let (tx, rx) = mpsc::channel(1);
        let mut changed = self.generation.subscribe();
        let table = self.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            let mut last: Option<pb::PeerSet> = None;
            loop {
                changed.mark_unchanged();
                let view = table.view(&node);
                if last.as_ref() != Some(&view) {
                    if tx.send(view.clone()).await.is_err() {
                        return;
                    }
                    last = Some(view);
                }
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}

async fn follow<R, T, F>(
    objects: ObjectStore,
    mut follower: F,
    decode: fn(&[u8]) -> T,
    shutdown: CancellationToken,
) where
    R: shoal_api::Resource,
    T: Send + 'static,
    F: Follower<T>,
{
    let kind = shoal_api::kind_of::<R>();
    tokio::select! {
        _ = objects.follow_stored(kind, decode, &mut follower) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(node: &str, net: &str, vni: u32, ip: &str) -> Endpoint {
        Endpoint {
            node: node.into(),
            attachments: vec![(net.into(), vni, ip.into())],
        }
    }

    #[test]
    fn a_node_sees_only_its_networks_and_the_other_nodes_tasks_on_them() {
        let mut t = Table::default();
        t.nodes.insert("a".into(), "10.99.0.1".into());
        t.nodes.insert("b".into(), "10.99.0.2".into());
        t.nodes.insert("c".into(), "10.99.0.3".into());
        t.tasks
            .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
        t.tasks
            .insert("b1".into(), task("b", "front", 4096, "10.10.1.3"));
        t.tasks
            .insert("c1".into(), task("c", "back", 4097, "10.10.2.2"));
        let view = t.view("a");
        assert_eq!(view.networks.len(), 1, "only front: {view:?}");
        let front = &view.networks[0];
        assert_eq!((front.network.as_str(), front.vni), ("front", 4096));
        let peers: Vec<(&str, &str)> = front
            .peers
            .iter()
            .map(|p| (p.address.as_str(), p.node_address.as_str()))
            .collect();
        assert_eq!(peers, [("10.10.1.3", "10.99.0.2")], "not its own task");
        assert!(t.view("nobody").networks.is_empty());
    }

    #[test]
    fn ended_and_unbound_tasks_are_no_peers() {
        let json = |state: &str, node: &str| {
            format!(
                r#"{{"spec":{{"node":"{node}"}},"status":{{"state":"{state}","attachments":[{{"network":"front","address":"10.10.1.2/24","vni":4096}}]}}}}"#
            )
        };
        assert!(endpoint(json("running", "a").as_bytes()).is_some());
        assert!(endpoint(json("starting", "a").as_bytes()).is_some());
        assert!(endpoint(json("failed", "a").as_bytes()).is_none());
        assert!(endpoint(json("running", "").as_bytes()).is_none());
        assert_eq!(
            node_ip(br#"{"status":{"address":"10.99.0.2:7444"}}"#).as_deref(),
            Some("10.99.0.2")
        );
    }
}
