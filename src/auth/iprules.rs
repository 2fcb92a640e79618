//! Client IP allow and deny lists (CIDR, IPv4 and IPv6) checked against the trusted client
//! address.
//!
//! Each list is compiled at load into sorted, merged, disjoint address ranges per family, so
//! a check is one binary search per list whatever the number of entries. The deny list wins:
//! an address in it is refused even if the allow list also covers it; then a non-empty allow
//! list refuses every address it does not cover.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
//! IPv4 client) are checked as the IPv4 address they carry, and entries written in that form
//! (`::ffff:10.0.0.0/104`) become IPv4 entries. Other IPv6 entries only cover IPv6 clients,
//! even when, like `::/0`, they numerically include the mapped block: `::/0` means "every
//! IPv6 client" to whoever writes it.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Compiled allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    allow: RangeSet,
    deny: RangeSet,
    /// Whether an allow list was configured at all (an empty one would refuse everyone).
    has_allow: bool,
}

/// Why an address was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpDenial {
    #[error("client address {0} is in the deny list")]
    DenyList(IpAddr),
    #[error("client address {0} is not in the allow list")]
    NotAllowed(IpAddr),
}

/// Disjoint, sorted, non-adjacent inclusive ranges; IPv4 ranges hold `u32` values widened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

impl IpRules {
    /// Compiles the lists; an empty `allow` means "allow all not denied".
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> IpRules {
        IpRules {
            allow: RangeSet::new(allow),
            deny: RangeSet::new(deny),
            has_allow: !allow.is_empty(),
        }
    }

    /// Decides for the trusted client address.
    pub fn check(&self, ip: IpAddr) -> Result<(), IpDenial> {
        let ip = canonical(ip);
        if self.deny.contains(ip) {
            return Err(IpDenial::DenyList(ip));
        }
        if self.has_allow && !self.allow.contains(ip) {
            return Err(IpDenial::NotAllowed(ip));
        }
        Ok(())
    }
}

impl RangeSet {
    fn new(nets: &[IpNet]) -> RangeSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match canonical_net(*net) {
                IpNet::V4(n) => v4.push((
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                )),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        RangeSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }
}

/// The address to check: the IPv4 address inside an IPv4-mapped IPv6 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An entry inside `::ffff:0:0/96` as the IPv4 entry it denotes.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net.trunc();
    };
    let v6: Ipv6Net = v6.trunc();
    match v6.network().to_ipv4_mapped() {
        // 96..=128 minus 96 is always a valid IPv4 prefix length, so the fallback is unused.
        Some(v4) if v6.prefix_len() >= 96 => {
            Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(IpNet::V6(v6), |n| IpNet::V4(n.trunc()))
        }
        _ => IpNet::V6(v6),
    }
}

/// Sorts and coalesces overlapping or adjacent ranges.
fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        debug_assert!(start <= end, "a CIDR range starts before it ends");
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

fn in_ranges(ranges: &[(u128, u128)], value: u128) -> bool {
    // The first range starting after `value`; only the one before it can contain `value`.
    let after = ranges.partition_point(|&(start, _)| start <= value);
    after > 0 && ranges[after - 1].1 >= value
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_lists_allow_everyone() {
        let rules = IpRules::new(&[], &[]);
        assert_eq!(rules.check(ip("203.0.113.9")), Ok(()));
        assert_eq!(rules.check(ip("2001:db8::1")), Ok(()));
    }

    #[test]
    fn ipv4_allow_list_admits_only_its_networks() {
        let rules = IpRules::new(&nets(&["10.0.0.0/8", "192.168.1.7/32"]), &[]);
        assert_eq!(rules.check(ip("10.200.3.4")), Ok(()));
        assert_eq!(rules.check(ip("192.168.1.7")), Ok(()));
        assert_eq!(
            rules.check(ip("192.168.1.8")),
            Err(IpDenial::NotAllowed(ip("192.168.1.8")))
        );
        assert!(rules.check(ip("11.0.0.0")).is_err());
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = IpRules::new(&nets(&["10.0.0.0/8"]), &nets(&["10.1.0.0/16"]));
        assert_eq!(rules.check(ip("10.2.0.1")), Ok(()));
        assert_eq!(
            rules.check(ip("10.1.2.3")),
            Err(IpDenial::DenyList(ip("10.1.2.3")))
        );
    }

    #[test]
    fn ipv6_entries_match_ipv6_clients() {
        let rules = IpRules::new(&[], &nets(&["2001:db8:bad::/48"]));
        assert!(rules.check(ip("2001:db8:bad:1::5")).is_err());
        assert_eq!(rules.check(ip("2001:db8:bad0::5")), Ok(()));
        assert_eq!(rules.check(ip("10.0.0.1")), Ok(()));
    }

    #[test]
    fn ipv4_mapped_client_is_checked_as_ipv4() {
        let rules = IpRules::new(&[], &nets(&["198.51.100.0/24"]));
        assert_eq!(
            rules.check(ip("::ffff:198.51.100.20")),
            Err(IpDenial::DenyList(ip("198.51.100.20")))
        );
        assert_eq!(rules.check(ip("::ffff:198.51.101.20")), Ok(()));
    }

    #[test]
    fn ipv4_mapped_entry_covers_ipv4_clients() {
        let rules = IpRules::new(&nets(&["::ffff:10.0.0.0/104"]), &[]);
        assert_eq!(rules.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(rules.check(ip("::ffff:10.9.9.9")), Ok(()));
        assert!(rules.check(ip("11.0.0.1")).is_err());
    }

    #[test]
    fn ipv6_catch_all_does_not_cover_ipv4_clients() {
        let rules = IpRules::new(&[], &nets(&["::/0"]));
        assert!(rules.check(ip("2001:db8::1")).is_err());
        assert_eq!(rules.check(ip("192.0.2.1")), Ok(()));
        assert_eq!(rules.check(ip("::ffff:192.0.2.1")), Ok(()));
    }

    #[test]
    fn host_bits_in_an_entry_are_ignored() {
        let rules = IpRules::new(&nets(&["10.1.2.3/16"]), &[]);
        assert_eq!(rules.check(ip("10.1.255.255")), Ok(()));
    }

    #[test]
    fn overlapping_and_adjacent_entries_are_merged() {
        let set = RangeSet::new(&nets(&[
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.0.0/24",
            "8.0.0.0/8",
        ]));
        assert_eq!(set.v4.len(), 2);
        let set = RangeSet::new(&nets(&["10.0.0.0/8", "9.0.0.0/8"]));
        assert_eq!(set.v4, vec![(0x0900_0000, 0x0aff_ffff)]);
        let set = RangeSet::new(&nets(&["::/0", "2001:db8::/32"]));
        assert_eq!(set.v6, vec![(0, u128::MAX)]);
    }

    #[test]
    fn extremes_of_the_address_space_are_handled() {
        let rules = IpRules::new(
            &[],
            &nets(&[
                "0.0.0.0/32",
                "255.255.255.255/32",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            ]),
        );
        assert!(rules.check(ip("0.0.0.0")).is_err());
        assert!(rules.check(ip("255.255.255.255")).is_err());
        assert!(rules.check(IpAddr::V6(Ipv6Addr::from(u128::MAX))).is_err());
        assert_eq!(rules.check(ip("0.0.0.1")), Ok(()));
    }

    /// The obvious linear scan the compiled form must agree with.
    fn reference(allow: &[IpNet], deny: &[IpNet], ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let covers = |list: &[IpNet]| list.iter().any(|n| canonical_net(*n).contains(&ip));
        !covers(deny) && (allow.is_empty() || covers(allow))
    }

    /// Entries and addresses drawn from small regions so that hits and misses are common.
    fn net_strategy() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u16>(), 16u8..=32).prop_map(|(low, len)| {
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | u32::from(low)), len).unwrap())
            }),
            (any::<u16>(), 112u8..=128).prop_map(|(low, len)| {
                let addr = Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(low));
                IpNet::V6(Ipv6Net::new(addr, len).unwrap())
            }),
            (any::<u16>(), 112u8..=128).prop_map(|(low, len)| {
                let v4 = Ipv4Addr::from(0x0a00_0000 | u32::from(low));
                IpNet::V6(Ipv6Net::new(v4.to_ipv6_mapped(), len).unwrap())
            }),
        ]
    }

    fn ip_strategy() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u16>().prop_map(|low| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | u32::from(low)))),
            any::<u16>().prop_map(|low| {
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(low)))
            }),
            any::<u16>().prop_map(|low| {
                IpAddr::V6(Ipv4Addr::from(0x0a00_0000 | u32::from(low)).to_ipv6_mapped())
            }),
        ]
    }

    proptest! {
        #[test]
        fn compiled_rules_agree_with_a_linear_scan(
            allow in prop::collection::vec(net_strategy(), 0..12),
            deny in prop::collection::vec(net_strategy(), 0..12),
            ips in prop::collection::vec(ip_strategy(), 1..32),
        ) {
            let rules = IpRules::new(&allow, &deny);
            for ip in ips {
                prop_assert_eq!(rules.check(ip).is_ok(), reference(&allow, &deny, ip), "{}", ip);
            }
        }
    }
}
