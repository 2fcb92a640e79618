//! WebSocket to an HTTP/2 upstream (RFC 8441): the HTTP/1.1 upgrade the pipeline forwards
//! goes out as an extended CONNECT with `:protocol websocket`, and the upstream's `2xx`
//! comes back as the `101` the pipeline expects, with the `Sec-WebSocket-Accept` that
//! answers the key the upstream never saw. hyper hands the stream over through the
//! response's upgrade handle (`hyper::upgrade::OnUpgrade` in its extensions).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::message::websocket::{accept, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};

/// Rewrites a WebSocket upgrade into an extended CONNECT; returns its key (the answer's
/// accept value is made from it), or `None` for any other request, which is left alone.
pub(super) fn to_connect<B>(req: &mut Request<B>) -> Option<HeaderValue> {
    let upgrade = req.headers().get(header::UPGRADE)?;
    if req.method() != Method::GET || !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let headers = req.headers_mut();
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
    let key = headers
        .remove(SEC_WEBSOCKET_KEY)
        .unwrap_or(HeaderValue::from_static(""));
    *req.method_mut() = Method::CONNECT;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    Some(key)
}

/// Undoes [`to_connect`] on a request hyper handed back unsent, so that it can be sent
/// again as it came.
pub(super) fn undo_connect<B>(req: &mut Request<B>, key: HeaderValue) {
    *req.method_mut() = Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_KEY, key);
}

/// The upstream's answer to an extended CONNECT as an HTTP/1.1 upgrade's: a `2xx` opened
/// the stream and becomes `101` with the upgrade fields; anything else stays as it is.
pub(super) fn to_switch<B>(resp: &mut Response<B>, key: &HeaderValue) {
    if !resp.status().is_success() {
        return;
    }
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept(key.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_becomes_an_extended_connect_and_its_answer_a_switch() {
        let mut req = Request::get("http://u.test/chat")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap_or_default();
        let key = to_connect(&mut req);
        assert_eq!(req.method(), Method::CONNECT);
        assert!(req.extensions().get::<hyper::ext::Protocol>().is_some());
        assert!(!req.headers().contains_key("upgrade"));
        assert!(!req.headers().contains_key("sec-websocket-key"));
        assert_eq!(req.headers()["sec-websocket-version"], "13");
        let mut resp = Response::new(());
        to_switch(&mut resp, &key.unwrap_or(HeaderValue::from_static("")));
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let mut plain = Request::get("http://u.test/").body(()).unwrap_or_default();
        assert!(to_connect(&mut plain).is_none());
        assert_eq!(plain.method(), Method::GET);
    }
}
