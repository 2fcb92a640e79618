//! A local identity provider for tests, on `127.0.0.1:0`: serves a JWKS document the test can
//! change or make fail, answers RFC 7662 introspection per token (or hangs), and can be
//! stopped outright.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What the introspection endpoint answers for one token.
#[derive(Clone)]
pub(crate) enum Answer {
    Json(Value),
    Status(u16),
    /// Never answers within any test timeout.
    Hang,
}

#[derive(Default)]
struct State {
    jwks: Mutex<(u16, String)>,
    jwks_hits: AtomicUsize,
    answers: Mutex<HashMap<String, Answer>>,
    introspect_hits: AtomicUsize,
    /// Authorization header and body of the last introspection request.
    last_request: Mutex<Option<(String, String)>>,
}

pub(crate) struct Idp {
    addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Idp {
    pub(crate) async fn start() -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let state = Arc::new(State::default());
        *lock(&state.jwks) = (200, r#"{"keys":[]}"#.into());
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Idp {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn set_jwks(&self, keys: &[Value]) {
        let doc = serde_json::json!({ "keys": keys }).to_string();
        *lock(&self.state.jwks) = (200, doc);
    }

    pub(crate) fn set_jwks_raw(&self, status: u16, body: &str) {
        *lock(&self.state.jwks) = (status, body.into());
    }

    pub(crate) fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub(crate) fn answer(&self, token: &str, answer: Answer) {
        lock(&self.state.answers).insert(token.into(), answer);
    }

    pub(crate) fn introspect_hits(&self) -> usize {
        self.state.introspect_hits.load(Ordering::SeqCst)
    }

    pub(crate) fn last_request(&self) -> Option<(String, String)> {
        lock(&self.state.last_request).clone()
    }

    /// Closes the listener and every open connection: the provider is down.
    pub(crate) fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    // Owned here so that aborting this task also drops every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/jwks" => {
            state.jwks_hits.fetch_add(1, Ordering::SeqCst);
            let (status, body) = lock(&state.jwks).clone();
            Ok(reply(status, body))
        }
        "/introspect" => {
            state.introspect_hits.fetch_add(1, Ordering::SeqCst);
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = match req.into_body().collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            let token = body
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or("")
                .to_owned();
            *lock(&state.last_request) = Some((auth, body));
            let answer = lock(&state.answers).get(&token).cloned();
            match answer {
                Some(Answer::Json(v)) => Ok(reply(200, v.to_string())),
                Some(Answer::Status(s)) => Ok(reply(s, String::new())),
                Some(Answer::Hang) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(reply(200, r#"{"active":false}"#.into()))
                }
                None => Ok(reply(200, r#"{"active":false}"#.into())),
            }
        }
        _ => Ok(reply(404, String::new())),
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
