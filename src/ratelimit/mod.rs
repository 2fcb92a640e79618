//! Rate limiting: policies, keys and the stores that count them.

pub mod spec;
