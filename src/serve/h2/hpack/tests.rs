//! Tests of HPACK: the examples of RFC 7541 Appendix C, the Huffman code against Appendix B,
//! malformed blocks, and round trips of the encoder through the decoder.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::huffman;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String, bool)>, HpackError> {
    let mut out = Vec::new();
    d.decode(block, |f| {
        out.push((
            String::from_utf8_lossy(f.name).into_owned(),
            String::from_utf8_lossy(f.value).into_owned(),
            f.never_indexed,
        ))
    })?;
    Ok(out)
}

fn pairs(fields: &[(String, String, bool)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(n, v, _)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn huffman_codes_match_rfc_7541_appendix_b() {
    // (symbol, code, length) at points spread over the table: a wrong length anywhere
    // before one of them shifts its code.
    let rows: &[(usize, u32, u8)] = &[
        (0, 0x1ff8, 13),
        (1, 0x7f_ffd8, 23),
        (9, 0xff_ffea, 24),
        (10, 0x3fff_fffc, 30),
        (22, 0x3fff_fffe, 30),
        (31, 0xfff_fffb, 28),
        (b' ' as usize, 0x14, 6),
        (b'$' as usize, 0x1ff9, 13),
        (b'\'' as usize, 0x7fa, 11),
        (b'0' as usize, 0x0, 5),
        (b'<' as usize, 0x7ffc, 15),
        (b'X' as usize, 0xfc, 8),
        (b'\\' as usize, 0x7fff0, 19),
        (b'^' as usize, 0x3ffc, 14),
        (b't' as usize, 0x9, 5),
        (b'|' as usize, 0x7fc, 11),
        (b'}' as usize, 0x3ffd, 14),
        (b'~' as usize, 0x1ffd, 13),
        (127, 0xfff_fffc, 28),
        (128, 0xf_ffe6, 20),
        (153, 0x1f_ffdc, 21),
        (176, 0x1f_ffe0, 21),
        (192, 0x3ff_ffe0, 26),
        (195, 0x7_fff1, 19),
        (199, 0x1ff_ffec, 25),
        (203, 0x7ff_ffde, 27),
        (220, 0xfff_fffd, 28),
        (249, 0xfff_fffe, 28),
        (254, 0x7ff_fff0, 27),
        (255, 0x3ff_ffee, 26),
        (256, 0x3fff_ffff, 30),
    ];
    for &(sym, code, len) in rows {
        assert_eq!(huffman::code_of(sym), (code, len), "symbol {sym}");
    }
    // The code is complete: the lengths fill the code space exactly (Kraft).
    let total: u64 = (0..257).map(|s| 1u64 << (30 - huffman::code_of(s).1)).sum();
    assert_eq!(total, 1 << 30);
}

#[test]
fn c2_literal_fields_and_indexed_field() {
    let mut d = Decoder::new(4096);
    let f = decode_all(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(pairs(&f), [("custom-key", "custom-header")]);
    assert_eq!(d.table_size(), 55);

    let mut d = Decoder::new(4096);
    let f = decode_all(&mut d, &hex("040c 2f73 616d 706c 652f 7061 7468")).unwrap();
    assert_eq!(pairs(&f), [(":path", "/sample/path")]);
    assert_eq!(d.table_size(), 0);

    let mut d = Decoder::new(4096);
    let f = decode_all(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74")).unwrap();
    assert_eq!(f, [("password".into(), "secret".into(), true)]);
    assert_eq!(d.table_size(), 0);

    let mut d = Decoder::new(4096);
    let f = decode_all(&mut d, &hex("82")).unwrap();
    assert_eq!(pairs(&f), [(":method", "GET")]);
}

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(4096);
    let f = decode_all(&mut d, &hex(blocks[0])).unwrap();
    assert_eq!(
        pairs(&f),
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com")
        ]
    );
    assert_eq!(d.table_size(), 57);
    let f = decode_all(&mut d, &hex(blocks[1])).unwrap();
    assert_eq!(
        pairs(&f),
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache")
        ]
    );
    assert_eq!(d.table_size(), 110);
    let f = decode_all(&mut d, &hex(blocks[2])).unwrap();
    assert_eq!(
        pairs(&f),
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value")
        ]
    );
    assert_eq!(d.table_size(), 164);
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn responses(blocks: [&str; 3]) {
    let mut d = Decoder::new(256);
    let first = [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    let f = decode_all(&mut d, &hex(blocks[0])).unwrap();
    assert_eq!(pairs(&f), first);
    assert_eq!(d.table_size(), 222);
    let f = decode_all(&mut d, &hex(blocks[1])).unwrap();
    let mut second = first;
    second[0] = (":status", "307");
    assert_eq!(pairs(&f), second);
    assert_eq!(d.table_size(), 222);
    let f = decode_all(&mut d, &hex(blocks[2])).unwrap();
    assert_eq!(
        pairs(&f),
        [
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            ),
        ]
    );
    assert_eq!(d.table_size(), 215);
}

#[test]
fn c5_responses_without_huffman() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn c4_huffman_encoding_gives_the_rfc_bytes() {
    let mut out = Vec::new();
    huffman::encode(b"www.example.com", &mut out);
    assert_eq!(out, hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    out.clear();
    huffman::encode(b"no-cache", &mut out);
    assert_eq!(out, hex("a8eb 1064 9cbf"));
}

#[test]
fn malformed_blocks_are_compression_errors() {
    let cases: &[(&str, HpackError)] = &[
        ("80", HpackError::BadIndex(0)),
        ("be", HpackError::BadIndex(62)),
        ("ff", HpackError::Truncated),
        ("ff ff ff ff ff 0f", HpackError::IntegerOverflow),
        ("40 05 61", HpackError::Truncated),
        ("40", HpackError::Truncated),
        ("3f e2 1f", HpackError::TableSizeOverLimit(4097, 4096)),
        ("82 20", HpackError::LateSizeUpdate),
        // A value Huffman-coded as EOS followed by padding.
        ("40 01 61 84 ff ff ff ff", HpackError::HuffmanEos),
        // 'a' (00011) padded with zeros.
        ("40 01 61 81 18", HpackError::HuffmanPadding),
        // 'a' then a whole byte of ones: padding longer than 7 bits.
        ("40 01 61 82 1f ff", HpackError::HuffmanPadding),
    ];
    for (block, err) in cases {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &hex(block)).err(),
            Some(*err),
            "block {block}"
        );
    }
}

#[test]
fn size_updates_at_the_start_shrink_the_table() {
    let mut d = Decoder::new(4096);
    decode_all(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(d.table_size(), 55);
    // Two updates, to 0 then back to 4096: the entry is gone.
    decode_all(&mut d, &hex("20 3f e1 1f 82")).unwrap();
    assert_eq!(d.table_size(), 0);
    assert_eq!(
        decode_all(&mut d, &hex("be")).err(),
        Some(HpackError::BadIndex(62))
    );
}

fn encode_response(e: &mut Encoder, status: u16, fields: &[(&str, &str, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    e.begin(&mut out);
    e.status(status, &mut out);
    for (n, v, s) in fields {
        e.field(n, v.as_bytes(), *s, &mut out);
    }
    out
}

#[test]
fn encoder_indexes_repeating_fields_and_never_indexes_sensitive_ones() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    let fields = [
        ("server", "ferrogate", false),
        ("content-type", "application/json", false),
        ("content-length", "1024", false),
        ("x-request-id", "0af7651916cd43dd8448eb211c80319c", true),
    ];
    let first = encode_response(&mut e, 200, &fields);
    let second = encode_response(&mut e, 200, &fields);
    // The second response: :status 200 and the two repeating fields are one byte each.
    assert!(
        second.len() + 15 < first.len(),
        "{} vs {}",
        second.len(),
        first.len()
    );
    assert_eq!(&second[..3], &[0x88, 0xbf, 0xbe]);
    for block in [first, second] {
        let got = decode_all(&mut d, &block).unwrap();
        assert_eq!(got[0], (":status".into(), "200".into(), false));
        let rest: Vec<_> = got[1..]
            .iter()
            .map(|(n, v, s)| (n.as_str(), v.as_str(), *s))
            .collect();
        assert_eq!(rest, fields);
    }
}

#[test]
fn encoder_announces_a_smaller_peer_table() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    let fields = [("server", "ferrogate", false)];
    decode_all(&mut d, &encode_response(&mut e, 200, &fields)).unwrap();
    e.set_peer_limit(0);
    e.set_peer_limit(100);
    let block = encode_response(&mut e, 404, &fields);
    // Two updates: down to 0 (emptying the peer's table), then 100.
    assert_eq!(&block[..3], &[0x20, 0x3f, 0x45]);
    let got = decode_all(&mut d, &block).unwrap();
    assert_eq!(pairs(&got), [(":status", "404"), ("server", "ferrogate")]);
    assert_eq!(d.table_size(), 47);
}

#[test]
fn odd_status_codes_are_literals() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    let got = decode_all(&mut d, &encode_response(&mut e, 103, &[])).unwrap();
    assert_eq!(pairs(&got), [(":status", "103")]);
    assert_eq!(d.table_size(), 0);
}

proptest! {
    #[test]
    fn huffman_round_trips(s in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut coded = Vec::new();
        huffman::encode(&s, &mut coded);
        prop_assert_eq!(coded.len(), huffman::encoded_len(&s));
        let mut back = Vec::new();
        huffman::decode(&coded, &mut back).unwrap();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn encoded_responses_decode_to_their_fields(
        blocks in proptest::collection::vec(
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("server".to_owned()),
                        Just("date".to_owned()),
                        Just("content-type".to_owned()),
                        Just("etag".to_owned()),
                        "[a-z][a-z0-9-]{0,20}",
                    ],
                    "[ -~]{0,150}",
                    any::<bool>(),
                ),
                0..8,
            ),
            1..20,
        ),
        limits in proptest::collection::vec(0usize..5000, 0..3),
    ) {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        for (i, fields) in blocks.iter().enumerate() {
            if let Some(l) = limits.get(i) {
                e.set_peer_limit(*l);
            }
            let refs: Vec<(&str, &str, bool)> =
                fields.iter().map(|(n, v, s)| (n.as_str(), v.as_str(), *s)).collect();
            let block = encode_response(&mut e, 200, &refs);
            let got = decode_all(&mut d, &block).unwrap();
            prop_assert_eq!(got.len(), refs.len() + 1);
            for ((n, v, s), want) in got[1..].iter().zip(&refs) {
                prop_assert_eq!((n.as_str(), v.as_str(), *s), *want);
            }
        }
    }

    #[test]
    fn arbitrary_blocks_never_panic(block in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut d = Decoder::new(4096);
        let _ = decode_all(&mut d, &block);
        let _ = decode_all(&mut d, &block);
    }
}
