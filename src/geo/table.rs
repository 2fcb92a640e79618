//! The CIDR table: networks mapped to labels, looked up by longest prefix.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

use super::Label;

/// Masked addresses are already well spread: one multiply mixes them enough for a table,
/// where SipHash cost more than the rest of the lookup.
#[derive(Default)]
struct AddressHasher(u64);

type Nets<K> = HashMap<K, Label, BuildHasherDefault<AddressHasher>>;

/// Networks and their labels. One hash map per prefix length in use, asked from the
/// longest length down, so a lookup costs one masked hash probe per length.
#[derive(Debug, Default)]
pub struct CidrTable {
    /// IPv4 networks keyed by masked address bits, longest prefix first.
    v4: Vec<(u8, Nets<u32>)>,
    v6: Vec<(u8, Nets<u128>)>,
}

impl CidrTable {
    /// Builds the table; of two entries for the same network the last wins.
    pub fn new(entries: &[(IpNet, String)]) -> CidrTable {
        let mut table = CidrTable::default();
        for (net, label) in entries {
            let label = Label::from(label.as_str());
            match net.trunc() {
                IpNet::V4(n) => {
                    let bits = n.prefix_len();
                    level(&mut table.v4, bits).insert(u32::from(n.network()), label);
                }
                IpNet::V6(n) => {
                    let bits = n.prefix_len();
                    level(&mut table.v6, bits).insert(u128::from(n.network()), label);
                }
            }
        }
        table.v4.sort_by_key(|l| std::cmp::Reverse(l.0));
        table.v6.sort_by_key(|l| std::cmp::Reverse(l.0));
        table
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The label of the longest network holding `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn label(&self, ip: IpAddr) -> Option<&Label> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4.iter().find_map(|(len, nets)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    nets.get(&(bits & mask))
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.iter().find_map(|(len, nets)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    nets.get(&(bits & mask))
                })
            }
        }
    }
}

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits depending on the low bits alone (zero in a masked
        // network): fold the high half in, since the table indexes by the low bits.
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn level<K>(levels: &mut Vec<(u8, Nets<K>)>, len: u8) -> &mut Nets<K> {
    let at = match levels.iter().position(|(l, _)| *l == len) {
        Some(at) => at,
        None => {
            levels.push((len, Nets::default()));
            levels.len() - 1
        }
    };
    &mut levels[at].1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> CidrTable {
        let entries: Vec<_> = entries
            .iter()
            .map(|(n, l)| {
                let net = n
                    .parse()
                    .unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()));
                (net, l.to_string())
            })
            .collect();
        CidrTable::new(&entries)
    }

    fn label(t: &CidrTable, ip: &str) -> Option<String> {
        t.label(ip.parse().unwrap()).map(|l| l.to_string())
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order() {
        let t = table(&[
            ("10.1.2.0/24", "rack"),
            ("10.0.0.0/8", "dc"),
            ("10.1.0.0/16", "room"),
        ]);
        assert_eq!(label(&t, "10.1.2.3").as_deref(), Some("rack"));
        assert_eq!(label(&t, "10.1.9.3").as_deref(), Some("room"));
        assert_eq!(label(&t, "10.9.9.9").as_deref(), Some("dc"));
        assert_eq!(label(&t, "11.0.0.1"), None);
    }

    #[test]
    fn many_networks_of_one_length_are_told_apart() {
        let nets: Vec<(String, String)> = (0..2000u32)
            .map(|i| (format!("10.{}.{}.0/24", i / 256, i % 256), format!("n{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = nets.iter().map(|(n, l)| (n.as_str(), l.as_str())).collect();
        let t = table(&refs);
        assert_eq!(label(&t, "10.0.7.9").as_deref(), Some("n7"));
        assert_eq!(label(&t, "10.7.207.1").as_deref(), Some("n1999"));
        assert_eq!(label(&t, "10.8.0.1"), None);
    }

    #[test]
    fn ipv4_mapped_ipv6_and_ipv6_networks_are_found() {
        let t = table(&[
            ("127.0.0.2", "eu"),
            ("2001:db8::/32", "lab"),
            ("::/0", "v6"),
        ]);
        assert_eq!(label(&t, "::ffff:127.0.0.2").as_deref(), Some("eu"));
        assert_eq!(label(&t, "127.0.0.3"), None);
        assert_eq!(label(&t, "2001:db8::1").as_deref(), Some("lab"));
        assert_eq!(label(&t, "2001:db9::1").as_deref(), Some("v6"));
    }
}
