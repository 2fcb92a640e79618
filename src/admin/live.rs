//! `GET /stats/live`: the traffic of the last second as server-sent events, one event a
//! second, for the whole gateway and per route (requests per second, error ratio, latency
//! quantiles, bytes). One producer serves every subscriber: it starts with the first, reads
//! the history's points once a second (`observe::history::Recent`) and sends the same event
//! bytes to all through a broadcast channel; it ends at the first tick without subscribers,
//! so nobody watching costs no task and no timer.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::observe::history::{Point, Recent};
use crate::runtime::Shared;

/// The body of a live stream.
pub(super) type LiveBody = UnsyncBoxBody<Bytes, Infallible>;

/// Events a slow subscriber may fall behind before it skips to the newest.
const BACKLOG: usize = 8;

/// The one producer of live events and its subscribers.
#[derive(Default)]
pub(super) struct Hub {
    /// The channel while a producer runs; the producer clears it when nobody listens.
    channel: Mutex<Option<broadcast::Sender<Bytes>>>,
    /// Producers running now (0 or 1): what the "no work without subscribers" test reads.
    producers: Arc<AtomicUsize>,
}

/// The answer to `GET /stats/live`: the stream, or 404 when the history is off.
pub(super) fn serve(
    hub: &Arc<Hub>,
    shared: &Arc<Shared>,
) -> Result<Response<LiveBody>, &'static str> {
    if shared.snapshot.load().history.is_none() {
        return Err("the history is off (no `history` section): the live view reads it");
    }
    let rx = hub.subscribe(shared);
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"retry: 2000\n\n")))
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(b) => return Some((Ok(Frame::data(b)), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = StreamBody::new(futures_util::StreamExt::chain(first, events)).boxed_unsync();
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

impl Hub {
    /// Producers running now.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.producers.load(Ordering::Relaxed)
    }

    /// A receiver of the live events, starting the producer when none runs.
    fn subscribe(self: &Arc<Self>, shared: &Arc<Shared>) -> broadcast::Receiver<Bytes> {
        let mut channel = lock(&self.channel);
        if let Some(tx) = &*channel {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        *channel = Some(tx);
        self.producers.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(produce(self.clone(), shared.clone()));
        rx
    }

    /// The sender while somebody listens; otherwise the channel is closed (under the same
    /// lock `subscribe` takes, so a new subscriber starts a new producer).
    fn listened(&self) -> Option<broadcast::Sender<Bytes>> {
        let mut channel = lock(&self.channel);
        match &*channel {
            Some(tx) if tx.receiver_count() > 0 => Some(tx.clone()),
            _ => {
                *channel = None;
                None
            }
        }
    }
}

/// Counts a producer down however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one event a second, just after each whole second, while somebody listens.
async fn produce(hub: Arc<Hub>, shared: Arc<Shared>) {
    let _running = Running(hub.producers.clone());
    let mut recent = Recent::default();
    let mut last = Instant::now();
    loop {
        let Some(tx) = hub.listened() else {
            return;
        };
        let history = shared.snapshot.load().history.clone();
        if let Some(delta) = history.and_then(|h| recent.read(&h)) {
            let seconds = last.elapsed().as_secs_f64().max(0.001);
            let routes: Map<String, Value> = delta
                .routes
                .iter()
                .map(|(name, p)| (name.to_string(), rates(p, seconds)))
                .collect();
            let event = json!({
                "t": crate::timer::unix_seconds(),
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "gateway": rates(&delta.gateway, seconds),
                "routes": routes,
            });
            let _ = tx.send(Bytes::from(format!("data: {event}\n\n")));
        }
        last = Instant::now();
        drop(tx);
        tokio::time::sleep(until_next_second()).await;
    }
}

/// One scope's numbers over `seconds`: per-second rates, the 5xx ratio and latency
/// quantiles in milliseconds (null without requests).
fn rates(p: &Point, seconds: f64) -> Value {
    let ms = |q: f64| p.latency.quantile(q).map(|us| (us / 10.0).round() / 100.0);
    let per_second = |n: u64| (n as f64 / seconds * 100.0).round() / 100.0;
    json!({
        "requests": p.requests,
        "rps": per_second(p.requests),
        "error_ratio": (p.requests > 0).then(|| p.classes[4] as f64 / p.requests as f64),
        "p50": ms(0.5),
        "p95": ms(0.95),
        "p99": ms(0.99),
        "bytes_in": per_second(p.bytes_in),
        "bytes_out": per_second(p.bytes_out),
    })
}

/// The time to 100 ms past the next whole second: after the workers moved into the new
/// second's requests, before the history's collector (200 ms past a 10-second boundary).
fn until_next_second() -> Duration {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    Duration::from_millis(u64::from(1100 - millis))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A problem answer in the live stream's body type.
pub(super) fn refused(r: Response<Full<Bytes>>) -> Response<LiveBody> {
    r.map(|b| b.boxed_unsync())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_next_tick_is_within_a_second_and_a_tenth() {
        let d = until_next_second();
        assert!(d > Duration::from_millis(100) && d <= Duration::from_millis(1100));
    }

    #[test]
    fn rates_are_per_second_and_quantiles_in_milliseconds() {
        let mut p = Point {
            requests: 4,
            bytes_out: 800,
            ..Point::default()
        };
        p.classes[4] = 1;
        for _ in 0..4 {
            p.latency.add(20_000);
        }
        let v = rates(&p, 2.0);
        assert_eq!(v["rps"], 2.0);
        assert_eq!(v["error_ratio"], 0.25);
        assert_eq!(v["bytes_out"], 400.0);
        let p50 = v["p50"].as_f64().unwrap();
        assert!((19.5..20.5).contains(&p50), "{v}");
        assert!(rates(&Point::default(), 1.0)["p99"].is_null());
    }

    #[tokio::test]
    async fn one_producer_runs_only_while_somebody_listens() {
        let yaml = "listeners: [{address: \"127.0.0.1:0\"}]\nhistory: {}\n";
        let config = crate::config::parse(yaml, std::path::Path::new(".")).unwrap();
        let shared = Shared::start(config, Vec::new(), None).unwrap();
        let hub = Arc::new(Hub::default());
        assert_eq!(hub.running(), 0);
        let mut a = serve(&hub, &shared).unwrap().into_body();
        let b = serve(&hub, &shared).unwrap();
        assert_eq!(hub.running(), 1, "one producer for both subscribers");
        let retry = a.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&retry[..], b"retry: 2000\n\n");
        let event = a.frame().await.unwrap().unwrap().into_data().unwrap();
        let text = std::str::from_utf8(&event).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("\n\n"),
            "{text}"
        );
        let v: Value = serde_json::from_str(text[6..].trim()).unwrap();
        assert_eq!(v["gateway"]["requests"], 0, "{v}");
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(
            hub.running(),
            0,
            "the producer ends with its last subscriber"
        );
        let _c = serve(&hub, &shared).unwrap();
        assert_eq!(hub.running(), 1, "and starts again with the next");
    }
}
