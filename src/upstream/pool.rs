//! Upstream keep-alive pools, one set per worker thread.
//!
//! Each worker runs its own single-threaded runtime, so each keeps its own hyper client (and
//! with it its own idle connections): no pool lock is shared across cores. A client is made
//! per distinct [`ClientProfile`] (protocol, connect timeout, idle timeout, idle cap); groups
//! with the same profile share it, and it survives reloads, so the idle connections of
//! unchanged targets are reused after a reload.

use std::cell::RefCell;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::model::UpstreamProtocol;
use crate::snapshot::ClientProfile;

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

thread_local! {
    static CLIENTS: RefCell<Vec<(ClientProfile, UpstreamClient)>> = const { RefCell::new(Vec::new()) };
}

/// This worker's client for a profile (a cheap handle clone).
pub fn client(profile: &ClientProfile) -> UpstreamClient {
    CLIENTS.with_borrow_mut(|clients| {
        if let Some((_, c)) = clients.iter().find(|(p, _)| p == profile) {
            return c.clone();
        }
        let c = build(profile);
        clients.push((*profile, c.clone()));
        c
    })
}

fn build(p: &ClientProfile) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(p.connect_timeout));
    connector.enforce_http(true);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(p.idle_timeout)
        .pool_max_idle_per_host(p.max_idle);
    if p.protocol == UpstreamProtocol::H2c {
        b.http2_only(true);
    }
    b.build(connector)
}
