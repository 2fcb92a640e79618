//! One-thread runtimes for background clients (Redis connections, identity-provider
//! fetches), kept off the worker runtimes so that their wake-ups never delay requests.

use std::io;
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// Starts a current-thread runtime on its own named thread; it runs until the process ends.
pub fn start(name: &str) -> io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// A background runtime started on first use, or none at all (`ferrogate check`).
pub struct Background {
    name: &'static str,
    online: bool,
    handle: OnceLock<Handle>,
}

impl Background {
    pub fn new(name: &'static str) -> Background {
        Background {
            name,
            online: true,
            handle: OnceLock::new(),
        }
    }

    /// Never starts anything: configs are compiled but nothing is fetched.
    pub fn offline() -> Background {
        Background {
            online: false,
            ..Background::new("offline")
        }
    }

    /// The runtime's handle, starting it on first call; `None` when offline.
    pub fn handle(&self) -> io::Result<Option<Handle>> {
        if !self.online {
            return Ok(None);
        }
        if let Some(h) = self.handle.get() {
            return Ok(Some(h.clone()));
        }
        let started = start(self.name)?;
        Ok(Some(self.handle.get_or_init(|| started).clone()))
    }
}
