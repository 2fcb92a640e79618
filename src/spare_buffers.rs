//! Connection buffers kept for reuse on each worker thread, and the keeping itself
//! ([`take`], [`keep`]) that the other per-thread spares (header maps, a parser's field
//! table) use too.
//!
//! An idle keep-alive connection holds no read or write buffer: it gives them back here when
//! it starts waiting for the next request, and takes them again when bytes arrive (a worker
//! runs its connections on one thread, so the next request on this thread takes what the
//! last one gave). Thousands of idle clients then cost a few hundred bytes each, not the
//! buffers' size, while a busy connection reuses the same allocations from one request to the
//! next as before.

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of a read buffer: a request head usually arrives in one read of this size.
pub const READ_BUFFER: usize = 16 * 1024;
/// Size of a write buffer (a response head); it grows for a larger head.
pub const WRITE_BUFFER: usize = 1024;
/// Spares of each kind kept per thread, at most: what connections that go idle and wake
/// in the same moment need; the rest is freed.
pub const KEPT: usize = 64;
/// A buffer grown past this (a large body, an outsized head) is freed, not kept.
const LARGEST_READ: usize = 4 * READ_BUFFER;
const LARGEST_WRITE: usize = 16 * WRITE_BUFFER;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spares of one kind kept per thread.
pub type Kept<T> = std::thread::LocalKey<RefCell<Vec<T>>>;

/// A spare from `kept`, when this thread has one.
pub fn take<T: 'static>(kept: &'static Kept<T>) -> Option<T> {
    kept.with_borrow_mut(Vec::pop)
}

/// Keeps `item` in `kept` for a later [`take`] on this thread, unless [`KEPT`] are kept
/// already (then it is dropped).
pub fn keep<T: 'static>(kept: &'static Kept<T>, item: T) {
    kept.with_borrow_mut(|spares| {
        if spares.len() < KEPT {
            spares.push(item);
        }
    });
}

/// An empty read buffer with room for at least [`READ_BUFFER`] bytes.
pub fn take_read() -> BytesMut {
    take(&READ).unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

/// Keeps an empty read buffer for a later [`take_read`] on this thread, when its whole
/// allocation is free again (nothing split off it is still alive) and not outsized;
/// otherwise lets it go.
pub fn give_read(mut buf: BytesMut) {
    if buf.is_empty() && buf.capacity() <= LARGEST_READ && buf.try_reclaim(READ_BUFFER) {
        keep(&READ, buf);
    }
}

/// An empty write buffer with room for at least [`WRITE_BUFFER`] bytes.
pub fn take_write() -> Vec<u8> {
    take(&WRITE).unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Keeps a write buffer (cleared) for a later [`take_write`] on this thread.
pub fn give_write(mut buf: Vec<u8>) {
    if (WRITE_BUFFER..=LARGEST_WRITE).contains(&buf.capacity()) {
        buf.clear();
        keep(&WRITE, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_read_buffer_comes_back_with_its_room() {
        let mut buf = take_read();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let at = buf.as_ptr();
        let head = buf.split().freeze();
        drop(head);
        give_read(buf);
        let again = take_read();
        assert!(again.is_empty());
        assert!(again.capacity() >= READ_BUFFER);
        assert_eq!(again.as_ptr(), at, "the same allocation, not a new one");
    }

    #[test]
    fn a_read_buffer_still_shared_is_not_kept() {
        while READ.with_borrow_mut(Vec::pop).is_some() {}
        let mut buf = take_read();
        buf.extend_from_slice(b"abc");
        let alive = buf.split().freeze();
        give_read(buf);
        assert_eq!(READ.with_borrow(Vec::len), 0, "part of it is still in use");
        assert_eq!(&alive[..], b"abc");
    }

    #[test]
    fn a_given_write_buffer_comes_back_empty() {
        let mut buf = take_write();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = buf.as_ptr();
        give_write(buf);
        let again = take_write();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
    }
}
