//! The gateway's own downstream HTTP/2 server: HPACK (`hpack/`).

pub mod hpack;
