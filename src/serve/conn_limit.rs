//! Downstream connection limits shared by all worker threads: a total for the listener and
//! a count per client address, taken at accept and given back when the connection ends.
//!
//! The total is one atomic; per-address counts live in a sharded map whose entries are
//! removed at zero, so memory follows open connections, not addresses ever seen. Addresses
//! are counted when a per-address limit is set, not otherwise. An IPv4-mapped IPv6 address
//! (a dual-stack socket accepting IPv4) counts as the IPv4 address it maps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Connection counts and limits of one listener, shared by every worker.
#[derive(Debug)]
pub struct ConnLimiter {
    /// `usize::MAX` means no limit; atomics so a reload can change them in place.
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    total: AtomicUsize,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    /// Accept loops waiting for the total to drop below its limit.
    room: Notify,
}

/// One open connection's place in the counts, given back on drop.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    /// The address whose count this permit holds, if addresses were counted when it was taken.
    ip: Option<IpAddr>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("downstream connection limit reached")]
    Total,
    #[error("downstream connection limit for this client address reached")]
    PerIp,
}

const SHARDS: usize = 16;
const UNLIMITED: usize = usize::MAX;

impl ConnLimiter {
    pub fn new(max_total: Option<usize>, max_per_ip: Option<usize>) -> Self {
        ConnLimiter {
            max_total: AtomicUsize::new(max_total.unwrap_or(UNLIMITED)),
            max_per_ip: AtomicUsize::new(max_per_ip.unwrap_or(UNLIMITED)),
            total: AtomicUsize::new(0),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            room: Notify::new(),
        }
    }

    /// Changes the limits (config reload) without forgetting the connections already open;
    /// they are not cut when over a lowered limit, only new ones are refused.
    pub fn set_limits(&self, max_total: Option<usize>, max_per_ip: Option<usize>) {
        self.max_total
            .store(max_total.unwrap_or(UNLIMITED), Ordering::Relaxed);
        self.max_per_ip
            .store(max_per_ip.unwrap_or(UNLIMITED), Ordering::Relaxed);
        // A raised limit may have made room.
        self.room.notify_waiters();
    }

    /// Takes a place for a new connection from `ip`, or says which limit is full.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refused> {
        let max_total = self.max_total.load(Ordering::Relaxed);
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            })
            .map_err(|_| Refused::Total)?;
        let max_per_ip = self.max_per_ip.load(Ordering::Relaxed);
        if max_per_ip == UNLIMITED {
            return Ok(ConnPermit {
                limiter: Arc::clone(self),
                ip: None,
            });
        }
        let ip = ip.to_canonical();
        {
            let mut shard = self.shard(ip);
            let count = shard.entry(ip).or_insert(0);
            if *count as usize >= max_per_ip {
                let fresh = *count == 0;
                if fresh {
                    shard.remove(&ip);
                }
                drop(shard);
                self.release_total();
                return Err(Refused::PerIp);
            }
            *count += 1;
        }
        Ok(ConnPermit {
            limiter: Arc::clone(self),
            ip: Some(ip),
        })
    }

    /// Resolves once the total is below its limit, so an accept loop can pause at the
    /// limit instead of accepting and closing in a spin. Another loop may still take the
    /// room first: `try_acquire` remains the decision.
    pub async fn wait_for_room(&self) {
        loop {
            let mut notified = pin!(self.room.notified());
            // Registered before checking, so a release between the check and the wait wakes us.
            notified.as_mut().enable();
            if self.total.load(Ordering::Acquire) < self.max_total.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `ip`; 0 when no per-address limit is set (not counted).
    pub fn open_for(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.shard(ip).get(&ip).map_or(0, |&n| n as usize)
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        let bits = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let v = u128::from(v6);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        // Multiplicative hashing: neighbouring addresses land in different shards.
        let index = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS;
        // A panic while holding a shard cannot leave a count half-updated; keep going.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn release_total(&self) {
        let before = self.total.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "connection total released below zero");
        // Waiters only wait while the total is at (or above, after a lowered limit) its
        // limit; below it nobody can be waiting, so the common release skips the Notify lock.
        if before >= self.max_total.load(Ordering::Relaxed) {
            self.room.notify_waiters();
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut shard = self.limiter.shard(ip);
            if let Some(count) = shard.get_mut(&ip) {
                debug_assert!(
                    *count > 0,
                    "per-address count at zero while a permit holds it"
                );
                *count = count.saturating_sub(1);
                if *count == 0 {
                    shard.remove(&ip);
                }
            }
        }
        self.limiter.release_total();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn limiter(total: Option<usize>, per_ip: Option<usize>) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter::new(total, per_ip))
    }

    fn tracked_entries(l: &ConnLimiter) -> usize {
        l.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    #[test]
    fn total_limit_refuses_the_connection_beyond_it() {
        let l = limiter(Some(2), None);
        let _p1 = l.try_acquire(A).unwrap();
        let _p2 = l.try_acquire(B).unwrap();
        assert_eq!(l.try_acquire(A).unwrap_err(), Refused::Total);
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn per_ip_limit_refuses_only_that_address() {
        let l = limiter(None, Some(2));
        let _p1 = l.try_acquire(A).unwrap();
        let _p2 = l.try_acquire(A).unwrap();
        assert_eq!(l.try_acquire(A).unwrap_err(), Refused::PerIp);
        let _p3 = l.try_acquire(B).unwrap();
        assert_eq!((l.open_for(A), l.open_for(B), l.open()), (2, 1, 3));
    }

    #[test]
    fn per_ip_refusal_gives_back_its_place_in_the_total() {
        let l = limiter(Some(3), Some(1));
        let _p = l.try_acquire(A).unwrap();
        for _ in 0..5 {
            assert_eq!(l.try_acquire(A).unwrap_err(), Refused::PerIp);
        }
        assert_eq!(l.open(), 1);
        assert!(l.try_acquire(B).is_ok());
    }

    #[test]
    fn dropped_permit_releases_its_places() {
        let l = limiter(Some(1), Some(1));
        let p = l.try_acquire(A).unwrap();
        drop(p);
        assert_eq!((l.open(), l.open_for(A)), (0, 0));
        assert!(l.try_acquire(A).is_ok());
    }

    #[test]
    fn address_entry_is_removed_when_its_last_connection_ends() {
        let l = limiter(None, Some(4));
        let permits: Vec<_> = [A, A, B].map(|ip| l.try_acquire(ip).unwrap()).into();
        assert_eq!(tracked_entries(&l), 2);
        drop(permits);
        assert_eq!(tracked_entries(&l), 0);
    }

    #[test]
    fn refused_first_connection_leaves_no_entry_behind() {
        let l = limiter(None, Some(0));
        assert_eq!(l.try_acquire(A).unwrap_err(), Refused::PerIp);
        assert_eq!(tracked_entries(&l), 0);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let l = limiter(None, Some(1));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let _p = l.try_acquire(A).unwrap();
        assert_eq!(l.try_acquire(mapped).unwrap_err(), Refused::PerIp);
        assert_eq!(l.open_for(mapped), 1);
    }

    #[test]
    fn ipv6_addresses_are_counted_apart() {
        let l = limiter(None, Some(1));
        let _p = l.try_acquire(IpAddr::V6(Ipv6Addr::LOCALHOST)).unwrap();
        assert!(l.try_acquire(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).is_ok());
    }

    #[test]
    fn no_limits_count_the_total_but_never_refuse() {
        let l = limiter(None, None);
        let permits: Vec<_> = (0..1000).map(|_| l.try_acquire(A).unwrap()).collect();
        assert_eq!((l.open(), l.open_for(A)), (1000, 0));
        drop(permits);
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn raised_limit_admits_more_without_forgetting_open_connections() {
        let l = limiter(Some(1), None);
        let _p = l.try_acquire(A).unwrap();
        l.set_limits(Some(2), None);
        let _q = l.try_acquire(A).unwrap();
        assert_eq!(l.try_acquire(A).unwrap_err(), Refused::Total);
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn counts_return_to_zero_after_concurrent_use_and_never_exceed_limits() {
        let l = limiter(Some(8), Some(3));
        let ips = [A, B, IpAddr::V6(Ipv6Addr::LOCALHOST)];
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = &l;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..5_000usize {
                        let ip = ips[(i + t) % ips.len()];
                        if let Ok(p) = l.try_acquire(ip) {
                            assert!(l.open() <= 8 && l.open_for(ip) <= 3);
                            held.push(p);
                        }
                        if held.len() > 2 || i % 3 == 0 {
                            held.pop();
                        }
                    }
                });
            }
        });
        assert_eq!(l.open(), 0);
        assert_eq!(tracked_entries(&l), 0);
    }

    #[tokio::test]
    async fn wait_for_room_is_ready_below_the_limit() {
        let l = limiter(Some(1), None);
        assert!(l.wait_for_room().now_or_never().is_some());
        assert!(limiter(None, None).wait_for_room().now_or_never().is_some());
    }

    #[tokio::test]
    async fn wait_for_room_wakes_when_a_permit_drops() {
        let l = limiter(Some(1), None);
        let p = l.try_acquire(A).unwrap();
        let mut wait = pin!(l.wait_for_room());
        assert!(wait.as_mut().now_or_never().is_none(), "room at the limit");
        // Dropped by another task once this one waits with its real waker.
        tokio::spawn(async move { drop(p) });
        tokio::time::timeout(std::time::Duration::from_secs(1), wait)
            .await
            .unwrap();
        assert_eq!(l.open(), 0);
    }
}
