//! Tests of `hash`.
#![allow(clippy::unwrap_used)]

use super::*;
use http::{HeaderName, HeaderValue};
use proptest::prelude::*;

fn request<'a>(headers: &'a HeaderMap, path: &'a str) -> PickInput<'a> {
    PickInput {
        client_ip: IpAddr::from([192, 0, 2, 1]),
        headers,
        path,
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

fn ids(n: usize, salt: u64) -> Vec<u64> {
    (0..n as u64).map(|i| hash_u64(salt, i)).collect()
}

fn key(seed: u64, k: u64) -> u64 {
    hash_bytes(0, format!("user-{seed}-{k}").as_bytes())
}

fn never(_: usize) -> bool {
    false
}

#[test]
fn hash_is_the_same_in_every_build() {
    // Pinned outputs: changing the hash would move every key of every deployed gateway.
    assert_eq!(hash_bytes(0, b""), 0xE220_A839_7B1D_CDAF);
    assert_eq!(hash_bytes(0, b"10.0.0.1"), 0x3BD7_C454_4D4A_A441);
    assert_eq!(
        hash_bytes(0, b"session=abc123; theme=dark"),
        0xB985_5F78_5D68_A08D
    );
}

#[test]
fn client_ip_key_is_the_whole_address() {
    let none = HeaderMap::new();
    let at = |ip: &str| {
        let mut input = request(&none, "/");
        input.client_ip = ip.parse().unwrap();
        key_hash(&HashKey::ClientIp, &input).unwrap()
    };
    assert_eq!(at("203.0.113.7"), at("::ffff:203.0.113.7"));
    assert_ne!(at("203.0.113.7"), at("203.0.113.8"));
    assert_ne!(at("203.0.113.7"), at("204.0.113.7"));
    assert_ne!(at("2001:db8::1"), at("2001:db8::2"));
}

#[test]
fn client_ip_key_ignores_headers_and_path() {
    let key = HashKey::ClientIp;
    let noisy = headers(&[("x-tenant", "acme")]);
    let none = HeaderMap::new();
    assert_eq!(
        key_hash(&key, &request(&none, "/a")),
        key_hash(&key, &request(&noisy, "/b"))
    );
}

#[test]
fn header_key_is_the_header_value() {
    let key = HashKey::Header(HeaderName::from_static("x-tenant"));
    let acme = headers(&[("x-tenant", "acme")]);
    let acme_noisy = headers(&[("x-other", "1"), ("x-tenant", "acme")]);
    let globex = headers(&[("x-tenant", "globex")]);
    let hash = |h: &HeaderMap, path| key_hash(&key, &request(h, path));
    assert!(hash(&acme, "/a").is_some());
    assert_eq!(hash(&acme, "/a"), hash(&acme_noisy, "/b"));
    assert_ne!(hash(&acme, "/a"), hash(&globex, "/a"));
}

#[test]
fn header_key_missing_or_empty_is_none() {
    let key = HashKey::Header(HeaderName::from_static("x-tenant"));
    let empty = headers(&[("x-tenant", "")]);
    let other = headers(&[("x-other", "acme")]);
    assert_eq!(key_hash(&key, &request(&empty, "/")), None);
    assert_eq!(key_hash(&key, &request(&other, "/")), None);
}

#[test]
fn cookie_key_is_found_in_any_cookie_header() {
    let map = headers(&[
        ("cookie", "theme=dark; lang=en"),
        ("cookie", "sid2=no;  sid = abc123 ;x=1"),
    ]);
    assert_eq!(cookie_value(&map, b"sid"), Some(&b"abc123"[..]));
    assert_eq!(cookie_value(&map, b"lang"), Some(&b"en"[..]));
    assert_eq!(cookie_value(&map, b"si"), None);
    assert_eq!(
        cookie_value(&map, b"Theme"),
        None,
        "cookie names are case-sensitive"
    );
}

#[test]
fn cookie_key_hashes_the_value_only() {
    let key = HashKey::Cookie("sid".to_owned());
    let one = headers(&[("cookie", "sid=u-42; theme=dark")]);
    let two = headers(&[("cookie", "lang=fr; sid=u-42")]);
    let other = headers(&[("cookie", "sid=u-43")]);
    let hash = |h: &HeaderMap| key_hash(&key, &request(h, "/"));
    assert!(hash(&one).is_some());
    assert_eq!(hash(&one), hash(&two));
    assert_ne!(hash(&one), hash(&other));
}

#[test]
fn cookie_key_missing_empty_or_malformed_is_none() {
    let key = HashKey::Cookie("sid".to_owned());
    for value in ["sid=; theme=dark", "theme=dark", "sid", ";;=;", ""] {
        let map = headers(&[("cookie", value)]);
        assert_eq!(key_hash(&key, &request(&map, "/")), None, "{value:?}");
    }
    assert_eq!(key_hash(&key, &request(&HeaderMap::new(), "/")), None);
}

#[test]
fn path_key_is_the_path() {
    let none = HeaderMap::new();
    let noisy = headers(&[("x-tenant", "acme")]);
    let hash = |h: &HeaderMap, path| key_hash(&HashKey::Path, &request(h, path));
    assert_eq!(hash(&none, "/orders/17"), hash(&noisy, "/orders/17"));
    assert_ne!(hash(&none, "/orders/17"), hash(&none, "/orders/18"));
}

#[test]
fn hash_differs_for_trailing_zero_bytes() {
    assert_ne!(hash_bytes(0, b"a"), hash_bytes(0, b"a\0"));
}

#[test]
fn equal_weights_spread_keys_within_a_quarter_of_the_mean() {
    let n = 10;
    let maglev = Maglev::new(&ids(n, 1), &[1; 10]);
    let mut counts = vec![0usize; n];
    for k in 0..100_000 {
        counts[maglev.lookup(key(7, k), &never).unwrap()] += 1;
    }
    let mean = 100_000 / n;
    for c in counts {
        assert!(c.abs_diff(mean) * 4 <= mean, "count {c} vs mean {mean}");
    }
}

#[test]
fn table_entries_follow_weights() {
    let maglev = Maglev::new(&ids(3, 2), &[1, 2, 5]);
    let shares = maglev.shares();
    let unit = TABLE_SIZE as f64 / 8.0;
    for (share, w) in shares.iter().zip([1.0, 2.0, 5.0]) {
        let expected = unit * w;
        assert!(
            (*share as f64 - expected).abs() < expected * 0.01,
            "{shares:?}"
        );
    }
}

#[test]
fn list_order_does_not_change_the_table() {
    let a = Maglev::new(&[10, 20, 30], &[1, 2, 3]);
    let b = Maglev::new(&[30, 10, 20], &[3, 1, 2]);
    let name_a = [10, 20, 30];
    let name_b = [30, 10, 20];
    for k in 0..1000 {
        let ka = a.lookup(key(3, k), &never).unwrap();
        let kb = b.lookup(key(3, k), &never).unwrap();
        assert_eq!(name_a[ka], name_b[kb]);
    }
}

#[test]
fn all_excluded_finds_nothing() {
    let maglev = Maglev::new(&ids(4, 3), &[1; 4]);
    assert_eq!(maglev.lookup(42, &|_| true), None);
}

#[test]
fn empty_table_finds_nothing() {
    let maglev = Maglev::new(&[], &[]);
    assert_eq!(maglev.lookup(42, &never), None);
}

#[test]
fn one_healthy_target_takes_every_key() {
    let maglev = Maglev::new(&ids(6, 4), &[1; 6]);
    for k in 0..1000 {
        assert_eq!(maglev.lookup(key(4, k), &|i| i != 3), Some(3));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn adding_a_target_moves_about_one_nth_of_keys(n in 5usize..20, salt: u64, seed: u64) {
        let all = ids(n + 1, salt);
        let before = Maglev::new(&all[..n], &vec![1; n]);
        let after = Maglev::new(&all, &vec![1; n + 1]);
        let moved = (0..10_000)
            .filter(|&k| {
                let key = key(seed, k);
                before.lookup(key, &never) != after.lookup(key, &never)
            })
            .count();
        let bound = 1.5 / n as f64 + 0.02;
        prop_assert!((moved as f64 / 10_000.0) <= bound, "moved {moved} of 10000, n {n}");
    }

    // Rebuilding without a target is the one case where Maglev moves keys of targets that
    // stay: their walks claim some freed entries in a new order. Typically 1-2% of them;
    // bounded at 4% (2.1% was seen for n = 14).
    #[test]
    fn removing_a_target_keeps_nearly_all_other_keys(
        n in 5usize..20, gone in 0usize..20, salt: u64, seed: u64,
    ) {
        let gone = gone % n;
        let all = ids(n, salt);
        let rest: Vec<u64> = all.iter().enumerate().filter(|&(i, _)| i != gone).map(|(_, &id)| id).collect();
        let before = Maglev::new(&all, &vec![1; n]);
        let after = Maglev::new(&rest, &vec![1; n - 1]);
        let (mut kept, mut moved) = (0usize, 0usize);
        for k in 0..10_000 {
            let key = key(seed, k);
            let old = before.lookup(key, &never).unwrap();
            if old == gone {
                continue;
            }
            kept += 1;
            if all[old] != rest[after.lookup(key, &never).unwrap()] {
                moved += 1;
            }
        }
        prop_assert!(moved * 25 <= kept, "moved {moved} of {kept} unaffected keys, n {n}");
    }

    #[test]
    fn excluding_a_target_moves_only_its_keys(n in 2usize..20, gone in 0usize..20, seed: u64) {
        let gone = gone % n;
        let maglev = Maglev::new(&ids(n, seed), &vec![1; n]);
        for k in 0..2_000 {
            let key = key(seed, k);
            let old = maglev.lookup(key, &never).unwrap();
            let new = maglev.lookup(key, &|i| i == gone).unwrap();
            prop_assert_ne!(new, gone);
            if old != gone {
                prop_assert_eq!(old, new);
            }
        }
    }
}
