//! The body of a downstream request, whichever protocol carried it: read from the
//! gateway's own HTTP/1.1 connection, or from hyper's HTTP/2 stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use super::h1::H1RequestBody;
use super::h2::H2NativeBody;
use super::h2body::H2RequestBody;
use crate::message::BodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A request body as the client sends it.
#[derive(Debug)]
pub enum DownstreamBody {
    /// The request has no body.
    Empty,
    H1(H1RequestBody),
    H2(H2RequestBody),
    /// A request on the gateway's own HTTP/2 server.
    H2Native(H2NativeBody),
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            DownstreamBody::Empty => Poll::Ready(None),
            DownstreamBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            DownstreamBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            DownstreamBody::H2Native(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::Empty => true,
            DownstreamBody::H1(b) => b.is_end_stream(),
            DownstreamBody::H2(b) => b.is_end_stream(),
            DownstreamBody::H2Native(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::Empty => SizeHint::with_exact(0),
            DownstreamBody::H1(b) => b.size_hint(),
            DownstreamBody::H2(b) => b.size_hint(),
            DownstreamBody::H2Native(b) => b.size_hint(),
        }
    }
}
