//! Upstream side: load balancers and the per-worker keep-alive connection pools.

pub mod balancer;
pub mod pool;
