//! `GET /stats` and `GET /stats/top`: the traffic history as JSON series and rankings
//! (docs/observability.md).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

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
    let metric = q.get("metric").unwrap_or("requests");
    let (from, to, step) = range(q)?;
    let (dim, name) = scope(q);
    value_of(metric, &Point::default(), step)?;
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
                value_of(metric, p, step)?
            }
            _ => value_of(metric, &Point::default(), step)?,
        };
        out.push(json!([t, v]));
        t += step;
    }
    Ok(json!({
        "metric": metric,
        "scope": {"dimension": dim.name(), "name": name},
        "from": from, "to": to, "step": step,
        "points": out,
    }))
}

fn top(history: &History, q: &Query<'_>) -> Result<Value, String> {
    let metric = q.get("metric").unwrap_or("requests");
    let dim = match q.get("dimension") {
        Some(d) => Dimension::parse(d)
            .filter(|d| *d != Dimension::Gateway)
            .ok_or_else(|| format!("dimension: route, target, consumer or client, not {d:?}"))?,
        None => Dimension::Route,
    };
    let n = q.number("n")?.unwrap_or(10).min(1000) as usize;
    let (from, to, step) = range(q)?;
    value_of(metric, &Point::default(), step)?;
    let mut rows: Vec<(String, f64)> = history
        .totals(dim, from, to)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(name, p)| {
            Ok((
                name,
                value_of(metric, &p, to - from + 1)?.as_f64().unwrap_or(0.0),
            ))
        })
        .collect::<Result<_, String>>()?;
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    Ok(json!({
        "metric": metric,
        "dimension": dim.name(),
        "from": from, "to": to,
        "top": rows.iter().map(|(name, v)| json!({"name": name, "value": v})).collect::<Vec<_>>(),
    }))
}

/// One metric of a point covering `seconds`; null where it has no value (a quantile of
/// no requests).
fn value_of(metric: &str, p: &Point, seconds: u64) -> Result<Value, String> {
    let ms = |q: f64| p.latency.quantile(q).map(|us| us / 1000.0);
    Ok(match metric {
        "requests" => json!(p.requests),
        "rps" => json!(p.requests as f64 / seconds.max(1) as f64),
        "errors" => json!(p.classes[4]),
        "error_ratio" => match p.requests {
            0 => Value::Null,
            n => json!(p.classes[4] as f64 / n as f64),
        },
        "1xx" | "2xx" | "3xx" | "4xx" | "5xx" => {
            let i = usize::from(metric.as_bytes()[0] - b'1');
            json!(p.classes[i])
        }
        "bytes_in" => json!(p.bytes_in),
        "bytes_out" => json!(p.bytes_out),
        "rate_limited" => json!(p.rate_limited),
        "p50" => json!(ms(0.5)),
        "p90" => json!(ms(0.9)),
        "p95" => json!(ms(0.95)),
        "p99" => json!(ms(0.99)),
        other => {
            return Err(format!(
                "metric: unknown {other:?}; use requests, rps, errors, error_ratio, 1xx..5xx, \
                 bytes_in, bytes_out, rate_limited, p50, p90, p95 or p99"
            ))
        }
    })
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
