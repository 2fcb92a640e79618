//! The configuration of several instances kept in etcd (`admin.etcd`): one key holds the
//! shared document, each instance adds its own keys (`listeners`, `admin`, `data_dir`,
//! `workers`) from its file. The file seeds the key when it is absent; every instance
//! watches the key and applies each revision through the same validation as a change (a
//! revision that does not load is refused and the running one stays); changes through the
//! admin API write the key under compare-and-swap on its `mod_revision`, which is the
//! version every instance reports. Without etcd an instance keeps serving what it runs,
//! refuses changes, and reads the key again when etcd answers.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::changes::{ChangeError, PROTECTED};
use super::etcd::{Entry, Etcd, EtcdError, Event, Messages, Swap};
use super::versions::Versions;
use super::{GatewayError, Shared};
use crate::config::model::{self, Config};
use crate::config::{self, document, ConfigError, ConfigErrors};
use crate::observe::access_log::rfc3339;
use crate::snapshot::Snapshot;

/// First wait before reconnecting to etcd; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A watch quiet for this long is checked with a read (a hung member sends nothing).
const QUIET: Duration = Duration::from_secs(5);

/// The etcd side of a gateway whose configuration lives in etcd.
pub(super) struct Cluster {
    /// The client of changes through the admin API (on the admin thread).
    etcd: Etcd,
    settings: model::Etcd,
    /// This instance's own keys, from its file.
    local: Mutex<Map<String, Value>>,
}

/// The document of the key and who wrote it.
struct Record {
    /// The shared keys only.
    config: Value,
    who: String,
    source: String,
    action: String,
}

/// The versions and configuration of a gateway started with `admin.etcd`: the key's
/// document when etcd answers and it loads (the file seeds an absent key), else the file's
/// configuration until the watch brings a revision that loads.
pub(super) fn open(
    config: Config,
    text: &str,
    settings: &model::Etcd,
    kept: usize,
) -> Result<(Versions, Config, Cluster), GatewayError> {
    let file_doc = document::from_yaml(text).map_err(one_error)?;
    let (local, _) = split(&file_doc);
    let mut versions = Versions::remote(config.data_dir.as_deref(), kept).map_err(|m| {
        one_error(ConfigError {
            path: "data_dir".into(),
            message: m,
        })
    })?;
    let cluster = Cluster {
        etcd: Etcd::new(settings),
        settings: settings.clone(),
        local: Mutex::new(local),
    };
    let seeded = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
            rt.block_on(seed(&cluster.etcd, &file_doc))
        })
        .join()
        .unwrap_or_else(|_| Err(EtcdError::Unreachable("the seeding thread failed".into())))
    });
    let entry = match seeded {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(
                "{e}: serving the configuration file until etcd answers at {}",
                settings.endpoints.join(", ")
            );
            return Ok((versions, config, cluster));
        }
    };
    let loaded = record_of(&entry.value).and_then(|r| {
        let doc = cluster.merged(&r.config);
        let c = config::parse(&document::to_yaml(&doc), &config.base_dir)?;
        Ok((r, doc, c))
    });
    match loaded {
        Ok((r, doc, mut c)) => {
            for (new, bound) in c.listeners.iter_mut().zip(&config.listeners) {
                new.address = bound.address;
            }
            versions
                .push_as(entry.mod_revision, doc, &r.who, &r.source, &r.action, None)
                .map_err(one_error)?;
            tracing::info!(
                "configuration version {} from etcd key {}",
                entry.mod_revision,
                settings.key
            );
            Ok((versions, c, cluster))
        }
        Err(e) => {
            tracing::error!(
                "etcd revision {} of {} does not load; serving the configuration file until \
                 a revision that loads:\n{e}",
                entry.mod_revision,
                settings.key
            );
            Ok((versions, config, cluster))
        }
    }
}

/// Reads the key, writing `file_doc` there first when it is absent.
async fn seed(etcd: &Etcd, file_doc: &Value) -> Result<Entry, EtcdError> {
    if let Some(entry) = etcd.read().await?.entry {
        return Ok(entry);
    }
    let value = record_bytes(file_doc, "file", "file", "seed");
    match etcd.swap(0, &value).await? {
        Swap::Done(mod_revision) => {
            tracing::info!("etcd key seeded from the configuration file");
            Ok(Entry {
                value,
                mod_revision,
            })
        }
        // Another instance seeded it first.
        Swap::Conflict(_) => etcd
            .read()
            .await?
            .entry
            .ok_or_else(|| EtcdError::Answer("the key vanished after it was seeded".into())),
    }
}

/// Starts the `ferrogate-etcd` thread, which follows the key for as long as the gateway
/// lives.
pub(super) fn spawn(shared: &Arc<Shared>) -> std::io::Result<()> {
    let Some(cluster) = &shared.cluster else {
        return Ok(());
    };
    let etcd = Etcd::new(&cluster.settings);
    let weak = Arc::downgrade(shared);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ferrogate-etcd".into())
        .spawn(move || rt.block_on(follow_always(weak, etcd)))?;
    Ok(())
}

/// Follows the key, reconnecting with backoff; ends with the gateway.
async fn follow_always(shared: Weak<Shared>, etcd: Etcd) {
    let mut backoff = MIN_BACKOFF;
    let mut down = false;
    while shared.strong_count() > 0 {
        match follow(&shared, &etcd, &mut backoff, &mut down).await {
            Ok(()) => return,
            Err(e) => {
                if !down {
                    tracing::warn!(
                        "{e}; the running configuration stays, changes are refused, \
                         reconnecting"
                    );
                    down = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads the key (catching up with what changed meanwhile), then watches it from the next
/// revision. Ends `Ok` when the gateway is gone, with an error when etcd is.
async fn follow(
    shared: &Weak<Shared>,
    etcd: &Etcd,
    backoff: &mut Duration,
    down: &mut bool,
) -> Result<(), EtcdError> {
    let read = etcd.read().await?;
    if std::mem::take(down) {
        tracing::info!("etcd answers again");
    }
    *backoff = MIN_BACKOFF;
    let mut entry = read.entry;
    if entry.is_none() {
        // Started while etcd was unreachable: the start's rule applies now.
        if let Some(file_doc) = unversioned_file(shared) {
            entry = Some(seed(etcd, &file_doc).await?);
        }
    }
    if !apply(shared, entry.as_ref()) {
        return Ok(());
    }
    let mut watch = etcd.watch(read.revision + 1).await?;
    let mut messages = Messages::default();
    loop {
        let chunk = match tokio::time::timeout(QUIET, watch.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Err(EtcdError::Unreachable("the watch ended".into())),
            Ok(Err(e)) => return Err(EtcdError::Unreachable(e.to_string())),
            Err(_) => {
                let read = etcd.read().await?;
                if !apply(shared, read.entry.as_ref()) {
                    return Ok(());
                }
                continue;
            }
        };
        for event in messages.take(&chunk)? {
            let entry = match event {
                Event::Put(entry) => Some(entry),
                Event::Delete => {
                    tracing::warn!(
                        "the etcd configuration key was deleted; the running configuration stays"
                    );
                    None
                }
            };
            if !apply(shared, entry.as_ref()) {
                return Ok(());
            }
        }
    }
}

/// The file's document of a gateway that runs no version yet (it started without etcd).
fn unversioned_file(shared: &Weak<Shared>) -> Option<Value> {
    let shared = shared.upgrade()?;
    if shared.versions()?.current().is_some() {
        return None;
    }
    let text = super::changes::read(shared.config_path.as_deref()?).ok()?;
    document::from_yaml(&text).ok()
}

/// Applies a revision of the key newer than the running one; false when the gateway is
/// gone or shutting down.
fn apply(shared: &Weak<Shared>, entry: Option<&Entry>) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    if shared.is_shutting_down() {
        return false;
    }
    if let Some(entry) = entry {
        shared.apply_revision(entry);
    }
    true
}

impl Cluster {
    /// The shared keys of `shared_doc` with this instance's own keys.
    fn merged(&self, shared_doc: &Value) -> Value {
        let mut doc = shared_doc.as_object().cloned().unwrap_or_default();
        doc.retain(|k, _| !PROTECTED.contains(&k.as_str()));
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        doc.extend(local.iter().map(|(k, v)| (k.clone(), v.clone())));
        Value::Object(doc)
    }
}

impl Shared {
    /// Applies a revision of the etcd key newer than the running one, or refuses it (logged,
    /// counted as a failed reload) and keeps the running one.
    fn apply_revision(self: &Arc<Self>, entry: &Entry) {
        let (Some(cluster), Some(versions)) = (&self.cluster, &self.versions) else {
            return;
        };
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut versions = versions.lock().unwrap_or_else(|e| e.into_inner());
        if versions
            .current()
            .is_some_and(|v| v.version >= entry.mod_revision)
        {
            return;
        }
        let base = self.snapshot.load().config.base_dir.clone();
        let built = record_of(&entry.value).and_then(|r| {
            let doc = cluster.merged(&r.config);
            let snap = self
                .prepare(config::parse(&document::to_yaml(&doc), &base)?)
                .map_err(|e| match e {
                    GatewayError::Config(errors) => errors,
                    other => ConfigErrors(vec![ConfigError {
                        path: String::new(),
                        message: other.to_string(),
                    }]),
                })?;
            Ok((r, doc, snap))
        });
        match built {
            Ok((r, doc, snap)) => {
                self.metrics.reload(true);
                self.commit(&mut versions, entry.mod_revision, doc, &r, snap);
            }
            Err(e) => {
                self.metrics.reload(false);
                tracing::error!(
                    "etcd revision {} refused, the running configuration stays:\n{e}",
                    entry.mod_revision
                );
            }
        }
    }

    /// Records and swaps in revision `revision` unless a newer one runs already.
    fn commit(
        self: &Arc<Self>,
        versions: &mut Versions,
        revision: u64,
        doc: Value,
        r: &Record,
        snap: Arc<Snapshot>,
    ) {
        if versions.current().is_some_and(|v| v.version >= revision) {
            return;
        }
        if let Err(e) = versions.push_as(revision, doc, &r.who, &r.source, &r.action, None) {
            tracing::error!("cannot record configuration version {revision}: {e}");
        }
        if let Some(admin) = &snap.config.admin {
            versions.set_kept(admin.versions_kept);
        }
        self.metrics.set_config_version(revision);
        match self.swap(snap) {
            Ok(()) => tracing::info!(
                "configuration version {revision} applied ({} by {})",
                r.action,
                r.who
            ),
            Err(e) => tracing::error!("configuration version {revision}: {e}"),
        }
    }

    /// A change through the admin API with the configuration in etcd: made to the key's
    /// document, validated in full, written under compare-and-swap on the key's revision
    /// (412 when another write came first), then applied here at once.
    pub async fn change_in_etcd(
        self: &Arc<Self>,
        who: &str,
        source: &str,
        action: &str,
        expected: Option<u64>,
        change: impl FnOnce(&Value) -> Result<Value, ChangeError>,
    ) -> Result<u64, ChangeError> {
        let Some(cluster) = &self.cluster else {
            return Err(ChangeError::Unavailable);
        };
        let down = |e: EtcdError| ChangeError::StoreDown(e.to_string());
        let entry = cluster.etcd.read().await.map_err(down)?.entry;
        let revision = entry.as_ref().map_or(0, |e| e.mod_revision);
        if expected.is_some_and(|e| e != revision) {
            return Err(ChangeError::Stale { current: revision });
        }
        let shared_doc = match &entry {
            Some(e) => {
                record_of(&e.value)
                    .map_err(|ConfigErrors(e)| ChangeError::Invalid(e))?
                    .config
            }
            // Deleted by hand: the change starts from the running configuration.
            None => self
                .versions()
                .and_then(|v| v.current().map(|c| c.doc.clone()))
                .ok_or(ChangeError::Unavailable)?,
        };
        let before = cluster.merged(&shared_doc);
        let prepared = {
            let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.next_config(&before, change)?
        };
        let Some((next, snap)) = prepared else {
            return Ok(revision);
        };
        let value = record_bytes(&next, who, source, action);
        let revision = match cluster.etcd.swap(revision, &value).await.map_err(down)? {
            Swap::Done(n) => n,
            Swap::Conflict(current) => return Err(ChangeError::Stale { current }),
        };
        let record = Record {
            config: Value::Null,
            who: who.into(),
            source: source.into(),
            action: action.into(),
        };
        if let Some(versions) = &self.versions {
            let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut versions = versions.lock().unwrap_or_else(|e| e.into_inner());
            self.commit(&mut versions, revision, next, &record, snap);
        }
        Ok(revision)
    }

    /// A reload with the configuration in etcd: the file's own keys of this instance are
    /// read again and the running revision is rebuilt with them (the file's other keys
    /// only seed an absent key).
    pub(super) fn reload_local(
        self: &Arc<Self>,
        path: &std::path::Path,
    ) -> Result<(), GatewayError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let text = super::changes::read(path)?;
        let (local, _) = split(&document::from_yaml(&text).map_err(one_error)?);
        *cluster.local.lock().unwrap_or_else(|e| e.into_inner()) = local;
        let running = self
            .versions()
            .and_then(|v| v.current().map(|c| c.doc.clone()));
        let base = self.snapshot.load().config.base_dir.clone();
        let yaml = match running {
            Some(doc) => document::to_yaml(&cluster.merged(&doc)),
            None => text,
        };
        let snap = self.prepare(config::parse(&yaml, &base)?)?;
        self.swap(snap)
    }

    /// Whether the configuration lives in etcd.
    pub fn in_etcd(&self) -> bool {
        self.cluster.is_some()
    }
}

/// A document's instance-own keys and the rest.
fn split(doc: &Value) -> (Map<String, Value>, Value) {
    let mut shared = doc.as_object().cloned().unwrap_or_default();
    let local = PROTECTED
        .iter()
        .filter_map(|k| shared.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect();
    (local, Value::Object(shared))
}

/// The key's value for `doc`: its shared keys and who wrote them, as JSON.
fn record_bytes(doc: &Value, who: &str, source: &str, action: &str) -> Vec<u8> {
    let (_, shared) = split(doc);
    let record = json!({"config": shared, "who": who, "source": source, "action": action,
                        "time": rfc3339(SystemTime::now())});
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Reads the key's value: `{"config": {...}, "who", ...}` as the gateway writes it, or a
/// bare configuration document in YAML or JSON (put there by hand).
fn record_of(bytes: &[u8]) -> Result<Record, ConfigErrors> {
    if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(bytes) {
        if let Some(config @ Value::Object(_)) = o.remove("config") {
            let text = |o: &Map<String, Value>, k: &str| {
                o.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("etcd")
                    .to_owned()
            };
            return Ok(Record {
                who: text(&o, "who"),
                source: text(&o, "source"),
                action: text(&o, "action"),
                config,
            });
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: "the etcd value is not UTF-8 text".into(),
        }])
    })?;
    Ok(Record {
        config: document::from_yaml(text).map_err(|e| ConfigErrors(vec![e]))?,
        who: "etcd".into(),
        source: "etcd".into(),
        action: "etcd put".into(),
    })
}

fn one_error(e: ConfigError) -> GatewayError {
    GatewayError::Config(ConfigErrors(vec![e]))
}
