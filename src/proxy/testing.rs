//! What the phases' unit tests share: a snapshot compiled from YAML, a connection and a
//! request made without sockets, and a request that has passed the `request` phase.

use std::path::Path;
use std::sync::Arc;

use http::Request;

use super::log::Completion;
use super::request::{arrive, Arrival};
use super::route::{self, Routed};
use super::ConnInfo;
use crate::serve::DownstreamBody;
use crate::snapshot::{Kept, Snapshot, TargetStates};

/// The snapshot of a configuration (no Redis, no access log).
pub(super) fn snapshot(yaml: &str) -> Arc<Snapshot> {
    let config = crate::config::parse(yaml, Path::new(".")).expect("the test config is valid");
    let metrics = crate::observe::metrics::Metrics::new();
    let kept = Kept {
        targets: TargetStates::default(),
        rate_limits: crate::ratelimit::RateLimiter::offline(metrics.rate_limits.clone()),
        background: crate::background::Background::offline(),
        caches: crate::cache::service::Caches::default(),
        queues: None,
        tunnels: crate::tunnel::Tunnels::new(metrics.tunnels.clone()),
        dns: Default::default(),
        history: Default::default(),
    };
    Arc::new(Snapshot::build(config, &metrics, None, &kept).expect("the test config compiles"))
}

/// A plain-text connection from `peer` on the first listener.
pub(super) fn conn(peer: &str) -> ConnInfo {
    let peer = peer.parse().expect("a socket address");
    ConnInfo {
        peer,
        peer_text: super::peer_text(std::net::SocketAddr::ip(&peer)),
        tls: false,
        listener: 0,
        client_cert: None,
    }
}

/// A bodiless HTTP/1.1 request.
pub(super) fn request(
    method: &str,
    target: &str,
    fields: &[(&str, &str)],
) -> Request<DownstreamBody> {
    let mut b = Request::builder().method(method).uri(target);
    for (name, value) in fields {
        b = b.header(*name, *value);
    }
    b.body(DownstreamBody::Empty).expect("a valid request")
}

/// A request past the `request` phase, from 192.0.2.1, as the next phases see it.
pub(super) struct Phase {
    pub req: Request<DownstreamBody>,
    pub arrival: Arrival,
    pub done: Completion,
}

impl Phase {
    pub fn new(snap: &Snapshot, req: Request<DownstreamBody>) -> Phase {
        let arrival = arrive(&snap.listeners[0], &conn("192.0.2.1:1000"), &req);
        let done = Completion::begin(snap, &arrival, &req);
        Phase { req, arrival, done }
    }

    /// The request's route; the test config must have a proxy route for it.
    pub fn route<'s>(&mut self, snap: &'s Snapshot) -> Routed<'s> {
        let c = conn("192.0.2.1:1000");
        match route::find(snap, &c, &self.req, &self.arrival, &mut self.done) {
            Ok(routed) => routed,
            Err(_) => panic!("the test request has no proxy route"),
        }
    }
}
