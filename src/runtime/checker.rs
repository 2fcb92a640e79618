//! Runs the active health checks of the current snapshot on a thread of its own, so probes
//! never compete with request handling for a worker, and restarts them on every reload.
//! Target state lives in `TargetHealth` (kept across reloads), so a restart loses nothing.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::upstream::probe::{self, ProbeSettings};

pub struct Checker {
    runtime: tokio::runtime::Handle,
    /// Stops the probes of the previous snapshot.
    current: Mutex<Option<watch::Sender<bool>>>,
    /// Ends the thread when the checker is dropped.
    _quit: watch::Sender<bool>,
}

impl Checker {
    pub fn start() -> std::io::Result<Checker> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let runtime = rt.handle().clone();
        let (quit, mut quit_rx) = watch::channel(false);
        std::thread::Builder::new()
            .name("ferrogate-health".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = quit_rx.wait_for(|q| *q).await;
                });
            })?;
        Ok(Checker {
            runtime,
            current: Mutex::new(None),
            _quit: quit,
        })
    }

    /// Replaces the running probes with those of `snap`.
    pub fn apply(&self, snap: &Snapshot) {
        let (stop, stop_rx) = watch::channel(false);
        for (group, u) in snap.upstreams.iter().zip(&snap.config.upstreams) {
            let Some(check) = &u.active_check else {
                continue;
            };
            let targets: Vec<(SocketAddr, usize)> = group
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.address, i))
                .collect();
            let settings = ProbeSettings {
                kind: check.kind.clone(),
                interval: check.interval,
                timeout: check.timeout,
                tls: group.client.tls.clone(),
            };
            self.runtime.spawn(probe::run(
                targets,
                group.health.clone(),
                settings,
                stop_rx.clone(),
            ));
        }
        let previous = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(stop);
        if let Some(p) = previous {
            let _ = p.send(true);
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(p) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = p.send(true);
        }
        let _ = self._quit.send(true);
    }
}
