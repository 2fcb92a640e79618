//! Strict HTTP/1.1 request framing for downstream connections: the request-head parser, the
//! checks on chunked request bodies, and the refusals (status and reason) both produce.
//!
//! Why our own parser and not httparse: httparse accepts things a gateway must not (equal
//! duplicate Content-Length, TE + CL, bare LF, odd codings), and once a `Request` exists
//! those details are gone. A head that two parsers could frame differently is what request
//! smuggling is made of, so a refused head never reaches the pipeline or a backend. The
//! connection loop (`serve::h1`) builds the `Request` from this parser's one pass over the
//! head: field positions are recorded as they are checked, so nothing is parsed twice.
//!
//! Status choices (nginx-like): an oversized request line is 414 (the limit is mostly the
//! URI), an oversized header section or too many fields 431; a transfer coding other than
//! `chunked` is 501 (RFC 9112 §6.1: we cannot decode it, and TE is hop-by-hop, so passing it
//! on would corrupt the body); CONNECT is 501 whatever its target (no tunnelling here, and a
//! 405 would need an `Allow` this layer cannot know); other versions of the form `HTTP/d.d`
//! are 505. Everything else malformed is 400.

use http::StatusCode;

mod chunk;
mod fields;
mod head;
mod syntax;
#[cfg(test)]
mod tests;

pub(crate) use chunk::{chunk_data_end, chunk_size_line};
pub(crate) use fields::{FieldScanner, Span};
pub(crate) use head::{check_trailer, BodyKind, HeadInfo, HeadParser, HeadStep};

/// Framing limits for one downstream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrictLimits {
    /// Longest request line, CRLF excluded; longer is refused with 414.
    pub max_request_line: usize,
    /// Largest header section (field lines and the closing CRLF), 431; also caps trailers.
    pub max_header_bytes: usize,
    /// Most header fields, 431; also caps trailer fields.
    pub max_headers: usize,
    /// Longest chunk extension (from after the size digits to the CR), 400.
    pub max_chunk_extension: usize,
}

/// Why a downstream request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

/// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request line.
const MAX_EMPTY_LINES: u8 = 4;
/// 16 hex digits hold any u64; more is refused rather than parsed.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Body size hints (`http_body::SizeHint`) and hyper's HTTP/2 side keep the two top u64
/// values for themselves; a length this large is refused on both protocols alike.
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

impl Rejection {
    const fn bad(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

pub(crate) const BARE_CR: Rejection = Rejection::bad("bare cr in request framing");
pub(crate) const BARE_LF: Rejection = Rejection::bad("bare lf as line ending");
pub(crate) const TOO_MANY_EMPTY_LINES: Rejection =
    Rejection::bad("too many empty lines before request line");
pub(crate) const REQUEST_LINE_TOO_LONG: Rejection = Rejection {
    status: StatusCode::URI_TOO_LONG,
    reason: "request line too long",
};
pub(crate) const CONTROL_IN_REQUEST_LINE: Rejection =
    Rejection::bad("control character in request line");
pub(crate) const NON_ASCII_IN_REQUEST_LINE: Rejection =
    Rejection::bad("non-ascii byte in request line");
pub(crate) const MALFORMED_REQUEST_LINE: Rejection = Rejection::bad("malformed request line");
pub(crate) const INVALID_METHOD: Rejection = Rejection::bad("method is not a token");
pub(crate) const EXTRA_SPACE: Rejection = Rejection::bad("more than one space in request line");
pub(crate) const MISSING_VERSION: Rejection = Rejection::bad("request line without http version");
pub(crate) const INVALID_VERSION: Rejection = Rejection::bad("invalid http version");
pub(crate) const VERSION_NOT_SUPPORTED: Rejection = Rejection {
    status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    reason: "http version not supported",
};
pub(crate) const CONNECT_NOT_SUPPORTED: Rejection = Rejection {
    status: StatusCode::NOT_IMPLEMENTED,
    reason: "connect method is not supported",
};
pub(crate) const FRAGMENT_IN_TARGET: Rejection = Rejection::bad("fragment in request target");
pub(crate) const ASTERISK_NOT_OPTIONS: Rejection =
    Rejection::bad("asterisk-form target is only for options");
pub(crate) const INVALID_TARGET: Rejection = Rejection::bad("invalid request target");
pub(crate) const USERINFO_IN_TARGET: Rejection = Rejection::bad("userinfo in request target");
pub(crate) const INVALID_AUTHORITY: Rejection =
    Rejection::bad("invalid authority in request target");
pub(crate) const HEADERS_TOO_LARGE: Rejection = Rejection {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    reason: "header section too large",
};
pub(crate) const TOO_MANY_HEADERS: Rejection = Rejection {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    reason: "too many header fields",
};
pub(crate) const OBS_FOLD: Rejection = Rejection::bad("obsolete line folding");
pub(crate) const EMPTY_FIELD_NAME: Rejection = Rejection::bad("empty field name");
pub(crate) const SPACE_BEFORE_COLON: Rejection =
    Rejection::bad("whitespace before colon in field line");
pub(crate) const FIELD_WITHOUT_COLON: Rejection = Rejection::bad("field line without colon");
pub(crate) const INVALID_FIELD_NAME: Rejection = Rejection::bad("field name is not a token");
pub(crate) const CONTROL_IN_FIELD_VALUE: Rejection =
    Rejection::bad("control character in field value");
pub(crate) const MULTIPLE_CONTENT_LENGTH: Rejection =
    Rejection::bad("more than one content-length field");
pub(crate) const CONTENT_LENGTH_LIST: Rejection = Rejection::bad("content-length is a list");
pub(crate) const INVALID_CONTENT_LENGTH: Rejection =
    Rejection::bad("content-length is not a number");
pub(crate) const CONTENT_LENGTH_TOO_LARGE: Rejection = Rejection::bad("content-length too large");
pub(crate) const INVALID_TRANSFER_CODING: Rejection = Rejection::bad("invalid transfer coding");
pub(crate) const CHUNKED_TWICE: Rejection = Rejection::bad("chunked applied more than once");
pub(crate) const CHUNKED_NOT_LAST: Rejection =
    Rejection::bad("transfer-encoding does not end with chunked");
pub(crate) const UNSUPPORTED_TRANSFER_CODING: Rejection = Rejection {
    status: StatusCode::NOT_IMPLEMENTED,
    reason: "unsupported transfer coding",
};
pub(crate) const TRANSFER_ENCODING_IN_HTTP10: Rejection =
    Rejection::bad("transfer-encoding in http/1.0");
pub(crate) const LENGTH_AND_CODING: Rejection =
    Rejection::bad("content-length with transfer-encoding");
pub(crate) const MISSING_HOST: Rejection = Rejection::bad("missing host");
pub(crate) const MULTIPLE_HOST: Rejection = Rejection::bad("more than one host field");
pub(crate) const INVALID_HOST: Rejection = Rejection::bad("invalid host");
pub(crate) const INVALID_CHUNK_SIZE: Rejection = Rejection::bad("invalid chunk size");
pub(crate) const CHUNK_SIZE_TOO_LONG: Rejection =
    Rejection::bad("chunk size longer than 16 hex digits");
pub(crate) const CHUNK_EXTENSION_TOO_LONG: Rejection = Rejection::bad("chunk extension too long");
pub(crate) const INVALID_CHUNK_EXTENSION: Rejection = Rejection::bad("invalid chunk extension");
pub(crate) const MISSING_CHUNK_CRLF: Rejection = Rejection::bad("missing crlf after chunk data");
pub(crate) const FRAMING_FIELD_IN_TRAILERS: Rejection = Rejection::bad("framing field in trailers");
pub(crate) const HEADER_TIMEOUT: Rejection = Rejection {
    status: StatusCode::REQUEST_TIMEOUT,
    reason: "request header timeout",
};

/// The RFC 9457 error response written when a refused connection is shut down.
pub(crate) fn problem_response(r: Rejection) -> Vec<u8> {
    debug_assert!(
        !r.reason
            .bytes()
            .any(|c| c == b'"' || c == b'\\' || c < 0x20),
        "rejection reasons are written into json unescaped"
    );
    let title = r.status.canonical_reason().unwrap_or("Error");
    let status = r.status.as_str();
    let mut body = Vec::with_capacity(96 + r.reason.len());
    body.extend_from_slice(b"{\"type\":\"about:blank\",\"title\":\"");
    body.extend_from_slice(title.as_bytes());
    body.extend_from_slice(b"\",\"status\":");
    body.extend_from_slice(status.as_bytes());
    body.extend_from_slice(b",\"detail\":\"");
    body.extend_from_slice(r.reason.as_bytes());
    body.extend_from_slice(b"\"}");
    let mut len = itoa::Buffer::new();
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.push(b' ');
    out.extend_from_slice(title.as_bytes());
    out.extend_from_slice(
        b"\r\nContent-Type: application/problem+json\r\nVia: 1.1 ferrogate\r\nConnection: close\r\nContent-Length: ",
    );
    out.extend_from_slice(len.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}
