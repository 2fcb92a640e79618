//! Bytes owed to a socket by an HTTP/1.1 connection, on either side of the gateway: the
//! unwritten rest of a write buffer (a head, chunk-size lines), then one body frame, then a
//! static tail (a chunk's CRLF, the last chunk), written vectored so a small message goes out
//! in one `writev`. Also the Content-Length reading that both sides' framing decisions use.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// What follows the write buffer on the wire.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Bytes of the write buffer already written.
    wpos: usize,
    /// The body frame being written, after the buffer.
    pub data: Bytes,
    /// Written after `data`.
    pub tail: &'static [u8],
}

impl Outgoing {
    /// Writes `wbuf[wpos..]`, `data` and `tail` until all are in `io`, then empties `wbuf`;
    /// with `flush`, also flushes `io` (TLS keeps records back until flushed).
    pub fn poll_write<W>(
        &mut self,
        io: &mut W,
        wbuf: &mut Vec<u8>,
        flush: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            let head = wbuf.get(self.wpos..).unwrap_or_default();
            let parts = [head, &self.data[..], self.tail];
            let mut slices = [IoSlice::new(&[]); 3];
            let mut n = 0;
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                slices[n] = IoSlice::new(part);
                n += 1;
            }
            if n == 0 {
                if flush {
                    ready!(Pin::new(&mut *io).poll_flush(cx))?;
                }
                wbuf.clear();
                self.wpos = 0;
                return Poll::Ready(Ok(()));
            }
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(wbuf.len(), written);
        }
    }

    /// Marks `n` bytes as written, across the buffer, `data` and `tail` in that order.
    fn advance(&mut self, wbuf_len: usize, mut n: usize) {
        let from_head = n.min(wbuf_len - self.wpos);
        self.wpos += from_head;
        n -= from_head;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        let from_tail = n.min(self.tail.len());
        self.tail = self.tail.get(from_tail..).unwrap_or_default();
        debug_assert_eq!(n, from_tail, "wrote more bytes than were queued");
    }
}

/// Appends `n` in lower-case hex without leading zeros (a chunk size).
pub fn push_hex(buf: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[start..]);
}

/// A content-length value: ASCII digits only, without overflow.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lower_case_hex_without_leading_zeros() {
        let mut buf = Vec::new();
        for n in [0, 9, 10, 255, 4096, u64::MAX] {
            push_hex(&mut buf, n);
            buf.push(b' ');
        }
        assert_eq!(buf, b"0 9 a ff 1000 ffffffffffffffff ");
    }

    #[tokio::test]
    async fn buffer_frame_and_tail_arrive_in_order_through_short_writes() {
        use tokio::io::AsyncReadExt;
        let (mut a, mut b) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            let mut out = Outgoing {
                data: Bytes::from_static(b"body"),
                tail: b"\r\n",
                ..Outgoing::default()
            };
            let mut wbuf = b"head:".to_vec();
            std::future::poll_fn(|cx| out.poll_write(&mut a, &mut wbuf, true, cx))
                .await
                .unwrap();
            assert!(wbuf.is_empty());
        });
        let mut got = vec![0u8; 11];
        b.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b"head:body\r\n");
    }
}
