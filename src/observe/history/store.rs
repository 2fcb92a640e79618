//! Where history points live: a redb file in the data directory (`history.redb`), or memory
//! when there is none. Keys are (interval start, dimension, name), so that the points of a
//! time range are one range read and expiry is one range delete.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Dimension, Point, COARSE, FINE};

const FINE_POINTS: TableDefinition<(u64, u8, &str), &[u8]> = TableDefinition::new("points_10s");
const COARSE_POINTS: TableDefinition<(u64, u8, &str), &[u8]> = TableDefinition::new("points_1m");

#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A point read back: its interval's start, and its name with it.
pub(super) type Stored = (u64, (String, Point));

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
    pub(super) fn read(
        &self,
        resolution: u64,
        dim: Dimension,
        name: Option<&str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Stored>, StoreError> {
        let read = self.db.begin_read().map_err(err)?;
        let t = read.open_table(table(resolution)).map_err(err)?;
        let mut out = Vec::new();
        for entry in t
            .range((from, 0u8, "")..(to.saturating_add(1), 0u8, ""))
            .map_err(err)?
        {
            let (k, v) = entry.map_err(err)?;
            let (at, d, n) = k.value();
            if d != dim as u8 || name.is_some_and(|want| want != n) {
                continue;
            }
            if let Ok(p) = postcard::from_bytes::<Point>(v.value()) {
                out.push((at, (n.to_owned(), p)));
            }
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
