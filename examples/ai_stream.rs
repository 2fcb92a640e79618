//! A streaming OpenAI-compatible provider and a client that times it, for `bench/ai.sh`.
//!
//! - `ai_stream provider PORT CHUNKS`: answers `POST …/chat/completions` with a stream of
//!   `CHUNKS` `chat.completion.chunk` events, a usage chunk when asked, and `data: [DONE]`,
//!   written as fast as the client reads them.
//! - `ai_stream client URL REQUESTS`: sends `REQUESTS` streamed chat completions one after
//!   another and prints the time to the first event (p50, p99, in µs), the time to the end
//!   (p50, p99) and the events received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("provider") => provider(args[2].parse().unwrap(), args[3].parse().unwrap()).await,
        Some("client") => client(&args[2], args[3].parse().unwrap()).await,
        _ => eprintln!("usage: ai_stream provider PORT CHUNKS | client URL REQUESTS"),
    }
}

async fn provider(port: u16, chunks: usize) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let usage = body.windows(13).any(|w| w == b"include_usage");
                Ok::<_, Infallible>(answer(chunks, usage))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(chunks: usize, usage: bool) -> Response<Body> {
    let chunk = Bytes::from_static(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},\"finish_reason\":null}]}\n\n",
    );
    let tail = match usage {
        true => Bytes::from_static(
            b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":1,\"total_tokens\":9}}\n\ndata: [DONE]\n\n",
        ),
        false => Bytes::from_static(b"data: [DONE]\n\n"),
    };
    let s = futures_util::stream::unfold(0usize, move |i| {
        let (chunk, tail) = (chunk.clone(), tail.clone());
        async move {
            match i.cmp(&chunks) {
                std::cmp::Ordering::Less => Some((Ok(Frame::data(chunk)), i + 1)),
                std::cmp::Ordering::Equal => Some((Ok(Frame::data(tail)), i + 1)),
                std::cmp::Ordering::Greater => None,
            }
        }
    });
    let mut r = Response::new(StreamBody::new(s).boxed_unsync());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

async fn client(url: &str, requests: usize) {
    let uri: http::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body =
        r#"{"model":"fast","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;
    let (mut first, mut whole, mut events) = (Vec::new(), Vec::new(), 0usize);
    for _ in 0..requests {
        let req = Request::post(uri.path())
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let start = Instant::now();
        let resp = tx.send_request(req).await.unwrap();
        let mut body = resp.into_body();
        let mut got_first = false;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                if !got_first && !d.is_empty() {
                    first.push(start.elapsed());
                    got_first = true;
                }
                events += d.windows(6).filter(|w| w == b"data: ").count();
            }
        }
        whole.push(start.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize].as_micros()
    };
    println!(
        "first_event_p50_us={} first_event_p99_us={} end_p50_us={} end_p99_us={} events={events}",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99),
        pct(&mut whole, 0.5),
        pct(&mut whole, 0.99),
    );
}
