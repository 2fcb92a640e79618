//! One stream of a native HTTP/2 connection: its pipeline future (polled in the
//! connection's task), then its response written as HEADERS, DATA within the windows, and
//! trailers; the interim responses the pipeline relays on the way; and its request body's
//! delivery and flow-control credit.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures_util::task::waker_ref;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;

use super::body::{lock, SharedInbox};
use super::conn::{Conn, Taken, HIGH_WATER, LINGER_TIME};
use super::frame::*;
use crate::message::{ExtraFields, Interim};
use crate::serve::h1::Service;
use crate::serve::DownstreamBody;

type Pipeline<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pub(super) enum Phase<B> {
    Pipeline(Pipeline<B>),
    Body(B),
    Done,
}

pub(super) struct Stream<B> {
    pub id: u32,
    pub phase: Phase<B>,
    interim: Arc<Interims>,
    pub inbox: Option<SharedInbox>,
    pub declared: Option<u64>,
    pub received: u64,
    pub remote_done: bool,
    pub send_window: i64,
    pub recv_window: i64,
    recv_unacked: usize,
    stream_window: usize,
    pending: Bytes,
    end_after_pending: bool,
    /// Request body bytes dropped after the pipeline let go of the body.
    pub lingered: u64,
    pub linger_until: Option<Instant>,
}

/// The interim responses a stream's pipeline relays, written before its final response.
#[derive(Default)]
struct Interims(Mutex<Vec<(StatusCode, HeaderMap)>>);

impl Interims {
    fn lock(&self) -> MutexGuard<'_, Vec<(StatusCode, HeaderMap)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Interim for Interims {
    fn relay(&self, status: StatusCode, fields: &HeaderMap) {
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            self.lock().push((status, fields.clone()));
        }
    }

    /// Queued interim responses are written by the connection as soon as the pipeline's
    /// poll returns, before anything else of the stream.
    fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl<B: Body<Data = Bytes> + ExtraFields + Send + Unpin + 'static> Stream<B> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new<S: Service<Body = B> + 'static>(
        id: u32,
        req: Request<DownstreamBody>,
        svc: Arc<S>,
        inbox: Option<SharedInbox>,
        declared: Option<u64>,
        remote_done: bool,
        send_window: i64,
        recv_window: i64,
    ) -> Self {
        let interim = Arc::new(Interims::default());
        let lent = interim.clone();
        let pipeline: Pipeline<B> = Box::pin(async move {
            let mut req = req;
            svc.call(&mut req, &*lent).await
        });
        Stream {
            id,
            phase: Phase::Pipeline(pipeline),
            interim,
            inbox,
            declared,
            received: 0,
            remote_done,
            send_window,
            recv_window,
            recv_unacked: 0,
            stream_window: recv_window as usize,
            pending: Bytes::new(),
            end_after_pending: false,
            lingered: 0,
            linger_until: None,
        }
    }
}

impl<B> Stream<B> {
    pub(super) fn local_done(&self) -> bool {
        matches!(self.phase, Phase::Done) && self.pending.is_empty()
    }

    pub(super) fn fail_body(&mut self, e: super::body::H2BodyError) {
        if let Some(inbox) = &self.inbox {
            let mut i = lock(inbox);
            i.error = Some(e);
            i.wake();
        }
    }

    /// Hands a DATA payload to the request body, unless nobody reads it any more.
    pub(super) fn deliver(&mut self, data: Bytes, end: bool) -> Taken {
        let len = data.len();
        match &self.inbox {
            Some(inbox) if Arc::strong_count(inbox) > 1 => {
                let mut i = lock(inbox);
                if !data.is_empty() {
                    i.data.push_back(data);
                }
                i.end |= end;
                i.wake();
                Taken {
                    delivered: true,
                    len,
                }
            }
            _ => Taken {
                delivered: false,
                len,
            },
        }
    }
}

impl<S: Service + 'static> Conn<S>
where
    S::Body: 'static,
{
    /// Polls one woken stream as far as it goes: its pipeline, then its response.
    pub(super) fn poll_stream(&mut self, slot: usize) {
        let Some(waker) = self.wakers.get(slot).cloned() else {
            return;
        };
        waker.clear();
        let wref = waker_ref(&waker);
        let mut cx = Context::from_waker(&wref);
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        let mut phase = std::mem::replace(&mut s.phase, Phase::Done);
        loop {
            match &mut phase {
                Phase::Pipeline(fut) => {
                    let polled = fut.as_mut().poll(&mut cx);
                    self.write_interims(slot);
                    match polled {
                        Poll::Ready(resp) => phase = self.start_response(slot, resp),
                        Poll::Pending => break,
                    }
                }
                Phase::Body(body) => {
                    if self.has_pending(slot) {
                        if !self.send_pending(slot) {
                            break;
                        }
                        if self.ended(slot) {
                            phase = Phase::Done;
                        }
                        continue;
                    }
                    match Pin::new(&mut *body).poll_frame(&mut cx) {
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => {
                                let end = body.is_end_stream();
                                if let Some(Some(s)) = self.streams.get_mut(slot) {
                                    s.pending = data;
                                    s.end_after_pending = end;
                                }
                            }
                            Err(frame) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    self.write_fields(
                                        slot,
                                        None,
                                        &trailers,
                                        None::<&S::Body>,
                                        true,
                                    );
                                    phase = Phase::Done;
                                }
                            }
                        },
                        Poll::Ready(None) => {
                            if let Some(Some(s)) = self.streams.get_mut(slot) {
                                s.end_after_pending = true;
                            }
                            self.send_pending(slot);
                            phase = Phase::Done;
                        }
                        Poll::Ready(Some(Err(_))) => {
                            self.reset(slot, INTERNAL_ERROR);
                            return;
                        }
                        Poll::Pending => break,
                    }
                }
                Phase::Done => break,
            }
        }
        let done = matches!(phase, Phase::Done);
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        s.phase = phase;
        if done && !s.remote_done && s.linger_until.is_none() {
            s.linger_until = Some(Instant::now() + LINGER_TIME);
        }
        self.collect_credit(slot);
        self.maybe_remove(slot);
    }

    fn has_pending(&self, slot: usize) -> bool {
        matches!(self.streams.get(slot), Some(Some(s)) if !s.pending.is_empty())
    }

    fn ended(&self, slot: usize) -> bool {
        matches!(self.streams.get(slot), Some(Some(s)) if s.pending.is_empty() && s.end_after_pending)
    }

    /// Writes pending DATA as far as the windows, the frame size and the write buffer
    /// allow (with END_STREAM on the last frame when the body ended); whether all went.
    fn send_pending(&mut self, slot: usize) -> bool {
        loop {
            let max_frame = self.peer_max_frame;
            let conn_window = self.send_window;
            let Some(Some(s)) = self.streams.get_mut(slot) else {
                return false;
            };
            let id = s.id;
            if s.pending.is_empty() {
                if s.end_after_pending {
                    self.put_head(0, DATA, END_STREAM, id);
                }
                return true;
            }
            let n = s
                .pending
                .len()
                .min(max_frame)
                .min(conn_window.max(0) as usize)
                .min(s.send_window.max(0) as usize);
            if n == 0 {
                return false;
            }
            if self.wbuf.len() >= HIGH_WATER {
                // Polled again once the write buffer has drained.
                if let Some(w) = self.wakers.get(slot) {
                    w.poke();
                }
                return false;
            }
            let chunk = s.pending.split_to(n);
            s.send_window -= n as i64;
            let last = s.pending.is_empty() && s.end_after_pending;
            // The end is marked on this frame; none follows.
            if last {
                s.end_after_pending = false;
            }
            self.send_window -= n as i64;
            self.put_head(n, DATA, if last { END_STREAM } else { 0 }, id);
            self.wbuf.extend_from_slice(chunk.chunk());
            if last {
                return true;
            }
        }
    }

    fn start_response(&mut self, slot: usize, resp: Response<S::Body>) -> Phase<S::Body> {
        let (parts, body) = resp.into_parts();
        let end = body.is_end_stream();
        self.write_fields(slot, Some(parts.status), &parts.headers, Some(&body), end);
        if end {
            Phase::Done
        } else {
            Phase::Body(body)
        }
    }

    fn write_interims(&mut self, slot: usize) {
        let Some(Some(s)) = self.streams.get(slot) else {
            return;
        };
        let queued = std::mem::take(&mut *s.interim.lock());
        for (status, fields) in queued {
            self.write_fields(slot, Some(status), &fields, None::<&S::Body>, false);
        }
    }

    /// A header block (a response head when `status` is set, else trailers) as HEADERS and
    /// CONTINUATION frames.
    fn write_fields<E: ExtraFields>(
        &mut self,
        slot: usize,
        status: Option<StatusCode>,
        fields: &HeaderMap,
        extra: Option<&E>,
        end_stream: bool,
    ) {
        let Some(Some(s)) = self.streams.get(slot) else {
            return;
        };
        let id = s.id;
        let mut block = Vec::with_capacity(128);
        self.encoder.begin(&mut block);
        if let Some(status) = status {
            self.encoder.status(status.as_u16(), &mut block);
        }
        for (name, value) in fields {
            if is_connection_specific(name) {
                continue;
            }
            self.encoder.field(
                name.as_str(),
                value.as_bytes(),
                value.is_sensitive(),
                &mut block,
            );
        }
        if let Some(extra) = extra {
            let encoder = &mut self.encoder;
            extra.extra_fields(|name, value| {
                if let Ok(name) = std::str::from_utf8(name) {
                    let sensitive = name == crate::message::X_REQUEST_ID.as_str();
                    encoder.field(name, value, sensitive, &mut block);
                }
            });
        }
        let max = self.peer_max_frame;
        self.rules
            .outbound(&head(block.len().min(max), HEADERS, 0, id));
        if self.wbuf.capacity() == 0 {
            self.wbuf = crate::spare_buffers::take_write();
        }
        write_block(&mut self.wbuf, id, &block, end_stream, max);
    }

    /// Returns the flow-control credit of the request body bytes the pipeline took (or
    /// left behind when it dropped the body).
    fn collect_credit(&mut self, slot: usize) {
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        let Some(inbox) = &s.inbox else {
            return;
        };
        let consumed = {
            let mut i = lock(inbox);
            if Arc::strong_count(inbox) == 1 {
                let left: usize = i.data.drain(..).map(|d| d.len()).sum();
                i.consumed += left;
            }
            std::mem::take(&mut i.consumed)
        };
        if consumed == 0 {
            return;
        }
        s.recv_unacked += consumed;
        let mut update = None;
        if !s.remote_done && s.recv_unacked >= s.stream_window / 2 {
            update = Some((s.id, s.recv_unacked));
            s.recv_window += s.recv_unacked as i64;
            s.recv_unacked = 0;
        }
        self.credit(consumed);
        if let Some((id, n)) = update {
            self.put_u32(WINDOW_UPDATE, id, n as u32);
        }
    }
}

/// RFC 9113 §8.2.2: fields of HTTP/1.1 connections that an HTTP/2 message must not carry.
fn is_connection_specific(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}
