//! Field lines of a header or trailer section (RFC 9112 §5), checked byte by byte and
//! resumable: the bytes of an unfinished section are scanned once however they arrive.

use super::syntax::{is_field_value_byte, is_tchar, trim_ows};
use super::*;

/// Where a field's name or (trimmed) value lies in the buffer it was scanned from.
pub(crate) type Span = (usize, usize);

/// Scanning state of one section. Offsets are absolute in the buffer, whose front must not
/// move while the section is being scanned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldScanner {
    /// Start of the section (for its size limit).
    section: usize,
    /// Start of the current field line.
    line: usize,
    /// How far scanning got.
    probe: usize,
    /// The current line's colon, once its name is complete.
    colon: Option<usize>,
    fields: usize,
}

impl FieldScanner {
    pub(crate) fn new(section: usize) -> Self {
        FieldScanner {
            section,
            line: section,
            probe: section,
            colon: None,
            fields: 0,
        }
    }

    /// Scans field lines up to the empty line that ends the section and returns the offset
    /// after it, or `None` when more bytes are needed. `on_field` gets each complete field:
    /// its name, its value without surrounding whitespace, and where both lie in `b`.
    pub(crate) fn scan<F>(
        &mut self,
        b: &[u8],
        lim: &StrictLimits,
        mut on_field: F,
    ) -> Result<Option<usize>, Rejection>
    where
        F: FnMut(&[u8], &[u8], Span, Span) -> Result<(), Rejection>,
    {
        let hi = b
            .len()
            .min(self.section.saturating_add(lim.max_header_bytes));
        // Out of bytes: too large if the limit, not the data, ran out.
        let short = || -> Result<Option<usize>, Rejection> {
            if hi < b.len() {
                Err(HEADERS_TOO_LARGE)
            } else {
                Ok(None)
            }
        };
        loop {
            let ls = self.line;
            let mut i = self.probe;
            let colon = match self.colon {
                Some(colon) => colon,
                None => {
                    if i == ls {
                        if ls >= hi {
                            return short();
                        }
                        match b[ls] {
                            b'\r' => {
                                if ls + 1 >= hi {
                                    return short();
                                }
                                if b[ls + 1] != b'\n' {
                                    return Err(BARE_CR);
                                }
                                return Ok(Some(ls + 2));
                            }
                            b'\n' => return Err(BARE_LF),
                            b' ' | b'\t' => return Err(OBS_FOLD),
                            _ => {}
                        }
                    }
                    while i < hi && is_tchar(b[i]) {
                        i += 1;
                    }
                    self.probe = i;
                    if i >= hi {
                        return short();
                    }
                    match b[i] {
                        b':' if i > ls => {
                            self.colon = Some(i);
                            i += 1;
                            i - 1
                        }
                        b':' => return Err(EMPTY_FIELD_NAME),
                        b' ' | b'\t' => return Err(SPACE_BEFORE_COLON),
                        b'\r' | b'\n' => return Err(FIELD_WITHOUT_COLON),
                        _ => return Err(INVALID_FIELD_NAME),
                    }
                }
            };
            while i < hi && is_field_value_byte(b[i]) {
                i += 1;
            }
            self.probe = i;
            if i >= hi {
                return short();
            }
            match b[i] {
                b'\r' => {
                    if i + 1 >= hi {
                        return short();
                    }
                    if b[i + 1] != b'\n' {
                        return Err(BARE_CR);
                    }
                    self.fields += 1;
                    if self.fields > lim.max_headers {
                        return Err(TOO_MANY_HEADERS);
                    }
                    let raw = &b[colon + 1..i];
                    let value = trim_ows(raw);
                    let lead = raw.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
                    let value_at = colon + 1 + lead;
                    on_field(
                        &b[ls..colon],
                        value,
                        (ls, colon),
                        (value_at, value_at + value.len()),
                    )?;
                    self.line = i + 2;
                    self.probe = self.line;
                    self.colon = None;
                }
                b'\n' => return Err(BARE_LF),
                _ => return Err(CONTROL_IN_FIELD_VALUE),
            }
        }
    }
}
