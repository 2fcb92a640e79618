use std::time::SystemTime;

use crate::cache::conditional::EntityTag;
use crate::cache::control::{FieldScope, ResponseDirectives};
use crate::cache::date::DateField;
use crate::cache::freshness::Lifetime;
use crate::cache::vary::{VariedField, Vary};

use super::codec::{decode, encode, CodecError, VERSION};
use super::*;

/// Times with microsecond precision, before and after the epoch: what the format keeps.
fn time() -> impl Strategy<Value = SystemTime> {
    (-4_000_000_000_000_000i64..8_000_000_000_000_000).prop_map(|micros| {
        let offset = Duration::from_micros(micros.unsigned_abs());
        if micros >= 0 {
            UNIX_EPOCH + offset
        } else {
            UNIX_EPOCH - offset
        }
    })
}

fn duration() -> impl Strategy<Value = Duration> {
    any::<u64>().prop_map(Duration::from_micros)
}

fn name() -> impl Strategy<Value = HeaderName> {
    "[a-z][a-z0-9-]{0,12}".prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
}

fn value() -> impl Strategy<Value = Bytes> {
    "[ -~]{0,20}".prop_map(Bytes::from)
}

fn scope() -> impl Strategy<Value = FieldScope> {
    prop_oneof![
        Just(FieldScope::Absent),
        Just(FieldScope::Whole),
        proptest::collection::vec(name(), 0..3).prop_map(FieldScope::Fields),
    ]
}

fn directives() -> impl Strategy<Value = ResponseDirectives> {
    (
        (any::<Option<u32>>(), any::<Option<u32>>(), scope(), scope()),
        any::<[bool; 8]>(),
        (any::<Option<u32>>(), any::<Option<u32>>()),
    )
        .prop_map(
            |((max_age, s_maxage, no_cache, private), flags, (swr, sie))| ResponseDirectives {
                max_age,
                s_maxage,
                no_cache,
                private,
                no_store: flags[0],
                public: flags[1],
                must_revalidate: flags[2],
                proxy_revalidate: flags[3],
                must_understand: flags[4],
                no_transform: flags[5],
                immutable: flags[6],
                targeted: flags[7],
                stale_while_revalidate: swr,
                stale_if_error: sie,
            },
        )
}

fn vary() -> impl Strategy<Value = Vary> {
    let field = (name(), proptest::option::of(value()))
        .prop_map(|(name, value)| VariedField { name, value });
    prop_oneof![
        Just(Vary::Absent),
        Just(Vary::Any),
        proptest::collection::vec(field, 0..3).prop_map(Vary::Fields),
    ]
}

fn status() -> impl Strategy<Value = StatusCode> {
    (100u16..1000).prop_map(|code| StatusCode::from_u16(code).unwrap())
}

fn stored_meta() -> impl Strategy<Value = StoredMeta> {
    let expires = prop_oneof![
        Just(DateField::Absent),
        Just(DateField::Invalid),
        time().prop_map(DateField::Valid),
    ];
    let etag = proptest::option::of(
        (any::<bool>(), value()).prop_map(|(weak, opaque)| EntityTag { weak, opaque }),
    );
    (
        (status(), directives(), time(), time(), time()),
        (duration(), expires, proptest::option::of(time()), etag),
        (vary(), duration(), any::<bool>(), duration()),
    )
        .prop_map(
            |(
                (status, directives, request_time, response_time, date),
                (age_value, expires, last_modified, etag),
                (vary, lifetime, heuristic, initial_age),
            )| StoredMeta {
                status,
                directives,
                times: ExchangeTimes {
                    request_time,
                    response_time,
                },
                date,
                age_value,
                expires,
                last_modified,
                etag,
                vary,
                lifetime: Lifetime {
                    duration: lifetime,
                    heuristic,
                },
                initial_age,
            },
        )
}

fn stored_entry() -> impl Strategy<Value = Entry> {
    let fields = proptest::collection::vec((name(), value()), 0..6).prop_map(|lines| {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(name, HeaderValue::from_maybe_shared(value).unwrap());
        }
        map
    });
    (
        stored_meta(),
        status(),
        fields,
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec("\\PC{0,10}", 0..4),
        "\\PC{0,40}",
    )
        .prop_map(|(meta, status, headers, body, keys, url)| Entry {
            meta,
            status,
            headers,
            body: Bytes::from(body),
            surrogate_keys: keys.into_iter().map(String::into_boxed_str).collect(),
            url: url.into_boxed_str(),
        })
}

proptest! {
    #[test]
    fn encoded_entry_decodes_to_an_equal_entry(entry in stored_entry()) {
        prop_assert_eq!(decode(&encode(&entry).unwrap()), Ok(entry));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn corrupted_entry_never_panics(
        entry in stored_entry(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode(&entry).unwrap();
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = decode(&bytes);
    }
}

#[test]
fn empty_input_is_refused() {
    assert_eq!(decode(&[]), Err(CodecError::Empty));
}

/// Version 1 was a hand-written layout: an entry stored by an older instance is a miss.
#[test]
fn unknown_version_is_refused() {
    let key = key("/a");
    let mut bytes = encode(&entry(&key, b"x", &[])).unwrap();
    bytes[0] = VERSION + 1;
    assert_eq!(decode(&bytes), Err(CodecError::Version(VERSION + 1)));
}

#[test]
fn truncated_entry_is_an_error() {
    let key = key("/a");
    let bytes = encode(&entry(&key, b"body", &["tag"])).unwrap();
    for len in 0..bytes.len() {
        assert!(
            decode(&bytes[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let key = key("/a");
    let mut bytes = encode(&entry(&key, b"body", &[])).unwrap();
    bytes.push(0);
    assert_eq!(decode(&bytes), Err(CodecError::Trailing(1)));
}

#[test]
fn an_invalid_field_name_is_refused() {
    let key = key("/a");
    let mut bytes = encode(&entry(&key, b"x", &[])).unwrap();
    let at = bytes
        .windows(b"cache-control".len())
        .position(|w| w == b"cache-control")
        .unwrap();
    bytes[at] = b' ';
    assert_eq!(decode(&bytes), Err(CodecError::Invalid("field name")));
}

/// The format stays compact: a small entry costs little beyond its own bytes.
#[test]
fn small_entry_encodes_compactly() {
    let key = key("/a");
    let stored = entry(&key, b"body", &[]);
    let content: usize = stored
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum::<usize>()
        + stored.body.len()
        + stored.url.len();
    let encoded = encode(&stored).unwrap();
    assert!(
        encoded.len() <= content + 64,
        "{} bytes for {content} bytes of content",
        encoded.len()
    );
}

#[test]
fn decoded_entry_is_served_from_the_store() {
    let key = key("/a");
    let bytes = encode(&entry(&key, b"shared", &[])).unwrap();
    let store = CacheStore::new(settings(1 << 20));
    assert_eq!(
        store.insert(&key.digest, decode(&bytes).unwrap()),
        Admission::Stored
    );
    assert_eq!(
        hit_body(&store, &key, &HeaderMap::new()),
        Some(Bytes::from_static(b"shared"))
    );
}
