//! Configuration versions: every configuration applied (from the file or through the admin
//! API) as a numbered document, the last `admin.versions_kept` of them, their audit trail,
//! and their persistence in the data directory.
//!
//! The rule between the file and the state file (`data_dir/config-state.json`): the state
//! file records the SHA-256 of the configuration file its versions started from. While the
//! file is unchanged, the newest version of the state file wins, at start and on reload, so
//! changes made through the API survive both. When the file changed, its content becomes a
//! new version on top of the others (the API versions stay listed and can be rolled back
//! to).

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{document, ConfigError};
use crate::observe::access_log::rfc3339;

/// Audit entries kept in memory for `GET /config/audit`.
const AUDIT_KEPT: usize = 1000;

/// One applied configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    /// When it was applied (RFC 3339).
    pub time: String,
    /// The admin token's name, or `file` for the configuration file.
    pub who: String,
    /// `file`, `api` or `rollback`.
    pub source: String,
    /// The configuration, with the file's key names.
    pub doc: Value,
}

/// One applied change, as the audit log records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: String,
    pub who: String,
    /// What was asked, such as `PUT /config/routes/orders`.
    pub action: String,
    pub version: u64,
    /// Key paths whose values changed (`upstreams.api`, `routes[3]`).
    pub changed: Vec<String>,
}

/// The state file's content.
#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    /// SHA-256 (hex) of the configuration file the versions started from.
    base_hash: String,
    versions: Vec<Version>,
}

/// Versions in memory, and where they are kept on disk.
pub struct Versions {
    base_hash: String,
    versions: VecDeque<Version>,
    kept: usize,
    audit: VecDeque<AuditEntry>,
    state_file: Option<PathBuf>,
    audit_file: Option<PathBuf>,
}

/// What [`Versions::open`] found.
pub(super) enum Opened {
    /// The file is what the versions started from: the newest version runs (its document).
    State(Value),
    /// The file is new or changed: its content runs, as a new version.
    File,
}

impl Versions {
    /// Reads the state of `data_dir` (if any) for a configuration file with `text`.
    pub(super) fn open(
        text: &str,
        data_dir: Option<&Path>,
        kept: usize,
    ) -> Result<(Versions, Opened), String> {
        let state_file = data_dir.map(|d| d.join("config-state.json"));
        let audit_file = data_dir.map(|d| d.join("config-audit.jsonl"));
        if let Some(d) = data_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create data_dir {}: {e}", d.display()))?;
        }
        let state: StateFile = match &state_file {
            Some(p) if p.exists() => {
                let bytes =
                    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not a state file: {e}", p.display()))?
            }
            _ => StateFile::default(),
        };
        let audit = match &audit_file {
            Some(p) => read_audit(p),
            None => VecDeque::new(),
        };
        let versions = Versions {
            base_hash: state.base_hash,
            versions: state.versions.into(),
            kept: kept.max(1),
            audit,
            state_file,
            audit_file,
        };
        let opened = match versions.versions.back() {
            Some(v) if versions.base_hash == document::text_hash(text) => {
                Opened::State(v.doc.clone())
            }
            _ => Opened::File,
        };
        Ok((versions, opened))
    }

    /// Versions of a configuration kept in etcd: numbered by etcd's revisions, in memory
    /// only (etcd holds the configuration), with the audit log in `data_dir` when set.
    pub(super) fn remote(data_dir: Option<&Path>, kept: usize) -> Result<Versions, String> {
        if let Some(d) = data_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create data_dir {}: {e}", d.display()))?;
        }
        let audit_file = data_dir.map(|d| d.join("config-audit.jsonl"));
        Ok(Versions {
            base_hash: String::new(),
            versions: VecDeque::new(),
            kept: kept.max(1),
            audit: audit_file.as_deref().map(read_audit).unwrap_or_default(),
            state_file: None,
            audit_file,
        })
    }

    /// The newest version, if any.
    pub fn current(&self) -> Option<&Version> {
        self.versions.back()
    }

    pub fn list(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter()
    }

    pub fn get(&self, n: u64) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == n)
    }

    pub fn audit(&self) -> impl Iterator<Item = &AuditEntry> {
        self.audit.iter()
    }

    /// Whether the configuration file's text is not the one the versions started from.
    pub(super) fn file_changed(&self, text: &str) -> bool {
        self.base_hash != document::text_hash(text)
    }

    pub(super) fn set_kept(&mut self, kept: usize) {
        self.kept = kept.max(1);
    }

    /// Records `doc` as the next version and persists the state (before it runs: a
    /// configuration the state file does not hold never runs). `file_text` is given when
    /// the version comes from the configuration file.
    pub(super) fn push(
        &mut self,
        doc: Value,
        who: &str,
        source: &str,
        action: &str,
        file_text: Option<&str>,
    ) -> Result<u64, ConfigError> {
        let number = self.current().map_or(1, |v| v.version + 1);
        self.push_as(number, doc, who, source, action, file_text)
    }

    /// Records `doc` as version `number` (above the newest), as [`Versions::push`] does.
    pub(super) fn push_as(
        &mut self,
        number: u64,
        doc: Value,
        who: &str,
        source: &str,
        action: &str,
        file_text: Option<&str>,
    ) -> Result<u64, ConfigError> {
        debug_assert!(
            self.current().is_none_or(|v| v.version < number),
            "versions only grow"
        );
        let before = self.current().map(|v| v.doc.clone()).unwrap_or(Value::Null);
        let time = rfc3339(SystemTime::now());
        let entry = AuditEntry {
            time: time.clone(),
            who: who.into(),
            action: action.into(),
            version: number,
            changed: document::changed_paths(&before, &doc),
        };
        let mut next = self.versions.clone();
        next.push_back(Version {
            version: number,
            time,
            who: who.into(),
            source: source.into(),
            doc,
        });
        while next.len() > self.kept {
            next.pop_front();
        }
        let base_hash = file_text.map_or_else(|| self.base_hash.clone(), document::text_hash);
        self.persist(&base_hash, &next)?;
        self.versions = next;
        self.base_hash = base_hash;
        self.record(entry);
        Ok(number)
    }

    fn persist(&self, base_hash: &str, versions: &VecDeque<Version>) -> Result<(), ConfigError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let state = StateFile {
            base_hash: base_hash.into(),
            versions: versions.iter().cloned().collect(),
        };
        let failed = |e: std::io::Error| ConfigError {
            path: String::new(),
            message: format!("cannot write {}: {e}", path.display()),
        };
        let bytes = serde_json::to_vec(&state).map_err(|e| failed(e.into()))?;
        // Written aside, synced and renamed over: a crash leaves the old state or the new.
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(failed)
    }

    /// Keeps an audit entry in memory and appends it to the audit file (or the log).
    fn record(&mut self, entry: AuditEntry) {
        let line = serde_json::to_string(&entry).unwrap_or_default();
        match &self.audit_file {
            Some(p) => {
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(e) = written {
                    tracing::error!("cannot append to {}: {e}; audit: {line}", p.display());
                }
            }
            None => tracing::info!(target: "ferrogate::audit", "{line}"),
        }
        self.audit.push_back(entry);
        while self.audit.len() > AUDIT_KEPT {
            self.audit.pop_front();
        }
    }
}

/// The last entries of an audit file; lines that do not read are skipped.
fn read_audit(path: &Path) -> VecDeque<AuditEntry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return VecDeque::new();
    };
    let mut out: VecDeque<AuditEntry> = VecDeque::new();
    for line in text.lines() {
        if let Ok(e) = serde_json::from_str(line) {
            out.push_back(e);
            if out.len() > AUDIT_KEPT {
                out.pop_front();
            }
        }
    }
    out
}
