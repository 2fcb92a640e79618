#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

const S: Micros = 1_000_000;
const T0: Micros = 1_699_999_200 * S;

fn per_second(limit: u64) -> Algorithm {
    Algorithm::FixedWindow {
        limit,
        window: Duration::from_secs(1),
    }
}

fn passed(store: &LocalStore, policy: u32, alg: &Algorithm, key: &[u8], n: u64) -> u64 {
    (0..n)
        .filter(|_| store.check(policy, alg, key, T0, 1).allowed)
        .count() as u64
}

#[test]
fn store_admits_exactly_the_limit_per_key() {
    let store = LocalStore::new(100);
    assert_eq!(passed(&store, 1, &per_second(5), b"client-a", 10), 5);
    assert_eq!(passed(&store, 1, &per_second(5), b"client-b", 10), 5);
    assert_eq!(store.len(), 2);
}

#[test]
fn same_key_under_two_policies_is_counted_separately() {
    let store = LocalStore::new(100);
    assert_eq!(passed(&store, 1, &per_second(3), b"k", 5), 3);
    assert_eq!(passed(&store, 2, &per_second(3), b"k", 5), 3);
}

#[test]
fn refused_first_request_leaves_no_entry() {
    let store = LocalStore::new(100);
    assert!(!store.check(1, &per_second(2), b"k", T0, 3).allowed);
    assert!(store.is_empty());
}

#[test]
fn concurrency_guard_release_frees_a_slot() {
    let store = LocalStore::new(100);
    let first = store.acquire(7, 2, b"k").unwrap();
    let second = store.acquire(7, 2, b"k").unwrap();
    assert_eq!(first.decision().remaining, 1);
    assert_eq!(second.decision().remaining, 0);
    assert!(store.acquire(7, 2, b"k").is_err());
    drop(first);
    assert!(store.acquire(7, 2, b"k").is_ok());
}

#[test]
fn concurrency_refusal_asks_to_retry_after_one_second() {
    let store = LocalStore::new(100);
    let _held = store.acquire(7, 1, b"k").unwrap();
    let refused = store.acquire(7, 1, b"k").unwrap_err();
    assert!(!refused.allowed);
    assert_eq!(refused.limit, 1);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
}

#[test]
fn concurrency_check_reports_without_taking_a_slot() {
    let store = LocalStore::new(100);
    let alg = Algorithm::Concurrency { max: 2 };
    let _held = store.acquire(7, 2, b"k").unwrap();
    assert_eq!(store.check(7, &alg, b"k", T0, 1).remaining, 1);
    assert!(store.check(7, &alg, b"k", T0, 1).allowed);
    assert!(!store.check(7, &alg, b"k", T0, 2).allowed);
    let _second = store.acquire(7, 2, b"k").unwrap();
}

#[test]
fn released_concurrency_entries_are_removed() {
    let store = LocalStore::new(100);
    let guards: Vec<_> = (0..3).map(|_| store.acquire(7, 5, b"k").unwrap()).collect();
    assert_eq!(store.len(), 1);
    drop(guards);
    assert!(store.is_empty());
}

#[test]
fn guard_can_move_to_another_thread() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let store = Arc::new(LocalStore::new(10));
    let guard = store.acquire(1, 1, b"k").unwrap();
    assert_send_static(&guard);
    std::thread::spawn(move || drop(guard)).join().unwrap();
    assert!(store.acquire(1, 1, b"k").is_ok());
}

#[test]
fn entries_with_in_flight_guards_are_never_evicted() {
    let store = LocalStore::new(1);
    let held = store.acquire(1, 1, b"held").unwrap();
    for i in 0..100u32 {
        store.check(2, &per_second(10), &i.to_be_bytes(), T0, 1);
    }
    assert_eq!(store.evictions(), 0);
    assert!(store.acquire(1, 1, b"held").is_err());
    // No room for another key while the only entry holds a slot.
    assert!(store.acquire(1, 1, b"other").is_err());
    drop(held);
    assert!(store.acquire(1, 1, b"other").is_ok());
}

#[test]
fn expired_entries_make_room_without_counting_evictions() {
    let store = LocalStore::new(1000);
    let alg = per_second(10);
    // One new key per second: by then every earlier key's window is over.
    for i in 0..5000u32 {
        store.check(1, &alg, &i.to_be_bytes(), T0 + u64::from(i) * S, 1);
    }
    assert!(store.len() <= 1000);
    assert_eq!(store.evictions(), 0);
}

#[test]
fn recently_used_key_survives_a_flood_of_new_keys() {
    // 64 entries a shard: the hot key is evicted only if all 5 samples hit it, (1/64)^5.
    let store = LocalStore::new(4096);
    let alg = per_second(1_000_000);
    for i in 0..20_000u32 {
        store.check(1, &alg, b"hot", T0, 1);
        store.check(1, &alg, &i.to_be_bytes(), T0, 1);
    }
    // Every one of the hot key's requests is still counted.
    assert_eq!(
        store.check(1, &alg, b"hot", T0, 1).remaining,
        1_000_000 - 20_001
    );
    assert!(store.evictions() > 0);
}

#[test]
fn store_smaller_than_its_shards_never_holds_more_than_max_keys() {
    let store = LocalStore::new(10);
    for i in 0..1000u32 {
        store.check(1, &per_second(10), &i.to_be_bytes(), T0, 1);
    }
    assert!(store.len() <= 10);
}

/// Offers one request for each of `keys` distinct keys to a store of `max_keys` entries.
fn flood(keys: u32, max_keys: usize) -> LocalStore {
    let store = LocalStore::new(max_keys);
    let alg = per_second(10);
    for i in 0..keys {
        assert!(store.check(1, &alg, &i.to_le_bytes(), T0, 1).allowed);
    }
    store
}

/// About 4 s in a debug build, the longest unit test; it is the bound the docs promise.
#[test]
fn a_million_distinct_keys_stay_within_max_keys() {
    let store = flood(1_000_000, 100_000);
    assert_eq!(store.len(), 100_000);
    assert_eq!(store.evictions(), 900_000);
}

#[test]
fn four_threads_sharing_a_key_admit_exactly_the_limit() {
    let store = LocalStore::new(1000);
    let alg = per_second(1000);
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| passed(&store, 1, &alg, b"shared", 1000)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(total, 1000);
    assert!(!store.check(1, &alg, b"shared", T0, 1).allowed);
}
