//! One MaxMind-format database file (`.mmdb`), read into memory, and swapped for a new
//! copy when the file changes.
//!
//! The records of GeoLite2/GeoIP2 Country and City, GeoLite2 ASN and the DB-IP files share
//! their field names; only the fields the gateway uses are decoded, borrowed from the
//! loaded bytes, so a lookup allocates nothing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use maxminddb::Reader;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Code, Location};

/// Why a database cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("geo database {path}: {reason}")]
pub struct GeoDbError {
    pub path: PathBuf,
    pub reason: String,
}

/// A database file and its current copy in memory.
pub struct Database {
    path: PathBuf,
    reader: ArcSwap<Reader<Vec<u8>>>,
    /// Modification time and length of the loaded file, to notice a new one.
    stamp: std::sync::Mutex<Option<(SystemTime, u64)>>,
}

/// The fields of a record the gateway reads.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Named<'a>>,
    #[serde(borrow, default)]
    continent: Option<Named<'a>>,
    #[serde(borrow, default)]
    subdivisions: Option<FirstSubdivision<'a>>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// The first (largest) subdivision of a City record; the others are skipped undecoded.
struct FirstSubdivision<'a>(Option<Named<'a>>);

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish()
    }
}

impl Database {
    /// Maps `path`; fails when it is missing or not a MaxMind database.
    pub fn open(path: &Path) -> Result<Database, GeoDbError> {
        let reader = map(path)?;
        Ok(Database {
            path: path.to_owned(),
            reader: ArcSwap::from_pointee(reader),
            stamp: std::sync::Mutex::new(stamp(path)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the fields of `loc` still empty from this database's record for `ip`.
    pub fn fill(&self, ip: IpAddr, loc: &mut Location) {
        let reader = self.reader.load();
        let Ok(found) = reader.lookup(ip) else {
            return;
        };
        let record: Record<'_> = match found.decode() {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let code = |n: &Option<Named<'_>>| {
            n.as_ref()
                .and_then(|n| n.iso_code.or(n.code))
                .and_then(Code::new)
        };
        loc.country = loc.country.or_else(|| code(&record.country));
        loc.continent = loc.continent.or_else(|| code(&record.continent));
        if loc.subdivision.is_none() {
            loc.subdivision = record.subdivisions.and_then(|s| code(&s.0));
        }
        loc.asn = loc.asn.or(record.autonomous_system_number);
    }

    /// Reads the file again when its modification time or length changed. A file that
    /// cannot be read keeps the old copy. Returns whether a new one is in use.
    ///
    /// The file should be replaced by renaming a new one over it (as `geoipupdate` does), so
    /// that it is never read half written; the old copy stays until the last lookup on it
    /// ends.
    pub fn reload_if_changed(&self) -> Result<bool, GeoDbError> {
        let now = stamp(&self.path);
        let mut seen = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.is_none() || now == *seen {
            return Ok(false);
        }
        let reader = map(&self.path)?;
        self.reader.store(Arc::new(reader));
        *seen = now;
        Ok(true)
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads a database file whole.
///
/// Read, not memory-mapped: a mapping needs `unsafe` code (the crate forbids it), and a file
/// rewritten in place by another process would change bytes under the reader. The cost is
/// the file's size in memory per loaded copy (a few MB for a country database, tens of MB
/// for a city one), shared by every worker and snapshot through the `Arc`.
fn map(path: &Path) -> Result<Reader<Vec<u8>>, GeoDbError> {
    let failed = |reason: String| GeoDbError {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    Reader::from_source(bytes).map_err(|e| failed(e.to_string()))
}

impl<'de: 'a, 'a> Deserialize<'de> for FirstSubdivision<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct First;
        impl<'de> Visitor<'de> for First {
            type Value = FirstSubdivision<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of subdivisions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<Named<'de>>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstSubdivision(first))
            }
        }
        d.deserialize_seq(First)
    }
}
