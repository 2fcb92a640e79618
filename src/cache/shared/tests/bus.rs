//! The purge bus: message encoding, and purges carried between stores through Redis.

use proptest::prelude::*;

use super::*;
use crate::cache::store::{CacheStore, StoreSettings};

#[test]
fn messages_round_trip_through_their_encoding() {
    let messages = [
        PurgeMessage::Url("http://example.test/a?b=c".to_owned()),
        PurgeMessage::Prefix("http://example.test/a b/".to_owned()),
        PurgeMessage::Surrogate("product-42".to_owned()),
        PurgeMessage::All,
    ];
    for message in messages {
        let encoded = message.encode();
        assert_eq!(PurgeMessage::decode(encoded.as_bytes()), Ok(message));
    }
}

#[test]
fn encoding_is_one_letter_and_the_argument() {
    assert_eq!(
        PurgeMessage::Url("http://x/".to_owned()).encode(),
        "U http://x/"
    );
    assert_eq!(PurgeMessage::All.encode(), "A");
}

#[test]
fn garbage_does_not_decode() {
    let long = format!("U {}", "x".repeat(MAX_MESSAGE_BYTES));
    let cases: [(&[u8], MessageError); 9] = [
        (b"", MessageError::Kind(String::new())),
        (b"X http://x/", MessageError::Kind("X http:/".to_owned())),
        (b"u http://x/", MessageError::Kind("u http:/".to_owned())),
        (b"A ", MessageError::Kind("A ".to_owned())),
        (b"U", MessageError::Argument('U')),
        (b"S ", MessageError::Argument('S')),
        (b"Phttp://x/", MessageError::Argument('P')),
        (b"U http://x/\r\nA", MessageError::Control(9)),
        (b"S \xff\xfe", MessageError::NotUtf8),
    ];
    for (bytes, error) in cases {
        assert_eq!(PurgeMessage::decode(bytes), Err(error), "{bytes:?}");
    }
    assert_eq!(
        PurgeMessage::decode(long.as_bytes()),
        Err(MessageError::TooLong(long.len()))
    );
}

proptest! {
    #[test]
    fn whatever_decodes_encodes_back_to_the_same_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..24),
        kind in prop::sample::select(vec![b'U', b'P', b'S', b'A', b'x']),
    ) {
        let mut input = vec![kind, b' '];
        input.extend_from_slice(&bytes);
        for candidate in [&input[..], &input[..1], &bytes[..]] {
            if let Ok(message) = PurgeMessage::decode(candidate) {
                let encoded = message.encode();
                prop_assert_eq!(encoded.as_bytes(), candidate);
            }
        }
    }
}

pub(super) fn local_store() -> Arc<CacheStore> {
    Arc::new(CacheStore::new(StoreSettings {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
        shards: 2,
        lock_timeout: TIMEOUT,
    }))
}

pub(super) fn cached(store: &CacheStore, k: &CacheKey) -> bool {
    !store.variants(&k.digest).is_empty()
}

pub(super) async fn subscribed(tier: &RedisTier, store: &Arc<CacheStore>) -> PurgeBus {
    let bus = PurgeBus::subscribe(tier, Arc::clone(store)).unwrap();
    eventually("subscribed", || async { bus.stats().subscribed }).await;
    bus
}

#[tokio::test]
async fn purge_published_by_one_instance_reaches_every_store() {
    let server = RedisServer::start();
    let (tier_a, tier_b) = (tier(&server).await, tier(&server).await);
    let (store_a, store_b) = (local_store(), local_store());
    let bus_a = subscribed(&tier_a, &store_a).await;
    let _bus_b = subscribed(&tier_b, &store_b).await;
    let (gone, kept) = (key("/gone"), key("/kept"));
    for store in [&store_a, &store_b] {
        store.insert(&gone.digest, entry(&gone, "x"));
        store.insert(&kept.digest, entry(&kept, "x"));
    }

    let receivers = bus_a
        .publish(&PurgeMessage::Url(gone.url.clone()))
        .await
        .unwrap();
    assert_eq!(receivers, 2);
    eventually_within("purged everywhere", Duration::from_secs(1), || async {
        !cached(&store_a, &gone) && !cached(&store_b, &gone)
    })
    .await;
    assert!(cached(&store_a, &kept) && cached(&store_b, &kept));
}

#[tokio::test]
async fn every_message_kind_is_applied() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let store = local_store();
    let bus = subscribed(&tier, &store).await;
    let (url, prefixed, tagged_key, rest) = (key("/u"), key("/p/1"), key("/s"), key("/z"));
    store.insert(&url.digest, entry(&url, "x"));
    store.insert(&prefixed.digest, entry(&prefixed, "x"));
    store.insert(&tagged_key.digest, tagged(&tagged_key, "x", &["tag"]));
    store.insert(&rest.digest, entry(&rest, "x"));

    let steps: [(PurgeMessage, &CacheKey); 3] = [
        (PurgeMessage::Url(url.url.clone()), &url),
        (
            PurgeMessage::Prefix("http://example.test/p/".to_owned()),
            &prefixed,
        ),
        (PurgeMessage::Surrogate("tag".to_owned()), &tagged_key),
    ];
    for (message, purged) in steps {
        bus.publish(&message).await.unwrap();
        eventually("purged", || async { !cached(&store, purged) }).await;
        assert!(cached(&store, &rest), "{message:?} purged too much");
    }
    bus.publish(&PurgeMessage::All).await.unwrap();
    eventually("all applied", || async { bus.stats().applied == 4 }).await;
    assert!(!cached(&store, &rest));
}

#[tokio::test]
async fn malformed_messages_on_the_channel_are_ignored() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let store = local_store();
    let bus = subscribed(&tier, &store).await;
    let k = key("/safe");
    store.insert(&k.digest, entry(&k, "x"));
    let mut conn = raw(&server).await;
    for garbage in ["", "X all", "A everything", "U", "U\t/x"] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{DEFAULT_PREFIX}purge"))
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    eventually("rejected", || async { bus.stats().rejected == 5 }).await;
    assert!(cached(&store, &k));
    assert_eq!(bus.stats().applied, 0);
}

#[tokio::test]
async fn subscriber_resubscribes_after_redis_restarts() {
    let mut server = RedisServer::start();
    let tier = tier(&server).await;
    let store = local_store();
    let bus = subscribed(&tier, &store).await;
    server.restart();
    eventually("resubscribed", || async {
        let stats = bus.stats();
        stats.subscribed && stats.subscriptions == 2
    })
    .await;
    let (gone, kept) = (key("/later"), key("/stays"));
    store.insert(&gone.digest, entry(&gone, "x"));
    store.insert(&kept.digest, entry(&kept, "x"));
    // The publishing connection may still be the old one until its check notices.
    eventually("published", || async {
        matches!(
            bus.publish(&PurgeMessage::Url(gone.url.clone())).await,
            Ok(1)
        )
    })
    .await;
    eventually("purged", || async { !cached(&store, &gone) }).await;
    assert!(cached(&store, &kept));
}

#[tokio::test]
async fn resubscribing_empties_the_local_store_unless_disabled() {
    for purge in [true, false] {
        let mut server = RedisServer::start();
        let mut settings = settings(&server);
        settings.purge_local_on_resubscribe = purge;
        let tier = connected(settings).await;
        let store = local_store();
        let bus = subscribed(&tier, &store).await;
        let k = key("/cached");
        store.insert(&k.digest, entry(&k, "x"));
        server.restart();
        eventually("resubscribed", || async { bus.stats().subscriptions == 2 }).await;
        assert_eq!(
            cached(&store, &k),
            !purge,
            "purge_local_on_resubscribe = {purge}"
        );
    }
}

#[tokio::test]
async fn dropping_the_bus_stops_its_subscriber() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let publisher = PurgeBus::publisher(&tier);
    let bus = subscribed(&tier, &local_store()).await;
    assert_eq!(publisher.publish(&PurgeMessage::All).await.unwrap(), 1);
    drop(bus);
    eventually("unsubscribed", || async {
        publisher.publish(&PurgeMessage::All).await.unwrap() == 0
    })
    .await;
}

#[tokio::test]
async fn unencodable_message_is_not_published() {
    let server = RedisServer::start();
    let tier = tier(&server).await;
    let bus = PurgeBus::publisher(&tier);
    let refused = bus
        .publish(&PurgeMessage::Url("http://x/\n".to_owned()))
        .await;
    assert!(matches!(refused, Err(TierError::Message(_))), "{refused:?}");
}
