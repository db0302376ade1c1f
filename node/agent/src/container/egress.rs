//! Egress: containers reach addresses beyond the node through NAT on the node's
//! uplink (Docker's docker0 masquerade; Swarm's docker_gwbridge). Traffic from the
//! node bridge's subnet that leaves by any other link is masqueraded as the node, and
//! the node forwards. Overlay traffic never takes this way: it stays on its bridges.

use super::network::Subnet;
use super::vip::{nft, table_for};

/// The table for `bridge`'s egress (one per bridge: several agents may share a
/// namespace, each with its own bridge).
pub fn table(bridge: &str) -> String {
    table_for("shoal_egress_", bridge)
}

/// The nft script that (re)writes the egress table of `bridge` with `subnet`.
pub fn render(bridge: &str, subnet: Subnet) -> String {
    let t = table(bridge);
    format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n  chain post {{\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n  }}\n}}\n"
    )
}

/// Turns on forwarding in this namespace and writes the egress table.
pub fn ensure(bridge: &str, subnet: Subnet) -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("turning on IPv4 forwarding: {e}"))?;
    nft(&render(bridge, subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridges_subnet_is_masqueraded_when_it_leaves_by_another_link() {
        let s = render("shoal0", "172.30.0.0/16".parse().unwrap());
        assert!(
            s.contains("ip saddr 172.30.0.0/16 oifname != \"shoal0\" masquerade"),
            "{s}"
        );
        assert_eq!(table("shoal-h0"), "shoal_egress_shoal_h0");
    }
}
