use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::define_kind;
use crate::meta::Condition;
use crate::validate::{Problems, Validate};

define_kind! {
    /// A network tasks attach to: overlay (VXLAN across nodes) or a local bridge.
    Network {
        kind: "Network",
        plural: "networks",
        short: ["net"],
        spec: NetworkSpec,
        status: NetworkStatus,
        dotted_names: false,
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    #[default]
    Overlay,
    Bridge,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub driver: NetworkDriver,
    /// An IPv4 CIDR such as `10.10.1.0/24`; allocated by the system when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

impl Validate for NetworkSpec {
    fn validate(&self, p: &mut Problems) {
        if let Some(subnet) = &self.subnet {
            if let Err(why) = parse_cidr(subnet) {
                p.push("spec.subnet", why);
            }
        }
    }
}

/// Parses `a.b.c.d/n`, insisting that no host bits are set.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{text:?} is not an IPv4 CIDR like 10.10.1.0/24");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(format!("{text:?}: prefix length must be between 8 and 30"));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(addr) & !mask != 0 {
        return Err(format!(
            "{text:?} has host bits set; did you mean {}/{len}?",
            Ipv4Addr::from(u32::from(addr) & mask)
        ));
    }
    Ok((addr, len))
}

/// What the network controller allocated: the subnet (the manifest's, or one from the
/// default pool), its gateway, the VXLAN id, and each attached service's virtual IP.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Addresses handed out (the gateway, VIPs and task addresses) and how many the
    /// subnet holds.
    #[serde(default)]
    pub addresses_in_use: u32,
    #[serde(default)]
    pub addresses_total: u32,
    /// The virtual IP of each service on this network with `endpointMode: vip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceVip>,
    /// On the `ingress` network, each node's own address: the routing mesh forwards
    /// published traffic from it, and tasks send their replies back through it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeAddress>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceVip {
    pub name: String,
    pub vip: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddress {
    pub name: String,
    pub address: String,
}

/// The network of the routing mesh, made at start as Swarm makes its `ingress`. A
/// service's tasks join it when the service publishes a port in `ingress` mode.
pub const INGRESS_NETWORK: &str = "ingress";

/// A network a container joins: its name, or the name with DNS aliases on that network
/// (`networks: [front, {name: back, aliases: [db]}]`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum NetworkRef {
    Name(String),
    Attachment(NetworkAttachment),
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachment {
    pub name: String,
    /// More names this container answers to in DNS on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl NetworkRef {
    pub fn name(&self) -> &str {
        match self {
            NetworkRef::Name(n) => n,
            NetworkRef::Attachment(a) => &a.name,
        }
    }

    pub fn aliases(&self) -> &[String] {
        match self {
            NetworkRef::Name(_) => &[],
            NetworkRef::Attachment(a) => &a.aliases,
        }
    }
}

/// More networks than a container has interfaces worth managing; Docker's practical
/// limit is of the same order.
const MAX_NETWORKS: usize = 32;
const MAX_ALIASES: usize = 32;

/// Checks `networks` found at `path`: names of Networks (DNS labels), each once, and
/// aliases that are DNS names.
pub(crate) fn check_networks(p: &mut Problems, path: &str, networks: &[NetworkRef]) {
    if networks.len() > MAX_NETWORKS {
        p.push(
            path,
            format!("{} networks; at most {MAX_NETWORKS}", networks.len()),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, net) in networks.iter().enumerate() {
        let at = match net {
            NetworkRef::Name(_) => format!("{path}[{i}]"),
            NetworkRef::Attachment(_) => format!("{path}[{i}].name"),
        };
        if let Err(why) = crate::meta::check_name(net.name(), false) {
            p.push(&at, why);
        } else if !seen.insert(net.name()) {
            p.push(&at, format!("network {:?} is listed twice", net.name()));
        }
        if net.aliases().len() > MAX_ALIASES {
            p.push(
                format!("{path}[{i}].aliases"),
                format!("{} aliases; at most {MAX_ALIASES}", net.aliases().len()),
            );
        }
        for (j, alias) in net.aliases().iter().enumerate() {
            if let Err(why) = crate::meta::check_name(alias, true) {
                p.push(format!("{path}[{i}].aliases[{j}]"), why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidrs() {
        assert!(super::parse_cidr("10.10.1.0/24").is_ok());
        assert!(super::parse_cidr("10.10.1.1/24").is_err());
        assert!(super::parse_cidr("10.10.1.0").is_err());
        assert!(super::parse_cidr("10.10.1.0/33").is_err());
        assert!(super::parse_cidr("x/24").is_err());
    }
}
