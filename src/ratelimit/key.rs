//! The counting key of a request under one policy: its key parts, each tagged and
//! length-prefixed so that no two different combinations give the same bytes.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::model::KeyPart;

/// What a request offers to key parts.
pub struct KeyContext<'a> {
    pub client_ip: IpAddr,
    pub route: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The authenticated consumer (or token subject), when the route authenticates.
    pub consumer: Option<&'a str>,
    /// The header naming the consumer when authentication did not
    /// (`rate_limiting.consumer_header`).
    pub consumer_header: Option<&'a http::HeaderName>,
    /// The client's location, when the route looked it up.
    pub geo: Option<&'a crate::geo::Location>,
    /// The authenticated consumer's `metadata`, when the credential names a configured
    /// consumer.
    pub metadata: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// Writes the key of `ctx` under `parts` into `out` (cleared first). A header part the
/// request lacks counts under the client's address instead, so leaving a header out does
/// not escape the limit.
pub fn build(out: &mut Vec<u8>, parts: &[KeyPart], ipv6_prefix: u8, ctx: &KeyContext<'_>) {
    out.clear();
    for part in parts {
        match part {
            KeyPart::ClientIp => client_ip(out, ctx.client_ip, ipv6_prefix),
            KeyPart::Route => tagged(out, b'r', ctx.route.as_bytes()),
            KeyPart::Path => tagged(out, b'p', ctx.path.as_bytes()),
            KeyPart::Consumer => consumer(out, ctx, ipv6_prefix),
            // A consumer without the field counts on its own, as the consumer part does.
            KeyPart::Metadata(field) => match ctx.metadata.and_then(|m| m.get(field)) {
                Some(v) => tagged(out, b'm', v.as_bytes()),
                None => consumer(out, ctx, ipv6_prefix),
            },
            KeyPart::Header(name) => match ctx.headers.get(name) {
                Some(v) => tagged(out, b'h', v.as_bytes()),
                None => client_ip(out, ctx.client_ip, ipv6_prefix),
            },
            // An unknown field counts as one shared empty value: the location cannot be
            // dodged, only not known.
            KeyPart::Geo(field) => {
                let text = crate::geo::field_or_empty(ctx.geo, *field);
                tagged(out, b'g', text.as_bytes());
            }
        }
    }
}

/// The consumer's name, or the consumer header's value, or the client's address.
fn consumer(out: &mut Vec<u8>, ctx: &KeyContext<'_>, ipv6_prefix: u8) {
    match ctx.consumer {
        Some(name) => tagged(out, b'c', name.as_bytes()),
        None => match ctx.consumer_header.and_then(|h| ctx.headers.get(h)) {
            Some(v) => tagged(out, b'c', v.as_bytes()),
            None => client_ip(out, ctx.client_ip, ipv6_prefix),
        },
    }
}

fn tagged(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// IPv4 addresses as themselves (IPv4-mapped IPv6 included); IPv6 masked to the prefix, so
/// one host cannot dodge its limit by cycling through the addresses of its /64.
fn client_ip(out: &mut Vec<u8>, ip: IpAddr, ipv6_prefix: u8) {
    match ip {
        IpAddr::V4(v4) => tagged(out, b'4', &v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => tagged(out, b'4', &v4.octets()),
            None => {
                let bits = u128::from(v6);
                let keep = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                tagged(out, b'6', &(bits & mask).to_be_bytes());
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn key(parts: &[KeyPart], ip: &str, headers: &HeaderMap) -> Vec<u8> {
        let consumer = HeaderName::from_static("x-consumer");
        let ctx = KeyContext {
            client_ip: ip.parse().unwrap(),
            route: "r",
            path: "/p",
            headers,
            consumer: None,
            consumer_header: Some(&consumer),
            geo: None,
            metadata: None,
        };
        let mut out = Vec::new();
        build(&mut out, parts, 64, &ctx);
        out
    }

    #[test]
    fn ipv6_addresses_in_one_prefix_share_a_key() {
        let h = HeaderMap::new();
        let a = key(&[KeyPart::ClientIp], "2001:db8:1:2::1", &h);
        let b = key(&[KeyPart::ClientIp], "2001:db8:1:2:ffff::9", &h);
        let c = key(&[KeyPart::ClientIp], "2001:db8:1:3::1", &h);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let h = HeaderMap::new();
        assert_eq!(
            key(&[KeyPart::ClientIp], "::ffff:10.0.0.1", &h),
            key(&[KeyPart::ClientIp], "10.0.0.1", &h)
        );
    }

    #[test]
    fn missing_header_falls_back_to_the_client_address() {
        let h = HeaderMap::new();
        let name = HeaderName::from_static("x-api-key");
        assert_eq!(
            key(&[KeyPart::Header(name)], "10.0.0.1", &h),
            key(&[KeyPart::ClientIp], "10.0.0.1", &h)
        );
    }

    #[test]
    fn parts_cannot_be_confused_by_their_values() {
        let mut a = HeaderMap::new();
        a.insert("x-consumer", HeaderValue::from_static("r"));
        let mut b = HeaderMap::new();
        b.insert("x-consumer", HeaderValue::from_static(""));
        // consumer "r" + route "r" must differ from consumer "" + route "r" + ...
        assert_ne!(
            key(&[KeyPart::Consumer, KeyPart::Route], "10.0.0.1", &a),
            key(&[KeyPart::Consumer, KeyPart::Route], "10.0.0.1", &b)
        );
        assert_ne!(
            key(&[KeyPart::Route], "10.0.0.1", &a),
            key(&[KeyPart::Path], "10.0.0.1", &a)
        );
    }

    #[test]
    fn consumers_of_one_team_share_a_metadata_key_and_others_count_alone() {
        let h = HeaderMap::new();
        let team = |name: &str, value: Option<&str>| {
            let mut m = std::collections::BTreeMap::new();
            if let Some(v) = value {
                m.insert("team".to_owned(), v.to_owned());
            }
            let ctx = KeyContext {
                client_ip: "10.0.0.1".parse().unwrap(),
                route: "r",
                path: "/p",
                headers: &h,
                consumer: Some(name),
                consumer_header: None,
                geo: None,
                metadata: Some(&m),
            };
            let mut out = Vec::new();
            build(&mut out, &[KeyPart::Metadata("team".into())], 64, &ctx);
            out
        };
        assert_eq!(team("alice", Some("pay")), team("bob", Some("pay")));
        assert_ne!(team("alice", Some("pay")), team("carol", Some("ops")));
        assert_ne!(
            team("dave", None),
            team("erin", None),
            "no team: each alone"
        );
        assert_ne!(
            team("pay", None),
            team("alice", Some("pay")),
            "a name is not a team"
        );
    }
}
