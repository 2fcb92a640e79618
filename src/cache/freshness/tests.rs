use super::*;
use crate::cache::date::http_date_value;
use http::header::{HeaderName, CACHE_CONTROL};
use std::time::UNIX_EPOCH;

/// An arbitrary fixed instant (2023-11-14T22:13:20Z).
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn at(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t0() + magnitude
    } else {
        t0() - magnitude
    }
}

fn date(secs: i64) -> HeaderValue {
    http_date_value(at(secs))
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A response received instantly at t0 with `Date: t0` plus `lines`.
fn stored(status: u16, lines: &[(HeaderName, HeaderValue)]) -> StoredMeta {
    let mut response = HeaderMap::new();
    response.insert(DATE, date(0));
    for (name, value) in lines {
        response.append(name.clone(), value.clone());
    }
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: t0(),
    };
    let status = StatusCode::from_u16(status).unwrap();
    StoredMeta::new(
        &HeaderMap::new(),
        status,
        &response,
        times,
        &HeuristicPolicy::default(),
    )
}

fn cc(value: &'static str) -> (HeaderName, HeaderValue) {
    (CACHE_CONTROL, HeaderValue::from_static(value))
}

fn request(value: &'static str) -> RequestDirectives {
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
    RequestDirectives::parse(&headers)
}

fn no_request() -> RequestDirectives {
    RequestDirectives::default()
}

// --- age (RFC 9111 §4.2.3) ---

#[test]
fn age_of_an_immediate_response_is_its_resident_time() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert_eq!(meta.current_age(at(10)), s(10));
}

#[test]
fn slow_response_adds_its_delay_to_the_received_age() {
    // Sent at t0, answered at t0+5 by a cache that says the response is 10 s old.
    let mut response = HeaderMap::new();
    response.insert(DATE, date(5));
    response.insert(AGE, HeaderValue::from_static("10"));
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: at(5),
    };
    let meta = StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.initial_age, s(15));
    assert_eq!(meta.current_age(at(5)), s(15));
    assert_eq!(meta.current_age(at(25)), s(35));
}

#[test]
fn apparent_age_wins_when_the_date_is_older() {
    let mut response = HeaderMap::new();
    response.insert(DATE, date(-100));
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: at(2),
    };
    let meta = StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.initial_age, s(102));
}

#[test]
fn missing_date_means_the_response_time() {
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: at(3),
    };
    let meta = StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::OK,
        &HeaderMap::new(),
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.date, at(3));
    // Only the response delay counts: nothing says the origin's copy was older.
    assert_eq!(meta.initial_age, s(3));
}

#[test]
fn date_in_the_future_gives_no_negative_age() {
    let mut response = HeaderMap::new();
    response.insert(DATE, date(500));
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: t0(),
    };
    let meta = StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.initial_age, Duration::ZERO);
}

#[test]
fn an_invalid_age_makes_the_response_stale() {
    for bad in ["ten", "-7200", "7200.0", "7200;foo=1", ""] {
        let meta = stored(200, &[(AGE, HeaderValue::from_static(bad))]);
        assert_eq!(meta.age_value, s(u64::from(DELTA_SECONDS_MAX)), "{bad:?}");
    }
}

#[test]
fn an_age_with_several_values_is_read_as_its_first() {
    let meta = stored(200, &[(AGE, HeaderValue::from_static("0,7200"))]);
    assert_eq!(meta.age_value, Duration::ZERO);
    let meta = stored(200, &[(AGE, HeaderValue::from_static("7200, 0"))]);
    assert_eq!(meta.age_value, s(7200));
    let two_lines = [
        (AGE, HeaderValue::from_static("30")),
        (AGE, HeaderValue::from_static("7200")),
    ];
    assert_eq!(stored(200, &two_lines).age_value, s(30));
}

#[test]
fn huge_age_header_saturates() {
    let meta = stored(200, &[(AGE, HeaderValue::from_static("99999999999999"))]);
    assert_eq!(meta.age_value, s(u64::from(DELTA_SECONDS_MAX)));
}

#[test]
fn clock_going_backwards_adds_no_resident_time() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert_eq!(meta.current_age(at(-30)), Duration::ZERO);
}

#[test]
fn age_header_value_is_whole_seconds_capped_at_two_to_the_31() {
    assert_eq!(age_header_value(Duration::from_millis(4_900)), "4");
    assert_eq!(age_header_value(s(u64::MAX)), "2147483648");
}

// --- lifetime (RFC 9111 §4.2.1, §4.2.2) ---

#[test]
fn s_maxage_beats_max_age() {
    let meta = stored(200, &[cc("max-age=10, s-maxage=100")]);
    assert_eq!(
        meta.lifetime,
        Lifetime {
            duration: s(100),
            heuristic: false
        }
    );
}

#[test]
fn max_age_beats_expires() {
    let meta = stored(200, &[cc("max-age=10"), (EXPIRES, date(1000))]);
    assert_eq!(meta.lifetime.duration, s(10));
}

#[test]
fn expires_counts_from_date() {
    let meta = stored(200, &[(EXPIRES, date(60))]);
    assert_eq!(meta.lifetime.duration, s(60));
}

#[test]
fn expires_without_date_counts_from_the_response_time() {
    let mut response = HeaderMap::new();
    response.insert(EXPIRES, date(60));
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: at(20),
    };
    let meta = StoredMeta::new(
        &HeaderMap::new(),
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.lifetime.duration, s(40));
}

#[test]
fn expires_in_the_past_is_stale() {
    let meta = stored(200, &[(EXPIRES, date(-60))]);
    assert_eq!(meta.lifetime.duration, Duration::ZERO);
}

#[test]
fn invalid_expires_is_already_stale_and_blocks_heuristics() {
    let meta = stored(
        200,
        &[
            (EXPIRES, HeaderValue::from_static("0")),
            (LAST_MODIFIED, date(-100_000)),
        ],
    );
    assert_eq!(
        meta.lifetime,
        Lifetime {
            duration: Duration::ZERO,
            heuristic: false
        }
    );
}

#[test]
fn heuristic_is_a_tenth_of_the_time_since_last_modified() {
    let meta = stored(200, &[(LAST_MODIFIED, date(-1000))]);
    assert_eq!(
        meta.lifetime,
        Lifetime {
            duration: s(100),
            heuristic: true
        }
    );
}

#[test]
fn heuristic_is_capped() {
    let meta = stored(200, &[(LAST_MODIFIED, date(-100 * 24 * 3600))]);
    assert_eq!(meta.lifetime.duration, HeuristicPolicy::default().max);
}

#[test]
fn heuristic_needs_last_modified() {
    let meta = stored(200, &[]);
    assert_eq!(meta.lifetime.duration, Duration::ZERO);
}

#[test]
fn heuristic_only_for_heuristically_cacheable_statuses() {
    let meta = stored(302, &[(LAST_MODIFIED, date(-1000))]);
    assert_eq!(meta.lifetime.duration, Duration::ZERO);
}

#[test]
fn public_allows_heuristic_for_other_statuses() {
    let meta = stored(302, &[cc("public"), (LAST_MODIFIED, date(-1000))]);
    assert_eq!(
        meta.lifetime,
        Lifetime {
            duration: s(100),
            heuristic: true
        }
    );
}

#[test]
fn last_modified_after_date_gives_no_heuristic_lifetime() {
    let meta = stored(200, &[(LAST_MODIFIED, date(1000))]);
    assert_eq!(meta.lifetime.duration, Duration::ZERO);
}

#[test]
fn ttl_is_negative_once_stale() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert_eq!(meta.ttl_secs(at(20)), 40);
    assert_eq!(meta.ttl_secs(at(75)), -15);
}

// --- verdict ---

#[test]
fn fresh_response_is_served_with_its_age() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert_eq!(
        freshness(&no_request(), &meta, at(30)),
        Verdict::Fresh { age: s(30) }
    );
}

#[test]
fn response_is_stale_once_its_age_reaches_its_lifetime() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&no_request(), &meta, at(60));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(60),
            on_error: OnError::ServeStoredIfUnreachable
        }
    );
}

#[test]
fn request_max_age_sends_an_older_fresh_response_to_validation() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&request("max-age=10"), &meta, at(30));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(30),
            on_error: OnError::ServeStored
        }
    );
}

#[test]
fn request_max_age_accepts_a_young_enough_response() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(freshness(&request("max-age=30"), &meta, at(30)).serves_stored());
}

#[test]
fn min_fresh_requires_that_much_remaining_freshness() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(freshness(&request("min-fresh=30"), &meta, at(30)).serves_stored());
    assert!(!freshness(&request("min-fresh=31"), &meta, at(30)).serves_stored());
}

#[test]
fn request_no_cache_validates_a_fresh_response() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&request("no-cache"), &meta, at(1));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(1),
            on_error: OnError::ForwardError
        }
    );
}

#[test]
fn pragma_no_cache_validates_a_fresh_response() {
    let meta = stored(200, &[cc("max-age=60")]);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    let verdict = freshness(&RequestDirectives::parse(&headers), &meta, at(1));
    assert!(matches!(verdict, Verdict::Validate { .. }));
}

#[test]
fn request_no_cache_with_stale_if_error_may_fall_back() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&request("no-cache, stale-if-error=60"), &meta, at(1));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(1),
            on_error: OnError::ServeStored
        }
    );
}

#[test]
fn response_no_cache_is_validated_on_every_use() {
    let meta = stored(200, &[cc("no-cache, max-age=60, stale-if-error=600")]);
    let verdict = freshness(&request("max-stale"), &meta, at(1));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(1),
            on_error: OnError::ForwardError
        }
    );
}

#[test]
fn qualified_no_cache_does_not_force_validation() {
    let meta = stored(200, &[cc("no-cache=\"set-cookie\", max-age=60")]);
    assert!(freshness(&no_request(), &meta, at(1)).serves_stored());
}

#[test]
fn stale_response_is_not_served_without_permission() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(!freshness(&no_request(), &meta, at(61)).serves_stored());
}

#[test]
fn max_stale_without_value_serves_any_staleness() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&request("max-stale"), &meta, at(10_000));
    assert_eq!(
        verdict,
        Verdict::Stale {
            age: s(10_000),
            staleness: s(9_940),
            revalidate: false
        }
    );
}

#[test]
fn max_stale_value_bounds_the_staleness() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(freshness(&request("max-stale=10"), &meta, at(70)).serves_stored());
    assert!(!freshness(&request("max-stale=10"), &meta, at(71)).serves_stored());
}

#[test]
fn must_revalidate_overrides_max_stale() {
    let meta = stored(200, &[cc("max-age=60, must-revalidate")]);
    let verdict = freshness(&request("max-stale"), &meta, at(61));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(61),
            on_error: OnError::GatewayTimeout
        }
    );
}

#[test]
fn proxy_revalidate_overrides_max_stale() {
    let meta = stored(200, &[cc("max-age=60, proxy-revalidate")]);
    assert!(!freshness(&request("max-stale"), &meta, at(61)).serves_stored());
}

#[test]
fn s_maxage_implies_proxy_revalidate() {
    let meta = stored(200, &[cc("s-maxage=60, stale-while-revalidate=60")]);
    let verdict = freshness(&request("max-stale"), &meta, at(61));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(61),
            on_error: OnError::GatewayTimeout
        }
    );
}

#[test]
fn must_revalidate_overrides_stale_while_revalidate_and_stale_if_error() {
    let meta = stored(
        200,
        &[cc(
            "max-age=60, must-revalidate, stale-while-revalidate=60, stale-if-error=60",
        )],
    );
    let verdict = freshness(&no_request(), &meta, at(61));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(61),
            on_error: OnError::GatewayTimeout
        }
    );
}

#[test]
fn stale_while_revalidate_serves_at_the_start_of_staleness() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    let verdict = freshness(&no_request(), &meta, at(60));
    assert_eq!(
        verdict,
        Verdict::Stale {
            age: s(60),
            staleness: Duration::ZERO,
            revalidate: true
        }
    );
}

#[test]
fn stale_while_revalidate_serves_up_to_the_end_of_its_window() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    let verdict = freshness(&no_request(), &meta, at(90));
    assert_eq!(
        verdict,
        Verdict::Stale {
            age: s(90),
            staleness: s(30),
            revalidate: true
        }
    );
}

#[test]
fn stale_while_revalidate_ends_after_its_window() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    let verdict = freshness(&no_request(), &meta, at(91));
    assert!(matches!(verdict, Verdict::Validate { .. }));
}

#[test]
fn stale_while_revalidate_respects_the_client_max_stale() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    assert!(!freshness(&request("max-stale=5"), &meta, at(80)).serves_stored());
}

#[test]
fn client_max_age_without_max_stale_refuses_stale_while_revalidate() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    assert!(!freshness(&request("max-age=600"), &meta, at(70)).serves_stored());
}

#[test]
fn max_stale_within_stale_while_revalidate_also_revalidates() {
    let meta = stored(200, &[cc("max-age=60, stale-while-revalidate=30")]);
    let verdict = freshness(&request("max-stale"), &meta, at(70));
    assert_eq!(
        verdict,
        Verdict::Stale {
            age: s(70),
            staleness: s(10),
            revalidate: true
        }
    );
}

#[test]
fn stale_if_error_window_allows_the_stored_response_on_error() {
    let meta = stored(200, &[cc("max-age=60, stale-if-error=100")]);
    let inside = freshness(&no_request(), &meta, at(160));
    assert_eq!(
        inside,
        Verdict::Validate {
            age: s(160),
            on_error: OnError::ServeStored
        }
    );
    let outside = freshness(&no_request(), &meta, at(161));
    assert_eq!(
        outside,
        Verdict::Validate {
            age: s(161),
            on_error: OnError::ServeStoredIfUnreachable
        },
        "past the window an error status is forwarded, but a dead origin still gets stale"
    );
}

#[test]
fn a_stale_response_is_served_when_the_origin_is_unreachable_unless_forbidden() {
    use crate::cache::conditional::{after_failed_validation, Fallback, ValidationFailure};
    let on_error = |cc_value: &'static str| match freshness(
        &no_request(),
        &stored(200, &[cc(cc_value)]),
        at(120),
    ) {
        Verdict::Validate { on_error, .. } => on_error,
        v => panic!("{v:?}"),
    };
    let down = ValidationFailure::Unreachable;
    let status = ValidationFailure::Status(http::StatusCode::BAD_GATEWAY);
    let plain = on_error("max-age=60");
    assert_eq!(after_failed_validation(plain, down), Fallback::ServeStored);
    assert_eq!(after_failed_validation(plain, status), Fallback::Forward);
    for forbidding in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60",
    ] {
        let e = on_error(forbidding);
        assert_eq!(
            after_failed_validation(e, down),
            Fallback::GatewayTimeout,
            "{forbidding}"
        );
    }
    let no_cache = on_error("max-age=60, no-cache");
    assert_eq!(
        after_failed_validation(no_cache, down),
        Fallback::UpstreamError
    );
}

#[test]
fn client_stale_if_error_limits_the_response_window() {
    let meta = stored(200, &[cc("max-age=60, stale-if-error=100")]);
    let verdict = freshness(&request("stale-if-error=10"), &meta, at(80));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(80),
            on_error: OnError::ForwardError
        }
    );
}

#[test]
fn client_stale_if_error_alone_allows_the_stored_response_on_error() {
    let meta = stored(200, &[cc("max-age=60")]);
    let verdict = freshness(&request("stale-if-error=30"), &meta, at(80));
    assert_eq!(
        verdict,
        Verdict::Validate {
            age: s(80),
            on_error: OnError::ServeStored
        }
    );
}

#[test]
fn only_if_cached_serves_a_fresh_response() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(freshness(&request("only-if-cached"), &meta, at(1)).serves_stored());
}

#[test]
fn only_if_cached_with_a_stale_response_is_a_gateway_timeout() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert_eq!(
        freshness(&request("only-if-cached"), &meta, at(61)),
        Verdict::GatewayTimeout
    );
}

#[test]
fn only_if_cached_accepts_stale_the_client_allows() {
    let meta = stored(200, &[cc("max-age=60")]);
    assert!(freshness(&request("only-if-cached, max-stale"), &meta, at(61)).serves_stored());
}

#[test]
fn heuristic_freshness_serves_until_it_runs_out() {
    let meta = stored(200, &[(LAST_MODIFIED, date(-1000))]);
    assert!(freshness(&no_request(), &meta, at(99)).serves_stored());
    assert!(!freshness(&no_request(), &meta, at(100)).serves_stored());
}

#[test]
fn stored_meta_records_validators_and_vary() {
    let mut request = HeaderMap::new();
    request.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    let mut response = HeaderMap::new();
    response.insert(ETAG, HeaderValue::from_static("W/\"v1\""));
    response.insert(
        http::header::VARY,
        HeaderValue::from_static("accept-encoding"),
    );
    let times = ExchangeTimes {
        request_time: t0(),
        response_time: t0(),
    };
    let meta = StoredMeta::new(
        &request,
        StatusCode::OK,
        &response,
        times,
        &HeuristicPolicy::default(),
    );
    assert_eq!(meta.etag, EntityTag::parse(b"W/\"v1\""));
    assert!(meta.has_validator());
    assert!(meta.vary.matches(&request));
    assert!(!meta.vary.matches(&HeaderMap::new()));
}

#[test]
fn repeated_etag_lines_are_no_validator() {
    let meta = stored(
        200,
        &[
            (ETAG, HeaderValue::from_static("\"a\"")),
            (ETAG, HeaderValue::from_static("\"b\"")),
        ],
    );
    assert_eq!(meta.etag, None);
}
