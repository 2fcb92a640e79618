//! The cache tier's connections to Redis: the command connection, kept by one background
//! task that connects with back-off, checks it with PING and replaces it when it fails; and
//! dedicated pub/sub connections for the purge bus. Callers never wait for a connection:
//! while there is none, [`Link::conn`] answers `None` at once.
//!
//! The link, the connection kinds, PING and the back-off are `crate::redis_link`'s, shared
//! with the rate limiter; unlike the rate limiter's supervisor this one has no Sentinel
//! master watch: a write refused with READONLY (a demoted master) replaces the connection,
//! and a stale cache read until then is harmless.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::PubSub;
use redis::cluster::ClusterClient;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};
use tokio::sync::watch;

use crate::redis_link::ping;
pub(super) use crate::redis_link::{backoff, Conn, Link, Timing};

use super::{TierError, TierSettings};
use crate::config::model::RedisDeployment;

/// A server a SCAN walks: the one server, or one cluster master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    Single,
    Master { host: String, port: u16 },
}

/// How to open connections; parsed from the settings, nothing contacted yet.
pub(super) enum Connector {
    Standalone(Client),
    Sentinel(Box<SentinelClient>),
    /// The cluster client, and one client per seed node for pub/sub: a message published
    /// on any node of a cluster reaches the subscribers of every node.
    Cluster(Box<ClusterClient>, Vec<Client>),
}

impl Conn {
    /// The servers whose keys a SCAN must walk: every master of a cluster.
    pub(super) async fn scan_nodes(&mut self) -> RedisResult<Vec<Node>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![Node::Single]);
        };
        // Without a response policy the client answers a map of node address → reply.
        let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = c.route_command(redis::cmd("PING"), all_masters).await?;
        let Value::Map(replies) = reply else {
            return Err(unexpected("PING to every master", &reply));
        };
        let mut nodes = Vec::with_capacity(replies.len());
        for (address, _) in replies {
            let address: String = redis::from_redis_value(address)?;
            let parsed = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)));
            let Some((host, port)) = parsed else {
                return Err(unexpected("node address", &Value::SimpleString(address)));
            };
            nodes.push(Node::Master { host, port });
        }
        Ok(nodes)
    }

    /// One SCAN step on `node`: the next cursor (0 when done) and the keys found.
    pub(super) async fn scan_page(
        &mut self,
        node: &Node,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<Vec<u8>>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        match (self, node) {
            (Conn::Cluster(c), Node::Master { host, port }) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = c.route_command(scan, route).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            (conn, _) => scan.query_async(conn).await,
        }
    }
}

impl Connector {
    /// Parses the URLs; nothing is contacted yet.
    pub(super) fn new(settings: &TierSettings) -> Result<Connector, TierError> {
        let invalid = |source| TierError::Invalid {
            mode: mode_name(&settings.deployment),
            source,
        };
        match &settings.deployment {
            RedisDeployment::Standalone(url) => Client::open(url.as_str())
                .map(Connector::Standalone)
                .map_err(invalid),
            RedisDeployment::Sentinel { master, urls } => {
                if urls.is_empty() {
                    return Err(TierError::NoUrls("sentinel"));
                }
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                SentinelClient::build(urls, master.clone(), None, SentinelServerType::Master)
                    .map(|c| Connector::Sentinel(Box::new(c)))
                    .map_err(invalid)
            }
            RedisDeployment::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(TierError::NoUrls("cluster"));
                }
                let seeds = urls
                    .iter()
                    .map(|u| Client::open(u.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.timeout)
                    // Calls are bounded by the tier's timeout; a retry covers a MOVED after
                    // resharding or a failover without outliving it.
                    .retries(2)
                    .build()
                    .map(|c| Connector::Cluster(Box::new(c), seeds))
                    .map_err(invalid)
            }
        }
    }

    /// Opens a command connection.
    async fn connect(&mut self, connect_timeout: Duration) -> RedisResult<Conn> {
        // Every call carries the tier's own timeout, which also tells a timeout apart from
        // a broken connection; none at this level.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        match self {
            Connector::Standalone(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Conn::Single),
            Connector::Sentinel(sentinel) => sentinel
                .async_get_client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Conn::Single),
            Connector::Cluster(client, _) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// Opens a pub/sub connection: to the server, the current master, or the first seed
    /// node of a cluster that answers (`start` rotates the first one tried).
    pub(super) async fn pubsub(&mut self, start: usize) -> RedisResult<PubSub> {
        match self {
            Connector::Standalone(client) => client.get_async_pubsub().await,
            Connector::Sentinel(sentinel) => {
                sentinel.async_get_client().await?.get_async_pubsub().await
            }
            Connector::Cluster(_, seeds) => {
                let mut last = None;
                for i in 0..seeds.len() {
                    match seeds[(start + i) % seeds.len()].get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed node"))
                }))
            }
        }
    }
}

/// Keeps `link` connected until `stop`'s sender is dropped.
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
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.changed() => return,
        };
        let mut conn = match result {
            Ok(Ok(conn)) => conn,
            failed => {
                // Once per outage: the next success says it is over.
                if failures == 0 {
                    match failed {
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cache tier: cannot connect to Redis, retrying");
                        }
                        _ => tracing::warn!(
                            timeout = ?timing.connect_timeout,
                            "cache tier: Redis connection attempt timed out, retrying"
                        ),
                    }
                }
                let wait = backoff(&timing, failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if failures > 0 {
            tracing::info!("cache tier: connected to Redis");
        }
        failures = 0;
        link.connected(conn.clone());
        loop {
            let replace = tokio::select! {
                asked = link.check_due(timing.health_interval) => asked,
                _ = stop.changed() => return,
            };
            if replace || !ping(&mut conn, timing.timeout).await {
                tracing::warn!(replace, "cache tier: Redis connection lost, reconnecting");
                link.disconnected();
                break;
            }
        }
    }
}

pub(super) fn mode_name(deployment: &RedisDeployment) -> &'static str {
    match deployment {
        RedisDeployment::Standalone(_) => "standalone",
        RedisDeployment::Sentinel { .. } => "sentinel",
        RedisDeployment::Cluster(_) => "cluster",
    }
}

fn unexpected(what: &'static str, reply: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        what,
        format!("{reply:?}"),
    ))
}
