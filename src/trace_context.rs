//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` field read
//! from a request and written on the requests the gateway sends (as a field value, or
//! straight into an HTTP/1.1 head).

use http::HeaderValue;

/// `traceparent` as sent: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `tracestate`: vendor data travelling with the trace, passed on unchanged.
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The flag bit saying the caller records this trace.
const SAMPLED: u8 = 0x01;

/// The caller's place in a trace, from its `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Reads a `traceparent` value; `None` when it is malformed or names the invalid all-zero
/// ids, so that the request starts a trace of its own (the specification's rule). A
/// version other than `00` is read by its `00` prefix, as the specification asks of
/// versions it does not know, except `ff`, which is invalid.
pub fn parse(value: &[u8]) -> Option<Parent> {
    let v = value;
    let known = v.len() == 55;
    let later = v.len() > 55 && v.get(55) == Some(&b'-');
    if !(known || later) || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex(&v[0..2])? as u8;
    if version == 0xff || (version == 0 && !known) {
        return None;
    }
    let trace_id = hex(&v[3..35])?;
    let span_id = hex(&v[36..52])? as u64;
    let flags = hex(&v[53..55])? as u8;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & SAMPLED != 0,
    })
}

/// Lower-case hex digits only (the specification forbids upper case).
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(v))
    })
}

/// The `traceparent` value naming `span_id` of trace `trace_id` as the parent.
pub fn format(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    // Hex digits and dashes only: always a valid field value.
    HeaderValue::from_bytes(&text(trace_id, span_id, sampled))
        .unwrap_or(HeaderValue::from_static(""))
}

/// The `traceparent` value as text.
pub fn text(trace_id: u128, span_id: u64, sampled: bool) -> [u8; 55] {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    out[3..19].copy_from_slice(&hex16((trace_id >> 64) as u64));
    out[19..35].copy_from_slice(&hex16(trace_id as u64));
    out[35] = b'-';
    out[36..52].copy_from_slice(&hex16(span_id));
    out[52] = b'-';
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

/// `n` as 16 lower-case hex digits, most significant first, computed eight digits at a
/// time in a word (no table, no loop).
pub fn hex16(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex8((n >> 32) as u32));
    out[8..].copy_from_slice(&hex8(n as u32));
    out
}

/// `n` as 8 hex digits: each nibble spread into a byte of its own, then turned into its
/// digit, `a`–`f` where the nibble is 10 or more.
fn hex8(n: u32) -> [u8; 8] {
    let mut v = u64::from(n);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
}

/// A trace (32 digits) or span (16 digits) id as lower-case hex.
pub fn to_hex(n: u128, len: usize) -> String {
    let text = match len {
        32 => [hex16((n >> 64) as u64), hex16(n as u64)].concat(),
        _ => hex16(n as u64)[16 - len.min(16)..].to_vec(),
    };
    String::from_utf8(text).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_those_of_the_number() {
        for n in [
            0u64,
            1,
            9,
            10,
            15,
            0xabcdef,
            0x0123_4567_89ab_cdef,
            u64::MAX,
            0xa0a0_0909_fafa_1010,
        ] {
            assert_eq!(hex16(n), *format!("{n:016x}").as_bytes(), "{n:x}");
        }
        for _ in 0..1000 {
            let n = fastrand::u64(..);
            assert_eq!(hex16(n), *format!("{n:016x}").as_bytes());
        }
        let id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128;
        assert_eq!(to_hex(id, 32), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(0xf067aa0ba902b7, 16), "00f067aa0ba902b7");
    }

    #[test]
    fn a_traceparent_is_read_and_written_back_the_same() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse(text.as_bytes()).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert_eq!(format(p.trace_id, p.span_id, true), text);
        assert_eq!(
            format(1, 2, false),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert_eq!(to_hex(0xabc, 3), "abc");
        assert_eq!(to_hex(u128::MAX, 32), "f".repeat(32));
    }

    #[test]
    fn malformed_or_invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version is read by its version-00 prefix.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(parse(later.as_bytes()).is_some());
    }
}
