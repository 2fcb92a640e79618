//! Login sessions: what the gateway keeps of a logged-in user (tokens, claims, the
//! provider's `sid`), found by the random id in the session cookie, with idle and absolute
//! timeouts. Kept in memory; the tokens of a session are behind an async lock so one
//! request refreshes them while the others wait (single flight).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use serde_json::{Map, Value};

/// Sessions kept at most per route; past it expired ones are dropped, then logins refused.
const MAX_SESSIONS: usize = 1_000_000;

/// One logged-in user.
pub struct Session {
    pub subject: Arc<str>,
    /// The provider's session id (`sid` of the ID token), for back-channel logout.
    pub sid: Option<String>,
    pub claims: Arc<Map<String, Value>>,
    /// Claim headers for the upstream.
    pub forward: Vec<(HeaderName, HeaderValue)>,
    /// Unix seconds.
    pub created: u64,
    last_seen: AtomicU64,
    pub tokens: tokio::sync::Mutex<Tokens>,
}

/// The tokens of a session; replaced by a refresh.
pub struct Tokens {
    /// `Bearer <access token>`, ready for the upstream.
    pub bearer: HeaderValue,
    pub refresh: Option<String>,
    /// Unix seconds; `None` when the provider gave no lifetime.
    pub expires_at: Option<u64>,
    pub id_token: String,
    /// Bumped by each refresh, so a shared store tells newer tokens from older.
    pub version: u64,
}

impl Session {
    pub fn new(
        subject: Arc<str>,
        sid: Option<String>,
        claims: Arc<Map<String, Value>>,
        forward: Vec<(HeaderName, HeaderValue)>,
        tokens: Tokens,
    ) -> Session {
        let now = crate::timer::unix_seconds();
        Session {
            subject,
            sid,
            claims,
            forward,
            created: now,
            last_seen: AtomicU64::new(now),
            tokens: tokio::sync::Mutex::new(tokens),
        }
    }

    /// Whether the session is still good at `now`, by its idle and absolute timeouts.
    pub fn alive(&self, now: u64, idle: Duration, absolute: Duration) -> bool {
        let seen = self.last_seen.load(Ordering::Relaxed);
        now.saturating_sub(seen) < idle.as_secs()
            && now.saturating_sub(self.created) < absolute.as_secs()
    }

    /// Marks a use at `now` (the idle timeout starts again).
    pub fn touch(&self, now: u64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }
}

/// The sessions of one relying party, by id.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// The session of `id`, if it exists and is alive (a dead one is removed).
    pub fn get(&self, id: &str, idle: Duration, absolute: Duration) -> Option<Arc<Session>> {
        let now = crate::timer::unix_seconds();
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let session = map.get(id)?.clone();
        if session.alive(now, idle, absolute) {
            session.touch(now);
            Some(session)
        } else {
            map.remove(id);
            None
        }
    }

    /// Stores a new session under `id`; false when the store is full.
    pub fn insert(
        &self,
        id: String,
        session: Arc<Session>,
        idle: Duration,
        absolute: Duration,
    ) -> bool {
        let now = crate::timer::unix_seconds();
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.alive(now, idle, absolute));
            if map.len() >= MAX_SESSIONS {
                return false;
            }
        }
        map.insert(id, session);
        true
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(id)
    }

    /// Ends the sessions of the provider session `sid`, or of `sub` when no `sid` is given;
    /// returns how many ended.
    pub fn end_matching(&self, sid: Option<&str>, sub: Option<&str>) -> usize {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, s| match (sid, sub) {
            (Some(sid), _) => s.sid.as_deref() != Some(sid),
            (None, Some(sub)) => &*s.subject != sub,
            (None, None) => true,
        });
        before - map.len()
    }
}

/// The value of cookie `name` in the request's `Cookie` fields (the first one).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

/// The `Cookie` fields without cookie `name` (removed when nothing else is left).
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(n, _)| n) != name)
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if kept.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_and_stripped_alone() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; sess=xyz"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "sess"), Some("xyz"));
        assert_eq!(cookie(&h, "nope"), None);
        strip_cookie(&mut h, "sess");
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2");
        strip_cookie(&mut h, "a");
        strip_cookie(&mut h, "b");
        assert!(h.get(COOKIE).is_none());
    }

    fn session(created: u64) -> Session {
        let s = Session::new(
            Arc::from("alice"),
            Some("sid1".into()),
            Arc::new(Map::new()),
            Vec::new(),
            Tokens {
                bearer: HeaderValue::from_static("Bearer t"),
                refresh: None,
                expires_at: None,
                id_token: String::new(),
                version: 0,
            },
        );
        Session { created, ..s }
    }

    #[test]
    fn idle_and_absolute_timeouts_end_a_session() {
        let s = session(1000);
        s.touch(1000);
        let (idle, abs) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert!(s.alive(1059, idle, abs));
        assert!(!s.alive(1060, idle, abs));
        s.touch(4500);
        assert!(!s.alive(4600, Duration::from_secs(1000), abs));
    }

    #[test]
    fn back_channel_logout_ends_by_sid_or_subject() {
        let store = Sessions::default();
        let (idle, abs) = (Duration::from_secs(60), Duration::from_secs(3600));
        store.insert(
            "a".into(),
            Arc::new(session(crate::timer::unix_seconds())),
            idle,
            abs,
        );
        store.insert(
            "b".into(),
            Arc::new(session(crate::timer::unix_seconds())),
            idle,
            abs,
        );
        assert_eq!(store.end_matching(Some("other"), None), 0);
        assert_eq!(store.end_matching(Some("sid1"), None), 2);
        store.insert(
            "c".into(),
            Arc::new(session(crate::timer::unix_seconds())),
            idle,
            abs,
        );
        assert_eq!(store.end_matching(None, Some("alice")), 1);
    }
}
