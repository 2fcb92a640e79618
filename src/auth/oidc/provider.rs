//! The OpenID provider as the relying party sees it: its discovery document (fetched once,
//! fetched again after a failure), the ID-token verifier built from it, and the token
//! endpoint's grants (authorization code, refresh token, client credentials).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::login::form_encode;
use crate::auth::jwks::JwksSettings;
use crate::auth::jwt::{JwtSettings, JwtVerifier};

/// Largest discovery document or token answer read.
const MAX_BODY: usize = 256 * 1024;

/// Why a call to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider answered {status} to {what}: {error}")]
    Refused {
        what: &'static str,
        status: u16,
        /// The OAuth `error` code, when the answer had one.
        error: String,
    },
    #[error("provider answer to {0} is not valid")]
    BadAnswer(&'static str),
}

/// The endpoints of a discovery document this relying party uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// A discovered provider: its endpoints and a verifier of its ID tokens for one client.
pub struct Provider {
    pub endpoints: Endpoints,
    pub id_tokens: JwtVerifier,
}

/// A token endpoint answer (RFC 6749 §5.1).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
}

/// How the gateway authenticates itself at the token endpoint.
#[derive(Clone)]
pub struct ClientAuth {
    pub client_id: String,
    pub credential: Credential,
}

/// The client's proof at the token endpoint.
#[derive(Clone)]
pub enum Credential {
    /// `client_secret_basic`: the secret with HTTP Basic.
    Secret(String),
    /// `private_key_jwt` (RFC 7523 §2.2): an assertion signed with this key.
    PrivateKey(PrivateKey),
}

/// A private key for `private_key_jwt`.
#[derive(Clone)]
pub struct PrivateKey {
    pub key: jsonwebtoken::EncodingKey,
    pub alg: jsonwebtoken::Algorithm,
    /// `kid` of the assertion's header, naming the key in the client's registered JWKS.
    pub kid: Option<String>,
}

impl PrivateKey {
    /// Reads a PEM private key for `alg` (RS*, PS*, ES*, EdDSA).
    pub fn from_pem(
        pem: &[u8],
        alg: jsonwebtoken::Algorithm,
        kid: Option<String>,
    ) -> Result<PrivateKey, String> {
        use jsonwebtoken::{Algorithm as A, EncodingKey};
        let key = match alg {
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
                EncodingKey::from_rsa_pem(pem)
            }
            A::ES256 | A::ES384 => EncodingKey::from_ec_pem(pem),
            A::EdDSA => EncodingKey::from_ed_pem(pem),
            other => return Err(format!("{other:?} is not a private-key algorithm")),
        }
        .map_err(|e| format!("not a {alg:?} private key: {e}"))?;
        Ok(PrivateKey { key, alg, kid })
    }

    /// A client assertion for `client_id` at `audience` (the token endpoint), good for a
    /// minute, with a random `jti`.
    fn assertion(&self, client_id: &str, audience: &str) -> Result<String, ProviderError> {
        let now = crate::timer::unix_seconds();
        let jti = super::login::random_token().ok_or(ProviderError::BadAnswer("randomness"))?;
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": jti,
            "iat": now,
            "exp": now + 60,
        });
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| ProviderError::BadAnswer("a client assertion"))
    }
}

/// The `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("ClientAuth")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An HTTP client for provider calls: no redirects followed, every call bounded.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// Fetches the discovery document at `url` and builds the ID-token verifier of `client_id`
/// (issuer and audience checked, keys from the provider's JWKS).
pub async fn discover(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    leeway: Duration,
) -> Result<Provider, ProviderError> {
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = read_body(resp).await?;
    if status != 200 {
        return Err(ProviderError::Refused {
            what: "discovery",
            status,
            error: String::new(),
        });
    }
    let endpoints: Endpoints =
        serde_json::from_slice(&body).map_err(|_| ProviderError::BadAnswer("discovery"))?;
    let id_tokens = JwtVerifier::new(JwtSettings {
        jwks: Some(JwksSettings::new(endpoints.jwks_uri.clone())),
        issuers: vec![endpoints.issuer.clone()],
        audiences: vec![client_id.to_owned()],
        leeway,
        required_claims: vec!["sub".into(), "iat".into()],
        // Each ID token is checked once, at the callback.
        cache_size: 0,
        ..JwtSettings::default()
    })
    .map_err(|_| ProviderError::BadAnswer("discovery"))?;
    Ok(Provider {
        endpoints,
        id_tokens,
    })
}

/// One grant at the token endpoint, with the client authenticated by HTTP Basic
/// (`client_secret_basic`, RFC 6749 §2.3.1: both parts form-encoded first) or by a signed
/// assertion (`private_key_jwt`).
pub async fn grant(
    http: &reqwest::Client,
    token_endpoint: &str,
    client: &ClientAuth,
    params: &[(&str, &str)],
) -> Result<TokenAnswer, ProviderError> {
    use base64::Engine as _;
    let mut body = params
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = http.post(token_endpoint);
    match &client.credential {
        Credential::Secret(secret) => {
            let user = form_encode(&client.client_id);
            let pass = form_encode(secret);
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            request = request.header("authorization", format!("Basic {basic}"));
        }
        Credential::PrivateKey(key) => {
            let assertion = key.assertion(&client.client_id, token_endpoint)?;
            body.push_str("&client_id=");
            body.push_str(&form_encode(&client.client_id));
            body.push_str("&client_assertion_type=");
            body.push_str(&form_encode(JWT_BEARER));
            body.push_str("&client_assertion=");
            body.push_str(&assertion);
        }
    }
    let resp = request
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = read_body(resp).await?;
    if status != 200 {
        let error = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| e.error)
            .unwrap_or_default();
        return Err(ProviderError::Refused {
            what: "token request",
            status,
            error,
        });
    }
    let answer: TokenAnswer =
        serde_json::from_slice(&body).map_err(|_| ProviderError::BadAnswer("token request"))?;
    let bearer = answer
        .token_type
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
    if !bearer || answer.access_token.is_empty() {
        return Err(ProviderError::BadAnswer("token request"));
    }
    Ok(answer)
}

async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ProviderError::Unreachable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::BadAnswer("an oversized answer"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The provider of a relying party, discovered on first use and kept; a failed discovery
/// is tried again by the next request that needs it.
pub struct Discovery {
    url: String,
    client_id: String,
    leeway: Duration,
    found: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

impl Discovery {
    pub fn new(url: String, client_id: String, leeway: Duration) -> Discovery {
        Discovery {
            url,
            client_id,
            leeway,
            found: tokio::sync::Mutex::new(None),
        }
    }

    /// The provider, fetching its document when not known yet (one fetch at a time).
    pub async fn get(
        &self,
        http: &reqwest::Client,
        background: Option<&tokio::runtime::Handle>,
    ) -> Result<Arc<Provider>, ProviderError> {
        let mut found = self.found.lock().await;
        if let Some(p) = &*found {
            return Ok(p.clone());
        }
        let provider = Arc::new(discover(http, &self.url, &self.client_id, self.leeway).await?);
        if let Some(handle) = background {
            provider.id_tokens.start(handle);
        }
        *found = Some(provider.clone());
        Ok(provider)
    }
}
