//! Runs the alert rules of the running configuration on a thread of its own
//! (`ferrogate-alerts`), started when a configuration first has an `alerts` section; the
//! notifications are sent from the same thread's runtime.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Shared;
use crate::observe::alerts::{Alerting, Upstreams};
use crate::snapshot::Snapshot;

/// How long the thread sleeps while the running configuration has no rules.
const IDLE: Duration = Duration::from_secs(1);

/// Starts the evaluation thread; it ends when `shared` is dropped.
pub(super) fn spawn(shared: Weak<Shared>, alerting: Arc<Alerting>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ferrogate-alerts".into())
        .spawn(move || rt.block_on(run(shared, alerting)))?;
    Ok(())
}

async fn run(weak: Weak<Shared>, alerting: Arc<Alerting>) {
    let runtime = tokio::runtime::Handle::current();
    loop {
        let every = {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let snap = shared.snapshot.load_full();
            match &snap.config.alerts {
                Some(settings) => {
                    let now = crate::timer::unix_millis();
                    let groups = Groups(&snap);
                    let history = snap.history.as_deref();
                    alerting.evaluate(settings, history, &groups, now, &runtime);
                    settings.evaluate_every
                }
                None => IDLE,
            }
        };
        tokio::time::sleep(every).await;
    }
}

/// Every target of `snap`'s groups by name (`IP:PORT`), and whether it may take requests
/// now, for the history.
pub(super) fn target_health(snap: &Snapshot) -> Vec<(Arc<str>, bool)> {
    let now = Instant::now();
    snap.upstreams
        .iter()
        .flat_map(|g| {
            g.targets
                .iter()
                .enumerate()
                .map(move |(i, t)| (t.label.clone(), g.health.available(i, now)))
        })
        .collect()
}

/// The upstream groups of one snapshot, as the rules read them.
struct Groups<'a>(&'a Snapshot);

impl Upstreams for Groups<'_> {
    fn targets(&self, name: &str) -> Vec<Arc<str>> {
        self.0
            .upstreams
            .iter()
            .filter(|g| &*g.name == name)
            .flat_map(|g| g.targets.iter().map(|t| t.label.clone()))
            .collect()
    }

    fn healthy(&self, name: &str) -> Option<usize> {
        let group = self.0.upstreams.iter().find(|g| &*g.name == name)?;
        let now = Instant::now();
        Some(
            (0..group.targets.len())
                .filter(|i| group.health.available(*i, now))
                .count(),
        )
    }
}
