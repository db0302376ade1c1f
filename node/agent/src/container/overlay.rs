//! Overlay networks on this node: per network a bridge `sb<vni>` and a VXLAN device
//! `sx<vni>` on it, in a network namespace of the network's own (why, and where:
//! `overlay_netlink`), and a veth from each of its containers (`eth1`, `eth2`, ... in
//! the order of the task's networks; `eth0` stays on the node bridge, the way out).
//! Forwarding is static: for every task on another node the VXLAN device has a
//! neighbour entry (its address → a MAC made from it, so ARP is answered on this
//! node) and a forwarding entry (that MAC → the other node), both from the API
//! server's peer set. No multicast, no learning, no gossip.
//!
//! The routing mesh: while the peer set carries `ingress`, the node holds its own
//! address on that network (a veth onto its bridge, with the MAC made from the
//! address), every published port of the mesh answers here
//! (`ports::PortTable::set_mesh`), and each container on `ingress` marks connections
//! that come in by it with the node they came through and routes its replies back
//! through that node, so nobody rewrites the client's address.
//!
//! The kernel side is behind [`OverlayOps`]; [`Overlay`] keeps the node converged to
//! the peer set: networks it lists are built, peers synced, others removed once no
//! container here uses them. Idempotent, so a restarted agent converges the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use shoal_wire::pb;

use tokio::sync::{watch, Mutex};

use super::ports::{MeshPort, PortTable};
use super::vip::{render, VipOps, Vips};
use crate::dns::{Asker, Dns};

/// VXLAN's own header and the outer Ethernet, IP and UDP headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// When the underlay's MTU cannot be read.
const DEFAULT_MTU: u32 = 1450;

/// A task on another node: its address and that node's underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerEntry {
    pub ip: Ipv4Addr,
    pub node: Ipv4Addr,
}

/// One overlay attachment of a container, as the network controller gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl Join {
    pub fn from_attachment(a: &shoal_api::Attachment) -> Result<Join, String> {
        let (ip, prefix) = a.address.split_once('/').ok_or_else(|| {
            format!(
                "network {}: address {:?} has no prefix",
                a.network, a.address
            )
        })?;
        let bad = |what: &str| format!("network {}: bad {what} in {:?}", a.network, a.address);
        Ok(Join {
            network: a.network.clone(),
            vni: a.vni,
            ip: ip.parse().map_err(|_| bad("address"))?,
            prefix: prefix
                .parse()
                .ok()
                .filter(|p| *p <= 30)
                .ok_or_else(|| bad("prefix"))?,
        })
    }
}

/// The MAC of an overlay address: fixed by the address, so no node needs to be told
/// another's MACs (Docker's overlay does the same, under 02:42).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn bridge_name(vni: u32) -> String {
    format!("sb{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("sx{vni}")
}

/// The kernel side of overlay networks.
#[async_trait]
pub trait OverlayOps: Send + Sync {
    /// The index and MTU of the link that holds `ip`, if one does.
    async fn underlay(&self, ip: Ipv4Addr) -> Result<Option<(u32, u32)>, String>;
    /// The bridge and VXLAN device of `vni` (learning off, ARP answered from the
    /// neighbour entries, `mtu`, sending from `underlay` when known), up; idempotent.
    async fn ensure_network(
        &self,
        vni: u32,
        underlay: Option<(Ipv4Addr, u32)>,
        mtu: u32,
    ) -> Result<(), String>;
    /// Removes both devices of `vni` (their entries go with them); idempotent.
    async fn remove_network(&self, vni: u32) -> Result<(), String>;
    /// The VXLAN ids whose devices exist here.
    async fn networks(&self) -> Result<Vec<u32>, String>;
    /// Converges the VXLAN device's neighbour and forwarding entries to `peers`.
    async fn sync_peers(&self, vni: u32, peers: &BTreeSet<PeerEntry>) -> Result<(), String>;
    /// A veth: `host_if` on the bridge of `join.vni`, its peer `ifname` in `netns` with
    /// the join's address and MAC; a pair already there is kept.
    async fn connect(
        &self,
        netns: &Path,
        join: &Join,
        host_if: &str,
        ifname: &str,
        mtu: u32,
    ) -> Result<(), String>;
    /// The node holds its own `ip/prefix` on network `vni` (with the MAC made from
    /// it, and `mtu`), and forwards; idempotent.
    async fn own_address(&self, vni: u32, ip: Ipv4Addr, prefix: u8, mtu: u32)
        -> Result<(), String>;
    /// In the container at `netns`, replies to connections that came in by `ifname`
    /// go back through the node they came from, for each of `nodes`; converged.
    async fn return_routes(
        &self,
        netns: &Path,
        ifname: &str,
        nodes: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), String>;
}

/// The routing mesh as the peer set last gave it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Mesh {
    vni: u32,
    /// This node's address on it.
    address: Option<(Ipv4Addr, u8)>,
    /// Every node's address on it.
    nodes: BTreeSet<Ipv4Addr>,
    ports: Vec<MeshPort>,
}

/// The mesh in a peer set; what does not parse is left out.
fn mesh_of(set: &pb::PeerSet) -> Option<Mesh> {
    let i = set.ingress.as_ref()?;
    let address = i.address.split_once('/').and_then(|(ip, len)| {
        Some((
            ip.parse().ok()?,
            len.parse().ok().filter(|l: &u8| *l <= 30)?,
        ))
    });
    let ports = i
        .ports
        .iter()
        .filter_map(|p| {
            let protocol = match p.protocol.as_str() {
                "tcp" => shoal_api::Protocol::Tcp,
                "udp" => shoal_api::Protocol::Udp,
                _ => return None,
            };
            let target = u16::try_from(p.target).ok()?;
            Some(MeshPort {
                published: u16::try_from(p.published).ok()?,
                protocol,
                service: p.service.clone(),
                backends: p
                    .backends
                    .iter()
                    .filter_map(|b| b.parse::<Ipv4Addr>().ok())
                    .map(|ip| std::net::SocketAddr::from((ip, target)))
                    .collect(),
            })
        })
        .collect();
    Some(Mesh {
        vni: i.vni,
        address,
        nodes: i.nodes.iter().filter_map(|n| n.parse().ok()).collect(),
        ports,
    })
}

/// A container on overlay networks.
struct User {
    vnis: BTreeSet<u32>,
    networks: Vec<String>,
    /// Its address on the node bridge (how the resolver knows it).
    asker: Ipv4Addr,
    netns: PathBuf,
    /// Its interface on the mesh's network, if it joins it.
    mesh_if: Option<String>,
    /// The table last written in its namespace: its VIPs, and the interface whose
    /// connections it marks for the way back.
    programmed: Option<(Vips, Option<String>)>,
    /// The nodes its replies to the mesh's connections can go back through, as last
    /// written.
    routed: Option<BTreeSet<Ipv4Addr>>,
}

#[derive(Default)]
struct State {
    /// vni → its peers, as the server last said
    wanted: BTreeMap<u32, BTreeSet<PeerEntry>>,
    /// network → its services' VIPs and their backends, as the server last said
    vips: BTreeMap<String, Vips>,
    /// container id → what it joins
    users: BTreeMap<String, User>,
    /// (link index of the underlay, the MTU of the overlay), once read
    mtu: Option<(Option<u32>, u32)>,
    /// vni → the peers last written to its VXLAN device: a peer set that leaves a
    /// network's peers as they were costs no kernel dump.
    synced: BTreeMap<u32, BTreeSet<PeerEntry>>,
    /// The routing mesh, as the server last said.
    mesh: Option<Mesh>,
    /// The node's own address on the mesh's bridge, as last written (vni, ip, prefix).
    owned: Option<(u32, Ipv4Addr, u8)>,
}

pub struct Overlay {
    ops: Arc<dyn OverlayOps>,
    vip_ops: Arc<dyn VipOps>,
    /// The node's resolver, told each peer set's names and each container's networks.
    dns: Option<Arc<Dns>>,
    /// This node's underlay address (what it registers), if it has one.
    local: Option<Ipv4Addr>,
    /// The node's published ports, told the mesh's.
    ports: Option<PortTable>,
    state: Mutex<State>,
    sets: watch::Sender<Option<pb::PeerSet>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Overlay({:?})", self.local)
    }
}

/// The peer set as entries per VXLAN id; a peer whose addresses do not parse is
/// skipped (the server sends only what it parsed).
fn wanted(set: &pb::PeerSet) -> BTreeMap<u32, BTreeSet<PeerEntry>> {
    set.networks
        .iter()
        .map(|n| {
            let peers = n
                .peers
                .iter()
                .filter_map(|p| {
                    Some(PeerEntry {
                        ip: p.address.parse().ok()?,
                        node: p.node_address.parse().ok()?,
                    })
                })
                .collect();
            (n.vni, peers)
        })
        .collect()
}

/// Each network's VIPs with their backends (sorted); what does not parse is skipped.
fn vips_of(set: &pb::PeerSet) -> BTreeMap<String, Vips> {
    set.networks
        .iter()
        .map(|n| {
            let vips = n
                .vips
                .iter()
                .filter_map(|v| {
                    let mut backends: Vec<Ipv4Addr> =
                        v.backends.iter().filter_map(|b| b.parse().ok()).collect();
                    backends.sort();
                    Some((v.address.parse().ok()?, backends))
                })
                .collect();
            (n.network.clone(), vips)
        })
        .collect()
}

impl Overlay {
    pub fn new(
        ops: Arc<dyn OverlayOps>,
        vip_ops: Arc<dyn VipOps>,
        local: Option<Ipv4Addr>,
        dns: Option<Arc<Dns>>,
        ports: Option<PortTable>,
    ) -> Arc<Self> {
        let (sets, _) = watch::channel(None);
        Arc::new(Overlay {
            ops,
            vip_ops,
            dns,
            local,
            ports,
            state: Mutex::new(State::default()),
            sets,
        })
    }

    /// The server's latest peer set: its names answer at once, the kernel is
    /// converged to it by [`Overlay::run`].
    pub fn want(&self, set: pb::PeerSet) {
        if let Some(dns) = &self.dns {
            dns.set_names(&set);
        }
        self.sets.send_replace(Some(set));
    }

    /// Converges the node to each peer set as it comes, until the sender goes.
    pub async fn run(self: Arc<Self>) {
        let mut sets = self.sets.subscribe();
        loop {
            let set = sets.borrow_and_update().clone();
            if let Some(set) = set {
                if let Err(e) = self.converge(&set).await {
                    tracing::warn!(error = %e, "overlay: could not converge; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    sets.mark_changed();
                }
            }
            if sets.changed().await.is_err() {
                return;
            }
        }
    }

    async fn mtu(&self, state: &mut State) -> Result<(Option<u32>, u32), String> {
        if let Some(m) = state.mtu {
            return Ok(m);
        }
        let read = match self.local {
            Some(ip) => self.ops.underlay(ip).await?,
            None => None,
        };
        let m = match read {
            Some((index, mtu)) => (Some(index), mtu.saturating_sub(VXLAN_OVERHEAD)),
            None => (None, DEFAULT_MTU),
        };
        state.mtu = Some(m);
        Ok(m)
    }

    async fn ensure(&self, state: &mut State, vni: u32) -> Result<u32, String> {
        let (index, mtu) = self.mtu(state).await?;
        let underlay = self.local.zip(index);
        self.ops.ensure_network(vni, underlay, mtu).await?;
        Ok(mtu)
    }

    /// Writes `vni`'s wanted peers to the kernel unless they are what was written last.
    async fn sync(&self, state: &mut State, vni: u32) -> Result<(), String> {
        let Some(peers) = state.wanted.get(&vni) else {
            return Ok(());
        };
        if state.synced.get(&vni) == Some(peers) {
            return Ok(());
        }
        self.ops.sync_peers(vni, peers).await?;
        state.synced.insert(vni, peers.clone());
        Ok(())
    }

    async fn converge(&self, set: &pb::PeerSet) -> Result<(), String> {
        let mut state = self.state.lock().await;
        state.wanted = wanted(set);
        state.vips = vips_of(set);
        state.mesh = mesh_of(set);
        let wanted = state.wanted.clone();
        for vni in wanted.keys() {
            self.ensure(&mut state, *vni).await?;
            self.sync(&mut state, *vni).await?;
        }
        self.own_mesh_address(&mut state).await?;
        if let Some(ports) = &self.ports {
            let mesh_ports = state.mesh.as_ref().map_or(&[][..], |m| &m.ports[..]);
            ports.set_mesh(mesh_ports).await;
        }
        self.program_vips(&mut state).await;
        self.program_returns(&mut state).await;
        let used: BTreeSet<u32> = state
            .users
            .values()
            .flat_map(|u| &u.vnis)
            .copied()
            .collect();
        for vni in self.ops.networks().await? {
            if !wanted.contains_key(&vni) && !used.contains(&vni) {
                self.ops.remove_network(vni).await?;
                state.synced.remove(&vni);
                // The node's address went with the network.
                if state.owned.is_some_and(|(owned, _, _)| owned == vni) {
                    state.owned = None;
                }
                tracing::info!(vni, "overlay network removed: no task here joins it");
            }
        }
        Ok(())
    }

    /// Connects container `id` (its namespace at `netns`, `asker` its address on the
    /// node bridge) to each network it joins; what it got, as `NETWORK=IP`.
    pub async fn attach(
        &self,
        id: &str,
        netns: &Path,
        asker: Ipv4Addr,
        joins: &[Join],
        links: &[(String, String)],
    ) -> Result<Vec<String>, String> {
        let mut state = self.state.lock().await;
        let user = User {
            vnis: joins.iter().map(|j| j.vni).collect(),
            networks: joins.iter().map(|j| j.network.clone()).collect(),
            asker,
            netns: netns.to_path_buf(),
            mesh_if: joins
                .iter()
                .position(|j| j.network == shoal_api::INGRESS_NETWORK)
                .map(|i| format!("eth{}", i + 1)),
            programmed: None,
            routed: None,
        };
        state.users.insert(id.to_string(), user);
        if let Some(dns) = &self.dns {
            dns.register(
                asker,
                Asker {
                    networks: joins.iter().map(|j| j.network.clone()).collect(),
                    links: links
                        .iter()
                        .map(|(alias, name)| (alias.to_ascii_lowercase(), name.clone()))
                        .collect(),
                },
            );
        }
        let mut addresses = Vec::with_capacity(joins.len());
        for (i, join) in joins.iter().enumerate() {
            let mtu = self.ensure(&mut state, join.vni).await?;
            self.sync(&mut state, join.vni).await?;
            let host_if = host_if(id, i);
            let ifname = format!("eth{}", i + 1);
            self.ops
                .connect(netns, join, &host_if, &ifname, mtu)
                .await
                .map_err(|e| format!("connecting {} to network {}: {e}", join.ip, join.network))?;
            addresses.push(format!("{}={}", join.network, join.ip));
        }
        // Its VIPs answer from the start, and its replies find their way back.
        self.program_vips(&mut state).await;
        self.program_returns(&mut state).await;
        Ok(addresses)
    }

    /// Gives the node its address on the mesh's network, once per change.
    async fn own_mesh_address(&self, state: &mut State) -> Result<(), String> {
        let Some(mesh) = &state.mesh else {
            state.owned = None;
            return Ok(());
        };
        let Some((ip, prefix)) = mesh.address else {
            return Ok(());
        };
        let want = (mesh.vni, ip, prefix);
        if state.owned == Some(want) {
            return Ok(());
        }
        let (_, mtu) = self.mtu(state).await?;
        self.ops.own_address(want.0, ip, prefix, mtu).await?;
        state.owned = Some(want);
        Ok(())
    }

    /// Writes the return routes of every container on the mesh whose nodes changed.
    async fn program_returns(&self, state: &mut State) {
        let nodes = state
            .mesh
            .as_ref()
            .map(|m| m.nodes.clone())
            .unwrap_or_default();
        for (id, user) in state.users.iter_mut() {
            let Some(ifname) = &user.mesh_if else {
                continue;
            };
            if user.routed.as_ref() == Some(&nodes) {
                continue;
            }
            match self.ops.return_routes(&user.netns, ifname, &nodes).await {
                Ok(()) => user.routed = Some(nodes.clone()),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "could not write its return routes")
                }
            }
        }
    }

    /// Writes the VIP table of every container whose VIPs changed since it was last
    /// written. A container that cannot be written is tried again next time.
    async fn program_vips(&self, state: &mut State) {
        let State { vips, users, .. } = state;
        for (id, user) in users.iter_mut() {
            let mut want = Vips::new();
            for net in &user.networks {
                if let Some(v) = vips.get(net) {
                    want.extend(v.iter().map(|(k, b)| (*k, b.clone())));
                }
            }
            let want = (want, user.mesh_if.clone());
            if user.programmed.as_ref() == Some(&want) {
                continue;
            }
            match self
                .vip_ops
                .apply(&user.netns, render(&want.0, want.1.as_deref()))
                .await
            {
                Ok(()) => user.programmed = Some(want),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "could not write its VIP table")
                }
            }
        }
    }

    /// The container is gone (its veths went with its namespace); a network no task
    /// here joins any more goes at the next convergence, which this asks for (the
    /// peer set may have stopped listing it while the container was still there).
    pub async fn detach(&self, id: &str) {
        let had = self.state.lock().await.users.remove(id);
        if let Some(user) = had {
            if let Some(dns) = &self.dns {
                dns.unregister(user.asker);
            }
            self.sets.send_modify(|_| {});
        }
    }
}

/// The host end of a container's `i`th overlay veth: at most 15 bytes with the `p`
/// its peer has before it moves, unique per container.
fn host_if(id: &str, i: usize) -> String {
    format!("so{}{i}", super::network::id_tail(id, 9))
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
