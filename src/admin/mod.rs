//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/readyz`,
//! `POST /reload`, `/upstreams` (target state, draining), `POST /cache/purge` and `/queues`
//! (depth, dead letters). It runs on its own thread so a
//! busy data plane cannot starve it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::observe::metrics::CONTENT_TYPE;
use crate::runtime::{GatewayError, Shared};

mod purge;
mod queues;
mod upstreams;

/// Binds the admin address and serves it on a thread of its own; returns the bound address.
pub fn start(
    address: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, GatewayError> {
    let bind_err = |source| GatewayError::Bind { address, source };
    let std_listener = std::net::TcpListener::bind(address).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = std_listener.local_addr().map_err(bind_err)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GatewayError::Runtime)?;
    std::thread::Builder::new()
        .name("ferrogate-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((stream, _)) = r else { continue };
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    let shared = shared.clone();
                                    async move {
                                        let resp = if req.method() == Method::POST
                                            && req.uri().path() == "/cache/purge"
                                        {
                                            purge::purge(&shared, req).await
                                        } else if req.uri().path().starts_with("/queues") {
                                            queues::route(&shared, req).await
                                        } else {
                                            route(&shared, req)
                                        };
                                        Ok::<_, Infallible>(resp)
                                    }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
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

fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            upstreams::refresh_metrics(&shared.snapshot.load());
            shared.kept.rate_limits.refresh_metrics();
            if let Some(store) = shared.kept.caches.store() {
                shared.metrics.cache.refresh(&store);
            }
            reply(StatusCode::OK, CONTENT_TYPE, shared.metrics.encode().into())
        }
        (&Method::GET, "/upstreams") => reply(
            StatusCode::OK,
            "application/json",
            upstreams::json(&shared.snapshot.load()).into(),
        ),
        (&Method::POST, p) if p.starts_with("/upstreams/") => {
            match upstreams::set_draining(&shared.snapshot.load(), p) {
                Some(true) => reply(StatusCode::OK, "text/plain", "draining\n".into()),
                Some(false) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no such target\n".into(),
                ),
            }
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") if shared.is_shutting_down() => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        (&Method::GET, "/readyz") => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::POST, "/reload") => match shared.reload() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "reloaded\n".into()),
            Err(e) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                "text/plain",
                format!("{e}\n").into(),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
