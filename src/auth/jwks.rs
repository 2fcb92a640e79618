//! Keeps a route's JWKS (RFC 7517 key set) current: a background task fetches it on an
//! interval, an unknown `kid` asks for an early (rate-limited) fetch, and the last good key set
//! stays in use while the identity provider is down. `verify()` only ever reads the current
//! set; it never performs network I/O itself.

#[cfg(test)]
pub(crate) mod idp;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::jwt::PinnedKey;

/// Largest JWKS document read; real ones are a few KiB.
const MAX_BODY: usize = 1024 * 1024;
/// Most keys taken from one document: each unknown-`kid` token may be tried against all keys of
/// its algorithm when it names none, so a provider must not be able to make that list long.
const MAX_KEYS: usize = 64;
/// First retry delay after a failed fetch, whatever `min_refetch_interval` says.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// Where and how often to fetch a key set.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `https://` (or `http://` for a provider on a trusted network) URL of the key set.
    pub url: String,
    /// Regular refetch period.
    pub refresh_interval: Duration,
    /// Least time between two fetches triggered by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// Bound on one fetch, and on how long a request waits for an unknown-`kid` fetch.
    pub timeout: Duration,
    /// Algorithms keys may be used with; empty allows every asymmetric algorithm.
    pub algorithms: Vec<Algorithm>,
}

impl JwksSettings {
    pub fn new(url: impl Into<String>) -> Self {
        JwksSettings {
            url: url.into(),
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            algorithms: Vec::new(),
        }
    }
}

/// Fetch counters, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksStats {
    /// Fetch attempts, successful or not.
    pub fetches: u64,
    /// Failed attempts (network, status, body, no usable key); the previous keys stayed.
    pub failures: u64,
    /// Keys in use now.
    pub keys: usize,
    /// Bumped whenever the key set changes.
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("jwks url {0:?} is not an http or https url")]
    BadUrl(String),
    #[error("jwks refresh interval must be positive")]
    ZeroInterval,
    #[error("cannot build the http client: {0}")]
    Client(String),
}

/// One key set as fetched, immutable once published.
pub(crate) struct KeySet {
    pub(crate) keys: Vec<PinnedKey>,
    pub(crate) generation: u64,
    /// SHA-256 of the document, to tell a real change from a refetch of the same set.
    body: [u8; 32],
}

/// The verifier's handle on the fetcher. Dropping it stops the task.
pub(crate) struct JwksClient {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    started: AtomicBool,
}

struct Shared {
    settings: JwksSettings,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// Asks the fetcher for a fetch now.
    wake: Notify,
    /// Counts finished fetch attempts, so waiters learn when one is over.
    done: watch::Sender<u64>,
    in_flight: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl JwksClient {
    pub(crate) fn new(settings: JwksSettings) -> Result<Self, JwksError> {
        let lower = settings.url.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://"))
            || reqwest::Url::parse(&settings.url).is_err()
        {
            return Err(JwksError::BadUrl(settings.url));
        }
        if settings.refresh_interval.is_zero() {
            return Err(JwksError::ZeroInterval);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A key set behind a redirect to somewhere else is not the configured key set.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        let empty = KeySet {
            keys: Vec::new(),
            generation: 0,
            body: [0; 32],
        };
        Ok(JwksClient {
            shared: Arc::new(Shared {
                settings,
                http,
                keys: ArcSwap::from_pointee(empty),
                wake: Notify::new(),
                done: watch::Sender::new(0),
                in_flight: AtomicBool::new(false),
                last_attempt: Mutex::new(None),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
            task: Mutex::new(None),
            started: AtomicBool::new(false),
        })
    }

    /// Spawns the fetcher on `handle` unless it already runs.
    pub(crate) fn start(&self, handle: &tokio::runtime::Handle) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        // The first fetch counts as in flight from now on, so early requests wait for it.
        self.shared.in_flight.store(true, Ordering::Release);
        let task = handle.spawn(run(Arc::clone(&self.shared)));
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Starts the fetcher on the current runtime if nobody did (cheap when already started).
    pub(crate) fn ensure_started(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.start(&handle);
        }
    }

    pub(crate) fn keys(&self) -> Guard<Arc<KeySet>> {
        self.shared.keys.load()
    }

    pub(crate) fn stats(&self) -> JwksStats {
        let keys = self.keys();
        JwksStats {
            fetches: self.shared.fetches.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            keys: keys.keys.len(),
            generation: keys.generation,
        }
    }

    /// Called when a token names a key the set does not have. Joins a fetch in flight, or asks
    /// for one if none happened within `min_refetch_interval`, and waits for it up to the
    /// timeout. Returns whether a fetch finished meanwhile (so a retry may now succeed).
    pub(crate) async fn refetch_for_unknown_kid(&self) -> bool {
        let shared = &*self.shared;
        // Subscribing first means a fetch finishing from here on is seen.
        let mut done = shared.done.subscribe();
        if !shared.in_flight.load(Ordering::Acquire) {
            let mut last = shared
                .last_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let recent =
                last.is_some_and(|t| now.duration_since(t) < shared.settings.min_refetch_interval);
            if recent {
                tracing::debug!(url = %shared.settings.url, "unknown kid: refetch rate-limited");
                return false;
            }
            *last = Some(now);
            shared.in_flight.store(true, Ordering::Release);
            shared.wake.notify_one();
        }
        matches!(
            tokio::time::timeout(shared.settings.timeout, done.changed()).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for JwksClient {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// The fetcher: fetch, then sleep until the refresh interval passes or someone asks. After a
/// failure it retries sooner, backing off from `min_refetch_interval` up to the interval.
async fn run(shared: Arc<Shared>) {
    let mut failures_in_row: u32 = 0;
    loop {
        shared.in_flight.store(true, Ordering::Release);
        *shared
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        shared.fetches.fetch_add(1, Ordering::Relaxed);
        match fetch(&shared).await {
            Ok(()) => failures_in_row = 0,
            Err(reason) => {
                failures_in_row = failures_in_row.saturating_add(1);
                shared.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    url = %shared.settings.url,
                    %reason,
                    keys = shared.keys.load().keys.len(),
                    "jwks fetch failed; keeping the last good key set"
                );
            }
        }
        shared.in_flight.store(false, Ordering::Release);
        shared.done.send_modify(|n| *n = n.wrapping_add(1));

        let pause = if failures_in_row == 0 {
            shared.settings.refresh_interval
        } else {
            let factor = 1u32 << failures_in_row.min(10).saturating_sub(1);
            shared
                .settings
                .min_refetch_interval
                .max(MIN_RETRY)
                .saturating_mul(factor)
                .min(shared.settings.refresh_interval)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// One fetch; on success the new set is published (if it changed).
async fn fetch(shared: &Shared) -> Result<(), String> {
    let mut response = shared
        .http
        .get(&shared.settings.url)
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(describe)?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err("document too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("document too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    let fingerprint = digest_bytes(&body);
    let current = shared.keys.load();
    if current.generation > 0 && current.body == fingerprint {
        return Ok(());
    }
    let keys = parse_key_set(&body, &shared.settings.algorithms)?;
    let listed: Vec<(Option<&str>, Algorithm)> = keys.iter().map(|k| (k.kid(), k.alg())).collect();
    tracing::info!(url = %shared.settings.url, keys = ?listed, "jwks key set updated");
    shared.keys.store(Arc::new(KeySet {
        keys,
        generation: current.generation + 1,
        body: fingerprint,
    }));
    Ok(())
}

/// Usable signing keys of a JWKS document; unusable entries are skipped and logged. A
/// document without any usable key is an error, so it never replaces a working set.
pub(crate) fn parse_key_set(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<PinnedKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not json: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    let mut keys = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if keys.len() == MAX_KEYS {
            tracing::warn!(
                limit = MAX_KEYS,
                "jwks has too many keys; the rest are ignored"
            );
            break;
        }
        match PinnedKey::from_jwk(entry, None, allowed, false) {
            Ok(key) => keys.push(key),
            Err(reason) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                tracing::warn!(index, kid, %reason, "jwks key skipped");
            }
        }
    }
    if keys.is_empty() {
        return Err("no usable signing key".into());
    }
    Ok(keys)
}

fn digest_bytes(body: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref());
    out
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // Without the URL (already logged separately) and without a source chain.
        e.without_url().to_string()
    }
}
