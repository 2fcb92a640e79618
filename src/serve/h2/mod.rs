//! The gateway's own downstream HTTP/2 server (opt-in per listener, `h2_server: native`):
//! one future per connection reads frames from a reused buffer, decodes header blocks with
//! its own HPACK (`hpack/`), runs each stream's pipeline in the connection's task (`wake`)
//! and writes the responses' frames itself (`conn`, `stream`). The guard's frame rules and
//! flood limits (`serve::h2guard::FrameRules`) are checked on every frame it reads.
//!
//! Not yet here: extended CONNECT (RFC 8441; the native server does not advertise
//! SETTINGS_ENABLE_CONNECT_PROTOCOL), priorities (ignored, as RFC 9113 allows), server push.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod body;
mod conn;
mod frame;
pub mod hpack;
mod recv;
mod request;
mod stream;
mod wake;

pub use body::{H2BodyError, H2NativeBody};

use super::h1::{BoxIo, Service};
use super::h2guard::Trip;

/// HTTP/2 settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_streams: u32,
    pub max_header_list: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub idle_timeout: Duration,
}

/// Serves HTTP/2 on `io` until the connection closes or has drained on shutdown. `read`
/// holds bytes already read from it (the preface, when h2c was sniffed).
/// The output is the frame rule the client broke, if that ended the connection.
pub fn serve<S: Service + 'static>(
    io: BoxIo,
    read: Vec<u8>,
    settings: Settings,
    svc: Arc<S>,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = Option<Trip>> + Send
where
    S::Body: 'static,
{
    conn::Conn::new(io, read, settings, svc, shutdown).run()
}
