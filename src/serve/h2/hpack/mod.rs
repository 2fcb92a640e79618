//! HPACK (RFC 7541), the header compression of HTTP/2: the decoder of request header
//! blocks (`decode.rs`) and the encoder of response header blocks (`encode.rs`), the
//! static and dynamic tables (`table.rs`), the prefixed integers and string literals both
//! share (here) and the Huffman code (`huffman.rs`).

mod decode;
mod encode;
mod huffman;
mod table;
#[cfg(test)]
mod tests;

pub use decode::{Decoder, Field};
pub use encode::Encoder;

/// Why a header block could not be decoded: every one is a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("table index {0} out of range")]
    BadIndex(usize),
    #[error("dynamic table size update to {0} above the limit {1}")]
    TableSizeOverLimit(usize, usize),
    #[error("dynamic table size update after the first field")]
    LateSizeUpdate,
    #[error("EOS in a Huffman-coded string")]
    HuffmanEos,
    #[error("bad padding of a Huffman-coded string")]
    HuffmanPadding,
}

/// The largest integer accepted: far above any length or index a block can hold, and low
/// enough that no arithmetic on it overflows.
const MAX_INTEGER: usize = 1 << 28;

/// Reads a prefixed integer (RFC 7541 §5.1) whose first byte's low `prefix` bits start it;
/// returns the value and the bytes it took.
fn read_integer(src: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
    let first = *src.first().ok_or(HpackError::Truncated)?;
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &b) in src.iter().enumerate().skip(1) {
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    Err(HpackError::Truncated)
}

/// Appends `value` as a prefixed integer whose first byte carries `flags` in the bits
/// above the `prefix`.
fn write_integer(dst: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

/// Appends a string literal, Huffman-coded only where that makes it shorter.
fn write_string(dst: &mut Vec<u8>, s: &[u8]) {
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        write_integer(dst, 0x80, 7, coded);
        huffman::encode(s, dst);
    } else {
        write_integer(dst, 0, 7, s.len());
        dst.extend_from_slice(s);
    }
}
