use super::*;
use http::header::HeaderValue;
use proptest::prelude::*;

fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn response(value: &'static str) -> ResponseDirectives {
    ResponseDirectives::parse(&headers(&[("cache-control", value)]))
}

fn request(value: &'static str) -> RequestDirectives {
    RequestDirectives::parse(&headers(&[("cache-control", value)]))
}

#[test]
fn directive_names_are_case_insensitive() {
    let cc = response("Max-Age=60, PUBLIC, Must-Revalidate");
    assert_eq!(cc.max_age, Some(60));
    assert!(cc.public);
    assert!(cc.must_revalidate);
}

#[test]
fn directives_are_read_from_every_field_line() {
    let cc = ResponseDirectives::parse(&headers(&[
        ("cache-control", "public"),
        ("cache-control", "s-maxage=30"),
    ]));
    assert!(cc.public);
    assert_eq!(cc.s_maxage, Some(30));
}

#[test]
fn quoted_delta_seconds_are_accepted() {
    assert_eq!(response("max-age=\"15\"").max_age, Some(15));
}

#[test]
fn whitespace_and_empty_list_elements_are_tolerated() {
    let cc = response(" , max-age=5 ,, no-store , ");
    assert_eq!(cc.max_age, Some(5));
    assert!(cc.no_store);
}

#[test]
fn invalid_response_max_age_makes_the_response_stale() {
    assert_eq!(response("max-age=soon").max_age, Some(0));
    assert_eq!(response("max-age=-1").max_age, Some(0));
    assert_eq!(response("max-age").max_age, Some(0));
}

#[test]
fn conflicting_response_max_age_makes_the_response_stale() {
    assert_eq!(response("max-age=60, max-age=120").max_age, Some(0));
}

#[test]
fn identical_repeated_max_age_is_one_value() {
    assert_eq!(response("max-age=60, max-age=60").max_age, Some(60));
}

#[test]
fn conflicting_s_maxage_makes_the_response_stale() {
    assert_eq!(response("s-maxage=10, s-maxage=20").s_maxage, Some(0));
}

#[test]
fn delta_seconds_saturate_at_two_to_the_31() {
    assert_eq!(
        response("max-age=99999999999999999999").max_age,
        Some(DELTA_SECONDS_MAX)
    );
    assert_eq!(parse_delta_seconds(b"2147483647"), Some(2_147_483_647));
    assert_eq!(parse_delta_seconds(b"2147483648"), Some(DELTA_SECONDS_MAX));
}

#[test]
fn unknown_directives_are_ignored() {
    let cc = response("community=\"UCI\", foo=\"a,b\", max-age=7, x-y");
    assert_eq!(cc.max_age, Some(7));
    assert_eq!(
        cc,
        ResponseDirectives {
            max_age: Some(7),
            ..Default::default()
        }
    );
}

#[test]
fn commas_inside_quoted_arguments_do_not_split_directives() {
    let cc = response("private=\"x-a, x-b\", max-age=3");
    assert_eq!(cc.private.field_names(), ["x-a", "x-b"]);
    assert_eq!(cc.max_age, Some(3));
}

#[test]
fn unqualified_no_cache_covers_the_whole_response() {
    assert_eq!(response("no-cache").no_cache, FieldScope::Whole);
}

#[test]
fn qualified_no_cache_lists_field_names_case_insensitively() {
    let cc = response("no-cache=\"Set-Cookie, X-Session\"");
    assert_eq!(cc.no_cache.field_names(), ["set-cookie", "x-session"]);
}

#[test]
fn token_form_private_names_one_field() {
    assert_eq!(
        response("private=set-cookie").private.field_names(),
        ["set-cookie"]
    );
}

#[test]
fn unqualified_private_wins_over_a_field_list() {
    assert_eq!(
        response("private=\"x-a\", private").private,
        FieldScope::Whole
    );
    assert_eq!(
        response("private, private=\"x-a\"").private,
        FieldScope::Whole
    );
}

#[test]
fn repeated_field_lists_add_up() {
    let cc = response("no-cache=\"x-a\", no-cache=\"x-b, x-a\"");
    assert_eq!(cc.no_cache.field_names(), ["x-a", "x-b"]);
}

#[test]
fn empty_or_malformed_field_list_counts_as_unqualified() {
    assert_eq!(response("private=\"\"").private, FieldScope::Whole);
    assert_eq!(
        response("no-cache=\"bad name\"").no_cache,
        FieldScope::Whole
    );
    assert_eq!(response("no-cache=\"x-a").no_cache, FieldScope::Whole);
}

#[test]
fn escaped_quotes_in_arguments_are_unescaped() {
    let cc = response("private=\"x-\\a\"");
    assert_eq!(cc.private.field_names(), ["x-a"]);
}

#[test]
fn all_response_flags_are_recognised() {
    let cc = response(
        "no-store, public, must-revalidate, proxy-revalidate, must-understand, \
         no-transform, immutable, stale-while-revalidate=30, stale-if-error=600",
    );
    assert!(cc.no_store && cc.public && cc.must_revalidate && cc.proxy_revalidate);
    assert!(cc.must_understand && cc.no_transform && cc.immutable);
    assert_eq!(cc.stale_while_revalidate, Some(30));
    assert_eq!(cc.stale_if_error, Some(600));
}

#[test]
fn invalid_stale_while_revalidate_grants_nothing() {
    assert_eq!(
        response("stale-while-revalidate=abc").stale_while_revalidate,
        None
    );
    assert_eq!(
        response("stale-while-revalidate").stale_while_revalidate,
        None
    );
}

#[test]
fn repeated_stale_if_error_grants_the_smallest_window() {
    assert_eq!(
        response("stale-if-error=60, stale-if-error=5").stale_if_error,
        Some(5)
    );
}

#[test]
fn s_maxage_implies_no_stale_serving() {
    assert!(response("s-maxage=10").forbids_stale());
    assert!(response("proxy-revalidate").forbids_stale());
    assert!(!response("max-age=10").forbids_stale());
    assert!(!response("no-cache=\"x-a\"").forbids_stale());
}

#[test]
fn max_stale_without_value_accepts_any_staleness() {
    assert_eq!(request("max-stale").max_stale, Some(MaxStale::Any));
}

#[test]
fn max_stale_with_value_bounds_staleness() {
    assert_eq!(
        request("max-stale=30").max_stale,
        Some(MaxStale::Within(30))
    );
}

#[test]
fn repeated_max_stale_keeps_the_tighter_bound() {
    assert_eq!(
        request("max-stale, max-stale=9").max_stale,
        Some(MaxStale::Within(9))
    );
    assert_eq!(
        request("max-stale=9, max-stale").max_stale,
        Some(MaxStale::Within(9))
    );
}

#[test]
fn invalid_max_stale_grants_nothing() {
    assert_eq!(request("max-stale=lots").max_stale, None);
}

#[test]
fn invalid_request_max_age_asks_for_revalidation() {
    assert_eq!(request("max-age=x").max_age, Some(0));
}

#[test]
fn repeated_request_max_age_keeps_the_smallest() {
    assert_eq!(request("max-age=50, max-age=20").max_age, Some(20));
}

#[test]
fn invalid_min_fresh_is_never_satisfied() {
    assert_eq!(request("min-fresh=x").min_fresh, Some(DELTA_SECONDS_MAX));
    assert_eq!(request("min-fresh=5, min-fresh=50").min_fresh, Some(50));
}

#[test]
fn all_request_flags_are_recognised() {
    let cc = request("no-cache, no-store, no-transform, only-if-cached, stale-if-error=9");
    assert!(cc.no_cache && cc.no_store && cc.no_transform && cc.only_if_cached);
    assert_eq!(cc.stale_if_error, Some(9));
}

#[test]
fn pragma_no_cache_applies_without_cache_control() {
    let cc = RequestDirectives::parse(&headers(&[("pragma", "No-Cache")]));
    assert!(cc.no_cache);
}

#[test]
fn pragma_is_ignored_when_cache_control_is_present() {
    let cc = RequestDirectives::parse(&headers(&[
        ("pragma", "no-cache"),
        ("cache-control", "max-stale"),
    ]));
    assert!(!cc.no_cache);
    assert_eq!(cc.max_stale, Some(MaxStale::Any));
}

#[test]
fn pragma_with_other_values_is_not_no_cache() {
    let cc = RequestDirectives::parse(&headers(&[("pragma", "x-no-cache-please")]));
    assert!(!cc.no_cache);
}

proptest! {
    #[test]
    fn parsers_never_panic(lines in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..60), 0..4)
    ) {
        let mut map = HeaderMap::new();
        for line in lines {
            if let Ok(value) = HeaderValue::from_bytes(&line) {
                map.append(CACHE_CONTROL, value.clone());
                map.append(PRAGMA, value);
            }
        }
        let _ = ResponseDirectives::parse(&map);
        let _ = RequestDirectives::parse(&map);
    }
}

fn targeted(lines: &[(&'static str, &'static str)]) -> ResponseDirectives {
    ResponseDirectives::parse(&headers(lines))
}

#[test]
fn a_targeted_field_takes_precedence_over_cache_control() {
    let d = targeted(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=600"),
    ]);
    assert!(!d.no_store && d.targeted);
    assert_eq!(d.max_age, Some(600));
    let d = targeted(&[
        ("cache-control", "max-age=600"),
        ("cdn-cache-control", "private"),
        ("ferrogate-cache-control", "max-age=5, must-revalidate"),
    ]);
    assert_eq!(d.max_age, Some(5), "the gateway's own field comes first");
    assert!(d.must_revalidate && d.private == FieldScope::Absent);
    let d = targeted(&[("surrogate-control", "max-age=60;edge")]);
    assert_eq!(d.max_age, Some(60));
}

#[test]
fn an_invalid_targeted_field_is_ignored() {
    let d = targeted(&[
        ("cache-control", "max-age=30"),
        ("cdn-cache-control", "Max-Age=600"),
    ]);
    assert!(!d.targeted);
    assert_eq!(d.max_age, Some(30));
    let d = targeted(&[("cache-control", "max-age=30"), ("cdn-cache-control", "")]);
    assert_eq!(d.max_age, Some(30));
}
