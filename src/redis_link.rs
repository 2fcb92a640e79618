//! What every Redis user in the gateway shares about its connection: the [`Link`] that holds
//! the current connection (callers never wait for one: while there is none, [`Link::conn`]
//! answers `None` at once), the connection of either deployment kind ([`Conn`]), the PING
//! health check, the reconnection back-off, and how a client error is sorted.
//!
//! `redis::aio::ConnectionManager` is not used: while it reconnects, every command waits on
//! the reconnection future, where a gateway must fail at once and fall back. Each user (rate
//! limiting, the cache tier) runs its own supervisor task over a `Link`, since they differ in
//! what else they watch (Sentinel master moves, pub/sub).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use tokio::sync::Notify;

/// The current connection, if any, shared by its users and their supervisor task.
pub struct Link {
    current: ArcSwapOption<Conn>,
    /// Wakes the supervisor to check the connection now.
    check_now: Notify,
    /// Set with `check_now` when the connection must be replaced whatever PING says (a
    /// master demoted to replica still answers PING, but refuses writes).
    replace: AtomicBool,
    connects: AtomicU64,
}

/// A connection of any deployment: both kinds multiplex and are cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// The supervisor's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub health_interval: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            current: ArcSwapOption::empty(),
            check_now: Notify::new(),
            replace: AtomicBool::new(false),
            connects: AtomicU64::new(0),
        }
    }
}

impl Link {
    /// A handle on the current connection, or `None` at once while disconnected.
    pub fn conn(&self) -> Option<Conn> {
        self.current.load().as_deref().cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.current.load().is_some()
    }

    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// A call failed in a way that may mean the connection is gone: check it now.
    pub fn suspect(&self) {
        self.check_now.notify_one();
    }

    /// The connection reaches the wrong server (a demoted master): reconnect now.
    pub fn replace(&self) {
        self.replace.store(true, Ordering::Relaxed);
        self.check_now.notify_one();
    }

    /// The supervisor connected: callers use `conn` from now on.
    pub fn connected(&self, conn: Conn) {
        self.replace.store(false, Ordering::Relaxed);
        self.current.store(Some(Arc::new(conn)));
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// The supervisor gave the connection up: callers fail at once until the next one.
    pub fn disconnected(&self) {
        self.current.store(None);
    }

    /// Waits until a caller suspects the connection (or `interval` passes, for the periodic
    /// check); true when a caller asked for it to be replaced.
    pub async fn check_due(&self, interval: Duration) -> bool {
        tokio::select! {
            () = self.check_now.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        self.replace.swap(false, Ordering::Relaxed)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether Redis answers PING within `timeout`. A cluster counts as up while any master
/// answers: the cluster client reconnects single nodes itself, and dropping it for one dead
/// node would fail the keys of the live ones too.
pub async fn ping(conn: &mut Conn, timeout: Duration) -> bool {
    let ping = redis::cmd("PING");
    let answered = match conn {
        Conn::Single(c) => tokio::time::timeout(timeout, ping.query_async::<String>(c))
            .await
            .map(|r| r.is_ok()),
        Conn::Cluster(c) => {
            let any_master = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::OneSucceeded),
            ));
            tokio::time::timeout(timeout, c.route_command(ping, any_master))
                .await
                .map(|r| r.is_ok())
        }
    };
    matches!(answered, Ok(true))
}

/// Exponential back-off from `reconnect_min` to `reconnect_max`, with jitter so instances
/// that lost Redis together do not reconnect in step.
pub fn backoff(timing: &Timing, failures: u32) -> Duration {
    let base = timing
        .reconnect_min
        .saturating_mul(1u32 << failures.min(16))
        .min(timing.reconnect_max);
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// The kind of a failed call, as its caller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection is gone, or reaches a server that cannot serve the call.
    Connection,
    Timeout,
    /// Redis answered with an error about the call itself.
    Server,
}

/// Sorts a client error, and tells the link when the connection looks broken (or reaches a
/// demoted master, which must be replaced even though it answers PING).
pub fn classify(link: &Link, e: &RedisError) -> Failure {
    if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
        link.replace();
        return Failure::Connection;
    }
    if e.is_timeout() {
        link.suspect();
        return Failure::Timeout;
    }
    let connection = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown)
        );
    if connection {
        link.suspect();
        Failure::Connection
    } else {
        Failure::Server
    }
}
