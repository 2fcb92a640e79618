//! OTLP's `ExportTraceServiceRequest` written straight from the request records as protobuf
//! bytes (opentelemetry-proto's `trace.proto`, `common.proto`, `resource.proto` field numbers),
//! one pass and one buffer: no message structs with a string per attribute in between.
//! The tests decode what this writes with the `opentelemetry-proto` types.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{ChildKind, RequestTrace};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// OTLP's `SpanKind` and `StatusCode` values.
const INTERNAL: u64 = 1;
const SERVER: u64 = 2;
const CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;

/// `Span.flags`: the W3C sampled flag, "has remote-parent information", "parent is remote".
const FLAGS_SAMPLED: u32 = 0x01;
const FLAGS_HAS_REMOTE: u32 = 0x100;
const FLAGS_REMOTE: u32 = 0x200;

/// A protobuf message being written.
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn text(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        self.tag(field, FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A nested message: written in place, then its length put in front of it.
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        self.tag(field, LEN);
        let start = self.buf.len();
        body(self);
        let len = self.buf.len() - start;
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            prefix[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        self.buf.splice(start..start, prefix[..=n].iter().copied());
    }

    /// The length of `n` as a varint.
    fn varint_len(n: usize) -> usize {
        (64 - (n as u64 | 1).leading_zeros() as usize).div_ceil(7)
    }

    /// `KeyValue` with a string `AnyValue` (field 9 of a span, 1 of a resource).
    fn attr_text(&mut self, field: u32, key: &str, value: &str) {
        let any = 1 + Self::varint_len(value.len()) + value.len();
        self.attr_head(field, key, any);
        self.tag(1, LEN);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// `KeyValue` with an integer `AnyValue`.
    fn attr_int(&mut self, field: u32, key: &str, value: i64) {
        let any = 1 + Self::varint_len(value as u64 as usize);
        self.attr_head(field, key, any);
        self.tag(3, VARINT);
        self.varint(value as u64);
    }

    /// A `KeyValue`'s tag, length and key, and its `AnyValue`'s tag and length (`any`
    /// bytes follow): the lengths worked out before anything is written, so nothing is
    /// moved into place afterwards.
    fn attr_head(&mut self, field: u32, key: &str, any: usize) {
        let kv = 1 + Self::varint_len(key.len()) + key.len() + 1 + Self::varint_len(any) + any;
        self.tag(field, LEN);
        self.varint(kv as u64);
        self.tag(1, LEN);
        self.varint(key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        self.tag(2, LEN);
        self.varint(any as u64);
    }

    fn error_status(&mut self) {
        self.message(15, |w| w.uint(3, STATUS_ERROR));
    }
}

/// The export request of `batch`, with `service` as the resource's `service.name`.
pub(super) fn request(batch: &[Box<RequestTrace>], service: &str) -> Vec<u8> {
    let mut w = Writer {
        buf: Vec::with_capacity(256 + batch.len() * 700),
    };
    let mut scratch = String::new();
    w.message(1, |w| {
        w.message(1, |w| w.attr_text(1, "service.name", service));
        w.message(2, |w| {
            w.message(1, |w| {
                w.text(1, "ferrogate");
                w.text(2, env!("CARGO_PKG_VERSION"));
            });
            for t in batch {
                spans(w, t, &mut scratch);
            }
        });
    });
    w.buf
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The request's span and its children (field 2 of `ScopeSpans`).
fn spans(w: &mut Writer, t: &RequestTrace, scratch: &mut String) {
    use std::fmt::Write as _;
    let trace_id = t.trace_id().to_be_bytes();
    let state = t.tracestate.as_ref().map_or(&[][..], |s| s.as_bytes());
    // Wall-clock times from the monotonic offsets, against the request's arrival time.
    let time = t.time.unwrap_or_else(SystemTime::now);
    let at = |i: Instant| unix_nanos(time + i.saturating_duration_since(t.start));
    let r = &t.request;
    let method = r.method.as_str();
    w.message(2, |w| {
        w.bytes(1, &trace_id);
        w.bytes(2, &t.span_id.to_be_bytes());
        w.bytes(3, state);
        if let Some(p) = t.parent {
            w.bytes(4, &p.to_be_bytes());
        }
        scratch.clear();
        scratch.push_str(method);
        if let Some(route) = &t.route {
            scratch.push(' ');
            scratch.push_str(route);
        }
        w.text(5, scratch);
        w.uint(6, SERVER);
        w.fixed64(7, unix_nanos(time));
        w.fixed64(8, at(t.end));
        w.attr_text(9, "http.request.method", method);
        w.attr_text(9, "url.path", r.path.as_str());
        w.attr_text(9, "url.scheme", r.scheme);
        let host = r.host.as_ref().and_then(|h| h.to_str().ok());
        w.attr_text(9, "server.address", host.map_or("", without_port));
        scratch.clear();
        let _ = write!(scratch, "{}", r.client);
        w.attr_text(9, "client.address", scratch);
        w.attr_text(9, "network.protocol.version", version(r.version));
        if let Some(route) = &t.route {
            w.attr_text(9, "ferrogate.route", route);
        }
        if t.status != 0 {
            w.attr_int(9, "http.response.status_code", i64::from(t.status));
        }
        if t.status >= 500 {
            scratch.clear();
            let _ = write!(scratch, "{}", t.status);
            w.attr_text(9, "error.type", scratch);
            w.error_status();
        }
        let remote = if t.parent.is_some() { FLAGS_REMOTE } else { 0 };
        w.fixed32(16, FLAGS_SAMPLED | FLAGS_HAS_REMOTE | remote);
    });
    for c in t.spans.iter() {
        w.message(2, |w| {
            w.bytes(1, &trace_id);
            w.bytes(2, &c.span_id.to_be_bytes());
            w.bytes(3, state);
            w.bytes(4, &t.span_id.to_be_bytes());
            match &c.kind {
                ChildKind::Phase(phase) => {
                    w.text(5, phase);
                    w.uint(6, INTERNAL);
                }
                ChildKind::Attempt(_) => {
                    w.text(5, method);
                    w.uint(6, CLIENT);
                }
            }
            w.fixed64(7, at(c.start));
            w.fixed64(8, at(c.end));
            if let ChildKind::Attempt(a) = &c.kind {
                w.attr_text(9, "http.request.method", method);
                scratch.clear();
                let _ = write!(scratch, "{}", a.target.ip());
                w.attr_text(9, "server.address", scratch);
                w.attr_int(9, "server.port", i64::from(a.target.port()));
                w.attr_text(9, "ferrogate.upstream", &a.upstream);
                if a.status != 0 {
                    w.attr_int(9, "http.response.status_code", i64::from(a.status));
                }
                if a.resend > 0 {
                    w.attr_int(9, "http.request.resend_count", i64::from(a.resend));
                }
                let error = match a.error {
                    Some(e) => Some(e),
                    None if a.status >= 400 => {
                        scratch.clear();
                        let _ = write!(scratch, "{}", a.status);
                        Some(scratch.as_str())
                    }
                    None => None,
                };
                if let Some(e) = error {
                    w.attr_text(9, "error.type", e);
                    w.error_status();
                }
            }
            w.fixed32(16, FLAGS_SAMPLED | FLAGS_HAS_REMOTE);
        });
    }
}

/// `host[:port]` without its port (an IPv6 literal keeps its brackets).
fn without_port(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
        _ => h,
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, Method};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    use super::super::{Attempt, ChildSpan, PathCopy, RequestFacts, Tracer, TRACEPARENT};
    use super::*;

    fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn what_is_written_decodes_as_the_otlp_request_with_every_field() {
        let tracer = Tracer::for_tests();
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        headers.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let facts = RequestFacts {
            method: Method::POST,
            path: PathCopy::of("/orders/7"),
            host: Some(HeaderValue::from_static("shop.test:8080")),
            client: std::net::IpAddr::from([192, 0, 2, 9]),
            scheme: "https",
            version: http::Version::HTTP_2,
        };
        let start = Instant::now();
        let mut t = tracer.begin(true, &headers, facts, start);
        t.route = Some(Arc::from("orders"));
        t.spans.push(ChildSpan {
            span_id: 0x1234,
            start,
            end: start + Duration::from_millis(3),
            kind: ChildKind::Attempt(Attempt {
                upstream: Arc::from("shop"),
                target: "127.0.0.1:9101".parse().unwrap(),
                status: 503,
                resend: 1,
                error: None,
            }),
        });
        t.status = 503;
        t.end = start + Duration::from_millis(5);
        t.time = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let bytes = request(&[Box::new(t)], "edge");
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        let resource = attrs(&rs.resource.as_ref().unwrap().attributes);
        assert_eq!(resource["service.name"], "edge");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "ferrogate");
        let [server, client] = &ss.spans[..] else {
            panic!("{:?}", ss.spans)
        };
        let trace_id = 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes();
        assert_eq!(server.trace_id, trace_id);
        assert_eq!(server.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(server.trace_state, "vendor=x");
        assert_eq!(server.flags, 0x301);
        assert_eq!(server.name, "POST orders");
        assert_eq!(server.kind, 2);
        assert_eq!(server.start_time_unix_nano, 1_800_000_000_000_000_000);
        assert_eq!(server.end_time_unix_nano, 1_800_000_000_005_000_000);
        assert_eq!(server.status.as_ref().unwrap().code, 2);
        let a = attrs(&server.attributes);
        assert_eq!(a["url.path"], "/orders/7");
        assert_eq!(a["server.address"], "shop.test");
        assert_eq!(a["client.address"], "192.0.2.9");
        assert_eq!(a["network.protocol.version"], "2");
        assert_eq!(a["http.response.status_code"], "503");
        assert_eq!(a["error.type"], "503");
        assert_eq!(client.trace_id, trace_id);
        assert_eq!(client.span_id, 0x1234u64.to_be_bytes());
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(client.kind, 3);
        assert_eq!(client.flags, 0x101);
        assert_eq!(client.end_time_unix_nano, 1_800_000_000_003_000_000);
        let a = attrs(&client.attributes);
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["server.port"], "9101");
        assert_eq!(a["ferrogate.upstream"], "shop");
        assert_eq!(a["http.request.resend_count"], "1");
        assert_eq!(a["error.type"], "503");
    }

    #[test]
    fn attributes_of_any_length_decode() {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        for n in [0, 1, 120, 127, 128, 300, 20_000] {
            let mut w = Writer { buf: Vec::new() };
            let value = "v".repeat(n);
            w.attr_text(1, "k", &value);
            w.attr_int(1, "i", -1);
            w.attr_int(1, "j", 300);
            let mut rest = w.buf.as_slice();
            let mut got = Vec::new();
            while !rest.is_empty() {
                // Each is field 1, length-delimited: read its length, decode the KeyValue.
                assert_eq!(rest[0], 0x0a);
                let len = prost::encoding::decode_varint(&mut &rest[1..]).unwrap() as usize;
                let head = 1 + Writer::varint_len(len);
                got.push(KeyValue::decode(&rest[head..head + len]).unwrap());
                rest = &rest[head + len..];
            }
            let a = attrs(&got);
            assert_eq!(a["k"], value);
            assert_eq!(a["i"], "-1");
            assert_eq!(a["j"], "300");
        }
    }

    #[test]
    fn a_long_message_gets_a_length_of_several_bytes() {
        let mut w = Writer { buf: Vec::new() };
        let long = "x".repeat(300);
        w.message(1, |w| w.text(1, &long));
        // tag, two length bytes (303), then the field (tag, two length bytes, 300 bytes).
        assert_eq!(&w.buf[..3], &[0x0a, 0xaf, 0x02]);
        assert_eq!(w.buf.len(), 3 + 3 + 300);
    }
}
