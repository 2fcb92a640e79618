//! Fields repeated from one response to the next on a connection are reused, never wrong.

use super::*;

/// A server answering the requests of one connection with `replies`, in order.
async fn answering(replies: Vec<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        for reply in replies {
            while !contains(&pending, b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
            pending.clear();
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
    });
    addr
}

/// The fields of `resp` as (name, value) text pairs, in order.
fn fields(resp: &Response<H1Body>) -> Vec<(String, String)> {
    resp.headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn repeated_changed_and_moved_fields_all_read_as_sent() {
    const LONG: &str = "a-value-longer-than-what-is-kept-in-place-0123456789";
    let addr = answering(vec![
        b"HTTP/1.1 200 OK\r\nServer: s1\r\nX-Custom: a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s1\r\nX-Custom: a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s1\r\nX-Custom: b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Custom: b\r\nServer: s1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: a-value-longer-than-what-is-kept-in-place-0123456789\r\nServer: s1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: a-value-longer-than-what-is-kept-in-place-0123456789\r\nServer: s1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Custom: b\r\nServer: s1\r\ncontent-length: 0\r\nX-Empty: \r\n\r\n",
    ])
    .await;
    let expected = [
        pairs(&[("server", "s1"), ("x-custom", "a"), ("content-length", "0")]),
        pairs(&[("server", "s1"), ("x-custom", "a"), ("content-length", "0")]),
        pairs(&[("server", "s1"), ("x-custom", "b"), ("content-length", "0")]),
        pairs(&[("x-custom", "b"), ("server", "s1"), ("content-length", "0")]),
        pairs(&[("x-long", LONG), ("server", "s1"), ("content-length", "0")]),
        pairs(&[("x-long", LONG), ("server", "s1"), ("content-length", "0")]),
        pairs(&[
            ("x-custom", "b"),
            ("server", "s1"),
            ("content-length", "0"),
            ("x-empty", ""),
        ]),
    ];
    let mut conn = connect(addr).await;
    for (n, want) in expected.iter().enumerate() {
        let mut resp = conn
            .send(&mut get("/"), &Added::default(), None)
            .await
            .unwrap_or_else(|f| panic!("response {n}: {f:?}"));
        assert_eq!(&fields(&resp), want, "response {n}");
        conn = resp
            .body_mut()
            .take_conn()
            .unwrap_or_else(|| panic!("response {n} leaves the connection reusable"));
    }
}
