//! The paths the relying party answers itself: the provider's login callback, the user's
//! logout (RP-initiated) and the provider's back-channel logout.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use http::StatusCode;

use super::login::{self, param};
use super::provider::{self, ProviderError};
use super::session::{cookie, Session};
use super::{
    append_header, no_store, redirect_answer, refusal, set_header, store_down, tokens_of,
    unavailable, Answer, RelyingParty, RequestFacts,
};

impl RelyingParty {
    /// OpenID Connect Back-Channel Logout 1.0: `body` is the provider's form with a
    /// `logout_token`, a JWT signed by the provider for this client, with the logout event,
    /// a `sid` or `sub`, and no `nonce` (§2.6). The sessions it names end here.
    pub async fn backchannel_logout(&self, body: &[u8]) -> Answer {
        let form = std::str::from_utf8(body).unwrap_or("");
        let Some(token) = param(form, "logout_token") else {
            return bad_logout("no logout_token");
        };
        let provider = match self.provider().await {
            Ok(p) => p,
            Err(e) => return unavailable(&e),
        };
        let verified = match provider.id_tokens.verify(&token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(error = %e, "logout token refused");
                return bad_logout("logout token not valid");
            }
        };
        let claims = &verified.claims;
        let event = claims
            .get("events")
            .and_then(|e| e.get(BACKCHANNEL_EVENT))
            .is_some_and(serde_json::Value::is_object);
        if !event || claims.contains_key("nonce") {
            return bad_logout("not a logout token");
        }
        let sid = claims.get("sid").and_then(|s| s.as_str());
        let sub = claims.get("sub").and_then(|s| s.as_str());
        if sid.is_none() && sub.is_none() {
            return bad_logout("logout token names no session");
        }
        let ended = match self.state.sessions.end_matching(sid, sub).await {
            Ok(n) => n,
            Err(e) => return store_down(&e),
        };
        tracing::info!(ended, "back-channel logout");
        no_store(StatusCode::OK, HeaderMap::new(), None)
    }

    /// The provider's redirect back: the `state` must be one this gateway issued, unused,
    /// to this browser; the code is exchanged and the ID token verified; then a new session
    /// (a new id: a session id set before login is never taken over) and back to the page.
    pub(super) async fn callback(&self, req: &RequestFacts<'_>) -> Answer {
        let query = req.uri.query().unwrap_or("");
        let Some(state) = param(query, "state") else {
            return bad_callback("callback without state");
        };
        // Taken first: whatever happens next, a state is good for one callback only.
        let login = match self
            .state
            .sessions
            .take_login(&self.state.logins, &state)
            .await
        {
            Ok(Some(login)) => login,
            Ok(None) => return bad_callback("unknown, expired or used state"),
            Err(e) => return store_down(&e),
        };
        if cookie(req.headers, &self.login_cookie) != Some(state.as_str()) {
            return bad_callback("login was started in another browser");
        }
        if param(query, "error").is_some() {
            return refusal(
                StatusCode::FORBIDDEN,
                "the provider refused the login",
                HeaderMap::new(),
            );
        }
        let Some(code) = param(query, "code") else {
            return bad_callback("callback without code");
        };
        let provider = match self.provider().await {
            Ok(p) => p,
            Err(e) => return unavailable(&e),
        };
        if let Some(iss) = param(query, "iss") {
            // RFC 9207: a mix-up with another provider shows in the issuer it names.
            if iss != provider.endpoints.issuer {
                return bad_callback("callback from another issuer");
            }
        }
        let answer = provider::grant(
            &self.http,
            &provider.endpoints.token_endpoint,
            &self.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &login.redirect_uri),
                ("code_verifier", &login.verifier),
            ],
        )
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e @ ProviderError::Refused { .. }) => {
                tracing::info!(error = %e, "code exchange refused");
                return bad_callback("the provider refused the code");
            }
            Err(e) => return unavailable(&e),
        };
        let Some(id_token) = answer.id_token.clone() else {
            return bad_callback("no id token in the token answer");
        };
        let verified = match provider.id_tokens.verify(&id_token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(error = %e, "id token refused");
                return bad_callback("id token not valid");
            }
        };
        let nonce = verified.claims.get("nonce").and_then(|n| n.as_str());
        if nonce != Some(login.nonce.as_str()) {
            return bad_callback("id token nonce does not match the login");
        }
        let Some(subject) = verified.subject.clone() else {
            return bad_callback("id token without subject");
        };
        let tokens = match tokens_of(answer) {
            Ok(t) => t,
            Err(_) => return bad_callback("token answer not usable"),
        };
        let forward = self
            .settings
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = verified.claims.get(claim)?;
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((header.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        let sid = verified
            .claims
            .get("sid")
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        let session = Session::new(subject, sid, verified.claims.clone(), forward, tokens);
        let Some(id) = login::random_token() else {
            return unavailable(&ProviderError::BadAnswer("randomness"));
        };
        let stored = match self
            .state
            .sessions
            .insert(&id, Arc::new(session), self.life)
            .await
        {
            Ok(stored) => stored,
            Err(e) => return store_down(&e),
        };
        if !stored {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sessions",
                HeaderMap::new(),
            );
        }
        let mut headers = HeaderMap::new();
        set_header(&mut headers, LOCATION, &login.original);
        let session_cookie = self.set_cookie(&self.cookie, &id, None);
        set_header(&mut headers, SET_COOKIE, &session_cookie);
        let cleared = self.set_cookie(&self.login_cookie, "", Some(Duration::ZERO));
        append_header(&mut headers, SET_COOKIE, &cleared);
        redirect_answer(headers)
    }

    /// RP-initiated logout: the session ends here, then the provider's end-session endpoint
    /// ends the user's session there (with the ID token as hint).
    pub(super) async fn logout(&self, req: &RequestFacts<'_>) -> Answer {
        let mut ended = None;
        if let Some(id) = cookie(req.headers, &self.cookie) {
            ended = match self.state.sessions.get(id, self.life).await {
                Ok(found) => found,
                Err(e) => return store_down(&e),
            };
            if let Err(e) = self.state.sessions.remove(id).await {
                return store_down(&e);
            }
        }
        let after = match &self.settings.post_logout_redirect {
            Some(to) if to.starts_with('/') => self.local_url(req, to),
            Some(to) => to.clone(),
            None => self.local_url(req, "/"),
        };
        let mut to = after.clone();
        if let (Some(session), Ok(provider)) = (ended, self.provider().await) {
            if let Some(end) = &provider.endpoints.end_session_endpoint {
                let hint = session.tokens.lock().await.id_token.clone();
                let sep = if end.contains('?') { '&' } else { '?' };
                to = format!(
                    "{end}{sep}id_token_hint={}&post_logout_redirect_uri={}&client_id={}",
                    login::form_encode(&hint),
                    login::form_encode(&after),
                    login::form_encode(&self.settings.client_id),
                );
            }
        }
        let mut headers = HeaderMap::new();
        set_header(&mut headers, LOCATION, &to);
        let cleared = self.set_cookie(&self.cookie, "", Some(Duration::ZERO));
        set_header(&mut headers, SET_COOKIE, &cleared);
        redirect_answer(headers)
    }
}

/// The event a back-channel logout token carries.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token refused: 400 (§2.8), and no session ends.
fn bad_logout(detail: &'static str) -> Answer {
    tracing::info!(reason = detail, "back-channel logout refused");
    refusal(StatusCode::BAD_REQUEST, detail, HeaderMap::new())
}

/// A callback refused: 400 with the reason (no session is created).
fn bad_callback(detail: &'static str) -> Answer {
    tracing::info!(reason = detail, "oidc callback refused");
    refusal(StatusCode::BAD_REQUEST, detail, HeaderMap::new())
}
