//! Tests of the strict parser on its own; the refusal matrix runs through the connection
//! loop in `serve::h1`'s tests.
#![allow(clippy::unwrap_used)]

use super::chunk::is_chunk_ext;
use super::*;

const LIMITS: StrictLimits = StrictLimits {
    max_request_line: 128,
    max_header_bytes: 512,
    max_headers: 8,
    max_chunk_extension: 32,
};

/// Feeds `bytes` as one read: the step, with leading empty lines skipped.
fn parse(p: &mut HeadParser, mut bytes: &[u8]) -> Result<HeadStep, Rejection> {
    loop {
        match p.advance(bytes, &LIMITS)? {
            HeadStep::Skip(n) => bytes = &bytes[n..],
            step => return Ok(step),
        }
    }
}

fn text(b: &[u8], (start, end): Span) -> &str {
    std::str::from_utf8(&b[start..end]).unwrap()
}

#[test]
fn complete_head_records_where_method_target_and_fields_lie() {
    let head = b"GET /a?b HTTP/1.1\r\nHost: a.test\r\nX-A:  spaced \t\r\nX-B:\r\n\r\nnext";
    let mut p = HeadParser::new();
    assert_eq!(parse(&mut p, head), Ok(HeadStep::Complete(head.len() - 4)));
    assert_eq!(&head[..p.method_end], b"GET");
    assert_eq!(text(head, p.target), "/a?b");
    let fields: Vec<_> = p
        .fields
        .iter()
        .map(|&(n, v)| (text(head, n), text(head, v)))
        .collect();
    assert_eq!(fields, [("Host", "a.test"), ("X-A", "spaced"), ("X-B", "")]);
    assert!(p.info.v11);
    assert_eq!(p.body_kind(), BodyKind::None);
}

#[test]
fn body_kind_follows_length_or_chunked() {
    let mut p = HeadParser::new();
    parse(
        &mut p,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.body_kind(), BodyKind::Length(12));
    parse(
        &mut p,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.body_kind(), BodyKind::None);
    parse(
        &mut p,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.body_kind(), BodyKind::Chunked);
}

#[test]
fn head_fed_byte_by_byte_completes_only_at_its_end() {
    let head = b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n";
    let mut p = HeadParser::new();
    for end in 1..head.len() {
        assert_eq!(
            parse(&mut p, &head[..end]),
            Ok(HeadStep::NeedMore),
            "at {end}"
        );
    }
    assert_eq!(parse(&mut p, head), Ok(HeadStep::Complete(head.len())));
    assert_eq!(p.fields.len(), 2);
}

#[test]
fn request_line_at_limit_is_accepted() {
    // 128 bytes: "GET /" (5) + 114 + " HTTP/1.1" (9).
    let head = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(114));
    let mut p = HeadParser::new();
    assert_eq!(
        parse(&mut p, head.as_bytes()),
        Ok(HeadStep::Complete(head.len()))
    );
    let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(115));
    assert_eq!(
        parse(&mut HeadParser::new(), over.as_bytes())
            .unwrap_err()
            .status,
        414
    );
}

#[test]
fn header_section_at_limit_is_accepted() {
    // Section = "Host: a\r\n" (9) + "X-A: " (5) + value + "\r\n" (2) + "\r\n" (2) = 512.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(494)
    );
    let mut p = HeadParser::new();
    assert_eq!(
        parse(&mut p, head.as_bytes()),
        Ok(HeadStep::Complete(head.len()))
    );
    let over = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(495)
    );
    assert_eq!(
        parse(&mut HeadParser::new(), over.as_bytes())
            .unwrap_err()
            .status,
        431
    );
}

#[test]
fn http10_request_without_host_is_accepted() {
    let head = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let mut p = HeadParser::new();
    assert_eq!(parse(&mut p, head), Ok(HeadStep::Complete(head.len())));
    assert!(!p.info.v11);
    assert!(!p.info.close_after());
}

#[test]
fn chunk_size_line_is_read_with_its_extensions() {
    assert_eq!(
        chunk_size_line(b"1a;x=\"y z\"\r\nrest", &LIMITS),
        Ok(Some((26, 12)))
    );
    assert_eq!(chunk_size_line(b"0\r\n", &LIMITS), Ok(Some((0, 3))));
    assert_eq!(chunk_size_line(b"1a;x", &LIMITS), Ok(None));
    assert_eq!(chunk_size_line(b"1a\r", &LIMITS), Ok(None));
    assert_eq!(chunk_size_line(b"1a\n", &LIMITS), Err(BARE_LF));
    assert_eq!(chunk_size_line(b"1a\rx", &LIMITS), Err(BARE_CR));
    assert_eq!(chunk_size_line(b"g\r\n", &LIMITS), Err(INVALID_CHUNK_SIZE));
    let long_ext = format!("1;{}", "a".repeat(60));
    assert_eq!(
        chunk_size_line(long_ext.as_bytes(), &LIMITS),
        Err(CHUNK_EXTENSION_TOO_LONG)
    );
    let long_size = "0".repeat(17) + "1\r\n";
    assert_eq!(
        chunk_size_line(long_size.as_bytes(), &LIMITS),
        Err(CHUNK_SIZE_TOO_LONG)
    );
}

#[test]
fn chunk_data_must_end_with_crlf() {
    assert_eq!(chunk_data_end(b"\r\n5\r\n"), Ok(Some(2)));
    assert_eq!(chunk_data_end(b"\r"), Ok(None));
    assert_eq!(chunk_data_end(b""), Ok(None));
    assert_eq!(chunk_data_end(b"x\r\n"), Err(MISSING_CHUNK_CRLF));
    assert_eq!(chunk_data_end(b"\rx"), Err(MISSING_CHUNK_CRLF));
}

#[test]
fn framing_fields_are_refused_as_trailers() {
    assert_eq!(
        check_trailer(b"Content-Length"),
        Err(FRAMING_FIELD_IN_TRAILERS)
    );
    assert_eq!(
        check_trailer(b"transfer-encoding"),
        Err(FRAMING_FIELD_IN_TRAILERS)
    );
    assert_eq!(check_trailer(b"HOST"), Err(FRAMING_FIELD_IN_TRAILERS));
    assert_eq!(check_trailer(b"x-checksum"), Ok(()));
}

#[test]
fn trailer_section_is_scanned_across_reads() {
    let section = b"X-A: 1\r\nX-B: two\r\n\r\n";
    let mut scanner = FieldScanner::new(0);
    let mut names = Vec::new();
    for end in 1..section.len() {
        let step = scanner.scan(&section[..end], &LIMITS, |name, _, _, _| {
            names.push(name.to_vec());
            Ok(())
        });
        assert_eq!(step, Ok(None), "at {end}");
    }
    let step = scanner.scan(section, &LIMITS, |name, _, _, _| {
        names.push(name.to_vec());
        Ok(())
    });
    assert_eq!(step, Ok(Some(section.len())));
    assert_eq!(names, [b"X-A".to_vec(), b"X-B".to_vec()]);
}

#[test]
fn chunk_extension_grammar_is_enforced() {
    assert!(is_chunk_ext(b";a"));
    assert!(is_chunk_ext(b" ; a = b ;c=\"x\\\"y\""));
    assert!(!is_chunk_ext(b";"));
    assert!(!is_chunk_ext(b";a="));
    assert!(!is_chunk_ext(b";a=\"open"));
    assert!(!is_chunk_ext(b";a "));
    assert!(!is_chunk_ext(b";a\0"));
}
