//! Upstream side: load balancers and the per-worker keep-alive connection pools.

pub mod balancer;
mod hash;
pub mod pool;
