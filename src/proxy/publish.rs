//! PUBLISH: a `publish` route writes the request as one message to its Redis stream, NATS
//! subject or RabbitMQ exchange and answers `202 Accepted` with the message's id; `503` when
//! the server does not take it (nothing is answered 202 that was not stored).

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, StatusCode};
use serde_json::json;

use super::error::ProxyError;
use super::queue::json_response;
use super::request::Arrival;
use super::validate::read_whole;
use super::Stop;
use crate::auth::gate::Authenticated;
use crate::config::model::PublishTarget;
use crate::queue::publish::{Message, Publisher};
use crate::serve::DownstreamBody;

/// Bodies larger than this are refused (413) on a route without its own limit.
const DEFAULT_MAX_BODY: u64 = 1 << 20;

pub(super) async fn send(
    publisher: &Publisher,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
) -> Stop {
    let body = match validated {
        Some(b) => b,
        None => {
            let limit = usize::try_from(max_body.unwrap_or(DEFAULT_MAX_BODY)).unwrap_or(usize::MAX);
            match read_whole(req.body_mut(), limit).await {
                Ok(b) => b,
                Err(e) => return Stop::Fail(e),
            }
        }
    };
    let text = |v: &HeaderValue| v.as_bytes().to_vec();
    let mut parts = vec![
        (
            "method".to_owned(),
            req.method().as_str().as_bytes().to_vec(),
        ),
        (
            "path".to_owned(),
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes()
                .to_vec(),
        ),
        ("request_id".to_owned(), text(&arrival.request_id)),
        (
            "client_ip".to_owned(),
            arrival.client_ip.to_string().into_bytes(),
        ),
    ];
    if let Some(name) = caller.and_then(|a| a.identity.name()) {
        parts.push(("consumer".to_owned(), name.as_bytes().to_vec()));
    }
    for name in &publisher.action.headers {
        for v in req.headers().get_all(name) {
            parts.push((format!("h-{name}"), text(v)));
        }
    }
    let target = &publisher.action.target;
    match publisher.publish(Message { body, parts }).await {
        Ok(published) => {
            let kind = match target {
                PublishTarget::Redis { .. } => "stream",
                PublishTarget::Nats { .. } => "subject",
                PublishTarget::RabbitMq { .. } => "exchange",
            };
            let doc = json!({
                "id": published.id,
                kind: target.name(),
                "request_id": arrival.request_id.to_str().unwrap_or(""),
            });
            let mut resp = json_response(StatusCode::ACCEPTED, &doc);
            resp.headers_mut()
                .insert(crate::message::X_REQUEST_ID, arrival.request_id.clone());
            Stop::respond(resp)
        }
        Err(e) => {
            let name = target.name();
            tracing::error!(target = %name, "cannot publish a message: {e}");
            Stop::Fail(ProxyError::PublishFailed(Arc::from(name)))
        }
    }
}
