//! The routing mesh's kernel work, through rtnetlink: the node's own address on the
//! `ingress` network, and in each container on `ingress` the routes that send a reply
//! back through the node its connection came in by.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkUnspec, RouteMessageBuilder};

use super::netlink::{errno, in_netns, need_index, set};
use super::overlay::mac_of;

/// Where the mesh's rules sit: before the main table (32766), after `local` (0).
const RULE_PRIORITY: u32 = 100;

/// The routing table (and mark) of replies through the node at `ip`: the address's
/// four bytes as the container's table writes them into the mark (nft copies them
/// from the MAC as they are, so the mark is the bytes in this machine's order), so no
/// table is shared. None for the few values the kernel reserves.
pub fn table_of(ip: Ipv4Addr) -> Option<u32> {
    Some(u32::from_ne_bytes(ip.octets())).filter(|t| *t > 255)
}

/// The node's link `link` (its end of a veth onto the `ingress` bridge) holds
/// `ip/prefix` and answers for it with the MAC made from it (tasks' replies are sent
/// to that MAC); other addresses on it go. The node forwards, since the mesh routes
/// published traffic into the network.
pub async fn own_address(
    handle: &Handle,
    link: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("turning on IPv4 forwarding: {e}"))?;
    let index = need_index(handle, link).await?;
    set(
        handle,
        LinkUnspec::new_with_index(index)
            .address(mac_of(ip).to_vec())
            .up()
            .build(),
        &format!("giving {link} the MAC of {ip}"),
    )
    .await?;
    let mut have = false;
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing {link}'s addresses: {e}"))?;
    for a in addresses {
        let held = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        });
        if a.header.family != AddressFamily::Inet {
            continue;
        }
        if held == Some(ip) && a.header.prefix_len == prefix {
            have = true;
            continue;
        }
        handle
            .address()
            .del(a)
            .execute()
            .await
            .map_err(|e| format!("removing an old address of {link}: {e}"))?;
    }
    if have {
        return Ok(());
    }
    match handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(format!("adding {ip}/{prefix} to {link}: {e}")),
    }
}

/// In the container at `netns`: per node address, a rule (mark → table) and a
/// default route via that node out of `ifname`, the container's `ingress` interface;
/// rules of nodes no longer listed go. `ifname` checks its source addresses loosely:
/// clients from anywhere arrive by it, while the way back to them is `eth0`.
pub async fn return_routes(
    netns: &Path,
    ifname: &str,
    nodes: &BTreeSet<Ipv4Addr>,
) -> Result<(), String> {
    let ifname = ifname.to_string();
    let nodes = nodes.clone();
    in_netns(netns, move |h| async move {
        let path = format!("/proc/sys/net/ipv4/conf/{ifname}/rp_filter");
        std::fs::write(&path, "2").map_err(|e| format!("{path}: {e}"))?;
        let index = need_index(&h, &ifname).await?;
        let tables: BTreeMap<u32, Ipv4Addr> = nodes
            .iter()
            .filter_map(|ip| Some((table_of(*ip)?, *ip)))
            .collect();
        for (table, via) in &tables {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(*via)
                .output_interface(index)
                .table_id(*table)
                .build();
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("the return route via {via}: {e}"))?;
        }
        let mut missing: BTreeSet<u32> = tables.keys().copied().collect();
        let rules: Vec<_> = h
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("listing rules: {e}"))?;
        for rule in rules {
            let attr = |f: fn(&RuleAttribute) -> Option<u32>| rule.attributes.iter().find_map(f);
            let priority = attr(|a| match a {
                RuleAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            if priority != Some(RULE_PRIORITY) {
                continue;
            }
            let mark = attr(|a| match a {
                RuleAttribute::FwMark(m) => Some(*m),
                _ => None,
            });
            let table = attr(|a| match a {
                RuleAttribute::Table(t) => Some(*t),
                _ => None,
            });
            let to_table = rule.header.action == RuleAction::ToTable;
            match mark {
                Some(m) if to_table && table == Some(m) && missing.remove(&m) => {}
                // A node that left: its rule goes (its table's route is harmless).
                _ => h
                    .rule()
                    .del(rule)
                    .execute()
                    .await
                    .map_err(|e| format!("removing an old return rule: {e}"))?,
            }
        }
        for table in missing {
            let via = tables.get(&table).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            h.rule()
                .add()
                .v4()
                .fw_mark(table)
                .table_id(table)
                .action(RuleAction::ToTable)
                .priority(RULE_PRIORITY)
                .execute()
                .await
                .map_err(|e| format!("the return rule of {via}: {e}"))?;
        }
        Ok(())
    })
    .await
}
