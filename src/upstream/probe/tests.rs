//! Tests of `probe`, against real listeners on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use http::request::Parts;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::*;
use crate::upstream::health::{ActiveThresholds, TargetHealth};
use http::Method;

/// A tiny HTTP backend whose status can change while it runs.
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Parts>>>,
}

async fn backend(status: u16) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Backend {
        addr: listener.local_addr().unwrap(),
        status: Arc::new(AtomicU16::new(status)),
        hits: Arc::new(AtomicUsize::new(0)),
        last: Arc::new(Mutex::new(None)),
    };
    let (status, hits, last) = (
        backend.status.clone(),
        backend.hits.clone(),
        backend.last.clone(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (status, hits, last) = (status.clone(), hits.clone(), last.clone());
            let service = service_fn(move |request: Request<Incoming>| {
                hits.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap() = Some(request.into_parts().0);
                let code = status.load(Ordering::SeqCst);
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(code)
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    backend
}

/// A listener that accepts connections and never answers on them.
async fn silent_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn http(expected: Vec<(u16, u16)>) -> ProbeKind {
    ProbeKind::Http {
        method: Method::GET,
        path: "/healthz".to_owned(),
        host: None,
        expected,
    }
}

fn settings(kind: ProbeKind) -> ProbeSettings {
    ProbeSettings {
        kind,
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(100),
        tls: None,
    }
}

fn group(healthy: u32, unhealthy: u32) -> Arc<GroupHealth> {
    Arc::new(GroupHealth::new(
        vec![Arc::new(TargetHealth::new())],
        None,
        None,
        Some(ActiveThresholds { healthy, unhealthy }),
    ))
}

/// Starts probing `addr` as target 0 of `group`; returns the stop switch and the task.
fn start(
    addr: SocketAddr,
    group: &Arc<GroupHealth>,
    settings: ProbeSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(vec![(addr, 0)], group.clone(), settings, stop_rx));
    (stop_tx, task)
}

/// Polls until target 0's availability is `want`; fails the test after one second.
async fn wait_available(group: &GroupHealth, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while group.available(0, Instant::now()) != want {
        assert!(
            Instant::now() < deadline,
            "target never became available={want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn tcp_probe_passes_against_a_listener() {
    let backend = backend(200).await;
    assert!(probe_once(backend.addr, &settings(ProbeKind::Tcp))
        .await
        .is_ok());
}

#[tokio::test]
async fn tcp_probe_fails_against_a_closed_port() {
    let result = probe_once(closed_port(), &settings(ProbeKind::Tcp)).await;
    assert!(matches!(result, Err(ProbeError::Connect(_))));
}

#[tokio::test]
async fn http_probe_passes_on_200() {
    let backend = backend(200).await;
    assert!(probe_once(backend.addr, &settings(http(Vec::new())))
        .await
        .is_ok());
}

#[tokio::test]
async fn http_probe_fails_on_500_by_default() {
    let backend = backend(500).await;
    let result = probe_once(backend.addr, &settings(http(Vec::new()))).await;
    assert!(matches!(
        result,
        Err(ProbeError::Status(StatusCode::INTERNAL_SERVER_ERROR))
    ));
}

#[tokio::test]
async fn http_probe_honours_configured_status_ranges() {
    let backend = backend(204).await;
    let result = probe_once(backend.addr, &settings(http(vec![(200, 200), (300, 399)]))).await;
    assert!(matches!(
        result,
        Err(ProbeError::Status(StatusCode::NO_CONTENT))
    ));
    backend.status.store(302, Ordering::SeqCst);
    assert!(
        probe_once(backend.addr, &settings(http(vec![(200, 200), (300, 399)])))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn http_probe_sends_one_close_request_with_agent_and_host() {
    let backend = backend(200).await;
    probe_once(backend.addr, &settings(http(Vec::new())))
        .await
        .unwrap();
    let parts = backend.last.lock().unwrap().take().unwrap();
    assert_eq!(parts.method, Method::GET);
    assert_eq!(parts.uri.path(), "/healthz");
    assert_eq!(parts.headers[USER_AGENT], AGENT);
    assert_eq!(parts.headers[CONNECTION], "close");
    assert_eq!(parts.headers[HOST], backend.addr.to_string().as_str());
}

#[tokio::test]
async fn http_probe_uses_the_configured_host() {
    let backend = backend(200).await;
    let kind = ProbeKind::Http {
        method: Method::HEAD,
        path: "/status?deep=1".to_owned(),
        host: Some("api.internal".to_owned()),
        expected: Vec::new(),
    };
    probe_once(backend.addr, &settings(kind)).await.unwrap();
    let parts = backend.last.lock().unwrap().take().unwrap();
    assert_eq!(parts.method, Method::HEAD);
    assert_eq!(parts.uri, "/status?deep=1");
    assert_eq!(parts.headers[HOST], "api.internal");
}

#[test]
fn default_expected_statuses_are_200_to_399() {
    assert!(status_expected(StatusCode::OK, &[]));
    assert!(status_expected(StatusCode::PERMANENT_REDIRECT, &[]));
    assert!(!status_expected(StatusCode::NOT_FOUND, &[]));
    assert!(!status_expected(StatusCode::CONTINUE, &[]));
}

#[test]
fn jitter_stays_within_ten_percent() {
    for _ in 0..1000 {
        let pause = jittered(Duration::from_millis(1000));
        assert!(pause >= Duration::from_millis(900) && pause <= Duration::from_millis(1100));
    }
}

#[tokio::test]
async fn failing_backend_goes_down_after_the_unhealthy_threshold() {
    let backend = backend(500).await;
    let group = group(1, 3);
    let (stop, task) = start(backend.addr, &group, settings(http(Vec::new())));
    wait_available(&group, false).await;
    assert!(backend.hits.load(Ordering::SeqCst) >= 3);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn recovered_backend_comes_back_after_the_healthy_threshold() {
    let backend = backend(500).await;
    let group = group(2, 1);
    let (stop, task) = start(backend.addr, &group, settings(http(Vec::new())));
    wait_available(&group, false).await;
    let hits_when_down = backend.hits.load(Ordering::SeqCst);
    backend.status.store(200, Ordering::SeqCst);
    wait_available(&group, true).await;
    assert!(backend.hits.load(Ordering::SeqCst) >= hits_when_down + 2);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn silent_backend_goes_down_by_timeout() {
    let addr = silent_backend().await;
    let group = group(1, 2);
    let (stop, task) = start(addr, &group, settings(http(Vec::new())));
    wait_available(&group, false).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn closed_port_goes_down_and_listener_comes_back_up() {
    let group = group(1, 1);
    let (stop, task) = start(closed_port(), &group, settings(ProbeKind::Tcp));
    wait_available(&group, false).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let backend = backend(200).await;
    let (stop, task) = start(backend.addr, &group, settings(ProbeKind::Tcp));
    wait_available(&group, true).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn first_probe_runs_without_waiting_an_interval() {
    let backend = backend(500).await;
    let group = group(1, 1);
    let slow = ProbeSettings {
        interval: Duration::from_secs(60),
        ..settings(http(Vec::new()))
    };
    let (stop, task) = start(backend.addr, &group, slow);
    wait_available(&group, false).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn probing_stops_when_the_sender_is_dropped() {
    let backend = backend(200).await;
    let (stop, task) = start(backend.addr, &group(1, 1), settings(ProbeKind::Tcp));
    drop(stop);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn probing_stops_during_a_hanging_probe() {
    let addr = silent_backend().await;
    let slow = ProbeSettings {
        timeout: Duration::from_secs(60),
        ..settings(http(Vec::new()))
    };
    let (stop, task) = start(addr, &group(1, 1), slow);
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}
