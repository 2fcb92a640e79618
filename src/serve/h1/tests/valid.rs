//! Valid requests, pipelined and cut into arbitrary writes, reach the handler exactly as
//! sent: method, target, fields, body and trailers.

use proptest::prelude::*;

use super::*;

/// What one generated request must look like to the handler.
#[derive(Debug, Clone)]
struct Expected {
    method: String,
    path: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    trailer: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Empty,
    Length(Vec<u8>),
    Chunked {
        chunks: Vec<Vec<u8>>,
        ext: bool,
        trailer: bool,
    },
}

fn request() -> impl Strategy<Value = (Vec<u8>, Expected)> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "X-CUSTOM"]);
    let path = "/[a-zA-Z0-9/._~%-]{0,20}";
    let fields = prop::collection::vec(("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,22}[!-~])?"), 0..5);
    let body = prop_oneof![
        Just(Body::Empty),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(Body::Length),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(chunks, ext, trailer)| Body::Chunked {
                chunks,
                ext,
                trailer
            }),
    ];
    (method, path, fields, body).prop_map(|(method, path, fields, body)| {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n");
        for (name, value) in &fields {
            r.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut r = r.into_bytes();
        let mut expected = Expected {
            method: method.to_owned(),
            path: path.clone(),
            fields,
            body: Vec::new(),
            trailer: false,
        };
        match body {
            Body::Empty => r.extend_from_slice(b"\r\n"),
            Body::Length(bytes) => {
                r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes());
                r.extend_from_slice(&bytes);
                expected.body = bytes;
            }
            Body::Chunked {
                chunks,
                ext,
                trailer,
            } => {
                r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for chunk in chunks {
                    r.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
                    if ext {
                        r.extend_from_slice(b";a=b ; c=\"d e\"");
                    }
                    r.extend_from_slice(b"\r\n");
                    r.extend_from_slice(&chunk);
                    r.extend_from_slice(b"\r\n");
                    expected.body.extend_from_slice(&chunk);
                }
                r.extend_from_slice(b"0\r\n");
                if trailer {
                    r.extend_from_slice(b"x-trailer: yes\r\n");
                }
                r.extend_from_slice(b"\r\n");
                expected.trailer = trailer;
            }
        }
        (r, expected)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn valid_pipelined_requests_reach_the_handler_as_sent(
        requests in prop::collection::vec(request(), 1..4),
        writes in prop::collection::vec(1usize..80, 1..16),
    ) {
        let wire: Vec<u8> = requests.iter().flat_map(|(r, _)| r.clone()).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (seen, out) = runtime.block_on(async {
            let (server, log) = recording(SETTINGS).await;
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let (mut pos, mut turn) = (0, 0);
            while pos < wire.len() {
                let n = writes[turn % writes.len()].min(wire.len() - pos);
                s.write_all(&wire[pos..pos + n]).await.unwrap();
                pos += n;
                turn += 1;
                tokio::task::yield_now().await;
            }
            s.shutdown().await.unwrap();
            let out = read_to_close(&mut s).await;
            let seen = log.lock().unwrap().clone();
            (seen, out)
        });
        prop_assert_eq!(out.matches("HTTP/1.1 200 OK").count(), requests.len(), "{}", out);
        prop_assert_eq!(seen.len(), requests.len());
        for (got, (_, want)) in seen.iter().zip(&requests) {
            prop_assert_eq!(&got.method, &want.method);
            prop_assert_eq!(&got.uri, &want.path);
            prop_assert!(!got.body_failed);
            prop_assert_eq!(&got.body, &want.body);
            prop_assert_eq!(&got.headers["host"], "example.test");
            for (name, value) in &want.fields {
                prop_assert!(
                    got.headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()),
                    "{} missing", name
                );
            }
            let trailer = got.trailers.as_ref().and_then(|t| t.get("x-trailer"));
            prop_assert_eq!(trailer.is_some(), want.trailer);
        }
    }
}
