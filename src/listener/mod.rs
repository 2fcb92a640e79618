//! Listening sockets and the worker loop: one single-threaded runtime per worker, each
//! accepting on its own `SO_REUSEPORT` socket for every configured listener.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::runtime::Shared;
use crate::signal::raised;

/// How often a worker hands its buffered access-log lines to the writer.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Signals from the gateway to its workers.
pub struct WorkerSignals {
    /// Stop accepting and ask connections to close once their in-flight requests end.
    pub shutdown: watch::Receiver<bool>,
    /// The drain time is over: end the runtime, cutting what is left.
    pub stop: watch::Receiver<bool>,
}

/// A non-blocking listening socket with `SO_REUSEPORT`, so every worker can bind its own.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Runs one worker until the gateway stops it.
pub fn run_worker(
    shared: Arc<Shared>,
    sockets: Vec<(usize, std::net::TcpListener)>,
    mut signals: WorkerSignals,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start worker runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        for (index, socket) in sockets {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => {
                    tokio::spawn(accept_loop(
                        shared.clone(),
                        index,
                        l,
                        signals.shutdown.clone(),
                    ));
                }
                Err(e) => tracing::error!("cannot register listener: {e}"),
            }
        }
        let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
        loop {
            tokio::select! {
                _ = raised(&mut signals.stop) => break,
                _ = tick.tick() => {
                    flush_log(&shared);
                    crate::upstream::pool::sweep();
                }
            }
        }
    });
    flush_log(&shared);
}

/// Hands this worker's buffered access-log lines to the writer (even if a reload has
/// turned the log off since they were buffered).
fn flush_log(_shared: &Shared) {
    crate::observe::access_log::flush_current_thread();
}

/// Counts a connection closed at once by a limit (the stream is already dropped).
fn refuse(shared: &Shared, index: usize, refused: crate::serve::conn_limit::Refused) {
    let reason = match refused {
        crate::serve::conn_limit::Refused::Total => "total",
        crate::serve::conn_limit::Refused::PerIp => "per_ip",
    };
    if let Some(l) = shared.snapshot.load().listeners.get(index) {
        shared
            .metrics
            .resilience
            .connection_refused(&l.name, reason);
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    index: usize,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let for_connections = shutdown.clone();
    let Some(limiter) = shared.conn_limits.get(index).cloned() else {
        return;
    };
    loop {
        // At the listener's limit, leave new connections in the kernel backlog.
        tokio::select! {
            _ = limiter.wait_for_room() => {}
            _ = raised(&mut shutdown) => break,
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let permit = match limiter.try_acquire(peer.ip()) {
                        Ok(p) => p,
                        Err(refused) => {
                            refuse(&shared, index, refused);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    // Spawned as it is: a wrapping `async` block would hold the future
                    // twice (captured, then awaited), doubling every connection's task.
                    tokio::spawn(connection::serve(
                        shared.clone(),
                        index,
                        stream,
                        peer,
                        permit,
                        for_connections.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = raised(&mut shutdown) => break,
        }
    }
}
