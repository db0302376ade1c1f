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
    pub vni: Option<u32>,
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
