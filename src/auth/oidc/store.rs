//! Where login sessions live: in this process, or in Redis (the gateway's top-level
//! `redis`) so that every instance sees the same sessions and a back-channel logout received
//! by one ends them on all. With Redis each instance still keeps the sessions it serves in
//! memory, for the token lock (one refresh per session and instance); Redis is the record:
//! a session missing there is gone, and tokens refreshed by another instance (a higher
//! version) replace the local ones.
//!
//! Redis keys, under `ferrogate:oidc:<client id>:`: `s:<id>` the session as JSON, expiring
//! after the idle timeout (renewed by each read, `GETEX`); `sid:<sid>` and `sub:<sub>` sets
//! of session ids for back-channel logout; `refresh:<id>` held by the one instance that
//! refreshes a session; `login:<state>` a login in progress (taken once
//! with `GETDEL`, so its callback may reach any instance). Redis unreachable: requests of such routes get 503
//! (fail closed; a session is never assumed).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::login::{Logins, PendingLogin, LOGIN_TTL};
use super::session::{Session, Sessions, Tokens};

/// Why the session store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(String);

/// The sessions of one relying party.
pub enum Store {
    Memory(Sessions),
    Redis(Box<RedisSessions>),
}

/// Who refreshes a session's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This request: it holds the refresh lock.
    Mine,
    /// Another instance refreshed; its tokens are now this one's.
    Taken,
}

/// How long another instance's refresh holds its lock at most.
const REFRESH_LOCK: Duration = Duration::from_secs(15);
/// How often a waiting instance looks for the other's tokens.
const REFRESH_POLL: Duration = Duration::from_millis(25);

/// How long sessions last, for both stores.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub absolute: Duration,
}

/// Sessions in Redis, with this instance's copies.
pub struct RedisSessions {
    local: Sessions,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    background: Option<tokio::runtime::Handle>,
}

/// A session as Redis holds it.
#[derive(Serialize, Deserialize)]
struct Stored {
    sub: String,
    sid: Option<String>,
    claims: Map<String, Value>,
    forward: Vec<(String, String)>,
    created: u64,
    bearer: String,
    refresh: Option<String>,
    expires_at: Option<u64>,
    id_token: String,
    version: u64,
}

impl Store {
    /// A Redis store at `url` (`redis://…`) for `client_id`'s sessions.
    pub fn redis(
        url: &str,
        client_id: &str,
        timeout: Duration,
        background: Option<tokio::runtime::Handle>,
    ) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(e.to_string()))?;
        Ok(Store::Redis(Box::new(RedisSessions {
            local: Sessions::default(),
            client,
            conn: tokio::sync::Mutex::new(None),
            prefix: format!("ferrogate:oidc:{client_id}:"),
            timeout,
            background,
        })))
    }

    /// The live session of `id`.
    pub async fn get(&self, id: &str, life: Lifetimes) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(id, life.idle, life.absolute)),
            Store::Redis(r) => r.get(id, life).await,
        }
    }

    /// Stores a new session; `Ok(false)` when the store is full.
    pub async fn insert(
        &self,
        id: &str,
        session: Arc<Session>,
        life: Lifetimes,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.insert(id.to_owned(), session, life.idle, life.absolute)),
            Store::Redis(r) => r.insert(id, session, life).await,
        }
    }

    /// Ends the session of `id`.
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.remove(id);
                Ok(())
            }
            Store::Redis(r) => {
                r.local.remove(id);
                let key = r.key("s:", id);
                r.run(redis::cmd("DEL").arg(key)).await.map(|_: i64| ())
            }
        }
    }

    /// Ends the sessions of provider session `sid` (or of `sub` without one).
    pub async fn end_matching(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.end_matching(sid, sub)),
            Store::Redis(r) => r.end_matching(sid, sub).await,
        }
    }

    /// Keeps a login in progress until its callback (which may reach another instance);
    /// `Ok(false)` when too many are in progress.
    pub async fn keep_login(
        &self,
        logins: &Logins,
        state: String,
        login: PendingLogin,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(logins.keep(state, login)),
            Store::Redis(r) => {
                let json = serde_json::to_string(&login).unwrap_or_default();
                let cmd = redis::cmd("SET")
                    .arg(r.key("login:", &state))
                    .arg(json)
                    .arg("EX")
                    .arg(LOGIN_TTL.as_secs())
                    .clone();
                r.run(&cmd).await.map(|_: Option<String>| true)
            }
        }
    }

    /// Takes the login of `state`: once, whichever instance asks first.
    pub async fn take_login(
        &self,
        logins: &Logins,
        state: &str,
    ) -> Result<Option<PendingLogin>, StoreError> {
        match self {
            Store::Memory(_) => Ok(logins.take(state)),
            Store::Redis(r) => {
                let cmd = redis::cmd("GETDEL").arg(r.key("login:", state)).clone();
                let found: Option<String> = r.run(&cmd).await?;
                Ok(found.and_then(|j| serde_json::from_str(&j).ok()))
            }
        }
    }

    /// Decides who refreshes the due `tokens` of session `id`. In memory the token lock is
    /// enough. In Redis a lock key names one instance; the others wait (up to twice
    /// `timeout`) until the session shows newer tokens, and take them.
    pub async fn refresh_turn(
        &self,
        id: &str,
        tokens: &mut Tokens,
        timeout: Duration,
    ) -> Result<Turn, StoreError> {
        let Store::Redis(r) = self else {
            return Ok(Turn::Mine);
        };
        let lock = redis::cmd("SET")
            .arg(r.key("refresh:", id))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(REFRESH_LOCK.as_secs())
            .clone();
        let deadline = tokio::time::Instant::now() + timeout * 2;
        loop {
            let got: Option<String> = r.run(&lock).await?;
            if got.is_some() {
                return Ok(Turn::Mine);
            }
            tokio::time::sleep(REFRESH_POLL).await;
            let stored: Option<String> = r.run(redis::cmd("GET").arg(r.key("s:", id))).await?;
            let Some(stored) = stored.and_then(|j| serde_json::from_str::<Stored>(&j).ok()) else {
                return Err(StoreError("the session ended during a refresh".into()));
            };
            if stored.version > tokens.version {
                if let Some(theirs) = tokens_of(&stored) {
                    *tokens = theirs;
                    return Ok(Turn::Taken);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError(
                    "another instance's refresh did not finish".into(),
                ));
            }
        }
    }

    /// Lets the next refresh of session `id` go ahead (Redis: the lock key goes).
    pub async fn refresh_done(&self, id: &str) {
        if let Store::Redis(r) = self {
            let del = redis::cmd("DEL").arg(r.key("refresh:", id)).clone();
            if let Err(e) = r.run::<i64>(&del).await {
                tracing::debug!(error = %e, "refresh lock not released; it expires");
            }
        }
    }

    /// Records refreshed tokens (Redis: for the other instances too).
    pub async fn saved(
        &self,
        id: &str,
        session: &Session,
        tokens: &Tokens,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let json = stored(session, tokens);
                let cmd = redis::cmd("SET")
                    .arg(r.key("s:", id))
                    .arg(json)
                    .arg("KEEPTTL")
                    .arg("XX")
                    .clone();
                r.run(&cmd).await.map(|_: Option<String>| ())
            }
        }
    }
}

impl RedisSessions {
    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.prefix)
    }

    async fn get(&self, id: &str, life: Lifetimes) -> Result<Option<Arc<Session>>, StoreError> {
        let cmd = redis::cmd("GETEX")
            .arg(self.key("s:", id))
            .arg("EX")
            .arg(life.idle.as_secs().max(1))
            .clone();
        let found: Option<String> = self.run(&cmd).await?;
        let Some(stored) = found.and_then(|j| serde_json::from_str::<Stored>(&j).ok()) else {
            self.local.remove(id);
            return Ok(None);
        };
        let now = crate::timer::unix_seconds();
        if now.saturating_sub(stored.created) >= life.absolute.as_secs() {
            self.local.remove(id);
            return Ok(None);
        }
        if let Some(mine) = self.local.get(id, life.idle, life.absolute) {
            // Held by a refresh here: that refresh decides.
            let Ok(mut tokens) = mine.tokens.try_lock() else {
                return Ok(Some(mine));
            };
            if stored.version > tokens.version {
                if let Some(theirs) = tokens_of(&stored) {
                    *tokens = theirs;
                }
            }
            drop(tokens);
            return Ok(Some(mine));
        }
        let Some(session) = session_of(stored) else {
            return Ok(None);
        };
        let session = Arc::new(session);
        self.local
            .insert(id.to_owned(), session.clone(), life.idle, life.absolute);
        Ok(Some(session))
    }

    async fn insert(
        &self,
        id: &str,
        session: Arc<Session>,
        life: Lifetimes,
    ) -> Result<bool, StoreError> {
        let json = {
            let tokens = session.tokens.lock().await;
            stored(&session, &tokens)
        };
        let absolute = life.absolute.as_secs().max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key("s:", id))
            .arg(json)
            .arg("EX")
            .arg(life.idle.as_secs().max(1))
            .ignore();
        let sub = self.key("sub:", &session.subject);
        pipe.cmd("SADD").arg(&sub).arg(id).ignore();
        pipe.cmd("EXPIRE").arg(&sub).arg(absolute).ignore();
        if let Some(sid) = &session.sid {
            let sid = self.key("sid:", sid);
            pipe.cmd("SADD").arg(&sid).arg(id).ignore();
            pipe.cmd("EXPIRE").arg(&sid).arg(absolute).ignore();
        }
        let conn = self.conn().await?;
        let sent =
            tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn.clone())).await;
        self.settle(sent)?;
        Ok(self
            .local
            .insert(id.to_owned(), session, life.idle, life.absolute))
    }

    async fn end_matching(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<usize, StoreError> {
        let set = match (sid, sub) {
            (Some(sid), _) => self.key("sid:", sid),
            (None, Some(sub)) => self.key("sub:", sub),
            (None, None) => return Ok(0),
        };
        let ids: Vec<String> = self.run(redis::cmd("SMEMBERS").arg(&set)).await?;
        let mut del = redis::cmd("DEL");
        del.arg(&set);
        for id in &ids {
            del.arg(self.key("s:", id));
            self.local.remove(id);
        }
        let deleted: i64 = self.run(&del).await?;
        // The set itself was one of the keys deleted.
        Ok(usize::try_from(deleted.saturating_sub(1)).unwrap_or(0))
    }

    /// One command under the store's timeout; a failure drops the connection.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let sent = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.settle(sent)
    }

    fn settle<T>(
        &self,
        sent: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match sent {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    self.forget();
                }
                Err(StoreError(e.to_string()))
            }
            Err(_) => {
                self.forget();
                Err(StoreError("timed out".into()))
            }
        }
    }

    fn forget(&self) {
        if let Ok(mut c) = self.conn.try_lock() {
            *c = None;
        }
    }

    /// The connection, made when there is none (on the background runtime when there is
    /// one, so it does not belong to a worker's).
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut current = self.conn.lock().await;
        if let Some(c) = &*current {
            return Ok(c.clone());
        }
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        let connect = async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        let made = match &self.background {
            Some(handle) => handle
                .spawn(connect)
                .await
                .map_err(|e| StoreError(e.to_string()))?,
            None => connect.await,
        };
        let made = made.map_err(|e| StoreError(e.to_string()))?;
        *current = Some(made.clone());
        Ok(made)
    }
}

fn stored(session: &Session, tokens: &Tokens) -> String {
    let value = Stored {
        sub: session.subject.to_string(),
        sid: session.sid.clone(),
        claims: (*session.claims).clone(),
        forward: session
            .forward
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        created: session.created,
        bearer: tokens.bearer.to_str().unwrap_or("").to_owned(),
        refresh: tokens.refresh.clone(),
        expires_at: tokens.expires_at,
        id_token: tokens.id_token.clone(),
        version: tokens.version,
    };
    serde_json::to_string(&value).unwrap_or_default()
}

fn tokens_of(s: &Stored) -> Option<Tokens> {
    Some(Tokens {
        bearer: HeaderValue::from_str(&s.bearer).ok()?,
        refresh: s.refresh.clone(),
        expires_at: s.expires_at,
        id_token: s.id_token.clone(),
        version: s.version,
    })
}

fn session_of(s: Stored) -> Option<Session> {
    let tokens = tokens_of(&s)?;
    let forward = s
        .forward
        .iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let mut session = Session::new(Arc::from(s.sub), s.sid, Arc::new(s.claims), forward, tokens);
    session.created = s.created;
    Some(session)
}
