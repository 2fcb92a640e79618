//! Resolves the upstream targets given by name again when their TTL ends, on a thread of its
//! own, and rebuilds the snapshot when a set of addresses changed: new targets get traffic,
//! removed ones drain as on a reload (requests in flight finish on the snapshot they began
//! with). A failed resolution keeps the last good set, says so in the log and in
//! `ferrogate_dns_stale`, and is tried again after `dns.min_ttl`.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::Shared;
use crate::config::model::{Config, DnsQuery, DnsSettings};
use crate::upstream::dns::{self, Refreshed};

/// The longest sleep between two looks at the configuration, so a reload's new names wait
/// no longer than this for their refresh schedule.
const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// Every name the configuration's groups ask for.
pub(super) fn queries(config: &Config) -> Vec<DnsQuery> {
    let mut out: Vec<DnsQuery> = Vec::new();
    for d in config.upstreams.iter().flat_map(|u| &u.dns_targets) {
        if !out.contains(&d.query) {
            out.push(d.query.clone());
        }
    }
    out
}

/// Starts the refresher; it ends when `shared` is dropped.
pub(super) fn spawn(shared: Weak<Shared>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ferrogate-dns".into())
        .spawn(move || rt.block_on(run(shared)))?;
    Ok(())
}

async fn run(weak: Weak<Shared>) {
    let mut resolver: Option<(DnsSettings, hickory_resolver::TokioResolver)> = None;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let config = &shared.snapshot.load_full().config;
        let wanted = queries(config);
        let now = Instant::now();
        let due: Vec<DnsQuery> = wanted
            .iter()
            .filter(|q| shared.kept.dns.due(q) <= now)
            .cloned()
            .collect();
        if !due.is_empty() {
            let settings = &config.dns;
            if resolver.as_ref().is_none_or(|(s, _)| s != settings) {
                resolver = match dns::resolver(settings) {
                    Ok(r) => Some((settings.clone(), r)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot set up the DNS resolver");
                        None
                    }
                };
            }
            let mut changed = false;
            for q in &due {
                let result = match &resolver {
                    Some((_, r)) => dns::resolve(r, q, settings.timeout).await,
                    None => Err("no resolver".to_owned()),
                };
                let text = q.to_string();
                let outcome = match result {
                    Err(e) => {
                        tracing::warn!(
                            target = %text,
                            error = %e,
                            "cannot resolve an upstream target; its last good addresses stay in use"
                        );
                        shared.kept.dns.record(q, Err(e), settings)
                    }
                    Ok(found) => shared.kept.dns.record(q, Ok(found), settings),
                };
                if outcome == Refreshed::Changed {
                    tracing::info!(target = %text, "upstream target addresses changed");
                    changed = true;
                }
                shared.metrics.dns_resolved(&text, outcome.as_str());
            }
            if changed {
                shared.rebuild_for_dns();
            }
        }
        let next = wanted
            .iter()
            .map(|q| shared.kept.dns.due(q))
            .min()
            .map_or(LOOK_AGAIN, |due| {
                due.saturating_duration_since(Instant::now())
                    .min(LOOK_AGAIN)
            });
        drop(shared);
        tokio::time::sleep(next.max(Duration::from_millis(10))).await;
    }
}
