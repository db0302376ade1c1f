//! A VXLAN device's static entries, through rtnetlink: per peer a neighbour entry
//! (its address → the MAC made from it, so ARP is answered on this node) and a
//! forwarding entry (that MAC → the peer's node), converged to the peer set.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::netlink::{errno, need_index};
use super::overlay::{mac_of, vxlan_name, PeerEntry};

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

pub(super) async fn sync_entries(
    handle: &Handle,
    vni: u32,
    peers: &BTreeSet<PeerEntry>,
) -> Result<(), String> {
    let index = need_index(handle, &vxlan_name(vni)).await?;
    // ARP for a peer is answered here (`proxy`), from these.
    let mut want: BTreeSet<(Ipv4Addr, [u8; 6])> =
        peers.iter().map(|p| (p.ip, mac_of(p.ip))).collect();
    for m in entries(handle, AddressFamily::Inet, index).await? {
        let have = destination(&m).zip(lladdr(&m).and_then(|l| <[u8; 6]>::try_from(l).ok()));
        match have {
            Some(entry) if want.remove(&entry) => {}
            _ => del_entry(handle, m).await?,
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
    for m in entries(handle, AddressFamily::Bridge, index).await? {
        let have = lladdr(&m)
            .and_then(|l| <[u8; 6]>::try_from(l).ok())
            .zip(destination(&m));
        match have {
            Some(entry) if want.remove(&entry) => {}
            // Asked for as `bridge fdb del` asks: the dumped message carries
            // attributes (cache info) the kernel does not match on.
            Some((mac, node)) => del_entry(handle, fdb_entry(index, mac, node)).await?,
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
