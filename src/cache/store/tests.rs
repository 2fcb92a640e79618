use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;

use super::*;
use crate::cache::freshness::{ExchangeTimes, HeuristicPolicy};
use crate::cache::key::{primary_key, Target};

#[path = "tests/codec.rs"]
mod codec_tests;
#[path = "tests/fill.rs"]
mod fill_tests;

const LOCK_TIMEOUT: Duration = Duration::from_millis(300);

fn settings(max_bytes: usize) -> StoreSettings {
    StoreSettings {
        max_bytes,
        max_object_bytes: max_bytes,
        shards: 1,
        lock_timeout: LOCK_TIMEOUT,
    }
}

fn key_for(method: &Method, path: &str) -> CacheKey {
    let target = Target {
        scheme: "http",
        authority: "example.com",
        path_and_query: path,
    };
    primary_key(method, target, &[]).unwrap()
}

fn key(path: &str) -> CacheKey {
    key_for(&Method::GET, path)
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

fn times() -> ExchangeTimes {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    ExchangeTimes {
        request_time: at,
        response_time: at,
    }
}

/// A cacheable response head: max-age=60 plus `extra` fields.
fn response(extra: &[(&str, &str)]) -> HeaderMap {
    let mut map = headers(&[("cache-control", "max-age=60")]);
    map.extend(headers(extra));
    map
}

fn meta(request: &HeaderMap, response: &HeaderMap) -> StoredMeta {
    StoredMeta::new(
        request,
        StatusCode::OK,
        response,
        times(),
        &HeuristicPolicy::default(),
    )
}

fn entry(key: &CacheKey, body: &[u8], surrogate_keys: &[&str]) -> Entry {
    let response = response(&[]);
    Entry {
        meta: meta(&HeaderMap::new(), &response),
        status: StatusCode::OK,
        headers: response,
        body: Bytes::copy_from_slice(body),
        surrogate_keys: surrogate_keys.iter().map(|&k| k.into()).collect(),
        url: key.url.as_str().into(),
    }
}

/// Looks `key` up as `request`, expecting a miss, and fills it with `response` and `body`.
fn fill(
    store: &CacheStore,
    key: &CacheKey,
    request: &HeaderMap,
    response: &HeaderMap,
    body: &[u8],
) -> Admission {
    let Lookup::Miss(mut leader) = store.lookup(key, request) else {
        panic!("expected a miss for {}", key.url);
    };
    leader.start(
        meta(request, response),
        StatusCode::OK,
        response.clone(),
        Vec::new(),
    );
    leader.push(Bytes::copy_from_slice(body));
    leader.finish()
}

/// The body a lookup hits, or `None` on a miss (whose fill is then abandoned).
fn hit_body(store: &CacheStore, key: &CacheKey, request: &HeaderMap) -> Option<Bytes> {
    match store.lookup(key, request) {
        Lookup::Hit(entry) => Some(entry.body.clone()),
        Lookup::Miss(_) | Lookup::Follow(_) => None,
    }
}

#[test]
fn finished_fill_is_a_hit() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let admission = fill(&store, &key, &HeaderMap::new(), &response(&[]), b"hello");
    assert_eq!(admission, Admission::Stored);
    assert_eq!(
        hit_body(&store, &key, &HeaderMap::new()),
        Some(Bytes::from_static(b"hello"))
    );
}

#[test]
fn hits_share_one_stored_entry() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    store.insert(&key.digest, entry(&key, b"x", &[]));
    let (Lookup::Hit(first), Lookup::Hit(second)) = (
        store.lookup(&key, &HeaderMap::new()),
        store.lookup(&key, &HeaderMap::new()),
    ) else {
        panic!("expected two hits");
    };
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn request_selects_the_variant_of_its_vary_values() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let varies = response(&[("vary", "accept-encoding")]);
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let br = headers(&[("accept-encoding", "br")]);
    fill(&store, &key, &gzip, &varies, b"gz");
    fill(&store, &key, &br, &varies, b"br");
    assert_eq!(store.stats().entries, 2);
    assert_eq!(
        hit_body(&store, &key, &gzip),
        Some(Bytes::from_static(b"gz"))
    );
    assert_eq!(hit_body(&store, &key, &br), Some(Bytes::from_static(b"br")));
    assert_eq!(hit_body(&store, &key, &HeaderMap::new()), None);
}

#[test]
fn newest_matching_variant_wins() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    store.insert(&key.digest, entry(&key, b"old", &[]));
    let request = headers(&[("accept", "text/html")]);
    let varies = response(&[("vary", "accept")]);
    let newer = Entry {
        meta: meta(&request, &varies),
        headers: varies,
        ..entry(&key, b"new", &[])
    };
    store.insert(&key.digest, newer);
    assert_eq!(
        hit_body(&store, &key, &request),
        Some(Bytes::from_static(b"new"))
    );
}

#[test]
fn same_secondary_key_replaces_the_variant() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let varies = response(&[("vary", "accept-encoding")]);
    let gzip = headers(&[("accept-encoding", "gzip")]);
    fill(&store, &key, &gzip, &varies, b"first");
    store.insert(
        &key.digest,
        Entry {
            meta: meta(&gzip, &varies),
            headers: varies.clone(),
            ..entry(&key, b"second", &[])
        },
    );
    assert_eq!(store.stats().entries, 1);
    assert_eq!(
        hit_body(&store, &key, &gzip),
        Some(Bytes::from_static(b"second"))
    );
}

#[test]
fn vary_star_response_is_never_a_hit() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let admission = fill(
        &store,
        &key,
        &HeaderMap::new(),
        &response(&[("vary", "*")]),
        b"x",
    );
    assert_eq!(admission, Admission::Unusable);
    assert_eq!(hit_body(&store, &key, &HeaderMap::new()), None);
    assert_eq!(store.stats().entries, 0);
}

#[test]
fn variants_beyond_the_limit_drop_the_oldest() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let varies = response(&[("vary", "x-v")]);
    for n in 0..=MAX_VARIANTS {
        let request = headers(&[("x-v", &n.to_string())]);
        fill(&store, &key, &request, &varies, n.to_string().as_bytes());
    }
    assert_eq!(store.stats().entries, MAX_VARIANTS as u64);
    assert_eq!(hit_body(&store, &key, &headers(&[("x-v", "0")])), None);
    let newest = MAX_VARIANTS.to_string();
    assert_eq!(
        hit_body(&store, &key, &headers(&[("x-v", &newest)])),
        Some(Bytes::from(newest))
    );
}

#[test]
fn object_over_the_size_limit_is_not_stored() {
    let store = CacheStore::new(StoreSettings {
        max_object_bytes: 2048,
        ..settings(1 << 20)
    });
    let key = key("/big");
    assert_eq!(
        store.insert(&key.digest, entry(&key, &[0; 4096], &[])),
        Admission::TooLarge
    );
    assert_eq!(hit_body(&store, &key, &HeaderMap::new()), None);
    assert_eq!(store.stats().bytes, 0);
}

#[test]
fn charged_size_counts_body_fields_and_overhead() {
    let key = key("/a");
    let small = entry(&key, b"", &[]);
    let large = entry(&key, &[0; 1000], &[]);
    assert_eq!(large.charged_size() - small.charged_size(), 1000);
    assert!(small.charged_size() > ENTRY_OVERHEAD + "cache-control".len());
}

/// One-off keys fill the store through lookups and fills, as a crawler would.
fn scan(store: &CacheStore, from: usize, count: usize) {
    for n in from..from + count {
        let key = key(&format!("/scan/{n}"));
        fill(store, &key, &HeaderMap::new(), &response(&[]), &[1; 1000]);
    }
}

#[test]
fn scan_of_one_off_keys_does_not_flush_the_hot_set() {
    let store = CacheStore::new(settings(32 * 1024));
    let hot: Vec<CacheKey> = (0..5).map(|n| key(&format!("/hot/{n}"))).collect();
    for key in &hot {
        fill(&store, key, &HeaderMap::new(), &response(&[]), &[0; 1000]);
        for _ in 0..10 {
            assert!(hit_body(&store, key, &HeaderMap::new()).is_some());
        }
    }
    let capacity = 32 * 1024 / entry(&hot[0], &[0; 1000], &[]).charged_size();
    scan(&store, 0, 10 * capacity);
    for key in &hot {
        assert!(
            hit_body(&store, key, &HeaderMap::new()).is_some(),
            "{} was flushed",
            key.url
        );
    }
    assert!(store.stats().admissions_rejected > 0);
}

#[test]
fn frequent_candidate_displaces_a_cold_entry() {
    let store = CacheStore::new(settings(32 * 1024));
    scan(&store, 0, 40);
    let wanted = key("/wanted");
    for _ in 0..3 {
        hit_body(&store, &wanted, &HeaderMap::new());
    }
    let admission = fill(
        &store,
        &wanted,
        &HeaderMap::new(),
        &response(&[]),
        &[2; 1000],
    );
    assert_eq!(admission, Admission::Stored);
    assert!(store.stats().evictions > 0);
}

/// Operations for the byte-bound property.
#[derive(Debug, Clone)]
enum Op {
    Insert { key: u8, body: usize, vary: u8 },
    PurgeUrl(u8),
    PurgeSurrogate(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..48u8, 0..6000usize, 0..3u8).prop_map(|(key, body, vary)| Op::Insert { key, body, vary }),
        1 => (0..48u8).prop_map(Op::PurgeUrl),
        1 => (0..4u8).prop_map(Op::PurgeSurrogate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn charged_bytes_never_exceed_the_bound(
        shards in 1..4usize,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let max_bytes = 24 * 1024;
        let store = CacheStore::new(StoreSettings { shards, ..settings(max_bytes) });
        for op in ops {
            match op {
                Op::Insert { key: n, body, vary } => {
                    let key = key(&format!("/k/{n}"));
                    let request = headers(&[("x-v", &vary.to_string())]);
                    let varies = response(&[("vary", "x-v")]);
                    let tag = format!("t{}", n % 4);
                    let entry = Entry {
                        meta: meta(&request, &varies),
                        headers: varies,
                        ..entry(&key, &vec![7; body], &[&tag])
                    };
                    store.insert(&key.digest, entry);
                }
                Op::PurgeUrl(n) => {
                    store.purge_url(&key(&format!("/k/{n}")).url);
                }
                Op::PurgeSurrogate(n) => {
                    store.purge_surrogate(&format!("t{n}"));
                }
            }
            let stats = store.stats();
            prop_assert!(stats.bytes <= max_bytes as u64, "{} > {}", stats.bytes, max_bytes);
        }
        let entries = store.stats().entries;
        prop_assert_eq!(store.purge_all() as u64, entries);
        prop_assert_eq!(store.stats().bytes, 0);
    }
}

#[test]
fn purge_url_removes_every_variant_and_method_class() {
    let store = CacheStore::new(settings(1 << 20));
    let get = key("/a");
    let post = key_for(&Method::POST, "/a");
    let varies = response(&[("vary", "accept-encoding")]);
    fill(
        &store,
        &get,
        &headers(&[("accept-encoding", "gzip")]),
        &varies,
        b"1",
    );
    fill(
        &store,
        &get,
        &headers(&[("accept-encoding", "br")]),
        &varies,
        b"2",
    );
    store.insert(&post.digest, entry(&post, b"3", &[]));
    let other = key("/a/b");
    store.insert(&other.digest, entry(&other, b"4", &[]));
    assert_eq!(store.purge_url(&get.url), 3);
    assert_eq!(store.stats().entries, 1);
    assert!(hit_body(&store, &other, &HeaderMap::new()).is_some());
}

#[test]
fn purge_prefix_removes_urls_under_the_prefix_only() {
    let store = CacheStore::new(StoreSettings {
        shards: 4,
        ..settings(1 << 20)
    });
    for path in ["/api/1", "/api/2", "/api/2?x=1", "/apix", "/other"] {
        let key = key(path);
        store.insert(&key.digest, entry(&key, b"x", &[]));
    }
    assert_eq!(store.purge_prefix("http://example.com/api/"), 3);
    assert!(hit_body(&store, &key("/apix"), &HeaderMap::new()).is_some());
    assert!(hit_body(&store, &key("/api/1"), &HeaderMap::new()).is_none());
}

#[test]
fn purge_surrogate_removes_tagged_entries_only() {
    let store = CacheStore::new(StoreSettings {
        shards: 4,
        ..settings(1 << 20)
    });
    let tagged = [key("/p/1"), key("/p/2"), key("/list")];
    store.insert(
        &tagged[0].digest,
        entry(&tagged[0], b"1", &["product", "p1"]),
    );
    store.insert(&tagged[1].digest, entry(&tagged[1], b"2", &["product"]));
    store.insert(&tagged[2].digest, entry(&tagged[2], b"3", &["list"]));
    assert_eq!(store.purge_surrogate("product"), 2);
    assert_eq!(store.purge_surrogate("product"), 0);
    assert_eq!(store.purge_surrogate("p1"), 0);
    assert!(hit_body(&store, &tagged[2], &HeaderMap::new()).is_some());
}

#[test]
fn purge_all_empties_the_store() {
    let store = CacheStore::new(StoreSettings {
        shards: 4,
        ..settings(1 << 20)
    });
    for n in 0..10 {
        let key = key(&format!("/{n}"));
        store.insert(&key.digest, entry(&key, b"x", &["all"]));
    }
    assert_eq!(store.purge_all(), 10);
    let stats = store.stats();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
    assert_eq!(store.purge_surrogate("all"), 0);
}

#[test]
fn invalidate_removes_every_variant_of_the_key() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let varies = response(&[("vary", "accept-encoding")]);
    fill(
        &store,
        &key,
        &headers(&[("accept-encoding", "gzip")]),
        &varies,
        b"1",
    );
    fill(&store, &key, &HeaderMap::new(), &varies, b"2");
    assert_eq!(store.invalidate(&key.digest), 2);
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.invalidate(&key.digest), 0);
}

#[test]
fn replace_head_keeps_the_body_and_leaves_old_readers_alone() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    fill(
        &store,
        &key,
        &HeaderMap::new(),
        &response(&[("x-version", "1")]),
        b"body",
    );
    let Lookup::Hit(old) = store.lookup(&key, &HeaderMap::new()) else {
        panic!("expected a hit");
    };
    let refreshed = response(&[("x-version", "2")]);
    let new = store
        .replace_head(
            &key.digest,
            &old,
            meta(&HeaderMap::new(), &refreshed),
            refreshed,
        )
        .unwrap();
    assert_eq!(new.body, Bytes::from_static(b"body"));
    assert_eq!(old.headers["x-version"], "1");
    let Lookup::Hit(current) = store.lookup(&key, &HeaderMap::new()) else {
        panic!("expected a hit");
    };
    assert_eq!(current.headers["x-version"], "2");
    assert_eq!(current.body, Bytes::from_static(b"body"));
    assert_eq!(store.stats().entries, 1);
}

#[test]
fn replace_head_of_a_purged_entry_is_refused() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    store.insert(&key.digest, entry(&key, b"x", &[]));
    let Lookup::Hit(old) = store.lookup(&key, &HeaderMap::new()) else {
        panic!("expected a hit");
    };
    store.purge_all();
    let head = response(&[]);
    let meta = meta(&HeaderMap::new(), &head);
    assert!(store.replace_head(&key.digest, &old, meta, head).is_none());
    assert_eq!(store.stats().entries, 0);
}

#[test]
fn variants_lists_every_stored_variant() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let varies = response(&[("vary", "accept-encoding")]);
    fill(
        &store,
        &key,
        &headers(&[("accept-encoding", "gzip")]),
        &varies,
        b"1",
    );
    fill(
        &store,
        &key,
        &headers(&[("accept-encoding", "br")]),
        &varies,
        b"2",
    );
    let bodies: Vec<Bytes> = store
        .variants(&key.digest)
        .iter()
        .map(|entry| entry.body.clone())
        .collect();
    assert_eq!(
        bodies,
        vec![Bytes::from_static(b"2"), Bytes::from_static(b"1")]
    );
}

#[test]
fn begin_fill_ignores_a_stored_variant() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    store.insert(&key.digest, entry(&key, b"stale", &[]));
    let Lookup::Miss(mut leader) = store.begin_fill(&key, &HeaderMap::new()) else {
        panic!("expected a fill");
    };
    let head = response(&[]);
    leader.start(
        meta(&HeaderMap::new(), &head),
        StatusCode::OK,
        head,
        Vec::new(),
    );
    leader.push(Bytes::from_static(b"fresh"));
    assert_eq!(leader.finish(), Admission::Stored);
    assert_eq!(
        hit_body(&store, &key, &HeaderMap::new()),
        Some(Bytes::from_static(b"fresh"))
    );
    assert_eq!(store.stats().entries, 1);
}

#[test]
fn stats_count_entries_and_bytes() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let stored = entry(&key, b"abc", &[]);
    let charge = stored.charged_size() as u64;
    store.insert(&key.digest, stored);
    let stats = store.stats();
    assert_eq!((stats.entries, stats.bytes), (1, charge));
}
