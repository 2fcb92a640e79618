//! The cache as the gateway runs it: one [`CacheStore`] shared by every worker and kept
//! across reloads (a reload that changes the size settings starts an empty store), the
//! per-route compiled key rules and options, the metrics, and the purge entry point.

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderName;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::freshness::HeuristicPolicy;
use super::shared::{PurgeBus, PurgeMessage, RedisTier, TierSettings};
use super::storable::StoreOptions;
use super::store::{CacheStore, StoreSettings};
use crate::config::model::{CacheSettings, Redis, RouteCache};

/// Most shards of the store: enough that the workers of a large machine rarely meet on a lock.
const SHARDS: usize = 64;

/// The running cache of one snapshot.
#[derive(Debug)]
pub struct CacheService {
    pub store: CacheStore,
    pub policy: HeuristicPolicy,
    pub surrogate_header: HeaderName,
    pub status_name: Box<str>,
    /// Remove every targeted field from responses to clients, not only this gateway's own.
    pub strip_targeted: bool,
    /// `Cache-Status` of an answer the gateway gave on a cached route before the cache had
    /// a say (an access refusal, a rate-limit refusal, a size limit).
    pub gateway_status: http::HeaderValue,
    pub metrics: CacheMetrics,
    /// The Redis tier shared with other instances, when configured.
    pub shared: Option<Arc<Shared>>,
}

/// The Redis tier and the purge bus that keeps this instance's store in step.
pub struct Shared {
    pub tier: RedisTier,
    pub bus: PurgeBus,
}

impl CacheService {
    /// Removes the targeted cache-control fields a client must not get: this gateway's own
    /// always, `CDN-Cache-Control` and `Surrogate-Control` with `cache.strip_targeted`.
    pub fn strip_for_client(&self, headers: &mut http::HeaderMap) {
        match self.strip_targeted {
            true => crate::cache::control::strip_targeted(headers),
            false => {
                headers.remove(&crate::cache::control::TARGETED[0]);
            }
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Holds the store (and the Redis tier) across reloads; lives as long as the gateway.
#[derive(Default)]
pub struct Caches {
    current: Mutex<Option<(StoreSettings, CacheStore)>>,
    shared: Mutex<Option<(TierSettingsKey, Arc<Shared>)>>,
}

/// What decides whether a reload keeps the Redis connection.
type TierSettingsKey = (Redis, crate::config::model::CacheRedis);

impl Caches {
    /// The service for a config: the running store when its size settings are unchanged.
    /// `runtime` runs the Redis tier's connection and purge subscription; without one (a
    /// config check) the tier is left out.
    pub fn service(
        &self,
        settings: &CacheSettings,
        redis: Option<&Redis>,
        runtime: Option<&tokio::runtime::Handle>,
        metrics: &CacheMetrics,
    ) -> Arc<CacheService> {
        // A response must fit in one shard's share of the bytes: fewer shards when objects
        // are large next to the whole store.
        let shards = (settings.max_bytes / settings.max_object_bytes.max(1)).clamp(1, SHARDS);
        let wanted = StoreSettings {
            max_bytes: settings.max_bytes,
            max_object_bytes: settings.max_object_bytes,
            shards,
            lock_timeout: settings.lock_timeout,
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let store = match current.as_ref() {
            Some((s, store)) if *s == wanted => store.clone(),
            _ => {
                let store = CacheStore::new(wanted);
                *current = Some((wanted, store.clone()));
                store
            }
        };
        let shared = match (settings.redis.as_ref(), redis, runtime) {
            (Some(c), Some(r), Some(rt)) => self.shared(r, c, &store, rt),
            _ => None,
        };
        Arc::new(CacheService {
            shared,
            store,
            policy: HeuristicPolicy {
                percent: settings.heuristic_percent,
                max: settings.heuristic_max,
            },
            surrogate_header: settings.surrogate_header.clone(),
            status_name: settings.status_name.as_str().into(),
            strip_targeted: settings.strip_targeted,
            gateway_status: crate::cache::status::CacheStatus::forward(
                &settings.status_name,
                crate::cache::status::Forward::Bypass,
            )
            .detail("gateway-answer")
            .to_header_value(),
            metrics: metrics.clone(),
        })
    }

    fn shared(
        &self,
        redis: &Redis,
        cache: &crate::config::model::CacheRedis,
        store: &CacheStore,
        runtime: &tokio::runtime::Handle,
    ) -> Option<Arc<Shared>> {
        let key = (redis.clone(), cache.clone());
        let mut current = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, shared)) = current.as_ref() {
            if *k == key {
                return Some(shared.clone());
            }
        }
        let _entered = runtime.enter();
        let started = RedisTier::new(TierSettings::from_model(redis, cache)).and_then(|tier| {
            let bus = PurgeBus::subscribe(&tier, Arc::new(store.clone()))?;
            Ok(Shared { tier, bus })
        });
        match started {
            Ok(shared) => {
                let shared = Arc::new(shared);
                *current = Some((key, shared.clone()));
                Some(shared)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache: the Redis tier could not start; caching in memory only");
                None
            }
        }
    }

    /// The running Redis tier, for purges.
    pub fn shared_tier(&self) -> Option<Arc<Shared>> {
        let current = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|(_, s)| s.clone())
    }

    /// The running store, for purges and metrics; `None` before any cached route.
    pub fn store(&self) -> Option<CacheStore> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|(_, store)| store.clone())
    }
}

/// A cache key part a route adds to the default key.
#[derive(Debug, Clone)]
pub enum KeyPart {
    Header(HeaderName),
    Cookie(Box<str>),
    Consumer,
    /// A field of the client's location.
    Geo(crate::config::model::GeoField),
}

/// A route's caching rules, compiled once per snapshot.
#[derive(Debug)]
pub struct RouteCacheRules {
    /// Each part with the label that keeps equal values of different parts apart.
    pub parts: Vec<(Box<[u8]>, KeyPart)>,
    pub options: StoreOptions,
    pub counters: RouteCounters,
}

impl RouteCacheRules {
    pub fn new(route: &str, rc: &RouteCache, metrics: &CacheMetrics) -> Self {
        let mut parts: Vec<(Box<[u8]>, KeyPart)> = Vec::new();
        for h in &rc.key_headers {
            let label = format!("header:{h}").into_bytes().into_boxed_slice();
            parts.push((label, KeyPart::Header(h.clone())));
        }
        for c in &rc.key_cookies {
            let label = format!("cookie:{c}").into_bytes().into_boxed_slice();
            parts.push((label, KeyPart::Cookie(c.as_str().into())));
        }
        if rc.key_consumer {
            parts.push((Box::from(&b"consumer"[..]), KeyPart::Consumer));
        }
        for f in &rc.key_geo {
            let label = format!("geo:{}", f.name()).into_bytes().into_boxed_slice();
            parts.push((label, KeyPart::Geo(*f)));
        }
        RouteCacheRules {
            parts,
            options: StoreOptions {
                store_set_cookie: rc.store_set_cookie,
            },
            counters: metrics.route(route),
        }
    }
}

/// What the cache did for one request, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served fresh from the store.
    Hit,
    /// Served stale (stale-while-revalidate, max-stale, stale-if-error).
    Stale,
    /// Validated with the origin, which answered 304.
    Revalidated,
    /// Went to the origin without a usable stored response.
    Miss,
    /// Got another request's response (coalesced).
    Collapsed,
    /// Not handled by the cache (method, key, coalescing gave up).
    Bypass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteOutcome {
    route: Arc<str>,
    outcome: &'static str,
}

/// The counters of one route, held by its compiled rules so a request never looks one up.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    hit: Counter,
    stale: Counter,
    revalidated: Counter,
    miss: Counter,
    collapsed: Counter,
    bypass: Counter,
}

impl RouteCounters {
    pub fn count(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Hit => &self.hit,
            Outcome::Stale => &self.stale,
            Outcome::Revalidated => &self.revalidated,
            Outcome::Miss => &self.miss,
            Outcome::Collapsed => &self.collapsed,
            Outcome::Bypass => &self.bypass,
        };
        c.inc();
    }
}

/// Cache metrics:
///
/// | name | type | labels |
/// |------|------|--------|
/// | `ferrogate_cache_requests_total` | counter | `route`, `outcome` (`hit`, `stale`, `revalidated`, `miss`, `collapsed`, `bypass`) |
/// | `ferrogate_cache_stored_bytes` | gauge | (charged bytes in the store, at scrape time) |
/// | `ferrogate_cache_entries` | gauge | (stored responses, at scrape time) |
/// | `ferrogate_cache_evictions` | gauge | (entries evicted to make room, so far) |
/// | `ferrogate_cache_purged_total` | counter | (entries removed by purges and invalidation) |
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    requests: Family<RouteOutcome, Counter>,
    bytes: Gauge,
    entries: Gauge,
    evictions: Gauge,
    purged: Counter,
}

impl CacheMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_cache_requests",
            "Requests on cached routes, by what the cache did",
            self.requests.clone(),
        );
        registry.register(
            "ferrogate_cache_stored_bytes",
            "Charged bytes of the stored responses",
            self.bytes.clone(),
        );
        registry.register(
            "ferrogate_cache_entries",
            "Stored responses",
            self.entries.clone(),
        );
        registry.register(
            "ferrogate_cache_evictions",
            "Stored responses evicted to make room, since start",
            self.evictions.clone(),
        );
        registry.register(
            "ferrogate_cache_purged",
            "Stored responses removed by purges and invalidation",
            self.purged.clone(),
        );
    }

    fn route(&self, route: &str) -> RouteCounters {
        let route: Arc<str> = Arc::from(route);
        let get = |outcome: &'static str| {
            self.requests
                .get_or_create(&RouteOutcome {
                    route: route.clone(),
                    outcome,
                })
                .clone()
        };
        RouteCounters {
            hit: get("hit"),
            stale: get("stale"),
            revalidated: get("revalidated"),
            miss: get("miss"),
            collapsed: get("collapsed"),
            bypass: get("bypass"),
        }
    }

    /// Counts entries removed by a purge or an invalidation.
    pub fn purged(&self, n: usize) {
        self.purged.inc_by(n as u64);
    }

    /// Sets the store gauges (called at scrape time).
    pub fn refresh(&self, store: &CacheStore) {
        let stats = store.stats();
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.bytes.set(clamp(stats.bytes));
        self.entries.set(clamp(stats.entries));
        self.evictions.set(clamp(stats.evictions));
    }
}

/// What an admin purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every entry under this normalised URL.
    Url(String),
    Prefix(String),
    Surrogate(String),
    All,
}

impl Purge {
    /// The message that carries this purge to other instances.
    pub fn message(&self) -> PurgeMessage {
        match self {
            Purge::Url(url) => PurgeMessage::Url(url.clone()),
            Purge::Prefix(prefix) => PurgeMessage::Prefix(prefix.clone()),
            Purge::Surrogate(key) => PurgeMessage::Surrogate(key.clone()),
            Purge::All => PurgeMessage::All,
        }
    }

    /// Removes the purged entries from the Redis tier and tells every instance to drop
    /// them from memory; returns how many the tier held.
    pub async fn apply_shared(&self, shared: &Shared) -> Result<usize, super::shared::TierError> {
        let removed = match self {
            Purge::Url(url) => shared.tier.purge_url(url).await,
            Purge::Prefix(prefix) => shared.tier.purge_prefix(prefix).await,
            Purge::Surrogate(key) => shared.tier.purge_surrogate(key).await,
            Purge::All => shared.tier.purge_all().await,
        };
        // Published even when the tier failed: memory copies must go either way.
        shared.bus.publish(&self.message()).await?;
        removed
    }

    /// Applies the purge to a store; returns how many entries went.
    pub fn apply(&self, store: &CacheStore) -> usize {
        match self {
            Purge::Url(url) => store.purge_url(url),
            Purge::Prefix(prefix) => store.purge_prefix(prefix),
            Purge::Surrogate(key) => store.purge_surrogate(key),
            Purge::All => store.purge_all(),
        }
    }
}
