//! The routing mesh's part of a node's peer set: while some service publishes a port
//! in `ingress` mode, every node with an address on the `ingress` network answers on
//! that port and forwards to the service's serving tasks on any node, at their
//! addresses on `ingress`; tasks reply through the node the connection came in by,
//! so no node rewrites the client's address (Swarm's mesh does, moby#25526).

use std::collections::{BTreeMap, BTreeSet};

use super::Table;
use crate::pb;

/// A node's address on `ingress` without its prefix.
fn ip_of(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

impl Table {
    /// `node`'s part of the mesh: its address, every node's, and each published port
    /// with its serving tasks. None while no service publishes through the mesh, or
    /// before the node has its address.
    pub(super) fn ingress(&self, node: &str) -> Option<pb::Ingress> {
        let net = self.networks.get(super::INGRESS)?;
        let address = net.nodes.get(node)?;
        if net.vni == 0 {
            return None;
        }
        // (published, protocol) → (service, target, serving tasks' addresses); a port
        // two services claim goes to the first by name.
        let mut ports: BTreeMap<(u16, &str), (&str, u16, BTreeSet<&str>)> = BTreeMap::new();
        let mut publishers: Vec<_> = self
            .tasks
            .values()
            .filter_map(|e| Some((e.service.as_deref()?, e)))
            .filter(|(_, e)| !e.mesh_ports.is_empty())
            .collect();
        publishers.sort_by_key(|(s, e)| (*s, e.name.as_str()));
        for (service, e) in publishers {
            let at = e
                .attachments
                .iter()
                .find(|j| j.network == super::INGRESS)
                .map(|j| j.ip.as_str());
            for (published, protocol, target) in &e.mesh_ports {
                let key = (*published, protocol.as_str());
                let entry = ports
                    .entry(key)
                    .or_insert_with(|| (service, *target, BTreeSet::new()));
                if entry.0 != service {
                    continue;
                }
                if let (true, Some(ip)) = (e.serving, at) {
                    entry.2.insert(ip);
                }
            }
        }
        if ports.is_empty() {
            return None;
        }
        let nodes: BTreeSet<&str> = net.nodes.values().map(|a| ip_of(a)).collect();
        Some(pb::Ingress {
            network: super::INGRESS.to_string(),
            vni: net.vni,
            address: address.clone(),
            nodes: nodes.into_iter().map(str::to_string).collect(),
            ports: ports
                .into_iter()
                .map(
                    |((published, protocol), (service, target, backends))| pb::MeshPort {
                        published: published.into(),
                        protocol: protocol.to_string(),
                        service: service.to_string(),
                        target: target.into(),
                        backends: backends.into_iter().map(str::to_string).collect(),
                    },
                )
                .collect(),
        })
    }

    /// The other nodes on `ingress` as peers: (address on it, underlay address).
    pub(super) fn mesh_nodes(&self, node: &str) -> Vec<(&str, &str)> {
        let Some(net) = self.networks.get(super::INGRESS) else {
            return Vec::new();
        };
        net.nodes
            .iter()
            .filter(|(name, _)| name.as_str() != node)
            .filter_map(|(name, address)| Some((ip_of(address), self.nodes.get(name)?.as_str())))
            .collect()
    }
}
