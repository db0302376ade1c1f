//! Service VIPs in the kernel: in each container's network namespace, an nftables
//! table whose verdict map sends a packet to a VIP (one lookup, whatever the number of
//! services) to its service's chain, which DNATs it to one of the serving tasks at
//! random (`numgen`). It happens on the way out of the asking container, as Swarm's
//! per-sandbox IPVS does, so the reply comes back through the same conntrack entry and
//! no SNAT is needed; connections already made keep their backend (conntrack) when
//! the set of backends changes.
//!
//! The table is written whole, in one `nft -f -` transaction, whenever what the
//! container should see changes (kube-proxy's nftables mode programs the kernel the
//! same way); no partial table is ever visible.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use async_trait::async_trait;

/// The table shoal owns in a container's namespace.
pub const TABLE: &str = "shoal";

/// Service VIPs a container sees: VIP → backends (sorted, so equal tables compare
/// equal and an unchanged table is not written again).
pub type Vips = BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>;

/// The kernel side: writes a container's table.
#[async_trait]
pub trait VipOps: Send + Sync {
    /// Replaces the table in the namespace at `netns` with `script` (atomically).
    async fn apply(&self, netns: &Path, script: String) -> Result<(), String>;
}

/// The nft script that replaces the container's table with one for `vips`. A VIP
/// without a serving task refuses connections at once rather than letting them hang.
/// With `mesh_if` (the container's interface on `ingress`), connections that come in
/// by it are marked with the node they came through, and their replies carry the
/// mark, which routes them back through that node (`mesh_netlink::return_routes`).
pub fn render(vips: &Vips, mesh_if: Option<&str>) -> String {
    let mut s = String::new();
    // `add` then `delete`: the delete never fails, and the whole file is one
    // transaction, so the table is swapped, never missing.
    let _ = writeln!(
        s,
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let served: Vec<(&Ipv4Addr, &Vec<Ipv4Addr>)> =
        vips.iter().filter(|(_, b)| !b.is_empty()).collect();
    let unserved: Vec<&Ipv4Addr> = vips
        .iter()
        .filter(|(_, b)| b.is_empty())
        .map(|(v, _)| v)
        .collect();
    let _ = writeln!(s, "  map vips {{\n    type ipv4_addr : verdict");
    if !served.is_empty() {
        let elements: Vec<String> = served
            .iter()
            .enumerate()
            .map(|(i, (vip, _))| format!("{vip} : jump svc{i}"))
            .collect();
        let _ = writeln!(s, "    elements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  set unserved {{\n    type ipv4_addr");
    if !unserved.is_empty() {
        let elements: Vec<String> = unserved.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(s, "    elements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(s, "  }}");
    for (i, (_, backends)) in served.iter().enumerate() {
        let targets: Vec<String> = backends
            .iter()
            .enumerate()
            .map(|(j, b)| format!("{j} : {b}"))
            .collect();
        let _ = writeln!(
            s,
            "  chain svc{i} {{\n    dnat to numgen random mod {} map {{ {} }}\n  }}",
            backends.len(),
            targets.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "  chain out {{\n    type nat hook output priority -100; policy accept;\n    ip daddr vmap @vips\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain refuse {{\n    type filter hook output priority 0; policy accept;\n    ip daddr @unserved meta l4proto tcp reject with tcp reset\n    ip daddr @unserved reject\n  }}"
    );
    if let Some(ifname) = mesh_if {
        // The sender's MAC is 02:42 and its address on `ingress` (`overlay::mac_of`):
        // its last four bytes, at bit 64 of the link-layer header, are the node's
        // address, which names the table of the route back.
        let _ = writeln!(
            s,
            "  chain mesh_in {{\n    type filter hook prerouting priority -150; policy accept;\n    iifname \"{ifname}\" ct state new ct mark set @ll,64,32\n  }}"
        );
        let _ = writeln!(
            s,
            "  chain mesh_out {{\n    type route hook output priority -150; policy accept;\n    ct mark != 0 meta mark set ct mark\n  }}"
        );
    }
    let _ = writeln!(s, "}}");
    s
}

/// [`VipOps`] on the real kernel: `nft -f -` run in the container's namespace (a
/// thread that enters it starts `nft`, which inherits the namespace).
pub struct Nft;

#[async_trait]
impl VipOps for Nft {
    async fn apply(&self, netns: &Path, script: String) -> Result<(), String> {
        let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        let run = move || -> Result<(), String> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the namespace: {e}"))?;
            nft(&script)
        };
        // A thread of its own: it leaves the agent's namespace for good.
        let thread = std::thread::spawn(run);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "the nft thread panicked".to_string())?
    }
}

/// An nft table name: `prefix` and the bridge's name, with what nft would not take
/// in a name made `_`.
pub fn table_for(prefix: &str, bridge: &str) -> String {
    let name: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{name}")
}

/// Runs `script` as one `nft -f -` transaction in the calling thread's namespace.
pub fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_maps_each_vip_to_its_backends_and_refuses_unserved_ones() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let vips: Vips = [
            (ip("10.10.1.2"), vec![ip("10.10.1.3"), ip("10.10.1.4")]),
            (ip("10.10.1.9"), vec![]),
        ]
        .into();
        let s = render(&vips, None);
        assert!(s.contains("elements = { 10.10.1.2 : jump svc0 }"), "{s}");
        assert!(
            s.contains("dnat to numgen random mod 2 map { 0 : 10.10.1.3, 1 : 10.10.1.4 }"),
            "{s}"
        );
        assert!(
            s.contains("set unserved {\n    type ipv4_addr\n    elements = { 10.10.1.9 }"),
            "{s}"
        );
        // Nothing to map: the table is still whole (empty map and set, no elements).
        let empty = render(&Vips::new(), None);
        assert!(!empty.contains("elements"), "{empty}");
        assert!(empty.contains("ip daddr vmap @vips"), "{empty}");
    }
}
