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

/// A task as the peer table needs it: where it runs, what it is called, whether it
/// serves, and its addresses.
#[derive(Clone, Debug, PartialEq)]
struct Endpoint {
    node: String,
    name: String,
    service: Option<String>,
    /// Meant to run, running and, with a health check, healthy: in DNS. A task that stops serving
    /// leaves DNS at once but stays a peer until its container has stopped.
    serving: bool,
    attachments: Vec<Joined>,
}

#[derive(Clone, Debug, PartialEq)]
struct Joined {
    network: String,
    vni: u32,
    ip: String,
    aliases: Vec<String>,
}

#[derive(Default)]
struct Table {
    tasks: HashMap<String, Endpoint>,
    /// node → its underlay address
    nodes: HashMap<String, String>,
    /// network → its services' VIPs (service name → address)
    vips: HashMap<String, BTreeMap<String, String>>,
}

pub struct PeerTable {
    table: Mutex<Table>,
    /// Moves on every change; subscribers recompute on it.
    generation: watch::Sender<u64>,
}

#[derive(serde::Deserialize, Default)]
struct StoredTask {
    #[serde(default)]
    metadata: StoredMeta,
    #[serde(default)]
    spec: StoredSpec,
    #[serde(default)]
    status: StoredStatus,
}

#[derive(serde::Deserialize, Default)]
struct StoredMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StoredSpec {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    desired_state: String,
    #[serde(default)]
    networks: Vec<shoal_api::NetworkRef>,
}

#[derive(serde::Deserialize, Default)]
struct StoredStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    health: Option<String>,
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
    // With a health check, a task serves once it is healthy (Kubernetes' readiness):
    // a task still starting gets no connection it might refuse.
    let serving = matches!(t.spec.desired_state.as_str(), "" | "running")
        && t.status.state == "running"
        && matches!(t.status.health.as_deref(), None | Some("healthy"));
    let networks = &t.spec.networks;
    let attachments: Vec<Joined> = t
        .status
        .attachments
        .into_iter()
        .filter(|a| a.vni != 0)
        .filter_map(|a| {
            let ip = a.address.split('/').next()?.to_string();
            let aliases = networks
                .iter()
                .find(|n| n.name() == a.network)
                .map(|n| n.aliases().to_vec())
                .unwrap_or_default();
            Some(Joined {
                network: a.network,
                vni: a.vni,
                ip,
                aliases,
            })
        })
        .collect();
    (!attachments.is_empty()).then(|| Endpoint {
        node,
        service: t.metadata.labels.get(shoal_api::labels::SERVICE).cloned(),
        name: t.metadata.name,
        serving,
        attachments,
    })
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

#[derive(serde::Deserialize, Default)]
struct StoredNetwork {
    #[serde(default)]
    status: StoredNetworkStatus,
}

#[derive(serde::Deserialize, Default)]
struct StoredNetworkStatus {
    #[serde(default)]
    services: Vec<shoal_api::ServiceVip>,
}

/// A network's VIPs by service.
fn network_vips(stored: &[u8]) -> Option<BTreeMap<String, String>> {
    let n: StoredNetwork = serde_json::from_slice(stored).ok()?;
    Some(
        n.status
            .services
            .into_iter()
            .map(|v| (v.name, v.vip))
            .collect(),
    )
}

/// Follows one kind into one map of the table, by object name (an object that does
/// not decode, or is of no interest, is absent).
struct ByName<T> {
    table: Arc<PeerTable>,
    map: fn(&mut Table) -> &mut HashMap<String, T>,
}

impl<T: Send> Follower<Option<T>> for ByName<T> {
    fn listed(&mut self, items: Vec<Item<Option<T>>>, _: Revision) {
        let map = self.map;
        self.table.change(|t| {
            *map(t) = items
                .into_iter()
                .filter_map(|i| Some((i.name, i.value?)))
                .collect();
        });
    }
    fn applied(&mut self, item: Item<Option<T>>) {
        let map = self.map;
        self.table.change(|t| match item.value {
            Some(v) => {
                map(t).insert(item.name, v);
            }
            None => {
                map(t).remove(&item.name);
            }
        });
    }
    fn deleted(&mut self, name: &str, _: Revision) {
        let map = self.map;
        self.table.change(|t| {
            map(t).remove(name);
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
            .flat_map(|e| e.attachments.iter().map(|j| (j.network.as_str(), j.vni)))
            .collect();
        let mut peers: BTreeMap<(&str, u32), BTreeSet<(&str, &str)>> =
            mine.iter().map(|k| (*k, BTreeSet::new())).collect();
        let mut names: BTreeMap<&str, BTreeMap<String, BTreeSet<&str>>> = BTreeMap::new();
        // network → (service, VIP) → serving tasks' addresses
        let mut backends: BTreeMap<&str, BTreeMap<(&str, &str), BTreeSet<&str>>> = BTreeMap::new();
        // Every VIP of the node's networks, served or not (connections to one with no
        // serving task are refused, not left to hang).
        for (net, _) in &mine {
            if let Some(vips) = self.vips.get(*net) {
                let on = backends.entry(net).or_default();
                for (svc, vip) in vips {
                    on.entry((svc.as_str(), vip.as_str())).or_default();
                    names
                        .entry(net)
                        .or_default()
                        .entry(svc.clone())
                        .or_default()
                        .insert(vip.as_str());
                }
            }
        }
        for e in self.tasks.values() {
            let at = self.nodes.get(&e.node).filter(|_| e.node != node);
            for j in &e.attachments {
                let key = (j.network.as_str(), j.vni);
                let Some(set) = peers.get_mut(&key) else {
                    continue;
                };
                if let Some(at) = at {
                    set.insert((j.ip.as_str(), at.as_str()));
                }
                if e.serving {
                    let vips = self.vips.get(key.0);
                    let vip = e.service.as_ref().and_then(|s| vips?.get(s));
                    let on = names.entry(key.0).or_default();
                    for (name, via_vip) in dns_names(e, j) {
                        let at = match vip {
                            Some(v) if via_vip => v.as_str(),
                            _ => j.ip.as_str(),
                        };
                        on.entry(name).or_default().insert(at);
                    }
                    if let (Some(s), Some(v)) = (&e.service, vip) {
                        backends
                            .entry(key.0)
                            .or_default()
                            .entry((s.as_str(), v.as_str()))
                            .or_default()
                            .insert(j.ip.as_str());
                    }
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
                    names: names
                        .remove(network)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(name, ips)| pb::DnsName {
                            name,
                            addresses: ips.into_iter().map(str::to_string).collect(),
                        })
                        .collect(),
                    vips: backends
                        .remove(network)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|((service, address), ips)| pb::Vip {
                            service: service.to_string(),
                            address: address.to_string(),
                            backends: ips.into_iter().map(str::to_string).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The names a serving task answers to on one of its networks, each with whether it
/// means the service's VIP when it has one: its own name (no), its aliases and
/// `<service>` (yes: a service's name is its VIP, or with `endpointMode: dnsrr` its
/// tasks' addresses), `tasks.<service>` (no: always the tasks).
fn dns_names(e: &Endpoint, j: &Joined) -> Vec<(String, bool)> {
    let mut names = vec![(e.name.clone(), false)];
    names.extend(j.aliases.iter().map(|a| (a.clone(), e.service.is_some())));
    if let Some(s) = &e.service {
        names.push((s.clone(), true));
        names.push((format!("tasks.{s}"), false));
    }
    names
}

impl PeerTable {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let (generation, _) = watch::channel(0);
        let table = Arc::new(PeerTable {
            table: Mutex::new(Table::default()),
            generation,
        });
        let tasks = ByName {
            table: table.clone(),
            map: |t| &mut t.tasks,
        };
        let nodes = ByName {
            table: table.clone(),
            map: |t| &mut t.nodes,
        };
        let networks = ByName {
            table: table.clone(),
            map: |t| &mut t.vips,
        };
        tokio::spawn(follow::<shoal_api::Task, _, _>(
            objects.clone(),
            tasks,
            endpoint,
            shutdown.clone(),
        ));
        tokio::spawn(follow::<shoal_api::Node, _, _>(
            objects.clone(),
            nodes,
            node_ip,
            shutdown.clone(),
        ));
        tokio::spawn(follow::<shoal_api::Network, _, _>(
            objects,
            networks,
            network_vips,
            shutdown,
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

    /// `node`'s peer set now and whenever it changes (as the agent stream sends it),
    /// until the receiver goes.
    pub fn subscribe(
        self: &Arc<Self>,
        node: &str,
    ) -> mpsc::Receiver<Result<pb::PeerSet, tonic::Status>> {
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
                    if tx.send(Ok(view.clone())).await.is_err() {
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
            name: format!("web.{node}"),
            service: Some("web".into()),
            serving: true,
            attachments: vec![Joined {
                network: net.into(),
                vni,
                ip: ip.into(),
                aliases: vec!["www".into()],
            }],
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
        let names: Vec<(&str, Vec<&str>)> = front
            .names
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.addresses.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("tasks.web", vec!["10.10.1.2", "10.10.1.3"]),
                ("web", vec!["10.10.1.2", "10.10.1.3"]),
                ("web.a", vec!["10.10.1.2"]),
                ("web.b", vec!["10.10.1.3"]),
                ("www", vec!["10.10.1.2", "10.10.1.3"]),
            ],
            "its own task's names too; nothing of back"
        );
        assert!(t.view("nobody").networks.is_empty());
    }

    #[test]
    fn a_service_name_is_its_vip_balanced_over_its_serving_tasks() {
        let mut t = Table::default();
        t.nodes.insert("b".into(), "10.99.0.2".into());
        t.vips.insert(
            "front".into(),
            [("web".to_string(), "10.10.1.9".to_string())].into(),
        );
        t.tasks
            .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
        t.tasks
            .insert("b1".into(), task("b", "front", 4096, "10.10.1.3"));
        let view = t.view("a");
        let front = &view.networks[0];
        let name = |n: &str| {
            front
                .names
                .iter()
                .find(|d| d.name == n)
                .map(|d| d.addresses.clone())
                .unwrap_or_default()
        };
        assert_eq!(name("web"), ["10.10.1.9"]);
        assert_eq!(
            name("www"),
            ["10.10.1.9"],
            "a service's alias is its VIP too"
        );
        assert_eq!(name("tasks.web"), ["10.10.1.2", "10.10.1.3"]);
        assert_eq!(front.vips.len(), 1);
        assert_eq!(front.vips[0].address, "10.10.1.9");
        assert_eq!(front.vips[0].backends, ["10.10.1.2", "10.10.1.3"]);
    }

    #[test]
    fn a_task_that_stops_serving_leaves_dns_but_stays_a_peer() {
        let mut t = Table::default();
        t.nodes.insert("b".into(), "10.99.0.2".into());
        t.tasks
            .insert("a1".into(), task("a", "front", 4096, "10.10.1.2"));
        let mut leaving = task("b", "front", 4096, "10.10.1.3");
        leaving.serving = false;
        t.tasks.insert("b1".into(), leaving);
        let view = t.view("a");
        let front = &view.networks[0];
        assert_eq!(front.peers.len(), 1, "still a peer while it stops");
        assert!(
            front
                .names
                .iter()
                .all(|n| !n.addresses.contains(&"10.10.1.3".to_string())),
            "{:?}",
            front.names
        );
    }

    #[test]
    fn ended_and_unbound_tasks_are_no_peers() {
        let json = |state: &str, node: &str| {
            format!(
                r#"{{"spec":{{"node":"{node}"}},"status":{{"state":"{state}","attachments":[{{"network":"front","address":"10.10.1.2/24","vni":4096}}]}}}}"#
            )
        };
        assert!(endpoint(json("running", "a").as_bytes()).is_some_and(|e| e.serving));
        assert!(endpoint(json("starting", "a").as_bytes()).is_some_and(|e| !e.serving));
        assert!(endpoint(json("starting", "a").as_bytes()).is_some());
        assert!(endpoint(json("failed", "a").as_bytes()).is_none());
        assert!(endpoint(json("running", "").as_bytes()).is_none());
        assert_eq!(
            node_ip(br#"{"status":{"address":"10.99.0.2:7444"}}"#).as_deref(),
            Some("10.99.0.2")
        );
    }
}
