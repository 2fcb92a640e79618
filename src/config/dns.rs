//! Validation of targets given by name and of the `dns` section that resolves them.

use std::net::SocketAddr;
use std::time::Duration;

use super::file;
use super::model::{DnsQuery, DnsSettings};
use super::validate::{opt_duration, Errors};

/// The query of a target given by name (`NAME:PORT`, or an SRV name with `srv: true`);
/// `None` for an `IP:PORT` target, or a malformed one (reported here when `srv` is set).
pub(super) fn target(errs: &mut Errors, at: &str, t: &file::Target) -> Option<DnsQuery> {
    if t.srv == Some(true) {
        if !is_name(&t.address) {
            errs.push(
                format!("{at}.address"),
                format!(
                    "invalid SRV name {:?}; use e.g. _http._tcp.api.internal",
                    t.address
                ),
            );
            return None;
        }
        return Some(DnsQuery::Srv {
            name: t.address.clone(),
        });
    }
    if t.address.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (name, port) = t.address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    // A name has a letter somewhere: `10.0.0:80` is a mistyped address, not a name.
    (is_name(name) && name.bytes().any(|b| b.is_ascii_alphabetic())).then(|| DnsQuery::Host {
        name: name.to_owned(),
        port,
    })
}

fn is_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub(super) fn settings(errs: &mut Errors, d: Option<&file::Dns>) -> DnsSettings {
    let defaults = DnsSettings::default();
    let Some(d) = d else {
        return defaults;
    };
    errs.unknown_in("dns", &d);
    let servers = d
        .servers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(
                    format!("dns.servers[{i}]"),
                    format!("invalid address {s:?}; use IP:PORT like 10.0.0.2:53"),
                );
                None
            }
        })
        .collect();
    let min_ttl = opt_duration(errs, "dns.min_ttl", &d.min_ttl, defaults.min_ttl);
    let max_ttl = opt_duration(errs, "dns.max_ttl", &d.max_ttl, defaults.max_ttl);
    let timeout = opt_duration(errs, "dns.timeout", &d.timeout, defaults.timeout);
    if min_ttl < Duration::from_millis(100) {
        errs.push("dns.min_ttl", "at least 100ms");
    }
    if max_ttl < min_ttl {
        errs.push("dns.max_ttl", "must not be below min_ttl");
    }
    if timeout.is_zero() {
        errs.push("dns.timeout", "must be more than 0");
    }
    DnsSettings {
        servers,
        min_ttl,
        max_ttl,
        timeout,
    }
}
