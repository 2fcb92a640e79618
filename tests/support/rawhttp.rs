//! Raw HTTP/1.1 backends for connection-level behaviour that hyper's server hides: closing
//! idle keep-alive connections on a timer (as Node does), half-closing after a response, and
//! answering late while watching for the gateway to close the connection first.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request (head and Content-Length body) from `s`, with `buf` holding bytes
/// already read past the previous one. `None` on EOF or error before a complete request.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + length);
    Some(head)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// How often an [`IdleClosing`] backend looks at an idle connection.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// A keep-alive backend that closes a connection once it has been idle for `idle` (the way
/// Node's `keepAliveTimeout` does), answering every request 200 `ok`. Like a busy event loop
/// it looks at idle connections only every `IDLE_TICK`, and its timer wins over a request
/// that arrived since the last look (Node runs timers before reading sockets): a request
/// sent up to a tick before the timeout is met by a close (a reset, since it was unread).
pub struct IdleClosing {
    pub addr: SocketAddr,
    /// Requests answered.
    pub answered: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Connections closed for idleness.
    pub idle_closes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl IdleClosing {
    pub async fn start(idle: Duration) -> IdleClosing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let idle_closes = Arc::new(AtomicUsize::new(0));
        let (a, c, i) = (answered.clone(), connections.clone(), idle_closes.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (a, i) = (a.clone(), i.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        if read_request(&mut s, &mut buf).await.is_none()
                            || s.write_all(OK).await.is_err()
                        {
                            return;
                        }
                        a.fetch_add(1, Ordering::SeqCst);
                        // The idle clock runs from the end of the last response, as in Node.
                        let since = Instant::now();
                        let mut chunk = [0u8; 4096];
                        loop {
                            tokio::time::sleep(IDLE_TICK).await;
                            if since.elapsed() >= idle {
                                i.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            match s.try_read(&mut chunk) {
                                Ok(0) => return,
                                Ok(n) => {
                                    buf.extend_from_slice(&chunk[..n]);
                                    break;
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(_) => return,
                            }
                        }
                    }
                });
            }
        });
        IdleClosing {
            addr,
            answered,
            connections,
            idle_closes,
            task,
        }
    }
}

impl Drop for IdleClosing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`HalfClosing`] backend saw on one connection.
#[derive(Debug, Default, Clone)]
pub struct HalfClosed {
    /// Request heads answered on it (one, then it half-closed).
    pub requests: Vec<String>,
    /// Bytes that arrived after its FIN went out: a request written to a closed connection.
    pub bytes_after_fin: usize,
    /// The FIN has been sent.
    pub fin_sent: bool,
    /// The gateway closed its side too.
    pub closed: bool,
}

/// A backend that answers one request per connection with keep-alive, then shuts its write
/// side (FIN) without saying so in the response, and goes on reading to see whether the
/// gateway writes anything more to it.
pub struct HalfClosing {
    pub addr: SocketAddr,
    pub conns: Arc<Mutex<Vec<HalfClosed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HalfClosing {
    pub async fn start() -> HalfClosing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<HalfClosed>>> = Arc::new(Mutex::new(Vec::new()));
        let all = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let at = {
                    let mut all = all.lock().unwrap();
                    all.push(HalfClosed::default());
                    all.len() - 1
                };
                let all = all.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(head) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    all.lock().unwrap()[at].requests.push(head);
                    if s.write_all(OK).await.is_err() || s.shutdown().await.is_err() {
                        return;
                    }
                    all.lock().unwrap()[at].fin_sent = true;
                    all.lock().unwrap()[at].bytes_after_fin = buf.len();
                    let mut chunk = [0u8; 4096];
                    // Bounded: the gateway closes the connection once it sees the FIN.
                    let reading = async {
                        while let Ok(n @ 1..) = s.read(&mut chunk).await {
                            all.lock().unwrap()[at].bytes_after_fin += n;
                        }
                        all.lock().unwrap()[at].closed = true;
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
                });
            }
        });
        HalfClosing { addr, conns, task }
    }

    pub fn seen(&self) -> Vec<HalfClosed> {
        self.conns.lock().unwrap().clone()
    }
}

impl Drop for HalfClosing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`Late`] backend saw of one request.
#[derive(Debug, Clone)]
pub struct LateExchange {
    pub head: String,
    pub received: Instant,
    /// When the gateway closed the connection before the answer was due (`None`: it did not).
    pub closed: Option<Instant>,
    pub answered: bool,
}

/// A backend that answers each request 200 `ok` only after `delay`, and notes when the
/// gateway closes the connection while it waits.
pub struct Late {
    pub addr: SocketAddr,
    pub exchanges: Arc<Mutex<Vec<LateExchange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Late {
    pub async fn start(delay: Duration) -> Late {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exchanges: Arc<Mutex<Vec<LateExchange>>> = Arc::new(Mutex::new(Vec::new()));
        let all = exchanges.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(head) = read_request(&mut s, &mut buf).await {
                        let at = {
                            let mut all = all.lock().unwrap();
                            all.push(LateExchange {
                                head,
                                received: Instant::now(),
                                closed: None,
                                answered: false,
                            });
                            all.len() - 1
                        };
                        let mut probe = [0u8; 1];
                        tokio::select! {
                            // The gateway sends nothing more before the answer: a read
                            // ending here is its close.
                            _ = s.read(&mut probe) => {
                                all.lock().unwrap()[at].closed = Some(Instant::now());
                                return;
                            }
                            _ = tokio::time::sleep(delay) => {}
                        }
                        if s.write_all(OK).await.is_err() {
                            return;
                        }
                        all.lock().unwrap()[at].answered = true;
                    }
                });
            }
        });
        Late {
            addr,
            exchanges,
            task,
        }
    }

    pub fn seen(&self) -> Vec<LateExchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

impl Drop for Late {
    fn drop(&mut self) {
        self.task.abort();
    }
}
