//! Locality-aware balancing end to end: with every target healthy all requests stay in the
//! instance's zone; killing the zone's target moves traffic to the region, then killing the
//! region's to anywhere, with no failed request; the spill-over shows in the metrics.
#![allow(clippy::unwrap_used)]

mod support;

use support::*;

struct Fixture {
    gw: TestGateway,
    zone: Option<Backend>,
    region: Option<Backend>,
    _far: Backend,
}

async fn fixture(group: &str) -> Fixture {
    let (zone, region, far) = (
        Backend::named("zone").await,
        Backend::named("region").await,
        Backend::named("far").await,
    );
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
locality: {{region: eu-west, zone: eu-west-1a}}
upstreams:
  app:
    targets:
      - {{address: \"{}\", region: us-east, zone: us-east-1a}}
      - {{address: \"{}\", region: eu-west, zone: eu-west-1b}}
      - {{address: \"{}\", region: eu-west, zone: eu-west-1a}}
{group}
    health_check:
      passive:
        consecutive_failures: 1
routes:
  - upstream: app
    retry:
      attempts: 3
      on: [connect_failure, reset]
",
        far.addr, region.addr, zone.addr
    );
    Fixture {
        gw: TestGateway::start(&yaml),
        zone: Some(zone),
        region: Some(region),
        _far: far,
    }
}

async fn picks(f: &Fixture, tier: &str) -> u64 {
    let m = get(f.gw.admin.unwrap(), "admin", "/metrics").await.text();
    let series = format!("ferrogate_locality_picks_total{{upstream=\"app\",tier=\"{tier}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn traffic_stays_in_the_zone_then_spills_to_the_region_then_anywhere() {
    let mut f = fixture("    locality: {}").await;
    let healthy = load_count(f.gw.addr, "/", &[], 4, 200).await;
    assert_eq!(healthy.failures, 0, "{healthy:?}");
    assert_eq!(healthy.bodies.get("zone"), Some(&200), "{healthy:?}");
    assert_eq!(picks(&f, "zone").await, 200);

    f.zone.take();
    let zone_down = load_count(f.gw.addr, "/", &[], 4, 200).await;
    assert_eq!(zone_down.failures, 0, "{zone_down:?}");
    assert_eq!(zone_down.bodies.get("region"), Some(&200), "{zone_down:?}");
    assert!(picks(&f, "region").await >= 200);

    f.region.take();
    let region_down = load_count(f.gw.addr, "/", &[], 4, 200).await;
    assert_eq!(region_down.failures, 0, "{region_down:?}");
    assert_eq!(region_down.bodies.get("far"), Some(&200), "{region_down:?}");
    assert!(picks(&f, "any").await >= 200);
}

#[tokio::test]
async fn a_full_zone_spills_its_excess_to_the_region() {
    let f = fixture("    locality: {max_in_flight: 1}").await;
    // Eight clients at once: the zone's one target holds one request at a time.
    let report = load_count(f.gw.addr, "/", &[], 8, 400).await;
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(
        report.bodies.get("zone").is_some_and(|n| *n > 0),
        "{report:?}"
    );
    assert!(
        report.bodies.get("region").is_some_and(|n| *n > 0),
        "{report:?}"
    );
}

#[tokio::test]
async fn without_locality_the_group_balances_over_every_target() {
    let f = fixture("").await;
    let report = load_count(f.gw.addr, "/", &[], 2, 300).await;
    assert_eq!(report.bodies.len(), 3, "{report:?}");
    assert_eq!(picks(&f, "zone").await, 0);
}

/// Clients labelled by the CIDR table as in a zone (through a trusted `X-Forwarded-For`)
/// are served from that zone, then from their region; clients the table does not know keep
/// this instance's place.
#[tokio::test]
async fn a_group_by_the_clients_place_serves_each_client_from_its_own_zone() {
    let (us, eu, mut eu_b) = (
        Backend::named("us-east-1a").await,
        Backend::named("eu-west-1a").await,
        Some(Backend::named("eu-west-1b").await),
    );
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0, trusted_proxies: [127.0.0.1/32]}}]
admin: {{address: 127.0.0.1:0}}
locality: {{region: eu-west, zone: eu-west-1b}}
geo:
  networks: {{198.51.100.0/24: us-east-1a, 203.0.113.0/24: eu-west-1a}}
upstreams:
  app:
    locality: {{client: {{zone: label}}}}
    targets:
      - {{address: \"{}\", region: us-east, zone: us-east-1a}}
      - {{address: \"{}\", region: eu-west, zone: eu-west-1a}}
      - {{address: \"{}\", region: eu-west, zone: eu-west-1b}}
    health_check:
      passive:
        consecutive_failures: 1
routes:
  - upstream: app
    retry:
      attempts: 3
      on: [connect_failure, reset]
",
        us.addr,
        eu.addr,
        eu_b.as_ref().unwrap().addr
    );
    let gw = TestGateway::start(&yaml);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let us_clients = load_count(gw.addr, "/", &from("198.51.100.7"), 2, 100).await;
    assert_eq!(
        us_clients.bodies.get("us-east-1a"),
        Some(&100),
        "{us_clients:?}"
    );
    let eu_clients = load_count(gw.addr, "/", &from("203.0.113.9"), 2, 100).await;
    assert_eq!(
        eu_clients.bodies.get("eu-west-1a"),
        Some(&100),
        "{eu_clients:?}"
    );
    let unknown = load_count(gw.addr, "/", &from("192.0.2.1"), 2, 100).await;
    assert_eq!(unknown.bodies.get("eu-west-1b"), Some(&100), "{unknown:?}");

    // The unknown clients' zone (this instance's) goes down: its region takes them.
    eu_b.take();
    let spilled = load_count(gw.addr, "/", &from("192.0.2.1"), 2, 100).await;
    assert_eq!(spilled.failures, 0, "{spilled:?}");
    assert_eq!(spilled.bodies.get("eu-west-1a"), Some(&100), "{spilled:?}");
}
