//! The Huffman code of RFC 7541 Appendix B. The code is canonical (codes of one length
//! follow each other in symbol order, each length starting where the shorter ones left
//! off), so the table is written as each symbol's code length and the codes are derived
//! from it at compile time.

use super::HpackError;

/// The code length in bits of each symbol, 0 to 255, then EOS (256): RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    // 0..=31: control bytes
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    // 128..=255
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    // EOS
    30,
];

const MAX_LEN: usize = 30;

/// Each symbol's code, right-aligned.
const CODES: [u32; 257] = canonical_codes();

/// Per code length: the first code of that length and the position of its symbol in
/// `SORTED`, and how many codes have that length.
const FIRST_CODE: [u32; MAX_LEN + 1] = per_length().0;
const FIRST_POS: [u16; MAX_LEN + 1] = per_length().1;
const COUNT: [u16; MAX_LEN + 1] = per_length().2;

/// The symbols ordered by (code length, symbol): a code's position among its length's codes
/// indexes this from `FIRST_POS`.
const SORTED: [u16; 257] = sorted_symbols();

/// For each value of the next 8 bits: the symbol and length when a code of at most 8 bits
/// starts there (length 0 otherwise). Most characters of header fields take this path.
const SHORT: [(u8, u8); 256] = short_table();

const fn count_per_length() -> [u16; MAX_LEN + 1] {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    count
}

const fn per_length() -> ([u32; MAX_LEN + 1], [u16; MAX_LEN + 1], [u16; MAX_LEN + 1]) {
    let count = count_per_length();
    let mut first_code = [0u32; MAX_LEN + 1];
    let mut first_pos = [0u16; MAX_LEN + 1];
    let mut code = 0u32;
    let mut pos = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        code = (code + count[len - 1] as u32) << 1;
        first_code[len] = code;
        first_pos[len] = pos;
        pos += count[len];
        len += 1;
    }
    (first_code, first_pos, count)
}

const fn canonical_codes() -> [u32; 257] {
    let (first_code, _, _) = per_length();
    let mut next = first_code;
    let mut codes = [0u32; 257];
    let mut s = 0;
    while s < 257 {
        let len = LENGTHS[s] as usize;
        codes[s] = next[len];
        next[len] += 1;
        s += 1;
    }
    codes
}

const fn sorted_symbols() -> [u16; 257] {
    let mut out = [0u16; 257];
    let mut i = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                out[i] = s as u16;
                i += 1;
            }
            s += 1;
        }
        len += 1;
    }
    out
}

const fn short_table() -> [(u8, u8); 256] {
    let mut out = [(0u8, 0u8); 256];
    let mut s = 0;
    while s < 256 {
        let len = LENGTHS[s] as u32;
        if len <= 8 {
            let base = (CODES[s] << (8 - len)) as usize;
            let mut k = 0;
            while k < (1usize << (8 - len)) {
                out[base + k] = (s as u8, len as u8);
                k += 1;
            }
        }
        s += 1;
    }
    out
}

/// The length in bytes of `src` Huffman-coded, padding included.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

/// Appends `src` Huffman-coded to `dst`, padded with the most significant bits of EOS.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let len = LENGTHS[b as usize] as u32;
        acc = (acc << len) | u64::from(CODES[b as usize]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        dst.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
}

/// Appends the decoding of the Huffman-coded `src` to `dst`. Refuses EOS inside the
/// string, padding longer than 7 bits and padding that is not EOS's leading ones (RFC 7541
/// §5.2).
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    dst.reserve(src.len() + src.len() / 2);
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut input = src.iter();
    loop {
        while bits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        // The next (up to) 8 bits, left-aligned in a byte.
        let top8 = if bits >= 8 {
            (acc >> (bits - 8)) as u8
        } else {
            ((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1)
        };
        let (sym, len) = SHORT[top8 as usize];
        if len != 0 && u32::from(len) <= bits {
            dst.push(sym);
            bits -= u32::from(len);
            acc &= mask(bits);
            continue;
        }
        match long_symbol(acc, bits) {
            Some((sym, len)) => {
                if sym == 256 {
                    return Err(HpackError::HuffmanEos);
                }
                dst.push(sym as u8);
                bits -= len;
                acc &= mask(bits);
            }
            None => {
                // What is left must be padding: fewer than 8 bits, all ones.
                if bits > 7 || acc != mask(bits) {
                    return Err(HpackError::HuffmanPadding);
                }
                return Ok(());
            }
        }
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The symbol of a code longer than 8 bits at the top of the `bits` valid low bits of
/// `acc`, by the canonical code's per-length ranges; `None` when the bits left hold no
/// whole code.
fn long_symbol(acc: u64, bits: u32) -> Option<(u16, u32)> {
    let mut len = 5usize;
    while len <= MAX_LEN && len as u32 <= bits {
        let code = (acc >> (bits - len as u32)) as u32;
        let offset = code.wrapping_sub(FIRST_CODE[len]);
        if offset < u32::from(COUNT[len]) {
            let pos = FIRST_POS[len] as usize + offset as usize;
            return Some((SORTED[pos], len as u32));
        }
        len += 1;
    }
    None
}

#[cfg(test)]
pub(super) fn code_of(sym: usize) -> (u32, u8) {
    (CODES[sym], LENGTHS[sym])
}
