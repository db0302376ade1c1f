//! Address arithmetic: subnets, their gateway and free addresses, subnets cut from the
//! default pool, VXLAN ids. Pure, so every rule is unit-tested.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// The first VXLAN id handed out (Swarm's too: lower ones are left to the operator).
pub const FIRST_VNI: u32 = 4096;
/// VXLAN ids are 24 bits.
pub const LAST_VNI: u32 = (1 << 24) - 1;

/// An IPv4 subnet with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    base: u32,
    len: u8,
}

impl Subnet {
    /// `a.b.c.d/n` with the rules of `shoal_api::parse_cidr`.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (addr, len) = shoal_api::parse_cidr(text)?;
        Ok(Subnet {
            base: u32::from(addr),
            len,
        })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn first_host(&self) -> u32 {
        self.base + 1
    }

    fn last_host(&self) -> u32 {
        (self.base | !Self::mask(self.len)) - 1
    }

    /// Addresses for hosts: all but the network and broadcast addresses.
    pub fn hosts(&self) -> u32 {
        self.last_host() - self.first_host() + 1
    }

    /// The gateway: the first host address, as Docker and Swarm choose it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first_host())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == self.base
    }

    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.contains(Ipv4Addr::from(ip)) && (self.first_host()..=self.last_host()).contains(&ip)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let len = self.len.min(other.len);
        self.base & Self::mask(len) == other.base & Self::mask(len)
    }

    /// `ip/len`, as a task's attachment carries it.
    pub fn with_host(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.len)
    }

    /// The first free host address at or after `from`, wrapping around once: handing
    /// out addresses in turn keeps a just-freed address (still in peers' neighbour
    /// tables and conntrack) unused for as long as possible.
    pub fn next_free(&self, used: &BTreeSet<Ipv4Addr>, from: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (first, last) = (self.first_host(), self.last_host());
        let start = from
            .map(u32::from)
            .filter(|f| (first..=last).contains(f))
            .unwrap_or(first);
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }

    /// The lowest `size`-long subnet of `self` that overlaps none of `taken`.
    pub fn carve(&self, size: u8, taken: &[Subnet]) -> Option<Subnet> {
        if size < self.len || size > 30 {
            return None;
        }
        let step = 1u64 << (32 - u32::from(size));
        let end = u64::from(self.base) + (1u64 << (32 - u32::from(self.len)));
        let mut base = u64::from(self.base);
        while base < end {
            let candidate = Subnet {
                base: base as u32,
                len: size,
            };
            match taken
                .iter()
                .filter(|t| t.overlaps(&candidate))
                .max_by_key(|t| t.end())
            {
                None => return Some(candidate),
                // Skip past the subnet in the way rather than one step at a time: a
                // /8 pool holds 65,536 /24s.
                Some(t) => base = t.end().div_ceil(step) * step,
            }
        }
        None
    }

    /// One past the last address.
    fn end(&self) -> u64 {
        u64::from(self.base) + (1u64 << (32 - u32::from(self.len)))
    }

    /// How the subnet is written in a claim's path (`10.0.1.0-24`).
    pub fn claim_name(&self) -> String {
        format!("{}-{}", Ipv4Addr::from(self.base), self.len)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

/// The lowest VXLAN id from [`FIRST_VNI`] not in `used`.
pub fn next_vni(used: &BTreeSet<u32>) -> Option<u32> {
    (FIRST_VNI..=LAST_VNI).find(|v| !used.contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Subnet {
        Subnet::parse(s).expect("subnet")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_slash_24_has_254_hosts_and_its_gateway_is_the_first() {
        let n = net("10.0.1.0/24");
        assert_eq!(n.hosts(), 254);
        assert_eq!(n.gateway(), ip("10.0.1.1"));
        assert!(n.is_host(ip("10.0.1.254")));
        assert!(!n.is_host(ip("10.0.1.255")) && !n.is_host(ip("10.0.1.0")));
        assert_eq!(net("10.0.1.0/29").hosts(), 6);
    }

    #[test]
    fn addresses_are_handed_out_in_turn_and_wrap_around() {
        let n = net("10.0.1.0/29");
        let mut used: BTreeSet<Ipv4Addr> = [ip("10.0.1.1"), ip("10.0.1.2")].into();
        assert_eq!(n.next_free(&used, None), Some(ip("10.0.1.3")));
        assert_eq!(
            n.next_free(&used, Some(ip("10.0.1.6"))),
            Some(ip("10.0.1.6"))
        );
        used.insert(ip("10.0.1.6"));
        assert_eq!(
            n.next_free(&used, Some(ip("10.0.1.6"))),
            Some(ip("10.0.1.3"))
        );
        for last in 3..=5 {
            used.insert(ip(&format!("10.0.1.{last}")));
        }
        assert_eq!(n.next_free(&used, None), None, "all six in use");
    }

    #[test]
    fn the_pool_is_carved_around_what_is_taken() {
        let pool = net("10.0.0.0/8");
        assert_eq!(pool.carve(24, &[]), Some(net("10.0.0.0/24")));
        let taken = [net("10.0.0.0/24"), net("10.0.1.0/24"), net("10.0.2.0/23")];
        assert_eq!(pool.carve(24, &taken), Some(net("10.0.4.0/24")));
        // A user's /16 inside the pool is skipped whole.
        assert_eq!(
            pool.carve(24, &[net("10.0.0.0/16")]),
            Some(net("10.1.0.0/24"))
        );
        assert_eq!(net("10.0.0.0/24").carve(24, &[net("10.0.0.0/24")]), None);
        assert_eq!(pool.carve(7, &[]), None, "bigger than the pool");
    }

    #[test]
    fn vnis_start_at_4096() {
        assert_eq!(next_vni(&BTreeSet::new()), Some(4096));
        assert_eq!(next_vni(&[4096, 4097, 4099].into()), Some(4098));
    }

    proptest! {
        /// Whatever is taken, a carved subnet overlaps none of it and lies in the pool.
        #[test]
        fn carved_subnets_never_overlap(
            taken in proptest::collection::vec((0u32..4096, 16u8..28), 0..40),
            size in 18u8..28,
        ) {
            let pool = net("10.0.0.0/8");
            let taken: Vec<Subnet> = taken
                .into_iter()
                .map(|(n, len)| {
                    let base = (0x0a00_0000 | (n << 12)) & Subnet::mask(len);
                    Subnet { base, len }
                })
                .collect();
            if let Some(s) = pool.carve(size, &taken) {
                prop_assert!(taken.iter().all(|t| !t.overlaps(&s)), "{s} overlaps");
                prop_assert!(pool.overlaps(&s) && s.prefix_len() >= pool.prefix_len());
            }
        }
    }
}
