//! What one network's addresses should be: from the claims it holds and who wants an
//! address (each attached service's VIP, each live task), which claims go, which
//! addresses are handed out, and who gets none because the subnet is full. Pure.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use shoal_store::objects::{Claim, ClaimOwner};

use crate::ipam::Subnet;

/// The claims of network `uid` live under `ipam/<uid>/<address>`.
pub fn address_prefix(network_uid: &str) -> String {
    format!("ipam/{network_uid}/")
}

/// The address a claim under [`address_prefix`] stands for.
pub fn claimed_address(claim: &Claim) -> Option<Ipv4Addr> {
    claim.path.rsplit('/').next()?.parse().ok()
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Claims of owners that no longer want them (or duplicates, or outside the subnet).
    pub release: Vec<Claim>,
    /// New addresses, in the order owners asked.
    pub allocate: Vec<(ClaimOwner, Ipv4Addr)>,
    /// Every wanted owner's address, held or new, by uid.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Owners that get no address: the subnet is full.
    pub exhausted: Vec<ClaimOwner>,
    /// Addresses in use once the plan is carried out, the gateway included.
    pub in_use: u32,
    /// Where the next allocation starts.
    pub cursor: Option<Ipv4Addr>,
}

/// Plans `subnet`'s addresses. `wanted` is in priority order (VIPs first, then tasks by
/// age), so when the subnet runs out the newest go without.
pub fn plan(
    subnet: &Subnet,
    claims: &[Claim],
    wanted: &[ClaimOwner],
    cursor: Option<Ipv4Addr>,
) -> Plan {
    let mut p = Plan {
        cursor,
        ..Plan::default()
    };
    let wanted_uids: HashSet<&str> = wanted.iter().map(|o| o.uid.as_str()).collect();
    let gateway = subnet.gateway();
    let mut used: BTreeSet<Ipv4Addr> = [gateway].into();
    for claim in claims {
        let address = claimed_address(claim).filter(|a| subnet.is_host(*a) && *a != gateway);
        match address {
            Some(a)
                if wanted_uids.contains(claim.owner.uid.as_str())
                    && !p.addresses.contains_key(&claim.owner.uid) =>
            {
                used.insert(a);
                p.addresses.insert(claim.owner.uid.clone(), a);
            }
            _ => p.release.push(claim.clone()),
        }
    }
    for owner in wanted {
        if p.addresses.contains_key(&owner.uid) {
            continue;
        }
        match subnet.next_free(&used, p.cursor) {
            Some(a) => {
                used.insert(a);
                p.addresses.insert(owner.uid.clone(), a);
                p.allocate.push((owner.clone(), a));
                p.cursor = Some(Ipv4Addr::from(u32::from(a).wrapping_add(1)));
            }
            None => p.exhausted.push(owner.clone()),
        }
    }
    p.in_use = used.len() as u32;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str) -> ClaimOwner {
        ClaimOwner {
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn claim(o: &ClaimOwner, ip: &str, revision: i64) -> Claim {
        Claim {
            path: format!("ipam/net-uid/{ip}"),
            owner: o.clone(),
            revision,
        }
    }

    fn subnet(s: &str) -> Subnet {
        Subnet::parse(s).expect("subnet")
    }

    #[test]
    fn held_addresses_stay_and_new_owners_get_the_next_free_ones() {
        let (vip, a, b) = (
            owner("Service", "api"),
            owner("Task", "api.1"),
            owner("Task", "api.2"),
        );
        let claims = [claim(&vip, "10.0.1.2", 5)];
        let p = plan(
            &subnet("10.0.1.0/24"),
            &claims,
            &[vip.clone(), a.clone(), b.clone()],
            None,
        );
        assert!(p.release.is_empty());
        assert_eq!(
            p.addresses["uid-api"],
            "10.0.1.2".parse::<Ipv4Addr>().unwrap()
        );
        let new: Vec<String> = p
            .allocate
            .iter()
            .map(|(o, ip)| format!("{}={ip}", o.name))
            .collect();
        assert_eq!(new, ["api.1=10.0.1.3", "api.2=10.0.1.4"]);
        assert_eq!(p.in_use, 4, "gateway, VIP and two tasks");
    }

    #[test]
    fn claims_of_owners_gone_are_released_and_their_addresses_not_reused_at_once() {
        let (a, b) = (owner("Task", "api.1"), owner("Task", "api.2"));
        let claims = [claim(&a, "10.0.1.2", 5), claim(&b, "10.0.1.3", 6)];
        let c = owner("Task", "api.3");
        let p = plan(
            &subnet("10.0.1.0/24"),
            &claims,
            &[b.clone(), c.clone()],
            Some("10.0.1.4".parse().unwrap()),
        );
        assert_eq!(p.release, vec![claims[0].clone()]);
        assert_eq!(p.allocate, vec![(c, "10.0.1.4".parse().unwrap())]);
    }

    #[test]
    fn a_second_claim_of_one_owner_and_claims_outside_the_subnet_go() {
        let a = owner("Task", "api.1");
        let claims = [
            claim(&a, "10.0.1.2", 5),
            claim(&a, "10.0.1.3", 6),
            claim(&a, "10.0.9.9", 7),
            claim(&a, "10.0.1.1", 8),
        ];
        let p = plan(&subnet("10.0.1.0/24"), &claims, &[a], None);
        assert_eq!(p.release.len(), 3, "{:?}", p.release);
        assert!(p.allocate.is_empty());
    }

    #[test]
    fn a_full_subnet_leaves_the_newest_without_and_says_who() {
        let owners: Vec<ClaimOwner> = (1..=7).map(|i| owner("Task", &format!("t.{i}"))).collect();
        let p = plan(&subnet("10.0.1.0/29"), &[], &owners, None);
        assert_eq!(p.allocate.len(), 5, "six hosts, one is the gateway");
        assert_eq!(p.exhausted, owners[5..].to_vec());
        assert_eq!(p.in_use, 6);
    }
}
