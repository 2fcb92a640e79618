//! The exact-match answer cache of an `ai` route: whole (non-streamed) answers kept by the
//! normalized request (its JSON with keys sorted) and, by default, the caller, for a TTL,
//! bounded in entries (the oldest goes first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use crate::config::model::AiCacheSettings;

/// Answers larger than this are not kept.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

pub struct AnswerCache {
    settings: AiCacheSettings,
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, (Instant, Bytes)>,
    /// Keys by age, oldest first.
    order: VecDeque<String>,
}

impl AnswerCache {
    pub fn new(settings: AiCacheSettings) -> Self {
        AnswerCache {
            settings,
            inner: Mutex::new(Store::default()),
        }
    }

    /// The key of a request of `consumer`.
    pub fn key(&self, body: &Value, consumer: Option<&str>) -> String {
        let mut key = String::new();
        if self.settings.per_consumer {
            key.push_str(consumer.unwrap_or(""));
        }
        key.push('\n');
        normalized(body, &mut key);
        key
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let store = self.inner.lock().ok()?;
        let (at, body) = store.entries.get(key)?;
        (at.elapsed() < self.settings.ttl).then(|| body.clone())
    }

    pub fn put(&self, key: String, body: Bytes) {
        if body.len() > MAX_ANSWER_BYTES {
            return;
        }
        let Ok(mut store) = self.inner.lock() else {
            return;
        };
        if store
            .entries
            .insert(key.clone(), (Instant::now(), body))
            .is_none()
        {
            store.order.push_back(key);
        }
        let max = usize::try_from(self.settings.max_entries).unwrap_or(usize::MAX);
        while store.entries.len() > max {
            let Some(old) = store.order.pop_front() else {
                break;
            };
            store.entries.remove(&old);
        }
    }
}

/// `v` as JSON text with object keys sorted, so key order does not change the key.
fn normalized(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                normalized(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(list) => {
            out.push('[');
            for (i, x) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                normalized(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn key_order_does_not_matter_and_the_oldest_entry_goes_first() {
        let c = AnswerCache::new(AiCacheSettings {
            ttl: Duration::from_secs(60),
            max_entries: 1,
            per_consumer: true,
        });
        let a: Value =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"messages":[{"content":"x","role":"user"}],"model":"m"}"#)
                .unwrap();
        assert_eq!(c.key(&a, Some("alice")), c.key(&b, Some("alice")));
        assert_ne!(c.key(&a, Some("alice")), c.key(&a, Some("bob")));
        c.put(c.key(&a, None), Bytes::from_static(b"1"));
        assert_eq!(c.get(&c.key(&b, None)), Some(Bytes::from_static(b"1")));
        c.put("other".into(), Bytes::from_static(b"2"));
        assert_eq!(c.get(&c.key(&a, None)), None);
    }
}
