//! HTTP caching as RFC 9111 describes a shared cache: the decisions (what may be stored,
//! how fresh it is, which stored response a request selects, how to validate it) as pure
//! functions over `http` types and explicit times, so each rule is testable without I/O.

pub mod conditional;
pub mod control;
pub mod date;
pub mod freshness;
pub mod invalidate;
pub mod key;
pub mod range;
pub mod service;
pub mod shared;
pub mod status;
pub mod storable;
pub mod store;
pub mod vary;
