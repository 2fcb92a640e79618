//! Reload triggers: a change of the config file (watched through its directory, so editors
//! that replace the file are seen) and SIGHUP in the binary. Reloads run on their own thread,
//! never on a worker, and bursts of events are coalesced.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use crate::runtime::Shared;

/// Events closer together than this make one reload.
const SETTLE: Duration = Duration::from_millis(100);

/// Watches the config file while it lives.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl Watcher {
    pub fn start(path: &Path, shared: Arc<Shared>) -> Option<Watcher> {
        let file: PathBuf = path.file_name()?.into();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, rx) = mpsc::channel::<()>();
        let mut inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                let ours = ev
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(file.as_os_str()));
                if ours && !ev.kind.is_access() {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(|e| tracing::warn!("cannot watch the config file: {e}"))
        .ok()?;
        inner
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| tracing::warn!("cannot watch {}: {e}", dir.display()))
            .ok()?;
        std::thread::Builder::new()
            .name("ferrogate-reload".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Let the writer finish, then take every queued event as one.
                    std::thread::sleep(SETTLE);
                    while rx.try_recv().is_ok() {}
                    let _ = shared.reload();
                }
            })
            .ok()?;
        Some(Watcher { _inner: inner })
    }
}
