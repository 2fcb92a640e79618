//! WebSocket tunnels: after a `101 Switching Protocols`, the relay of bytes between the
//! client and the upstream for as long as the tunnel lives, and what ends it.
//!
//! Each direction (`flow`) copies bytes and follows WebSocket frame boundaries as they pass
//! (`frames`), so that the gateway can write a frame of its own between two frames: a close
//! frame (1001 when the tunnel times out or the gateway shuts down, 1009 to a side that
//! sends a message over the route's limit) or a ping. An idle tunnel holds no buffer: a
//! direction takes a read buffer from the worker's spares when bytes arrive and gives it
//! back once they are written. `relay` runs both directions, the limits and the close;
//! `registry` counts open tunnels for the shutdown and the route limits.
//! docs/operations.md ("WebSocket tunnels") describes the behaviour.

mod flow;
pub mod frames;
mod registry;
mod relay;

pub use registry::{Open, Permit, Refused, Tunnels};
pub use relay::{run, First};

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed: its close frame, or its end of the connection, came first.
    Client,
    /// The upstream closed first.
    Upstream,
    /// `tunnel.idle_timeout` passed with no byte relayed either way (pongs aside).
    Idle,
    /// `tunnel.max_lifetime` was reached.
    Lifetime,
    /// The gateway shut down and its drain time was over.
    Shutdown,
    /// A side sent a message over `tunnel.max_message_bytes` (closed with 1009).
    TooLarge,
    /// A side left a ping of the gateway unanswered (`tunnel.ping_interval`).
    PingTimeout,
    /// A read or write failed.
    Error,
}

impl CloseReason {
    /// The reason as written in the access log and the metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Upstream => "upstream",
            CloseReason::Idle => "idle",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Shutdown => "shutdown",
            CloseReason::TooLarge => "too_large",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::Error => "error",
        }
    }
}

/// How a tunnel ended and what it relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub reason: CloseReason,
    /// Bytes relayed from the client to the upstream (the gateway's own frames aside).
    pub to_upstream: u64,
    /// Bytes relayed from the upstream to the client.
    pub to_client: u64,
}
