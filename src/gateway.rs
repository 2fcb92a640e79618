//! A running gateway: binds the listeners, starts one single-threaded runtime per worker,
//! the admin listener and the reload watcher, and drains on shutdown.
//!
//! Each worker owns an `SO_REUSEPORT` socket per listener (the kernel spreads connections)
//! and its own upstream pools; workers share only the config snapshot (`ArcSwap`), metrics
//! and balancer state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::model::Config;
use crate::runtime::listener_shape;
pub use crate::runtime::{GatewayError, Shared};

/// Time the tunnels open at the end of the drain get to send their close frames and see
/// their peers close (each gives up after its own 2 s close grace).
const TUNNEL_CLOSE_WAIT: Duration = Duration::from_secs(3);

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
        let shared = Shared::start(config, shape, opts.config_path.clone())?;
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
        // The admin listener stays up through the drain (`/readyz` answers 503 then) and
        // stops with the workers.
        let admin_addr = match admin {
            Some(a) => Some(crate::admin::start(&a, shared.clone(), stop.subscribe())?),
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

    /// Stops accepting, lets in-flight requests and open tunnels go on for up to `drain`,
    /// then closes the tunnels (a close frame 1001 to both sides) and stops the workers.
    /// Returns the number of connections and tunnels still open when the drain time ran
    /// out.
    pub fn shutdown(self, drain: Duration) -> usize {
        self.shared.begin_shutdown();
        let _ = self.shutdown.send(true);
        let tunnels = &self.shared.kept.tunnels;
        let open = || self.shared.open_connections() + tunnels.open();
        let deadline = Instant::now() + drain;
        while open() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = open();
        // Tunnels close at their next frame boundary and wait a moment for their peers.
        tunnels.close_all();
        let closed_by = Instant::now() + TUNNEL_CLOSE_WAIT;
        while tunnels.open() > 0 && Instant::now() < closed_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.stop.send(true);
        for h in self.workers {
            let _ = h.join();
        }
        let snap = self.shared.snapshot.load();
        if let Some(log) = &snap.access_log {
            log.flush();
        }
        // The points of the last seconds, which the collector has not taken yet.
        if let Some(history) = &snap.history {
            history.flush();
        }
        left
    }
}
