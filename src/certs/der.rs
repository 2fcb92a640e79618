//! A minimal DER reader: just enough to walk a certificate to its subject name and its
//! subject alternative names.
//!
//! The input comes from the network (a client certificate), so every read is bounds-checked
//! and returns `None` instead of panicking: truncated input, lengths past the end, indefinite
//! or non-minimal lengths and multi-byte tags are all refused. Nothing recurses, so a deeply
//! nested input cannot exhaust the stack.

/// Universal and context tags the certificate walk needs.
pub(crate) mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[n]` with the constructed bit, as EXPLICIT tagging produces.
    pub const fn explicit(n: u8) -> u8 {
        0xa0 | n
    }
    /// `[n]` without the constructed bit, as IMPLICIT tagging of a primitive type produces.
    pub const fn implicit(n: u8) -> u8 {
        0x80 | n
    }
}

/// Longest length field accepted: four bytes, far more than any certificate needs.
const MAX_LENGTH_BYTES: usize = 4;

/// Reads DER elements off the front of a byte slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { rest: input }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next element, without reading it.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag and contents.
    pub(crate) fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, after_tag) = self.rest.split_first()?;
        // Tag numbers of 31 and more take further bytes; no element we read uses them.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (len, after_len) = length(after_tag)?;
        let (value, rest) = after_len.split_at_checked(len)?;
        self.rest = rest;
        Some((tag, value))
    }

    /// The contents of the next element, which must have tag `want`.
    pub(crate) fn expect(&mut self, want: u8) -> Option<&'a [u8]> {
        let mut ahead = *self;
        let (tag, value) = ahead.any()?;
        if tag != want {
            return None;
        }
        *self = ahead;
        Some(value)
    }

    /// The contents of the next element if it has tag `want`; nothing is read otherwise.
    pub(crate) fn optional(&mut self, want: u8) -> Option<Option<&'a [u8]>> {
        if self.peek_tag() == Some(want) {
            self.expect(want).map(Some)
        } else {
            Some(None)
        }
    }
}

/// A DER length and the bytes after it. Definite, minimal encodings only.
fn length(input: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let count = usize::from(first & 0x7f);
    // 0x80 is the indefinite form, which DER forbids.
    if count == 0 || count > MAX_LENGTH_BYTES {
        return None;
    }
    let (bytes, rest) = rest.split_at_checked(count)?;
    // Minimal: no leading zero byte, and the long form only for lengths of 128 and more.
    if bytes.first() == Some(&0) {
        return None;
    }
    let len = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if len < 0x80 {
        return None;
    }
    Some((len, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths_are_read() {
        let mut r = Reader::new(&[0x04, 0x02, 0xaa, 0xbb, 0x05, 0x00]);
        assert_eq!(r.any(), Some((0x04, &[0xaa, 0xbb][..])));
        assert_eq!(r.any(), Some((0x05, &[][..])));
        assert!(r.is_empty());

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let mut r = Reader::new(&long);
        assert_eq!(r.expect(0x04).map(<[u8]>::len), Some(0x80));
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_input_is_refused() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x03, 0x01, 0x02],
            &[0x30, 0x82, 0x01],
            &[0x30, 0x81],
        ] {
            assert_eq!(Reader::new(input).any(), None, "{input:x?}");
        }
    }

    #[test]
    fn huge_lengths_are_refused_without_reading_past_the_end() {
        for input in [
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00][..],
            &[0x30, 0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0xff],
            &[0x04, 0x82, 0xff, 0xff, 0x01, 0x02],
        ] {
            assert_eq!(Reader::new(input).any(), None, "{input:x?}");
        }
    }

    #[test]
    fn indefinite_and_non_minimal_lengths_are_refused() {
        for input in [
            &[0x30, 0x80, 0x00, 0x00][..],
            &[0x04, 0x81, 0x01, 0xaa],
            &[0x04, 0x82, 0x00, 0x01, 0xaa],
        ] {
            assert_eq!(Reader::new(input).any(), None, "{input:x?}");
        }
    }

    #[test]
    fn multi_byte_tags_are_refused() {
        assert_eq!(Reader::new(&[0x1f, 0x81, 0x00, 0x00]).any(), None);
        assert_eq!(Reader::new(&[0xbf, 0x01, 0x00]).any(), None);
    }

    #[test]
    fn wrong_tag_leaves_the_reader_where_it_was() {
        let mut r = Reader::new(&[0x02, 0x01, 0x05]);
        assert_eq!(r.expect(tag::SEQUENCE), None);
        assert_eq!(r.optional(tag::SEQUENCE), Some(None));
        assert_eq!(r.expect(tag::INTEGER), Some(&[0x05][..]));
    }

    #[test]
    fn optional_element_with_a_bad_length_is_an_error_not_an_absence() {
        let mut r = Reader::new(&[0xa0, 0x05, 0x01]);
        assert_eq!(r.optional(tag::explicit(0)), None);
    }
}
