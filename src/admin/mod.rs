//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/readyz`,
//! `POST /reload`, `/upstreams` (target state, draining), `POST /cache/purge`, `/queues`
//! (depth, dead letters), `/status`, `/openapi.json`, the configuration API under
//! `/config` (docs/admin-api.md), the live stream `/stats/live` and the dashboard under
//! `/ui/` (docs/dashboard.md). Every endpoint is in one table (`endpoints.rs`) with the
//! role its bearer token needs. It runs on its own thread so a busy data plane cannot
//! starve it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::model::Admin;
use crate::observe::metrics::CONTENT_TYPE;
use crate::runtime::{GatewayError, Shared};
use endpoints::Handler;

mod api;
mod auth;
mod endpoints;
mod listener_tls;
mod live;
mod openapi;
mod purge;
mod queues;
mod resources;
mod stats;
mod ui;
mod upstreams;

/// Binds the admin address and serves it on a thread of its own (over TLS when
/// `admin.tls` is set); returns the bound address.
pub fn start(
    admin: &Admin,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, GatewayError> {
    let address = admin.address;
    let tls = match &admin.tls {
        Some(t) => Some(TlsAcceptor::from(
            crate::tls::server_config(t).map_err(GatewayError::AdminTls)?,
        )),
        None => None,
    };
    let bind_err = |source| GatewayError::Bind { address, source };
    let std_listener = std::net::TcpListener::bind(address).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = std_listener.local_addr().map_err(bind_err)?;
    warn_if_open(&shared, address);
    let mut tls = tls.map(|t| listener_tls::ListenerTls::new(t, &shared));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GatewayError::Runtime)?;
    std::thread::Builder::new()
        .name("ferrogate-admin".into())
        .spawn(move || {
            let hub = Arc::new(live::Hub::default());
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((stream, _)) = r else { continue };
                            let tls = tls.as_mut().map(|t| t.current(&shared));
                            let (shared, hub) = (shared.clone(), hub.clone());
                            tokio::spawn(async move {
                                match tls {
                                    // A failed handshake (no or a refused client
                                    // certificate) closes the connection.
                                    Some(tls) => {
                                        if let Ok(s) = tls.accept(stream).await {
                                            connection(s, shared, hub).await;
                                        }
                                    }
                                    None => connection(stream, shared, hub).await,
                                }
                            });
                        }
                        _ = crate::signal::raised(&mut shutdown) => break,
                    }
                }
            });
        })
        .map_err(GatewayError::Runtime)?;
    Ok(bound)
}

/// Serves one admin connection (HTTP/1.1).
async fn connection<IO>(io: IO, shared: Arc<Shared>, hub: Arc<live::Hub>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let (shared, hub) = (shared.clone(), hub.clone());
        async move { Ok::<_, Infallible>(serve(&shared, &hub, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Warns when the admin listener is reachable beyond this host with no token asked for.
fn warn_if_open(shared: &Shared, address: SocketAddr) {
    let snap = shared.snapshot.load();
    let tokens = snap
        .config
        .admin
        .as_ref()
        .map_or(&[][..], |a| &a.tokens[..]);
    if tokens.is_empty() && !address.ip().is_loopback() {
        tracing::warn!(
            "the admin listener on {address} is not on loopback and has no admin.tokens: \
             anyone who reaches it can change the configuration"
        );
    }
    for t in tokens.iter().filter(|t| t.sha256.is_none()) {
        tracing::warn!(
            "admin token {:?}: its token_env variable is not set; it admits no one",
            t.name
        );
    }
}

/// Answers one admin request: finds its endpoint, checks the caller's role, runs it.
async fn serve(
    shared: &Arc<Shared>,
    hub: &Arc<live::Hub>,
    req: Request<Incoming>,
) -> Response<live::LiveBody> {
    let (endpoint, params) = match endpoints::find(req.method(), req.uri().path()) {
        Ok(found) => found,
        Err(true) => {
            return live::refused(problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here",
            ))
        }
        Err(false) => {
            return live::refused(problem(StatusCode::NOT_FOUND, "no such admin endpoint"))
        }
    };
    let caller = match endpoint.role {
        None => auth::Caller {
            name: "anonymous".into(),
        },
        Some(role) => {
            let snap = shared.snapshot.load();
            match auth::check(snap.config.admin.as_ref(), req.headers(), role) {
                Ok(c) => c,
                Err(refused) => return live::refused(*refused),
            }
        }
    };
    if endpoint.handler == Handler::Live {
        return live::serve(hub, shared)
            .unwrap_or_else(|why| live::refused(problem(StatusCode::NOT_FOUND, why)));
    }
    live::refused(answer(shared, &caller, endpoint.handler, &params, req).await)
}

/// Runs an admitted request's endpoint.
async fn answer(
    shared: &Arc<Shared>,
    caller: &auth::Caller,
    handler: Handler,
    params: &[String],
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match handler {
        Handler::Metrics => {
            upstreams::refresh_metrics(&shared.snapshot.load());
            shared.kept.rate_limits.refresh_metrics();
            if let Some(store) = shared.kept.caches.store() {
                shared.metrics.cache.refresh(&store);
            }
            reply(StatusCode::OK, CONTENT_TYPE, shared.metrics.encode().into())
        }
        Handler::UpstreamState => reply(
            StatusCode::OK,
            "application/json",
            upstreams::json(&shared.snapshot.load()).into(),
        ),
        Handler::Drain | Handler::Undrain => {
            let draining = handler == Handler::Drain;
            let set = match params {
                [group, address] => {
                    upstreams::set_draining(&shared.snapshot.load(), group, address, draining)
                }
                _ => None,
            };
            match set {
                Some(true) => reply(StatusCode::OK, "text/plain", "draining\n".into()),
                Some(false) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
                None => problem(StatusCode::NOT_FOUND, "no such target"),
            }
        }
        Handler::Healthz => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        Handler::Readyz if shared.is_shutting_down() => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        Handler::Readyz => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        Handler::Reload => match shared.reload() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "reloaded\n".into()),
            Err(e) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                "text/plain",
                format!("{e}\n").into(),
            ),
        },
        Handler::Purge => purge::purge(shared, req).await,
        Handler::Queues => queues::route(shared, req).await,
        Handler::Stats => stats::serve(shared, &req),
        Handler::Alerts => {
            let snap = shared.snapshot.load();
            let (active, recent) = shared
                .alerting()
                .map_or_else(Default::default, |a| a.views(snap.config.alerts.as_ref()));
            let body = serde_json::json!({"active": active, "recent": recent});
            reply(StatusCode::OK, "application/json", body.to_string().into())
        }
        Handler::OpenApi => reply(
            StatusCode::OK,
            "application/json",
            openapi::document().into(),
        ),
        Handler::Ui => ui::serve(req.uri().path(), req.headers()),
        _ => api::serve(shared, caller, handler, params, req).await,
    }
}

/// An RFC 9457 problem+json answer.
pub(super) fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    problem_with(status, detail, serde_json::Map::new())
}

/// A problem+json answer with extra members (`errors`).
pub(super) fn problem_with(
    status: StatusCode,
    detail: &str,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> Response<Full<Bytes>> {
    extra.insert("type".into(), "about:blank".into());
    extra.insert(
        "title".into(),
        status.canonical_reason().unwrap_or("error").into(),
    );
    extra.insert("status".into(), status.as_u16().into());
    extra.insert("detail".into(), detail.into());
    let body = serde_json::Value::Object(extra).to_string();
    reply(status, "application/problem+json", body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
