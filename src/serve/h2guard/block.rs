//! The first bytes of a header block, as the guard sees them: the HPACK dynamic table size
//! updates it starts with, and whether its first field is a pseudo-header field. Enough
//! HPACK (RFC 7541) for that and no more: no table is kept and nothing is decoded past the
//! first field's name.

use super::Event;

/// Reports the dynamic table size updates a header block starts with (RFC 7541 section
/// 6.3), then whether its first field is a pseudo-header field. What `block` cuts off is
/// left to h2.
pub(super) fn block_start<E>(
    block: &[u8],
    on: &mut impl FnMut(Event) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = 0;
    while let Some(rest) = block
        .get(at..)
        .filter(|r| r.first().is_some_and(|b| b & 0xe0 == 0x20))
    {
        let Some((size, used)) = hpack_int(rest, 5) else {
            return Ok(());
        };
        at += used;
        on(Event::TableSizeUpdate(size))?;
    }
    if first_name_is_pseudo(block.get(at..).unwrap_or_default()) {
        on(Event::PseudoFieldFirst)?;
    }
    Ok(())
}

/// Whether a field representation names a pseudo-header field through the static table
/// (entries 1 to 14, `:authority` to `:status`) or a literal name starting with `:`
/// (plain, or Huffman-coded: `:` is the 7-bit code 1011100). A name from the dynamic
/// table is not known here.
fn first_name_is_pseudo(field: &[u8]) -> bool {
    let Some(&first) = field.first() else {
        return false;
    };
    let prefix = match first {
        b if b & 0x80 != 0 => 7,            // indexed field
        b if b & 0x40 != 0 => 6,            // literal with incremental indexing
        b if b & 0x20 != 0 => return false, // a size update out of place: h2 refuses it
        _ => 4,                             // literal without indexing, never indexed
    };
    let Some((index, used)) = hpack_int(field, prefix) else {
        return false;
    };
    match index {
        1..=14 => true,
        0 if prefix != 7 => {
            let name = field.get(used..).unwrap_or_default();
            let huffman = name.first().is_some_and(|b| b & 0x80 != 0);
            match hpack_int(name, 7) {
                Some((len, used)) if len > 0 => match name.get(used) {
                    Some(&c) if huffman => c >> 1 == 0b101_1100,
                    Some(&c) => c == b':',
                    None => false,
                },
                _ => false,
            }
        }
        _ => false,
    }
}

/// An HPACK integer with a `prefix`-bit prefix (1 to 8) (RFC 7541 section 5.1): its value
/// (saturated at `u32::MAX`) and the bytes it took, or `None` when `b` ends first.
pub(super) fn hpack_int(b: &[u8], prefix: u32) -> Option<(u32, usize)> {
    let mask = u8::MAX >> (8 - prefix);
    let first = b.first()? & mask;
    if first < mask {
        return Some((u32::from(first), 1));
    }
    let mut value = u64::from(mask);
    for (i, &byte) in b.iter().enumerate().skip(1) {
        let shift = 7 * (i as u32 - 1);
        if shift < 35 {
            value += u64::from(byte & 0x7f) << shift;
        } else if byte & 0x7f != 0 {
            value = u64::MAX;
        }
        if byte & 0x80 == 0 {
            return Some((u32::try_from(value).unwrap_or(u32::MAX), i + 1));
        }
    }
    None
}
