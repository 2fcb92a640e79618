//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` on a
//! downstream HTTP/2 stream becomes, for the pipeline, the HTTP/1.1 upgrade it stands for
//! (`GET` with `Upgrade: websocket`, `Connection: upgrade` and a fresh `Sec-WebSocket-Key`
//! for the upstream), and the upstream's `101` becomes the `200` that opens the stream as
//! the tunnel. The stream then carries WebSocket frames exactly as the HTTP/1.1 connection
//! would, so the tunnel relay is the same.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1::upgrade::{OnUpgrade, Upgraded};
use super::h1::Io;
use crate::message::websocket::{fresh_key, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};

/// What an HTTP/2 request is, for the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Not an extended CONNECT: an ordinary request.
    No,
    /// An extended CONNECT for WebSocket, rewritten into an upgrade.
    WebSocket,
    /// An extended CONNECT for another protocol: not supported (501).
    Other,
}

/// Rewrites an extended CONNECT for WebSocket into the HTTP/1.1 upgrade it stands for, with
/// an upgrade handle that yields the stream once the `200` is sent.
pub fn accept<B>(req: &mut Request<B>) -> Connect {
    if req.method() != Method::CONNECT {
        return Connect::No;
    }
    let Some(protocol) = req.extensions_mut().remove::<hyper::ext::Protocol>() else {
        return Connect::No;
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Connect::Other;
    }
    let stream = hyper::upgrade::on(&mut *req);
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_KEY, fresh_key());
    let (tx, on) = OnUpgrade::pair();
    req.extensions_mut().insert(on);
    tokio::spawn(async move {
        if let Ok(stream) = stream.await {
            let _ = tx.send(Upgraded {
                io: Box::new(H2Stream(TokioIo::new(stream))),
                read: Bytes::new(),
            });
        }
    });
    Connect::WebSocket
}

/// The answer to an extended CONNECT: a `101` from the upstream is the `200` that opens the
/// tunnel (without the HTTP/1.1 upgrade's fields); any other status stays as it is. The
/// pipeline calls it before the log phase sees the status.
pub fn answer<B>(resp: &mut Response<B>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    for name in [header::UPGRADE, header::CONNECTION, SEC_WEBSOCKET_ACCEPT] {
        headers.remove(name);
    }
}

/// An HTTP/2 stream opened by an extended CONNECT, as a downstream connection.
struct H2Stream(TokioIo<hyper::upgrade::Upgraded>);

impl Io for H2Stream {
    /// The stream's data is already in h2's buffers or not: a read says which.
    fn poll_readable(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extended_connect_for_websocket_becomes_an_upgrade() {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let Ok(rt) = rt else { return };
        rt.block_on(async {
            let mut req = Request::connect("https://a.test/chat")
                .extension(hyper::ext::Protocol::from_static("websocket"))
                .body(())
                .unwrap_or_default();
            assert_eq!(accept(&mut req), Connect::WebSocket);
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.headers()[header::UPGRADE], "websocket");
            assert!(req.headers().contains_key(SEC_WEBSOCKET_KEY));
            assert!(req.extensions().get::<OnUpgrade>().is_some());
            let mut other = Request::connect("https://a.test/x")
                .extension(hyper::ext::Protocol::from_static("connect-udp"))
                .body(())
                .unwrap_or_default();
            assert_eq!(accept(&mut other), Connect::Other);
        });
    }
}
