//! The running gateway's shared state: the current configuration snapshot, metrics, what
//! survives a reload (target health, rate-limit counts, caches, connection limits), the
//! open-connection count and the shutdown flag; and reload, which swaps the snapshot or
//! keeps the running one.

mod alerting;
mod changes;
mod checker;
mod cluster;
mod dispatch;
mod dns;
mod etcd;
pub mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::model::{Config, LogTarget};
use crate::config::{self, ConfigErrors};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::serve::conn_limit::ConnLimiter;
use crate::snapshot::{Kept, Snapshot, SnapshotError, TargetStates};
pub use changes::ChangeError;
use checker::Checker;

/// Why the gateway could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("listeners cannot change on reload (restart the gateway to change them)")]
    ListenersChanged,
    #[error("admin.tls: {0}")]
    AdminTls(#[source] crate::tls::TlsError),
    #[error("cannot start a worker: {0}")]
    Runtime(#[source] std::io::Error),
}

/// State shared by every worker.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub config_path: Option<PathBuf>,
    /// Listener addresses and TLS flags as configured (port 0 unresolved): a reload may not
    /// change them, since workers hold the sockets.
    listener_shape: Vec<(SocketAddr, bool)>,
    open_connections: AtomicUsize,
    shutting_down: AtomicBool,
    access_log: Mutex<Option<(LogTarget, Arc<AccessLog>)>>,
    reload_lock: Mutex<()>,
    /// Target health and rate-limit counts, kept across reloads.
    pub kept: Kept,
    checker: Checker,
    /// Connection limits per listener, kept across reloads (their counts must survive).
    pub conn_limits: Vec<Arc<ConnLimiter>>,
    /// The job queues' dispatchers, started when a configuration first has a queue.
    dispatcher: std::sync::OnceLock<dispatch::Dispatcher>,
    /// Configuration versions, when the gateway runs from a file with an admin listener.
    versions: Option<Mutex<versions::Versions>>,
    /// The etcd side, when the configuration lives in etcd (`admin.etcd`).
    cluster: Option<cluster::Cluster>,
    /// Alert states, from when a configuration first has `alerts`.
    alerting: std::sync::OnceLock<Arc<crate::observe::alerts::Alerting>>,
}

/// Decrements the open-connection count when a connection ends.
pub struct OpenConnection {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.connection_closed(&self.listener);
    }
}

impl Shared {
    /// Compiles `config` (its listener addresses bound already) and starts what runs beside
    /// the workers: the background clients and the active health checks. `listener_shape`
    /// is the listeners as configured, before binding resolved port 0.
    pub fn start(
        config: Config,
        listener_shape: Vec<(SocketAddr, bool)>,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Shared>, GatewayError> {
        let metrics = Arc::new(Metrics::new());
        let (versions, config, cluster) = changes::open_versions(config, config_path.as_deref())?;
        if let Some(v) = &versions {
            let v = v.lock().unwrap_or_else(|e| e.into_inner());
            metrics.set_config_version(v.current().map_or(0, |c| c.version));
        }
        let log = open_access_log(&config)?;
        let kept = Kept {
            targets: TargetStates::default(),
            rate_limits: crate::ratelimit::RateLimiter::new(metrics.rate_limits.clone()),
            background: crate::background::Background::new("ferrogate-auth"),
            caches: crate::cache::service::Caches::default(),
            queues: Some(crate::queue::Queues::default()),
            tunnels: crate::tunnel::Tunnels::new(metrics.tunnels.clone()),
            dns: Default::default(),
            history: Default::default(),
        };
        let conn_limits = config
            .listeners
            .iter()
            .map(|l| {
                Arc::new(ConnLimiter::new(
                    l.limits.max_connections,
                    l.limits.max_connections_per_ip,
                ))
            })
            .collect();
        let names = dns::queries(&config);
        if !names.is_empty() {
            count_first(
                &metrics,
                &crate::upstream::dns::resolve_new(&kept.dns, names, &config.dns),
            );
        }
        let snapshot = Snapshot::build(
            config,
            &metrics,
            log.as_ref().map(|(_, l)| l.clone()),
            &kept,
        )?;
        let checker = Checker::start().map_err(GatewayError::Runtime)?;
        checker.apply(&snapshot);
        let shared = Arc::new(Shared {
            versions,
            cluster,
            alerting: std::sync::OnceLock::new(),
            dispatcher: std::sync::OnceLock::new(),
            conn_limits,
            kept,
            checker,
            listener_shape,
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            config_path,
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            access_log: Mutex::new(log),
            reload_lock: Mutex::new(()),
        });
        shared.dispatch(&shared.snapshot.load())?;
        shared.alert(&shared.snapshot.load())?;
        shared.sample_health(&shared.snapshot.load());
        dns::spawn(Arc::downgrade(&shared)).map_err(GatewayError::Runtime)?;
        cluster::spawn(&shared).map_err(GatewayError::Runtime)?;
        Ok(shared)
    }

    /// Runs the dispatchers of `snap`'s queues (starting their thread the first time).
    fn dispatch(self: &Arc<Self>, snap: &Snapshot) -> Result<(), GatewayError> {
        if snap.queues.is_empty() && self.dispatcher.get().is_none() {
            return Ok(());
        }
        let dispatcher = match self.dispatcher.get() {
            Some(d) => d,
            None => {
                let d = dispatch::Dispatcher::start().map_err(GatewayError::Runtime)?;
                self.dispatcher.get_or_init(|| d)
            }
        };
        dispatcher.apply(snap, &Arc::downgrade(self));
        Ok(())
    }

    /// Starts evaluating alert rules the first time a configuration has them.
    fn alert(self: &Arc<Self>, snap: &Snapshot) -> Result<(), GatewayError> {
        if snap.config.alerts.is_none() || self.alerting.get().is_some() {
            return Ok(());
        }
        let alerting = crate::observe::alerts::Alerting::new(self.metrics.alerts.clone())
            .map_err(|e| GatewayError::Runtime(std::io::Error::other(e)))?;
        let alerting = self.alerting.get_or_init(|| Arc::new(alerting)).clone();
        alerting::spawn(Arc::downgrade(self), alerting).map_err(GatewayError::Runtime)
    }

    /// Lets the history sample the running configuration's target health.
    fn sample_health(self: &Arc<Self>, snap: &Snapshot) {
        if let Some(history) = &snap.history {
            let weak = Arc::downgrade(self);
            history.set_health(Arc::new(move || {
                weak.upgrade()
                    .map(|s| alerting::target_health(&s.snapshot.load()))
                    .unwrap_or_default()
            }));
        }
    }

    /// Alert states, once a configuration had rules.
    pub fn alerting(&self) -> Option<&crate::observe::alerts::Alerting> {
        self.alerting.get().map(|a| &**a)
    }

    /// Builds the running configuration again with the addresses its target names resolve
    /// to now, and swaps it in. Targets no longer resolved drain as on a reload.
    fn rebuild_for_dns(&self) {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        let config = current.config.clone();
        let built = self
            .access_log_for(&config)
            .and_then(|log| Ok(Snapshot::build(config, &self.metrics, log, &self.kept)?));
        match built {
            Ok(snap) => {
                let snap = Arc::new(snap);
                self.snapshot.store(snap.clone());
                self.checker.apply(&snap);
            }
            Err(e) => tracing::error!("cannot apply new target addresses: {e}"),
        }
    }

    /// From now on the gateway is shutting down (`/readyz` answers 503).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn connection_opened(self: &Arc<Self>, listener: usize) -> OpenConnection {
        self.open_connections.fetch_add(1, Ordering::AcqRel);
        let name = self
            .snapshot
            .load()
            .listeners
            .get(listener)
            .map_or_else(|| Arc::from(""), |l| l.name.clone());
        self.metrics.connection_opened(&name);
        OpenConnection {
            shared: self.clone(),
            listener: name,
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The access log for a config, reusing the open one when the target is unchanged.
    fn access_log_for(&self, config: &Config) -> Result<Option<Arc<AccessLog>>, GatewayError> {
        if !config.access_log.enabled {
            return Ok(None);
        }
        let mut slot = self.access_log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((target, log)) = slot.as_ref() {
            if *target == config.access_log.target {
                return Ok(Some(log.clone()));
            }
        }
        let opened = open_access_log(config)?;
        let log = opened.as_ref().map(|(_, l)| l.clone());
        *slot = opened;
        Ok(log)
    }

    /// Loads the config file again and swaps the snapshot, or keeps the running one.
    pub fn reload(self: &Arc<Self>) -> Result<(), GatewayError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload();
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!("reload failed, the running configuration stays:\n{e}"),
        }
        result
    }

    fn try_reload(self: &Arc<Self>) -> Result<(), GatewayError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        if self.cluster.is_some() {
            return self.reload_local(path);
        }
        if let Some(versions) = &self.versions {
            return self.reload_versioned(path, versions);
        }
        let snap = self.prepare(config::load(path)?)?;
        self.swap(snap)
    }

    /// Compiles a configuration that is to replace the running one (listener addresses
    /// kept), without swapping it in.
    fn prepare(&self, config: Config) -> Result<Arc<Snapshot>, GatewayError> {
        if listener_shape(&config) != self.listener_shape {
            return Err(GatewayError::ListenersChanged);
        }
        let mut config = config;
        let current = self.snapshot.load();
        for (new, running) in config.listeners.iter_mut().zip(&current.config.listeners) {
            new.address = running.address;
        }
        // The admin listener builds its TLS again from the new snapshot: refuse the reload
        // here if its certificates do not load.
        if let Some(tls) = config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            crate::tls::server_config(tls).map_err(GatewayError::AdminTls)?;
        }
        let log = self.access_log_for(&config)?;
        let names = dns::queries(&config);
        self.kept.dns.keep_only(&names.iter().collect::<Vec<_>>());
        count_first(
            &self.metrics,
            &crate::upstream::dns::resolve_new(&self.kept.dns, names, &config.dns),
        );
        Ok(Arc::new(Snapshot::build(
            config,
            &self.metrics,
            log,
            &self.kept,
        )?))
    }

    /// Swaps in a prepared snapshot.
    fn swap(self: &Arc<Self>, snap: Arc<Snapshot>) -> Result<(), GatewayError> {
        for (limiter, l) in self.conn_limits.iter().zip(&snap.config.listeners) {
            limiter.set_limits(l.limits.max_connections, l.limits.max_connections_per_ip);
        }
        self.snapshot.store(snap.clone());
        self.checker.apply(&snap);
        self.dispatch(&snap)?;
        self.sample_health(&snap);
        self.alert(&snap)
    }
}

/// Counts the first resolutions of names a configuration brought.
fn count_first(
    metrics: &Metrics,
    outcomes: &[(config::model::DnsQuery, crate::upstream::dns::Refreshed)],
) {
    for (q, outcome) in outcomes {
        metrics.dns_resolved(&q.to_string(), outcome.as_str());
    }
}

/// Opens the access log a config asks for, with its target (kept to reuse it on reload).
fn open_access_log(config: &Config) -> Result<Option<(LogTarget, Arc<AccessLog>)>, GatewayError> {
    if !config.access_log.enabled {
        return Ok(None);
    }
    let target = &config.access_log.target;
    let log = AccessLog::open(target).map_err(GatewayError::AccessLog)?;
    Ok(Some((target.clone(), Arc::new(log))))
}

/// Listener addresses and TLS flags of a config: what a reload may not change.
pub fn listener_shape(c: &Config) -> Vec<(SocketAddr, bool)> {
    c.listeners
        .iter()
        .map(|l| (l.address, l.tls.is_some()))
        .collect()
}
