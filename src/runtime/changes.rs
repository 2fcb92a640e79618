//! Changes of the running configuration as documents: a change through the admin API (the
//! whole next configuration validated as `ferrogate check` would, then recorded as a version
//! and swapped in, or refused with nothing changed), a reload of the file under the rule of
//! `versions.rs`, and the versions read at start.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::cluster::Cluster;
use super::versions::{Opened, Versions};
use super::{GatewayError, Shared};
use crate::config::model::Config;
use crate::config::{self, document, ConfigError, ConfigErrors};
use crate::snapshot::Snapshot;

/// Top-level keys the admin API cannot change: the listeners and the admin listener are
/// bound at start, and the data directory holds the versions themselves.
pub(super) const PROTECTED: &[&str] = &["listeners", "admin", "data_dir", "workers"];

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("configuration changes need a gateway started from a configuration file with an admin listener")]
    Unavailable,
    #[error("the configuration is at version {current}")]
    Stale { current: u64 },
    #[error("the changed configuration is invalid")]
    Invalid(Vec<ConfigError>),
    /// Refused before a configuration was built (no such resource, a conflict, a bad body).
    #[error("{message}")]
    Rejected { status: u16, message: String },
    #[error("{0}")]
    Storage(String),
    /// The store of record (etcd) did not answer: nothing changed.
    #[error("{0}; the running configuration stays and changes are refused until it is back")]
    StoreDown(String),
}

impl Shared {
    /// The configuration versions, when the gateway keeps them.
    pub fn versions(&self) -> Option<MutexGuard<'_, Versions>> {
        self.versions
            .as_ref()
            .map(|v| v.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies `change` to the newest configuration document as one version: if the newest
    /// is `expected` (any when `None`), the result is validated and compiled in full,
    /// recorded (state file, audit log), then swapped in. A refused change changes nothing.
    /// Returns the version running afterwards.
    pub fn change(
        self: &Arc<Self>,
        who: &str,
        source: &str,
        action: &str,
        expected: Option<u64>,
        change: impl FnOnce(&Value) -> Result<Value, ChangeError>,
    ) -> Result<u64, ChangeError> {
        let Some(versions) = &self.versions else {
            return Err(ChangeError::Unavailable);
        };
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut versions = versions.lock().unwrap_or_else(|e| e.into_inner());
        let current = versions.current().ok_or(ChangeError::Unavailable)?;
        if expected.is_some_and(|e| e != current.version) {
            return Err(ChangeError::Stale {
                current: current.version,
            });
        }
        let before = current.doc.clone();
        let Some((next, snap)) = self.next_config(&before, change)? else {
            return Ok(current.version);
        };
        let number = versions
            .push(next, who, source, action, None)
            .map_err(|e| ChangeError::Storage(e.to_string()))?;
        if let Some(admin) = &snap.config.admin {
            versions.set_kept(admin.versions_kept);
        }
        self.metrics.set_config_version(number);
        self.swap(snap)
            .map_err(|e| ChangeError::Storage(e.to_string()))?;
        tracing::info!("configuration version {number} applied ({action} by {who})");
        Ok(number)
    }

    /// A dry run: validates and compiles what `change` makes of the running version as
    /// [`Shared::change`] would, and applies nothing. The version it would replace.
    pub fn check_change(
        &self,
        expected: Option<u64>,
        change: impl FnOnce(&Value) -> Result<Value, ChangeError>,
    ) -> Result<u64, ChangeError> {
        let Some(versions) = &self.versions else {
            return Err(ChangeError::Unavailable);
        };
        let current = versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current()
            .cloned()
            .ok_or(ChangeError::Unavailable)?;
        if expected.is_some_and(|e| e != current.version) {
            return Err(ChangeError::Stale {
                current: current.version,
            });
        }
        self.next_config(&current.doc, change)?;
        Ok(current.version)
    }

    /// The configuration `change` makes of `before`, validated and compiled in full (none
    /// when it changes nothing). Secrets given as fingerprints are restored from `before`;
    /// the keys bound at start must stay as they are.
    pub(super) fn next_config(
        &self,
        before: &Value,
        change: impl FnOnce(&Value) -> Result<Value, ChangeError>,
    ) -> Result<Option<(Value, Arc<Snapshot>)>, ChangeError> {
        let mut next = change(before)?;
        document::restore_secrets(&mut next, before);
        let protected: Vec<ConfigError> = PROTECTED
            .iter()
            .filter(|key| next.get(**key) != before.get(**key))
            .map(|key| ConfigError {
                path: (*key).into(),
                message: "cannot be changed through the admin API; edit the configuration file"
                    .into(),
            })
            .collect();
        if !protected.is_empty() {
            return Err(ChangeError::Invalid(protected));
        }
        if next == *before {
            return Ok(None);
        }
        let base = self.snapshot.load().config.base_dir.clone();
        let config = config::parse(&document::to_yaml(&next), &base)
            .map_err(|ConfigErrors(e)| ChangeError::Invalid(e))?;
        let snap = self.prepare(config).map_err(invalid)?;
        Ok(Some((next, snap)))
    }

    /// A reload with versions: an unchanged file rebuilds the newest version; a changed one
    /// becomes a new version on top.
    pub(super) fn reload_versioned(
        self: &Arc<Self>,
        path: &Path,
        versions: &Mutex<Versions>,
    ) -> Result<(), GatewayError> {
        let text = read(path)?;
        let base = self.snapshot.load().config.base_dir.clone();
        let mut versions = versions.lock().unwrap_or_else(|e| e.into_inner());
        let newest = versions
            .current()
            .map(|v| (v.doc.clone(), v.source.clone()));
        match newest {
            Some((doc, _)) if !versions.file_changed(&text) => {
                let snap = self.prepare(config::parse(&document::to_yaml(&doc), &base)?)?;
                self.swap(snap)
            }
            newest => {
                let snap = self.prepare(config::parse(&text, &base)?)?;
                let doc = document::from_yaml(&text).map_err(one_error)?;
                let number = versions
                    .push(doc, "file", "file", "reload", Some(&text))
                    .map_err(one_error)?;
                if newest.is_some_and(|(_, source)| source != "file") {
                    tracing::warn!(
                        "the configuration file changed: version {number} (the file) replaces \
                         the versions written through the admin API; they stay listed in \
                         GET /config/versions and can be rolled back to"
                    );
                }
                if let Some(admin) = &snap.config.admin {
                    versions.set_kept(admin.versions_kept);
                }
                self.metrics.set_config_version(number);
                self.swap(snap)
            }
        }
    }
}

/// The versions a gateway keeps (none without a file and an admin listener), the
/// configuration to start with, and the etcd side when the configuration lives there.
pub(super) type Opening = (Option<Mutex<Versions>>, Config, Option<Cluster>);

/// The versions of a gateway started from `path` with `config` (the file's), and the
/// configuration to start with: the newest version while the file is the one the versions
/// started from, else the file's, recorded as a new version.
pub(super) fn open_versions(config: Config, path: Option<&Path>) -> Result<Opening, GatewayError> {
    let (Some(path), Some(admin)) = (path, &config.admin) else {
        return Ok((None, config, None));
    };
    let text = read(path)?;
    if let Some(etcd) = &admin.etcd {
        let (etcd, kept) = (etcd.clone(), admin.versions_kept);
        let (versions, config, cluster) = super::cluster::open(config, &text, &etcd, kept)?;
        return Ok((Some(Mutex::new(versions)), config, Some(cluster)));
    }
    let (mut versions, opened) =
        Versions::open(&text, config.data_dir.as_deref(), admin.versions_kept).map_err(|m| {
            one_error(ConfigError {
                path: "data_dir".into(),
                message: m,
            })
        })?;
    let from_state = match opened {
        Opened::State(doc) => match config::parse(&document::to_yaml(&doc), &config.base_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "the newest configuration version of the state file does not load \
                     ({e}); starting from the configuration file"
                );
                None
            }
        },
        Opened::File => None,
    };
    let config = match from_state {
        Some(mut state) => {
            for (new, bound) in state.listeners.iter_mut().zip(&config.listeners) {
                new.address = bound.address;
            }
            tracing::info!(
                "configuration version {} from the state file (the configuration file is \
                 unchanged)",
                versions.current().map_or(0, |v| v.version)
            );
            state
        }
        None => {
            let doc = document::from_yaml(&text).map_err(one_error)?;
            versions
                .push(doc, "file", "file", "start", Some(&text))
                .map_err(one_error)?;
            config
        }
    };
    Ok((Some(Mutex::new(versions)), config, None))
}

pub(super) fn read(path: &Path) -> Result<String, GatewayError> {
    std::fs::read_to_string(path).map_err(|e| {
        one_error(ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })
    })
}

fn one_error(e: ConfigError) -> GatewayError {
    GatewayError::Config(ConfigErrors(vec![e]))
}

/// A configuration that did not compile, as the problems of a change.
fn invalid(e: GatewayError) -> ChangeError {
    match e {
        GatewayError::Config(ConfigErrors(errors)) => ChangeError::Invalid(errors),
        other => ChangeError::Invalid(vec![ConfigError {
            path: String::new(),
            message: other.to_string(),
        }]),
    }
}
