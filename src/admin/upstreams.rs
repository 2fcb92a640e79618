//! `/upstreams` on the admin listener: target state as JSON, and draining a target by hand
//! (`POST /upstreams/{group}/targets/{address}/drain`, undone by `.../ready`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use crate::observe::access_log::write_json_str;
use crate::observe::metrics::TargetState;
use crate::snapshot::Snapshot;
use crate::upstream::health::CircuitState;

/// Every group and target with its health, ejection, circuit and draining state, and the
/// requests in flight to it.
pub fn json(snap: &Snapshot) -> Vec<u8> {
    let now = Instant::now();
    let mut out = b"{\"upstreams\":[".to_vec();
    for (gi, group) in snap.upstreams.iter().enumerate() {
        if gi > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_json_str(&mut out, &group.name);
        out.extend_from_slice(b",\"targets\":[");
        for (ti, target) in group.targets.iter().enumerate() {
            if ti > 0 {
                out.push(b',');
            }
            let Some(s) = group.health.snapshot(ti, now) else {
                continue;
            };
            let _ = write!(
                out,
                "{{\"address\":\"{}\",\"available\":{},\"healthy\":{},\"ejected_for_ms\":{},\
                 \"ejections\":{},\"circuit\":\"{}\",\"draining\":{},\"consecutive_failures\":{},\"in_flight\":{}}}",
                target.address,
                s.available,
                s.active_healthy,
                s.ejected_until.map_or(0, |d| d.as_millis()),
                s.ejections_total,
                s.circuit.as_str(),
                s.draining,
                s.consecutive_failures,
                group.balancer.in_flight(ti),
            );
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// Sets the metrics gauges of every target from its state now.
pub fn refresh_metrics(snap: &Snapshot) {
    let now = Instant::now();
    for group in &snap.upstreams {
        for (ti, target) in group.targets.iter().enumerate() {
            if let Some(s) = group.health.snapshot(ti, now) {
                snap.resilience.set_target(
                    &group.name,
                    &target.label,
                    &TargetState {
                        healthy: s.active_healthy,
                        ejected: s.ejected_until.is_some(),
                        circuit_open: s.circuit != CircuitState::Closed,
                        draining: s.draining,
                        ejections: s.ejections_total,
                    },
                );
            }
        }
    }
}

/// Drains (or readies) the target `address` of `group`, both percent-decoded from the
/// path; `None` when they name no configured target.
pub fn set_draining(snap: &Snapshot, group: &str, address: &str, draining: bool) -> Option<bool> {
    let address: SocketAddr = address.parse().ok()?;
    let g = snap.upstreams.iter().find(|g| &*g.name == group)?;
    let index = g.targets.iter().position(|t| t.address == address)?;
    g.health.set_draining(index, draining);
    Some(draining)
}
