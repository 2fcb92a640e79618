//! The `log` phase: metrics and the access-log line of one request, run exactly once, when
//! its response body ends or is dropped (errors and client disconnects included), or, for a
//! request dropped before it had an answer (the client left), when the pipeline is dropped:
//! status 499. Earlier phases record here what the log reports: the route, the consumer, the
//! upstream target.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response};

use super::access::apply_cors;
use super::body::ProxyBody;
use super::request::Arrival;
use crate::observe::access_log::{AccessLog, Record};
use crate::observe::history::{Number, Numbered};
use crate::observe::metrics::RouteMetrics;
use crate::observe::trace::{RequestFacts, RequestTrace};
use crate::ratelimit::Hold;
use crate::snapshot::Snapshot;
use crate::upstream::limit::Slot;
use crate::upstream::request_body::RequestBodyState;

/// What the `log` phase of one request needs, and what the request holds until it ends.
pub struct Completion {
    start: Instant,
    method: Method,
    status: u16,
    pub(super) route_metrics: Option<RouteMetrics>,
    /// What the access log, the history and the trace record of the request, in one
    /// allocation, when any of them is on.
    pub(super) log: Option<Box<LogData>>,
    /// The request's place in its upstream group's concurrency limit, freed at the end.
    pub(super) slot: Option<Slot>,
    /// Places held in rate-limit concurrency policies, freed at the end.
    pub(super) holds: Vec<Hold>,
    /// CORS fields of the route for this request's origin, set on whatever answers it.
    pub(super) cors: Option<Box<http::HeaderMap>>,
    /// The route's response header transforms for this request, applied to whatever
    /// answers it after the access phase.
    pub(super) edits: Option<Box<crate::transform::Resolved>>,
    /// On a cached route, the `Cache-Status` of an answer that has none of its own.
    pub(super) cache_status: Option<HeaderValue>,
    /// On a rate-limited route, the `RateLimit-Policy` of an answer given before the
    /// policies were checked.
    pub(super) rate_policy: Option<HeaderValue>,
    /// The request's place in its route's tunnel limits (a WebSocket upgrade), held by
    /// the tunnel until it ends.
    pub(super) tunnel_permit: Option<crate::tunnel::Permit>,
    /// The log phase has run.
    logged: bool,
}

/// What the log line of a tunnel adds.
#[derive(Clone, Copy)]
struct TunnelEnd {
    to_upstream: u64,
    close_reason: &'static str,
}

/// The status logged for a request whose client left before it was answered (nginx's
/// non-standard 499 "client closed request"): nothing was sent, so no real status applies.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The request's record, gathered while it runs, when the access log, the history or
/// tracing is on: the fields the log line and the history take, and the trace.
pub(super) struct LogData {
    /// The request's trace, when the gateway traces (`tracing`): finished with the log.
    pub trace: Option<RequestTrace>,
    /// The access log, when on (this record may be kept for the history alone).
    log: Option<Arc<AccessLog>>,
    history: Option<Arc<crate::observe::history::History>>,
    sampling: Option<Arc<crate::observe::access_log::LogSampling>>,
    time: SystemTime,
    /// The request's id, for the log line (none when only the history records).
    request_id: Option<HeaderValue>,
    client_ip: IpAddr,
    host: String,
    path: String,
    /// The route and the upstream target, by name for the log line (only when the access
    /// log is on) and by number for the history (only when it is on).
    route: Option<Arc<str>>,
    route_number: Option<u32>,
    upstream: Option<Arc<str>>,
    target_number: Option<u32>,
    pub consumer: Option<Arc<str>>,
    pub upstream_duration: Option<Duration>,
    pub req_body: Option<Arc<RequestBodyState>>,
    pub geo: Option<crate::geo::Location>,
    /// On a cached route: whether the cache answered.
    pub cache_hit: Option<bool>,
    /// On an `ai` route: the model exchange's record.
    pub ai: Option<crate::ai::exchange::SharedTally>,
}

impl LogData {
    /// The route that took the request.
    pub(super) fn set_route(&mut self, name: &Arc<str>, slot: &Number) {
        if self.log.is_some() {
            self.route = Some(name.clone());
        }
        if self.history.is_some() {
            self.route_number = Some(slot.get(Numbered::Route, name));
        }
    }

    /// The time the upstream took is wanted (for the log line).
    pub(super) fn wants_upstream_time(&self) -> bool {
        self.log.is_some()
    }

    /// The upstream target that answered.
    pub(super) fn set_target(&mut self, label: &Arc<str>, slot: &Number) {
        if self.log.is_some() {
            self.upstream = Some(label.clone());
        }
        if self.history.is_some() {
            self.target_number = Some(slot.get(Numbered::Target, label));
        }
    }

    /// The upstream target last tried, when none answered.
    pub(super) fn set_target_name(&mut self, label: Option<&str>) {
        let Some(label) = label else { return };
        if self.log.is_some() {
            self.upstream = Some(Arc::from(label));
        }
        if self.history.is_some() {
            self.target_number = Some(crate::observe::history::number(Numbered::Target, label));
        }
    }
}

impl Completion {
    /// Starts the record of a request that just arrived.
    pub(super) fn begin<B>(snap: &Snapshot, arrival: &Arrival, req: &Request<B>) -> Completion {
        let start = Instant::now();
        Completion {
            start,
            method: req.method().clone(),
            status: 0,
            route_metrics: None,
            slot: None,
            holds: Vec::new(),
            cors: None,
            edits: None,
            cache_status: None,
            rate_policy: None,
            tunnel_permit: None,
            logged: false,
            log: Self::observed(snap, arrival, req, start),
        }
    }

    /// The request's record, when the access log, the history or tracing is on.
    fn observed<B>(
        snap: &Snapshot,
        arrival: &Arrival,
        req: &Request<B>,
        start: Instant,
    ) -> Option<Box<LogData>> {
        if snap.access_log.is_none() && snap.history.is_none() && snap.tracer.is_none() {
            return None;
        }
        // The log's own text fields only for the log.
        let log = snap.access_log.clone();
        // The log line's time; the history stamps the end itself.
        let time = match log {
            Some(_) => SystemTime::now(),
            None => SystemTime::UNIX_EPOCH,
        };
        let mut data = Some(Box::new(LogData {
            host: match log {
                Some(_) => arrival.host().into_owned(),
                None => String::new(),
            },
            path: match log {
                Some(_) => req.uri().path().to_owned(),
                None => String::new(),
            },
            request_id: log.as_ref().map(|_| arrival.request_id.clone()),
            log,
            history: snap.history.clone(),
            sampling: snap.log_sampling.clone(),
            time,
            client_ip: arrival.client_ip,
            route: None,
            route_number: None,
            consumer: None,
            upstream: None,
            target_number: None,
            upstream_duration: None,
            req_body: None,
            geo: None,
            cache_hit: None,
            ai: None,
            trace: None,
        }));
        // Made in its place in the record: the trace is large, and each move copies it.
        if let (Some(t), Some(data)) = (&snap.tracer, &mut data) {
            let facts = RequestFacts {
                method: req.method().clone(),
                path: crate::observe::trace::PathCopy::of(req.uri().path()),
                host: arrival.host_value.clone(),
                client: arrival.client_ip,
                scheme: if arrival.tls { "https" } else { "http" },
                version: req.version(),
            };
            data.trace = Some(t.begin(arrival.trust_trace, req.headers(), facts, start));
        }
        data
    }

    /// The current time, when the request is traced and the route `configured` the phase
    /// about to run: the start of the phase's span.
    pub(super) fn clock(&self, configured: bool) -> Option<Instant> {
        (configured && self.trace().is_some()).then(Instant::now)
    }

    /// The request's trace, when the gateway traces.
    pub(super) fn trace(&self) -> Option<&RequestTrace> {
        self.log.as_ref()?.trace.as_ref()
    }

    pub(super) fn trace_mut(&mut self) -> Option<&mut RequestTrace> {
        self.log.as_mut()?.trace.as_mut()
    }

    /// Records the span of phase `name`, begun at `start` (from [`Completion::clock`]).
    pub(super) fn phase(&mut self, name: &'static str, start: Option<Instant>) {
        if let (Some(t), Some(start)) = (self.trace_mut(), start) {
            t.phase(name, start);
        }
    }

    /// The access-log fields, when the log is on.
    pub(super) fn log_mut(&mut self) -> Option<&mut LogData> {
        self.log.as_deref_mut()
    }

    /// Hands the `log` phase to the response body, which runs it when it ends; the route's
    /// CORS fields go on the response first, whatever answered it.
    pub(super) fn complete(mut self, resp: &mut Response<ProxyBody>) {
        self.status = resp.status().as_u16();
        if let Some(fields) = self.cors.take() {
            apply_cors(resp.headers_mut(), &fields);
        }
        if let Some(edits) = self.edits.take() {
            edits.apply(resp.headers_mut());
        }
        if let Some(policy) = self.rate_policy.take() {
            let headers = resp.headers_mut();
            if !headers.contains_key(&crate::ratelimit::headers::RATELIMIT_POLICY) {
                headers.insert(crate::ratelimit::headers::RATELIMIT_POLICY.clone(), policy);
            }
        }
        if let Some(status) = self.cache_status.take() {
            let headers = resp.headers_mut();
            if !headers.contains_key(crate::cache::status::CACHE_STATUS) {
                headers.insert(crate::cache::status::CACHE_STATUS, status);
            }
            if let Some(log) = self.log.as_deref_mut() {
                log.cache_hit = Some(
                    headers
                        .get(crate::cache::status::CACHE_STATUS)
                        .is_some_and(|v| crate::cache::status::is_hit(v.as_bytes())),
                );
            }
        }
        resp.body_mut().set_completion(self);
    }

    /// Runs the log phase of a response that ended at `now`.
    pub fn finish(mut self, bytes_out: u64, now: Instant) {
        self.record(bytes_out, now);
    }

    /// The request of a tunnel whose 101 was written: its request metrics are recorded now
    /// (the handshake's duration); its log line waits for [`Completion::finish_tunnel`].
    pub(super) fn into_tunnel(mut self) -> Completion {
        if let Some(m) = self.route_metrics.take() {
            m.observe(&self.method, self.status, self.start.elapsed());
        }
        self
    }

    /// Runs the log phase of a tunnel that ended: the line has the bytes relayed each way
    /// (`bytes_in` from the client), the time the request and its tunnel took, and why the
    /// tunnel closed.
    pub(super) fn finish_tunnel(mut self, outcome: &crate::tunnel::Outcome) {
        let tunnel = TunnelEnd {
            to_upstream: outcome.to_upstream,
            close_reason: outcome.reason.label(),
        };
        self.write(outcome.to_client, Instant::now(), Some(tunnel));
    }

    fn record(&mut self, bytes_out: u64, now: Instant) {
        self.write(bytes_out, now, None);
    }

    fn write(&mut self, bytes_out: u64, now: Instant, tunnel: Option<TunnelEnd>) {
        self.logged = true;
        let duration = now.saturating_duration_since(self.start);
        if let Some(m) = &self.route_metrics {
            m.observe(&self.method, self.status, duration);
        }
        let Some(mut l) = self.log.take() else {
            return;
        };
        let trace_ids = match &l.trace {
            Some(t) if l.log.is_some() => Some((t.trace_id_hex(), t.span_id_hex())),
            _ => None,
        };
        // Ended in place; moved out only when it is exported.
        if l.trace.as_mut().is_some_and(|t| t.end(self.status, now)) {
            if let Some(t) = l.trace.take() {
                t.export();
            }
        }
        let bytes_in = match tunnel {
            Some(t) => t.to_upstream,
            None => l
                .req_body
                .as_ref()
                .map_or(0, |b| b.bytes.load(std::sync::atomic::Ordering::Relaxed)),
        };
        if let Some(h) = &l.history {
            h.record(&crate::observe::history::Sample {
                route: l.route_number,
                target: l.target_number,
                consumer: l.consumer.as_deref(),
                client: l.client_ip,
                status: self.status,
                duration,
                bytes_in,
                bytes_out,
                cache_hit: l.cache_hit,
                at: now,
            });
        }
        let sampled_out = l.sampling.as_ref().is_some_and(|s| !s.keep(self.status));
        if let Some(log) = l.log.as_ref().filter(|_| !sampled_out) {
            let tally = (l.ai.as_ref()).and_then(|t| t.lock().ok().map(|t| t.clone()));
            let ai = tally.as_ref().map(|t| {
                let u = t.usage.unwrap_or_default();
                crate::observe::access_log::AiFields {
                    alias: &t.alias,
                    provider: &t.provider,
                    model: &t.model,
                    tokens_in: u.input,
                    tokens_out: u.output,
                    estimated: u.estimated,
                    ttft: t.ttft,
                    attempts: t.attempts,
                    cache_hit: t.cache_hit,
                }
            });
            log.write(&Record {
                ai: ai.as_ref(),
                time: l.time,
                request_id: l
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                client_ip: l.client_ip,
                method: self.method.as_str(),
                host: &l.host,
                path: &l.path,
                status: self.status,
                bytes_in,
                bytes_out,
                duration,
                route: l.route.as_deref(),
                consumer: l.consumer.as_deref(),
                upstream_target: l.upstream.as_deref(),
                upstream_duration: l.upstream_duration,
                close_reason: tunnel.map(|t| t.close_reason),
                geo: l.geo.as_ref(),
                trace: trace_ids.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
            });
        }
    }
}

impl Drop for Completion {
    /// A request dropped before its answer was handed to the response body: its handler was
    /// cancelled because the client left (an HTTP/1.1 connection closed while the request
    /// waited, an HTTP/2 stream reset). The log phase still runs, once.
    fn drop(&mut self) {
        if !self.logged {
            self.status = CLIENT_CLOSED_REQUEST;
            self.record(0, Instant::now());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{request, snapshot, Phase};
    use super::*;

    #[test]
    fn completing_puts_the_route_cors_fields_on_whatever_answered() {
        let snap = snapshot(
            "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes: [{upstream: u}]
",
        );
        let mut p = Phase::new(&snap, request("GET", "/", &[]));
        let mut fields = http::HeaderMap::new();
        fields.insert(
            "access-control-allow-origin",
            HeaderValue::from_static("https://app.test"),
        );
        p.done.cors = Some(Box::new(fields));
        let mut resp = Response::new(ProxyBody::empty());
        resp.headers_mut()
            .insert("access-control-allow-origin", HeaderValue::from_static("*"));
        p.done.complete(&mut resp);
        let origins: Vec<_> = resp
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(
            origins,
            ["https://app.test"],
            "the route's fields replace the upstream's"
        );
    }
}
