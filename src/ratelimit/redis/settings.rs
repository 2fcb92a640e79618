//! Where Redis is and how long the store waits for it, mapped from the validated config.

use std::fmt;
use std::time::Duration;

use super::BatchLimits;
use crate::config::model;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisMode {
    Standalone {
        url: String,
    },
    /// Sentinel addresses and the name of the master they watch; the master is looked up
    /// again on every reconnection, so a failover is followed.
    Sentinel {
        urls: Vec<String>,
        master: String,
    },
    /// Seed nodes; the client discovers the rest.
    Cluster {
        urls: Vec<String>,
    },
}

/// How the store reaches Redis and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// Bound on every call, and on a batched request's wait for a push.
    pub timeout: Duration,
    /// Bound on one connection attempt.
    pub connect_timeout: Duration,
    /// Back-off between connection attempts: doubles from `reconnect_min` up to
    /// `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How often the connection is checked with PING (and, with Sentinel, whether the
    /// Sentinels have moved the master).
    pub health_interval: Duration,
    /// A concurrency lease never released (crashed gateway) stops counting after this; a
    /// request holding one longer than this stops counting too.
    pub lease_ttl: Duration,
    /// Most keys the batched mode tracks; beyond, new keys are checked strictly.
    pub batch_max_keys: usize,
}

impl RedisMode {
    pub(super) fn name(&self) -> &'static str {
        match self {
            RedisMode::Standalone { .. } => "standalone",
            RedisMode::Sentinel { .. } => "sentinel",
            RedisMode::Cluster { .. } => "cluster",
        }
    }
}

impl RedisSettings {
    /// Settings with the default timings: connect within max(timeout, 1 s), reconnect every
    /// 100 ms doubling up to 5 s, PING every second, leases of 60 s, 100,000 batched keys.
    pub fn new(mode: RedisMode, timeout: Duration) -> RedisSettings {
        RedisSettings {
            mode,
            timeout,
            connect_timeout: timeout.max(Duration::from_secs(1)),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(60),
            batch_max_keys: 100_000,
        }
    }

    pub fn from_model(r: &model::Redis) -> RedisSettings {
        let mode = match &r.deployment {
            model::RedisDeployment::Standalone(url) => RedisMode::Standalone { url: url.clone() },
            model::RedisDeployment::Sentinel { master, urls } => RedisMode::Sentinel {
                urls: urls.clone(),
                master: master.clone(),
            },
            model::RedisDeployment::Cluster(urls) => RedisMode::Cluster { urls: urls.clone() },
        };
        RedisSettings::new(mode, r.timeout)
    }
}

impl From<model::RateBatch> for BatchLimits {
    fn from(b: model::RateBatch) -> BatchLimits {
        BatchLimits {
            interval: b.interval,
            max_pending: b.max_pending,
        }
    }
}

impl fmt::Debug for RedisMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisMode::Standalone { url } => f
                .debug_struct("Standalone")
                .field("url", &Redacted(url))
                .finish(),
            RedisMode::Sentinel { urls, master } => f
                .debug_struct("Sentinel")
                .field(
                    "urls",
                    &urls.iter().map(|u| Redacted(u)).collect::<Vec<_>>(),
                )
                .field("master", master)
                .finish(),
            RedisMode::Cluster { urls } => f
                .debug_struct("Cluster")
                .field(
                    "urls",
                    &urls.iter().map(|u| Redacted(u)).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// A URL printed without its credentials (`redis://user:secret@host` → `redis://***@host`).
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => write!(f, "\"{scheme}://***@{host}\""),
                None => write!(f, "{:?}", self.0),
            },
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_url_passwords() {
        let mode = RedisMode::Sentinel {
            urls: vec!["redis://user:secret@10.0.0.1:26379".to_owned()],
            master: "main".to_owned(),
        };
        let printed = format!("{:?}", RedisSettings::new(mode, Duration::from_millis(50)));
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("redis://***@10.0.0.1:26379"), "{printed}");
    }

    #[test]
    fn model_deployments_map_to_modes() {
        let redis = model::Redis {
            deployment: model::RedisDeployment::Cluster(vec!["redis://a:1".to_owned()]),
            timeout: Duration::from_millis(50),
        };
        let settings = RedisSettings::from_model(&redis);
        assert_eq!(
            settings.mode,
            RedisMode::Cluster {
                urls: vec!["redis://a:1".to_owned()]
            }
        );
        assert_eq!(settings.timeout, Duration::from_millis(50));
        assert_eq!(settings.connect_timeout, Duration::from_secs(1));
    }
}
