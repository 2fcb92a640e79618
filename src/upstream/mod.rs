//! Upstream side: load balancers, target health, retries, concurrency limits, sticky
//! sessions and the per-worker keep-alive connection pools.

pub mod added;
pub mod balancer;
pub mod dns;
pub mod h1;
mod h2connect;
mod hash;
pub mod health;
pub mod limit;
pub mod locality;
pub mod pool;
pub mod probe;
pub mod request_body;
pub mod retry;
pub mod sticky;
pub mod stream;
pub mod tls;
