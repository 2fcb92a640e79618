//! The connection to Redis, kept by one background task: it connects with back-off, checks
//! the connection with PING (periodically, and at once when a call suspects it) and, with
//! Sentinel, asks the Sentinels whether the master moved; it replaces the connection when a
//! check fails. Callers never wait for a connection: while there is none, [`Link::conn`]
//! answers `None` at once.
//!
//! The link, the connection kinds, PING and the back-off are `crate::redis_link`'s, shared
//! with the cache tier. `redis::aio::ConnectionManager` is not used: it makes every command
//! wait on its reconnection, and knows nothing of Sentinel (after a failover it would keep
//! writing to the old master).

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster::ClusterClient;
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{AsyncConnectionConfig, Client, ConnectionAddr};
use tokio::sync::watch;

use crate::redis_link::{backoff, ping};
pub(super) use crate::redis_link::{Conn, Link, Timing};

use super::{RedisError, RedisMode, RedisSettings};

/// How to open a connection; owned by the supervisor task.
pub(super) enum Connector {
    Standalone(Client),
    Sentinel(Box<Sentinels>),
    Cluster(Box<ClusterClient>),
}

/// A Sentinel deployment: the client that finds the master, and what it takes to notice
/// that the Sentinels moved it. A forced failover keeps the old master up and writable until
/// the Sentinels demote it, which can take seconds; writes there in the meantime are lost.
pub(super) struct Sentinels {
    client: SentinelClient,
    master: String,
    sentinels: Vec<Client>,
    /// The connection to the Sentinel that answered last.
    watcher: Option<MultiplexedConnection>,
    /// The master the current connection reaches.
    current: Option<(String, u16)>,
}

impl Connector {
    /// Parses the URLs; nothing is contacted yet.
    pub(super) fn new(settings: &RedisSettings) -> Result<Connector, RedisError> {
        let invalid = |source| RedisError::Invalid {
            mode: settings.mode.name(),
            source,
        };
        match &settings.mode {
            RedisMode::Standalone { url } => Client::open(url.as_str())
                .map(Connector::Standalone)
                .map_err(invalid),
            RedisMode::Sentinel { urls, master } => {
                if urls.is_empty() {
                    return Err(RedisError::NoUrls("sentinel"));
                }
                let sentinels = urls
                    .iter()
                    .map(|u| Client::open(u.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                let client =
                    SentinelClient::build(urls, master.clone(), None, SentinelServerType::Master)
                        .map_err(invalid)?;
                Ok(Connector::Sentinel(Box::new(Sentinels {
                    client,
                    master: master.clone(),
                    sentinels,
                    watcher: None,
                    current: None,
                })))
            }
            RedisMode::Cluster { urls } => {
                if urls.is_empty() {
                    return Err(RedisError::NoUrls("cluster"));
                }
                ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.timeout)
                    // Calls are bounded by the store's timeout; a retry or two covers a
                    // MOVED after resharding or a failover without outliving it.
                    .retries(2)
                    .build()
                    .map(|c| Connector::Cluster(Box::new(c)))
                    .map_err(invalid)
            }
        }
    }

    async fn connect(&mut self, connect_timeout: Duration) -> ::redis::RedisResult<Conn> {
        // No response timeout at this level: every call carries the store's own timeout,
        // which also tells a timeout apart from a broken connection.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        match self {
            Connector::Standalone(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Conn::Single),
            Connector::Sentinel(s) => {
                let master = s.client.async_get_client().await?;
                s.current = match master.get_connection_info().addr() {
                    ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
                    ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
                    _ => None,
                };
                master
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Single)
            }
            Connector::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// Whether the connection reaches a server that is no longer the master.
    async fn master_moved(&mut self, timeout: Duration) -> bool {
        match self {
            Connector::Sentinel(s) => s.master_moved(timeout).await,
            Connector::Standalone(_) | Connector::Cluster(_) => false,
        }
    }
}

impl Sentinels {
    /// Whether the Sentinels now name another master. No answer counts as no: the master
    /// may well be fine while the Sentinels are out of reach.
    async fn master_moved(&mut self, timeout: Duration) -> bool {
        let Some(current) = self.current.clone() else {
            return false;
        };
        match tokio::time::timeout(timeout, self.named_master()).await {
            Ok(Some(named)) => named != current,
            _ => false,
        }
    }

    async fn named_master(&mut self) -> Option<(String, u16)> {
        let mut ask = ::redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master);
        if let Some(conn) = &mut self.watcher {
            if let Ok(Some(addr)) = ask.query_async(conn).await {
                return Some(addr);
            }
            self.watcher = None;
        }
        for sentinel in &self.sentinels {
            let Ok(mut conn) = sentinel.get_multiplexed_async_connection().await else {
                continue;
            };
            if let Ok(Some(addr)) = ask.query_async(&mut conn).await {
                self.watcher = Some(conn);
                return Some(addr);
            }
        }
        None
    }
}

/// Keeps `link` connected until `stop` is dropped.
pub(super) async fn supervise(
    link: Arc<Link>,
    mut connector: Connector,
    timing: Timing,
    mut stop: watch::Receiver<()>,
) {
    let mut failures = 0u32;
    loop {
        let attempt = tokio::time::timeout(
            timing.connect_timeout,
            connector.connect(timing.connect_timeout),
        );
        let conn = tokio::select! {
            result = attempt => match result {
                Ok(Ok(conn)) => Some(conn),
                Ok(Err(e)) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "rate limit: cannot connect to Redis, retrying");
                    }
                    None
                }
                Err(_) => {
                    if failures == 0 {
                        tracing::warn!(timeout = ?timing.connect_timeout, "rate limit: Redis connection attempt timed out, retrying");
                    }
                    None
                }
            },
            _ = stop.changed() => return,
        };
        let Some(mut conn) = conn else {
            let wait = backoff(&timing, failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                _ = stop.changed() => return,
            }
        };
        if failures > 0 {
            tracing::info!("rate limit: connected to Redis");
        }
        failures = 0;
        link.connected(conn.clone());
        loop {
            let asked = tokio::select! {
                asked = link.check_due(timing.health_interval) => asked,
                _ = stop.changed() => return,
            };
            let replace = asked || connector.master_moved(timing.timeout).await;
            if replace || !ping(&mut conn, timing.timeout).await {
                tracing::warn!(
                    replace,
                    "rate limit: Redis connection lost or master moved, reconnecting"
                );
                link.disconnected();
                break;
            }
        }
    }
}
