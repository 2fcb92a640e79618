//! The `request` phase: what the gateway learns of a request before routing it: its id,
//! the client's address (read through trusted proxies) and the host it names.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderValue, Request};

use super::headers::{
    forwarded_client, is_trusted, normalize_host, request_host, request_id, Present,
};
use super::ConnInfo;
use crate::snapshot::ListenerSettings;

/// A request as it arrived: the facts every later phase may read.
pub(crate) struct Arrival {
    /// Which of the proxy's own fields the request carries (one pass over the names), so
    /// absent ones cost no lookup; nothing changes the map before the upstream request.
    pub present: Present,
    /// The client's well-formed `X-Request-Id`, or a new one.
    pub request_id: HeaderValue,
    /// The client: the peer, or what a trusted peer says in `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// The peer is one of the listener's trusted proxies.
    pub trusted: bool,
    /// The `Host` field, or the target's authority (HTTP/2, absolute form), as sent.
    pub host_value: Option<HeaderValue>,
    /// The connection is TLS.
    pub tls: bool,
    /// The caller's `traceparent` is continued (the listener's `trust_trace_context`).
    pub trust_trace: bool,
}

impl Arrival {
    /// The host as sent, when it is text.
    pub fn host_text(&self) -> Option<&str> {
        self.host_value.as_ref().and_then(|h| h.to_str().ok())
    }

    /// The host as routes match it: lower case, without port or trailing dot.
    pub fn host(&self) -> Cow<'_, str> {
        normalize_host(self.host_text().unwrap_or(""))
    }
}

/// Reads the request's id, client and host. Never ends the request.
pub(super) fn arrive<B>(listener: &ListenerSettings, conn: &ConnInfo, req: &Request<B>) -> Arrival {
    let present = Present::scan(req.headers());
    let request_id = request_id(req.headers(), &present);
    let trusted = is_trusted(&listener.trusted_proxies, conn.peer.ip());
    let client_ip = if trusted {
        forwarded_client(&listener.trusted_proxies, req.headers()).unwrap_or(conn.peer.ip())
    } else {
        conn.peer.ip()
    };
    Arrival {
        present,
        request_id,
        client_ip,
        trusted,
        host_value: request_host(req),
        tls: conn.tls,
        trust_trace: listener.trust_trace_context,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{conn, request, snapshot};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0, trusted_proxies: [10.0.0.0/8]}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes: [{name: r, upstream: u}]
";

    #[test]
    fn a_well_formed_client_request_id_is_kept_and_a_missing_one_is_made() {
        let snap = snapshot(CONFIG);
        let req = request("GET", "/", &[("host", "a.test"), ("x-request-id", "abc-1")]);
        let a = arrive(&snap.listeners[0], &conn("192.0.2.1:5000"), &req);
        assert_eq!(a.request_id, "abc-1");
        let req = request("GET", "/", &[("host", "a.test")]);
        let first = arrive(&snap.listeners[0], &conn("192.0.2.1:5000"), &req).request_id;
        let second = arrive(&snap.listeners[0], &conn("192.0.2.1:5000"), &req).request_id;
        assert_eq!(first.len(), 32);
        assert_ne!(first, second);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let snap = snapshot(CONFIG);
        let req = request(
            "GET",
            "/",
            &[("host", "a.test"), ("x-forwarded-for", "198.51.100.7")],
        );
        let trusted = arrive(&snap.listeners[0], &conn("10.1.2.3:5000"), &req);
        assert!(trusted.trusted);
        assert_eq!(trusted.client_ip.to_string(), "198.51.100.7");
        let untrusted = arrive(&snap.listeners[0], &conn("192.0.2.1:5000"), &req);
        assert!(!untrusted.trusted);
        assert_eq!(untrusted.client_ip.to_string(), "192.0.2.1");
    }

    #[test]
    fn the_host_is_normalized_for_routing() {
        let snap = snapshot(CONFIG);
        let req = request("GET", "/", &[("host", "API.Example.COM:8080")]);
        let a = arrive(&snap.listeners[0], &conn("192.0.2.1:5000"), &req);
        assert_eq!(a.host_text(), Some("API.Example.COM:8080"));
        assert_eq!(a.host(), "api.example.com");
    }
}
