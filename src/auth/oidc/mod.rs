//! OpenID Connect relying party for browser routes: the authorization code flow with PKCE,
//! `state` and `nonce` from the provider's discovery document; server-side login sessions
//! behind a cookie; access tokens refreshed before they expire (once per session however
//! many requests wait); RP-initiated logout. The proxy's `access` phase calls
//! [`RelyingParty::handle`] and answers or forwards with what it returns; docs/oidc.md
//! describes the flows.

pub mod credentials;
mod flows;
pub mod login;
pub mod provider;
pub mod session;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, SET_COOKIE,
};
use http::{Method, StatusCode, Uri};

use super::consumer::Identity;
use super::gate::{Authenticated, Hidden};
use login::Logins;
use provider::{ClientAuth, Discovery, Provider, ProviderError, TokenAnswer};
use session::{cookie, Session, Sessions, Tokens};
use store::{Lifetimes, Store, StoreError, Turn};

/// When an unauthenticated request is sent to the provider rather than refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// A `GET` or `HEAD` whose `Accept` names `text/html` is redirected; others get 401.
    Auto,
    /// Always redirect (a `GET`/`HEAD`; other methods get 401).
    Redirect,
    /// Always 401 (an API route).
    Deny,
}

/// A route's relying-party settings, validated.
#[derive(Clone)]
pub struct OidcSettings {
    /// The provider's discovery document URL.
    pub discovery_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The callback path the provider redirects to.
    pub redirect_path: String,
    /// Requests to this path end the session (RP-initiated logout).
    pub logout_path: Option<String>,
    /// Where the provider sends the user after logout: a path on this host or a URL.
    pub post_logout_redirect: Option<String>,
    /// The provider posts back-channel logout tokens here.
    pub backchannel_logout_path: Option<String>,
    /// Space-separated scopes asked for (`openid` first).
    pub scopes: String,
    pub unauthenticated: Unauthenticated,
    /// The session cookie's name, without the `__Host-` prefix that `cookie_secure` adds.
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// An access token this close to expiry is refreshed before the request goes on.
    pub refresh_before: Duration,
    /// Send the access token upstream as `Authorization: Bearer`.
    pub forward_access_token: bool,
    /// ID-token claims sent upstream as headers.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// Bound on each call to the provider.
    pub timeout: Duration,
    /// Clock skew tolerated on the ID token's times.
    pub leeway: Duration,
    /// Sessions in the Redis at this URL (shared by every instance) rather than in memory.
    pub redis_url: Option<String>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("discovery_url", &self.discovery_url)
            .field("client_id", &self.client_id)
            .field("redirect_path", &self.redirect_path)
            .finish_non_exhaustive()
    }
}

/// What the relying party decided about a request.
pub enum Outcome {
    /// A logged-in user: go on, with the token and claims for the upstream.
    Proceed(Authenticated),
    /// The gateway answers itself (a redirect, a refusal).
    Answer(Answer),
}

/// An answer of the relying party: a status, its fields, and for a refusal the detail of
/// its problem body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub problem: Option<&'static str>,
}

/// The request facts the relying party reads.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The host the client named (for the callback URL).
    pub host: Option<&'a str>,
    pub tls: bool,
}

/// One route's relying party: provider, logins in progress, sessions.
pub struct RelyingParty {
    settings: OidcSettings,
    /// The session cookie's full name.
    cookie: String,
    /// The cookie tying a login's callback to the browser that started it.
    login_cookie: String,
    client: ClientAuth,
    http: reqwest::Client,
    discovery: Discovery,
    background: Option<tokio::runtime::Handle>,
    /// Logins in progress and sessions, kept across reloads (see [`kept_state`]).
    state: Arc<State>,
    life: Lifetimes,
}

/// What outlives one configuration: the route's logins in progress and its sessions.
struct State {
    logins: Logins,
    sessions: Store,
}

#[derive(Debug, thiserror::Error)]
#[error("oidc: {0}")]
pub struct OidcError(String);

impl RelyingParty {
    /// The relying party of route `route`; a reload that keeps the route's provider, client,
    /// cookie and store keeps its users logged in.
    pub fn new(
        route: &str,
        settings: OidcSettings,
        background: Option<tokio::runtime::Handle>,
    ) -> Result<RelyingParty, OidcError> {
        let prefix = if settings.cookie_secure {
            "__Host-"
        } else {
            ""
        };
        let cookie = format!("{prefix}{}", settings.cookie_name);
        let login_cookie = format!("{cookie}_login");
        let http = provider::http_client(settings.timeout).map_err(OidcError)?;
        let key = format!(
            "{route}\n{}\n{}\n{cookie}\n{:?}",
            settings.discovery_url, settings.client_id, settings.redis_url
        );
        let state = kept_state(key, || {
            let sessions = match &settings.redis_url {
                Some(url) => Store::redis(
                    url,
                    &settings.client_id,
                    settings.timeout,
                    background.clone(),
                )
                .map_err(|e| OidcError(e.to_string()))?,
                None => Store::Memory(Sessions::default()),
            };
            Ok(State {
                logins: Logins::default(),
                sessions,
            })
        })?;
        Ok(RelyingParty {
            cookie,
            login_cookie,
            client: ClientAuth {
                client_id: settings.client_id.clone(),
                credential: provider::Credential::Secret(settings.client_secret.clone()),
            },
            discovery: Discovery::new(
                settings.discovery_url.clone(),
                settings.client_id.clone(),
                settings.leeway,
            ),
            http,
            background,
            state,
            life: Lifetimes {
                idle: settings.idle_timeout,
                absolute: settings.absolute_timeout,
            },
            settings,
        })
    }

    /// Header names the relying party sets upstream (client copies must go).
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        let auth = self.settings.forward_access_token.then_some(&AUTHORIZATION);
        auth.into_iter()
            .chain(self.settings.forward_claims.iter().map(|(_, h)| h))
    }

    /// The path where the provider posts back-channel logout tokens, if any.
    pub fn backchannel_path(&self) -> Option<&str> {
        self.settings.backchannel_logout_path.as_deref()
    }

    /// The full name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// Decides a request on the route: the callback, the logout path, a request with a live
    /// session (refreshed when due), or a request to log in first.
    pub async fn handle(&self, req: &RequestFacts<'_>) -> Outcome {
        let path = req.uri.path();
        if path == self.settings.redirect_path {
            return Outcome::Answer(self.callback(req).await);
        }
        if self.settings.logout_path.as_deref() == Some(path) {
            return Outcome::Answer(self.logout(req).await);
        }
        let Some(id) = cookie(req.headers, &self.cookie) else {
            return Outcome::Answer(self.unauthenticated(req).await);
        };
        let session = match self.state.sessions.get(id, self.life).await {
            Ok(Some(s)) => s,
            Ok(None) => return Outcome::Answer(self.unauthenticated(req).await),
            Err(e) => return Outcome::Answer(store_down(&e)),
        };
        match self.current_bearer(id, &session).await {
            Ok(bearer) => Outcome::Proceed(self.authenticated(&session, bearer)),
            Err(e) => {
                tracing::info!(error = %e, "token refresh failed; session ended");
                if let Err(e) = self.state.sessions.remove(id).await {
                    return Outcome::Answer(store_down(&e));
                }
                Outcome::Answer(self.unauthenticated(req).await)
            }
        }
    }

    /// The access token of a session, refreshed first when it expires within
    /// `refresh_before`. The token lock makes concurrent requests wait for one refresh.
    async fn current_bearer(
        &self,
        id: &str,
        session: &Session,
    ) -> Result<HeaderValue, ProviderError> {
        let mut tokens = session.tokens.lock().await;
        let due = tokens.expires_at.is_some_and(|at| {
            at <= crate::timer::unix_seconds()
                .saturating_add(self.settings.refresh_before.as_secs())
        });
        if !due {
            return Ok(tokens.bearer.clone());
        }
        // With a shared store one instance refreshes; the others take its tokens.
        let turn = self
            .state
            .sessions
            .refresh_turn(id, &mut tokens, self.settings.timeout)
            .await
            .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        if turn == Turn::Taken {
            return Ok(tokens.bearer.clone());
        }
        let refreshed = self.refresh(id, session, &mut tokens).await;
        self.state.sessions.refresh_done(id).await;
        refreshed
    }

    /// One refresh grant; the new tokens replace `tokens` and are stored.
    async fn refresh(
        &self,
        id: &str,
        session: &Session,
        tokens: &mut Tokens,
    ) -> Result<HeaderValue, ProviderError> {
        let Some(refresh) = tokens.refresh.clone() else {
            return Err(ProviderError::BadAnswer("a refresh (no refresh token)"));
        };
        let provider = self.provider().await?;
        let answer = provider::grant(
            &self.http,
            &provider.endpoints.token_endpoint,
            &self.client,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await?;
        let mut fresh = tokens_of(answer)?;
        // Without rotation the refresh token stays the same (RFC 6749 §6); the ID token of
        // the login stays the hint for logout unless a new one came.
        if fresh.refresh.is_none() {
            fresh.refresh = Some(refresh);
        }
        if fresh.id_token.is_empty() {
            fresh.id_token = std::mem::take(&mut tokens.id_token);
        }
        fresh.version = tokens.version + 1;
        *tokens = fresh;
        // Other instances must not use the rotated-away refresh token.
        if let Err(e) = self.state.sessions.saved(id, session, tokens).await {
            tracing::warn!(error = %e, "refreshed tokens not stored");
        }
        Ok(tokens.bearer.clone())
    }

    fn authenticated(&self, session: &Session, bearer: HeaderValue) -> Authenticated {
        let mut forward = session.forward.clone();
        if self.settings.forward_access_token {
            forward.push((AUTHORIZATION, bearer));
        }
        Authenticated {
            identity: Identity {
                consumer: None,
                subject: Some(session.subject.clone()),
                scopes: Vec::new(),
                claims: Some(session.claims.clone()),
                method: "oidc",
            },
            forward,
            hide: Some(Hidden::Cookie(self.cookie.clone())),
        }
    }

    async fn provider(&self) -> Result<Arc<Provider>, ProviderError> {
        self.discovery
            .get(&self.http, self.background.as_ref())
            .await
    }

    /// A browser navigation goes to the provider; anything else gets 401.
    async fn unauthenticated(&self, req: &RequestFacts<'_>) -> Answer {
        let navigation = matches!(*req.method, Method::GET | Method::HEAD);
        let redirect = navigation
            && match self.settings.unauthenticated {
                Unauthenticated::Redirect => true,
                Unauthenticated::Deny => false,
                Unauthenticated::Auto => accepts_html(req.headers),
            };
        if !redirect {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return refusal(StatusCode::UNAUTHORIZED, "login required", headers);
        }
        let provider = match self.provider().await {
            Ok(p) => p,
            Err(e) => return unavailable(&e),
        };
        let original = return_path(req.uri.path_and_query().map_or("/", |p| p.as_str()));
        let begun = login::begin(
            &provider.endpoints.authorization_endpoint,
            &self.settings.client_id,
            &self.settings.scopes,
            self.local_url(req, &self.settings.redirect_path),
            original,
        );
        let Some((started, pending)) = begun else {
            return unavailable(&ProviderError::BadAnswer("randomness"));
        };
        let kept = self
            .state
            .sessions
            .keep_login(&self.state.logins, started.state.clone(), pending)
            .await;
        match kept {
            Ok(true) => {}
            Ok(false) => {
                return refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many logins in progress",
                    HeaderMap::new(),
                )
            }
            Err(e) => return store_down(&e),
        }
        let mut headers = HeaderMap::new();
        set_header(&mut headers, LOCATION, &started.url);
        let login = self.set_cookie(&self.login_cookie, &started.state, Some(login::LOGIN_TTL));
        set_header(&mut headers, SET_COOKIE, &login);
        redirect_answer(headers)
    }

    /// `scheme://host/path` on the host the client named.
    fn local_url(&self, req: &RequestFacts<'_>, path: &str) -> String {
        let scheme = if req.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", req.host.unwrap_or("localhost"))
    }

    /// A `Set-Cookie` value: host-only, `Path=/`, `HttpOnly`, `SameSite=Lax`, `Secure`
    /// when configured; `max_age` of zero removes the cookie, `None` keeps it for the
    /// browser session.
    fn set_cookie(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut out = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if self.settings.cookie_secure {
            out.push_str("; Secure");
        }
        if let Some(age) = max_age {
            out.push_str("; Max-Age=");
            out.push_str(itoa::Buffer::new().format(age.as_secs()));
        }
        out
    }
}

/// The state of the relying party named by `key`: the one the running configuration uses,
/// if any, else a new one from `make`.
fn kept_state(
    key: String,
    make: impl FnOnce() -> Result<State, OidcError>,
) -> Result<Arc<State>, OidcError> {
    static KEPT: Mutex<Option<HashMap<String, Weak<State>>>> = Mutex::new(None);
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    let map = kept.get_or_insert_with(HashMap::new);
    if let Some(state) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(state);
    }
    map.retain(|_, w| w.strong_count() > 0);
    let state = Arc::new(make()?);
    map.insert(key, Arc::downgrade(&state));
    Ok(state)
}

/// The tokens of a token answer, with an absolute expiry.
fn tokens_of(answer: TokenAnswer) -> Result<Tokens, ProviderError> {
    let bearer = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
        .map_err(|_| ProviderError::BadAnswer("token request"))?;
    Ok(Tokens {
        bearer,
        refresh: answer.refresh_token,
        expires_at: answer
            .expires_in
            .map(|secs| crate::timer::unix_seconds().saturating_add(secs)),
        id_token: answer.id_token.unwrap_or_default(),
        version: 0,
    })
}

fn store_down(e: &StoreError) -> Answer {
    tracing::warn!(error = %e, "session store unavailable");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "session store unavailable",
        HeaderMap::new(),
    )
}

/// Where to send the browser after login: the request's own path and query, unless it could
/// be read as another host (`//host`, `/\\host`): after a login, the gateway never
/// redirects off its own site.
fn return_path(path_and_query: &str) -> String {
    let b = path_and_query.as_bytes();
    let local = b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\'));
    if local {
        path_and_query.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Whether the client says it takes HTML (a browser navigation).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let media = media.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html")
        })
}

fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn append_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.append(name, v);
    }
}

/// An answer of the gateway's own; never stored by a cache (it concerns one browser).
fn no_store(status: StatusCode, mut headers: HeaderMap, problem: Option<&'static str>) -> Answer {
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Answer {
        status,
        headers,
        problem,
    }
}

fn redirect_answer(headers: HeaderMap) -> Answer {
    no_store(StatusCode::FOUND, headers, None)
}

fn refusal(status: StatusCode, detail: &'static str, headers: HeaderMap) -> Answer {
    no_store(status, headers, Some(detail))
}

fn unavailable(e: &ProviderError) -> Answer {
    tracing::warn!(error = %e, "identity provider unavailable");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "identity provider unavailable",
        HeaderMap::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_path_never_leaves_the_site() {
        assert_eq!(return_path("/a/b?c=1"), "/a/b?c=1");
        assert_eq!(return_path("//evil.example/x"), "/");
        assert_eq!(return_path("/\\evil.example"), "/");
        assert_eq!(return_path("*"), "/");
    }

    #[test]
    fn html_navigations_are_told_from_api_calls() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("application/json, */*"));
        assert!(!accepts_html(&h));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("text/html;q=0.9,application/xhtml+xml"),
        );
        assert!(accepts_html(&h));
    }
}
