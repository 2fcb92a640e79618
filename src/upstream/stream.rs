//! The byte stream under an upstream connection: plain TCP, or TLS over TCP, as one type for
//! the HTTP/1.1 client, the h2 client, the WebSocket tunnel and the health probes.
//!
//! An enum rather than a type parameter: one match per read or write costs next to nothing,
//! and the pool, the response bodies and the tunnel stay one type each.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TlsClient;

/// A connected upstream stream.
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and the plain variant (hence every plain connection)
    /// stays small.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a connection to a target could not be made. Nothing was sent: the request can go to
/// another target.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Tcp(#[source] io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("tls handshake: {0}")]
    Tls(#[source] io::Error),
}

/// Connects to `addr` and, with `tls`, completes the TLS handshake, all within `limit`.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    limit: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
        // Best effort: heads and small bodies go out at once either way.
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => match tls.handshake(addr, tcp).await {
                Ok(s) => Ok(UpstreamStream::Tls(Box::new(s))),
                Err(e) => Err(ConnectError::Tls(e)),
            },
        }
    };
    tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

impl UpstreamStream {
    /// True when an idle pooled connection can still be used: nothing to read, no EOF, no
    /// error. No syscall in the common plain case.
    pub fn is_idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self {
            // If the reactor has seen the socket readable, one non-blocking read tells a
            // spurious wake-up (usable) from EOF or unsolicited bytes.
            UpstreamStream::Plain(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    matches!(s.try_read(&mut probe),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            // TLS records that carry no data (session tickets, key updates) are consumed and
            // the read stays pending; data, close_notify, EOF or an error end it.
            UpstreamStream::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(s.as_mut())
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
        }
    }

    /// Writes all of `buf` and, over TLS, flushes the records rustls may still hold.
    pub async fn write_all_flushed(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.write_all(buf).await,
            UpstreamStream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// The ALPN protocol the server chose, if any (always `None` on plain TCP).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            UpstreamStream::Plain(_) => None,
            UpstreamStream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            UpstreamStream::Plain(s) => s.peer_addr(),
            UpstreamStream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

impl From<TcpStream> for UpstreamStream {
    fn from(s: TcpStream) -> Self {
        UpstreamStream::Plain(s)
    }
}

impl AsyncRead for UpstreamStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
