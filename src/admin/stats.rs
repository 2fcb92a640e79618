//! `GET /stats` and `GET /stats/top`: the traffic history as JSON series and rankings
//! (docs/observability.md).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::config::model::Metric;
use crate::observe::history::{Dimension, History, Point, COARSE, FINE};
use crate::runtime::Shared;

/// What a query asks, read from its query string.
struct Query<'a> {
    pairs: Vec<(&'a str, String)>,
}

impl<'a> Query<'a> {
    fn parse(q: &'a str) -> Query<'a> {
        let pairs = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, percent_decode(v)))
            .collect();
        Query { pairs }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key}: not a number: {v:?}"))
            })
            .transpose()
    }
}

pub(super) fn serve(
    shared: &Shared,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load();
    let Some(history) = snap.history.as_ref() else {
        return problem(
            StatusCode::NOT_FOUND,
            "the history is off (no `history` section)",
        );
    };
    let q = Query::parse(req.uri().query().unwrap_or(""));
    let answer = if req.uri().path() == "/stats/top" {
        top(history, &q)
    } else {
        series(history, &q)
    };
    match answer {
        Ok(v) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap_or_default(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e),
    }
}

/// The range asked (unix seconds; default the last hour) and its step (default 10 s up to
/// two hours, 1 min beyond).
fn range(q: &Query<'_>) -> Result<(u64, u64, u64), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = q.number("to")?.unwrap_or(now);
    let from = q.number("from")?.unwrap_or(to.saturating_sub(3600));
    if from > to {
        return Err("from: after to".into());
    }
    let step = match q.number("step")? {
        Some(s) if s >= FINE && s % FINE == 0 => s,
        Some(s) => return Err(format!("step: a multiple of 10 seconds, not {s}")),
        None if to - from <= 2 * 3600 => FINE,
        None => COARSE,
    };
    if (to - from) / step > 10_000 {
        return Err("more than 10000 points: use a larger step".into());
    }
    Ok((from, to, step))
}

/// The scope named by one of `route`, `target`, `consumer`, `client`; the whole gateway
/// when none is.
fn scope(q: &Query<'_>) -> (Dimension, String) {
    for d in [
        Dimension::Route,
        Dimension::Target,
        Dimension::Consumer,
        Dimension::Client,
    ] {
        if let Some(name) = q.get(d.name()) {
            return (d, name.to_owned());
        }
    }
    (Dimension::Gateway, String::new())
}

fn series(history: &History, q: &Query<'_>) -> Result<Value, String> {
    let name_of_metric = q.get("metric").unwrap_or("requests");
    let metric = metric(name_of_metric)?;
    let (from, to, step) = range(q)?;
    let (dim, name) = scope(q);
    let points = history
        .series(dim, &name, from, to, step)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut it = points.iter().peekable();
    let mut t = from / step * step;
    while t <= to {
        let v = match it.peek() {
            Some((at, p)) if *at == t => {
                it.next();
                value_of(metric, p, step)
            }
            _ => value_of(metric, &Point::default(), step),
        };
        out.push(json!([t, v]));
        t += step;
    }
    Ok(json!({
        "metric": name_of_metric,
        "scope": {"dimension": dim.name(), "name": name},
        "from": from, "to": to, "step": step,
        "points": out,
    }))
}

fn top(history: &History, q: &Query<'_>) -> Result<Value, String> {
    let name_of_metric = q.get("metric").unwrap_or("requests");
    let metric = metric(name_of_metric)?;
    let dim = match q.get("dimension") {
        Some(d) => Dimension::parse(d)
            .filter(|d| *d != Dimension::Gateway)
            .ok_or_else(|| format!("dimension: route, target, consumer or client, not {d:?}"))?,
        None => Dimension::Route,
    };
    let n = q.number("n")?.unwrap_or(10).min(1000) as usize;
    let (from, to, _) = range(q)?;
    let mut rows: Vec<(String, f64)> = history
        .totals(dim, from, to)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(name, p)| (name, p.value(metric, to - from + 1).unwrap_or(0.0)))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    Ok(json!({
        "metric": name_of_metric,
        "dimension": dim.name(),
        "from": from, "to": to,
        "top": rows.iter().map(|(name, v)| json!({"name": name, "value": v})).collect::<Vec<_>>(),
    }))
}

/// The history metric named `name`.
fn metric(name: &str) -> Result<Metric, String> {
    Metric::parse(name)
        .filter(|m| *m != Metric::HealthyTargets)
        .ok_or_else(|| format!("metric: unknown {name:?}; use {}", Metric::HISTORY_NAMES))
}

/// `metric` of a point covering `seconds`: an integer for a count, null where it has no
/// value (a quantile of no requests).
fn value_of(metric: Metric, p: &Point, seconds: u64) -> Value {
    match p.value(metric, seconds) {
        None => Value::Null,
        Some(v) if metric.is_count() => json!(v as u64),
        Some(v) => json!(v),
    }
}

fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let body = crate::proxy::error::problem_body(status, detail);
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn percent_decode(v: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
