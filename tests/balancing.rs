//! Load balancing end to end, against real backends.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

async fn three() -> [Backend; 3] {
    [
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    ]
}

fn group(backends: &[Backend; 3], weights: [u32; 3], extra: &str) -> String {
    let mut t = String::new();
    for (b, w) in backends.iter().zip(weights) {
        t.push_str(&format!(
            "      - {{address: \"{}\", weight: {w}}}\n",
            b.addr
        ));
    }
    format!(
        "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nupstreams:\n  app:\n{extra}    targets:\n{t}routes:\n  - upstream: app\n"
    )
}

#[tokio::test]
async fn weighted_round_robin_gives_each_target_its_weight() {
    let b = three().await;
    let gw = TestGateway::start(&group(&b, [3, 2, 1], "    balancer: round_robin\n"));
    let mut order = String::new();
    for _ in 0..12 {
        order.push_str(&get(gw.addr, "h", "/").await.text());
    }
    assert_eq!(
        (b[0].count(), b[1].count(), b[2].count()),
        (6, 4, 2),
        "{order}"
    );
    assert!(
        !order.contains("aaa"),
        "smooth: weights interleave ({order})"
    );
}

#[tokio::test]
async fn consistent_hash_on_a_header_pins_each_key_to_one_target() {
    let b = three().await;
    let gw = TestGateway::start(&group(
        &b,
        [1, 1, 1],
        "    balancer: consistent_hash\n    hash_on: \"header:x-user\"\n",
    ));
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let req = Request::get("/")
                .header("host", "h")
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let who = send(gw.addr, req).await.text();
            let first = seen
                .entry(format!("user-{user}"))
                .or_insert_with(|| who.clone());
            assert_eq!(*first, who, "user-{user} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert!(
        distinct.len() >= 2,
        "20 keys spread over more than one target"
    );
}

#[tokio::test]
async fn consistent_hash_on_client_ip_sends_one_client_to_one_target() {
    let b = three().await;
    let gw = TestGateway::start(&group(&b, [1, 1, 1], "    balancer: consistent_hash\n"));
    for _ in 0..10 {
        get(gw.addr, "h", "/").await;
    }
    let counts = [b[0].count(), b[1].count(), b[2].count()];
    assert!(
        counts.contains(&10),
        "one client IP, one target: {counts:?}"
    );
}

#[tokio::test]
async fn least_connections_avoids_the_busy_target() {
    let (release, hold) = tokio::sync::watch::channel(false);
    let slow = Backend::start(false, move |_req| {
        let mut hold = hold.clone();
        async move {
            let _ = hold.wait_for(|r| *r).await;
            text(http::StatusCode::OK, "slow")
        }
    })
    .await;
    let fast = Backend::named("fast").await;
    let yaml = format!(
        "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nupstreams:\n  app:\n    balancer: least_connections\n    targets:\n      - {{address: \"{}\"}}\n      - {{address: \"{}\"}}\nroutes:\n  - upstream: app\n",
        slow.addr, fast.addr
    );
    let gw = TestGateway::start(&yaml);
    // Occupy the slow target with requests that do not finish (ties between idle targets
    // are broken at random, so some of these may go to the fast one and finish).
    let mut pending = Vec::new();
    while slow.count() < 2 && pending.len() < 20 {
        let addr = gw.addr;
        pending.push(tokio::spawn(async move { get(addr, "h", "/").await }));
        assert!(
            eventually(std::time::Duration::from_secs(2), || async {
                slow.count() + fast.count() >= pending.len()
            })
            .await
        );
    }
    let busy_before = slow.count();
    assert!(busy_before >= 1);
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "h", "/").await.text(), "fast");
    }
    assert_eq!(
        slow.count(),
        busy_before,
        "no new request went to the busy target"
    );
    release.send(true).unwrap();
    for p in pending {
        assert_eq!(p.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn random_reaches_every_target() {
    let b = three().await;
    let gw = TestGateway::start(&group(&b, [1, 1, 1], "    balancer: random\n"));
    for _ in 0..60 {
        assert_eq!(get(gw.addr, "h", "/").await.status, 200);
    }
    for x in &b {
        assert!(x.count() > 0, "random never picked {}", x.addr);
    }
}

#[tokio::test]
async fn peak_ewma_prefers_the_faster_target() {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        text(http::StatusCode::OK, "slow")
    })
    .await;
    let fast = Backend::named("fast").await;
    let yaml = format!(
        "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nupstreams:\n  app:\n    balancer: peak_ewma\n    targets:\n      - {{address: \"{}\"}}\n      - {{address: \"{}\"}}\nroutes:\n  - upstream: app\n",
        slow.addr, fast.addr
    );
    let gw = TestGateway::start(&yaml);
    for _ in 0..40 {
        assert_eq!(get(gw.addr, "h", "/").await.status, 200);
    }
    assert!(
        fast.count() >= 35,
        "the fast target takes most requests: fast {} slow {}",
        fast.count(),
        slow.count()
    );
}
