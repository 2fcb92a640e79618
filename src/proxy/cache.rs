//! The cache phase of a request on a cached route, as a shared cache (RFC 9111): look the
//! request up, answer from the store, join another request's fetch (coalescing), validate a
//! stored response with the origin, fill the store while the response streams to the
//! client, and invalidate after a successful unsafe method.
//!
//! The decisions themselves are the pure functions of `crate::cache`; this module puts them
//! in request order and turns them into responses. Every answer carries `Cache-Status`
//! (RFC 9211) with the cache's name.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::body::{AfterFill, ProxyBody};
use super::error::ProxyError;
use super::request::Arrival;
use super::route::Routed;
use super::{refresh, ConnInfo, Stop};
use crate::auth::gate::Authenticated;
use crate::cache::conditional::{
    after_failed_validation, evaluate_client_conditional, head_update, merge_not_modified,
    not_modified_headers, prepare_validation, ClientConditional, Fallback, HeadUpdate,
    ValidationFailure,
};
use crate::cache::control::{RequestDirectives, ResponseDirectives};
use crate::cache::freshness::{
    age_header_value, freshness, ExchangeTimes, OnError, StoredMeta, Verdict,
};
use crate::cache::invalidate::{invalidation_urls, is_safe_method};
use crate::cache::key::{primary_key, CacheKey, Target};
use crate::cache::range::{self, RangeAnswer};
use crate::cache::service::{CacheService, KeyPart, Outcome, Purge, RouteCacheRules};
use crate::cache::status::{CacheStatus, Forward};
use crate::cache::storable::{add_missing_date, storable, strip_for_storage};
use crate::cache::store::{Entry, FillHead, FillLeader, FollowOutcome, Lookup, OriginReason};
use crate::message::X_REQUEST_ID;
use crate::ratelimit::Passed;
use crate::snapshot::Snapshot;
use crate::upstream::pool::UpstreamBody;

/// What the cache phase decided before the upstream. Returned once per request and moved
/// once: boxing the answer would cost every hit an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Plan {
    /// Answer without going upstream; with a stale-while-revalidate refresh to run in the
    /// background when one is due.
    Answer(Response<ProxyBody>, Option<Pending>),
    /// Go upstream; the [`Pending`] handles what comes back.
    Forward(Pending),
}

/// A request on its way upstream, and what the cache does with the answer.
pub(super) struct Pending {
    mode: Mode,
    method: Method,
}

enum Mode {
    /// Relayed untouched (but for Cache-Status); after an unsafe method, the target and
    /// related URLs are invalidated when the answer is a success.
    Pass {
        reason: Forward,
        invalidate: Option<Box<OwnedTarget>>,
    },
    /// Fetch (or validate) and store.
    Fill(Box<Fill>),
}

struct OwnedTarget {
    scheme: &'static str,
    authority: String,
    path_and_query: String,
}

struct Fill {
    key: CacheKey,
    leader: FillLeader,
    /// The client's request fields: `Vary` values, `Authorization`, conditionals.
    request: HeaderMap,
    cc: RequestDirectives,
    /// The stored response being validated, and what a failed validation falls back to.
    validating: Option<(Arc<Entry>, OnError)>,
    reason: Forward,
    sent_at: SystemTime,
}

/// The request facts the cache phase needs.
struct CacheRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub scheme: &'static str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub consumer: Option<&'a str>,
    pub geo: Option<&'a crate::geo::Location>,
}

/// The cache phase before the upstream: on a cached route (not a tunnel), answers from the
/// store when it can; otherwise what to do with the upstream's answer.
pub(super) async fn lookup<B>(
    snap: &Arc<Snapshot>,
    conn: &ConnInfo,
    routed: &Routed<'_>,
    req: &Request<B>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
    passed: Option<&Passed>,
) -> Result<Option<Pending>, Stop> {
    let (Some(svc), Some(rules), false) = (&snap.cache, &routed.route.cache, routed.upgrade) else {
        return Ok(None);
    };
    let lookup = CacheRequest {
        method: req.method(),
        headers: req.headers(),
        scheme: if conn.tls { "https" } else { "http" },
        authority: arrival.host_text().unwrap_or(""),
        path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
        consumer: caller.and_then(|a| a.identity.name()),
        geo: routed.geo.as_ref(),
    };
    match plan(svc, rules, &lookup).await {
        Plan::Answer(mut resp, refresh) => {
            if let Some(refresh) = refresh {
                let head = refresh::head(conn, routed, req, arrival);
                refresh::spawn(
                    snap.clone(),
                    routed.matched.route,
                    arrival.client_ip,
                    head,
                    refresh,
                );
            }
            resp.headers_mut()
                .insert(X_REQUEST_ID, arrival.request_id.clone());
            if let Some(p) = passed {
                p.write_headers(resp.headers_mut());
            }
            Err(Stop::respond(resp))
        }
        Plan::Forward(p) => Ok(Some(p)),
    }
}

/// Looks the request up and decides: answer from the store, or go upstream.
async fn plan(svc: &CacheService, rules: &RouteCacheRules, r: &CacheRequest<'_>) -> Plan {
    let target = Target {
        scheme: r.scheme,
        authority: r.authority,
        path_and_query: r.path_and_query,
    };
    let cacheable = matches!(*r.method, Method::GET | Method::HEAD);
    if !cacheable {
        let invalidate = (!is_safe_method(r.method)).then(|| {
            Box::new(OwnedTarget {
                scheme: r.scheme,
                authority: r.authority.to_string(),
                path_and_query: r.path_and_query.to_string(),
            })
        });
        return pass(rules, r.method, Forward::Method, invalidate);
    }
    let extra = key_parts(rules, r);
    let borrowed: Vec<(&[u8], &[u8])> = extra.iter().map(|(l, v)| (*l, v.as_slice())).collect();
    let Ok(key) = primary_key(r.method, target, &borrowed) else {
        return pass(rules, r.method, Forward::Bypass, None);
    };
    let cc = RequestDirectives::parse(r.headers);
    let now = SystemTime::now();
    // A follower whose leader gave up looks up once more: the leader may have refreshed
    // the stored response (a 304) rather than fetched a new one.
    for round in 0..2 {
        let found = svc.store.lookup(&key, r.headers);
        let follower = match found {
            Lookup::Hit(entry) => match freshness(&cc, &entry.meta, now) {
                Verdict::Fresh { age } => {
                    rules.counters.count(Outcome::Hit);
                    let status = CacheStatus::hit(&svc.status_name).ttl(entry.meta.ttl_secs(now));
                    return Plan::Answer(serve(svc, &entry, age, r, now, &status), None);
                }
                Verdict::Stale {
                    age, revalidate, ..
                } => {
                    rules.counters.count(Outcome::Stale);
                    let status = CacheStatus::hit(&svc.status_name)
                        .ttl(entry.meta.ttl_secs(now))
                        .detail("stale");
                    let resp = serve(svc, &entry, age, r, now, &status);
                    let refresh = revalidate
                        .then(|| background_refresh(svc, &key, &entry, r, &cc, now))
                        .flatten();
                    return Plan::Answer(resp, refresh);
                }
                Verdict::GatewayTimeout => return only_if_cached(svc, rules),
                Verdict::Validate { on_error, .. } => match svc.store.begin_fill(&key, r.headers) {
                    Lookup::Miss(leader) => {
                        let fill = Fill {
                            key,
                            leader,
                            request: r.headers.clone(),
                            cc,
                            validating: Some((entry, on_error)),
                            reason: Forward::Stale,
                            sent_at: now,
                        };
                        return forward_fill(r.method, fill);
                    }
                    Lookup::Follow(f) => f,
                    Lookup::Hit(_) => return pass(rules, r.method, Forward::Stale, None),
                },
            },
            Lookup::Miss(leader) => {
                if let Some(resp) = shared_hit(svc, rules, &key, r, &cc, now).await {
                    // Followers look up again and find the copy in memory.
                    leader.abandon();
                    return Plan::Answer(resp, None);
                }
                if cc.only_if_cached {
                    leader.abandon();
                    return only_if_cached(svc, rules);
                }
                if *r.method == Method::HEAD {
                    // A HEAD has no body to store: let a GET fill the key.
                    leader.abandon();
                    return pass(rules, r.method, Forward::UriMiss, None);
                }
                let fill = Fill {
                    key,
                    leader,
                    request: r.headers.clone(),
                    cc,
                    validating: None,
                    reason: Forward::UriMiss,
                    sent_at: now,
                };
                return forward_fill(r.method, fill);
            }
            Lookup::Follow(f) => f,
        };
        match follower.head().await {
            FollowOutcome::Stream { head, body } => {
                rules.counters.count(Outcome::Collapsed);
                let mut resp = head_response(&head, svc, now);
                if *r.method == Method::HEAD {
                    *resp.body_mut() = ProxyBody::empty();
                } else {
                    *resp.body_mut() = ProxyBody::follow(body);
                }
                return Plan::Answer(resp, None);
            }
            FollowOutcome::GoToOrigin(OriginReason::Abandoned) if round == 0 => continue,
            FollowOutcome::GoToOrigin(_) => break,
        }
    }
    pass(rules, r.method, Forward::Miss, None)
}

/// A response another instance stored in the Redis tier, when it may answer `r` without
/// validation; copied into memory for the next requests.
async fn shared_hit(
    svc: &CacheService,
    rules: &RouteCacheRules,
    key: &CacheKey,
    r: &CacheRequest<'_>,
    cc: &RequestDirectives,
    now: SystemTime,
) -> Option<Response<ProxyBody>> {
    let shared = svc.shared.as_ref()?;
    let entry = match shared.tier.get(&key.digest, r.headers).await {
        Ok(found) => found?,
        Err(e) => {
            tracing::debug!(error = %e, "cache: Redis tier lookup failed");
            return None;
        }
    };
    let age = match freshness(cc, &entry.meta, now) {
        Verdict::Fresh { age } | Verdict::Stale { age, .. } => age,
        Verdict::Validate { .. } | Verdict::GatewayTimeout => return None,
    };
    rules.counters.count(Outcome::Hit);
    let status = CacheStatus::hit(&svc.status_name)
        .ttl(entry.meta.ttl_secs(now))
        .detail("shared");
    let resp = serve(svc, &entry, age, r, now, &status);
    svc.store.insert(&key.digest, entry);
    Some(resp)
}

/// How long the Redis tier keeps a response: while it is fresh, plus the windows in which
/// it may still be served stale.
fn shared_ttl(meta: &StoredMeta, now: SystemTime) -> Duration {
    let fresh = meta.lifetime.duration.saturating_sub(meta.current_age(now));
    let d = &meta.directives;
    let window = d.stale_while_revalidate.max(d.stale_if_error).unwrap_or(0);
    fresh + Duration::from_secs(u64::from(window))
}

/// After a fill is stored in memory: the same response goes to the Redis tier.
fn share_after_fill(svc: &CacheService, key: &CacheKey) -> Option<AfterFill> {
    let shared = svc.shared.clone()?;
    let store = svc.store.clone();
    let digest = key.digest;
    Some(Box::new(move || {
        let Some(entry) = store.variants(&digest).into_iter().next() else {
            return;
        };
        let ttl = shared_ttl(&entry.meta, SystemTime::now());
        if ttl.is_zero() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = shared.tier.put(&digest, &entry, ttl).await {
                tracing::debug!(error = %e, "cache: Redis tier store failed");
            }
        });
    }))
}

fn pass(
    rules: &RouteCacheRules,
    method: &Method,
    reason: Forward,
    invalidate: Option<Box<OwnedTarget>>,
) -> Plan {
    rules.counters.count(Outcome::Bypass);
    Plan::Forward(Pending {
        mode: Mode::Pass { reason, invalidate },
        method: method.clone(),
    })
}

fn forward_fill(method: &Method, fill: Fill) -> Plan {
    Plan::Forward(Pending {
        mode: Mode::Fill(Box::new(fill)),
        method: method.clone(),
    })
}

/// `only-if-cached` without a usable stored response: 504 (RFC 9111 §5.2.1.7).
fn only_if_cached(svc: &CacheService, rules: &RouteCacheRules) -> Plan {
    rules.counters.count(Outcome::Bypass);
    // The caller sets the request id.
    let mut resp = ProxyError::OnlyIfCached.to_response(&HeaderValue::from_static(""));
    CacheStatus::forward(&svc.status_name, Forward::Request)
        .detail("only-if-cached")
        .append_to(resp.headers_mut());
    Plan::Answer(resp, None)
}

/// The route's extra key parts for this request, labelled.
fn key_parts<'a>(rules: &'a RouteCacheRules, r: &CacheRequest<'_>) -> Vec<(&'a [u8], Vec<u8>)> {
    rules
        .parts
        .iter()
        .map(|(label, part)| {
            let value = match part {
                KeyPart::Header(name) => {
                    let mut v = Vec::new();
                    for (i, line) in r.headers.get_all(name).iter().enumerate() {
                        if i > 0 {
                            v.push(b',');
                        }
                        v.extend_from_slice(line.as_bytes());
                    }
                    v
                }
                KeyPart::Cookie(name) => cookie_value(r.headers, name).unwrap_or_default(),
                KeyPart::Consumer => r.consumer.unwrap_or("").as_bytes().to_vec(),
                KeyPart::Geo(field) => crate::geo::field_or_empty(r.geo, *field).into_bytes(),
            };
            (&**label, value)
        })
        .collect()
}

/// The value of cookie `name` in the request's Cookie fields.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (n, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (n.trim_ascii() == name.as_bytes()).then(|| v[1..].trim_ascii().to_vec())
        })
}

/// A stale-while-revalidate refresh: a validation that fills the store in the background;
/// `None` when another request is already fetching the key.
fn background_refresh(
    svc: &CacheService,
    key: &CacheKey,
    entry: &Arc<Entry>,
    r: &CacheRequest<'_>,
    cc: &RequestDirectives,
    now: SystemTime,
) -> Option<Pending> {
    let Lookup::Miss(leader) = svc.store.begin_fill(key, r.headers) else {
        return None;
    };
    let fill = Fill {
        key: key.clone(),
        leader,
        request: r.headers.clone(),
        cc: cc.clone(),
        validating: Some((entry.clone(), OnError::ServeStored)),
        reason: Forward::Stale,
        sent_at: now,
    };
    Some(Pending {
        mode: Mode::Fill(Box::new(fill)),
        method: Method::GET,
    })
}

/// A stored response as the answer to `r`: 304 when the client's conditional matches it,
/// no body for HEAD, `Age` and `Cache-Status` added.
fn serve(
    svc: &CacheService,
    entry: &Entry,
    age: Duration,
    r: &CacheRequest<'_>,
    now: SystemTime,
    status: &CacheStatus<'_>,
) -> Response<ProxyBody> {
    let mut resp = match evaluate_client_conditional(r.method, r.headers, &entry.meta, now) {
        ClientConditional::NotModified => {
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            *resp.headers_mut() = not_modified_headers(&entry.headers, age);
            resp
        }
        ClientConditional::Full => {
            let len = entry.body.len() as u64;
            let part = range::select(r.method, r.headers, entry.status, &entry.meta, len, now);
            let (status, body) = match part {
                _ if *r.method == Method::HEAD => (entry.status, ProxyBody::empty()),
                RangeAnswer::Full => (entry.status, ProxyBody::full(entry.body.clone())),
                RangeAnswer::Partial { first, last, .. } => {
                    let bytes = usize::try_from(first)
                        .ok()
                        .zip(usize::try_from(last).ok())
                        .and_then(|(a, b)| entry.body.get(a..=b).map(|_| entry.body.slice(a..=b)))
                        .unwrap_or_default();
                    (StatusCode::PARTIAL_CONTENT, ProxyBody::full(bytes))
                }
                RangeAnswer::Unsatisfiable { .. } => {
                    (StatusCode::RANGE_NOT_SATISFIABLE, ProxyBody::empty())
                }
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = status;
            let headers = resp.headers_mut();
            headers.reserve(entry.headers.len() + 4);
            for (name, value) in &entry.headers {
                headers.append(name, value.clone());
            }
            headers.insert(header::AGE, age_header_value(age));
            if *r.method != Method::HEAD {
                content_range(headers, part);
            }
            resp
        }
    };
    svc.strip_for_client(resp.headers_mut());
    status.append_to(resp.headers_mut());
    resp
}

/// The fields of a partial answer from a stored response: `Content-Range` and the length
/// of the part (RFC 9110 §14.4, §15.5.17).
fn content_range(headers: &mut HeaderMap, part: RangeAnswer) {
    let mut n = itoa::Buffer::new();
    match part {
        RangeAnswer::Full => {}
        RangeAnswer::Partial { first, last, len } => {
            let value = format!("bytes {first}-{last}/{len}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            let size = last.saturating_sub(first).saturating_add(1);
            if let Ok(v) = HeaderValue::from_str(n.format(size)) {
                headers.insert(header::CONTENT_LENGTH, v);
            }
        }
        RangeAnswer::Unsatisfiable { len } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
    }
}

/// The response a follower sends: the leader's head, with its own Age and Cache-Status.
fn head_response(head: &FillHead, svc: &CacheService, now: SystemTime) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers.clone();
    resp.headers_mut()
        .insert(header::AGE, age_header_value(head.meta.current_age(now)));
    CacheStatus::forward(&svc.status_name, Forward::UriMiss)
        .fwd_status(head.status)
        .collapsed(true)
        .append_to(resp.headers_mut());
    svc.strip_for_client(resp.headers_mut());
    resp
}

impl Pending {
    /// Adjusts the upstream request: a fill asks for a full response (the client's own
    /// validators are the cache's business), a validation adds the stored validators.
    pub(super) fn prepare(&self, upstream: &mut HeaderMap) {
        if let Mode::Fill(fill) = &self.mode {
            match &fill.validating {
                Some((entry, _)) => prepare_validation(upstream, &[&entry.meta]),
                None => prepare_validation(upstream, &[]),
            };
        }
    }

    /// Turns the upstream's answer (fields already cleaned of hop-by-hop ones) into the
    /// downstream response, storing or refreshing what may be stored.
    pub(super) fn answer(
        self,
        svc: &CacheService,
        rules: &RouteCacheRules,
        resp: Response<UpstreamBody>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        let surrogate_keys = take_surrogate_keys(&mut parts.headers, &svc.surrogate_header);
        let fill = match self.mode {
            Mode::Pass { reason, invalidate } => {
                if let Some(t) = invalidate {
                    invalidate_after(svc, &t, parts.status, &parts.headers);
                }
                CacheStatus::forward(&svc.status_name, reason)
                    .fwd_status(parts.status)
                    .append_to(&mut parts.headers);
                svc.strip_for_client(&mut parts.headers);
                return Response::from_parts(parts, ProxyBody::relay(body));
            }
            Mode::Fill(fill) => fill,
        };
        let Fill {
            key,
            mut leader,
            request,
            cc,
            validating,
            reason,
            sent_at,
        } = *fill;
        let now = SystemTime::now();
        let times = ExchangeTimes {
            request_time: sent_at,
            response_time: now,
        };
        let view = CacheRequest {
            method: &self.method,
            headers: &request,
            scheme: "",
            authority: "",
            path_and_query: "",
            consumer: None,
            geo: None,
        };
        if let Some((entry, on_error)) = &validating {
            if parts.status == StatusCode::NOT_MODIFIED {
                let mut body = body;
                body.recycle(std::time::Instant::now());
                leader.abandon();
                rules.counters.count(Outcome::Revalidated);
                let refreshed = refresh_stored(svc, &key, entry, &request, &parts.headers, times)
                    .unwrap_or_else(|| entry.clone());
                let age = refreshed.meta.current_age(now);
                let status = CacheStatus::forward(&svc.status_name, Forward::Stale)
                    .fwd_status(StatusCode::NOT_MODIFIED)
                    .ttl(refreshed.meta.ttl_secs(now));
                return serve(svc, &refreshed, age, &view, now, &status);
            }
            if self.method == Method::HEAD && parts.status == StatusCode::OK {
                // RFC 9111 §4.3.5: a 200 to HEAD describes the stored GET response; its
                // fields refresh the stored ones when its validators say it is the same.
                leader.abandon();
                rules.counters.count(Outcome::Revalidated);
                match head_update(&entry.headers, &parts.headers) {
                    HeadUpdate::Update => {
                        refresh_stored(svc, &key, entry, &request, &parts.headers, times);
                    }
                    HeadUpdate::MarkStale => {
                        svc.metrics.purged(svc.store.invalidate(&key.digest));
                    }
                }
                CacheStatus::forward(&svc.status_name, reason)
                    .fwd_status(parts.status)
                    .append_to(&mut parts.headers);
                svc.strip_for_client(&mut parts.headers);
                return Response::from_parts(parts, ProxyBody::relay(body));
            }
            if is_error_status(parts.status)
                && after_failed_validation(*on_error, ValidationFailure::Status(parts.status))
                    == Fallback::ServeStored
            {
                leader.abandon();
                rules.counters.count(Outcome::Stale);
                let age = entry.meta.current_age(now);
                let status = CacheStatus::hit(&svc.status_name)
                    .ttl(entry.meta.ttl_secs(now))
                    .detail("stale-if-error");
                return serve(svc, entry, age, &view, now, &status);
            }
        }
        rules.counters.count(Outcome::Miss);
        let response_cc = ResponseDirectives::parse(&parts.headers);
        let decision = storable(
            &self.method,
            &request,
            &cc,
            parts.status,
            &parts.headers,
            &response_cc,
            &rules.options,
        );
        let filling = match decision {
            Ok(s) => {
                let mut kept = parts.headers.clone();
                strip_for_storage(&mut kept, &s.strip);
                add_missing_date(&mut kept, now);
                let meta = StoredMeta::new(&request, parts.status, &kept, times, &svc.policy);
                leader.start(meta, parts.status, kept, surrogate_keys);
                Some(leader)
            }
            Err(_) => {
                leader.abandon();
                // The origin replaced a stored response with one that may not be stored:
                // the old one must not be served any more. (A HEAD's answer is never
                // stored and says nothing of the kind.)
                if validating.is_some() && self.method == Method::GET {
                    svc.metrics.purged(svc.store.invalidate(&key.digest));
                }
                None
            }
        };
        if !parts.headers.contains_key(header::DATE) {
            add_missing_date(&mut parts.headers, now);
        }
        CacheStatus::forward(&svc.status_name, reason)
            .fwd_status(parts.status)
            .stored(filling.is_some())
            .append_to(&mut parts.headers);
        svc.strip_for_client(&mut parts.headers);
        let body = match filling {
            Some(leader) if leader.is_storing() => {
                ProxyBody::relay_filling(body, leader, share_after_fill(svc, &key))
            }
            _ => ProxyBody::relay(body),
        };
        Response::from_parts(parts, body)
    }

    /// The upstream failed (no response): a validation may still serve the stored response
    /// (stale-if-error, still fresh, or stale because the origin is unreachable) or must
    /// answer 504; otherwise the error stands. Either way the answer says in `Cache-Status`
    /// why the request went forward.
    pub(super) fn failed(
        self,
        svc: &CacheService,
        rules: &RouteCacheRules,
        err: ProxyError,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let reason = match &self.mode {
            Mode::Pass { reason, .. } => *reason,
            Mode::Fill(fill) => fill.reason,
        };
        let error = |err: ProxyError| {
            let mut resp = err.to_response(request_id);
            CacheStatus::forward(&svc.status_name, reason)
                .detail("upstream-error")
                .append_to(resp.headers_mut());
            resp
        };
        let Mode::Fill(fill) = self.mode else {
            return error(err);
        };
        let Some((entry, on_error)) = &fill.validating else {
            return error(err);
        };
        let now = SystemTime::now();
        match after_failed_validation(*on_error, ValidationFailure::Unreachable) {
            Fallback::ServeStored => {
                rules.counters.count(Outcome::Stale);
                let view = CacheRequest {
                    method: &self.method,
                    headers: &fill.request,
                    scheme: "",
                    authority: "",
                    path_and_query: "",
                    consumer: None,
                    geo: None,
                };
                // Stale without the origin's permission only because it is unreachable.
                let detail = match on_error {
                    OnError::ServeStoredIfUnreachable => "stale-origin-unreachable",
                    _ => "stale-if-error",
                };
                let status = CacheStatus::hit(&svc.status_name)
                    .ttl(entry.meta.ttl_secs(now))
                    .detail(detail);
                let mut resp = serve(svc, entry, entry.meta.current_age(now), &view, now, &status);
                resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
                resp
            }
            Fallback::GatewayTimeout => error(ProxyError::StaleForbidden),
            Fallback::Forward | Fallback::UpstreamError => error(err),
        }
    }
}

/// After a 304: the stored response's fields merged with the 304's, stored in its place
/// (or removed, when the origin now forbids storing it). `None` when it is gone.
fn refresh_stored(
    svc: &CacheService,
    key: &CacheKey,
    entry: &Arc<Entry>,
    request: &HeaderMap,
    not_modified: &HeaderMap,
    times: ExchangeTimes,
) -> Option<Arc<Entry>> {
    let mut headers = entry.headers.clone();
    merge_not_modified(&mut headers, not_modified, times.response_time);
    let meta = StoredMeta::new(request, entry.status, &headers, times, &svc.policy);
    if meta.directives.no_store {
        svc.metrics.purged(svc.store.invalidate(&key.digest));
        return None;
    }
    svc.store.replace_head(&key.digest, entry, meta, headers)
}

/// RFC 5861 §4: the statuses stale-if-error covers.
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Removes the surrogate-key field (it is for the cache, not the client) and returns its
/// space-separated keys.
fn take_surrogate_keys(headers: &mut HeaderMap, name: &http::HeaderName) -> Vec<Box<str>> {
    let mut keys = Vec::new();
    if let http::header::Entry::Occupied(e) = headers.entry(name) {
        let (_, values) = e.remove_entry_mult();
        for value in values {
            if let Ok(text) = value.to_str() {
                keys.extend(text.split_ascii_whitespace().map(Box::from));
            }
        }
    }
    keys
}

/// RFC 9111 §4.4: a successful unsafe request invalidates its target and the same-origin
/// Location and Content-Location.
fn invalidate_after(svc: &CacheService, t: &OwnedTarget, status: StatusCode, headers: &HeaderMap) {
    let target = Target {
        scheme: t.scheme,
        authority: &t.authority,
        path_and_query: &t.path_and_query,
    };
    // The method only matters as "not safe" here.
    for url in invalidation_urls(&Method::POST, status, target, headers) {
        svc.metrics.purged(svc.store.purge_url(&url));
        if let Some(shared) = svc.shared.clone() {
            tokio::spawn(async move {
                if let Err(e) = Purge::Url(url).apply_shared(&shared).await {
                    crate::warn_throttled!(error = %e, "cache: invalidation did not reach the Redis tier");
                }
            });
        }
    }
}

/// Runs a stale-while-revalidate refresh: the answer is read to its end so the store fills.
pub(super) async fn finish_refresh(
    pending: Pending,
    svc: &CacheService,
    rules: &RouteCacheRules,
    result: Result<Response<UpstreamBody>, ProxyError>,
) {
    let resp = match result {
        Ok(resp) => pending.answer(svc, rules, resp),
        Err(_) => return,
    };
    crate::message::drain(&mut resp.into_body()).await;
}
