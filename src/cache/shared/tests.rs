//! The Redis tier and the purge bus against a real `redis-server` (started on a free port
//! per test).

use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use redis::aio::MultiplexedConnection;

use super::*;
use crate::cache::freshness::{ExchangeTimes, HeuristicPolicy, StoredMeta};
use crate::cache::key::{primary_key, CacheKey, Target};
use crate::config::model::{self, RedisDeployment};

// The rate limiter's tests include the same test support.
#[allow(clippy::duplicate_mod)]
#[path = "../../../tests/support/redis.rs"]
#[allow(dead_code)]
mod harness;

use harness::RedisServer;

#[path = "tests/bus.rs"]
mod bus_tests;
#[path = "tests/cluster.rs"]
mod cluster_tests;

const TIMEOUT: Duration = Duration::from_millis(300);
const HOUR: Duration = Duration::from_secs(3600);

fn settings_for(deployment: RedisDeployment) -> TierSettings {
    let mut s = TierSettings::new(deployment, TIMEOUT);
    s.connect_timeout = Duration::from_millis(500);
    s.reconnect_min = Duration::from_millis(20);
    s.reconnect_max = Duration::from_millis(100);
    s.health_interval = Duration::from_millis(100);
    s
}

fn settings(server: &RedisServer) -> TierSettings {
    settings_for(RedisDeployment::Standalone(server.url()))
}

async fn connected(settings: TierSettings) -> RedisTier {
    let tier = RedisTier::new(settings).unwrap();
    eventually("connected", || async { tier.is_connected() }).await;
    tier
}

async fn tier(server: &RedisServer) -> RedisTier {
    connected(settings(server)).await
}

/// Polls `f` every 10 ms until it holds; panics after `within`.
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

async fn eventually<F: Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    eventually_within(what, Duration::from_secs(3), f).await;
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key of the namespace.
async fn keys_under(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = raw(server).await;
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn key(path: &str) -> CacheKey {
    let target = Target {
        scheme: "http",
        authority: "example.test",
        path_and_query: path,
    };
    primary_key(&Method::GET, target, &[]).unwrap()
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A cacheable 200 for `key`, varying on `vary` (if any) with the `request` fields.
fn entry_with(key: &CacheKey, body: &str, vary: Option<&str>, request: &HeaderMap) -> Entry {
    let mut response = headers(&[("cache-control", "max-age=60")]);
    if let Some(vary) = vary {
        response.append("vary", HeaderValue::from_str(vary).unwrap());
    }
    // Whole microseconds: the codec keeps no finer precision.
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let now = UNIX_EPOCH + Duration::from_micros(micros as u64);
    let times = ExchangeTimes {
        request_time: now,
        response_time: now,
    };
    let meta = StoredMeta::new(
        request,
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    Entry {
        status: meta.status,
        meta,
        headers: response,
        body: Bytes::copy_from_slice(body.as_bytes()),
        surrogate_keys: Vec::new(),
        url: key.url.as_str().into(),
    }
}

fn entry(key: &CacheKey, body: &str) -> Entry {
    entry_with(key, body, None, &HeaderMap::new())
}

fn tagged(key: &CacheKey, body: &str, tags: &[&str]) -> Entry {
    let mut entry = entry(key, body);
    entry.surrogate_keys = tags.iter().map(|t| (*t).into()).collect();
    entry
}

async fn body_at(tier: &RedisTier, key: &CacheKey) -> Option<Bytes> {
    let entry = tier.get(&key.digest, &HeaderMap::new()).await.unwrap();
    entry.map(|e| e.body)
}

async fn stored(tier: &RedisTier, key: &CacheKey, entry: &Entry) {
    let outcome = tier.put(&key.digest, entry, HOUR).await.unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
}

#[tokio::test]
async fn stored_entry_is_read_back_unchanged() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/a?x=1");
    let stored_entry = tagged(&key, "hello", &["t1", "t2"]);
    stored(&tier, &key, &stored_entry).await;
    let read = tier.get(&key.digest, &HeaderMap::new()).await.unwrap();
    assert_eq!(read, Some(stored_entry));
}

#[tokio::test]
async fn unknown_digest_is_a_miss() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    assert_eq!(
        tier.get(&key("/nothing").digest, &HeaderMap::new())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn get_selects_the_variant_the_request_matches() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/v");
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let br = headers(&[("accept-encoding", "br")]);
    stored(
        &tier,
        &key,
        &entry_with(&key, "gzipped", Some("accept-encoding"), &gzip),
    )
    .await;
    stored(
        &tier,
        &key,
        &entry_with(&key, "brotli", Some("accept-encoding"), &br),
    )
    .await;

    let read = |request: HeaderMap| {
        let tier = tier.clone();
        let digest = key.digest;
        async move { tier.get(&digest, &request).await.unwrap().map(|e| e.body) }
    };
    assert_eq!(
        read(headers(&[("accept-encoding", "GZIP")])).await,
        Some(Bytes::from("gzipped"))
    );
    assert_eq!(read(br).await, Some(Bytes::from("brotli")));
    assert_eq!(read(headers(&[("accept-encoding", "zstd")])).await, None);
    assert_eq!(read(HeaderMap::new()).await, None);
}

#[tokio::test]
async fn newer_response_with_the_same_vary_values_replaces_the_older() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/r");
    stored(&tier, &key, &entry(&key, "old")).await;
    stored(&tier, &key, &entry(&key, "new")).await;
    assert_eq!(body_at(&tier, &key).await, Some(Bytes::from("new")));
    assert_eq!(tier.purge_url(&key.url).await.unwrap(), 1);
}

#[tokio::test]
async fn entry_is_gone_once_its_ttl_has_passed() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/short");
    let outcome = tier
        .put(
            &key.digest,
            &entry(&key, "brief"),
            Duration::from_millis(150),
        )
        .await;
    assert_eq!(outcome.unwrap(), PutOutcome::Stored);
    assert_eq!(body_at(&tier, &key).await, Some(Bytes::from("brief")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(body_at(&tier, &key).await, None);
    // Redis drops the keys (index sets included) by then too.
    eventually("keys expired", || async {
        keys_under(&server, DEFAULT_PREFIX).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn expired_variant_is_not_served_while_another_keeps_the_key() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/mixed");
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let short = entry_with(&key, "short", Some("accept-encoding"), &gzip);
    tier.put(&key.digest, &short, Duration::from_millis(100))
        .await
        .unwrap();
    stored(
        &tier,
        &key,
        &entry_with(&key, "long", Some("accept-encoding"), &HeaderMap::new()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(tier.get(&key.digest, &gzip).await.unwrap(), None);
    assert_eq!(body_at(&tier, &key).await, Some(Bytes::from("long")));
}

#[tokio::test]
async fn entries_larger_than_the_limit_are_not_stored() {
    let server = RedisServer::start();
    let mut settings = settings(&server);
    settings.max_object_bytes = 1000;
    let tier = connected(settings).await;
    let key = key("/big");
    let big = entry(&key, &"x".repeat(1000));
    assert_eq!(
        tier.put(&key.digest, &big, HOUR).await.unwrap(),
        PutOutcome::TooLarge
    );
    assert_eq!(body_at(&tier, &key).await, None);
    stored(&tier, &key, &entry(&key, "small")).await;
}

#[tokio::test]
async fn vary_star_and_zero_ttl_are_not_stored() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let key = key("/star");
    let star = entry_with(&key, "any", Some("*"), &HeaderMap::new());
    assert_eq!(
        tier.put(&key.digest, &star, HOUR).await.unwrap(),
        PutOutcome::Unusable
    );
    let zero = tier
        .put(&key.digest, &entry(&key, "now"), Duration::ZERO)
        .await;
    assert_eq!(zero.unwrap(), PutOutcome::Expired);
    assert!(keys_under(&server, DEFAULT_PREFIX).await.is_empty());
}

#[tokio::test]
async fn purge_url_removes_every_variant_of_that_url_only() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let page = key("/page");
    let other = key("/page2");
    let gzip = headers(&[("accept-encoding", "gzip")]);
    stored(
        &tier,
        &page,
        &entry_with(&page, "a", Some("accept-encoding"), &gzip),
    )
    .await;
    stored(
        &tier,
        &page,
        &entry_with(&page, "b", Some("accept-encoding"), &HeaderMap::new()),
    )
    .await;
    stored(&tier, &other, &entry(&other, "c")).await;

    assert_eq!(tier.purge_url(&page.url).await.unwrap(), 2);
    assert_eq!(tier.get(&page.digest, &gzip).await.unwrap(), None);
    assert_eq!(body_at(&tier, &page).await, None);
    assert_eq!(body_at(&tier, &other).await, Some(Bytes::from("c")));
    assert_eq!(tier.purge_url(&page.url).await.unwrap(), 0);
}

#[tokio::test]
async fn purge_prefix_takes_glob_characters_literally() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let inside = [key("/a*b/1"), key("/a*b/2?q=[x]")];
    // Each would match if `*`, `?` or `[` were glob characters in the pattern.
    let outside = [key("/aXb/1"), key("/a*c"), key("/a?b/1"), key("/ab/1")];
    for k in inside.iter().chain(&outside) {
        stored(&tier, k, &entry(k, "x")).await;
    }
    let prefix = "http://example.test/a*b/";
    assert_eq!(tier.purge_prefix(prefix).await.unwrap(), 2);
    for k in &inside {
        assert_eq!(body_at(&tier, k).await, None, "{}", k.url);
    }
    for k in &outside {
        assert!(body_at(&tier, k).await.is_some(), "{}", k.url);
    }

    let brackets = [key("/[ab]/1"), key("/a/1")];
    for k in &brackets {
        stored(&tier, k, &entry(k, "x")).await;
    }
    assert_eq!(
        tier.purge_prefix("http://example.test/[ab]").await.unwrap(),
        1
    );
    assert_eq!(body_at(&tier, &brackets[0]).await, None);
    assert!(body_at(&tier, &brackets[1]).await.is_some());
}

#[tokio::test]
async fn purge_prefix_walks_more_urls_than_one_scan_batch() {
    let server = RedisServer::start();
    let mut settings = settings(&server);
    settings.purge_batch = 3;
    let tier = connected(settings).await;
    for i in 0..20 {
        let k = key(&format!("/many/{i}"));
        stored(&tier, &k, &entry(&k, "x")).await;
    }
    let kept = key("/few");
    stored(&tier, &kept, &entry(&kept, "x")).await;
    assert_eq!(
        tier.purge_prefix("http://example.test/many/")
            .await
            .unwrap(),
        20
    );
    assert!(body_at(&tier, &kept).await.is_some());
}

#[tokio::test]
async fn purge_surrogate_removes_only_tagged_variants() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let a = key("/a");
    let b = key("/b");
    let c = key("/c");
    stored(&tier, &a, &tagged(&a, "a", &["red", "blue"])).await;
    stored(&tier, &b, &tagged(&b, "b", &["red"])).await;
    stored(&tier, &c, &tagged(&c, "c", &["blue"])).await;
    // Two variants of one URL, only one of them tagged.
    let v = key("/v");
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let mut red_variant = entry_with(&v, "red", Some("accept-encoding"), &gzip);
    red_variant.surrogate_keys = vec!["red".into()];
    stored(&tier, &v, &red_variant).await;
    stored(
        &tier,
        &v,
        &entry_with(&v, "plain", Some("accept-encoding"), &HeaderMap::new()),
    )
    .await;

    assert_eq!(tier.purge_surrogate("red").await.unwrap(), 3);
    assert_eq!(body_at(&tier, &a).await, None);
    assert_eq!(body_at(&tier, &b).await, None);
    assert_eq!(body_at(&tier, &c).await, Some(Bytes::from("c")));
    assert_eq!(tier.get(&v.digest, &gzip).await.unwrap(), None);
    assert_eq!(body_at(&tier, &v).await, Some(Bytes::from("plain")));
    // Removed entries left no index members behind: only c is still tagged blue.
    assert_eq!(tier.purge_surrogate("blue").await.unwrap(), 1);
}

#[tokio::test]
async fn replaced_variant_loses_its_old_surrogate_keys() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let k = key("/retag");
    stored(&tier, &k, &tagged(&k, "v1", &["old"])).await;
    stored(&tier, &k, &tagged(&k, "v2", &["new"])).await;
    assert_eq!(tier.purge_surrogate("old").await.unwrap(), 0);
    assert_eq!(body_at(&tier, &k).await, Some(Bytes::from("v2")));
    assert_eq!(tier.purge_surrogate("new").await.unwrap(), 1);
}

#[tokio::test]
async fn index_sets_outlive_their_longest_lived_member() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let (long, short) = (key("/long"), key("/short"));
    stored(&tier, &long, &tagged(&long, "x", &["t"])).await;
    let brief = tagged(&short, "x", &["t"]);
    let outcome = tier
        .put(&short.digest, &brief, Duration::from_millis(50))
        .await;
    assert_eq!(outcome.unwrap(), PutOutcome::Stored);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tier.purge_surrogate("t").await.unwrap(), 1);
    assert_eq!(body_at(&tier, &long).await, None);
}

#[tokio::test]
async fn stale_surrogate_membership_does_not_purge_a_later_untagged_entry() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let (again, other) = (key("/again"), key("/other"));
    let brief = tagged(&again, "old", &["t"]);
    tier.put(&again.digest, &brief, Duration::from_millis(50))
        .await
        .unwrap();
    // Keeps the index set of `t` alive after `again` and its keys expired.
    stored(&tier, &other, &tagged(&other, "x", &["t"])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stored(&tier, &again, &entry(&again, "untagged")).await;
    assert_eq!(tier.purge_surrogate("t").await.unwrap(), 1);
    assert_eq!(body_at(&tier, &again).await, Some(Bytes::from("untagged")));
}

#[tokio::test]
async fn purge_all_removes_the_namespace_and_nothing_else() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let mut other_settings = settings(&server);
    other_settings.prefix = "other:".to_owned();
    let other = connected(other_settings).await;
    for i in 0..5 {
        let k = key(&format!("/all/{i}"));
        stored(&tier, &k, &tagged(&k, "x", &["t"])).await;
    }
    let theirs = key("/theirs");
    stored(&other, &theirs, &entry(&theirs, "kept")).await;

    assert_eq!(tier.purge_all().await.unwrap(), 5);
    assert!(keys_under(&server, DEFAULT_PREFIX).await.is_empty());
    assert_eq!(body_at(&other, &theirs).await, Some(Bytes::from("kept")));
}

#[tokio::test]
async fn purges_reach_entries_in_every_group() {
    let server = RedisServer::start();
    let mut settings = settings(&server);
    settings.groups = 7;
    let tier = connected(settings).await;
    // The same URL under several primary keys (methods, extra key parts) lands in several
    // groups; so do many URLs under one surrogate key.
    let target = Target {
        scheme: "http",
        authority: "example.test",
        path_and_query: "/same",
    };
    let mut groups = std::collections::HashSet::new();
    for i in 0..16u8 {
        let k = primary_key(&Method::GET, target, &[(b"n", &[i])]).unwrap();
        groups.insert(tier.inner.keys.group(&k.digest));
        stored(&tier, &k, &tagged(&k, "x", &["t"])).await;
        let other = key(&format!("/tagged/{i}"));
        stored(&tier, &other, &tagged(&other, "x", &["t"])).await;
    }
    assert!(groups.len() > 1, "all keys landed in one group");
    assert_eq!(
        tier.purge_url("http://example.test/same").await.unwrap(),
        16
    );
    assert_eq!(tier.purge_surrogate("t").await.unwrap(), 16);
    assert!(keys_under(&server, DEFAULT_PREFIX).await.is_empty());
}

#[tokio::test]
async fn stopped_redis_fails_calls_within_the_timeout() {
    let mut server = RedisServer::start();
    let tier = tier(&server).await;
    let k = key("/down");
    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert!(tier.get(&k.digest, &HeaderMap::new()).await.is_err());
        assert!(tier.put(&k.digest, &entry(&k, "x"), HOUR).await.is_err());
        assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_millis(100));
    }
    eventually("disconnected", || async { !tier.is_connected() }).await;
    let refused = tier.get(&k.digest, &HeaderMap::new()).await;
    assert!(
        matches!(refused, Err(TierError::NotConnected)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn unresponsive_redis_times_out() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let k = key("/hung");
    server.pause();
    let started = Instant::now();
    let result = tier.get(&k.digest, &HeaderMap::new()).await;
    let elapsed = started.elapsed();
    server.resume();
    assert!(matches!(result, Err(TierError::Timeout(_))), "{result:?}");
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(200),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn tier_reconnects_after_redis_restarts() {
    let mut server = RedisServer::start();
    let tier = tier(&server).await;
    let k = key("/again");
    server.restart();
    eventually("stored after restart", || async {
        tier.put(&k.digest, &entry(&k, "x"), HOUR).await.is_ok()
    })
    .await;
    assert_eq!(body_at(&tier, &k).await, Some(Bytes::from("x")));
}

#[test]
fn tier_bus_and_their_calls_can_move_between_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let settings = TierSettings::new(
        RedisDeployment::Standalone("redis://127.0.0.1:1".to_owned()),
        TIMEOUT,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let tier = RedisTier::new(settings).unwrap();
    let bus = PurgeBus::publisher(&tier);
    send_sync(&tier);
    send_sync(&bus);
    let k = key("/send");
    let e = entry(&k, "x");
    let headers = HeaderMap::new();
    send(&tier.get(&k.digest, &headers));
    send(&tier.put(&k.digest, &e, HOUR));
    send(&tier.purge_prefix("http://"));
    send(&tier.purge_all());
    send(&bus.publish(&PurgeMessage::All));
}

#[test]
fn settings_debug_hides_url_passwords() {
    let settings = TierSettings::new(
        RedisDeployment::Cluster(vec!["redis://user:secret@10.0.0.1:6379".to_owned()]),
        TIMEOUT,
    );
    let printed = format!("{settings:?}");
    assert!(!printed.contains("secret"), "{printed}");
    assert!(printed.contains("redis://***@10.0.0.1:6379"), "{printed}");
}

#[test]
fn cluster_settings_spread_keys_over_groups() {
    let cluster = TierSettings::new(RedisDeployment::Cluster(vec![]), TIMEOUT);
    let single = TierSettings::new(RedisDeployment::Standalone(String::new()), TIMEOUT);
    assert_eq!((cluster.groups, single.groups), (CLUSTER_GROUPS, 1));
}

#[test]
fn model_settings_set_prefix_size_and_timeout() {
    let redis = model::Redis {
        deployment: RedisDeployment::Standalone("redis://127.0.0.1:1".to_owned()),
        timeout: Duration::from_millis(40),
    };
    let cache = model::CacheRedis {
        prefix: "edge:".to_owned(),
        max_object_bytes: 4096,
    };
    let settings = TierSettings::from_model(&redis, &cache);
    assert_eq!(settings.prefix, "edge:");
    assert_eq!(settings.max_object_bytes, 4096);
    assert_eq!(settings.timeout, Duration::from_millis(40));
}

#[test]
fn url_pattern_escapes_glob_characters() {
    let keys = Keys::new("ns*:", 4);
    assert_eq!(
        keys.url_pattern("http://h/a*b?c[d]\\"),
        "ns\\*:{*}u:http://h/a\\*b\\?c\\[d\\]\\\\*"
    );
}

#[test]
fn only_url_index_keys_of_the_namespace_are_parsed() {
    let keys = Keys::new("ns:", 4);
    assert_eq!(
        keys.parse_url_key(b"ns:{3}u:http://h/"),
        Some((3, &b"http://h/"[..]))
    );
    let others: [&[u8]; 6] = [
        b"ns:{4}u:http://h/",
        b"ns:{x}u:http://h/",
        b"ns:{}u:http://h/",
        b"ns:{3}s:tag",
        b"nsx:{3}u:http://h/",
        b"ns:{1}u:http://h/{2}u:http://i/",
    ];
    assert_eq!(keys.parse_url_key(others[5]), Some((1, &others[5][8..])));
    for key in &others[..5] {
        assert_eq!(keys.parse_url_key(key), None, "{key:?}");
    }
}

#[test]
fn variant_ids_follow_the_vary_values() {
    let request = |value: &str| headers(&[("accept-encoding", value)]);
    let vary = |request: &HeaderMap| {
        crate::cache::vary::Vary::from_exchange(&headers(&[("vary", "accept-encoding")]), request)
    };
    let gzip = scripts::variant_id(&vary(&request("gzip")));
    assert_eq!(gzip.len(), scripts::VARIANT_ID_LEN);
    assert_eq!(gzip, scripts::variant_id(&vary(&request("GZIP"))));
    assert_ne!(gzip, scripts::variant_id(&vary(&request("br"))));
    assert_ne!(gzip, scripts::variant_id(&vary(&HeaderMap::new())));
    assert_ne!(gzip, scripts::variant_id(&Vary::Absent));
}

#[tokio::test]
async fn prefix_with_braces_is_refused() {
    let mut settings = TierSettings::new(
        RedisDeployment::Standalone("redis://127.0.0.1:1".to_owned()),
        TIMEOUT,
    );
    settings.prefix = "cache{x}:".to_owned();
    assert!(matches!(
        RedisTier::new(settings),
        Err(TierError::Prefix(_))
    ));
}
