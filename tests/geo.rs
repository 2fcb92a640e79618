//! Client locations end to end: MaxMind databases and a CIDR table, client addresses read
//! through trusted `X-Forwarded-For` and from loopback source addresses, route conditions,
//! upstream choice, upstream fields, rate-limit and cache keys, the access log, the default
//! of an unknown location, and a database replaced under load.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::geo::get_from;
use support::mmdb::{write_asn, write_city, Place};
use support::*;

/// The networks of the test databases: documentation ranges given countries.
const DE: &str = "198.51.100.7";
const DE_2: &str = "198.51.100.9";
const US: &str = "203.0.113.5";
const UNKNOWN: &str = "192.0.2.1";

fn places() -> Vec<Place> {
    vec![
        Place {
            network: "198.51.100.0/24",
            country: "DE",
            continent: "EU",
            subdivision: Some("BY"),
        },
        Place {
            network: "203.0.113.0/24",
            country: "US",
            continent: "NA",
            subdivision: None,
        },
    ]
}

/// A City and an ASN database in `dir`, returned as YAML list items.
fn databases(dir: &Path) -> String {
    let city = dir.join("city.mmdb");
    let asn = dir.join("asn.mmdb");
    write_city(&city, &places());
    write_asn(
        &asn,
        &[("198.51.100.0/24", 64512), ("203.0.113.0/24", 64513)],
    );
    format!("[\"{}\", \"{}\"]", city.display(), asn.display())
}

/// A backend named `name` that answers with its name and the location fields it received.
async fn echo(name: &'static str) -> Backend {
    Backend::start(false, move |req| async move {
        let field = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let body = format!(
            "{name} country={} label={} asn={}",
            field("x-geo-country"),
            field("x-geo-label"),
            field("x-asn")
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from(body)))
            .unwrap()
    })
    .await
}

struct Fixture {
    gw: TestGateway,
    _dir: tempdir::Dir,
    _a: Backend,
    _b: Backend,
}

/// A gateway trusting 127.0.0.1 as a proxy, with `geo` settings (after `databases:`),
/// upstreams `ua` and `ub` (backends `a`, `b`), extra top-level YAML and routes.
async fn fixture(geo: &str, top: &str, routes: &str) -> Fixture {
    let dir = tempdir::Dir::new("geo");
    let (a, b) = (echo("a").await, echo("b").await);
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0, trusted_proxies: [127.0.0.1/32]}}]
admin: {{address: 127.0.0.1:0}}
geo:
  databases: {}
{geo}
upstreams:
  ua: {{targets: [{{address: \"{}\"}}]}}
  ub: {{targets: [{{address: \"{}\"}}]}}
{top}routes:
{routes}",
        databases(&dir.path),
        a.addr,
        b.addr
    );
    let gw = TestGateway::start(&yaml);
    Fixture {
        gw,
        _dir: dir,
        _a: a,
        _b: b,
    }
}

async fn from(gw: &TestGateway, client: &str, path: &str) -> Got {
    request(gw.addr, "GET", path, &[("x-forwarded-for", client)]).await
}

#[tokio::test]
async fn country_continent_subdivision_and_asn_conditions_route_clients() {
    let f = fixture(
        "",
        "",
        "  - {name: bavaria, match: {path: {prefix: /by}, geo: {subdivisions: [BY]}}, upstream: ub}
  - {name: europe, match: {geo: {continents: [EU], asns: [64512]}}, upstream: ub}
  - {name: rest, upstream: ua}
",
    )
    .await;
    assert!(from(&f.gw, DE, "/x").await.text().starts_with("b "));
    assert!(from(&f.gw, DE, "/by").await.text().starts_with("b "));
    assert!(from(&f.gw, US, "/x").await.text().starts_with("a "));
    assert!(from(&f.gw, US, "/by").await.text().starts_with("a "));
    assert!(from(&f.gw, UNKNOWN, "/x").await.text().starts_with("a "));
}

#[tokio::test]
async fn negated_conditions_hold_for_other_and_unknown_locations() {
    let f = fixture(
        "",
        "",
        "  - {name: not-us, match: {geo: {not_countries: [US]}}, upstream: ub}
  - {name: rest, upstream: ua}
",
    )
    .await;
    assert!(from(&f.gw, DE, "/").await.text().starts_with("b "));
    assert!(from(&f.gw, UNKNOWN, "/").await.text().starts_with("b "));
    assert!(from(&f.gw, US, "/").await.text().starts_with("a "));
}

#[tokio::test]
async fn upstreams_receive_the_country_and_a_client_cannot_forge_it() {
    let f = fixture("", "", "  - {name: all, upstream: ua}\n").await;
    let got = request(
        f.gw.addr,
        "GET",
        "/",
        &[("x-forwarded-for", DE), ("x-geo-country", "US")],
    )
    .await;
    assert_eq!(got.text(), "a country=DE label=- asn=-");
    let unknown = request(
        f.gw.addr,
        "GET",
        "/",
        &[("x-forwarded-for", UNKNOWN), ("x-geo-country", "US")],
    )
    .await;
    assert_eq!(
        unknown.text(),
        "a country=- label=- asn=-",
        "an unknown country removes the client's field"
    );
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_location_with_forwarded_for() {
    let dir = tempdir::Dir::new("geo-untrusted");
    let a = echo("a").await;
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
geo: {{databases: {}}}
upstreams: {{ua: {{targets: [{{address: \"{}\"}}]}}}}
routes: [{{upstream: ua}}]
",
        databases(&dir.path),
        a.addr
    );
    let gw = TestGateway::start(&yaml);
    let got = from(&gw, DE, "/").await;
    assert_eq!(got.text(), "a country=- label=- asn=-");
}

#[tokio::test]
async fn loopback_sources_are_labelled_by_the_cidr_table_and_choose_the_group() {
    let f = fixture(
        "  networks: {127.0.0.2/32: eu}
  headers: {X-Geo-Country: country, X-Geo-Label: label, X-Asn: asn}",
        "",
        "  - name: api
    upstream: ua
    geo_upstreams: [{when: {labels: [eu]}, upstream: ub}]
",
    )
    .await;
    let eu = get_from("127.0.0.2", f.gw.addr, "/", &[]).await;
    assert_eq!(eu.text(), "b country=- label=eu asn=-");
    let other = get_from("127.0.0.3", f.gw.addr, "/", &[]).await;
    assert_eq!(other.text(), "a country=- label=- asn=-");
    // Through the trusted proxy, the forwarded address is the one looked up.
    let via = get_from("127.0.0.1", f.gw.addr, "/", &[("x-forwarded-for", DE)]).await;
    assert_eq!(via.text(), "a country=DE label=- asn=64512");
}

#[tokio::test]
async fn an_unknown_location_follows_the_configured_default() {
    let f = fixture(
        "  default: {country: XX, label: other}
  headers: {X-Geo-Country: country, X-Geo-Label: label}",
        "",
        "  - {name: unknown, match: {geo: {countries: [XX]}}, upstream: ub}
  - {name: rest, upstream: ua}
",
    )
    .await;
    let got = from(&f.gw, UNKNOWN, "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "b country=XX label=other asn=-");
    assert_eq!(
        from(&f.gw, DE, "/").await.text(),
        "a country=DE label=other asn=-"
    );
}

#[tokio::test]
async fn placeholders_put_location_fields_in_request_headers() {
    let f = fixture(
        "  headers: {}",
        "",
        "  - name: all
    upstream: ua
    request_headers: {set: {X-Geo-Label: \"{geo.country}-{geo.subdivision}/{geo.continent}\"}}
",
    )
    .await;
    assert_eq!(
        from(&f.gw, DE, "/").await.text(),
        "a country=- label=DE-BY/EU asn=-"
    );
}

#[tokio::test]
async fn a_rate_limit_keyed_by_country_counts_a_country_together() {
    let f = fixture(
        "",
        "rate_limiting:\n  policies:\n    per-country: {algorithm: fixed_window, limit: 2, window: 1h, key: [geo:country]}\n",
        "  - {name: all, upstream: ua, rate_limits: [per-country]}\n",
    )
    .await;
    assert_eq!(from(&f.gw, DE, "/").await.status, 200);
    assert_eq!(from(&f.gw, DE_2, "/").await.status, 200);
    assert_eq!(
        from(&f.gw, DE, "/").await.status,
        429,
        "two German clients share one count"
    );
    assert_eq!(from(&f.gw, US, "/").await.status, 200);
}

#[tokio::test]
async fn a_cache_keyed_by_country_keeps_one_copy_per_country() {
    let f = fixture(
        "",
        "",
        "  - {name: all, upstream: ua, cache: {key_geo: [country]}}\n",
    )
    .await;
    assert_eq!(
        from(&f.gw, DE, "/c").await.text(),
        "a country=DE label=- asn=-"
    );
    let us = from(&f.gw, US, "/c").await;
    assert_eq!(
        us.text(),
        "a country=US label=- asn=-",
        "not the German copy"
    );
    let again = from(&f.gw, DE_2, "/c").await;
    assert_eq!(again.text(), "a country=DE label=- asn=-");
    assert!(
        again.header("cache-status").unwrap().contains("hit"),
        "{:?}",
        again.header("cache-status")
    );
}

#[tokio::test]
async fn the_access_log_carries_the_location() {
    let dir = tempdir::Dir::new("geo-log");
    let log = dir.path.join("access.log");
    let f = fixture(
        "  networks: {198.51.100.0/24: eu}",
        &format!("access_log: {{target: \"{}\"}}\n", log.display()),
        "  - {name: all, upstream: ua}\n",
    )
    .await;
    from(&f.gw, DE, "/").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
        })
        .await
    );
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.contains(
            "\"geo\":{\"country\":\"DE\",\"continent\":\"EU\",\"subdivision\":\"BY\",\"asn\":\"64512\",\"label\":\"eu\"}"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn named_countries_have_their_own_request_series_and_others_share_two() {
    let f = fixture(
        "  metrics_countries: [de]",
        "",
        "  - {name: all, upstream: ua}\n",
    )
    .await;
    for client in [DE, DE_2, US, UNKNOWN] {
        assert_eq!(from(&f.gw, client, "/").await.status, 200);
    }
    let m = get(f.gw.admin.unwrap(), "admin", "/metrics").await.text();
    for series in [
        "ferrogate_geo_requests_total{route=\"all\",country=\"DE\"} 2",
        "ferrogate_geo_requests_total{route=\"all\",country=\"other\"} 1",
        "ferrogate_geo_requests_total{route=\"all\",country=\"unknown\"} 1",
    ] {
        assert!(m.contains(series), "{series} missing in:\n{m}");
    }
    assert!(
        !m.contains("country=\"US\""),
        "a country not named has no series"
    );
}

#[tokio::test]
async fn a_database_replaced_under_load_is_used_without_a_failed_request() {
    let f = fixture(
        "  reload_interval: 100ms",
        "",
        "  - {name: all, upstream: ua}\n",
    )
    .await;
    let dir = &f._dir.path;
    assert_eq!(
        from(&f.gw, DE, "/").await.text(),
        "a country=DE label=- asn=-"
    );
    let addr = f.gw.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(async move {
        load_with(addr, &[("x-forwarded-for", DE)], 4, async {
            let _ = stop_rx.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut moved = places();
    moved[0].country = "FR";
    write_city(&dir.join("city.mmdb"), &moved);
    let switched = eventually(Duration::from_secs(5), || async {
        from(&f.gw, DE, "/").await.text() == "a country=FR label=- asn=-"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(()).unwrap();
    let report = load.await.unwrap();
    assert!(switched, "the new database is in use");
    assert!(report.requests > 20, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(
        report.bodies.contains_key("a country=DE label=- asn=-"),
        "{report:?}"
    );
    assert!(
        report.bodies.contains_key("a country=FR label=- asn=-"),
        "{report:?}"
    );
}

#[test]
fn location_settings_are_checked_with_their_key_paths() {
    let yaml = "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - {match: {geo: {countries: [DE]}}, upstream: u}
  - {upstream: u, request_headers: {set: {x-c: '{geo.country}'}}}
";
    let errors = ferrogate::config::parse(yaml, Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        errors
            .contains("routes[0].match.geo: location conditions need the top-level `geo` section"),
        "{errors}"
    );
    assert!(
        errors.contains("routes[1].request_headers.set.x-c"),
        "{errors}"
    );
    let yaml = "listeners: [{address: 127.0.0.1:0}]
geo:
  networks: {10.0.0.0/33: x, 10.0.0.0/8: internal}
  headers: {x-geo: planet}
  default: {country: Germany}
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - match: {geo: {labels: [nowhere], countries: [D-E]}}
    upstream: u
    geo_upstreams: [{when: {}, upstream: missing}]
";
    let errors = ferrogate::config::parse(yaml, Path::new("."))
        .unwrap_err()
        .to_string();
    for expected in [
        "geo.networks.10.0.0.0/33: invalid network",
        "geo.headers.x-geo: unknown geo field \"planet\"",
        "geo.default.country: invalid code \"Germany\"",
        "routes[0].match.geo.countries[0]: invalid code",
        "routes[0].match.geo.labels[0]: no network in geo.networks",
        "routes[0].geo_upstreams[0].upstream: no upstream named \"missing\"",
        "routes[0].geo_upstreams[0].when: no condition",
    ] {
        assert!(
            errors.contains(expected),
            "{expected} missing in:\n{errors}"
        );
    }
}

#[test]
fn a_database_that_is_not_one_is_refused_at_load() {
    let dir = tempdir::Dir::new("geo-bad");
    let bad = dir.path.join("bad.mmdb");
    std::fs::write(&bad, b"not a database").unwrap();
    let yaml = format!(
        "listeners: [{{address: 127.0.0.1:0}}]
geo: {{databases: [\"{}\"]}}
upstreams: {{u: {{targets: [{{address: 127.0.0.1:9}}]}}}}
routes: [{{upstream: u}}]
",
        bad.display()
    );
    let config = ferrogate::config::parse(&yaml, Path::new(".")).unwrap();
    let err = ferrogate::Gateway::start(config, ferrogate::StartOptions::default())
        .err()
        .expect("a bad database stops the start");
    assert!(err.to_string().contains("bad.mmdb"), "{err}");
}

#[tokio::test]
async fn the_example_config_sends_labelled_clients_to_their_group() {
    let (default, eu) = (echo_field("default").await, echo_field("eu").await);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/geo.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:8080", "127.0.0.1:0")
    .replace("127.0.0.1:9101", &default.addr.to_string())
    .replace("127.0.0.1:9102", &eu.addr.to_string());
    let gw = TestGateway::start(&text);
    assert_eq!(
        get_from("127.0.0.2", gw.addr, "/", &[]).await.text(),
        "eu eu"
    );
    assert_eq!(
        get_from("127.0.0.1", gw.addr, "/", &[("x-geo-region", "eu")])
            .await
            .text(),
        "default -",
        "a client's own field is not passed on"
    );
}

/// A backend answering with its name and the `X-Geo-Region` it received.
async fn echo_field(name: &'static str) -> Backend {
    Backend::start(false, move |req| async move {
        let region = req
            .headers()
            .get("x-geo-region")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        Response::new(full(Bytes::from(format!("{name} {region}"))))
    })
    .await
}
