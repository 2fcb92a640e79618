use super::*;
use http::header::{HeaderValue, CACHE_CONTROL};
use std::time::{Duration, UNIX_EPOCH};

fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn decide_with(
    method: Method,
    request: &[(&'static str, &'static str)],
    status: u16,
    response: &[(&'static str, &'static str)],
    options: StoreOptions,
) -> Result<Storable, NotStorable> {
    let request = map(request);
    let response = map(response);
    storable(
        &method,
        &request,
        &RequestDirectives::parse(&request),
        StatusCode::from_u16(status).unwrap(),
        &response,
        &ResponseDirectives::parse(&response),
        &options,
    )
}

fn decide(
    request: &[(&'static str, &'static str)],
    status: u16,
    response: &[(&'static str, &'static str)],
) -> Result<Storable, NotStorable> {
    decide_with(
        Method::GET,
        request,
        status,
        response,
        StoreOptions::default(),
    )
}

fn cc(value: &'static str) -> (&'static str, &'static str) {
    ("cache-control", value)
}

#[test]
fn ok_with_max_age_is_stored() {
    assert_eq!(
        decide(&[], 200, &[cc("max-age=60")]),
        Ok(Storable::default())
    );
}

#[test]
fn head_response_is_not_stored() {
    let got = decide_with(
        Method::HEAD,
        &[],
        200,
        &[cc("max-age=60")],
        StoreOptions::default(),
    );
    assert_eq!(got, Err(NotStorable::Method(Method::HEAD)));
}

#[test]
fn post_response_is_not_stored() {
    let got = decide_with(
        Method::POST,
        &[],
        200,
        &[cc("public, max-age=60")],
        StoreOptions::default(),
    );
    assert_eq!(got, Err(NotStorable::Method(Method::POST)));
}

#[test]
fn partial_content_is_not_stored() {
    assert_eq!(
        decide(&[], 206, &[cc("max-age=60")]),
        Err(NotStorable::PartialContent)
    );
}

#[test]
fn not_modified_is_not_stored() {
    assert_eq!(
        decide(&[], 304, &[cc("max-age=60")]),
        Err(NotStorable::NotModified)
    );
}

#[test]
fn informational_response_is_not_stored() {
    let got = decide(&[], 103, &[cc("max-age=60")]);
    assert_eq!(got, Err(NotStorable::NotFinal(StatusCode::EARLY_HINTS)));
}

#[test]
fn request_no_store_prevents_storing() {
    assert_eq!(
        decide(&[cc("no-store")], 200, &[cc("max-age=60")]),
        Err(NotStorable::RequestNoStore)
    );
}

#[test]
fn response_no_store_prevents_storing() {
    assert_eq!(
        decide(&[], 200, &[cc("no-store, max-age=60")]),
        Err(NotStorable::ResponseNoStore)
    );
}

#[test]
fn must_understand_with_a_known_status_overrides_no_store() {
    assert!(decide(&[], 200, &[cc("no-store, must-understand, max-age=60")]).is_ok());
}

#[test]
fn must_understand_with_an_unknown_status_is_not_stored() {
    let got = decide(&[], 299, &[cc("must-understand, max-age=60")]);
    assert_eq!(
        got,
        Err(NotStorable::NotUnderstood(
            StatusCode::from_u16(299).unwrap()
        ))
    );
}

#[test]
fn must_understand_does_not_override_request_no_store() {
    let got = decide(
        &[cc("no-store")],
        200,
        &[cc("no-store, must-understand, max-age=60")],
    );
    assert_eq!(got, Err(NotStorable::RequestNoStore));
}

#[test]
fn unknown_status_without_must_understand_is_stored_with_explicit_freshness() {
    assert!(decide(&[], 299, &[cc("max-age=60")]).is_ok());
}

#[test]
fn unqualified_private_is_not_stored() {
    assert_eq!(
        decide(&[], 200, &[cc("private, max-age=60")]),
        Err(NotStorable::Private)
    );
}

#[test]
fn private_with_field_names_is_stored_without_them() {
    let got = decide(&[], 200, &[cc("private=\"x-user\", max-age=60")]).unwrap();
    assert_eq!(got.strip, ["x-user"]);
}

#[test]
fn no_cache_field_names_are_stripped_too() {
    let got = decide(
        &[],
        200,
        &[cc("private=\"x-a\", no-cache=\"x-b, x-a\", max-age=60")],
    )
    .unwrap();
    assert_eq!(got.strip, ["x-a", "x-b"]);
}

#[test]
fn authorized_request_is_not_stored_by_default() {
    let got = decide(&[("authorization", "Bearer t")], 200, &[cc("max-age=60")]);
    assert_eq!(got, Err(NotStorable::Authorization));
}

#[test]
fn authorized_request_is_stored_with_public() {
    assert!(decide(
        &[("authorization", "Bearer t")],
        200,
        &[cc("public, max-age=60")]
    )
    .is_ok());
}

#[test]
fn authorized_request_is_stored_with_s_maxage() {
    assert!(decide(&[("authorization", "Bearer t")], 200, &[cc("s-maxage=60")]).is_ok());
}

#[test]
fn authorized_request_is_stored_with_must_revalidate() {
    assert!(decide(
        &[("authorization", "Bearer t")],
        200,
        &[cc("must-revalidate, max-age=60")]
    )
    .is_ok());
}

#[test]
fn set_cookie_is_not_stored_by_default() {
    let got = decide(&[], 200, &[cc("max-age=60"), ("set-cookie", "a=1")]);
    assert_eq!(got, Err(NotStorable::SetCookie));
}

#[test]
fn set_cookie_is_stored_when_allowed() {
    let options = StoreOptions {
        store_set_cookie: true,
    };
    let got = decide_with(
        Method::GET,
        &[],
        200,
        &[cc("max-age=60"), ("set-cookie", "a=1")],
        options,
    );
    assert!(got.is_ok());
}

#[test]
fn vary_star_is_not_stored() {
    assert_eq!(
        decide(&[], 200, &[cc("max-age=60"), ("vary", "*")]),
        Err(NotStorable::VaryAny)
    );
}

#[test]
fn redirect_with_explicit_freshness_is_stored() {
    assert!(decide(&[], 302, &[cc("max-age=60")]).is_ok());
    assert!(decide(&[], 307, &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]).is_ok());
}

#[test]
fn non_default_status_without_explicit_freshness_is_not_stored() {
    let got = decide(
        &[],
        302,
        &[
            ("etag", "\"a\""),
            ("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT"),
        ],
    );
    assert_eq!(got, Err(NotStorable::NotCacheable(StatusCode::FOUND)));
}

#[test]
fn public_makes_any_final_status_storable() {
    assert!(decide(
        &[],
        500,
        &[
            cc("public"),
            ("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")
        ]
    )
    .is_ok());
}

#[test]
fn heuristically_cacheable_status_with_a_validator_is_stored() {
    assert!(decide(&[], 404, &[("etag", "\"a\"")]).is_ok());
    assert!(decide(
        &[],
        200,
        &[("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")]
    )
    .is_ok());
}

#[test]
fn stale_permission_alone_makes_a_response_reusable() {
    assert!(decide(&[], 200, &[cc("stale-if-error=60")]).is_ok());
}

#[test]
fn response_with_nothing_to_reuse_is_not_stored() {
    assert_eq!(decide(&[], 200, &[]), Err(NotStorable::NothingToReuse));
}

#[test]
fn heuristically_cacheable_statuses_are_the_rfc_list() {
    let cacheable: Vec<u16> = (100..600)
        .filter(|&code| is_heuristically_cacheable(StatusCode::from_u16(code).unwrap()))
        .collect();
    assert_eq!(
        cacheable,
        [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]
    );
}

#[test]
fn reasons_read_as_lower_case_messages() {
    assert_eq!(
        NotStorable::Method(Method::POST).to_string(),
        "responses to POST are not stored"
    );
}

#[test]
fn hop_by_hop_and_proxy_fields_are_not_stored() {
    let mut headers = map(&[
        ("connection", "keep-alive, x-trace"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authenticate", "Basic"),
        ("proxy-authentication-info", "x"),
        ("proxy-authorization", "Basic x"),
        ("x-trace", "1"),
        ("content-type", "text/plain"),
        ("etag", "\"a\""),
    ]);
    strip_for_storage(&mut headers, &[]);
    let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["content-type", "etag"]);
}

#[test]
fn named_private_fields_are_stripped() {
    let mut headers = map(&[("x-user", "alice"), ("cache-control", "private=\"x-user\"")]);
    strip_for_storage(&mut headers, &[HeaderName::from_static("x-user")]);
    assert!(!headers.contains_key("x-user"));
    assert!(headers.contains_key(CACHE_CONTROL));
}

#[test]
fn missing_date_is_added_at_the_response_time() {
    let received = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let mut headers = HeaderMap::new();
    add_missing_date(&mut headers, received);
    assert_eq!(headers.get(DATE).unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
}

#[test]
fn invalid_date_is_replaced_and_valid_date_kept() {
    let received = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let mut invalid = map(&[("date", "yesterday")]);
    add_missing_date(&mut invalid, received);
    assert_eq!(invalid.get(DATE).unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
    let mut valid = map(&[("date", "Mon, 07 Nov 1994 08:49:37 GMT")]);
    add_missing_date(&mut valid, received);
    assert_eq!(valid.get(DATE).unwrap(), "Mon, 07 Nov 1994 08:49:37 GMT");
}
