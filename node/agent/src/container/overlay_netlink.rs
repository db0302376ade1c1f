//! [`OverlayOps`] on the real kernel, all through rtnetlink: bridges, VXLAN devices,
//! their neighbour (ARP) and forwarding (FDB) entries, and container veths.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};

use super::netlink::{
    connection, errno, in_netns, index_of, name_and_address, need_index, set, veth_into, Named,
};
use super::overlay::{bridge_name, mac_of, vxlan_name, Join, OverlayOps, PeerEntry};

/// VXLAN's IANA port.
const VXLAN_PORT: u16 = 4789;

pub struct OverlayNetlink;

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

/// The entries of `family` on the link `index`.
async fn entries(
    handle: &Handle,
    family: AddressFamily,
    index: u32,
) -> Result<Vec<NeighbourMessage>, String> {
    let all: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing neighbours: {e}"))?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.ifindex == index)
        .collect())
}

fn lladdr(m: &NeighbourMessage) -> Option<&[u8]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => Some(&l[..]),
        _ => None,
    })
}

fn destination(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // A bridge-family (FDB) entry's destination is parsed as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(&b[..]).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

async fn del_entry(handle: &Handle, m: NeighbourMessage) -> Result<(), String> {
    match handle.neighbours().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(format!("removing a neighbour entry: {e}")),
    }
}

/// A VXLAN forwarding entry: frames for `mac` go to `node`.
fn fdb_entry(index: u32, mac: [u8; 6], node: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(node)),
    ];
    m
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
        let handle = connection()?;
        let (bridge, vxlan) = (bridge_name(vni), vxlan_name(vni));
        let br = add_link(&handle, &bridge, LinkBridge::new(&bridge).mtu(mtu).build()).await?;
        let mut vx = LinkVxlan::new(&vxlan, vni)
            .port(VXLAN_PORT)
            .learning(false)
            .proxy(true)
            .mtu(mtu);
        if let Some((ip, index)) = underlay {
            vx = vx.local(ip).dev(index);
        }
        let vx = add_link(&handle, &vxlan, vx.build()).await?;
        set(
            &handle,
            LinkUnspec::new_with_index(vx).controller(br).up().build(),
            "attaching the VXLAN device to its bridge",
        )
        .await?;
        set(
            &handle,
            LinkUnspec::new_with_index(br).up().build(),
            "bringing the network's bridge up",
        )
        .await
    }

    async fn remove_network(&self, vni: u32) -> Result<(), String> {
        let handle = connection()?;
        del_link(&handle, &vxlan_name(vni)).await?;
        del_link(&handle, &bridge_name(vni)).await
    }

    async fn networks(&self) -> Result<Vec<u32>, String> {
        let handle = connection()?;
        let links: Vec<_> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("listing links: {e}"))?;
        let vnis: BTreeSet<u32> = links
            .iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => n
                        .strip_prefix("sx")
                        .or_else(|| n.strip_prefix("sb"))
                        .and_then(|v| v.parse().ok()),
                    _ => None,
                })
            })
            .collect();
        Ok(vnis.into_iter().collect())
    }

    async fn sync_peers(&self, vni: u32, peers: &BTreeSet<PeerEntry>) -> Result<(), String> {
        let handle = connection()?;
        let index = need_index(&handle, &vxlan_name(vni)).await?;
        // ARP for a peer is answered here (`proxy`), from these.
        let mut want: BTreeSet<(Ipv4Addr, [u8; 6])> =
            peers.iter().map(|p| (p.ip, mac_of(p.ip))).collect();
        for m in entries(&handle, AddressFamily::Inet, index).await? {
            let have = destination(&m).zip(lladdr(&m).and_then(|l| <[u8; 6]>::try_from(l).ok()));
            match have {
                Some(entry) if want.remove(&entry) => {}
                _ => del_entry(&handle, m).await?,
            }
        }
        for (ip, mac) in want {
            handle
                .neighbours()
                .add(index, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("neighbour {ip} on {}: {e}", vxlan_name(vni)))?;
        }
        // Frames for a peer's MAC go to its node.
        let mut want: BTreeSet<([u8; 6], Ipv4Addr)> =
            peers.iter().map(|p| (mac_of(p.ip), p.node)).collect();
        for m in entries(&handle, AddressFamily::Bridge, index).await? {
            let have = lladdr(&m)
                .and_then(|l| <[u8; 6]>::try_from(l).ok())
                .zip(destination(&m));
            match have {
                Some(entry) if want.remove(&entry) => {}
                // Asked for as `bridge fdb del` asks: the dumped message carries
                // attributes (cache info) the kernel does not match on.
                Some((mac, node)) => del_entry(&handle, fdb_entry(index, mac, node)).await?,
                // No destination: the bridge's own entries for this port.
                None => {}
            }
        }
        for (mac, node) in want {
            handle
                .neighbours()
                .add_bridge(index, &mac)
                .destination(IpAddr::V4(node))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("forwarding entry to {node} on {}: {e}", vxlan_name(vni)))?;
        }
        Ok(())
    }

    async fn connect(
        &self,
        netns: &Path,
        join: &Join,
        host_if: &str,
        ifname: &str,
        mtu: u32,
    ) -> Result<(), String> {
        let handle = connection()?;
        let bridge = need_index(&handle, &bridge_name(join.vni)).await?;
        if let Some(host) = index_of(&handle, host_if).await? {
            // Adopted: the pair is there; make sure it is on the bridge.
            return set(
                &handle,
                LinkUnspec::new_with_index(host)
                    .controller(bridge)
                    .up()
                    .build(),
                "attaching the host end to the network's bridge",
            )
            .await;
        }
        let stale = ifname.to_string();
        // A container end left by an attempt that died half way goes first.
        in_netns(netns, move |h| async move {
            if let Some(i) = index_of(&h, &stale).await? {
                let _ = h.link().del(i).execute().await;
            }
            Ok(())
        })
        .await?;
        let peer = veth_into(&handle, netns, host_if, bridge, Some(mtu)).await?;
        let (ip, prefix, mac) = (join.ip, join.prefix, mac_of(join.ip));
        let named = Named {
            ifname: ifname.to_string(),
            mac: Some(mac),
            mtu: Some(mtu),
        };
        in_netns(netns, move |handle| async move {
            name_and_address(&handle, &peer, &named, ip, prefix).await
        })
        .await
    }

    async fn own_address(&self, vni: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), String> {
        super::mesh_netlink::own_address(vni, ip, prefix).await
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
