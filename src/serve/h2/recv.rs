//! The frames of a native HTTP/2 connection that carry requests: HEADERS and CONTINUATION
//! (a header block decoded into a new request, or a request's trailers) and DATA (a
//! request body, with both windows and the declared length checked).

use std::sync::Arc;

use bytes::Bytes;

use super::body::{lock, H2BodyError, H2NativeBody, Inbox};
use super::conn::{Conn, ConnError, PendingBlock, LINGER_BYTES};
use super::frame::*;
use super::request::{Head as RequestHead, Refusal};
use super::stream::Stream;
use crate::serve::h1::Service;
use crate::serve::DownstreamBody;

impl<S: Service + 'static> Conn<S>
where
    S::Body: 'static,
{
    pub(super) fn on_headers(&mut self, h: Head, payload: Bytes) {
        if h.stream == 0 || h.stream % 2 == 0 {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        }
        let mut start = 0;
        let mut end = payload.len();
        if h.has(PADDED) {
            let pad = usize::from(payload.first().copied().unwrap_or(0));
            start = 1;
            if pad + 1 > payload.len() {
                return self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
            end -= pad;
        }
        if h.has(PRIORITY_FLAG) {
            start += 5;
        }
        let Some(fragment) = payload.get(start..end) else {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        };
        let end_stream = h.has(END_STREAM);
        if h.has(END_HEADERS) {
            self.on_block(h.stream, end_stream, fragment);
        } else {
            self.block = Some(PendingBlock {
                stream: h.stream,
                end_stream,
                buf: fragment.to_vec(),
            });
        }
    }

    pub(super) fn on_continuation(&mut self, h: Head, payload: &[u8]) {
        let Some(mut b) = self.block.take() else {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        };
        b.buf.extend_from_slice(payload);
        if h.has(END_HEADERS) {
            self.on_block(b.stream, b.end_stream, &b.buf);
        } else {
            self.block = Some(b);
        }
    }

    /// A complete header block: a new request, or the trailers of an open one.
    fn on_block(&mut self, id: u32, end_stream: bool, block: &[u8]) {
        let existing = self.slot_of(id);
        let trailers = existing.is_some() || id <= self.last_stream;
        let mut head = RequestHead::new(self.settings.max_header_list as usize, trailers);
        if let Err(e) = self.decoder.decode(block, |f| head.field(f)) {
            tracing::debug!("http/2 header block: {e}");
            return self.fail(ConnError::Code(COMPRESSION_ERROR));
        }
        if let Some(slot) = existing {
            return self.on_trailers(slot, end_stream, head);
        }
        if id <= self.last_stream {
            // A stream already closed.
            self.put_u32(RST_STREAM, id, STREAM_CLOSED);
            return;
        }
        self.last_stream = id;
        if self.goaway.is_some() || self.peer_goaway {
            // Above our GOAWAY's last stream: ignored (RFC 9113 §6.8).
            return;
        }
        if self.ids.len() >= self.settings.max_streams as usize {
            self.put_u32(RST_STREAM, id, REFUSED_STREAM);
            return;
        }
        let content_length = head.content_length;
        let (body, inbox) = if end_stream {
            (DownstreamBody::Empty, None)
        } else {
            let inbox = Arc::new(std::sync::Mutex::new(Inbox {
                length: content_length,
                ..Default::default()
            }));
            (
                DownstreamBody::H2Native(H2NativeBody::new(inbox.clone())),
                Some(inbox),
            )
        };
        match head.into_request(body) {
            Ok(req) => {
                if end_stream && content_length.is_some_and(|n| n != 0) {
                    self.put_u32(RST_STREAM, id, PROTOCOL_ERROR);
                    return;
                }
                let stream = Stream::new(
                    id,
                    req,
                    self.svc.clone(),
                    inbox,
                    content_length,
                    end_stream,
                    self.peer_initial_window,
                    i64::from(self.settings.stream_window.max(DEFAULT_WINDOW)),
                );
                self.insert(stream);
            }
            Err(Refusal::Malformed) => self.put_u32(RST_STREAM, id, PROTOCOL_ERROR),
            Err(Refusal::TooLarge) => {
                let mut block = Vec::new();
                self.encoder.begin(&mut block);
                self.encoder.status(431, &mut block);
                let max = self.peer_max_frame;
                write_block(&mut self.wbuf, id, &block, true, max);
                if !end_stream {
                    self.put_u32(RST_STREAM, id, NO_ERROR);
                }
            }
        }
    }

    fn on_trailers(&mut self, slot: usize, end_stream: bool, head: RequestHead) {
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        if s.remote_done {
            return self.reset(slot, STREAM_CLOSED);
        }
        let length_ok = s.declared.is_none_or(|n| n == s.received);
        let trailers = head.into_trailers();
        if !end_stream || !length_ok || trailers.is_err() {
            s.fail_body(H2BodyError::Malformed);
            return self.reset(slot, PROTOCOL_ERROR);
        }
        s.remote_done = true;
        if let (Some(inbox), Ok(t)) = (&s.inbox, trailers) {
            let mut i = lock(inbox);
            i.trailers = Some(t);
            i.end = true;
            i.wake();
        }
        self.maybe_remove(slot);
    }

    pub(super) fn on_data(&mut self, h: Head, payload: Bytes) {
        if h.stream == 0 {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        }
        let len = payload.len();
        self.recv_window -= len as i64;
        if self.recv_window < 0 {
            return self.fail(ConnError::Code(FLOW_CONTROL_ERROR));
        }
        let mut data = payload;
        if h.has(PADDED) {
            let pad = usize::from(data.first().copied().unwrap_or(0));
            if pad + 1 > len {
                return self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
            data = data.slice(1..len - pad);
        }
        // Padding is never delivered: its credit comes back at once.
        self.credit(len - data.len());
        let Some(slot) = self.slot_of(h.stream) else {
            self.credit(data.len());
            if h.stream > self.last_stream {
                return self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
            self.put_u32(RST_STREAM, h.stream, STREAM_CLOSED);
            return;
        };
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        if s.remote_done {
            self.credit(data.len());
            return self.reset(slot, STREAM_CLOSED);
        }
        s.recv_window -= len as i64;
        if s.recv_window < 0 {
            self.credit(data.len());
            return self.reset(slot, FLOW_CONTROL_ERROR);
        }
        s.received += data.len() as u64;
        let end = h.has(END_STREAM);
        let over = s.declared.is_some_and(|n| s.received > n);
        let short = end && s.declared.is_some_and(|n| s.received != n);
        if over || short {
            s.fail_body(H2BodyError::Malformed);
            self.credit(data.len());
            return self.reset(slot, PROTOCOL_ERROR);
        }
        s.remote_done = end;
        let taken = s.deliver(data, end);
        if !taken.delivered {
            s.lingered += taken.len as u64;
            let too_much = s.local_done() && s.lingered > LINGER_BYTES && !s.remote_done;
            self.credit(taken.len);
            if too_much {
                return self.reset(slot, NO_ERROR);
            }
        }
        self.maybe_remove(slot);
    }
}
