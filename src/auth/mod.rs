//! Authentication and authorization building blocks: consumers and their credentials (API
//! keys, Basic), JWT with JWKS, OAuth 2.0 token introspection, OpenID Connect login
//! sessions, client certificates (mTLS),
//! access rules, IP rules and CORS. Each is a library piece with its own tests; the proxy's
//! `access` phase applies them per route.

pub mod acl;
pub mod apikey;
pub mod basic;
pub mod consumer;
pub mod cors;
pub mod gate;
pub mod introspect;
pub mod iprules;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod oidc;
pub mod token;
