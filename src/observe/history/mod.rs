//! The traffic history: per-10-second and per-minute aggregates of every request (requests,
//! status classes, bytes, latency sketch, 429s) for the whole gateway and per route, upstream
//! target, consumer and client address, kept for a configured time in the data directory
//! (`history.redb`) so they outlive restarts, and read by the admin listener's `/stats`.
//!
//! Recording costs a request one uncontended lock and a few map updates: each worker thread
//! adds into its own accumulator; every 10 s a background task takes them all, merges them by
//! name, folds names past the cardinality bound into `other`, and writes the points.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::model::{HistorySettings, Metric};

mod recent;
mod sketch;
pub mod store;

pub use recent::Recent;
pub use sketch::Sketch;
pub use store::Store;

/// Native resolutions, in seconds.
pub const FINE: u64 = 10;
pub const COARSE: u64 = 60;

/// The dimensions a point is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Gateway,
    Route,
    Target,
    Consumer,
    Client,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Gateway,
        Dimension::Route,
        Dimension::Target,
        Dimension::Consumer,
        Dimension::Client,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Gateway => "gateway",
            Dimension::Route => "route",
            Dimension::Target => "target",
            Dimension::Consumer => "consumer",
            Dimension::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// What one scope did in one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub requests: u64,
    /// Answers by class: 1xx to 5xx (index 0 to 4); a request never answered is in none.
    pub classes: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// 429 answers (rate limits, the gateway's or an upstream's).
    pub rate_limited: u64,
    pub latency: Sketch,
    /// Requests on routes that cache, and those the cache answered.
    pub cache_lookups: u64,
    pub cache_hits: u64,
    /// Targets: the times their health was sampled (once per 10-second point), and how
    /// many of those found them able to take requests.
    pub health_samples: u64,
    pub healthy_samples: u64,
}

/// What one request adds to each of its points, worked out once.
struct Delta {
    /// The status class's index (none for a request never answered).
    class: Option<usize>,
    bytes_in: u64,
    bytes_out: u64,
    rate_limited: u64,
    bucket: usize,
    cache_lookup: u64,
    cache_hit: u64,
}

impl Delta {
    fn of(s: &Sample<'_>) -> Delta {
        Delta {
            class: Some(usize::from(s.status / 100).wrapping_sub(1)).filter(|c| *c < 5),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            rate_limited: u64::from(s.status == 429),
            bucket: Sketch::bucket(s.duration.as_micros() as u64),
            cache_lookup: u64::from(s.cache_hit.is_some()),
            cache_hit: u64::from(s.cache_hit == Some(true)),
        }
    }
}

impl Point {
    fn add(&mut self, d: &Delta) {
        self.requests += 1;
        if let Some(c) = d.class {
            self.classes[c] += 1;
        }
        self.bytes_in += d.bytes_in;
        self.bytes_out += d.bytes_out;
        self.rate_limited += d.rate_limited;
        self.latency.add_to(d.bucket);
        self.cache_lookups += d.cache_lookup;
        self.cache_hits += d.cache_hit;
    }

    /// `metric` over this point, which covers `seconds`; none where it has no value (a
    /// ratio or quantile of no requests, or a metric the history does not keep).
    pub fn value(&self, metric: Metric, seconds: u64) -> Option<f64> {
        let ratio = |n: u64| (self.requests > 0).then(|| n as f64 / self.requests as f64);
        Some(match metric {
            Metric::Requests => self.requests as f64,
            Metric::Rps => self.requests as f64 / seconds.max(1) as f64,
            Metric::Errors => self.classes[4] as f64,
            Metric::ErrorRatio => return ratio(self.classes[4]),
            Metric::Class(c) => self.classes[usize::from(c.clamp(1, 5) - 1)] as f64,
            Metric::BytesIn => self.bytes_in as f64,
            Metric::BytesOut => self.bytes_out as f64,
            Metric::RateLimited => self.rate_limited as f64,
            Metric::Quantile(q) => return self.latency.quantile(q).map(|us| us / 1000.0),
            Metric::CacheHits => self.cache_hits as f64,
            Metric::CacheHitRatio => {
                return (self.cache_lookups > 0)
                    .then(|| self.cache_hits as f64 / self.cache_lookups as f64)
            }
            Metric::HealthyRatio => {
                return (self.health_samples > 0)
                    .then(|| self.healthy_samples as f64 / self.health_samples as f64)
            }
            Metric::HealthyTargets => return None,
        })
    }

    /// Takes away `earlier`, a point this one grew from (the same scope and interval, read
    /// before).
    pub fn subtract(&mut self, earlier: &Point) {
        self.requests = self.requests.saturating_sub(earlier.requests);
        for (a, b) in self.classes.iter_mut().zip(earlier.classes) {
            *a = a.saturating_sub(b);
        }
        self.bytes_in = self.bytes_in.saturating_sub(earlier.bytes_in);
        self.bytes_out = self.bytes_out.saturating_sub(earlier.bytes_out);
        self.rate_limited = self.rate_limited.saturating_sub(earlier.rate_limited);
        self.latency.subtract(&earlier.latency);
    }

    pub fn merge(&mut self, o: &Point) {
        self.requests += o.requests;
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.rate_limited += o.rate_limited;
        self.latency.merge(&o.latency);
        self.cache_lookups += o.cache_lookups;
        self.cache_hits += o.cache_hits;
        self.health_samples += o.health_samples;
        self.healthy_samples += o.healthy_samples;
    }
}

/// One finished request, as the history records it.
pub struct Sample<'a> {
    /// The route's and the upstream target's numbers (from their [`Number`]).
    pub route: Option<u32>,
    pub target: Option<u32>,
    pub consumer: Option<&'a str>,
    pub client: IpAddr,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// On a route that caches: whether the cache answered.
    pub cache_hit: Option<bool>,
    /// When it ended.
    pub at: std::time::Instant,
}

/// The dimensions whose names come from the configuration (a bounded set), numbered once
/// so that a request's point is found by index rather than by hashing a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbered {
    Route = 0,
    Target = 1,
}

/// Every route and target name ever recorded, with its number (for the life of the
/// process: the same name keeps its number across reloads).
#[derive(Default)]
struct Numbers {
    of: HashMap<(u8, Arc<str>), u32>,
    names: [Vec<Arc<str>>; 2],
}

static NUMBERS: std::sync::LazyLock<Mutex<Numbers>> = std::sync::LazyLock::new(Mutex::default);

/// The number of `name` in `dimension`, given on first sight.
pub fn number(dimension: Numbered, name: &str) -> u32 {
    let mut numbers = lock(&NUMBERS);
    let key = (dimension as u8, Arc::<str>::from(name));
    if let Some(n) = numbers.of.get(&key) {
        return *n;
    }
    let names = &mut numbers.names[dimension as usize];
    let n = names.len() as u32;
    names.push(key.1.clone());
    numbers.of.insert(key, n);
    n
}

/// The name of number `n` in `dimension`.
fn name_of(dimension: Numbered, n: u32) -> Option<Arc<str>> {
    lock(&NUMBERS).names[dimension as usize]
        .get(n as usize)
        .cloned()
}

/// A compiled route's or target's number, looked up the first time it is needed and kept
/// (one load per request after that).
#[derive(Debug, Default)]
pub struct Number(std::sync::atomic::AtomicU32);

impl Number {
    /// The number of `name`, which this slot stands for.
    pub fn get(&self, dimension: Numbered, name: &str) -> u32 {
        use std::sync::atomic::Ordering::Relaxed;
        match self.0.load(Relaxed) {
            0 => {
                let n = number(dimension, name);
                self.0.store(n + 1, Relaxed);
                n
            }
            n => n - 1,
        }
    }
}

/// The name a point is kept under in its dimension: names past the bound fold into it.
pub const OTHER: &str = "other";

/// Points keyed by dimension and name, as collected and stored.
type Keyed = HashMap<(Dimension, Arc<str>), Point>;

/// One worker thread's points of one 10-second interval: routes' and targets' by number,
/// consumers' and clients' in maps bounded by `max_names`. The gateway's point is the sum
/// of the clients' (every request has exactly one client point), made when it is read,
/// so a request adds to one point fewer.
#[derive(Default)]
struct Points {
    /// Routes (0) and targets (1), indexed by their number.
    numbered: [Vec<Point>; 2],
    consumers: HashMap<Arc<str>, Point, Fast>,
    other_consumers: Point,
    clients: HashMap<ClientKey, Point, Fast>,
    other_clients: Point,
}

/// A client address as one integer (IPv4 mapped into IPv6), hashed in one step.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ClientKey(u128);

impl ClientKey {
    fn of(ip: IpAddr) -> ClientKey {
        ClientKey(match ip {
            IpAddr::V4(v4) => u128::from(v4.to_bits()) | 0xffff << 32,
            IpAddr::V6(v6) => v6.to_bits(),
        })
    }

    fn ip(self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from_bits(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl std::hash::Hash for ClientKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64((self.0 >> 64) as u64 ^ self.0 as u64);
    }
}

/// A multiplicative hasher for the keys above (addresses and IP addresses), which need no
/// protection against chosen collisions: a name's address is the gateway's own, and an IP
/// address's place in a bounded map costs an attacker nothing it could not get by sending.
#[derive(Default)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut last = [0; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Fast = std::hash::BuildHasherDefault<FastHasher>;

/// One worker thread's points of the current interval (and of ended ones not yet taken).
#[derive(Default)]
struct Acc {
    interval: u64,
    /// When the current interval ends (a request ending before it needs no clock arithmetic).
    until: Option<std::time::Instant>,
    points: Points,
    ended: Vec<(u64, Points)>,
}

/// The history of one gateway process (kept across reloads).
pub struct History {
    max_names: usize,
    /// Every thread's accumulator, held here too so that what a thread recorded before it
    /// ended (the workers, at shutdown) is still collected.
    threads: Mutex<Vec<Arc<Mutex<Acc>>>>,
    store: Store,
    /// The minute being summed from its 10-second points.
    minute: Mutex<(u64, Keyed)>,
    /// Tells each target's health (by its name) when an interval is collected.
    health: Mutex<Option<HealthSource>>,
}

/// Each upstream target's name and whether it may take requests now.
pub type HealthSource = Arc<dyn Fn() -> Vec<(Arc<str>, bool)> + Send + Sync>;

thread_local! {
    /// This thread's accumulator, for the history it was made for.
    static LOCAL: std::cell::RefCell<Option<(usize, Arc<Mutex<Acc>>)>> =
        const { std::cell::RefCell::new(None) };
}

impl History {
    /// Opens (or creates) `dir/history.redb`, or keeps the history in memory without `dir`,
    /// and starts the collector on `runtime`.
    pub fn start(
        settings: &HistorySettings,
        dir: Option<&Path>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<History>, store::StoreError> {
        let store = Store::open(dir, settings.keep_fine, settings.keep_coarse)?;
        let history = Arc::new(History {
            max_names: settings.max_names,
            threads: Mutex::new(Vec::new()),
            store,
            minute: Mutex::new((0, HashMap::new())),
            health: Mutex::new(None),
        });
        let weak = Arc::downgrade(&history);
        runtime.spawn(async move {
            loop {
                // Just after each 10-second boundary, so every worker has moved on.
                let now = unix_millis(SystemTime::now());
                let next = (now / 1000 / FINE + 1) * FINE * 1000 + 200;
                tokio::time::sleep(Duration::from_millis(next - now)).await;
                let Some(h) = weak.upgrade() else {
                    return;
                };
                let done = (next / 1000) / FINE * FINE;
                let store_work = move || h.collect(done);
                if tokio::task::spawn_blocking(store_work).await.is_err() {
                    tracing::warn!("history: collecting points failed");
                }
            }
        });
        Ok(history)
    }

    /// Adds one finished request to this thread's points.
    pub fn record(self: &Arc<Self>, s: &Sample<'_>) {
        let id = Arc::as_ptr(self) as usize;
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if !matches!(&*local, Some((owner, _)) if *owner == id) {
                let acc = Arc::new(Mutex::new(Acc::default()));
                lock(&self.threads).push(acc.clone());
                *local = Some((id, acc));
            }
            let Some((_, acc)) = &*local else {
                return;
            };
            let mut acc = lock(acc);
            if acc.until.is_none_or(|until| s.at >= until) {
                let (interval, until) = interval_of(s.at);
                if acc.interval != interval {
                    let ended = std::mem::take(&mut acc.points);
                    let at = acc.interval;
                    if !ended.is_empty() {
                        acc.ended.push((at, ended));
                    }
                    acc.interval = interval;
                }
                acc.until = Some(until);
            }
            acc.points.add(s, self.max_names);
        });
    }

    /// Where target health is read from at each collection (the running configuration's
    /// groups).
    pub fn set_health(&self, source: HealthSource) {
        *lock(&self.health) = Some(source);
    }

    /// Takes every thread's points of intervals before `before` and stores them, with a
    /// sample of every target's health in the last of them.
    fn collect(&self, before: u64) {
        let mut by_interval: HashMap<u64, Keyed> = HashMap::new();
        let source = lock(&self.health).clone();
        if let Some(source) = source {
            let last = by_interval
                .entry(before.saturating_sub(FINE) / FINE * FINE)
                .or_default();
            for (name, healthy) in source() {
                let p = last.entry((Dimension::Target, name)).or_default();
                p.health_samples += 1;
                p.healthy_samples += u64::from(healthy);
            }
        }
        let threads: Vec<_> = lock(&self.threads).clone();
        for acc in threads {
            let mut acc = lock(&acc);
            let mut taken = std::mem::take(&mut acc.ended);
            if acc.interval < before && !acc.points.is_empty() {
                let interval = acc.interval;
                taken.push((interval, std::mem::take(&mut acc.points)));
            }
            drop(acc);
            for (interval, points) in taken {
                points.merge_into(by_interval.entry(interval).or_default());
            }
        }
        let mut intervals: Vec<_> = by_interval.into_iter().collect();
        intervals.sort_by_key(|(t, _)| *t);
        for (interval, points) in intervals {
            let points = bound(points, self.max_names);
            if let Err(e) = self.store.write(FINE, interval, &points) {
                tracing::warn!(error = %e, "history: writing 10 s points failed");
            }
            self.add_to_minute(interval, points);
        }
        // A minute ends once its last 10-second interval is collected.
        let ended_minute = before / COARSE * COARSE;
        let mut minute = lock(&self.minute);
        if minute.0 < ended_minute && !minute.1.is_empty() {
            let points = bound(std::mem::take(&mut minute.1), self.max_names);
            if let Err(e) = self.store.write(COARSE, minute.0, &points) {
                tracing::warn!(error = %e, "history: writing 1 min points failed");
            }
        }
        if let Err(e) = self.store.expire(unix_millis(SystemTime::now()) / 1000) {
            tracing::warn!(error = %e, "history: removing old points failed");
        }
    }

    fn add_to_minute(&self, interval: u64, points: Vec<((Dimension, Arc<str>), Point)>) {
        let start = interval / COARSE * COARSE;
        let mut minute = lock(&self.minute);
        if minute.0 != start && !minute.1.is_empty() {
            let done = bound(std::mem::take(&mut minute.1), self.max_names);
            if let Err(e) = self.store.write(COARSE, minute.0, &done) {
                tracing::warn!(error = %e, "history: writing 1 min points failed");
            }
        }
        minute.0 = start;
        for (key, p) in points {
            minute.1.entry(key).or_default().merge(&p);
        }
    }

    /// Writes what the threads hold now (for a shutdown, and for tests).
    pub fn flush(&self) {
        let now = unix_millis(SystemTime::now()) / 1000;
        self.collect(now + FINE);
        let mut minute = lock(&self.minute);
        let points = bound(std::mem::take(&mut minute.1), self.max_names);
        if !points.is_empty() {
            if let Err(e) = self.store.write(COARSE, minute.0, &points) {
                tracing::warn!(error = %e, "history: writing 1 min points failed");
            }
        }
    }

    /// The points of `name` in `dimension` from `from` to `to` (unix seconds), merged into
    /// steps of `step` seconds: (step start, point) for the steps that have data.
    pub fn series(
        &self,
        dimension: Dimension,
        name: &str,
        from: u64,
        to: u64,
        step: u64,
    ) -> Result<Vec<(u64, Point)>, store::StoreError> {
        let resolution = if step % COARSE == 0 && step >= COARSE {
            COARSE
        } else {
            FINE
        };
        let mut out: Vec<(u64, Point)> = Vec::new();
        // Points are stamped with their start: the one holding `from` starts before it.
        let first = from / step * step;
        for (t, p) in self
            .store
            .read(resolution, dimension, Some(name), first, to)?
        {
            let at = t / step * step;
            match out.last_mut() {
                Some((last, acc)) if *last == at => acc.merge(&p.1),
                _ => out.push((at, p.1)),
            }
        }
        Ok(out)
    }

    /// What `names` of `dimension` (one, or a group's targets) did from `from` to `to`
    /// (unix seconds), in whole 10-second points, merged into one: the stored points and
    /// those the workers hold still. For alert rules, which look at the last minutes.
    pub fn window(
        &self,
        dimension: Dimension,
        names: &[&str],
        from: u64,
        to: u64,
    ) -> Result<Point, store::StoreError> {
        let first = from / FINE * FINE;
        let mut out = Point::default();
        for name in names {
            for (_, (_, p)) in self.store.read(FINE, dimension, Some(name), first, to)? {
                out.merge(&p);
            }
        }
        let threads: Vec<_> = lock(&self.threads).clone();
        for acc in threads {
            let acc = lock(&acc);
            let current = std::iter::once((acc.interval, &acc.points));
            let ended = acc.ended.iter().map(|(t, p)| (*t, p));
            for (_, points) in current
                .chain(ended)
                .filter(|(t, _)| (first..=to).contains(t))
            {
                for name in names {
                    if let Some(p) = points.find(dimension, name) {
                        out.merge(&p);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every name of `dimension` from `from` to `to`, with its points merged.
    pub fn totals(
        &self,
        dimension: Dimension,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, Point)>, store::StoreError> {
        let resolution = if to.saturating_sub(from) > 6 * 3600 {
            COARSE
        } else {
            FINE
        };
        let mut by_name: HashMap<String, Point> = HashMap::new();
        let first = from / resolution * resolution;
        for (_, (name, p)) in self.store.read(resolution, dimension, None, first, to)? {
            by_name.entry(name).or_default().merge(&p);
        }
        Ok(by_name.into_iter().collect())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Points {
    /// No request was recorded.
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.other_clients.requests == 0
    }

    /// The whole gateway's point: the sum of the clients'.
    fn gateway(&self) -> Point {
        let mut sum = self.other_clients.clone();
        for p in self.clients.values() {
            sum.merge(p);
        }
        sum
    }

    /// The point of `name` in `dimension`, if these points have one.
    fn find(&self, dimension: Dimension, name: &str) -> Option<Cow<'_, Point>> {
        let numbered = |d: Numbered| {
            let n = lock(&NUMBERS)
                .of
                .get(&(d as u8, Arc::from(name)))
                .copied()?;
            self.numbered[d as usize]
                .get(n as usize)
                .filter(|p| p.requests > 0)
        };
        let found = match dimension {
            Dimension::Gateway => return Some(Cow::Owned(self.gateway())),
            Dimension::Route => numbered(Numbered::Route),
            Dimension::Target => numbered(Numbered::Target),
            Dimension::Consumer if name == OTHER => Some(&self.other_consumers),
            Dimension::Consumer => self.consumers.get(name),
            Dimension::Client if name == OTHER => Some(&self.other_clients),
            Dimension::Client => self.clients.get(&ClientKey::of(name.parse().ok()?)),
        };
        found.map(Cow::Borrowed)
    }

    /// The routes' points with their names.
    fn routes(&self) -> impl Iterator<Item = (Arc<str>, &Point)> {
        self.numbered[Numbered::Route as usize]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.requests > 0)
            .filter_map(|(n, p)| Some((name_of(Numbered::Route, n as u32)?, p)))
    }

    fn add(&mut self, s: &Sample<'_>, max: usize) {
        let d = Delta::of(s);
        for (points, n) in self.numbered.iter_mut().zip([s.route, s.target]) {
            let Some(n) = n else { continue };
            let n = n as usize;
            if n >= points.len() {
                points.resize_with(n + 1, Point::default);
            }
            points[n].add(&d);
        }
        if let Some(name) = s.consumer {
            if let Some(p) = self.consumers.get_mut(name) {
                p.add(&d);
            } else if self.consumers.len() < max {
                self.consumers.entry(Arc::from(name)).or_default().add(&d);
            } else {
                self.other_consumers.add(&d);
            }
        }
        let client = ClientKey::of(s.client);
        if let Some(p) = self.clients.get_mut(&client) {
            p.add(&d);
        } else if self.clients.len() < max {
            self.clients.entry(client).or_default().add(&d);
        } else {
            self.other_clients.add(&d);
        }
    }

    fn merge_into(self, into: &mut Keyed) {
        into.entry((Dimension::Gateway, Arc::from("")))
            .or_default()
            .merge(&self.gateway());
        let dims = [
            (Dimension::Route, Numbered::Route),
            (Dimension::Target, Numbered::Target),
        ];
        for ((dim, numbered), points) in dims.into_iter().zip(self.numbered) {
            for (n, p) in points.into_iter().enumerate() {
                if p.requests == 0 {
                    continue;
                }
                if let Some(name) = name_of(numbered, n as u32) {
                    into.entry((dim, name)).or_default().merge(&p);
                }
            }
        }
        for (name, p) in self.consumers {
            into.entry((Dimension::Consumer, name))
                .or_default()
                .merge(&p);
        }
        for (key, p) in self.clients {
            let name = Arc::from(key.ip().to_string());
            into.entry((Dimension::Client, name)).or_default().merge(&p);
        }
        for (dim, p) in [
            (Dimension::Consumer, self.other_consumers),
            (Dimension::Client, self.other_clients),
        ] {
            if p.requests > 0 {
                into.entry((dim, Arc::from(OTHER))).or_default().merge(&p);
            }
        }
    }
}

/// At most `max` names per dimension, the busiest; the rest merged into `other`.
fn bound(points: Keyed, max: usize) -> Vec<((Dimension, Arc<str>), Point)> {
    let mut all: Vec<_> = points.into_iter().collect();
    all.sort_by(|a, b| (a.0 .0 as u8, b.1.requests).cmp(&(b.0 .0 as u8, a.1.requests)));
    let mut out: Vec<((Dimension, Arc<str>), Point)> = Vec::with_capacity(all.len());
    let mut counts = [0usize; 5];
    let mut other: HashMap<Dimension, Point> = HashMap::new();
    for ((dim, name), p) in all {
        let n = &mut counts[dim as usize];
        if dim == Dimension::Gateway || (*n < max && &*name != OTHER) {
            *n += 1;
            out.push(((dim, name), p));
        } else {
            other.entry(dim).or_default().merge(&p);
        }
    }
    out.extend(other.into_iter().map(|(d, p)| ((d, Arc::from(OTHER)), p)));
    out
}

/// The unix time of `at` in milliseconds, from one reading of both clocks taken at the
/// first call (no clock read per request).
fn unix_millis_at(at: std::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (instant, millis) =
        *BASE.get_or_init(|| (std::time::Instant::now(), unix_millis(SystemTime::now())));
    match at.checked_duration_since(instant) {
        Some(d) => millis + d.as_millis() as u64,
        None => millis.saturating_sub(instant.duration_since(at).as_millis() as u64),
    }
}

/// The 10-second interval `at` falls in (its start, unix seconds), and the instant it ends.
fn interval_of(at: std::time::Instant) -> (u64, std::time::Instant) {
    let millis = unix_millis_at(at);
    let start = millis / 1000 / FINE * FINE;
    let end = (start + FINE) * 1000;
    (start, at + Duration::from_millis(end - millis))
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(super) fn settings(max_names: usize) -> HistorySettings {
        HistorySettings {
            keep_fine: Duration::from_secs(24 * 3600),
            keep_coarse: Duration::from_secs(30 * 24 * 3600),
            max_names,
        }
    }

    pub(super) fn sample(route: &str, status: u16, at: std::time::Instant) -> Sample<'static> {
        Sample {
            route: Some(number(Numbered::Route, route)),
            target: None,
            consumer: None,
            client: IpAddr::from([192, 0, 2, 1]),
            status,
            duration: Duration::from_millis(20),
            bytes_in: 10,
            bytes_out: 100,
            cache_hit: None,
            at,
        }
    }

    #[tokio::test]
    async fn a_consumer_is_counted_by_its_name_however_many_requests_it_makes() {
        let rt = tokio::runtime::Handle::current();
        let h = History::start(&settings(2), None, &rt).unwrap();
        let at = std::time::Instant::now() - Duration::from_secs(90);
        let t = unix_millis_at(at) / 1000;
        // Each request names its consumer with its own copy of the text, as requests do.
        for i in 0..10 {
            let name = String::from(if i % 5 == 0 { "bob" } else { "alice" });
            let mut s = sample("consumers", 200, at);
            s.consumer = Some(&name);
            s.target = Some(number(Numbered::Target, "127.0.0.1:1"));
            h.record(&s);
        }
        h.flush();
        let mut consumers: Vec<_> = h
            .totals(Dimension::Consumer, t - 100, t + 100)
            .unwrap()
            .into_iter()
            .map(|(n, p)| (n, p.requests))
            .collect();
        consumers.sort();
        assert_eq!(consumers, [("alice".into(), 8), ("bob".into(), 2)]);
        let targets = h.totals(Dimension::Target, t - 100, t + 100).unwrap();
        assert!(
            targets
                .iter()
                .any(|(n, p)| n == "127.0.0.1:1" && p.requests == 10),
            "{targets:?}"
        );
    }

    #[tokio::test]
    async fn points_are_summed_per_route_and_names_past_the_bound_fold_into_other() {
        let rt = tokio::runtime::Handle::current();
        let h = History::start(&settings(2), None, &rt).unwrap();
        // About a minute and a half ago.
        let at = std::time::Instant::now() - Duration::from_secs(90);
        let t = unix_millis_at(at) / 1000;
        let names: Vec<Arc<str>> = ["a", "b", "c", "d"].iter().map(|n| Arc::from(*n)).collect();
        // Five clients, more than the bound keeps by name: the gateway's point, the sum of
        // the clients', still counts every request.
        for (i, n) in names.iter().enumerate() {
            for j in 0..=i {
                let mut s = sample(n, if i == 0 { 503 } else { 200 }, at);
                s.client = IpAddr::from([192, 0, 2, j as u8]);
                h.record(&s);
            }
        }
        h.flush();
        let gateway = h
            .series(Dimension::Gateway, "", t - 100, t + 100, 10)
            .unwrap();
        assert_eq!(gateway.len(), 1);
        assert_eq!(gateway[0].1.requests, 10);
        assert_eq!(gateway[0].1.classes[4], 1);
        assert_eq!(gateway[0].1.bytes_out, 1000);
        let p50 = gateway[0].1.latency.quantile(0.5).unwrap();
        assert!((19_600.0..20_400.0).contains(&p50), "{p50}");
        let routes = h.totals(Dimension::Route, t - 100, t + 100).unwrap();
        let mut routes: Vec<_> = routes
            .iter()
            .map(|(n, p)| (n.as_str(), p.requests))
            .collect();
        routes.sort();
        // The collector keeps the busiest two; the rest are summed into `other`.
        assert_eq!(routes, [("c", 3), ("d", 4), ("other", 3)]);
        let minute = h
            .series(Dimension::Gateway, "", t - 100, t + 100, 60)
            .unwrap();
        assert_eq!(minute[0].1.requests, 10, "the minute sums its 10 s points");
        let clients = h.totals(Dimension::Client, t - 100, t + 100).unwrap();
        let mut clients: Vec<_> = clients
            .iter()
            .map(|(n, p)| (n.as_str(), p.requests))
            .collect();
        clients.sort();
        assert_eq!(clients, [("192.0.2.0", 4), ("192.0.2.1", 3), ("other", 3)]);
    }
}
