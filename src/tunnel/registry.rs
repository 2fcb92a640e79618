//! The gateway's open tunnels, kept across reloads: how many are open (the shutdown waits
//! for them), the signal that tells them to close, and the open counts per route and per
//! client address that the route limits (`tunnel.max_open`, `tunnel.max_open_per_ip`)
//! are checked against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::config::model::TunnelSettings;
use crate::observe::metrics::TunnelMetrics;

/// Open tunnels of the whole gateway. Shared by every worker and every snapshot.
#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    going_away: watch::Sender<bool>,
    counts: Mutex<Counts>,
    pub metrics: TunnelMetrics,
}

#[derive(Debug, Default)]
struct Counts {
    routes: HashMap<Arc<str>, usize>,
    ips: HashMap<(Arc<str>, IpAddr), usize>,
}

/// Why a tunnel was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_open` tunnels are open on the route.
    Route,
    /// `max_open_per_ip` tunnels of this client are open on the route.
    Ip,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Route => "route_limit",
            Refused::Ip => "ip_limit",
        }
    }
}

/// A place in a route's tunnel limits, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    tunnels: Arc<Tunnels>,
    route: Arc<str>,
    ip: Option<IpAddr>,
}

/// One running tunnel in the open count, until dropped.
#[derive(Debug)]
pub struct Open {
    tunnels: Arc<Tunnels>,
}

impl Tunnels {
    pub fn new(metrics: TunnelMetrics) -> Arc<Tunnels> {
        Arc::new(Tunnels {
            open: AtomicUsize::new(0),
            going_away: watch::channel(false).0,
            counts: Mutex::default(),
            metrics,
        })
    }

    /// A place for a tunnel of `client` on `route`, when the route's limits leave one;
    /// `None` (no permit needed) when the route sets no limit.
    pub fn admit(
        self: &Arc<Self>,
        route: &Arc<str>,
        client: IpAddr,
        limits: &TunnelSettings,
    ) -> Result<Option<Permit>, Refused> {
        if limits.max_open.is_none() && limits.max_open_per_ip.is_none() {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let on_route = counts.routes.get(route).copied().unwrap_or(0);
        if limits.max_open.is_some_and(|max| on_route >= max) {
            return Err(Refused::Route);
        }
        let ip = limits.max_open_per_ip.map(|_| client);
        if let Some(max) = limits.max_open_per_ip {
            let key = (route.clone(), client);
            let of_ip = counts.ips.entry(key).or_insert(0);
            if *of_ip >= max {
                return Err(Refused::Ip);
            }
            *of_ip += 1;
        }
        *counts.routes.entry(route.clone()).or_insert(0) += 1;
        Ok(Some(Permit {
            tunnels: self.clone(),
            route: route.clone(),
            ip,
        }))
    }

    /// Counts a tunnel that starts relaying.
    pub fn opened(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open {
            tunnels: self.clone(),
        }
    }

    /// Tunnels relaying now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Changes to `true` when every tunnel must close (the shutdown's drain time is over).
    pub fn going_away(&self) -> watch::Receiver<bool> {
        self.going_away.subscribe()
    }

    /// Tells every tunnel, and every tunnel opened from now on, to close.
    pub fn close_all(&self) {
        self.going_away.send_replace(true);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .tunnels
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.routes.get_mut(&self.route) {
            *n -= 1;
            if *n == 0 {
                counts.routes.remove(&self.route);
            }
        }
        if let Some(ip) = self.ip {
            let key = (self.route.clone(), ip);
            if let Some(n) = counts.ips.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.ips.remove(&key);
                }
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.tunnels.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_route_and_per_client_and_free_on_drop() {
        let t = Tunnels::new(TunnelMetrics::default());
        let route: Arc<str> = Arc::from("ws");
        let limits = TunnelSettings {
            max_open: Some(3),
            max_open_per_ip: Some(2),
            ..TunnelSettings::default()
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = t.admit(&route, a, &limits).unwrap();
        let _a2 = t.admit(&route, a, &limits).unwrap();
        assert_eq!(t.admit(&route, a, &limits).unwrap_err(), Refused::Ip);
        let _b1 = t.admit(&route, b, &limits).unwrap();
        assert_eq!(t.admit(&route, b, &limits).unwrap_err(), Refused::Route);
        drop(a1);
        assert!(t.admit(&route, a, &limits).unwrap().is_some());
        let free = TunnelSettings::default();
        assert!(t.admit(&route, a, &free).unwrap().is_none());
    }
}
