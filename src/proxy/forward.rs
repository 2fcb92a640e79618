//! The FORWARD phase: choose a target, send, and retry on another target when the route's
//! policy, the method and the retry budget allow it. Each attempt reports its outcome to the
//! group's health state (passive ejection, circuit breaker) and to the balancer.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};

use super::cache::Pending;
use super::error::ProxyError;
use super::headers::{authority_value, upstream_uri};
use super::log::{Completion, LogData};
use super::request::Arrival;
use super::route::Routed;
use super::upstream_request::Outbound;
use super::{mirror, Stop};
use crate::config::model::UpstreamProtocol;
use crate::message::Interim;
use crate::observe::trace::{self, ChildKind, ChildSpan, RequestTrace};
use crate::snapshot::{CompiledRoute, Snapshot, UpstreamGroup};
use crate::upstream::added::Added;
use crate::upstream::balancer::{InFlight, PickInput};
use crate::upstream::health::{Admission, Outcome};
use crate::upstream::pool::ClientProfile;
use crate::upstream::pool::{self, SendError, UpstreamBody, UpstreamError};
use crate::upstream::request_body::{RequestBody, RequestBodyState};
use crate::upstream::retry::is_idempotent;

/// What the chosen target answered.
pub(crate) struct Answer {
    pub response: Response<UpstreamBody>,
    pub target: usize,
    /// `Set-Cookie` pinning the client, when the group is sticky and the pin changed.
    pub pin: Option<HeaderValue>,
}

/// What one request brings to the FORWARD phase.
pub(super) struct Exchange<'a> {
    pub snap: &'a Snapshot,
    pub route: &'a CompiledRoute,
    pub group: &'a UpstreamGroup,
    pub client_ip: IpAddr,
    /// The client's location, when the route reads it (locality by the client's place).
    pub geo: Option<&'a crate::geo::Location>,
    /// Path the client asked for (hash balancing keys on it).
    pub path: &'a str,
    /// The request has no Host of its own: each attempt names its target instead.
    pub host_from_target: bool,
    pub body_state: Option<&'a RequestBodyState>,
    /// Ends the attempts (route `timeouts.total`).
    pub deadline: Option<tokio::time::Instant>,
    /// The gateway's fields, sent with every attempt.
    pub added: &'a Added,
    /// Where the upstream's interim responses go (the downstream connection).
    pub interim: Option<&'a dyn Interim>,
    /// The client's connection is TLS (sticky cookies are `Secure` then by default).
    pub tls: bool,
}

/// A copy of the request head for retries that need to send the request again; only taken
/// for bodiless requests on routes that retry.
struct Replay {
    head: Request<()>,
}

impl Replay {
    fn request(&self) -> Request<RequestBody> {
        copy_head(&self.head, RequestBody::empty())
    }
}

/// A new request with `r`'s method, URI, version and headers (not its extensions).
pub(super) fn copy_head<A, B>(r: &Request<A>, body: B) -> Request<B> {
    let mut c = Request::new(body);
    *c.method_mut() = r.method().clone();
    *c.uri_mut() = r.uri().clone();
    *c.version_mut() = r.version();
    *c.headers_mut() = r.headers().clone();
    c
}

type Failed = (ProxyError, Option<String>);

/// What an attempt ended with, and what a retry would send.
enum Step {
    Done(Result<Answer, Failed>),
    /// Retry if allowed; otherwise `fallback` stands.
    Retry {
        fallback: Result<Answer, Failed>,
        next: Next,
    },
}

/// The request a retry sends.
enum Next {
    /// The same one: it never left.
    Same,
    /// A fresh copy of the replayable head.
    Replay,
}

/// One attempt under way: its target and what its outcome is reported to.
struct Attempt<'a> {
    target: usize,
    admission: Admission<'a>,
    inflight: InFlight<'a>,
    /// When the attempt started (one clock read serves the choice, the start and the
    /// outcome's time).
    started: Instant,
    limit: Duration,
}

/// The FORWARD phase: sends the upstream request (and its mirror copy), retrying as the
/// route allows. On a failure the cache may answer with a stale response (taking `pending`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    snap: &Arc<Snapshot>,
    routed: &Routed<'_>,
    group: &UpstreamGroup,
    out: &mut Outbound,
    arrival: &Arrival,
    pending: &mut Option<Pending>,
    done: &mut Completion,
    interim: Option<&dyn Interim>,
) -> Result<Answer, Stop> {
    let route = routed.route;
    let exchange = Exchange {
        snap,
        route,
        group,
        client_ip: arrival.client_ip,
        geo: routed.geo.as_ref(),
        path: out.downstream_uri.path(),
        host_from_target: out.host_from_target,
        body_state: out.body_state.as_deref(),
        deadline: out.deadline,
        added: &out.added,
        interim,
        tls: out.tls,
    };
    let up_start = done
        .log
        .as_deref()
        .is_some_and(LogData::wants_upstream_time)
        .then(Instant::now);
    if let Some((shadow, share)) = route.mirror {
        if fastrand::f64() < share {
            mirror::spawn(snap.clone(), shadow, &mut out.request, &out.added);
        }
    }
    let attempts = done.trace_mut().map(Attempts::new);
    let result = forward(&exchange, &mut out.request, attempts).await;
    // The map is reused for the next request's head; the body ends with the request.
    crate::spare_maps::give(std::mem::take(out.request.headers_mut()));
    if let (Some(log), Some(start)) = (done.log_mut(), up_start) {
        log.upstream_duration = Some(start.elapsed());
    }
    let (err, target) = match result {
        Ok(answer) => {
            if let Some(log) = done.log_mut() {
                let target = &group.targets[answer.target];
                log.set_target(&target.label, &target.history);
            }
            return Ok(answer);
        }
        Err(failed) => failed,
    };
    if let Some(log) = done.log_mut() {
        log.set_target_name(target.as_deref());
    }
    tracing::debug!(error = %err, "upstream request failed");
    match (pending.take(), &snap.cache, &route.cache) {
        (Some(p), Some(svc), Some(rules)) => Err(Stop::respond(p.failed(
            svc,
            rules,
            err,
            &arrival.request_id,
        ))),
        _ => Err(Stop::Fail(err)),
    }
}

/// Where a traced request's attempts are recorded, each with its own span, named as the
/// parent in the `traceparent` it sends.
pub(super) struct Attempts<'a> {
    spans: &'a mut trace::Spans,
}

impl<'a> Attempts<'a> {
    pub(super) fn new(t: &'a mut RequestTrace) -> Self {
        Attempts {
            spans: &mut t.spans,
        }
    }

    /// A new span for the next attempt, named in the `traceparent` it sends.
    fn begin(&self, added: &Added) -> u64 {
        let id = trace::new_span_id();
        added.set_trace_span(id);
        id
    }

    /// Records attempt `span` (number `resend` + 1) to `target` of `group`.
    fn record(
        &mut self,
        span: u64,
        a: &Attempt<'_>,
        group: &UpstreamGroup,
        sent: &Result<Result<Response<UpstreamBody>, SendError>, crate::timer::Elapsed>,
        resend: u32,
        end: Instant,
    ) {
        let (status, error) = match sent {
            Ok(Ok(r)) => (r.status().as_u16(), None),
            Ok(Err(e)) if e.error.is_connect() => (0, Some("connect_error")),
            Ok(Err(_)) => (0, Some("upstream_error")),
            Err(_) => (0, Some("timeout")),
        };
        self.spans.push(ChildSpan {
            span_id: span,
            start: a.started,
            end,
            kind: ChildKind::Attempt(trace::Attempt {
                upstream: group.name.clone(),
                target: group.targets[a.target].address,
                status,
                resend,
                error,
            }),
        });
    }
}

/// Sends `req` to a target of the group, retrying as the route allows.
/// The request stays the caller's: attempts borrow it, and a replay replaces it.
pub(super) async fn forward(
    x: &Exchange<'_>,
    req: &mut Request<RequestBody>,
    mut traced: Option<Attempts<'_>>,
) -> Result<Answer, Failed> {
    let retry = x.route.retry.as_ref();
    if let Some(r) = retry {
        r.budget.deposit(Instant::now());
    }
    let method_ok = retry.is_some_and(|r| r.policy.non_idempotent || is_idempotent(req.method()));
    // Only bodiless requests can be sent again once they left; others are retried only
    // when they never left (connect failures).
    let replay = retry
        .filter(|r| {
            r.policy.attempts > 1 && method_ok && http_body::Body::is_end_stream(req.body())
        })
        .map(|_| Replay {
            head: copy_head(req, ()),
        });
    let max_attempts = retry.map_or(1, |r| r.policy.attempts);
    let group = x.group;
    let profile = match x.route.timeouts.connect {
        Some(connect_timeout) => Cow::Owned(ClientProfile {
            connect_timeout,
            ..group.client.clone()
        }),
        None => Cow::Borrowed(&group.client),
    };
    let mut tried: u64 = 0;
    let mut attempt = 1;
    let sticky_pin = group.sticky.as_ref().and_then(|s| s.pinned(req.headers()));
    loop {
        let a = match begin(x, req, sticky_pin, &mut tried) {
            Some(a) => a,
            None => {
                let err = ProxyError::NoHealthyTarget(group.name.to_string());
                return Err((err, None));
            }
        };
        let address = group.targets[a.target].address;
        let deadline = a.started + a.limit;
        let span = traced.as_ref().map(|t| t.begin(x.added));
        let sending = pool::send(&profile, address, req, x.added, a.started, x.interim);
        let sent = crate::timer::timeout_at(deadline, sending).await;
        // One clock read for the attempt's outcome, its metrics and its span.
        let elapsed = a.started.elapsed();
        if let (Some(t), Some(span)) = (traced.as_mut(), span) {
            t.record(span, &a, group, &sent, attempt - 1, a.started + elapsed);
        }
        let step = settle(x, a, sent, elapsed, replay.as_ref(), sticky_pin);
        match step {
            Step::Done(r) => return r,
            Step::Retry { fallback, next } => {
                if attempt >= max_attempts || !may_retry(x, attempt).await {
                    return fallback;
                }
                if let Err((e, _)) = &fallback {
                    tracing::debug!(error = %e, attempt, "retrying on another target");
                }
                if let (Next::Replay, Some(rp)) = (next, &replay) {
                    *req = rp.request();
                }
                attempt += 1;
            }
        }
    }
}

/// Chooses the target of an attempt and admits the request to it; `None` when no target
/// can take it.
fn begin<'a>(
    x: &Exchange<'a>,
    req: &mut Request<RequestBody>,
    sticky_pin: Option<usize>,
    tried: &mut u64,
) -> Option<Attempt<'a>> {
    let group = x.group;
    let retry = x.route.retry.as_ref();
    let per_try = retry
        .and_then(|r| r.policy.per_try_timeout)
        .or(x.route.timeouts.response_header)
        .unwrap_or(group.request_timeout);
    let mut now = Instant::now();
    let (ti, admission) = loop {
        let ti = pick(x, req, sticky_pin, *tried, now)?;
        if ti < 64 {
            *tried |= 1 << ti;
        }
        if let Some(a) = group.health.try_admit(ti, now) {
            break (ti, a);
        }
        // The circuit opened between the choice and now: choose again (not an attempt).
        if (*tried).count_ones() as usize >= group.targets.len().min(64) {
            return None;
        }
        now = Instant::now();
    };
    prepare_for(x, req, group, ti);
    let limit = match x.deadline {
        Some(d) => per_try.min(d.saturating_duration_since(tokio::time::Instant::now())),
        None => per_try,
    };
    Some(Attempt {
        target: ti,
        admission,
        inflight: group.balancer.start(ti),
        started: now,
        limit,
    })
}

/// Reports an attempt's outcome and decides what comes next.
fn settle(
    x: &Exchange<'_>,
    a: Attempt<'_>,
    sent: Result<Result<Response<UpstreamBody>, SendError>, crate::timer::Elapsed>,
    elapsed: Duration,
    replay: Option<&Replay>,
    sticky_pin: Option<usize>,
) -> Step {
    let group = x.group;
    let retry = x.route.retry.as_ref();
    let ti = a.target;
    let target = &group.targets[ti];
    let label = || Some(target.label.to_string());
    let (unsent, error) = match sent {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            if x.snap.metrics_on {
                target.metrics.observe(status, elapsed);
            }
            let outcome = if status >= 500 {
                Outcome::Status5xx
            } else {
                Outcome::Success
            };
            a.admission.record(outcome, a.started + elapsed);
            a.inflight.finish(elapsed);
            let pin = group
                .sticky
                .as_ref()
                .filter(|_| sticky_pin != Some(ti))
                .and_then(|s| s.set_cookie(ti, x.tls).cloned());
            let answer = Ok(Answer {
                response,
                target: ti,
                pin,
            });
            let wants_retry = retry.is_some_and(|r| r.policy.statuses.contains(&status));
            return match replay.filter(|_| wants_retry) {
                Some(_) => Step::Retry {
                    fallback: answer,
                    next: Next::Replay,
                },
                None => Step::Done(answer),
            };
        }
        Ok(Err(SendError { error, unsent })) => (unsent, Some(error)),
        Err(_) => (false, None),
    };
    if x.snap.metrics_on {
        target.metrics.observe(0, elapsed);
    }
    drop(a.inflight);
    if let Some(err) = client_fault(x.body_state) {
        drop(a.admission);
        return Step::Done(Err((err, label())));
    }
    a.admission.record(Outcome::Failure, a.started + elapsed);
    let policy = retry.map(|r| &r.policy);
    let (err, next) = match error {
        Some(error) => {
            let next = match policy {
                Some(p) if unsent && p.on_connect_failure => Some(Next::Same),
                Some(p) if p.on_reset && replay.is_some() => Some(Next::Replay),
                _ => None,
            };
            (upstream_error(target.label.to_string(), error), next)
        }
        None => (
            ProxyError::UpstreamTimeout {
                target: target.label.to_string(),
                timeout_ms: a.limit.as_millis(),
            },
            replay
                .filter(|_| policy.is_some_and(|p| p.on_timeout))
                .map(|_| Next::Replay),
        ),
    };
    match next {
        Some(next) => Step::Retry {
            fallback: Err((err, label())),
            next,
        },
        None => Step::Done(Err((err, label()))),
    }
}

/// Whether attempt `attempt + 1` may go out: the budget allows it and there is time left;
/// waits the backoff before saying yes.
async fn may_retry(x: &Exchange<'_>, attempt: u32) -> bool {
    let Some(r) = x.route.retry.as_ref() else {
        return false;
    };
    if !r.budget.try_withdraw(Instant::now()) {
        x.snap.resilience.retry_budget_exhausted(&x.route.name);
        return false;
    }
    let delay = r.backoff.delay(attempt, fastrand::f64());
    if let Some(d) = x.deadline {
        if tokio::time::Instant::now() + delay >= d {
            return false;
        }
    }
    x.snap.resilience.retried(&x.route.name);
    tokio::time::sleep(delay).await;
    true
}

/// The target for this attempt: the sticky pin when it is usable, else the balancer's
/// choice among available targets not tried yet (or tried ones, when nothing else is left).
fn pick(
    x: &Exchange<'_>,
    req: &Request<RequestBody>,
    pin: Option<usize>,
    tried: u64,
    now: Instant,
) -> Option<usize> {
    let health = &x.group.health;
    let was_tried = |i: usize| i < 64 && tried & (1 << i) != 0;
    if let Some(p) = pin {
        if !was_tried(p) && health.available(p, now) {
            return Some(p);
        }
    }
    let input = PickInput {
        client_ip: x.client_ip,
        headers: req.headers(),
        path: x.path,
    };
    let balancer = &x.group.balancer;
    let fresh = match &x.group.locality {
        None => balancer.pick(&input, &|i| was_tried(i) || !health.available(i, now)),
        Some(near) => {
            let usable = |i: usize| !was_tried(i) && health.available(i, now);
            let chosen = near.pick(x.geo, &usable, &|i| balancer.in_flight(i), &|excluded| {
                balancer.pick(&input, excluded)
            });
            chosen.or_else(|| {
                let any = balancer.pick(&input, &|i| !usable(i));
                if any.is_some() {
                    near.count_fallback();
                }
                any
            })
        }
    };
    match fresh {
        Some(i) => Some(i),
        None if tried != 0 => x
            .group
            .balancer
            .pick(&input, &|i| !health.available(i, now)),
        None => None,
    }
}

/// Per-target parts of the upstream request: the HTTP/2 authority and a Host for requests
/// that came without one.
fn prepare_for(x: &Exchange<'_>, req: &mut Request<RequestBody>, group: &UpstreamGroup, ti: usize) {
    let target = &group.targets[ti];
    if x.host_from_target {
        req.headers_mut()
            .insert(header::HOST, authority_value(&target.authority));
    }
    if group.client.protocol == UpstreamProtocol::H2 {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let tls = group.client.tls.is_some();
        *req.uri_mut() = upstream_uri(tls, target.authority.clone(), path);
        *req.version_mut() = Version::HTTP_2;
    }
}

/// The request failed because of the client's body, not the upstream.
fn client_fault(state: Option<&RequestBodyState>) -> Option<ProxyError> {
    let s = state?;
    if s.too_large.load(Ordering::Relaxed) {
        Some(ProxyError::PayloadTooLarge)
    } else if s.timed_out.load(Ordering::Relaxed) {
        Some(ProxyError::RequestBodyTimeout)
    } else if s.failed.load(Ordering::Relaxed) {
        Some(ProxyError::DownstreamBody)
    } else {
        None
    }
}

fn upstream_error(target: String, source: UpstreamError) -> ProxyError {
    if source.is_connect() {
        ProxyError::UpstreamConnect { target, source }
    } else {
        ProxyError::UpstreamFailed { target, source }
    }
}
