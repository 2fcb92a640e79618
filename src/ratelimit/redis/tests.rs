//! The Redis store against a real `redis-server` (started on a free port per test).
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Instant;

use ::redis::aio::MultiplexedConnection;

use super::super::algo;
use super::super::spec::{quota_window, Micros, QuotaPeriod};
use super::*;

#[path = "../../../tests/support/redis.rs"]
#[allow(dead_code)]
mod harness;

use harness::RedisServer;

mod deployments;

const HOUR: Duration = Duration::from_secs(3600);
const TIMEOUT: Duration = Duration::from_millis(300);

fn settings(url: String) -> RedisSettings {
    let mut s = RedisSettings::new(RedisMode::Standalone { url }, TIMEOUT);
    s.reconnect_min = Duration::from_millis(20);
    s.reconnect_max = Duration::from_millis(100);
    s.health_interval = Duration::from_millis(100);
    s
}

async fn connected(server: &RedisServer) -> RedisStore {
    connected_with(settings(server.url())).await
}

async fn connected_with(settings: RedisSettings) -> RedisStore {
    let store = RedisStore::new(settings).unwrap();
    eventually("connected", || async { store.is_connected() }).await;
    store
}

/// Polls `f` every 10 ms until it holds; panics after 3 s.
async fn eventually<F: Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    eventually_within(what, Duration::from_secs(3), f).await;
}

async fn eventually_within<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    f: impl Fn() -> F,
) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Redis's clock, in µs.
async fn redis_now(conn: &mut MultiplexedConnection) -> Micros {
    let (s, us): (u64, u64) = ::redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1_000_000 + us
}

fn fixed(limit: u64) -> Algorithm {
    Algorithm::FixedWindow {
        limit,
        window: HOUR,
    }
}

fn sliding(limit: u64) -> Algorithm {
    Algorithm::SlidingWindow {
        limit,
        window: HOUR,
    }
}

fn hourly_quota(limit: u64) -> Algorithm {
    Algorithm::Quota {
        limit,
        period: QuotaPeriod::Hour,
    }
}

async fn admitted(store: &RedisStore, alg: &Algorithm, n: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(store.check("p", alg, b"k", 1).await.unwrap());
    }
    out
}

#[tokio::test]
async fn fixed_window_admits_exactly_the_limit() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let decisions = admitted(&store, &fixed(3), 4).await;
    let remaining: Vec<u64> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [2, 1, 0, 0]);
    assert!(decisions[..3]
        .iter()
        .all(|d| d.allowed && d.retry_after.is_none()));
    let refused = decisions[3];
    assert!(!refused.allowed);
    assert_eq!(refused.limit, 3);
    assert_eq!(refused.retry_after, Some(refused.reset));
    assert!(refused.reset > Duration::ZERO && refused.reset <= HOUR);
}

#[tokio::test]
async fn cost_counts_as_that_many_requests() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let alg = fixed(5);
    assert!(store.check("p", &alg, b"k", 4).await.unwrap().allowed);
    assert!(!store.check("p", &alg, b"k", 2).await.unwrap().allowed);
    let last = store.check("p", &alg, b"k", 1).await.unwrap();
    assert!(last.allowed);
    assert_eq!(last.remaining, 0);
}

#[tokio::test]
async fn sliding_window_admits_exactly_the_limit() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let decisions = admitted(&store, &sliding(3), 4).await;
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, true, false]);
    assert_eq!(decisions[2].remaining, 0);
    // Nothing in the previous window: the current count must first become the previous one.
    assert!(decisions[3].retry_after.unwrap() > decisions[3].reset);
}

/// The script against `algo::sliding_window` on a seeded state: Redis's clock is only known
/// to lie between two readings, so the local rule is evaluated at both ends.
#[tokio::test]
async fn sliding_window_script_follows_the_local_rule() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let mut conn = raw(&server).await;
    let len = scripts::micros(HOUR);
    let t0 = redis_now(&mut conn).await;
    let index = t0 / len;
    let key = format!("{}:s", scripts::base_key("p", b"k"));
    let _: () = ::redis::cmd("HSET")
        .arg(&key)
        .arg(&["w", &index.to_string(), "c", "10", "p", "100"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let alg = sliding(100);
    let mut passed = 0;
    let refusal = loop {
        let d = store.check("p", &alg, b"k", 1).await.unwrap();
        if !d.allowed {
            break d;
        }
        passed += 1;
        assert!(passed <= 100, "admitted past the limit");
    };
    let t1 = redis_now(&mut conn).await;
    assert_eq!(t1 / len, index, "crossed an hour boundary; run again");

    let local_passes = |now| {
        let mut s = algo::Sliding {
            index,
            current: 10,
            previous: 100,
        };
        (0..)
            .take_while(|_| algo::sliding_window(&mut s, 100, HOUR, now, 1).allowed)
            .count()
    };
    assert!(
        (local_passes(t0)..=local_passes(t1)).contains(&passed),
        "script admitted {passed}, local rule {}..={}",
        local_passes(t0),
        local_passes(t1)
    );
    // The moment the refused request would pass does not depend on when it was asked.
    let mut s = algo::Sliding {
        index,
        current: 10 + passed as u64,
        previous: 100,
    };
    let local = algo::sliding_window(&mut s, 100, HOUR, t1, 1);
    let passes_at = t1 + local.retry_after.unwrap().as_micros() as u64;
    let wait = refusal.retry_after.unwrap().as_micros() as u64;
    assert!(
        (t0 + wait..=t1 + wait).contains(&passes_at),
        "script waits {wait} µs, local rule passes at {passes_at}, clock in {t0}..={t1}"
    );
}

#[tokio::test]
async fn token_bucket_admits_the_burst_then_refills_at_the_rate() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let alg = Algorithm::TokenBucket {
        rate: 10,
        period: Duration::from_secs(1),
        burst: 3,
    };
    let decisions = admitted(&store, &alg, 4).await;
    let remaining: Vec<u64> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [2, 1, 0, 0]);
    let refused = decisions[3];
    assert!(!refused.allowed);
    let wait = refused.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert!(store.check("p", &alg, b"k", 1).await.unwrap().allowed);
}

#[tokio::test]
async fn token_bucket_keeps_fractional_intervals_exact() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    // One token every 333,333.33 µs.
    let alg = Algorithm::TokenBucket {
        rate: 3,
        period: Duration::from_secs(1),
        burst: 1,
    };
    let first = store.check("p", &alg, b"k", 1).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.reset, Duration::from_micros(333_334));
    let second = store.check("p", &alg, b"k", 1).await.unwrap();
    let wait = second.retry_after.unwrap();
    assert!(!second.allowed);
    assert!(wait > Duration::from_millis(300) && wait <= Duration::from_micros(333_334));
}

#[tokio::test]
async fn token_bucket_handles_a_million_per_second() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let alg = Algorithm::TokenBucket {
        rate: 1_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000,
    };
    let all = store.check("p", &alg, b"k", 1_000_000).await.unwrap();
    assert!(all.allowed);
    assert_eq!(all.remaining, 0);
    let next = store.check("p", &alg, b"k", 1_000_000).await.unwrap();
    assert!(!next.allowed);
    // The bucket refills in a second; what was used since the first call is already back.
    let wait = next.retry_after.unwrap();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
}

#[tokio::test]
async fn quota_counts_in_the_calendar_period() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let decisions = admitted(&store, &hourly_quota(2), 3).await;
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, false]);
    let now = now_micros();
    let (_, end) = quota_window(QuotaPeriod::Hour, now);
    let to_end = Duration::from_micros(end - now);
    let refused = decisions[2];
    assert_eq!(refused.retry_after, Some(refused.reset));
    assert!(refused.reset >= to_end && refused.reset <= to_end + Duration::from_secs(1));
}

#[tokio::test]
async fn lease_holds_a_place_until_dropped() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let first = store.acquire("p", 2, b"k").await.unwrap().unwrap();
    assert_eq!(first.decision().remaining, 1);
    let second = store.acquire("p", 2, b"k").await.unwrap().unwrap();
    assert_eq!(second.decision().remaining, 0);
    let refused = store.acquire("p", 2, b"k").await.unwrap().unwrap_err();
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    let peek = store
        .check("p", &Algorithm::Concurrency { max: 2 }, b"k", 1)
        .await
        .unwrap();
    assert!(!peek.allowed);

    drop(first);
    eventually("released", || async {
        match store.acquire("p", 2, b"k").await.unwrap() {
            Ok(lease) => {
                // Keep the place: the check above must stay stable.
                std::mem::forget(lease);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn lease_never_released_expires_after_its_ttl() {
    let server = RedisServer::start();
    let mut s = settings(server.url());
    s.lease_ttl = Duration::from_millis(200);
    let store = connected_with(s).await;
    // A crashed gateway never releases.
    std::mem::forget(store.acquire("p", 1, b"k").await.unwrap().unwrap());
    assert!(store.acquire("p", 1, b"k").await.unwrap().is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.acquire("p", 1, b"k").await.unwrap().is_ok());
}

/// Two stores on one server, `tasks` concurrent requests each: exactly `limit` pass.
async fn shared_strict_admissions(alg: Algorithm, tasks: usize) -> usize {
    let server = RedisServer::start();
    let stores = [connected(&server).await, connected(&server).await];
    let mut handles = Vec::new();
    for store in &stores {
        for _ in 0..tasks {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store.check("shared", &alg, b"k", 1).await.unwrap().allowed
            }));
        }
    }
    let mut passed = 0;
    for h in handles {
        passed += usize::from(h.await.unwrap());
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_admit_exactly_the_fixed_limit_together() {
    assert_eq!(shared_strict_admissions(fixed(20), 30).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_admit_exactly_the_sliding_limit_together() {
    // Fresh key: no previous window, so the estimate is the exact count.
    assert_eq!(shared_strict_admissions(sliding(20), 30).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_admit_exactly_the_token_bucket_burst_together() {
    let alg = Algorithm::TokenBucket {
        rate: 1,
        period: HOUR,
        burst: 20,
    };
    assert_eq!(shared_strict_admissions(alg, 30).await, 20);
}

const BATCH: BatchLimits = BatchLimits {
    interval: Duration::from_millis(5),
    max_pending: 5,
};

/// Three stores each sending `per_store` batched requests as fast as they can; returns the
/// admissions and, once the pushes settled, the count Redis holds.
async fn batched_admissions(alg: Algorithm, per_store: usize) -> (u64, u64) {
    const N: usize = 3;
    let server = RedisServer::start();
    let mut handles = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..N {
        let store = connected(&server).await;
        stores.push(store.clone());
        handles.push(tokio::spawn(async move {
            let mut passed = 0u64;
            for _ in 0..per_store {
                let d = store
                    .check_batched("b", &alg, BATCH, b"k", 1)
                    .await
                    .unwrap();
                passed += u64::from(d.allowed);
                tokio::task::yield_now().await;
            }
            passed
        }));
    }
    let mut passed = 0;
    for h in handles {
        passed += h.await.unwrap();
    }
    // Let the last pushes land, then read what Redis counted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = raw(&server).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("fg:rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    // One window, one key (the previous window's key was only read).
    let mut counted = 0;
    for key in &keys {
        let n: Option<u64> = ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        counted += n.unwrap_or(0);
    }
    drop(stores);
    (passed, counted)
}

fn assert_batched_bound(limit: u64, passed: u64, counted: u64) {
    let bound = limit + 3 * BATCH.max_pending - 1;
    assert!(passed <= bound, "admitted {passed}, bound {bound}");
    assert!(passed >= limit - 3, "admitted only {passed} of {limit}");
    assert_eq!(
        counted, passed,
        "Redis counted {counted}, stores admitted {passed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_fixed_window_stays_within_the_documented_bound() {
    let (passed, counted) = batched_admissions(fixed(100), 150).await;
    assert_batched_bound(100, passed, counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_sliding_window_stays_within_the_documented_bound() {
    let (passed, counted) = batched_admissions(sliding(100), 150).await;
    assert_batched_bound(100, passed, counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_quota_stays_within_the_documented_bound() {
    let (passed, counted) = batched_admissions(hourly_quota(100), 150).await;
    assert_batched_bound(100, passed, counted);
}

#[tokio::test]
async fn batched_request_waits_for_a_push_when_max_pending_is_reached() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let slow = BatchLimits {
        interval: Duration::from_secs(10),
        max_pending: 2,
    };
    let alg = fixed(10);
    for _ in 0..2 {
        assert!(
            store
                .check_batched("p", &alg, slow, b"k", 1)
                .await
                .unwrap()
                .allowed
        );
    }
    // The third cannot be decided locally; it triggers a push long before the interval.
    let started = Instant::now();
    let third = store.check_batched("p", &alg, slow, b"k", 1).await.unwrap();
    assert!(third.allowed);
    assert!(started.elapsed() < TIMEOUT);
    let stats = store.stats();
    assert!(stats.batched_waits >= 1);
    assert!(stats.pushed_keys >= 1);
    assert_eq!(stats.push_errors, 0);
}

#[tokio::test]
async fn batched_token_bucket_is_checked_strictly() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let alg = Algorithm::TokenBucket {
        rate: 1,
        period: HOUR,
        burst: 1,
    };
    assert!(
        store
            .check_batched("p", &alg, BATCH, b"k", 1)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !store
            .check_batched("p", &alg, BATCH, b"k", 1)
            .await
            .unwrap()
            .allowed
    );
    assert_eq!(store.stats().batched_decisions, 0);
}

#[tokio::test]
async fn batched_keys_beyond_the_table_are_checked_strictly() {
    let server = RedisServer::start();
    let mut s = settings(server.url());
    s.batch_max_keys = 1;
    let store = connected_with(s).await;
    // 16 shards of one entry: 17 keys cannot all fit.
    for i in 0..17u8 {
        let d = store
            .check_batched("p", &fixed(5), BATCH, &[i], 1)
            .await
            .unwrap();
        assert!(d.allowed);
    }
    let stats = store.stats();
    assert!(stats.batched_fallbacks >= 1);
    assert!(stats.batched_keys <= 16);
}

#[tokio::test]
async fn calls_fail_fast_when_redis_stops_and_recover_after_restart() {
    let mut server = RedisServer::start();
    let store = connected(&server).await;
    let alg = fixed(100);
    store.check("p", &alg, b"k", 1).await.unwrap();

    server.stop();
    let started = Instant::now();
    let err = store.check("p", &alg, b"k", 1).await.unwrap_err();
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(100));
    assert_eq!(err.kind(), "connection", "{err}");
    eventually("disconnected", || async { !store.is_connected() }).await;
    let started = Instant::now();
    let err = store.check("p", &alg, b"k", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotConnected), "{err}");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert!(store
        .check_batched("p", &alg, BATCH, b"k", 1)
        .await
        .is_err());

    server.restart();
    eventually("recovered", || async {
        store.check("p", &alg, b"k", 1).await.is_ok()
    })
    .await;
    assert!(store.stats().connects >= 2);
}

#[tokio::test]
async fn calls_time_out_when_redis_hangs() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let alg = fixed(100);
    store.check("p", &alg, b"k", 1).await.unwrap();

    server.pause();
    let started = Instant::now();
    let err = store.check("p", &alg, b"k", 1).await.unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(matches!(err, StoreError::Timeout(_)), "{err}");
    assert_eq!(err.kind(), "timeout");
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(100),
        "{took:?}"
    );
    eventually("recovered", || async {
        store.check("p", &alg, b"k", 1).await.is_ok()
    })
    .await;
    assert!(store.stats().timeouts >= 1);
}

#[tokio::test]
async fn store_created_while_redis_is_down_fails_fast_then_connects() {
    let mut server = RedisServer::start();
    server.stop();
    let store = RedisStore::new(settings(server.url())).unwrap();
    let started = Instant::now();
    let err = store.check("p", &fixed(1), b"k", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotConnected), "{err}");
    assert!(started.elapsed() < Duration::from_millis(50));

    server.restart();
    eventually("connected", || async {
        store.check("p", &fixed(1), b"k", 1).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn script_flush_is_recovered_by_loading_the_script_again() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    assert!(store.check("p", &fixed(2), b"k", 1).await.unwrap().allowed);
    let mut conn = raw(&server).await;
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = store.check("p", &fixed(2), b"k", 1).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
}

#[tokio::test]
async fn keys_are_hashed_under_one_tag_and_expire() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let client_key = b"a b}{\xff";
    store
        .check("per-ip", &fixed(2), client_key, 1)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("fg:rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, client_key);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(keys, [format!("fg:rl:{{per-ip:{hex}}}:f")]);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}

#[test]
fn new_outside_a_runtime_is_an_error() {
    let s = settings("redis://127.0.0.1:1".to_owned());
    assert!(matches!(RedisStore::new(s), Err(RedisError::NoRuntime)));
}

#[tokio::test]
async fn invalid_url_is_refused_at_creation() {
    let s = settings("http://nowhere".to_owned());
    assert!(matches!(
        RedisStore::new(s),
        Err(RedisError::Invalid { .. })
    ));
}
