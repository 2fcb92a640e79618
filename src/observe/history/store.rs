//! Where history points live: a redb file in the data directory (`history.redb`), or memory
//! when there is none. Keys are (interval start, dimension, name), so that the points of a
//! time range are one range read and expiry is one range delete.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Dimension, Point, COARSE, FINE};

const FINE_POINTS: TableDefinition<(u64, u8, &str), &[u8]> = TableDefinition::new("points_10s");
const COARSE_POINTS: TableDefinition<(u64, u8, &str), &[u8]> = TableDefinition::new("points_1m");

#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Points per interval (on average) up to which a read walks its whole time range rather
/// than seeking to its dimension in each interval.
const SCAN_BELOW: u64 = 16;

/// A point read back: its interval's start, and its name with it.
pub type Stored = (u64, (String, Point));

/// The points on disk (or in memory), by resolution.
pub struct Store {
    db: Database,
    keep_fine: Duration,
    keep_coarse: Duration,
}

fn table(resolution: u64) -> TableDefinition<'static, (u64, u8, &'static str), &'static [u8]> {
    if resolution == COARSE {
        COARSE_POINTS
    } else {
        FINE_POINTS
    }
}

impl Store {
    pub fn open(
        dir: Option<&Path>,
        keep_fine: Duration,
        keep_coarse: Duration,
    ) -> Result<Store, StoreError> {
        let db = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(err)?;
                Database::create(dir.join("history.redb")).map_err(err)?
            }
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(err)?,
        };
        let write = db.begin_write().map_err(err)?;
        write.open_table(FINE_POINTS).map_err(err)?;
        write.open_table(COARSE_POINTS).map_err(err)?;
        write.commit().map_err(err)?;
        Ok(Store {
            db,
            keep_fine,
            keep_coarse,
        })
    }

    /// Writes the points of the interval starting at `at` (unix seconds) at `resolution`
    /// ([`FINE`] or [`COARSE`] seconds).
    pub fn write(
        &self,
        resolution: u64,
        at: u64,
        points: &[((Dimension, Arc<str>), Point)],
    ) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let write = self.db.begin_write().map_err(err)?;
        {
            let mut t = write.open_table(table(resolution)).map_err(err)?;
            for ((dim, name), p) in points {
                let key = (at, *dim as u8, &**name);
                // A point written twice (a late worker) is merged with the first.
                let mut p = p.clone();
                if let Some(old) = t.get(key).map_err(err)? {
                    if let Ok(old) = postcard::from_bytes::<Point>(old.value()) {
                        p.merge(&old);
                    }
                }
                let bytes = postcard::to_allocvec(&p).map_err(err)?;
                t.insert(key, bytes.as_slice()).map_err(err)?;
            }
        }
        write.commit().map_err(err)
    }

    /// Points of `dim` (only `name`, when given) in `[from, to]`, oldest first.
    ///
    /// A store with few points per interval is read in one pass over the range. One with
    /// many (routes, targets, consumers and clients by the hundred) is read with a seek per
    /// interval: to the point of `name`, or to the first of `dim` and on until the next
    /// dimension, so the other names and dimensions are never walked.
    pub fn read(
        &self,
        resolution: u64,
        dim: Dimension,
        name: Option<&str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Stored>, StoreError> {
        let read = self.db.begin_read().map_err(err)?;
        let t = read.open_table(table(resolution)).map_err(err)?;
        let (Some(first), Some(last)) = (t.first().map_err(err)?, t.last().map_err(err)?) else {
            return Ok(Vec::new());
        };
        let (first, last) = (first.0.value().0, last.0.value().0);
        let intervals = (last - first) / resolution + 1;
        let d = dim as u8;
        let mut out = Vec::new();
        let mut push = |at: u64, n: &str, v: &[u8]| {
            if name.is_none_or(|want| want == n) {
                if let Ok(p) = postcard::from_bytes::<Point>(v) {
                    out.push((at, (n.to_owned(), p)));
                }
            }
        };
        if t.len().map_err(err)? / intervals <= SCAN_BELOW {
            let range = (from, 0u8, "")..(to.saturating_add(1), 0u8, "");
            for entry in t.range(range).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (at, kd, n) = k.value();
                if kd == d {
                    push(at, n, v.value());
                }
            }
            return Ok(out);
        }
        let mut at = from.max(first).div_ceil(resolution) * resolution;
        while at <= to.min(last) {
            match name {
                Some(n) => {
                    if let Some(v) = t.get((at, d, n)).map_err(err)? {
                        push(at, n, v.value());
                    }
                }
                None => {
                    for entry in t.range((at, d, "")..(at, d + 1, "")).map_err(err)? {
                        let (k, v) = entry.map_err(err)?;
                        push(at, k.value().2, v.value());
                    }
                }
            }
            at += resolution;
        }
        Ok(out)
    }

    /// Removes points older than their resolution's retention, as of `now` (unix seconds).
    pub fn expire(&self, now: u64) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(err)?;
        for (resolution, keep) in [(FINE, self.keep_fine), (COARSE, self.keep_coarse)] {
            let cutoff = now.saturating_sub(keep.as_secs());
            let mut t = write.open_table(table(resolution)).map_err(err)?;
            t.retain_in(..(cutoff, 0u8, ""), |_, _| false)
                .map_err(err)?;
        }
        write.commit().map_err(err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn point(requests: u64) -> Point {
        Point {
            requests,
            ..Point::default()
        }
    }

    /// A store holding `names` routes and as many clients in each of `intervals` 10-second
    /// intervals from `t0`; route `r{i}` made `at + i` requests in the interval at `at`.
    fn store(names: usize, intervals: u64, t0: u64) -> Store {
        let day = Duration::from_secs(86_400);
        let s = Store::open(None, day, day).unwrap();
        for k in 0..intervals {
            let at = t0 + k * FINE;
            let mut points = Vec::new();
            for i in 0..names {
                let requests = at + i as u64;
                points.push((
                    (Dimension::Route, Arc::from(format!("r{i}"))),
                    point(requests),
                ));
                points.push(((Dimension::Client, Arc::from(format!("c{i}"))), point(1)));
            }
            s.write(FINE, at, &points).unwrap();
        }
        s
    }

    #[test]
    fn a_read_finds_the_same_points_by_scan_and_by_seek() {
        let t0 = 1_700_000_000;
        // 2 points per interval are scanned; 200 are sought.
        for names in [1, 100] {
            let s = store(names, 30, t0);
            let from = t0 + 5 * FINE - 3;
            let to = t0 + 12 * FINE;
            let one = s
                .read(FINE, Dimension::Route, Some("r0"), from, to)
                .unwrap();
            let ats: Vec<u64> = one.iter().map(|(at, _)| *at).collect();
            let want: Vec<u64> = (5..=12).map(|k| t0 + k * FINE).collect();
            assert_eq!(ats, want, "{names} names");
            assert!(one
                .iter()
                .all(|(at, (n, p))| n == "r0" && p.requests == *at));
            let all = s.read(FINE, Dimension::Route, None, from, to).unwrap();
            assert_eq!(all.len(), 8 * names, "{names} names: routes only");
            assert!(all.iter().all(|(_, (n, _))| n.starts_with('r')));
            assert!(all.windows(2).all(|w| w[0].0 <= w[1].0), "oldest first");
            let past = s.read(FINE, Dimension::Route, None, 0, u64::MAX).unwrap();
            assert_eq!(
                past.len(),
                30 * names,
                "{names} names: a range wider than the store"
            );
            let none = s
                .read(FINE, Dimension::Consumer, None, 0, u64::MAX)
                .unwrap();
            assert!(none.is_empty());
        }
        let empty = Store::open(None, Duration::from_secs(60), Duration::from_secs(60)).unwrap();
        assert!(empty
            .read(FINE, Dimension::Gateway, None, 0, u64::MAX)
            .unwrap()
            .is_empty());
    }
}
