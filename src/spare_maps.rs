//! Header maps kept for reuse on each worker thread.
//!
//! Every proxied request builds two maps: the request's, read from the client, and the
//! response's, read from the upstream. Each is two allocations (entries and index), and both
//! are dropped once their head is written. A map handed back here is cleared, keeping its
//! allocations, and the next head read on this thread takes it instead of allocating.

use std::cell::RefCell;

use http::HeaderMap;

use crate::spare_buffers;

/// Maps larger than this many fields are not kept (an outsized head should not pin memory).
const LARGEST: usize = 128;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields` fields: a kept one when there is one large enough.
pub fn take(fields: usize) -> HeaderMap {
    match spare_buffers::take(&SPARE) {
        Some(map) if map.capacity() >= fields => map,
        _ => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`'s allocations for a later [`take`] on this thread.
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    spare_buffers::keep(&SPARE, map);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        let mut m = HeaderMap::with_capacity(20);
        m.insert("x-a", HeaderValue::from_static("1"));
        let room = m.capacity();
        give(m);
        let again = take(10);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the same allocation, not a new one");
        let fresh = take(10);
        assert!(fresh.capacity() >= 10, "nothing kept: a new map");
    }

    #[test]
    fn a_kept_map_too_small_is_not_used() {
        give(HeaderMap::with_capacity(2));
        let m = take(50);
        assert!(m.capacity() >= 50);
    }
}
