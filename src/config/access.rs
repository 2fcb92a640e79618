//! Validation of `consumers`, `auth` and the per-route access blocks (`auth`, `ip_rules`,
//! `cors`, `validate`). Each piece is also compiled once here, so `ferrogate check` reports
//! a bad key, hash, origin or schema with its key path instead of failing at load.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::file;
use super::model::*;
use super::validate::{opt_duration, Errors};
use crate::auth::acl::{AccessRule, ClaimMatch, Matchers};
use crate::auth::apikey::{ApiKeys, KeySource};
use crate::auth::basic::{BasicAuth, BasicSettings};
use crate::auth::consumer::{Consumer, ConsumerSet};
use crate::auth::cors::{CorsPolicy, CorsSettings, OriginRule};
use crate::auth::introspect::IntrospectionSettings;
use crate::auth::jwks::JwksSettings;
use crate::auth::jwt::{JwtSettings, KeyMaterial, KeySpec, PinnedKey, ALGORITHMS};
use crate::auth::mtls::{CertificateNameError, ConsumerFrom};
use crate::auth::token::TokenSource;
use crate::validate::params::{ParamIn, ParamRule, ParamRules};
use crate::validate::schema::BodySchemas;

/// Default cap on a validated request body.
const DEFAULT_VALIDATE_MAX_BODY: usize = 1024 * 1024;

/// `consumers:` and `auth:`.
pub(super) fn access_control(errs: &mut Errors, f: &file::File, base_dir: &Path) -> AccessControl {
    let consumers = consumers(errs, &f.consumers);
    let default_auth = file::Auth::default();
    let a = f.auth.as_ref().unwrap_or(&default_auth);
    errs.unknown_in("auth", &a);
    let consumer_header = a.consumer_header.as_ref().and_then(|h| {
        HeaderName::from_str(h)
            .map_err(|_| errs.push("auth.consumer_header", format!("invalid header name {h:?}")))
            .ok()
    });
    let methods = a
        .methods
        .iter()
        .filter_map(|(name, m)| {
            let at = format!("auth.methods.{name}");
            Some((name.clone(), method(errs, &at, m, base_dir)?))
        })
        .collect();
    AccessControl {
        consumers,
        consumer_header,
        methods,
    }
}

fn consumers(errs: &mut Errors, f: &BTreeMap<String, file::Consumer>) -> Vec<ConsumerDef> {
    let mut defs = Vec::with_capacity(f.len());
    let mut built = Vec::with_capacity(f.len());
    for (name, c) in f {
        let at = format!("consumers.{name}");
        errs.unknown_in(&at, &c);
        match Consumer::new(name, c.groups.clone(), c.metadata.clone()) {
            Ok(consumer) => built.push(consumer),
            Err(e) => errs.push(&at, e.to_string()),
        }
        defs.push(ConsumerDef {
            name: name.clone(),
            groups: c.groups.clone(),
            metadata: c.metadata.clone(),
            api_keys: c.api_keys.clone(),
            password_hash: c.password_hash.clone(),
            certificate_names: c.certificate_names.clone(),
        });
    }
    let Ok(set) = ConsumerSet::new(built) else {
        return defs;
    };
    // Keys, hashes and names are checked one consumer at a time, so each error has its own
    // path.
    let mut seen_keys: HashSet<String> = HashSet::new();
    let mut cert_names: HashMap<&str, &str> = HashMap::new();
    for d in &defs {
        let at = format!("consumers.{}", d.name);
        for (i, key) in d.api_keys.iter().enumerate() {
            let entry = vec![(d.name.clone(), key.to_ascii_lowercase())];
            if let Err(e) = ApiKeys::new(&set, entry) {
                errs.push(format!("{at}.api_keys[{i}]"), e.to_string());
            } else if !seen_keys.insert(key.to_ascii_lowercase()) {
                errs.push(
                    format!("{at}.api_keys[{i}]"),
                    "this key is configured twice",
                );
            }
        }
        if let Some(hash) = &d.password_hash {
            let entry = vec![(d.name.clone(), hash.clone())];
            let settings = basic_settings(None, Duration::ZERO);
            if let Err(e) = BasicAuth::new(&set, entry, &settings) {
                errs.push(format!("{at}.password_hash"), e.to_string());
            }
        }
        for (i, name) in d.certificate_names.iter().enumerate() {
            let problem = if name.is_empty() {
                Some(CertificateNameError::Empty)
            } else {
                cert_names
                    .get(name.as_str())
                    .map(|other| CertificateNameError::Duplicate {
                        name: name.clone(),
                        other: (*other).to_owned(),
                    })
            };
            match problem {
                Some(e) => errs.push(format!("{at}.certificate_names[{i}]"), e.to_string()),
                None => {
                    cert_names.insert(name, &d.name);
                }
            }
        }
    }
    defs
}

fn basic_settings(realm: Option<&str>, cache_ttl: Duration) -> BasicSettings {
    BasicSettings {
        realm: realm.unwrap_or("ferrogate").to_owned(),
        cache_ttl,
        cache_size: 10_000,
    }
}

fn method(
    errs: &mut Errors,
    at: &str,
    m: &file::AuthMethod,
    base_dir: &Path,
) -> Option<AuthMethodDef> {
    errs.unknown_in(at, &m);
    let kinds = [
        m.api_key.is_some(),
        m.basic.is_some(),
        m.jwt.is_some(),
        m.introspection.is_some(),
        m.mtls.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errs.push(
            at,
            "exactly one of api_key, basic, jwt, introspection and mtls is required",
        );
        return None;
    }
    if let Some(t) = &m.mtls {
        let at = format!("{at}.mtls");
        errs.unknown_in(&at, &t);
        let consumer_from = match t.consumer_from.as_deref() {
            None => ConsumerFrom::default(),
            Some(text) => ConsumerFrom::parse(text).or_else(|| {
                errs.push(
                    format!("{at}.consumer_from"),
                    format!(
                        "unknown source {text:?}; use subject_cn, san_dns, san_uri or san_email"
                    ),
                );
                None
            })?,
        };
        return Some(AuthMethodDef::Mtls { consumer_from });
    }
    if let Some(k) = &m.api_key {
        let at = format!("{at}.api_key");
        errs.unknown_in(&at, &k);
        let source = match (&k.header, &k.query) {
            (Some(h), None) => KeySource::Header(header_name(errs, &format!("{at}.header"), h)?),
            (None, Some(q)) if !q.is_empty() => KeySource::Query(q.clone()),
            (None, None) => KeySource::Header(HeaderName::from_static("x-api-key")),
            _ => {
                errs.push(&at, "one of header and query, not both");
                return None;
            }
        };
        return Some(AuthMethodDef::ApiKey {
            source,
            hide: k.hide_credentials.unwrap_or(false),
        });
    }
    if let Some(b) = &m.basic {
        let at = format!("{at}.basic");
        errs.unknown_in(&at, &b);
        let ttl = opt_duration(
            errs,
            &format!("{at}.cache_ttl"),
            &b.cache_ttl,
            Duration::from_secs(300),
        );
        let settings = basic_settings(b.realm.as_deref(), ttl);
        if let Err(e) = crate::auth::basic::challenge(&settings.realm) {
            errs.push(format!("{at}.realm"), e.to_string());
        }
        return Some(AuthMethodDef::Basic {
            settings,
            hide: b.hide_credentials.unwrap_or(false),
        });
    }
    if let Some(j) = &m.jwt {
        return jwt(errs, &format!("{at}.jwt"), j, base_dir);
    }
    let i = m.introspection.as_ref()?;
    let at = format!("{at}.introspection");
    errs.unknown_in(&at, &i);
    check_url(errs, &format!("{at}.url"), &i.url);
    if i.client_id.is_empty() {
        errs.push(format!("{at}.client_id"), "required");
    }
    let mut settings = IntrospectionSettings::new(&i.url, &i.client_id, &i.client_secret);
    settings.timeout = opt_duration(errs, &format!("{at}.timeout"), &i.timeout, settings.timeout);
    settings.max_cache_ttl = opt_duration(
        errs,
        &format!("{at}.max_cache_ttl"),
        &i.max_cache_ttl,
        settings.max_cache_ttl,
    );
    settings.cache_size = i.cache_size.unwrap_or(settings.cache_size);
    settings.token_type_hint = i.token_type_hint.clone();
    settings.required_scopes = i.required_scopes.clone();
    settings.forward_claims =
        forward_claims(errs, &format!("{at}.forward_claims"), &i.forward_claims);
    let source = token_source(errs, &format!("{at}.token"), i.token.as_ref())?;
    Some(AuthMethodDef::Introspection {
        settings,
        source,
        hide: i.hide_credentials.unwrap_or(false),
    })
}

fn jwt(errs: &mut Errors, at: &str, j: &file::Jwt, base_dir: &Path) -> Option<AuthMethodDef> {
    errs.unknown_in(at, &j);
    let mut settings = JwtSettings::default();
    for (i, k) in j.keys.iter().enumerate() {
        if let Some(spec) = jwt_key(errs, &format!("{at}.keys[{i}]"), k, base_dir) {
            settings.keys.push(spec);
        }
    }
    if let Some(s) = &j.jwks {
        let at = format!("{at}.jwks");
        errs.unknown_in(&at, &s);
        check_url(errs, &format!("{at}.url"), &s.url);
        let mut jwks = JwksSettings::new(&s.url);
        jwks.refresh_interval = opt_duration(
            errs,
            &format!("{at}.refresh_interval"),
            &s.refresh_interval,
            jwks.refresh_interval,
        );
        jwks.min_refetch_interval = opt_duration(
            errs,
            &format!("{at}.min_refetch_interval"),
            &s.min_refetch_interval,
            jwks.min_refetch_interval,
        );
        jwks.timeout = opt_duration(errs, &format!("{at}.timeout"), &s.timeout, jwks.timeout);
        for (i, a) in s.algorithms.iter().enumerate() {
            if let Some(alg) = algorithm(errs, &format!("{at}.algorithms[{i}]"), a) {
                jwks.algorithms.push(alg);
            }
        }
        settings.jwks = Some(jwks);
    }
    if settings.keys.is_empty() && settings.jwks.is_none() && j.keys.is_empty() {
        errs.push(at, "needs keys or jwks");
    }
    settings.issuers = j.issuers.clone();
    settings.audiences = j.audiences.clone();
    settings.leeway = opt_duration(errs, &format!("{at}.leeway"), &j.leeway, settings.leeway);
    if settings.leeway > Duration::from_secs(24 * 3600) {
        errs.push(format!("{at}.leeway"), "at most 24h");
    }
    settings.required_claims = j.required_claims.clone();
    settings.required_scopes = j.required_scopes.clone();
    settings.forward_claims =
        forward_claims(errs, &format!("{at}.forward_claims"), &j.forward_claims);
    settings.cache_size = j.cache_size.unwrap_or(settings.cache_size);
    settings.cache_ttl = opt_duration(
        errs,
        &format!("{at}.cache_ttl"),
        &j.cache_ttl,
        settings.cache_ttl,
    );
    let source = token_source(errs, &format!("{at}.token"), j.token.as_ref())?;
    Some(AuthMethodDef::Jwt {
        settings,
        source,
        hide: j.hide_credentials.unwrap_or(false),
    })
}

fn jwt_key(errs: &mut Errors, at: &str, k: &file::JwtKey, base_dir: &Path) -> Option<KeySpec> {
    errs.unknown_in(at, &k);
    let Some(alg) = k.alg.as_deref() else {
        errs.push(
            format!("{at}.alg"),
            "required: every key is pinned to one algorithm",
        );
        return None;
    };
    let alg = algorithm(errs, &format!("{at}.alg"), alg)?;
    let material = match (&k.secret, &k.pem, &k.pem_file, &k.jwk) {
        (Some(s), None, None, None) => KeyMaterial::Secret(s.as_bytes().to_vec()),
        (None, Some(p), None, None) => KeyMaterial::Pem(p.clone()),
        (None, None, Some(path), None) => match std::fs::read_to_string(base_dir.join(path)) {
            Ok(p) => KeyMaterial::Pem(p),
            Err(e) => {
                errs.push(
                    format!("{at}.pem_file"),
                    format!("cannot read {path:?}: {e}"),
                );
                return None;
            }
        },
        (None, None, None, Some(jwk)) => KeyMaterial::Jwk(jwk.clone()),
        _ => {
            errs.push(
                at,
                "exactly one of secret, pem, pem_file and jwk is required",
            );
            return None;
        }
    };
    let spec = KeySpec {
        kid: k.kid.clone(),
        alg,
        material,
    };
    if let Err(reason) = PinnedKey::from_spec(&spec) {
        errs.push(at, reason);
        return None;
    }
    Some(spec)
}

/// An algorithm this gateway verifies; `none` and unknown names are errors.
fn algorithm(errs: &mut Errors, at: &str, name: &str) -> Option<Algorithm> {
    let found = Algorithm::from_str(name)
        .ok()
        .filter(|a| ALGORITHMS.contains(a));
    if found.is_none() {
        errs.push(
            at,
            format!("unsupported algorithm {name:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
        );
    }
    found
}

fn token_source(errs: &mut Errors, at: &str, t: Option<&file::TokenSource>) -> Option<TokenSource> {
    let Some(t) = t else {
        return Some(TokenSource::bearer());
    };
    errs.unknown_in(at, &t);
    match (&t.header, &t.cookie, &t.query) {
        (Some(h), None, None) => Some(TokenSource::Header {
            name: header_name(errs, &format!("{at}.header"), h)?,
            scheme: t.scheme.clone().map(Cow::Owned),
        }),
        (None, Some(c), None) if t.scheme.is_none() => {
            Some(TokenSource::Cookie { name: c.clone() })
        }
        (None, None, Some(q)) if t.scheme.is_none() => Some(TokenSource::Query { name: q.clone() }),
        (None, None, None) => Some(TokenSource::bearer()),
        _ => {
            errs.push(
                at,
                "exactly one of header (with optional scheme), cookie and query",
            );
            None
        }
    }
}

pub(super) fn forward_claims(
    errs: &mut Errors,
    at: &str,
    f: &BTreeMap<String, String>,
) -> Vec<(String, HeaderName)> {
    f.iter()
        .filter_map(|(claim, h)| {
            Some((
                claim.clone(),
                header_name(errs, &format!("{at}.{claim}"), h)?,
            ))
        })
        .collect()
}

fn header_name(errs: &mut Errors, at: &str, h: &str) -> Option<HeaderName> {
    HeaderName::from_str(h)
        .map_err(|_| errs.push(at, format!("invalid header name {h:?}")))
        .ok()
}

pub(super) fn check_url(errs: &mut Errors, at: &str, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        errs.push(at, format!("{url:?} is not an http:// or https:// URL"));
    }
}

/// The route's `auth`, `ip_rules`, `cors` and `validate` blocks.
pub(super) fn route_access(
    errs: &mut Errors,
    at: &str,
    r: &file::Route,
    methods: &BTreeMap<String, file::AuthMethod>,
) -> RouteAccess {
    let mut access = RouteAccess {
        body_max: DEFAULT_VALIDATE_MAX_BODY,
        ..RouteAccess::default()
    };
    if let Some(a) = &r.auth {
        let at = format!("{at}.auth");
        errs.unknown_in(&at, &a);
        if a.methods.is_empty() {
            errs.push(format!("{at}.methods"), "at least one method");
        }
        for (i, name) in a.methods.iter().enumerate() {
            if !methods.contains_key(name) {
                errs.push(
                    format!("{at}.methods[{i}]"),
                    format!("no auth method named {name:?} under auth.methods"),
                );
            }
        }
        let rule = AccessRule {
            allow: matchers(errs, &format!("{at}.allow"), a.allow.as_ref()),
            deny: matchers(errs, &format!("{at}.deny"), a.deny.as_ref()),
        };
        access.auth = Some((a.methods.clone(), rule));
    }
    if let Some(o) = &r.oidc {
        access.oidc = super::oidc::route(errs, &format!("{at}.oidc"), o);
        if r.auth.is_some() {
            errs.push(
                format!("{at}.oidc"),
                "a route logs users in with oidc or checks credentials with auth, not both",
            );
        }
    }
    if let Some(ip) = &r.ip_rules {
        let at = format!("{at}.ip_rules");
        errs.unknown_in(&at, &ip);
        let nets = |errs: &mut Errors, key: &str, list: &[String]| -> Vec<IpNet> {
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    parse_net(s)
                        .map_err(|()| {
                            errs.push(
                                format!("{at}.{key}[{i}]"),
                                format!("invalid address or CIDR {s:?}"),
                            )
                        })
                        .ok()
                })
                .collect()
        };
        let allow = nets(errs, "allow", &ip.allow);
        let deny = nets(errs, "deny", &ip.deny);
        access.ip_rules = Some((allow, deny));
    }
    if let Some(c) = &r.cors {
        access.cors = cors(errs, &format!("{at}.cors"), c);
    }
    if let Some(v) = &r.validate {
        let at = format!("{at}.validate");
        errs.unknown_in(&at, &v);
        access.body_max = v.max_body_bytes.unwrap_or(DEFAULT_VALIDATE_MAX_BODY);
        access.body_schemas = v.body.iter().map(|(t, s)| (t.clone(), s.clone())).collect();
        if let Err(e) = BodySchemas::new(access.body_schemas.clone(), access.body_max) {
            errs.push(format!("{at}.body"), e.to_string());
        }
        for (i, p) in v.params.iter().enumerate() {
            let at = format!("{at}.params[{i}]");
            errs.unknown_in(&at, &p);
            let location = match p.location.as_deref() {
                None | Some("query") => ParamIn::Query,
                Some("header") => ParamIn::Header,
                Some(other) => {
                    errs.push(
                        format!("{at}.in"),
                        format!("{other:?} is not query or header"),
                    );
                    continue;
                }
            };
            let rule = ParamRule {
                name: p.name.clone(),
                location,
                required: p.required.unwrap_or(false),
                pattern: p.pattern.clone(),
                allowed: p.values.clone(),
                min: p.min,
                max: p.max,
                max_length: p.max_length,
            };
            match ParamRules::new(vec![rule.clone()]) {
                Ok(_) => access.params.push(rule),
                Err(e) => errs.push(at, e.to_string()),
            }
        }
    }
    access
}

fn parse_net(s: &str) -> Result<IpNet, ()> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ())
}

fn matchers(errs: &mut Errors, at: &str, m: Option<&file::Matchers>) -> Matchers {
    let Some(m) = m else {
        return Matchers::default();
    };
    errs.unknown_in(at, &m);
    Matchers {
        consumers: m.consumers.clone(),
        groups: m.groups.clone(),
        scopes: m.scopes.clone(),
        claims: m
            .claims
            .iter()
            .map(|(claim, values)| ClaimMatch {
                claim: claim.clone(),
                values: values.clone(),
            })
            .collect(),
    }
}

fn cors(errs: &mut Errors, at: &str, c: &file::Cors) -> Option<CorsSettings> {
    errs.unknown_in(at, &c);
    let mut methods = Vec::with_capacity(c.methods.len());
    for (i, m) in c.methods.iter().enumerate() {
        match Method::from_str(m) {
            Ok(m) => methods.push(m),
            Err(_) => errs.push(
                format!("{at}.methods[{i}]"),
                format!("invalid method {m:?}"),
            ),
        }
    }
    if c.origins.is_empty() && c.origin_regexes.is_empty() {
        errs.push(format!("{at}.origins"), "at least one origin (or `*`)");
    }
    let settings = CorsSettings {
        origins: c
            .origins
            .iter()
            .map(|o| OriginRule::parse(o))
            .chain(
                c.origin_regexes
                    .iter()
                    .map(|r| OriginRule::Regex(r.clone())),
            )
            .collect(),
        methods,
        allowed_headers: c.allowed_headers.clone(),
        exposed_headers: c.exposed_headers.clone(),
        credentials: c.credentials.unwrap_or(false),
        max_age: c
            .max_age
            .as_ref()
            .map(|_| opt_duration(errs, &format!("{at}.max_age"), &c.max_age, Duration::ZERO)),
    };
    match CorsPolicy::new(&settings) {
        Ok(_) => Some(settings),
        Err(e) => {
            errs.push(at, e.to_string());
            None
        }
    }
}
