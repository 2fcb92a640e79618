//! The CIDR table: networks mapped to labels, looked up by longest prefix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Networks and their labels. One hash map per prefix length in use, asked from the
/// longest length down, so a lookup costs one masked hash probe per length.
#[derive(Debug, Default)]
pub struct CidrTable {
    /// IPv4 networks keyed by masked address bits, longest prefix first.
    v4: Vec<(u8, HashMap<u32, Arc<str>>)>,
    v6: Vec<(u8, HashMap<u128, Arc<str>>)>,
}

impl CidrTable {
    /// Builds the table; of two entries for the same network the last wins.
    pub fn new(entries: &[(IpNet, String)]) -> CidrTable {
        let mut labels: HashMap<&str, Arc<str>> = HashMap::new();
        let mut table = CidrTable::default();
        for (net, label) in entries {
            let label = labels
                .entry(label.as_str())
                .or_insert_with(|| Arc::from(label.as_str()))
                .clone();
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
    pub fn label(&self, ip: IpAddr) -> Option<&Arc<str>> {
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

fn level<K>(levels: &mut Vec<(u8, HashMap<K, Arc<str>>)>, len: u8) -> &mut HashMap<K, Arc<str>> {
    let at = match levels.iter().position(|(l, _)| *l == len) {
        Some(at) => at,
        None => {
            levels.push((len, HashMap::new()));
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
