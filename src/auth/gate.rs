//! A route's access phase, compiled: CORS preflight, IP rules, authentication (any of the
//! route's methods), authorization, and parameter validation, in that order. Built per
//! snapshot from the validated config; the proxy calls it before rate limiting.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use http::Method;

use super::acl::{AccessRule, Denial};
use super::apikey::{ApiKeys, KeySource};
use super::basic::{BasicAuth, BasicCredentials};
use super::consumer::{Consumer, ConsumerSet, Identity};
use super::cors::{CorsPolicy, Preflight};
use super::introspect::Introspector;
use super::iprules::IpRules;
use super::jwt::{AuthFailure, JwtVerifier, Verified};
use super::mtls::{CertificateNames, ConsumerFrom};
use super::oidc::RelyingParty;
use super::token::{self, TokenSource};
use crate::certs::ClientCert;
use crate::config::model::{AccessControl, AuthMethodDef, RouteAccess};
use crate::validate::params::ParamRules;
use crate::validate::schema::{BodySchemas, Violation};

/// Why the access phase refused a request. The text is for the log; clients get a generic
/// problem body (no credential, claim or address is ever echoed).
#[derive(Debug)]
pub enum Denied {
    /// 401, with one `WWW-Authenticate` challenge per accepted method.
    Unauthenticated {
        challenges: Vec<HeaderValue>,
        reason: String,
    },
    /// 403: IP rules, authorization, or a refused CORS preflight.
    Forbidden(String),
    /// 403 to a valid bearer token without a scope the route needs (RFC 6750 §3.1), with
    /// its `WWW-Authenticate` challenge.
    InsufficientScope {
        challenge: HeaderValue,
        reason: String,
    },
    /// 503: the identity provider could not answer.
    Unavailable(String),
    /// 400: parameter or body validation, with the failing locations.
    Invalid(Vec<Violation>),
}

/// What a successful authentication hands to the rest of the request.
pub struct Authenticated {
    pub identity: Identity,
    /// Claim headers to set upstream.
    pub forward: Vec<(HeaderName, HeaderValue)>,
    /// Where the credential was, when the method hides it from the upstream.
    pub hide: Option<Hidden>,
}

/// A credential to remove before the request goes upstream.
pub enum Hidden {
    Header(HeaderName),
    Query(String),
    /// One cookie of the `Cookie` fields (a login session's).
    Cookie(String),
}

/// The configured consumers and methods of one snapshot.
pub struct Authenticators {
    methods: HashMap<String, Arc<Authenticator>>,
    /// Header telling the upstream the consumer's name.
    pub consumer_header: Option<HeaderName>,
    /// Where provider fetchers (JWKS of OIDC routes) run.
    background: Option<tokio::runtime::Handle>,
}

/// One named authentication method, ready to run.
pub enum Authenticator {
    ApiKey {
        source: KeySource,
        keys: Arc<ApiKeys>,
        hide: bool,
    },
    Basic {
        auth: Arc<BasicAuth>,
        hide: bool,
    },
    Jwt {
        verifier: JwtVerifier,
        source: TokenSource,
        consumers: Arc<ConsumerSet>,
        hide: bool,
    },
    Introspection {
        introspector: Arc<Introspector>,
        source: TokenSource,
        consumers: Arc<ConsumerSet>,
        hide: bool,
    },
    Mtls {
        from: ConsumerFrom,
        names: Arc<CertificateNames>,
    },
}

/// A setting that passed validation but failed to compile (e.g. no randomness).
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct GateError {
    pub at: String,
    pub message: String,
}

fn gate_error(at: impl Into<String>, e: impl ToString) -> GateError {
    GateError {
        at: at.into(),
        message: e.to_string(),
    }
}

impl Authenticators {
    /// Compiles consumers and methods; token fetchers start on `background`.
    pub fn build(
        access: &AccessControl,
        background: &crate::background::Background,
    ) -> Result<Authenticators, GateError> {
        let mut list = Vec::with_capacity(access.consumers.len());
        for c in &access.consumers {
            let consumer = Consumer::new(&c.name, c.groups.clone(), c.metadata.clone())
                .map_err(|e| gate_error(format!("consumers.{}", c.name), e))?;
            list.push(consumer);
        }
        let consumers = Arc::new(ConsumerSet::new(list).map_err(|e| gate_error("consumers", e))?);
        // One key map for every api_key method: keys belong to consumers, not to methods.
        let key_entries: Vec<(String, String)> = access
            .consumers
            .iter()
            .flat_map(|c| {
                c.api_keys
                    .iter()
                    .map(|k| (c.name.clone(), k.to_ascii_lowercase()))
            })
            .collect();
        let keys = Arc::new(
            ApiKeys::new(&consumers, key_entries).map_err(|e| gate_error("consumers", e))?,
        );
        let cert_entries = access.consumers.iter().flat_map(|c| {
            c.certificate_names
                .iter()
                .map(|n| (c.name.clone(), n.clone()))
        });
        let cert_names = Arc::new(
            CertificateNames::new(&consumers, cert_entries)
                .map_err(|e| gate_error("consumers", e))?,
        );
        let password_entries: Vec<(String, String)> = access
            .consumers
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.password_hash.clone()?)))
            .collect();
        let mut methods = HashMap::with_capacity(access.methods.len());
        for (name, def) in &access.methods {
            let at = format!("auth.methods.{name}");
            let method = match def {
                AuthMethodDef::ApiKey { source, hide } => Authenticator::ApiKey {
                    source: source.clone(),
                    keys: keys.clone(),
                    hide: *hide,
                },
                AuthMethodDef::Basic { settings, hide } => Authenticator::Basic {
                    auth: Arc::new(
                        BasicAuth::new(&consumers, password_entries.clone(), settings)
                            .map_err(|e| gate_error(&at, e))?,
                    ),
                    hide: *hide,
                },
                AuthMethodDef::Jwt {
                    settings,
                    source,
                    hide,
                } => {
                    let verifier =
                        JwtVerifier::new(settings.clone()).map_err(|e| gate_error(&at, e))?;
                    if settings.jwks.is_some() {
                        let handle = background
                            .handle()
                            .map_err(|e| gate_error(&at, format!("background runtime: {e}")))?;
                        if let Some(handle) = handle {
                            verifier.start(&handle);
                        }
                    }
                    Authenticator::Jwt {
                        verifier,
                        source: source.clone(),
                        consumers: consumers.clone(),
                        hide: *hide,
                    }
                }
                AuthMethodDef::Introspection {
                    settings,
                    source,
                    hide,
                } => Authenticator::Introspection {
                    introspector: Arc::new(
                        Introspector::new(settings.clone()).map_err(|e| gate_error(&at, e))?,
                    ),
                    source: source.clone(),
                    consumers: consumers.clone(),
                    hide: *hide,
                },
                AuthMethodDef::Mtls { consumer_from } => Authenticator::Mtls {
                    from: *consumer_from,
                    names: cert_names.clone(),
                },
            };
            methods.insert(name.clone(), Arc::new(method));
        }
        Ok(Authenticators {
            methods,
            consumer_header: access.consumer_header.clone(),
            background: background.handle().ok().flatten(),
        })
    }
}

/// The access phase of one route.
pub struct Gate {
    cors: Option<CorsPolicy>,
    ip: Option<IpRules>,
    auth: Option<RouteAuth>,
    params: Option<ParamRules>,
    body: Option<Arc<BodySchemas>>,
    oidc: Option<Arc<RelyingParty>>,
}

struct RouteAuth {
    methods: Vec<Arc<Authenticator>>,
    rule: AccessRule,
}

impl Gate {
    /// `None` when the route has no access settings at all (the common, free case).
    pub fn build(
        route: &str,
        access: &RouteAccess,
        all: &Authenticators,
    ) -> Result<Option<Gate>, GateError> {
        let at = |key: &str| format!("routes.{route}.{key}");
        let cors = match &access.cors {
            Some(c) => Some(CorsPolicy::new(c).map_err(|e| gate_error(at("cors"), e))?),
            None => None,
        };
        let ip = access
            .ip_rules
            .as_ref()
            .map(|(allow, deny)| IpRules::new(allow, deny));
        let auth = match &access.auth {
            Some((names, rule)) => {
                let mut methods = Vec::with_capacity(names.len());
                for name in names {
                    let m = all.methods.get(name).ok_or_else(|| {
                        gate_error(at("auth.methods"), format!("no method {name:?}"))
                    })?;
                    methods.push(m.clone());
                }
                Some(RouteAuth {
                    methods,
                    rule: rule.clone(),
                })
            }
            None => None,
        };
        let params = if access.params.is_empty() {
            None
        } else {
            Some(
                ParamRules::new(access.params.clone())
                    .map_err(|e| gate_error(at("validate"), e))?,
            )
        };
        let body = if access.body_schemas.is_empty() {
            None
        } else {
            Some(Arc::new(
                BodySchemas::new(access.body_schemas.clone(), access.body_max)
                    .map_err(|e| gate_error(at("validate.body"), e))?,
            ))
        };
        let oidc = match &access.oidc {
            Some(settings) => Some(Arc::new(
                RelyingParty::new(route, settings.clone(), all.background.clone())
                    .map_err(|e| gate_error(at("oidc"), e))?,
            )),
            None => None,
        };
        if cors.is_none()
            && ip.is_none()
            && auth.is_none()
            && params.is_none()
            && body.is_none()
            && oidc.is_none()
        {
            return Ok(None);
        }
        Ok(Some(Gate {
            cors,
            ip,
            auth,
            params,
            body,
            oidc,
        }))
    }

    /// A CORS preflight this route answers itself, if the request is one.
    pub fn preflight(&self, headers: &HeaderMap, method: &Method) -> Preflight {
        match &self.cors {
            Some(c) => c.preflight(headers, method),
            None => Preflight::NotCors,
        }
    }

    /// The CORS fields for the response to this (non-preflight) request, computed while the
    /// request headers are at hand.
    pub fn cors_fields(&self, request: &HeaderMap) -> Option<HeaderMap> {
        let policy = self.cors.as_ref()?;
        let mut fields = HeaderMap::new();
        policy.actual(request, &mut fields);
        Some(fields)
    }

    /// IP rules on the trusted client address.
    pub fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), Denied> {
        match &self.ip {
            Some(rules) => rules
                .check(ip)
                .map_err(|e| Denied::Forbidden(e.to_string())),
            None => Ok(()),
        }
    }

    /// Whether the route authenticates at all.
    pub fn authenticates(&self) -> bool {
        self.auth.is_some() || self.oidc.is_some()
    }

    /// The route's OpenID Connect relying party, when it logs users in.
    pub fn oidc(&self) -> Option<&RelyingParty> {
        self.oidc.as_deref()
    }

    /// Header names the route's methods set upstream (client copies must go).
    pub fn forwarded_headers(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = self
            .oidc
            .iter()
            .flat_map(|rp| rp.forwarded_headers().cloned())
            .collect();
        for m in self.auth.iter().flat_map(|a| &a.methods) {
            match &**m {
                Authenticator::Jwt { verifier, .. } => {
                    names.extend(verifier.forwarded_headers().cloned());
                }
                Authenticator::Introspection { introspector, .. } => {
                    names.extend(introspector.forwarded_headers().cloned());
                }
                _ => {}
            }
        }
        names
    }

    /// Authenticates with the first method that accepts the request, then authorizes.
    /// `client_cert` is the certificate the connection's TLS handshake verified, if any.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client_cert: Option<&ClientCert>,
    ) -> Result<Option<Authenticated>, Denied> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let mut failures: Vec<AuthFailure> = Vec::new();
        let mut challenges = Vec::with_capacity(auth.methods.len());
        for method in &auth.methods {
            match method.run(headers, query, client_cert).await {
                Ok(found) => {
                    auth.rule.check(&found.identity).map_err(|d| {
                        // A token the allow list refused lacks one of its scopes (RFC 6750
                        // §3.1: named in the challenge); a deny-list hit is a plain 403.
                        let token = matches!(found.identity.method, "jwt" | "introspection");
                        let short = matches!(d, Denial::NotAllowed { .. });
                        match token && short && auth.rule.allows_by_scope() {
                            true => Denied::InsufficientScope {
                                challenge: super::jwt::insufficient_scope(Some(
                                    &auth.rule.allowed_scopes().join(" "),
                                )),
                                reason: d.to_string(),
                            },
                            false => Denied::Forbidden(d.to_string()),
                        }
                    })?;
                    return Ok(Some(found));
                }
                Err((failure, challenge)) => {
                    challenges.extend(challenge);
                    failures.push(failure);
                }
            }
        }
        // A valid token short of a scope is a 403 (RFC 6750 §3.1), not a missing credential.
        if let Some(f @ AuthFailure::MissingScope(_)) = failures
            .iter()
            .find(|f| matches!(f, AuthFailure::MissingScope(_)))
        {
            let challenge = f
                .www_authenticate()
                .unwrap_or(super::jwt::insufficient_scope(None));
            let reason = f.to_string();
            return Err(Denied::InsufficientScope { challenge, reason });
        }
        // A provider outage only decides the answer when no method saw a bad credential:
        // a forged token stays a 401 whatever the identity provider is doing.
        let presented = failures
            .iter()
            .filter(|f| !matches!(f, AuthFailure::MissingToken));
        if let Some(down) = failures.iter().find(|f| f.is_unavailable()) {
            if presented.clone().all(AuthFailure::is_unavailable) {
                return Err(Denied::Unavailable(down.to_string()));
            }
        }
        let reason = presented
            .clone()
            .next()
            .or(failures.first())
            .map_or_else(|| "no credential".to_owned(), ToString::to_string);
        Err(Denied::Unauthenticated { challenges, reason })
    }

    /// Query and header parameter rules.
    pub fn check_params(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), Denied> {
        match &self.params {
            Some(rules) => rules.check(headers, query).map_err(Denied::Invalid),
            None => Ok(()),
        }
    }

    /// The body schemas, when the route validates bodies.
    pub fn body_schemas(&self) -> Option<&Arc<BodySchemas>> {
        self.body.as_ref()
    }
}

type Failed = (AuthFailure, Option<HeaderValue>);

impl Authenticator {
    async fn run(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client_cert: Option<&ClientCert>,
    ) -> Result<Authenticated, Failed> {
        match self {
            Authenticator::ApiKey { source, keys, hide } => {
                let challenge = Some(HeaderValue::from_static("Key realm=\"ferrogate\""));
                let Some(key) = source.extract(headers, query) else {
                    return Err((AuthFailure::MissingToken, challenge));
                };
                let consumer = keys.authenticate(&key).ok_or((
                    AuthFailure::MalformedCredential("unknown api key"),
                    challenge,
                ))?;
                Ok(Authenticated {
                    identity: Identity::for_consumer(consumer, "api_key"),
                    forward: Vec::new(),
                    hide: hide.then(|| match source {
                        KeySource::Header(h) => Hidden::Header(h.clone()),
                        KeySource::Query(q) => Hidden::Query(q.clone()),
                    }),
                })
            }
            Authenticator::Basic { auth, hide } => {
                let challenge = Some(auth.challenge().clone());
                let mut values = headers.get_all(AUTHORIZATION).iter();
                let (Some(value), None) = (values.next(), values.next()) else {
                    return Err((AuthFailure::MissingToken, challenge));
                };
                let Ok(creds) = BasicCredentials::parse(value.as_bytes()) else {
                    let failure = if is_scheme(value.as_bytes(), b"basic") {
                        AuthFailure::MalformedCredential("bad basic credentials")
                    } else {
                        AuthFailure::MissingToken
                    };
                    return Err((failure, challenge));
                };
                let consumer = verify_basic(auth, creds).await.ok_or((
                    AuthFailure::MalformedCredential("wrong user or password"),
                    challenge,
                ))?;
                Ok(Authenticated {
                    identity: Identity::for_consumer(consumer, "basic"),
                    forward: Vec::new(),
                    hide: hide.then_some(Hidden::Header(AUTHORIZATION)),
                })
            }
            Authenticator::Jwt {
                verifier,
                source,
                consumers,
                hide,
            } => {
                let token = token_of(source, headers, query)?;
                let verified = verifier.verify(&token).await.map_err(with_bearer)?;
                Ok(token_identity(&verified, consumers, "jwt", source, *hide))
            }
            Authenticator::Introspection {
                introspector,
                source,
                consumers,
                hide,
            } => {
                let token = token_of(source, headers, query)?;
                let verified = introspector.introspect(&token).await.map_err(with_bearer)?;
                Ok(token_identity(
                    &verified,
                    consumers,
                    "introspection",
                    source,
                    *hide,
                ))
            }
            // No HTTP challenge exists for a certificate: a client that lacks one learns
            // nothing from a WWW-Authenticate field.
            Authenticator::Mtls { from, names } => Ok(Authenticated {
                identity: names.identify(client_cert, *from).map_err(|f| (f, None))?,
                forward: Vec::new(),
                hide: None,
            }),
        }
    }
}

/// Basic verification hashes (bcrypt/argon2, tens of milliseconds): on the blocking pool
/// unless the credential was verified recently.
async fn verify_basic(auth: &Arc<BasicAuth>, creds: BasicCredentials) -> Option<Arc<Consumer>> {
    let now = Instant::now();
    if let Some(consumer) = auth.cached(&creds, now) {
        return Some(consumer);
    }
    let auth = auth.clone();
    tokio::task::spawn_blocking(move || auth.verify(&creds, now))
        .await
        .ok()
        .flatten()
}

fn is_scheme(value: &[u8], scheme: &[u8]) -> bool {
    value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && value[scheme.len()] == b' '
}

fn token_of<'a>(
    source: &TokenSource,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Cow<'a, str>, Failed> {
    token::extract(source, headers, query).map_err(with_bearer)
}

fn with_bearer(failure: AuthFailure) -> Failed {
    let challenge = failure.www_authenticate();
    (failure, challenge)
}

fn token_identity(
    verified: &Verified,
    consumers: &ConsumerSet,
    method: &'static str,
    source: &TokenSource,
    hide: bool,
) -> Authenticated {
    let consumer = verified
        .subject
        .as_deref()
        .and_then(|s| consumers.by_subject(s))
        .cloned();
    Authenticated {
        identity: Identity {
            consumer,
            subject: verified.subject.clone(),
            scopes: verified.scopes.clone(),
            claims: Some(verified.claims.clone()),
            method,
        },
        forward: verified.forward.clone(),
        hide: hide
            .then(|| match source {
                TokenSource::Header { name, .. } => Some(Hidden::Header(name.clone())),
                TokenSource::Query { name } => Some(Hidden::Query(name.clone())),
                // A cookie header carries other cookies too; it is left as is.
                TokenSource::Cookie { .. } => None,
            })
            .flatten(),
    }
}
