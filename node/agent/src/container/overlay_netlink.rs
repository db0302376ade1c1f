//! [`OverlayOps`] on the real kernel, all through rtnetlink. Each overlay network has a
//! namespace of its own, kept at `<data-dir>/overlay-netns/<vni>` (Docker's overlay
//! driver does the same), holding its bridge `sb<vni>`, its VXLAN device `sx<vni>` and
//! the host ends of its containers' veths. Nothing is routed there: it is a switch.
//!
//! Why a namespace, not the node's: the node's namespace usually has
//! `bridge-nf-call-iptables` on (br_netfilter, which Docker and Kubernetes need), so
//! every frame a bridge there forwards walks the IP hooks and conntrack; measured,
//! that costs the overlay ~10% of its throughput. The sysctl is per namespace, and
//! only in a namespace of its own can shoal turn it off without changing other
//! bridges on the node. The VXLAN device is made in the node's namespace, where its
//! UDP socket stays on the underlay, and then moved into the network's.
//!
//! The node's own address on a network (the routing mesh's `ingress`) is a veth:
//! `si<vni>` in the node's namespace, its peer `sj<vni>` on the network's bridge.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};

use super::netlink::{
    connection, create_netns, errno, holds_netns, in_netns, index_of, move_into, name_and_address,
    need_index, remove_netns, set, veth_into, Named,
};
use super::overlay::{bridge_name, mac_of, vxlan_name, Join, OverlayOps, PeerEntry};
use super::overlay_entries::sync_entries;

/// VXLAN's IANA port.
const VXLAN_PORT: u16 = 4789;

pub struct OverlayNetlink {
    /// Where each network's namespace is kept, by VXLAN id.
    dir: PathBuf,
}

impl OverlayNetlink {
    pub fn new(data_dir: &Path) -> Self {
        OverlayNetlink {
            dir: data_dir.join("overlay-netns"),
        }
    }

    fn netns(&self, vni: u32) -> PathBuf {
        self.dir.join(vni.to_string())
    }
}

/// The node's end of its veth into network `vni`, and the end on the bridge.
fn node_ends(vni: u32) -> (String, String) {
    (format!("si{vni}"), format!("sj{vni}"))
}

/// Adds a link unless one of that name exists.
async fn add_link(
    handle: &Handle,
    name: &str,
    msg: rtnetlink::packet_route::link::LinkMessage,
) -> Result<u32, String> {
    if let Some(i) = index_of(handle, name).await? {
        return Ok(i);
    }
    match handle.link().add(msg).execute().await {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(format!("creating {name}: {e}")),
    }
    need_index(handle, name).await
}

async fn del_link(handle: &Handle, name: &str) -> Result<(), String> {
    let Some(index) = index_of(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(format!("removing {name}: {e}")),
    }
}

/// In the network's namespace, bridged frames skip the IP hooks (see the module
/// comment). Without br_netfilter loaded there is nothing to turn off.
fn bridged_frames_skip_ip_hooks() -> Result<(), String> {
    for knob in [
        "bridge-nf-call-iptables",
        "bridge-nf-call-ip6tables",
        "bridge-nf-call-arptables",
    ] {
        let path = format!("/proc/sys/net/bridge/{knob}");
        match std::fs::write(&path, "0") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(())
}

/// In the network's namespace: `link` on the bridge of `vni`, both up.
async fn onto_bridge(netns: &Path, vni: u32, link: String, mtu: u32) -> Result<(), String> {
    in_netns(netns, move |h| async move {
        bridged_frames_skip_ip_hooks()?;
        let bridge = bridge_name(vni);
        let br = add_link(&h, &bridge, LinkBridge::new(&bridge).mtu(mtu).build()).await?;
        let index = need_index(&h, &link).await?;
        set(
            &h,
            LinkUnspec::new_with_index(index)
                .controller(br)
                .up()
                .build(),
            &format!("attaching {link} to {bridge}"),
        )
        .await?;
        set(
            &h,
            LinkUnspec::new_with_index(br).up().build(),
            "bringing the network's bridge up",
        )
        .await
    })
    .await
}

#[async_trait]
impl OverlayOps for OverlayNetlink {
    async fn underlay(&self, ip: Ipv4Addr) -> Result<Option<(u32, u32)>, String> {
        let handle = connection()?;
        let addrs: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("listing addresses: {e}"))?;
        let Some(index) = addrs.iter().find_map(|a| {
            a.attributes
                .iter()
                .any(|x| matches!(x, AddressAttribute::Address(IpAddr::V4(v)) if *v == ip))
                .then_some(a.header.index)
        }) else {
            return Ok(None);
        };
        let mut links = handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| format!("reading link {index}: {e}"))?;
        Ok(link.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some((index, *m)),
                _ => None,
            })
        }))
    }

    async fn ensure_network(
        &self,
        vni: u32,
        underlay: Option<(Ipv4Addr, u32)>,
        mtu: u32,
    ) -> Result<(), String> {
        let netns = self.netns(vni);
        if !holds_netns(&netns) {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("{}: {e}", self.dir.display()))?;
            create_netns(&netns).await?;
        }
        let vxlan = vxlan_name(vni);
        let moved = {
            let vxlan = vxlan.clone();
            in_netns(&netns, move |h| async move {
                Ok(index_of(&h, &vxlan).await?.is_some())
            })
            .await?
        };
        if !moved {
            let handle = connection()?;
            // What an attempt that died half way (or an agent before namespaces per
            // network) left here would hold the VXLAN id.
            del_link(&handle, &vxlan).await?;
            del_link(&handle, &bridge_name(vni)).await?;
            let mut vx = LinkVxlan::new(&vxlan, vni)
                .port(VXLAN_PORT)
                .learning(false)
                .proxy(true)
                .mtu(mtu);
            if let Some((ip, index)) = underlay {
                vx = vx.local(ip).dev(index);
            }
            let index = add_link(&handle, &vxlan, vx.build()).await?;
            move_into(
                &handle,
                index,
                &netns,
                "moving the VXLAN device into its namespace",
            )
            .await?;
        }
        onto_bridge(&netns, vni, vxlan, mtu).await
    }

    async fn remove_network(&self, vni: u32) -> Result<(), String> {
        let handle = connection()?;
        for leftover in [vxlan_name(vni), bridge_name(vni), node_ends(vni).0] {
            del_link(&handle, &leftover).await?;
        }
        let netns = self.netns(vni);
        if holds_netns(&netns) {
            // Gone now, not when the kernel gets round to the namespace: a network
            // made again at once needs the VXLAN id free.
            in_netns(&netns, move |h| async move {
                del_link(&h, &vxlan_name(vni)).await?;
                del_link(&h, &bridge_name(vni)).await
            })
            .await?;
        }
        remove_netns(&netns)
    }

    async fn networks(&self) -> Result<Vec<u32>, String> {
        let mut vnis: BTreeSet<u32> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.file_name().to_str()?.parse().ok())
            .collect();
        // And what an agent before namespaces per network left in the node's.
        let handle = connection()?;
        let links: Vec<_> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("listing links: {e}"))?;
        vnis.extend(links.iter().filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => ["sx", "sb", "si"]
                    .iter()
                    .find_map(|p| n.strip_prefix(p))
                    .and_then(|v| v.parse::<u32>().ok()),
                _ => None,
            })
        }));
        Ok(vnis.into_iter().collect())
    }

    async fn sync_peers(&self, vni: u32, peers: &BTreeSet<PeerEntry>) -> Result<(), String> {
        let peers = peers.clone();
        in_netns(&self.netns(vni), move |h| async move {
            sync_entries(&h, vni, &peers).await
        })
        .await
    }

    async fn connect(
        &self,
        netns: &Path,
        join: &Join,
        host_if: &str,
        ifname: &str,
        mtu: u32,
    ) -> Result<(), String> {
        let (vni, host_if, container) = (join.vni, host_if.to_string(), netns.to_path_buf());
        // The host end, on the bridge in the network's namespace; the container end
        // moved into the container's. None: the pair was there (adopted).
        let peer = in_netns(&self.netns(vni), move |h| async move {
            let bridge = need_index(&h, &bridge_name(vni)).await?;
            if let Some(host) = index_of(&h, &host_if).await? {
                set(
                    &h,
                    LinkUnspec::new_with_index(host)
                        .controller(bridge)
                        .up()
                        .build(),
                    "attaching the host end to the network's bridge",
                )
                .await?;
                return Ok(None);
            }
            veth_into(&h, &container, &host_if, bridge, Some(mtu))
                .await
                .map(Some)
        })
        .await?;
        let Some(peer) = peer else {
            return Ok(());
        };
        let (ip, prefix) = (join.ip, join.prefix);
        let named = Named {
            ifname: ifname.to_string(),
            mac: Some(mac_of(ip)),
            mtu: Some(mtu),
        };
        in_netns(netns, move |h| async move {
            // A container end left by an attempt that died half way goes first.
            if let Some(i) = index_of(&h, &named.ifname).await? {
                let _ = h.link().del(i).execute().await;
            }
            name_and_address(&h, &peer, &named, ip, prefix).await
        })
        .await
    }

    async fn own_address(
        &self,
        vni: u32,
        ip: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> Result<(), String> {
        let (outer, inner) = node_ends(vni);
        let handle = connection()?;
        if index_of(&handle, &outer).await?.is_none() {
            handle
                .link()
                .add(LinkVeth::new(&outer, &inner).mtu(mtu).build())
                .execute()
                .await
                .map_err(|e| format!("creating {outer}: {e}"))?;
            let index = need_index(&handle, &inner).await?;
            let netns = self.netns(vni);
            move_into(
                &handle,
                index,
                &netns,
                "moving the node's end into the network",
            )
            .await?;
            onto_bridge(&netns, vni, inner, mtu).await?;
        }
        super::mesh_netlink::own_address(&handle, &outer, ip, prefix).await
    }

    async fn return_routes(
        &self,
        netns: &Path,
        ifname: &str,
        nodes: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), String> {
        super::mesh_netlink::return_routes(netns, ifname, nodes).await
    }
}
