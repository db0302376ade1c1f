//! The kernel's half of published ports: connections from beyond the node are DNATed
//! to a backend in nftables (`nat prerouting`), so it sees the client's own address.

use std::collections::HashMap;

use super::{Key, Published};

/// The nft table of the published ports reached through `bridge`.
pub fn kernel_table(bridge: &str) -> String {
    crate::container::vip::table_for("shoal_ports_", bridge)
}

/// The script that rewrites the table for `ports`: a packet to one of this node's own
/// addresses on a published port, not from the bridge, goes to one of its backends at
/// random.
pub(super) fn render_kernel(bridge: &str, ports: &HashMap<Key, Published>) -> String {
    use std::fmt::Write as _;
    let t = kernel_table(bridge);
    let mut s = format!("add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
    let mut keys: Vec<&Key> = ports.keys().collect();
    keys.sort_by_key(|(p, proto)| (*p, proto.as_str()));
    let mut chains = String::new();
    let _ = writeln!(
        s,
        "  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"{bridge}\" return"
    );
    for (i, key) in keys.iter().enumerate() {
        let backends = ports[*key].backends();
        if backends.is_empty() {
            continue;
        }
        let targets: Vec<String> = (0..backends.len())
            .map(|j| format!("{j} : jump p{i}_{j}"))
            .collect();
        let _ = writeln!(
            s,
            "    fib daddr type local {} dport {} numgen random mod {} vmap {{ {} }}",
            key.1.as_str(),
            key.0,
            backends.len(),
            targets.join(", ")
        );
        for (j, to) in backends.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain p{i}_{j} {{\n    meta l4proto {} dnat to {to}\n  }}",
                key.1.as_str()
            );
        }
    }
    let _ = writeln!(s, "  }}\n{chains}}}");
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use shoal_api::Protocol;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::container::ports::Published;

    #[test]
    fn each_published_port_goes_to_its_backends_unless_it_comes_from_the_bridge() {
        let mut ports = HashMap::new();
        let published = |local: Vec<(String, SocketAddr)>| Published {
            owner: "service/web".into(),
            local,
            mesh: None,
            next: 0,
            stop: CancellationToken::new(),
        };
        ports.insert(
            (8080, Protocol::Tcp),
            published(vec![
                ("a".into(), "172.30.0.2:80".parse().unwrap()),
                ("b".into(), "172.30.0.3:80".parse().unwrap()),
            ]),
        );
        let s = render_kernel("shoal0", &ports);
        assert!(s.contains("iifname \"shoal0\" return"), "{s}");
        assert!(
            s.contains("fib daddr type local tcp dport 8080 numgen random mod 2 vmap { 0 : jump p0_0, 1 : jump p0_1 }"),
            "{s}"
        );
        assert!(
            s.contains("chain p0_1 {\n    meta l4proto tcp dnat to 172.30.0.3:80\n  }"),
            "{s}"
        );
        let empty = render_kernel("shoal0", &HashMap::new());
        assert!(!empty.contains("dport"), "{empty}");
    }
}
