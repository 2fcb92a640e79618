//! The gateway's own access token toward an upstream group: obtained with the OAuth 2.0
//! client credentials grant (RFC 6749 §4.4), kept until shortly before it expires, and
//! fetched again by one request while the others wait (single flight). A warm token costs one
//! atomic load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use super::provider::{self, ClientAuth, Credential, ProviderError};

/// An upstream group's `client_credentials`, validated.
#[derive(Clone)]
pub struct ClientCredentialsSettings {
    /// The provider's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// The client secret, or the private key of `private_key_jwt`.
    pub credential: Credential,
    /// Space-separated scopes asked for; empty asks for none.
    pub scope: String,
    /// Sent as `audience` (Auth0 and others name the API this way).
    pub audience: Option<String>,
    /// A token this close to expiry is replaced before it is used.
    pub refresh_before: Duration,
    /// Bound on the token request.
    pub timeout: Duration,
}

impl std::fmt::Debug for ClientCredentialsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentialsSettings")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Lifetime assumed when the provider gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// The token of one upstream group.
pub struct UpstreamToken {
    settings: ClientCredentialsSettings,
    client: ClientAuth,
    http: reqwest::Client,
    current: ArcSwapOption<Cached>,
    /// Held by the request that fetches; the others wait on it, then read `current`.
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    bearer: HeaderValue,
    /// When to fetch a new one.
    renew_at: Instant,
}

impl UpstreamToken {
    pub fn new(settings: ClientCredentialsSettings) -> Result<UpstreamToken, String> {
        Ok(UpstreamToken {
            http: provider::http_client(settings.timeout)?,
            client: ClientAuth {
                client_id: settings.client_id.clone(),
                credential: settings.credential.clone(),
            },
            settings,
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// `Bearer <token>` for the upstream request.
    pub async fn bearer(&self) -> Result<HeaderValue, ProviderError> {
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let _only = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let s = &self.settings;
        let mut params = vec![("grant_type", "client_credentials")];
        if !s.scope.is_empty() {
            params.push(("scope", &s.scope));
        }
        if let Some(a) = &s.audience {
            params.push(("audience", a));
        }
        let answer = provider::grant(&self.http, &s.token_url, &self.client, &params).await?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| ProviderError::BadAnswer("token request"))?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        // Never renew later than halfway through a short-lived token.
        let early = s.refresh_before.min(lifetime / 2);
        self.current.store(Some(Arc::new(Cached {
            bearer: bearer.clone(),
            renew_at: Instant::now() + (lifetime - early),
        })));
        Ok(bearer)
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let cached = self.current.load();
        let c = cached.as_ref()?;
        (Instant::now() < c.renew_at).then(|| c.bearer.clone())
    }
}
