//! A client of etcd's v3 JSON gateway (the HTTP face of its gRPC API: `POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`, keys and values in base64, 64-bit numbers as strings) for the
//! one key that holds the configuration: read it, write it under compare-and-swap on its
//! `mod_revision`, and watch it. The endpoints are tried in turn, starting with the one that
//! answered last.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::config::model;

/// Time limit of opening a connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why etcd gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd is unreachable ({0})")]
    Unreachable(String),
    #[error("etcd answered unexpectedly: {0}")]
    Answer(String),
}

/// The configuration key as read.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Vec<u8>,
    /// The etcd revision of the key's last write: the configuration version.
    pub mod_revision: u64,
}

/// A read of the key: its entry (none when absent) and the store's revision then.
#[derive(Debug)]
pub struct Read {
    pub entry: Option<Entry>,
    pub revision: u64,
}

/// What a compare-and-swap did.
#[derive(Debug)]
pub enum Swap {
    /// Written; the key's new `mod_revision`.
    Done(u64),
    /// The key was not at the expected revision; its current one (0: absent).
    Conflict(u64),
}

/// A client for the configuration key.
pub struct Etcd {
    endpoints: Vec<String>,
    key: String,
    timeout: Duration,
    http: reqwest::Client,
    /// The endpoint tried first (the last one that answered).
    first: AtomicUsize,
}

impl Etcd {
    pub fn new(settings: &model::Etcd) -> Etcd {
        Etcd {
            endpoints: settings.endpoints.clone(),
            key: B64.encode(settings.key.as_bytes()),
            timeout: settings.timeout,
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            first: AtomicUsize::new(0),
        }
    }

    /// Reads the key.
    pub async fn read(&self) -> Result<Read, EtcdError> {
        let answer = self
            .call("/v3/kv/range", &json!({"key": self.key}), true)
            .await?;
        let body = json_of(answer).await?;
        Ok(Read {
            entry: body["kvs"].get(0).map(entry).transpose()?,
            revision: int(&body["header"]["revision"]),
        })
    }

    /// Writes `value` if the key's `mod_revision` is `expected` (0: if the key is absent).
    pub async fn swap(&self, expected: u64, value: &[u8]) -> Result<Swap, EtcdError> {
        let compare = if expected == 0 {
            json!({"key": self.key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        } else {
            json!({"key": self.key, "target": "MOD", "result": "EQUAL",
                   "mod_revision": expected.to_string()})
        };
        let txn = json!({
            "compare": [compare],
            "success": [{"request_put": {"key": self.key, "value": B64.encode(value)}}],
            "failure": [{"request_range": {"key": self.key}}],
        });
        let body = json_of(self.call("/v3/kv/txn", &txn, true).await?).await?;
        if body["succeeded"].as_bool() == Some(true) {
            return Ok(Swap::Done(int(&body["header"]["revision"])));
        }
        let current = body["responses"][0]["response_range"]["kvs"]
            .get(0)
            .map_or(0, |kv| int(&kv["mod_revision"]));
        Ok(Swap::Conflict(current))
    }

    /// Opens a watch of the key from `revision` on: a stream of JSON messages, read with
    /// [`Messages`].
    pub async fn watch(&self, revision: u64) -> Result<reqwest::Response, EtcdError> {
        let create = json!({"create_request": {"key": self.key,
                                               "start_revision": revision.to_string()}});
        self.call("/v3/watch", &create, false).await
    }

    /// Posts `body` to each endpoint in turn until one answers 2xx; `limited` puts the
    /// request under the time limit (a watch is not).
    async fn call(
        &self,
        path: &str,
        body: &Value,
        limited: bool,
    ) -> Result<reqwest::Response, EtcdError> {
        let first = self.first.load(Ordering::Relaxed);
        let mut last = EtcdError::Unreachable("no endpoint".into());
        for i in 0..self.endpoints.len() {
            let n = (first + i) % self.endpoints.len();
            let mut req = self
                .http
                .post(format!("{}{path}", self.endpoints[n]))
                .header("content-type", "application/json")
                .body(body.to_string());
            if limited {
                req = req.timeout(self.timeout);
            }
            // A watch's body has no end, but its head comes at once from a live member.
            let Ok(sent) = tokio::time::timeout(self.timeout, req.send()).await else {
                last = EtcdError::Unreachable(format!(
                    "{}: no answer within {:?}",
                    self.endpoints[n], self.timeout
                ));
                continue;
            };
            match sent {
                Ok(r) if r.status().is_success() => {
                    self.first.store(n, Ordering::Relaxed);
                    return Ok(r);
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    last =
                        EtcdError::Answer(format!("{status} from {}: {text}", self.endpoints[n]));
                }
                Err(e) => {
                    last = EtcdError::Unreachable(format!("{}: {e}", self.endpoints[n]));
                }
            }
        }
        Err(last)
    }
}

/// One event of a watch: a new value of the key, or its removal.
#[derive(Debug)]
pub enum Event {
    Put(Entry),
    Delete,
}

/// Splits a watch's body into its JSON messages (the gateway streams one object after the
/// other) and their events.
#[derive(Default)]
pub struct Messages {
    buf: Vec<u8>,
}

impl Messages {
    /// Takes a chunk of the body and returns the events of the messages it completed. A
    /// watch that etcd ended (compacted history, an error) is an error: read the key again.
    pub fn take(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EtcdError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(message)) => {
                    used = stream.byte_offset();
                    let result = &message["result"];
                    if result.is_null() || result["canceled"].as_bool() == Some(true) {
                        return Err(EtcdError::Answer(format!("watch ended: {message}")));
                    }
                    if let Some(list) = result["events"].as_array() {
                        for e in list {
                            events.push(match e["type"].as_str() {
                                Some("DELETE") => Event::Delete,
                                _ => Event::Put(entry(&e["kv"])?),
                            });
                        }
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(EtcdError::Answer(format!("watch message: {e}"))),
                None => break,
            }
        }
        self.buf.drain(..used);
        Ok(events)
    }
}

async fn json_of(r: reqwest::Response) -> Result<Value, EtcdError> {
    let bytes = r
        .bytes()
        .await
        .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| EtcdError::Answer(e.to_string()))
}

fn entry(kv: &Value) -> Result<Entry, EtcdError> {
    let value = kv["value"].as_str().unwrap_or("");
    Ok(Entry {
        value: B64
            .decode(value)
            .map_err(|e| EtcdError::Answer(format!("value is not base64: {e}")))?,
        mod_revision: int(&kv["mod_revision"]),
    })
}

/// A 64-bit number of the gateway's JSON: a string, or a number; 0 when absent (zero values
/// are left out).
fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn watch_messages_split_across_chunks_give_their_events() {
        let mut m = Messages::default();
        let created = br#"{"result":{"header":{"revision":"4"},"created":true}}"#;
        let put = br#"{"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"eA==","mod_revision":"5","value":"e30="}}]}}"#;
        assert!(m.take(created).unwrap().is_empty());
        assert!(m.take(&put[..30]).unwrap().is_empty());
        let events = m.take(&put[30..]).unwrap();
        match events.as_slice() {
            [Event::Put(e)] => {
                assert_eq!(e.mod_revision, 5);
                assert_eq!(e.value, b"{}");
            }
            other => panic!("{other:?}"),
        }
        let delete = br#"{"result":{"events":[{"type":"DELETE","kv":{"key":"eA=="}}]}}"#;
        assert!(matches!(
            m.take(delete).unwrap().as_slice(),
            [Event::Delete]
        ));
        assert!(m
            .take(br#"{"result":{"canceled":true,"compact_revision":"9"}}"#)
            .is_err());
    }
}
