//! Fields the gateway adds to an upstream request head (X-Forwarded-*, Via, X-Request-Id, a
//! rewritten Host, the client's location fields). They travel beside the request's header map rather than in it: the
//! HTTP/1.1 encoder writes them with the map's fields, so a request pays no hashing or map
//! growth for them. Requests to HTTP/2 upstreams get them inserted into their map instead,
//! as do the heads of background cache refreshes.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Most fields one request gets: X-Forwarded-For, -Proto, -Host, Via, X-Request-Id, and up to
/// three location fields (`geo.headers`; more go into the map).
const MAX: usize = 8;

/// The added fields of one request. The map they go with must not hold the same names (the
/// proxy removes the client's copies before adding its own).
#[derive(Clone, Default)]
pub struct Added {
    /// `Host` goes first on the wire, as clients send it.
    host: Option<HeaderValue>,
    fields: [Option<(HeaderName, HeaderValue)>; MAX],
    /// Fields in use: the first `len` of `fields`.
    len: u8,
    /// The request's trace context, when it is traced: `traceparent` is written from it.
    trace: Option<TraceSlot>,
}

/// The `traceparent` of a traced request: its trace, and the span each attempt names (set
/// per attempt through a shared reference, as attempts borrow the fields).
#[derive(Default)]
struct TraceSlot {
    /// In halves, so that the fields keep an 8-byte alignment.
    trace_id: [u64; 2],
    sampled: bool,
    span: AtomicU64,
}

impl TraceSlot {
    fn id(&self) -> u128 {
        u128::from(self.trace_id[0]) << 64 | u128::from(self.trace_id[1])
    }
}

impl Clone for TraceSlot {
    fn clone(&self) -> Self {
        TraceSlot {
            trace_id: self.trace_id,
            sampled: self.sampled,
            span: AtomicU64::new(self.span.load(Ordering::Relaxed)),
        }
    }
}

impl Added {
    /// Sets the `Host` to send.
    pub fn set_host(&mut self, value: HeaderValue) {
        self.host = Some(value);
    }

    /// Adds a field; past the capacity it is dropped (a bug: the proxy adds at most `MAX`).
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        let pushed = self.try_push(name, value);
        debug_assert!(pushed.is_ok(), "more added fields than room for them");
    }

    /// Adds a field when there is room; gives it back otherwise.
    pub fn try_push(
        &mut self,
        name: HeaderName,
        value: HeaderValue,
    ) -> Result<(), (HeaderName, HeaderValue)> {
        match self.fields.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = Some((name, value));
                self.len += 1;
                Ok(())
            }
            None => Err((name, value)),
        }
    }

    /// Sends `traceparent` naming `span` of trace `trace_id` (the map must not hold one).
    pub fn set_trace(&mut self, trace_id: u128, span: u64, sampled: bool) {
        self.trace = Some(TraceSlot {
            trace_id: [(trace_id >> 64) as u64, trace_id as u64],
            sampled,
            span: AtomicU64::new(span),
        });
    }

    /// Names `span` in the `traceparent` of the next attempt.
    pub fn set_trace_span(&self, span: u64) {
        if let Some(t) = &self.trace {
            t.span.store(span, Ordering::Relaxed);
        }
    }

    /// Writes the `traceparent` line into an HTTP/1.1 head being encoded.
    pub fn write_trace(&self, buf: &mut Vec<u8>) {
        if let Some(t) = &self.trace {
            let span = t.span.load(Ordering::Relaxed);
            buf.extend_from_slice(b"traceparent: ");
            buf.extend_from_slice(&crate::trace_context::text(t.id(), span, t.sampled));
            buf.extend_from_slice(b"\r\n");
        }
    }

    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The fields other than `Host`, in the order added.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields
            .iter()
            .take(usize::from(self.len))
            .filter_map(|f| f.as_ref().map(|(n, v)| (n, v)))
    }

    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        if *name == header::HOST {
            return self.host();
        }
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Puts the fields into `map`, replacing any of the same name.
    pub fn insert_into(&self, map: &mut HeaderMap) {
        if let Some(h) = &self.host {
            map.insert(header::HOST, h.clone());
        }
        for (name, value) in self.fields() {
            map.insert(name.clone(), value.clone());
        }
        if let Some(t) = &self.trace {
            let span = t.span.load(Ordering::Relaxed);
            map.insert(
                crate::trace_context::TRACEPARENT,
                crate::trace_context::format(t.id(), span, t.sampled),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_replace_map_entries_when_inserted() {
        let mut added = Added::default();
        added.push(header::VIA, HeaderValue::from_static("1.1 gw"));
        added.push(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("abc"),
        );
        added.set_host(HeaderValue::from_static("h.example"));
        let names: Vec<_> = added.fields().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["via", "x-request-id"]);
        assert_eq!(added.get(&header::HOST).unwrap(), "h.example");
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static("old"));
        map.insert(header::VIA, HeaderValue::from_static("1.0 old"));
        added.insert_into(&mut map);
        assert_eq!(map.len(), 3);
        assert_eq!(map[header::HOST], "h.example");
        assert_eq!(map[header::VIA], "1.1 gw");
    }
}
