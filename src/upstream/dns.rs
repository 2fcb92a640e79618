//! Targets given by name: A/AAAA and SRV records resolved with hickory-resolver, and the last
//! good set of each name, which outlives snapshots. A failed resolution keeps the last good
//! set; the caller rebuilds the snapshot when a set changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::config::model::{DnsQuery, DnsSettings, DnsTarget, Target};

/// The last good set of every name asked, and when to ask again.
#[derive(Default)]
pub struct DnsTargets {
    sets: Mutex<HashMap<DnsQuery, Entry>>,
}

struct Entry {
    /// Addresses with their weights (SRV weights; 0 when the record gave none).
    targets: Vec<(SocketAddr, u32)>,
    /// Resolve again at this time.
    due: Instant,
    /// The last resolution failed (the set is the last good one).
    stale: bool,
}

/// What one resolution of a name changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// Same addresses as before.
    Same,
    /// Addresses added or removed.
    Changed,
    /// The resolution failed; the last good set stays.
    Failed,
}

impl Refreshed {
    /// The `result` label of `ferrogate_dns_resolutions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refreshed::Same => "same",
            Refreshed::Changed => "changed",
            Refreshed::Failed => "failed",
        }
    }
}

impl DnsTargets {
    /// The targets of a group: those given by address, then the last good set of each
    /// name, without repeats. Names never resolved give nothing.
    pub fn expand(&self, fixed: &[Target], names: &[DnsTarget]) -> Vec<Target> {
        let mut out = fixed.to_vec();
        let sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        for d in names {
            let Some(entry) = sets.get(&d.query) else {
                continue;
            };
            for (address, srv_weight) in &entry.targets {
                if out.iter().any(|t| t.address == *address) {
                    continue;
                }
                let weight = match d.query {
                    DnsQuery::Srv { .. } => (*srv_weight).clamp(1, 10_000),
                    DnsQuery::Host { .. } => d.weight,
                };
                out.push(Target {
                    address: *address,
                    weight,
                    place: d.place.clone(),
                });
            }
        }
        out
    }

    /// Whether `query` has been resolved once (successfully or not).
    pub fn known(&self, query: &DnsQuery) -> bool {
        self.lock().contains_key(query)
    }

    /// When `query` is next due (now when it never was resolved).
    pub fn due(&self, query: &DnsQuery) -> Instant {
        self.lock().get(query).map_or_else(Instant::now, |e| e.due)
    }

    /// Records the outcome of resolving `query`: a new set with its TTL (bounded by the
    /// settings), or a failure, which keeps the last good set and asks again after
    /// `min_ttl`.
    pub fn record(
        &self,
        query: &DnsQuery,
        result: Result<(Vec<(SocketAddr, u32)>, Duration), String>,
        settings: &DnsSettings,
    ) -> Refreshed {
        let mut sets = self.lock();
        match result {
            Ok((mut targets, ttl)) => {
                targets.sort();
                targets.dedup();
                let due = Instant::now() + ttl.clamp(settings.min_ttl, settings.max_ttl);
                let entry = Entry {
                    targets,
                    due,
                    stale: false,
                };
                match sets.insert(query.clone(), entry) {
                    Some(old) if old.targets == sets[query].targets => Refreshed::Same,
                    _ => Refreshed::Changed,
                }
            }
            Err(_) => {
                let due = Instant::now() + settings.min_ttl;
                let entry = sets.entry(query.clone()).or_insert(Entry {
                    targets: Vec::new(),
                    due,
                    stale: true,
                });
                entry.due = due;
                entry.stale = true;
                Refreshed::Failed
            }
        }
    }

    /// Names whose last resolution failed, with the size of the set kept.
    pub fn stale(&self) -> Vec<(DnsQuery, usize)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.stale)
            .map(|(q, e)| (q.clone(), e.targets.len()))
            .collect()
    }

    /// Forgets names no group asks for any more.
    pub fn keep_only(&self, wanted: &[&DnsQuery]) {
        self.lock().retain(|q, _| wanted.contains(&q));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DnsQuery, Entry>> {
        self.sets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A resolver for `settings`: its name servers, or the system's; no cache of its own (the
/// TTL is honoured by [`DnsTargets`]), A and AAAA asked together.
pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| e.to_string())?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| e.to_string())
}

/// Resolves one query: its addresses (with SRV weights) and the shortest TTL of the
/// answer. An answer without addresses is an error, so that it keeps the last good set.
pub async fn resolve(
    resolver: &TokioResolver,
    query: &DnsQuery,
    timeout: Duration,
) -> Result<(Vec<(SocketAddr, u32)>, Duration), String> {
    let work = async {
        match query {
            DnsQuery::Host { name, port } => {
                let found = resolver
                    .lookup_ip(fqdn(name))
                    .await
                    .map_err(|e| e.to_string())?;
                let ttl = found
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let addrs = found.iter().map(|ip| (SocketAddr::new(ip, *port), 0));
                Ok((addrs.collect::<Vec<_>>(), ttl))
            }
            DnsQuery::Srv { name } => {
                let found = resolver
                    .srv_lookup(fqdn(name))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut ttl = found
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let mut out = Vec::new();
                for record in found.answers() {
                    let RData::SRV(srv) = &record.data else {
                        continue;
                    };
                    let host = srv.target.to_ascii();
                    let ips = resolver
                        .lookup_ip(host.as_str())
                        .await
                        .map_err(|e| format!("{host}: {e}"))?;
                    ttl = ttl.min(ips.valid_until().saturating_duration_since(Instant::now()));
                    for ip in ips.iter() {
                        out.push((SocketAddr::new(ip, srv.port), u32::from(srv.weight)));
                    }
                }
                Ok((out, ttl))
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok((addrs, _))) if addrs.is_empty() => Err("no addresses".to_owned()),
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A name as a fully qualified one, so no search domain is tried.
fn fqdn(name: &str) -> String {
    match name.ends_with('.') {
        true => name.to_owned(),
        false => format!("{name}."),
    }
}

/// Resolves, on a thread of its own (callers may be inside a runtime), every query of
/// `upstreams` not resolved before, recording the outcomes; waits at most `timeout`.
pub fn resolve_new(
    table: &DnsTargets,
    queries: Vec<DnsQuery>,
    settings: &DnsSettings,
) -> Vec<(DnsQuery, Refreshed)> {
    let queries: Vec<DnsQuery> = queries.into_iter().filter(|q| !table.known(q)).collect();
    if queries.is_empty() {
        return Vec::new();
    }
    let owned = settings.clone();
    let asked = queries.clone();
    let results = std::thread::Builder::new()
        .name("ferrogate-dns-first".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let resolver = resolver(&owned)?;
                let all = asked.iter().map(|q| resolve(&resolver, q, owned.timeout));
                Ok::<_, String>(futures_util::future::join_all(all).await)
            })
        })
        .map_err(|e| e.to_string())
        .and_then(|h| {
            h.join()
                .unwrap_or_else(|_| Err("resolver thread failed".into()))
        });
    let results = match results {
        Ok(r) => r,
        Err(e) => queries.iter().map(|_| Err(e.clone())).collect(),
    };
    queries
        .into_iter()
        .zip(results)
        .map(|(q, r)| {
            if let Err(e) = &r {
                tracing::warn!(target = %q, error = %e, "cannot resolve an upstream target");
            }
            let outcome = table.record(&q, r, settings);
            (q, outcome)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host() -> DnsQuery {
        DnsQuery::Host {
            name: "api.test".into(),
            port: 80,
        }
    }

    #[test]
    fn a_failure_keeps_the_last_good_set_and_a_change_is_told() {
        let table = DnsTargets::default();
        let s = DnsSettings::default();
        let a: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:80".parse().unwrap();
        let set =
            |v: Vec<SocketAddr>| Ok((v.into_iter().map(|a| (a, 0)).collect(), Duration::ZERO));
        assert_eq!(table.record(&host(), set(vec![a]), &s), Refreshed::Changed);
        assert_eq!(table.record(&host(), set(vec![a]), &s), Refreshed::Same);
        assert_eq!(
            table.record(&host(), Err("timeout".into()), &s),
            Refreshed::Failed
        );
        let names = [DnsTarget {
            query: host(),
            weight: 3,
            place: Default::default(),
        }];
        let targets = table.expand(&[], &names);
        assert_eq!(targets.len(), 1);
        assert_eq!((targets[0].address, targets[0].weight), (a, 3));
        assert_eq!(table.stale(), vec![(host(), 1)]);
        assert_eq!(
            table.record(&host(), set(vec![b, a]), &s),
            Refreshed::Changed
        );
        assert!(table.stale().is_empty());
        assert_eq!(table.expand(&[], &names).len(), 2);
    }

    #[test]
    fn the_ttl_is_bounded_by_the_settings() {
        let table = DnsTargets::default();
        let s = DnsSettings::default();
        let a: SocketAddr = "127.0.0.2:80".parse().unwrap();
        table.record(&host(), Ok((vec![(a, 0)], Duration::ZERO)), &s);
        assert!(table.due(&host()) >= Instant::now() + Duration::from_millis(900));
        table.record(&host(), Ok((vec![(a, 0)], Duration::from_secs(86400))), &s);
        assert!(table.due(&host()) <= Instant::now() + s.max_ttl);
    }
}
