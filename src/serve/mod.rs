//! The downstream protocols, below the pipeline and knowing nothing of it: the gateway's
//! own HTTP/1.1 server connection (`h1`) with its strict request parser (`strict`), the
//! gateway's own HTTP/2 server (`h2`, opt-in per listener), the HTTP/2 frame guard in front
//! of hyper's server (`h2guard`), the HTTP/2 request body read
//! on after an early answer (`h2body`), WebSocket over HTTP/2 (`h2connect`, RFC 8441),
//! the HTTP/2 idle clock (`h2idle`), the HTTP/2 streams run in their connection's task
//! (`h2streams`), open-connection
//! limits, and the request body either protocol hands the pipeline. `listener::connection`
//! puts them together for one accepted connection.

mod body;
pub mod conn_limit;
pub mod h1;
pub mod h2;
pub mod h2body;
pub mod h2connect;
pub mod h2guard;
pub mod h2idle;
pub mod h2streams;
pub mod prefixed;
pub mod strict;

pub use body::DownstreamBody;
