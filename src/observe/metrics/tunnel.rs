//! Metrics of WebSocket tunnels, per route:
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_tunnels_open` | gauge | `route` |
//! | `ferrogate_tunnel_bytes_total` | counter | `route`, `direction` (`upstream`: client to upstream, `downstream`) |
//! | `ferrogate_tunnel_closes_total` | counter | `route`, `reason` (see `tunnel::CloseReason`) |
//! | `ferrogate_tunnels_refused_total` | counter | `route`, `reason` (`route_limit`, `ip_limit`) |
//!
//! A tunnel opens and closes once in its life, so its series are looked up by name then;
//! bytes are added when it ends.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteDirection {
    route: Arc<str>,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteReason {
    route: Arc<str>,
    reason: &'static str,
}

/// Cheap to clone; shared by every worker.
#[derive(Debug, Clone, Default)]
pub struct TunnelMetrics {
    open: Family<RouteLabels, Gauge>,
    bytes: Family<RouteDirection, Counter>,
    closes: Family<RouteReason, Counter>,
    refused: Family<RouteReason, Counter>,
}

impl TunnelMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_tunnels_open",
            "WebSocket tunnels open now, by route",
            self.open.clone(),
        );
        registry.register(
            "ferrogate_tunnel_bytes",
            "Bytes relayed by ended WebSocket tunnels, by route and direction",
            self.bytes.clone(),
        );
        registry.register(
            "ferrogate_tunnel_closes",
            "WebSocket tunnels ended, by route and reason",
            self.closes.clone(),
        );
        registry.register(
            "ferrogate_tunnels_refused",
            "WebSocket upgrades refused by a tunnel limit, by route and reason",
            self.refused.clone(),
        );
    }

    pub fn opened(&self, route: &Arc<str>) {
        self.open
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    /// A tunnel of `route` ended for `reason`, having relayed `up` bytes from the client to
    /// the upstream and `down` back.
    pub fn closed(&self, route: &Arc<str>, reason: &'static str, up: u64, down: u64) {
        let labels = RouteLabels {
            route: route.clone(),
        };
        self.open.get_or_create(&labels).dec();
        for (direction, n) in [("upstream", up), ("downstream", down)] {
            self.bytes
                .get_or_create(&RouteDirection {
                    route: route.clone(),
                    direction,
                })
                .inc_by(n);
        }
        self.closes
            .get_or_create(&RouteReason {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    pub fn refused(&self, route: &Arc<str>, reason: &'static str) {
        self.refused
            .get_or_create(&RouteReason {
                route: route.clone(),
                reason,
            })
            .inc();
    }
}
