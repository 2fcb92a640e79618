//! What the gateway did since the last look: the requests recorded into the worker threads'
//! points since the previous reading, for the whole gateway and per route. The live view
//! of the admin listener reads it once a second while someone watches; it adds no work to
//! requests (they record into the history's points anyway) and none when nobody reads.
//!
//! A reading takes each thread's points of every interval not yet collected and subtracts
//! what the previous reading saw of the same thread and interval. An interval the collector
//! took between two readings (10 s boundaries, 200 ms after) loses what it gained since the
//! previous reading; read just after each whole second, that does not happen.

use std::collections::HashMap;
use std::sync::Arc;

use super::{lock, History, Point, Points};

/// The previous reading: per thread and interval, the gateway's point and each route's.
#[derive(Default)]
pub struct Recent {
    seen: HashMap<(usize, u64), Seen>,
    primed: bool,
}

struct Seen {
    gateway: Point,
    routes: HashMap<Arc<str>, Point>,
}

/// The requests recorded between two readings.
#[derive(Debug, Default)]
pub struct Delta {
    pub gateway: Point,
    /// By route name (`other` for names past the bound).
    pub routes: Vec<(Arc<str>, Point)>,
}

impl Recent {
    /// The requests recorded since the previous call; `None` at the first call, which only
    /// takes the starting point.
    pub fn read(&mut self, history: &History) -> Option<Delta> {
        let threads: Vec<_> = lock(&history.threads).clone();
        let mut now = HashMap::with_capacity(self.seen.len());
        let mut delta = Delta::default();
        let mut routes: HashMap<Arc<str>, Point> = HashMap::new();
        for acc in threads {
            let id = Arc::as_ptr(&acc) as usize;
            let acc = lock(&acc);
            let held = acc
                .ended
                .iter()
                .map(|(t, p)| (*t, p))
                .chain(std::iter::once((acc.interval, &acc.points)));
            for (interval, points) in held {
                let before = self.seen.remove(&(id, interval));
                let seen = Seen::of(points);
                let mut gateway = seen.gateway.clone();
                if let Some(b) = &before {
                    gateway.subtract(&b.gateway);
                }
                delta.gateway.merge(&gateway);
                for (name, p) in &seen.routes {
                    let mut p = p.clone();
                    if let Some(b) = before.as_ref().and_then(|b| b.routes.get(name)) {
                        p.subtract(b);
                    }
                    if p.requests > 0 {
                        routes.entry(name.clone()).or_default().merge(&p);
                    }
                }
                now.insert((id, interval), seen);
            }
        }
        self.seen = now;
        delta.routes = routes.into_iter().collect();
        delta.routes.sort_by(|a, b| a.0.cmp(&b.0));
        let primed = std::mem::replace(&mut self.primed, true);
        primed.then_some(delta)
    }
}

impl Seen {
    fn of(points: &Points) -> Seen {
        Seen {
            gateway: points.gateway(),
            routes: points.routes().map(|(name, p)| (name, p.clone())).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{sample, settings};
    use super::*;

    #[tokio::test]
    async fn a_reading_counts_what_was_recorded_since_the_previous_one() {
        let rt = tokio::runtime::Handle::current();
        let h = History::start(&settings(10), None, &rt).unwrap();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut recent = Recent::default();
        h.record(&sample(&a, 200, std::time::Instant::now()));
        assert!(recent.read(&h).is_none(), "the first reading only starts");
        for _ in 0..3 {
            h.record(&sample(&a, 200, std::time::Instant::now()));
        }
        h.record(&sample(&b, 503, std::time::Instant::now()));
        let d = recent.read(&h).unwrap();
        assert_eq!(d.gateway.requests, 4);
        assert_eq!(d.gateway.classes[4], 1);
        assert_eq!(d.gateway.bytes_out, 400);
        let names: Vec<_> = d.routes.iter().map(|(n, p)| (&**n, p.requests)).collect();
        assert_eq!(names, [("a", 3), ("b", 1)]);
        assert!(d.gateway.latency.quantile(0.5).is_some());
        let idle = recent.read(&h).unwrap();
        assert_eq!(idle.gateway.requests, 0, "nothing new: {idle:?}");
        assert!(idle.routes.is_empty());
    }
}
