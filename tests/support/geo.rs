//! Small MaxMind-format databases (`.mmdb`, in `mmdb.rs`) and a client bound to a chosen
//! loopback source address.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// GET `path` from the loopback address `from` (such as 127.0.0.2), with extra fields.
pub async fn get_from(
    from: &str,
    gw: SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
) -> super::Got {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(gw).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "a");
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    let resp = tx
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    super::collect(resp).await
}
