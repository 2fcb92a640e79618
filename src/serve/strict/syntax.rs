//! Byte classes and small lexical helpers of HTTP/1.1 (RFC 9110 §5.6, RFC 9112).

/// Given `s[start] == '"'`, the offset after the closing quote.
pub(super) fn quoted_string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let escaped = *s.get(i + 1)?;
                if !is_field_value_byte(escaped) {
                    return None;
                }
                i += 2;
            }
            c if is_field_value_byte(c) => i += 1,
            _ => return None,
        }
    }
    None
}

pub(super) fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

const fn byte_table(kind: u8) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match kind {
            // tchar, RFC 9110 §5.6.2
            0 => {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'*'
                            | b'+'
                            | b'-'
                            | b'.'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                    )
            }
            // field-value bytes: HTAB, SP, VCHAR, obs-text
            1 => c == b'\t' || (c >= 0x20 && c != 0x7f),
            // uri-host [":" port] including IP literals: unreserved, pct, sub-delims, ":[]"
            _ => {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                            | b':'
                            | b'['
                            | b']'
                    )
            }
        };
        i += 1;
    }
    t
}

static TCHAR: [bool; 256] = byte_table(0);
static FIELD_VALUE: [bool; 256] = byte_table(1);
static AUTHORITY: [bool; 256] = byte_table(2);

pub(super) fn is_tchar(c: u8) -> bool {
    TCHAR[usize::from(c)]
}

pub(super) fn is_field_value_byte(c: u8) -> bool {
    FIELD_VALUE[usize::from(c)]
}

/// Printable ASCII and SP: all a request line may contain.
pub(super) fn is_request_line_byte(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

pub(super) fn is_authority(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&c| AUTHORITY[usize::from(c)])
}
