//! Chunked request bodies (RFC 9112 §7.1): the chunk-size line with its extensions, and the
//! CRLF after chunk data. Each function looks at the front of the connection's buffer.

use super::syntax::{hex_value, is_tchar, quoted_string_end};
use super::*;

/// The chunk-size line at the front of `b`: `Some((size, line length with its CRLF))`, or
/// `None` while the line is incomplete.
pub(crate) fn chunk_size_line(
    b: &[u8],
    lim: &StrictLimits,
) -> Result<Option<(u64, usize)>, Rejection> {
    let longest = MAX_CHUNK_SIZE_DIGITS + lim.max_chunk_extension;
    let hi = b.len().min(longest + 1);
    let Some(i) = b[..hi].iter().position(|&c| c == b'\r' || c == b'\n') else {
        return if hi > longest {
            Err(overlong_chunk_line(&b[..hi]))
        } else {
            Ok(None)
        };
    };
    if b[i] == b'\n' {
        return Err(BARE_LF);
    }
    let Some(&lf) = b.get(i + 1) else {
        return Ok(None);
    };
    if lf != b'\n' {
        return Err(BARE_CR);
    }
    let size = parse_chunk_line(&b[..i], lim.max_chunk_extension)?;
    Ok(Some((size, i + 2)))
}

/// The CRLF that must follow chunk data, at the front of `b`: `Some(2)` once it is there.
pub(crate) fn chunk_data_end(b: &[u8]) -> Result<Option<usize>, Rejection> {
    match b {
        [] | [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] => Ok(Some(2)),
        _ => Err(MISSING_CHUNK_CRLF),
    }
}

/// `line` is a chunk-size line without its CRLF.
pub(super) fn parse_chunk_line(line: &[u8], max_ext: usize) -> Result<u64, Rejection> {
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(INVALID_CHUNK_SIZE);
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(CHUNK_SIZE_TOO_LONG);
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |acc, &c| (acc << 4) | u64::from(hex_value(c)));
    let ext = &line[digits..];
    if ext.is_empty() {
        return Ok(size);
    }
    if !matches!(ext[0], b';' | b' ' | b'\t') {
        return Err(INVALID_CHUNK_SIZE);
    }
    if ext.len() > max_ext {
        return Err(CHUNK_EXTENSION_TOO_LONG);
    }
    if !is_chunk_ext(ext) {
        return Err(INVALID_CHUNK_EXTENSION);
    }
    Ok(size)
}

fn overlong_chunk_line(prefix: &[u8]) -> Rejection {
    let digits = prefix.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits > MAX_CHUNK_SIZE_DIGITS {
        CHUNK_SIZE_TOO_LONG
    } else {
        CHUNK_EXTENSION_TOO_LONG
    }
}

/// RFC 9112 §7.1.1: `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
pub(super) fn is_chunk_ext(ext: &[u8]) -> bool {
    let skip_ws = |mut i: usize| {
        while i < ext.len() && matches!(ext[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let token = |mut i: usize| {
        while i < ext.len() && is_tchar(ext[i]) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < ext.len() {
        i = skip_ws(i);
        if ext.get(i) != Some(&b';') {
            return false;
        }
        i = skip_ws(i + 1);
        let name_end = token(i);
        if name_end == i {
            return false;
        }
        i = name_end;
        let eq = skip_ws(i);
        if ext.get(eq) != Some(&b'=') {
            continue;
        }
        i = skip_ws(eq + 1);
        if ext.get(i) == Some(&b'"') {
            let Some(close) = quoted_string_end(ext, i) else {
                return false;
            };
            i = close;
        } else {
            let value_end = token(i);
            if value_end == i {
                return false;
            }
            i = value_end;
        }
    }
    true
}
