//! Settings of the Redis tier and the purge bus: where Redis is, the key namespace, size
//! limit and timings, mapped from the validated config.

use std::fmt;
use std::time::Duration;

use super::link::{mode_name, Timing};
use crate::config::model::{self, RedisDeployment};

/// Namespace of every key and of the purge channel unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "ferrogate:cache:";
/// Hash-tag groups on a Cluster: enough slots to spread the data evenly over a few dozen
/// masters, few enough that a URL purge (one call per group) stays cheap.
pub const CLUSTER_GROUPS: u16 = 256;

/// Where Redis is, how the tier names its keys and how long it waits.
#[derive(Clone, PartialEq, Eq)]
pub struct TierSettings {
    pub deployment: RedisDeployment,
    /// Prefix of every key and of the purge channel; no `{` or `}`.
    pub prefix: String,
    /// Largest encoded entry stored; larger ones stay in memory only.
    pub max_object_bytes: usize,
    /// Bound on every call to Redis (each round trip of a purge).
    pub timeout: Duration,
    /// Bound on one connection (and subscription) attempt.
    pub connect_timeout: Duration,
    /// Back-off between connection attempts: doubles from `reconnect_min` up to
    /// `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How often connections are checked with PING.
    pub health_interval: Duration,
    /// Hash-tag groups the keys are spread over; every instance sharing the namespace must
    /// use the same number. 1 outside a Cluster, [`CLUSTER_GROUPS`] on one.
    pub groups: u16,
    /// Keys per SCAN step and index members per purge script call.
    pub purge_batch: usize,
    /// Empty the local store when the purge bus subscribes again after losing its
    /// subscription (purges published meanwhile were missed).
    pub purge_local_on_resubscribe: bool,
}

impl TierSettings {
    /// Settings with the default namespace and timings: 1 MiB objects, connect within
    /// max(timeout, 1 s), reconnect every 100 ms doubling up to 5 s, PING every second.
    pub fn new(deployment: RedisDeployment, timeout: Duration) -> TierSettings {
        let groups = match deployment {
            RedisDeployment::Cluster(_) => CLUSTER_GROUPS,
            RedisDeployment::Standalone(_) | RedisDeployment::Sentinel { .. } => 1,
        };
        TierSettings {
            deployment,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_object_bytes: 1 << 20,
            timeout,
            connect_timeout: timeout.max(Duration::from_secs(1)),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
            groups,
            purge_batch: 500,
            purge_local_on_resubscribe: true,
        }
    }

    pub fn from_model(redis: &model::Redis, cache: &model::CacheRedis) -> TierSettings {
        let mut settings = TierSettings::new(redis.deployment.clone(), redis.timeout);
        settings.prefix.clone_from(&cache.prefix);
        settings.max_object_bytes = cache.max_object_bytes;
        settings
    }

    pub(super) fn timing(&self) -> Timing {
        Timing {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            health_interval: self.health_interval,
        }
    }
}

impl fmt::Debug for TierSettings {
    /// URLs are printed without their credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<Redacted<'_>> = match &self.deployment {
            RedisDeployment::Standalone(url) => vec![Redacted(url)],
            RedisDeployment::Sentinel { urls, .. } | RedisDeployment::Cluster(urls) => {
                urls.iter().map(|u| Redacted(u)).collect()
            }
        };
        let mut s = f.debug_struct("TierSettings");
        s.field("mode", &mode_name(&self.deployment))
            .field("urls", &urls);
        if let RedisDeployment::Sentinel { master, .. } = &self.deployment {
            s.field("master", master);
        }
        s.field("prefix", &self.prefix)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("health_interval", &self.health_interval)
            .field("groups", &self.groups)
            .field("purge_batch", &self.purge_batch)
            .field(
                "purge_local_on_resubscribe",
                &self.purge_local_on_resubscribe,
            )
            .finish()
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
