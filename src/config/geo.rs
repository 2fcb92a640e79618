//! Validation of the `geo` section and of the location conditions routes put on clients.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;

use super::file;
use super::model::{GeoDefaults, GeoField, GeoMatch, GeoSettings, GeoUpstream};
use super::validate::{opt_duration, Errors};
use ipnet::IpNet;
use std::net::IpAddr;

/// Validates the `geo` section; database files are opened when the snapshot is built.
pub(super) fn settings(errs: &mut Errors, g: &file::Geo, base_dir: &Path) -> GeoSettings {
    errs.unknown_in("geo", &g);
    let databases = g
        .databases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if p.is_empty() {
                errs.push(format!("geo.databases[{i}]"), "empty path");
                return None;
            }
            Some(base_dir.join(p))
        })
        .collect();
    let mut networks = Vec::new();
    for (net, label) in &g.networks {
        let at = format!("geo.networks.{net}");
        match parse_network(net) {
            Ok(n) if !label.is_empty() => networks.push((n, label.clone())),
            Ok(_) => errs.push(at, "empty label"),
            Err(e) => errs.push(at, e),
        }
    }
    if let Some(file) = &g.networks_file {
        let path = base_dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_csv(&text) {
                Ok(more) => networks.extend(more),
                Err(e) => errs.push("geo.networks_file", format!("{}: {e}", path.display())),
            },
            Err(e) => errs.push(
                "geo.networks_file",
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
    let default = g
        .default
        .as_ref()
        .map(|d| {
            errs.unknown_in("geo.default", &d);
            for (key, v) in [
                ("country", &d.country),
                ("continent", &d.continent),
                ("subdivision", &d.subdivision),
            ] {
                if let Some(v) = v {
                    code(errs, &format!("geo.default.{key}"), v);
                }
            }
            GeoDefaults {
                country: d.country.clone(),
                continent: d.continent.clone(),
                subdivision: d.subdivision.clone(),
                asn: d.asn,
                label: d.label.clone(),
            }
        })
        .unwrap_or_default();
    let headers = match &g.headers {
        None => vec![(HeaderName::from_static("x-geo-country"), GeoField::Country)],
        Some(map) => map
            .iter()
            .filter_map(|(name, f)| {
                let at = format!("geo.headers.{name}");
                let field = field(errs, &at, f);
                match HeaderName::from_str(name) {
                    Ok(n) => Some((n, field?)),
                    Err(_) => {
                        errs.push(at, format!("invalid header name {name:?}"));
                        None
                    }
                }
            })
            .collect(),
    };
    let reload_interval = opt_duration(
        errs,
        "geo.reload_interval",
        &g.reload_interval,
        Duration::from_secs(10),
    );
    if reload_interval < Duration::from_millis(100) {
        errs.push("geo.reload_interval", "at least 100ms");
    }
    for (i, c) in g.metrics_countries.iter().enumerate() {
        code(errs, &format!("geo.metrics_countries[{i}]"), c);
    }
    if g.metrics_countries.len() > 300 {
        errs.push(
            "geo.metrics_countries",
            "at most 300 countries (each is a series per route)",
        );
    }
    GeoSettings {
        databases,
        networks,
        default,
        headers,
        reload_interval,
        metrics_countries: g
            .metrics_countries
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    }
}

/// A location field by name: `country`, `continent`, `subdivision`, `asn` or `label`.
pub(super) fn field(errs: &mut Errors, at: &str, name: &str) -> Option<GeoField> {
    match GeoField::from_name(name) {
        Some(f) => Some(f),
        None => {
            errs.push(
                at,
                format!(
                    "unknown geo field {name:?}; use country, continent, subdivision, asn or label"
                ),
            );
            None
        }
    }
}

/// Validates location conditions; `geo` is the section they need, `labels` the labels the
/// CIDR table and the default can give.
pub(super) fn condition(
    errs: &mut Errors,
    at: &str,
    m: &file::GeoMatch,
    geo: Option<&GeoSettings>,
) -> GeoMatch {
    errs.unknown_in(at, &m);
    let Some(geo) = geo else {
        errs.push(at, "location conditions need the top-level `geo` section");
        return GeoMatch::default();
    };
    for (key, list) in [
        ("countries", &m.countries),
        ("continents", &m.continents),
        ("subdivisions", &m.subdivisions),
        ("not_countries", &m.not_countries),
        ("not_continents", &m.not_continents),
        ("not_subdivisions", &m.not_subdivisions),
    ] {
        for (i, c) in list.iter().enumerate() {
            code(errs, &format!("{at}.{key}[{i}]"), c);
        }
    }
    for (key, list) in [("labels", &m.labels), ("not_labels", &m.not_labels)] {
        for (i, l) in list.iter().enumerate() {
            let known = geo.networks.iter().any(|(_, x)| x == l)
                || geo.default.label.as_deref() == Some(l.as_str());
            if !known {
                errs.push(
                    format!("{at}.{key}[{i}]"),
                    format!("no network in geo.networks (or geo.default) has label {l:?}"),
                );
            }
        }
    }
    let all = [
        m.countries.len(),
        m.continents.len(),
        m.subdivisions.len(),
        m.asns.len(),
        m.labels.len(),
        m.not_countries.len(),
        m.not_continents.len(),
        m.not_subdivisions.len(),
        m.not_asns.len(),
        m.not_labels.len(),
    ];
    if all.iter().all(|n| *n == 0) {
        errs.push(at, "no condition: give countries, continents, subdivisions, asns or labels (or their not_ forms)");
    }
    let upper = |v: &[String]| v.iter().map(|c| c.to_ascii_uppercase()).collect();
    GeoMatch {
        countries: upper(&m.countries),
        continents: upper(&m.continents),
        subdivisions: upper(&m.subdivisions),
        asns: m.asns.clone(),
        labels: m.labels.clone(),
        not_countries: upper(&m.not_countries),
        not_continents: upper(&m.not_continents),
        not_subdivisions: upper(&m.not_subdivisions),
        not_asns: m.not_asns.clone(),
        not_labels: m.not_labels.clone(),
    }
}

/// A route's `geo_upstreams`: each names a known group and a valid location.
pub(super) fn upstreams(
    errs: &mut Errors,
    at: &str,
    r: &file::Route,
    known: &HashSet<&str>,
    geo: Option<&GeoSettings>,
) -> Vec<GeoUpstream> {
    let mut out = Vec::new();
    for (i, g) in r.geo_upstreams.iter().enumerate() {
        let at = format!("{at}.geo_upstreams[{i}]");
        errs.unknown_in(&at, &g);
        if !known.contains(g.upstream.as_str()) {
            errs.push(
                format!("{at}.upstream"),
                format!("no upstream named {:?}", g.upstream),
            );
        }
        let when = condition(errs, &format!("{at}.when"), &g.when, geo);
        out.push(GeoUpstream {
            when,
            upstream: g.upstream.clone(),
        });
    }
    out
}

fn code(errs: &mut Errors, at: &str, c: &str) {
    let ok = (1..=3).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        errs.push(
            at,
            format!("invalid code {c:?}: one to three letters or digits (DE, EU, BY)"),
        );
    }
}

impl GeoField {
    pub fn from_name(name: &str) -> Option<GeoField> {
        Some(match name {
            "country" => GeoField::Country,
            "continent" => GeoField::Continent,
            "subdivision" => GeoField::Subdivision,
            "asn" => GeoField::Asn,
            "label" => GeoField::Label,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GeoField::Country => "country",
            GeoField::Continent => "continent",
            GeoField::Subdivision => "subdivision",
            GeoField::Asn => "asn",
            GeoField::Label => "label",
        }
    }
}

/// Reads `network,label` lines; blank lines and `#` comments are skipped. Errors name the
/// line.
fn parse_csv(text: &str) -> Result<Vec<(IpNet, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((net, label)) = line.split_once(',') else {
            return Err(format!("line {}: expected network,label", n + 1));
        };
        let net = parse_network(net.trim()).map_err(|e| format!("line {}: {e}", n + 1))?;
        let label = label.trim();
        if label.is_empty() {
            return Err(format!("line {}: empty label", n + 1));
        }
        out.push((net, label.to_owned()));
    }
    Ok(out)
}

/// A network as `10.0.0.0/8`, or a bare address for one host.
fn parse_network(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid network {s:?}; use e.g. 10.0.0.0/8"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_are_read_and_mistakes_name_their_line() {
        let ok = parse_csv("# nets\n10.0.0.0/8, internal\n\n192.0.2.1,lab # one host\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].0.to_string(), "192.0.2.1/32");
        assert_eq!(ok[1].1, "lab");
        let err = parse_csv("10.0.0.0/8,a\nnonsense,b\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_csv("10.0.0.0/8\n").is_err());
    }
}
