//! Ferrogate: an HTTP API gateway.
//!
//! A request flows listener → [`serve`] (TLS, HTTP/1.1 or HTTP/2) → [`proxy`] (route, select
//! a target, forward, stream the response back) → the `log` phase. The configuration is
//! parsed and validated by [`config`], compiled into a [`snapshot::Snapshot`] and swapped
//! atomically on reload. [`gateway::Gateway`] runs it all; `docs/architecture.md` has the
//! whole picture.

pub mod admin;
pub mod ai;
pub mod auth;
pub mod background;
pub mod cache;
pub mod certs;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod geo;
pub mod listener;
pub mod message;
pub mod observe;
pub mod outgoing;
pub mod proxy;
pub mod queue;
pub mod quiet;
pub mod ratelimit;
pub mod redis_link;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod signal;
pub mod snapshot;
pub mod spare_buffers;
pub mod spare_maps;
pub mod timer;
pub mod tls;
pub mod trace_context;
pub mod transform;
pub mod tunnel;
pub mod upstream;
pub mod validate;
pub mod webhook;

pub use gateway::{Gateway, StartOptions};
