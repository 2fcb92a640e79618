use super::*;
use crate::cache::freshness::{ExchangeTimes, HeuristicPolicy};
use http::header::{CONTENT_TYPE, IF_MATCH};
use proptest::prelude::*;
use std::time::UNIX_EPOCH;

/// 2023-11-14T22:13:20Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn meta_with(status: u16, response: &[(&'static str, &'static str)]) -> StoredMeta {
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: t0(),
    };
    StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::from_u16(status).unwrap(),
        &map(response),
        times,
        &HeuristicPolicy::default(),
    )
}

fn meta(response: &[(&'static str, &'static str)]) -> StoredMeta {
    meta_with(200, response)
}

fn eval(request: &[(&'static str, &'static str)], stored: &StoredMeta) -> ClientConditional {
    evaluate_client_conditional(&Method::GET, &map(request), stored, t0())
}

const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const BEFORE_LM: &str = "Sat, 05 Nov 1994 08:49:37 GMT";
const AFTER_LM: &str = "Mon, 07 Nov 1994 08:49:37 GMT";

// --- entity tags ---

#[test]
fn strong_and_weak_tags_parse() {
    let strong = EntityTag::parse(b"\"xyzzy\"").unwrap();
    let weak = EntityTag::parse(b" W/\"xyzzy\" ").unwrap();
    assert!(!strong.weak && weak.weak);
    assert_eq!(strong.opaque, weak.opaque);
}

#[test]
fn malformed_tags_are_rejected() {
    for value in [
        &b"xyzzy"[..],
        b"\"a",
        b"w/\"a\"",
        b"\"a\" x",
        b"\"a b\"",
        b"",
    ] {
        assert_eq!(EntityTag::parse(value), None, "{value:?}");
    }
}

#[test]
fn weak_comparison_ignores_weakness_and_strong_does_not() {
    let strong = EntityTag::parse(b"\"1\"").unwrap();
    let weak = EntityTag::parse(b"W/\"1\"").unwrap();
    assert!(strong.weak_eq(&weak));
    assert!(!strong.strong_eq(&weak));
    assert!(!weak.strong_eq(&weak));
    assert!(strong.strong_eq(&strong.clone()));
}

#[test]
fn tag_list_reads_every_line_and_commas_inside_tags() {
    let list = tag_list(
        &map(&[
            ("if-none-match", "\"a,b\", W/\"c\""),
            ("if-none-match", "\"d\""),
        ]),
        &IF_NONE_MATCH,
    );
    let Some(TagList::Tags(tags)) = list else {
        panic!("expected tags")
    };
    let opaque: Vec<&[u8]> = tags.iter().map(|t| t.opaque.as_ref()).collect();
    assert_eq!(opaque, [&b"a,b"[..], b"c", b"d"]);
}

#[test]
fn star_is_only_valid_alone() {
    assert_eq!(
        tag_list(&map(&[("if-none-match", "*")]), &IF_NONE_MATCH),
        Some(TagList::Any)
    );
    assert_eq!(
        tag_list(&map(&[("if-none-match", "*, \"a\"")]), &IF_NONE_MATCH),
        None
    );
}

// --- answering the client (RFC 9110 §13.2.2) ---

#[test]
fn if_none_match_with_the_stored_tag_gives_304() {
    let stored = meta(&[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "\"v0\", \"v1\"")], &stored),
        ClientConditional::NotModified
    );
}

#[test]
fn if_none_match_uses_weak_comparison() {
    let stored = meta(&[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "W/\"v1\"")], &stored),
        ClientConditional::NotModified
    );
    let weak_stored = meta(&[("etag", "W/\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "\"v1\"")], &weak_stored),
        ClientConditional::NotModified
    );
}

#[test]
fn if_none_match_with_other_tags_gives_the_full_response() {
    let stored = meta(&[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "\"v2\"")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn if_none_match_star_matches_any_stored_response() {
    let stored = meta(&[]);
    assert_eq!(
        eval(&[("if-none-match", "*")], &stored),
        ClientConditional::NotModified
    );
}

#[test]
fn if_none_match_without_a_stored_tag_gives_the_full_response() {
    let stored = meta(&[("last-modified", LM)]);
    assert_eq!(
        eval(&[("if-none-match", "\"v1\"")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn malformed_if_none_match_gives_the_full_response() {
    let stored = meta(&[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "v1")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let stored = meta(&[("etag", "\"v1\""), ("last-modified", LM)]);
    let request = [("if-none-match", "\"v2\""), ("if-modified-since", AFTER_LM)];
    assert_eq!(eval(&request, &stored), ClientConditional::Full);
}

#[test]
fn if_modified_since_at_or_after_last_modified_gives_304() {
    let stored = meta(&[("last-modified", LM)]);
    assert_eq!(
        eval(&[("if-modified-since", LM)], &stored),
        ClientConditional::NotModified
    );
    assert_eq!(
        eval(&[("if-modified-since", AFTER_LM)], &stored),
        ClientConditional::NotModified
    );
}

#[test]
fn if_modified_since_before_last_modified_gives_the_full_response() {
    let stored = meta(&[("last-modified", LM)]);
    assert_eq!(
        eval(&[("if-modified-since", BEFORE_LM)], &stored),
        ClientConditional::Full
    );
}

#[test]
fn invalid_if_modified_since_is_ignored() {
    let stored = meta(&[("last-modified", LM)]);
    assert_eq!(
        eval(&[("if-modified-since", "yesterday")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn if_modified_since_with_several_lines_is_ignored() {
    let stored = meta(&[("last-modified", LM)]);
    let request = [
        ("if-modified-since", AFTER_LM),
        ("if-modified-since", AFTER_LM),
    ];
    assert_eq!(eval(&request, &stored), ClientConditional::Full);
}

#[test]
fn if_modified_since_without_last_modified_compares_with_date() {
    let stored = meta(&[("date", LM)]);
    assert_eq!(
        eval(&[("if-modified-since", AFTER_LM)], &stored),
        ClientConditional::NotModified
    );
    assert_eq!(
        eval(&[("if-modified-since", BEFORE_LM)], &stored),
        ClientConditional::Full
    );
}

#[test]
fn conditionals_are_ignored_for_other_methods() {
    let stored = meta(&[("etag", "\"v1\"")]);
    let request = map(&[("if-none-match", "\"v1\"")]);
    let got = evaluate_client_conditional(&Method::POST, &request, &stored, t0());
    assert_eq!(got, ClientConditional::Full);
}

#[test]
fn head_is_answered_like_get() {
    let stored = meta(&[("etag", "\"v1\"")]);
    let request = map(&[("if-none-match", "\"v1\"")]);
    let got = evaluate_client_conditional(&Method::HEAD, &request, &stored, t0());
    assert_eq!(got, ClientConditional::NotModified);
}

#[test]
fn conditionals_are_ignored_for_stored_non_200_responses() {
    let stored = meta_with(404, &[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-none-match", "\"v1\"")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn if_match_is_left_to_the_origin() {
    let stored = meta(&[("etag", "\"v1\"")]);
    assert_eq!(
        eval(&[("if-match", "\"other\"")], &stored),
        ClientConditional::Full
    );
}

#[test]
fn not_modified_carries_the_fields_a_200_would_and_age() {
    let stored = map(&[
        ("cache-control", "max-age=60"),
        ("content-location", "/a.json"),
        ("date", LM),
        ("etag", "\"v1\""),
        ("expires", AFTER_LM),
        ("vary", "accept"),
        ("last-modified", BEFORE_LM),
        ("content-type", "application/json"),
        ("content-length", "10"),
        ("set-cookie", "a=1"),
    ]);
    let headers = not_modified_headers(&stored, Duration::from_secs(7));
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "age",
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "vary"
        ]
    );
    assert_eq!(headers.get(AGE).unwrap(), "7");
}

#[test]
fn not_modified_carries_last_modified_when_there_is_no_etag() {
    let headers = not_modified_headers(&map(&[("last-modified", LM)]), Duration::ZERO);
    assert_eq!(headers.get(LAST_MODIFIED).unwrap(), LM);
}

// --- validation request (RFC 9111 §4.3.1) ---

#[test]
fn validation_request_uses_the_stored_validators_instead_of_the_client_ones() {
    let stored = meta(&[("etag", "W/\"v1\""), ("last-modified", LM)]);
    let mut request = map(&[
        ("if-none-match", "\"client\""),
        ("if-modified-since", AFTER_LM),
        ("if-match", "\"x\""),
        ("accept", "*/*"),
    ]);
    assert!(prepare_validation(&mut request, &[&stored]));
    assert_eq!(request.get(IF_NONE_MATCH).unwrap(), "W/\"v1\"");
    assert_eq!(request.get(IF_MODIFIED_SINCE).unwrap(), LM);
    assert_eq!(request.get(IF_MATCH).unwrap(), "\"x\"");
    assert_eq!(request.get("accept").unwrap(), "*/*");
}

#[test]
fn validating_several_responses_sends_all_tags_and_no_date() {
    let a = meta(&[("etag", "\"a\""), ("last-modified", LM)]);
    let b = meta(&[("etag", "\"b\"")]);
    let mut request = HeaderMap::new();
    assert!(prepare_validation(&mut request, &[&a, &b]));
    assert_eq!(request.get(IF_NONE_MATCH).unwrap(), "\"a\", \"b\"");
    assert!(!request.contains_key(IF_MODIFIED_SINCE));
}

#[test]
fn validation_without_stored_validators_is_a_plain_request() {
    let stored = meta(&[("cache-control", "max-age=5")]);
    let mut request = map(&[("if-none-match", "\"client\"")]);
    assert!(!prepare_validation(&mut request, &[&stored]));
    assert!(!request.contains_key(IF_NONE_MATCH));
}

// --- applying a 304 (RFC 9111 §4.3.4, §3.2) ---

#[test]
fn strong_tag_selects_every_response_with_that_tag() {
    let a = meta(&[("etag", "\"v1\"")]);
    let b = meta(&[("etag", "\"v2\"")]);
    let c = meta(&[("etag", "\"v1\"")]);
    let got = select_for_update(&[&a, &b, &c], &map(&[("etag", "\"v1\"")]), t0());
    assert_eq!(got, [0, 2]);
}

#[test]
fn strong_tag_matching_nothing_updates_nothing() {
    let a = meta(&[("etag", "\"v1\""), ("last-modified", LM)]);
    let got = select_for_update(
        &[&a],
        &map(&[("etag", "\"v9\""), ("last-modified", LM)]),
        t0(),
    );
    assert!(got.is_empty());
}

#[test]
fn strong_tag_does_not_select_a_weak_stored_tag() {
    let a = meta(&[("etag", "W/\"v1\"")]);
    assert!(select_for_update(&[&a], &map(&[("etag", "\"v1\"")]), t0()).is_empty());
}

#[test]
fn weak_tag_selects_the_most_recent_match() {
    let older = meta(&[("etag", "W/\"v1\""), ("date", BEFORE_LM)]);
    let newer = meta(&[("etag", "W/\"v1\""), ("date", AFTER_LM)]);
    let got = select_for_update(&[&older, &newer], &map(&[("etag", "W/\"v1\"")]), t0());
    assert_eq!(got, [1]);
}

#[test]
fn last_modified_selects_the_most_recent_match() {
    let a = meta(&[("last-modified", LM), ("date", AFTER_LM)]);
    let b = meta(&[("last-modified", BEFORE_LM)]);
    let got = select_for_update(&[&a, &b], &map(&[("last-modified", LM)]), t0());
    assert_eq!(got, [0]);
}

#[test]
fn validator_less_304_updates_a_single_validator_less_response() {
    let a = meta(&[("cache-control", "max-age=5")]);
    assert_eq!(select_for_update(&[&a], &HeaderMap::new(), t0()), [0]);
    let b = meta(&[("cache-control", "max-age=5")]);
    assert!(select_for_update(&[&a, &b], &HeaderMap::new(), t0()).is_empty());
    let tagged = meta(&[("etag", "\"v1\"")]);
    assert!(select_for_update(&[&tagged], &HeaderMap::new(), t0()).is_empty());
}

#[test]
fn malformed_etag_in_a_304_updates_nothing() {
    let a = meta(&[("cache-control", "max-age=5")]);
    assert!(select_for_update(&[&a], &map(&[("etag", "v1")]), t0()).is_empty());
}

#[test]
fn merge_replaces_fields_but_keeps_content_length() {
    let mut stored = map(&[
        ("content-length", "1234"),
        ("content-type", "text/plain"),
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("x-old", "1"),
    ]);
    let not_modified = map(&[
        ("content-length", "0"),
        ("cache-control", "max-age=600"),
        ("etag", "\"v1\""),
        ("x-new", "2"),
        ("date", LM),
    ]);
    merge_not_modified(&mut stored, &not_modified, t0());
    assert_eq!(stored.get(CONTENT_LENGTH).unwrap(), "1234");
    assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=600");
    assert_eq!(stored.get(CONTENT_TYPE).unwrap(), "text/plain");
    assert_eq!(stored.get("x-old").unwrap(), "1");
    assert_eq!(stored.get("x-new").unwrap(), "2");
    assert_eq!(stored.get(DATE).unwrap(), LM);
}

#[test]
fn merge_keeps_the_fields_that_describe_the_stored_body() {
    let mut stored = map(&[
        ("etag", "\"a\""),
        ("content-encoding", "gzip"),
        ("content-md5", "rL0Y20zC+Fzt72VPzMSk2A=="),
    ]);
    let not_modified = map(&[
        ("etag", "\"b\""),
        ("content-encoding", "br"),
        ("content-md5", "N7UdGUp1E+RbVvZSTy1R8g=="),
    ]);
    merge_not_modified(&mut stored, &not_modified, t0());
    assert_eq!(stored.get(ETAG).unwrap(), "\"a\"");
    assert_eq!(stored.get("content-encoding").unwrap(), "gzip");
    assert_eq!(
        stored.get("content-md5").unwrap(),
        "rL0Y20zC+Fzt72VPzMSk2A=="
    );
}

#[test]
fn merge_skips_hop_by_hop_fields() {
    let mut stored = map(&[("etag", "\"v1\"")]);
    let not_modified = map(&[
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
    ]);
    merge_not_modified(&mut stored, &not_modified, t0());
    assert!(!stored.contains_key("x-hop"));
    assert!(!stored.contains_key("keep-alive"));
    assert!(!stored.contains_key("connection"));
}

#[test]
fn merge_replaces_every_line_of_a_repeated_field() {
    let mut stored = map(&[("link", "</a>"), ("link", "</b>")]);
    merge_not_modified(&mut stored, &map(&[("link", "</c>")]), t0());
    let links: Vec<_> = stored.get_all("link").iter().collect();
    assert_eq!(links, ["</c>"]);
}

#[test]
fn merge_drops_an_old_age_and_dates_a_dateless_304() {
    let mut stored = map(&[("age", "100"), ("date", BEFORE_LM)]);
    merge_not_modified(&mut stored, &map(&[("etag", "\"v1\"")]), t0());
    assert!(!stored.contains_key(AGE));
    assert_eq!(stored.get(DATE).unwrap(), "Tue, 14 Nov 2023 22:13:20 GMT");
}

#[test]
fn merge_strips_fields_the_new_cache_control_makes_private() {
    let mut stored = map(&[("x-user", "alice")]);
    let not_modified = map(&[
        ("cache-control", "private=\"x-user\", max-age=60"),
        ("x-user", "bob"),
    ]);
    merge_not_modified(&mut stored, &not_modified, t0());
    assert!(!stored.contains_key("x-user"));
}

// --- failed validation (RFC 9111 §4.3.3) ---

#[test]
fn failed_validation_table() {
    let status = |code| ValidationFailure::Status(StatusCode::from_u16(code).unwrap());
    let rows = [
        (OnError::ServeStored, status(500), Fallback::ServeStored),
        (OnError::ServeStored, status(502), Fallback::ServeStored),
        (OnError::ServeStored, status(503), Fallback::ServeStored),
        (OnError::ServeStored, status(504), Fallback::ServeStored),
        (OnError::ServeStored, status(501), Fallback::Forward),
        (OnError::ServeStored, status(404), Fallback::Forward),
        (
            OnError::ServeStored,
            ValidationFailure::Unreachable,
            Fallback::ServeStored,
        ),
        (OnError::ForwardError, status(503), Fallback::Forward),
        (
            OnError::ForwardError,
            ValidationFailure::Unreachable,
            Fallback::UpstreamError,
        ),
        (OnError::GatewayTimeout, status(503), Fallback::Forward),
        (
            OnError::GatewayTimeout,
            ValidationFailure::Unreachable,
            Fallback::GatewayTimeout,
        ),
    ];
    for (on_error, failure, expected) in rows {
        assert_eq!(
            after_failed_validation(on_error, failure),
            expected,
            "{on_error:?} {failure:?}"
        );
    }
}

// --- HEAD (RFC 9111 §4.3.5) ---

#[test]
fn head_with_the_same_validators_and_length_updates() {
    let stored = map(&[("etag", "\"v1\""), ("content-length", "10")]);
    let head = map(&[
        ("etag", "\"v1\""),
        ("content-length", "10"),
        ("cache-control", "max-age=9"),
    ]);
    assert_eq!(head_update(&stored, &head), HeadUpdate::Update);
}

#[test]
fn head_with_another_length_marks_stale() {
    let stored = map(&[("etag", "\"v1\""), ("content-length", "10")]);
    let head = map(&[("etag", "\"v1\""), ("content-length", "11")]);
    assert_eq!(head_update(&stored, &head), HeadUpdate::MarkStale);
}

#[test]
fn head_with_another_validator_marks_stale() {
    let stored = map(&[("etag", "\"v1\""), ("last-modified", LM)]);
    assert_eq!(
        head_update(&stored, &map(&[("etag", "\"v2\"")])),
        HeadUpdate::MarkStale
    );
    assert_eq!(
        head_update(&stored, &map(&[("last-modified", AFTER_LM)])),
        HeadUpdate::MarkStale
    );
}

#[test]
fn head_without_validators_marks_stale() {
    let stored = map(&[("etag", "\"v1\"")]);
    assert_eq!(
        head_update(&stored, &map(&[("content-length", "0")])),
        HeadUpdate::MarkStale
    );
}

proptest! {
    #[test]
    fn conditional_parsers_never_panic(
        inm in proptest::collection::vec(any::<u8>(), 0..40),
        ims in proptest::collection::vec(any::<u8>(), 0..40),
        etag in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let _ = EntityTag::parse(&etag);
        let mut request = HeaderMap::new();
        let mut response = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&inm) {
            request.insert(IF_NONE_MATCH, value);
        }
        if let Ok(value) = HeaderValue::from_bytes(&ims) {
            request.insert(IF_MODIFIED_SINCE, value);
        }
        if let Ok(value) = HeaderValue::from_bytes(&etag) {
            response.insert(ETAG, value);
        }
        let stored = StoredMeta::new(
            &HeaderMap::new(),
            StatusCode::OK,
            &response,
            ExchangeTimes { request_time: t0(), response_time: t0() },
            &HeuristicPolicy::default(),
        );
        let _ = evaluate_client_conditional(&Method::GET, &request, &stored, t0());
        let _ = select_for_update(&[&stored], &response, t0());
        let mut upstream = request.clone();
        let _ = prepare_validation(&mut upstream, &[&stored]);
    }
}
