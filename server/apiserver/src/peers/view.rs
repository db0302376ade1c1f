//! One node's peer set, computed from the table.

use std::collections::{BTreeMap, BTreeSet};

use super::{Endpoint, Joined, Table};
use crate::pb;

impl Table {
    /// What `node` needs: every network its tasks join, with the other nodes' tasks
    /// on it, and the routing mesh while some service publishes through it. Sorted,
    /// so equal views compare equal.
    pub(super) fn view(&self, node: &str) -> pb::PeerSet {
        let ingress = self.ingress(node);
        let mut mine: BTreeSet<(&str, u32)> = self
            .tasks
            .values()
            .filter(|e| e.node == node)
            .flat_map(|e| e.attachments.iter().map(|j| (j.network.as_str(), j.vni)))
            .collect();
        if let Some(i) = &ingress {
            mine.insert((super::INGRESS, i.vni));
        }
        let mut peers: BTreeMap<(&str, u32), BTreeSet<(&str, &str)>> =
            mine.iter().map(|k| (*k, BTreeSet::new())).collect();
        if let Some(i) = &ingress {
            // The other nodes, through which connections to this node's tasks come.
            if let Some(set) = peers.get_mut(&(super::INGRESS, i.vni)) {
                set.extend(self.mesh_nodes(node));
            }
        }
        let mut names: BTreeMap<&str, BTreeMap<String, BTreeSet<&str>>> = BTreeMap::new();
        // network → (service, VIP) → serving tasks' addresses
        let mut backends: BTreeMap<&str, BTreeMap<(&str, &str), BTreeSet<&str>>> = BTreeMap::new();
        // Every VIP of the node's networks, served or not (connections to one with no
        // serving task are refused, not left to hang). The mesh's network has no
        // names: it carries published traffic, not service discovery.
        for (net, _) in mine.iter().filter(|(n, _)| *n != super::INGRESS) {
            if let Some(info) = self.networks.get(*net) {
                let on = backends.entry(net).or_default();
                for (svc, vip) in &info.vips {
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
                if e.serving && key.0 != super::INGRESS {
                    self.serve(e, j, &mut names, &mut backends);
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
            ingress,
        }
    }

    /// A serving task's names on one of its networks, and its place behind its
    /// service's VIP there.
    fn serve<'a>(
        &'a self,
        e: &'a Endpoint,
        j: &'a Joined,
        names: &mut BTreeMap<&'a str, BTreeMap<String, BTreeSet<&'a str>>>,
        backends: &mut BTreeMap<&'a str, BTreeMap<(&'a str, &'a str), BTreeSet<&'a str>>>,
    ) {
        let net = j.network.as_str();
        let vips = self.networks.get(net).map(|n| &n.vips);
        let vip = e.service.as_ref().and_then(|s| vips?.get(s));
        let on = names.entry(net).or_default();
        for (name, via_vip) in dns_names(e, j) {
            let at = match vip {
                Some(v) if via_vip => v.as_str(),
                _ => j.ip.as_str(),
            };
            on.entry(name).or_default().insert(at);
        }
        if let (Some(s), Some(v)) = (&e.service, vip) {
            backends
                .entry(net)
                .or_default()
                .entry((s.as_str(), v.as_str()))
                .or_default()
                .insert(j.ip.as_str());
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
