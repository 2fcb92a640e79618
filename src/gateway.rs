//! A running gateway: binds the listeners, starts one single-threaded runtime per worker,
//! the admin listener and the reload watcher, and drains on shutdown.
//!
//! Each worker owns an `SO_REUSEPORT` socket per listener (the kernel spreads connections)
//! and its own upstream pools; workers share only the config snapshot (`ArcSwap`), metrics
//! and balancer state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::model::{Config, LogTarget};
use crate::config::{self, ConfigErrors};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::serve::conn_limit::ConnLimiter;
use crate::snapshot::{Kept, Snapshot, SnapshotError, TargetStates};
use crate::upstream::checker::Checker;

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
    pub fn reload(&self) -> Result<(), GatewayError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload();
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!("reload failed, the running configuration stays:\n{e}"),
        }
        result
    }

    fn try_reload(&self) -> Result<(), GatewayError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let config = config::load(path)?;
        if listener_shape(&config) != self.listener_shape {
            return Err(GatewayError::ListenersChanged);
        }
        let mut config = config;
        let current = self.snapshot.load();
        for (new, running) in config.listeners.iter_mut().zip(&current.config.listeners) {
            new.address = running.address;
        }
        let log = self.access_log_for(&config)?;
        let snap = Arc::new(Snapshot::build(config, &self.metrics, log, &self.kept)?);
        for (limiter, l) in self.conn_limits.iter().zip(&snap.config.listeners) {
            limiter.set_limits(l.limits.max_connections, l.limits.max_connections_per_ip);
        }
        self.snapshot.store(snap.clone());
        self.checker.apply(&snap);
        Ok(())
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

fn listener_shape(c: &Config) -> Vec<(SocketAddr, bool)> {
    c.listeners
        .iter()
        .map(|l| (l.address, l.tls.is_some()))
        .collect()
}

/// Options that do not come from the config file.
#[derive(Default)]
pub struct StartOptions {
    /// Watch this file and reload on change (and on SIGHUP in the binary).
    pub config_path: Option<PathBuf>,
    pub watch: bool,
}

/// A running gateway.
pub struct Gateway {
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    listener_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    _watcher: Option<crate::reload::Watcher>,
}

impl Gateway {
    /// Binds every listener and starts the workers. Returns once the gateway accepts.
    pub fn start(config: Config, opts: StartOptions) -> Result<Gateway, GatewayError> {
        let metrics = Arc::new(Metrics::new());
        let shape = listener_shape(&config);
        let mut config = config;
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Bind first, so port 0 resolves once and every worker shares the real port.
        let mut sockets: Vec<Vec<std::net::TcpListener>> = Vec::new();
        for l in &mut config.listeners {
            let mut per_worker = Vec::with_capacity(workers);
            for _ in 0..workers {
                let s = crate::listener::bind(l.address).map_err(|source| GatewayError::Bind {
                    address: l.address,
                    source,
                })?;
                if l.address.port() == 0 {
                    if let Ok(a) = s.local_addr() {
                        l.address = a;
                    }
                }
                per_worker.push(s);
            }
            sockets.push(per_worker);
        }
        let listener_addrs = config.listeners.iter().map(|l| l.address).collect();
        let admin = config.admin.clone();
        let log = open_access_log(&config)?;
        let kept = Kept {
            targets: TargetStates::default(),
            rate_limits: crate::ratelimit::RateLimiter::new(metrics.rate_limits.clone()),
            background: crate::background::Background::new("ferrogate-auth"),
            caches: crate::cache::service::Caches::default(),
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
        let snapshot = Snapshot::build(
            config,
            &metrics,
            log.as_ref().map(|(_, l)| l.clone()),
            &kept,
        )?;
        let checker = Checker::start().map_err(GatewayError::Runtime)?;
        checker.apply(&snapshot);
        let shared = Arc::new(Shared {
            conn_limits,
            kept,
            checker,
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            config_path: opts.config_path.clone(),
            listener_shape: shape,
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            access_log: Mutex::new(log),
            reload_lock: Mutex::new(()),
        });
        let (shutdown, _) = watch::channel(false);
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::new();
        for w in 0..workers {
            let mine: Vec<(usize, std::net::TcpListener)> = sockets
                .iter_mut()
                .enumerate()
                .filter_map(|(i, v)| v.pop().map(|s| (i, s)))
                .collect();
            let shared = shared.clone();
            let signals = crate::listener::WorkerSignals {
                shutdown: shutdown.subscribe(),
                stop: stop.subscribe(),
            };
            let h = std::thread::Builder::new()
                .name(format!("ferrogate-worker-{w}"))
                .spawn(move || crate::listener::run_worker(shared, mine, signals))
                .map_err(GatewayError::Runtime)?;
            handles.push(h);
        }
        let admin_addr = match admin {
            Some(a) => Some(crate::admin::start(
                a.address,
                shared.clone(),
                shutdown.subscribe(),
            )?),
            None => None,
        };
        let watcher = match (&opts.config_path, opts.watch) {
            (Some(p), true) => crate::reload::Watcher::start(p, shared.clone()),
            _ => None,
        };
        Ok(Gateway {
            shared,
            shutdown,
            stop,
            workers: handles,
            listener_addrs,
            admin_addr,
            _watcher: watcher,
        })
    }

    /// Bound addresses of the listeners, in config order (port 0 resolved).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish up to `drain`, then stops the workers.
    /// Returns the number of connections still open when the drain time ran out.
    pub fn shutdown(self, drain: Duration) -> usize {
        self.shared.shutting_down.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + drain;
        while self.shared.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.open_connections();
        let _ = self.stop.send(true);
        for h in self.workers {
            let _ = h.join();
        }
        if let Some(log) = &self.shared.snapshot.load().access_log {
            log.flush();
        }
        left
    }
}
