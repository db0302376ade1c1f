//! The overlay peers of each node: for every network a node's tasks join, where the
//! other tasks on it run. Agents program their VXLAN forwarding entries from it (no
//! multicast, no learning, no gossip), and learn only the networks their own tasks
//! join.
//!
//! Three followers (tasks, nodes, networks) keep one table (`followed.rs`); a
//! subscriber's view is computed from it whenever it changes (`view.rs`, the
//! routing mesh's part in `mesh.rs`), and sent only when it differs from the last.

mod mesh;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use shoal_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::followed::Followed;
use crate::pb;

/// The routing mesh's network.
const INGRESS: &str = shoal_api::INGRESS_NETWORK;

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
    /// Its ports published through the routing mesh.
    mesh_ports: Vec<MeshPort>,
}

/// A port published through the routing mesh: (published, protocol, target).
type MeshPort = (u16, shoal_api::Protocol, u16);

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
    /// network → what its status says
    networks: HashMap<String, NetworkInfo>,
}

/// What the peer table needs of a Network's status.
#[derive(Clone, Debug, Default, PartialEq)]
struct NetworkInfo {
    vni: u32,
    /// its services' VIPs (service name → address)
    vips: BTreeMap<String, String>,
    /// On `ingress`, each node's address with its prefix (node name → `IP/LEN`).
    nodes: BTreeMap<String, String>,
}

pub struct PeerTable(Arc<Followed<Table>>);

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
    #[serde(default)]
    ports: Vec<shoal_api::PortSpec>,
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
    let mesh_ports = t
        .spec
        .ports
        .iter()
        .filter(|p| p.mode == shoal_api::PublishMode::Ingress)
        .filter_map(|p| Some((p.published?, p.protocol, p.target)))
        .collect();
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
        mesh_ports,
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
    vni: Option<u32>,
    #[serde(default)]
    services: Vec<shoal_api::ServiceVip>,
    #[serde(default)]
    nodes: Vec<shoal_api::NodeAddress>,
}

/// A network's VXLAN id, VIPs by service and (on `ingress`) node addresses.
fn network_info(stored: &[u8]) -> Option<NetworkInfo> {
    let n: StoredNetwork = serde_json::from_slice(stored).ok()?;
    Some(NetworkInfo {
        vni: n.status.vni.unwrap_or(0),
        vips: n
            .status
            .services
            .into_iter()
            .map(|v| (v.name, v.vip))
            .collect(),
        nodes: n
            .status
            .nodes
            .into_iter()
            .map(|a| (a.name, a.address))
            .collect(),
    })
}

impl PeerTable {
    pub fn start(objects: ObjectStore, shutdown: CancellationToken) -> Arc<Self> {
        let table: Arc<Followed<Table>> = Followed::new();
        table.follow::<shoal_api::Task, _>(
            objects.clone(),
            endpoint,
            |t| &mut t.tasks,
            shutdown.clone(),
        );
        table.follow::<shoal_api::Node, _>(
            objects.clone(),
            node_ip,
            |t| &mut t.nodes,
            shutdown.clone(),
        );
        table.follow::<shoal_api::Network, _>(objects, network_info, |t| &mut t.networks, shutdown);
        Arc::new(PeerTable(table))
    }

    /// `node`'s peer set now and whenever it changes (as the agent stream sends it),
    /// until the receiver goes.
    pub fn subscribe(&self, node: &str) -> mpsc::Receiver<Result<pb::PeerSet, tonic::Status>> {
        let node = node.to_string();
        self.0.subscribe(move |t| Some(t.lock().view(&node)))
    }
}

#[cfg(test)]
mod tests;
