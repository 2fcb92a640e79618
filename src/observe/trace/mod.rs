//! Distributed tracing: every request of a gateway with `tracing` gets a trace context
//! (continued from a trusted caller's `traceparent`, or new), passed on to its upstreams,
//! and a record of its spans (the request, the phases that wait on something, each
//! upstream attempt). Whether the record is exported is decided when the request ends: by
//! the ratio decided at its start (head sampling), or because it failed or was slow. Records
//! go to the exporter through a bounded queue; a full queue drops them (counted), so a slow
//! or absent receiver never holds a request up.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use tokio::sync::mpsc;

use crate::config::model::TracingSettings;
use crate::observe::metrics::TraceMetrics;

mod export;
mod otlp;

pub use crate::trace_context as context;
pub use context::{TRACEPARENT, TRACESTATE};

/// The compiled `tracing` section: sampling, and the queue to the exporter.
pub struct Tracer {
    /// Head sampling: a trace whose id's low 64 bits fall under this is recorded.
    threshold: u64,
    /// Every trace is recorded (ratio 1).
    always: bool,
    errors: bool,
    slower_than: Option<Duration>,
    queue: mpsc::Sender<Box<RequestTrace>>,
    metrics: TraceMetrics,
}

/// The trace of one request, recorded while it runs.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    /// The trace id in two halves: a `u128` would align the record to 16 bytes, which the
    /// allocator serves on a slower path.
    trace_id: [u64; 2],
    /// The request's own (server) span.
    pub span_id: u64,
    /// The caller's span, when its context was continued.
    parent: Option<u64>,
    /// The head decision, passed on in the `traceparent` flags.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on with its context.
    tracestate: Option<HeaderValue>,
    /// The wall-clock time of `start`, taken only for an exported record.
    time: Option<SystemTime>,
    start: Instant,
    end: Instant,
    pub status: u16,
    pub request: RequestFacts,
    pub route: Option<Arc<str>>,
    pub spans: Spans,
}

/// The child spans of a request: the first in place (most requests have one attempt and
/// no phase that waits), so recording it allocates nothing and the record stays small.
#[derive(Default)]
pub struct Spans {
    first: Option<ChildSpan>,
    more: Vec<ChildSpan>,
}

impl Spans {
    pub fn push(&mut self, span: ChildSpan) {
        match &self.first {
            None => self.first = Some(span),
            Some(_) => self.more.push(span),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChildSpan> {
        self.first.iter().chain(&self.more)
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// What the request span says of the request, read only if the record is exported: the
/// path copied (short ones in place), the `Host` value as a shared handle.
pub struct RequestFacts {
    pub method: Method,
    pub path: PathCopy,
    pub host: Option<HeaderValue>,
    pub client: IpAddr,
    pub scheme: &'static str,
    pub version: http::Version,
}

/// A request's path, copied in place when it is short (most are), so that keeping it costs
/// no allocation and no reference count.
pub enum PathCopy {
    Short { len: u8, bytes: [u8; 62] },
    Long(Box<str>),
}

impl PathCopy {
    pub fn of(path: &str) -> PathCopy {
        let mut bytes = [0; 62];
        match bytes.get_mut(..path.len()) {
            Some(place) => {
                place.copy_from_slice(path.as_bytes());
                PathCopy::Short {
                    len: path.len() as u8,
                    bytes,
                }
            }
            None => PathCopy::Long(path.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PathCopy::Short { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            PathCopy::Long(path) => path,
        }
    }
}

/// A span inside the request's: a phase that waited on something, or an upstream attempt.
pub struct ChildSpan {
    pub span_id: u64,
    pub start: Instant,
    pub end: Instant,
    pub kind: ChildKind,
}

/// What a child span was.
pub enum ChildKind {
    /// A phase of the pipeline (`access`, `rate_limit`, `cache_lookup`).
    Phase(&'static str),
    /// One try at an upstream target.
    Attempt(Attempt),
}

/// One upstream attempt.
pub struct Attempt {
    pub upstream: Arc<str>,
    pub target: SocketAddr,
    /// The response status; 0 when none came.
    pub status: u16,
    /// Attempts before this one (`http.request.resend_count`).
    pub resend: u32,
    /// Why no response came (`connect_error`, `timeout`, `upstream_error`).
    pub error: Option<&'static str>,
}

impl Tracer {
    /// Starts the exporter on `runtime` and returns the tracer feeding it.
    pub fn start(
        settings: &TracingSettings,
        runtime: &tokio::runtime::Handle,
        metrics: TraceMetrics,
    ) -> Arc<Tracer> {
        let (queue, rx) = mpsc::channel(settings.queue_size);
        runtime.spawn(export::run(rx, settings.clone(), metrics.clone()));
        Arc::new(Tracer {
            threshold: (settings.sample_ratio * u64::MAX as f64) as u64,
            always: settings.sample_ratio >= 1.0,
            errors: settings.sample_errors,
            slower_than: settings.sample_slower_than,
            queue,
            metrics,
        })
    }

    /// The trace of a request that arrived at `start`: its caller's, when `trusted` and the
    /// caller sent a valid `traceparent`, or a new one.
    pub fn begin(
        self: &Arc<Self>,
        trusted: bool,
        headers: &HeaderMap,
        request: RequestFacts,
        start: Instant,
    ) -> RequestTrace {
        let parent = trusted
            .then(|| headers.get(TRACEPARENT))
            .flatten()
            .and_then(|v| context::parse(v.as_bytes()));
        let (trace_id, sampled) = match parent {
            Some(p) => (p.trace_id, p.sampled),
            None => {
                let id = new_trace_id();
                (id, self.always || (id as u64) < self.threshold)
            }
        };
        RequestTrace {
            tracer: self.clone(),
            trace_id: [(trace_id >> 64) as u64, trace_id as u64],
            span_id: new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            tracestate: parent.and_then(|_| headers.get(TRACESTATE)).cloned(),
            time: None,
            start,
            end: start,
            status: 0,
            request,
            route: None,
            spans: Spans::default(),
        }
    }

    /// A tracer that records everything into a queue nobody reads (for tests of what a
    /// record holds).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Tracer> {
        let (queue, _) = mpsc::channel(1);
        Arc::new(Tracer {
            threshold: u64::MAX,
            always: true,
            errors: true,
            slower_than: None,
            queue,
            metrics: TraceMetrics::default(),
        })
    }

    /// Whether a finished request is exported: sampled at its start, or failed, or slow.
    fn keeps(&self, t: &RequestTrace) -> bool {
        t.sampled
            || (self.errors && t.status >= 500)
            || self
                .slower_than
                .is_some_and(|d| t.end.saturating_duration_since(t.start) > d)
    }
}

impl RequestTrace {
    /// Sets the request's trace context on `headers` (a stored job): `parent` as the span
    /// the receiver continues, and the caller's `tracestate` only when its context was
    /// continued.
    pub fn propagate(&self, headers: &mut HeaderMap, parent: u64) {
        headers.insert(
            TRACEPARENT,
            context::format(self.trace_id(), parent, self.sampled),
        );
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }

    pub fn trace_id(&self) -> u128 {
        u128::from(self.trace_id[0]) << 64 | u128::from(self.trace_id[1])
    }

    /// The caller's context is continued (its `tracestate` goes on with the request).
    pub fn continued(&self) -> bool {
        self.parent.is_some()
    }

    /// Records a phase that ran from `start` until now.
    pub fn phase(&mut self, name: &'static str, start: Instant) {
        self.spans.push(ChildSpan {
            span_id: new_span_id(),
            start,
            end: Instant::now(),
            kind: ChildKind::Phase(name),
        });
    }

    /// The request ended with `status` at `end`; true when the record is kept (then
    /// [`RequestTrace::export`] sends it).
    pub fn end(&mut self, status: u16, end: Instant) -> bool {
        self.status = status;
        self.end = end;
        if !self.tracer.keeps(self) {
            return false;
        }
        let ran = end.saturating_duration_since(self.start) + self.start.elapsed();
        self.time = SystemTime::now().checked_sub(ran);
        true
    }

    /// Hands a kept record to the exporter, or drops it (counted) when the exporter's queue
    /// is full.
    pub fn export(self) {
        let tracer = self.tracer.clone();
        if tracer.queue.try_send(Box::new(self)).is_err() {
            tracer.metrics.dropped.inc();
        }
    }

    /// Ends the record and exports it if it is kept.
    pub fn finish(mut self, status: u16, end: Instant) {
        if self.end(status, end) {
            self.export();
        }
    }

    /// The trace id as 32 hex digits (for the access log and error bodies).
    pub fn trace_id_hex(&self) -> String {
        context::to_hex(self.trace_id(), 32)
    }

    /// The request span's id as 16 hex digits.
    pub fn span_id_hex(&self) -> String {
        context::to_hex(u128::from(self.span_id), 16)
    }
}

/// A new trace id: random, never zero.
fn new_trace_id() -> u128 {
    fastrand::u128(1..)
}

/// A new span id: random, never zero.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tracer(ratio: f64) -> (Arc<Tracer>, mpsc::Receiver<Box<RequestTrace>>) {
        let (queue, rx) = mpsc::channel(2);
        let t = Arc::new(Tracer {
            threshold: (ratio * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
            errors: true,
            slower_than: Some(Duration::from_secs(5)),
            queue,
            metrics: TraceMetrics::default(),
        });
        (t, rx)
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            method: Method::GET,
            path: PathCopy::of("/"),
            host: Some(HeaderValue::from_static("a.test")),
            client: IpAddr::from([127, 0, 0, 1]),
            scheme: "http",
            version: http::Version::HTTP_11,
        }
    }

    fn with_parent(sampled: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{sampled}");
        h.insert(TRACEPARENT, v.parse().unwrap());
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        h
    }

    #[test]
    fn a_path_is_kept_whatever_its_length() {
        for path in [
            "/",
            "/a/b?c=d",
            &format!("/{}", "x".repeat(61)),
            &"/y".repeat(100),
        ] {
            assert_eq!(PathCopy::of(path).as_str(), path);
        }
    }

    #[test]
    fn a_trusted_callers_context_is_continued_and_an_untrusted_one_replaced() {
        let (t, _rx) = tracer(0.0);
        let continued = t.begin(true, &with_parent("01"), facts(), Instant::now());
        assert_eq!(continued.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(continued.parent, Some(0x00f067aa0ba902b7));
        assert!(continued.sampled, "the caller's flag is followed");
        let mut out = HeaderMap::new();
        continued.propagate(&mut out, 7);
        assert_eq!(
            out[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000007-01"
        );
        assert_eq!(out[TRACESTATE], "vendor=x");
        let replaced = t.begin(false, &with_parent("01"), facts(), Instant::now());
        assert_ne!(replaced.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(replaced.parent, None);
        assert!(!replaced.sampled, "ratio 0");
        let mut out = with_parent("01");
        replaced.propagate(&mut out, 7);
        assert!(
            out.get(TRACESTATE).is_none(),
            "an untrusted tracestate is dropped"
        );
    }

    #[test]
    fn the_ratio_samples_about_its_share_of_new_traces() {
        let (t, _rx) = tracer(0.25);
        let n = (0..20_000)
            .filter(|_| {
                t.begin(false, &HeaderMap::new(), facts(), Instant::now())
                    .sampled
            })
            .count();
        assert!((4_000..6_000).contains(&n), "{n}");
        let (all, _rx) = tracer(1.0);
        assert!(
            all.begin(false, &HeaderMap::new(), facts(), Instant::now())
                .sampled
        );
    }

    #[test]
    fn errors_and_slow_requests_are_kept_whatever_the_ratio_and_a_full_queue_drops() {
        let (t, mut rx) = tracer(0.0);
        let start = Instant::now();
        t.begin(false, &HeaderMap::new(), facts(), Instant::now())
            .finish(200, start);
        assert!(rx.try_recv().is_err(), "sampled out");
        t.begin(false, &HeaderMap::new(), facts(), Instant::now())
            .finish(502, start);
        assert_eq!(rx.try_recv().unwrap().status, 502);
        let slow = t.begin(false, &HeaderMap::new(), facts(), Instant::now());
        let end = slow.start + Duration::from_secs(6);
        slow.finish(200, end);
        assert!(rx.try_recv().is_ok(), "slow");
        for _ in 0..3 {
            t.begin(false, &HeaderMap::new(), facts(), Instant::now())
                .finish(500, start);
        }
        assert_eq!(t.metrics.dropped.get(), 1, "a queue of 2 drops the third");
    }
}
