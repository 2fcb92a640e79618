use std::time::Instant;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Barrier};

use super::*;

fn leader_of(lookup: Lookup) -> FillLeader {
    match lookup {
        Lookup::Miss(leader) => leader,
        Lookup::Hit(_) | Lookup::Follow(_) => panic!("expected a miss"),
    }
}

fn follower_of(lookup: Lookup) -> FillFollower {
    match lookup {
        Lookup::Follow(follower) => follower,
        Lookup::Hit(_) | Lookup::Miss(_) => panic!("expected to follow"),
    }
}

fn start(leader: &mut FillLeader, request: &HeaderMap, head: HeaderMap, tags: &[&str]) {
    let keys = tags.iter().map(|&tag| tag.into()).collect();
    leader.start(meta(request, &head), StatusCode::OK, head, keys);
}

/// Streams the followed body to the end; the chunks, or the error that ended it.
async fn read_all(follower: FillFollower) -> Result<Vec<Bytes>, FillError> {
    let FollowOutcome::Stream { mut body, .. } = follower.head().await else {
        panic!("follower was sent to the origin");
    };
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_lookups_coalesce_behind_one_leader() {
    let store = CacheStore::new(settings(1 << 20));
    let key = Arc::new(key("/a"));
    let barrier = Arc::new(Barrier::new(10));
    let lookups: Vec<_> = (0..10)
        .map(|_| {
            let (store, key, barrier) = (store.clone(), Arc::clone(&key), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.lookup(&key, &HeaderMap::new())
            })
        })
        .collect();
    let (mut leaders, mut followers) = (Vec::new(), Vec::new());
    for lookup in lookups {
        match lookup.await.unwrap() {
            Lookup::Miss(leader) => leaders.push(leader),
            Lookup::Follow(follower) => followers.push(follower),
            Lookup::Hit(_) => panic!("nothing was stored yet"),
        }
    }
    assert_eq!((leaders.len(), followers.len()), (1, 9));
    let mut leader = leaders.remove(0);

    let (first_seen, mut firsts) = mpsc::unbounded_channel();
    let readers: Vec<_> = followers
        .into_iter()
        .map(|follower| {
            let first_seen = first_seen.clone();
            tokio::spawn(async move {
                let FollowOutcome::Stream { head, mut body } = follower.head().await else {
                    panic!("follower was sent to the origin");
                };
                let mut chunks = vec![body.next().await.unwrap().unwrap()];
                first_seen.send(()).unwrap();
                while let Some(chunk) = body.next().await {
                    chunks.push(chunk.unwrap());
                }
                (head, chunks)
            })
        })
        .collect();

    start(
        &mut leader,
        &HeaderMap::new(),
        response(&[("x-test", "1")]),
        &[],
    );
    leader.push(Bytes::from_static(b"one"));
    // Every follower streams the first chunk while the leader has not finished.
    for _ in 0..9 {
        firsts.recv().await.unwrap();
    }
    leader.push(Bytes::from_static(b"two"));
    assert_eq!(leader.finish(), Admission::Stored);

    let mut heads = Vec::new();
    for reader in readers {
        let (head, chunks) = reader.await.unwrap();
        assert_eq!(
            chunks,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(head.headers["x-test"], "1");
        heads.push(head);
    }
    assert!(heads.iter().all(|head| Arc::ptr_eq(head, &heads[0])));
    assert_eq!(
        hit_body(&store, &key, &HeaderMap::new()),
        Some(Bytes::from_static(b"onetwo"))
    );
}

#[tokio::test]
async fn follower_goes_to_origin_after_the_lock_timeout() {
    let timeout = Duration::from_millis(50);
    let store = CacheStore::new(StoreSettings {
        lock_timeout: timeout,
        ..settings(1 << 20)
    });
    let key = key("/a");
    let _leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    let waited = Instant::now();
    let outcome = follower.head().await;
    assert!(matches!(
        outcome,
        FollowOutcome::GoToOrigin(OriginReason::LockTimeout)
    ));
    assert!(waited.elapsed() >= timeout);
}

#[tokio::test]
async fn abandoned_fill_sends_followers_to_origin() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    let waiting = tokio::spawn(follower.head());
    tokio::task::yield_now().await;
    leader.abandon();
    assert!(matches!(
        waiting.await.unwrap(),
        FollowOutcome::GoToOrigin(OriginReason::Abandoned)
    ));
    assert_eq!(store.stats().fills_abandoned, 1);
}

#[tokio::test]
async fn dropped_leader_sends_followers_to_origin() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    let waiting = tokio::spawn(follower.head());
    tokio::task::yield_now().await;
    drop(leader);
    assert!(matches!(
        waiting.await.unwrap(),
        FollowOutcome::GoToOrigin(OriginReason::Abandoned)
    ));
    assert_eq!(store.stats().fills_abandoned, 1);
    // The key is free for the next request to fetch.
    leader_of(store.lookup(&key, &HeaderMap::new()));
}

#[tokio::test]
async fn abandon_after_the_head_ends_follower_bodies_with_an_error() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut leader, &HeaderMap::new(), response(&[]), &[]);
    leader.push(Bytes::from_static(b"part"));
    leader.abandon();
    let FollowOutcome::Stream { mut body, .. } = follower.head().await else {
        panic!("follower was sent to the origin");
    };
    assert_eq!(body.next().await.unwrap(), Ok(Bytes::from_static(b"part")));
    assert_eq!(
        body.next().await.unwrap(),
        Err(FillError::Aborted { received: 4 })
    );
    assert!(body.next().await.is_none());
    assert_eq!(store.stats().entries, 0);
}

#[tokio::test]
async fn fill_past_the_object_limit_is_not_stored_but_followers_complete() {
    let store = CacheStore::new(StoreSettings {
        max_object_bytes: 4096,
        ..settings(1 << 20)
    });
    let key = key("/big");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    let (read, mut reads) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let FollowOutcome::Stream { mut body, .. } = follower.head().await else {
            panic!("follower was sent to the origin");
        };
        let mut total = 0;
        while let Some(chunk) = body.next().await {
            total += chunk.unwrap().len();
            read.send(()).unwrap();
        }
        total
    });
    start(&mut leader, &HeaderMap::new(), response(&[]), &[]);
    for _ in 0..3 {
        leader.push(Bytes::from(vec![b'x'; 2000]));
        reads.recv().await.unwrap();
    }
    assert!(!leader.is_storing());
    assert_eq!(leader.finish(), Admission::TooLarge);
    assert_eq!(reader.await.unwrap(), 6000);
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.stats().fills_abandoned, 1);
    leader_of(store.lookup(&key, &HeaderMap::new()));
}

#[tokio::test]
async fn follower_far_behind_an_unstored_fill_fails_as_lagged() {
    let store = CacheStore::new(StoreSettings {
        max_object_bytes: 4096,
        ..settings(1 << 20)
    });
    let key = key("/big");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut leader, &HeaderMap::new(), response(&[]), &[]);
    for _ in 0..4 {
        leader.push(Bytes::from(vec![b'x'; 2000]));
    }
    leader.finish();
    assert_eq!(
        read_all(follower).await,
        Err(FillError::Lagged { limit: 4096 })
    );
}

#[tokio::test]
async fn follower_with_other_vary_values_goes_to_origin() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let br = headers(&[("accept-encoding", "br")]);
    let mut leader = leader_of(store.lookup(&key, &gzip));
    let other = follower_of(store.lookup(&key, &br));
    let same = follower_of(store.lookup(&key, &gzip));
    start(
        &mut leader,
        &gzip,
        response(&[("vary", "accept-encoding")]),
        &[],
    );
    leader.push(Bytes::from_static(b"gz"));
    leader.finish();
    assert!(matches!(
        other.head().await,
        FollowOutcome::GoToOrigin(OriginReason::VaryMismatch)
    ));
    assert_eq!(read_all(same).await, Ok(vec![Bytes::from_static(b"gz")]));
}

#[tokio::test]
async fn purge_during_fill_is_not_stored_but_followers_complete() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut leader, &HeaderMap::new(), response(&[]), &[]);
    leader.push(Bytes::from_static(b"a"));
    assert_eq!(store.purge_url(&key.url), 0);
    assert!(!leader.is_storing());
    leader.push(Bytes::from_static(b"b"));
    assert_eq!(leader.finish(), Admission::Cancelled);
    assert_eq!(
        read_all(follower).await,
        Ok(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
    );
    assert_eq!(store.stats().entries, 0);
    leader_of(store.lookup(&key, &HeaderMap::new()));
}

#[test]
fn surrogate_purge_cancels_a_tagged_fill() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut leader, &HeaderMap::new(), response(&[]), &["product"]);
    leader.push(Bytes::from_static(b"a"));
    store.purge_surrogate("product");
    assert_eq!(leader.finish(), Admission::Cancelled);
    assert_eq!(store.stats().entries, 0);
}

#[tokio::test]
async fn fill_without_head_past_the_lock_timeout_is_taken_over() {
    let timeout = Duration::from_millis(30);
    let store = CacheStore::new(StoreSettings {
        lock_timeout: timeout,
        ..settings(1 << 20)
    });
    let key = key("/a");
    let mut stuck = leader_of(store.lookup(&key, &HeaderMap::new()));
    tokio::time::sleep(timeout + Duration::from_millis(10)).await;
    let mut next = leader_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut stuck, &HeaderMap::new(), response(&[]), &[]);
    assert_eq!(stuck.finish(), Admission::Cancelled);
    start(&mut next, &HeaderMap::new(), response(&[]), &[]);
    next.push(Bytes::from_static(b"new"));
    assert_eq!(next.finish(), Admission::Stored);
}

#[tokio::test]
async fn follower_body_is_an_http_body() {
    let store = CacheStore::new(settings(1 << 20));
    let key = key("/a");
    let mut leader = leader_of(store.lookup(&key, &HeaderMap::new()));
    let follower = follower_of(store.lookup(&key, &HeaderMap::new()));
    start(&mut leader, &HeaderMap::new(), response(&[]), &[]);
    leader.push(Bytes::from_static(b"hello "));
    leader.push(Bytes::from_static(b"world"));
    leader.finish();
    let FollowOutcome::Stream { body, .. } = follower.head().await else {
        panic!("follower was sent to the origin");
    };
    let collected = BodyExt::collect(body).await.unwrap().to_bytes();
    assert_eq!(collected, Bytes::from_static(b"hello world"));
}
