//! Tests of `metrics`.
#![allow(clippy::unwrap_used)]

use super::*;

fn sample(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn requests_are_counted_per_route_method_and_status() {
    let m = Metrics::new();
    let r1 = m.route("r1");
    r1.observe(&Method::GET, 200, Duration::from_millis(1));
    r1.observe(&Method::GET, 200, Duration::from_millis(1));
    r1.observe(&Method::POST, 404, Duration::from_millis(1));
    let text = m.encode();
    assert!(
        text.contains("ferrogate_requests_total{route=\"r1\",method=\"GET\",status=\"200\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("ferrogate_requests_total{route=\"r1\",method=\"POST\",status=\"404\"} 1\n"),
        "{text}"
    );
}

#[test]
fn unknown_method_is_labelled_other() {
    let m = Metrics::new();
    let purge = Method::from_bytes(b"PURGE").unwrap();
    m.route("r").observe(&purge, 200, Duration::ZERO);
    let text = m.encode();
    assert!(
        text.contains("ferrogate_requests_total{route=\"r\",method=\"other\",status=\"200\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("PURGE"), "{text}");
}

#[test]
fn every_standard_method_keeps_its_name() {
    let m = Metrics::new();
    let r = m.route("r");
    for method in KNOWN_METHODS.iter() {
        r.observe(method, 200, Duration::ZERO);
    }
    let text = m.encode();
    for method in KNOWN_METHODS.iter() {
        let line = format!(
            "ferrogate_requests_total{{route=\"r\",method=\"{method}\",status=\"200\"}} 1\n"
        );
        assert!(text.contains(&line), "missing {line} in {text}");
    }
}

#[test]
fn request_duration_lands_in_le_buckets() {
    let m = Metrics::new();
    let r = m.route("r1");
    r.observe(&Method::GET, 200, Duration::from_micros(300));
    r.observe(&Method::GET, 200, Duration::from_micros(500));
    r.observe(&Method::GET, 200, Duration::from_millis(3));
    r.observe(&Method::GET, 200, Duration::from_secs(60));
    let text = m.encode();
    let name = "ferrogate_request_duration_seconds";
    assert_eq!(
        sample(&text, &format!("{name}_count{{route=\"r1\"}}")),
        Some(4)
    );
    // The encoder puts `le` first. 0.5 ms is inside the 0.0005 bucket (upper bounds are inclusive).
    assert_eq!(
        sample(
            &text,
            &format!("{name}_bucket{{le=\"0.0005\",route=\"r1\"}}")
        ),
        Some(2)
    );
    assert_eq!(
        sample(
            &text,
            &format!("{name}_bucket{{le=\"0.0025\",route=\"r1\"}}")
        ),
        Some(2)
    );
    assert_eq!(
        sample(
            &text,
            &format!("{name}_bucket{{le=\"0.005\",route=\"r1\"}}")
        ),
        Some(3)
    );
    assert_eq!(
        sample(&text, &format!("{name}_bucket{{le=\"10.0\",route=\"r1\"}}")),
        Some(3)
    );
    assert_eq!(
        sample(&text, &format!("{name}_bucket{{le=\"+Inf\",route=\"r1\"}}")),
        Some(4)
    );
    assert!(
        text.contains(&format!("{name}_sum{{route=\"r1\"}} 60.0038\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("# TYPE {name} histogram\n")),
        "{text}"
    );
}

#[test]
fn upstream_attempts_are_counted_with_status_zero_for_no_response() {
    let m = Metrics::new();
    let t = m.target("api", "127.0.0.1:9001");
    t.observe(200, Duration::from_millis(2));
    t.observe(0, Duration::from_secs(1));
    t.observe(0, Duration::from_secs(1));
    let text = m.encode();
    let labels = "upstream=\"api\",target=\"127.0.0.1:9001\"";
    assert_eq!(
        sample(
            &text,
            &format!("ferrogate_upstream_requests_total{{{labels},status=\"200\"}}")
        ),
        Some(1)
    );
    assert_eq!(
        sample(
            &text,
            &format!("ferrogate_upstream_requests_total{{{labels},status=\"0\"}}")
        ),
        Some(2)
    );
    assert_eq!(
        sample(
            &text,
            &format!("ferrogate_upstream_duration_seconds_count{{{labels}}}")
        ),
        Some(3)
    );
    assert_eq!(
        sample(
            &text,
            &format!("ferrogate_upstream_duration_seconds_bucket{{le=\"0.0025\",{labels}}}")
        ),
        Some(1)
    );
}

#[test]
fn open_connections_gauge_goes_up_and_down() {
    let m = Metrics::new();
    m.connection_opened("public");
    m.connection_opened("public");
    m.connection_opened("internal");
    m.connection_closed("public");
    let text = m.encode();
    assert_eq!(
        sample(&text, "ferrogate_connections_open{listener=\"public\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&text, "ferrogate_connections_open{listener=\"internal\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&text, "ferrogate_connections_total{listener=\"public\"}"),
        Some(2)
    );
    m.connection_closed("public");
    assert_eq!(
        sample(
            &m.encode(),
            "ferrogate_connections_open{listener=\"public\"}"
        ),
        Some(0)
    );
}

#[test]
fn listener_handle_shares_series_with_name_calls() {
    let m = Metrics::new();
    let handle = m.listener("public");
    handle.opened();
    m.connection_closed("public");
    m.connection_opened("public");
    let text = m.encode();
    assert_eq!(
        sample(&text, "ferrogate_connections_open{listener=\"public\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&text, "ferrogate_connections_total{listener=\"public\"}"),
        Some(2)
    );
}

#[test]
fn reloads_are_counted_by_result_and_start_at_zero() {
    let m = Metrics::new();
    let text = m.encode();
    assert_eq!(
        sample(&text, "ferrogate_config_reloads_total{result=\"ok\"}"),
        Some(0)
    );
    assert_eq!(
        sample(&text, "ferrogate_config_reloads_total{result=\"failed\"}"),
        Some(0)
    );
    m.reload(true);
    m.reload(true);
    m.reload(false);
    let text = m.encode();
    assert_eq!(
        sample(&text, "ferrogate_config_reloads_total{result=\"ok\"}"),
        Some(2)
    );
    assert_eq!(
        sample(&text, "ferrogate_config_reloads_total{result=\"failed\"}"),
        Some(1)
    );
}

#[test]
fn route_handles_of_one_name_share_series_across_reloads() {
    let m = Metrics::new();
    m.route("r1").observe(&Method::GET, 200, Duration::ZERO);
    m.route("r1").observe(&Method::GET, 200, Duration::ZERO);
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "ferrogate_requests_total{route=\"r1\",method=\"GET\",status=\"200\"}"
        ),
        Some(2)
    );
    assert_eq!(
        sample(
            &text,
            "ferrogate_request_duration_seconds_count{route=\"r1\"}"
        ),
        Some(2)
    );
}

#[test]
fn outcomes_beyond_the_cache_are_still_counted() {
    let m = Metrics::new();
    let r = m.route("r");
    // 10 methods x 5 statuses = 50 pairs, more than CACHE_SLOTS.
    let other = Method::from_bytes(b"PURGE").unwrap();
    for _ in 0..3 {
        for method in KNOWN_METHODS.iter().chain(std::iter::once(&other)) {
            for status in [200, 201, 404, 500, 503] {
                r.observe(method, status, Duration::ZERO);
            }
        }
    }
    let text = m.encode();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ferrogate_requests_total{"))
        .collect();
    assert_eq!(series.len(), 50, "{text}");
    assert!(series.iter().all(|l| l.ends_with(" 3")), "{text}");
}

#[test]
fn concurrent_observations_are_all_counted() {
    let m = Arc::new(Metrics::new());
    let r = m.route("r");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..1000u16 {
                    r.observe(&Method::GET, 200 + i % 3, Duration::from_micros(100));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = m.encode();
    let total: u64 = (200..203)
        .map(|s| {
            sample(
                &text,
                &format!("ferrogate_requests_total{{route=\"r\",method=\"GET\",status=\"{s}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(total, 4000);
    assert_eq!(
        sample(
            &text,
            "ferrogate_request_duration_seconds_count{route=\"r\"}"
        ),
        Some(4000)
    );
}

#[test]
fn exposition_is_openmetrics_ending_in_eof() {
    let m = Metrics::new();
    m.route("r").observe(&Method::GET, 200, Duration::ZERO);
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE ferrogate_requests counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT ferrogate_request_duration_seconds seconds\n"),
        "{text}"
    );
    assert!(CONTENT_TYPE.starts_with("application/openmetrics-text"));
}

#[test]
fn handles_can_be_shared_across_workers() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Metrics>();
    shareable::<RouteMetrics>();
    shareable::<TargetMetrics>();
    shareable::<ListenerMetrics>();
}

/// Cost of the two per-request observations, on one thread and on two threads hitting
/// the same route. Run with
/// `cargo test --release --lib -- --ignored --nocapture observe_cost`.
#[test]
#[ignore]
fn observe_cost() {
    fn per_observe(threads: u32, work: impl Fn() + Send + Sync + Copy) -> f64 {
        let n = 5_000_000u32;
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(move || (0..n).for_each(|_| work()));
            }
        });
        start.elapsed().as_nanos() as f64 / f64::from(n)
    }
    let m = Metrics::new();
    let (r, t) = (m.route("bench"), m.target("up", "127.0.0.1:1"));
    let d = Duration::from_micros(700);
    let route = || r.observe(&Method::GET, 200, d);
    let target = || t.observe(200, d);
    println!(
        "ns per observe: route {:.1}, target {:.1}; two threads on one route {:.1} (wall time per pair)",
        per_observe(1, route),
        per_observe(1, target),
        per_observe(2, route),
    );
}
