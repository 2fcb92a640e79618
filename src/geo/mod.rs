//! Client locations: a client address looked up in MaxMind-format databases and a CIDR
//! table, giving country, continent, subdivision, autonomous system and label; and the
//! conditions routes put on them. Compiled once per configuration; knows nothing of the
//! request pipeline.

mod mmdb;
pub mod table;

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::config::model::{GeoField, GeoMatch, GeoSettings};
use mmdb::Database;
pub use mmdb::GeoDbError;
use table::CidrTable;

/// The compiled `geo` section: databases, CIDR table, defaults and upstream fields.
#[derive(Debug)]
pub struct Geo {
    databases: Vec<Arc<Database>>,
    table: CidrTable,
    /// What a field no source has counts as.
    defaults: Location,
    /// Fields set on every upstream request.
    pub headers: Box<[(HeaderName, GeoField)]>,
    /// Tells this `Geo` from every other one in the process, for the lookups kept per thread.
    id: u64,
    /// Counts database reloads: a lookup kept from before a reload is not used.
    generation: Arc<AtomicU64>,
}

/// Lookups kept per worker thread, by client address: a client's requests (on a keep-alive
/// connection, or many clients' through one proxy) mostly repeat its address, and copying a
/// kept location costs a fraction of a database record's decoding or a table probe.
const KEPT: usize = 64;

/// One kept lookup: the `Geo` and its generation it was made with, the address, the result.
type Kept = Option<(u64, u64, IpAddr, Location)>;

thread_local! {
    static RECENT: RefCell<[Kept; KEPT]> = const { RefCell::new([const { None }; KEPT]) };
}

/// Field values of the two-letter codes (countries, continents), `AA` to `ZZ`, made once
/// for the process over one kept text, so copying one moves no reference count.
static TWO_LETTER: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    let pairs: String = (0..26 * 26)
        .flat_map(|i: u32| {
            [
                char::from(b'A' + (i / 26) as u8),
                char::from(b'A' + (i % 26) as u8),
            ]
        })
        .collect();
    let pairs: &'static str = Box::leak(pairs.into_boxed_str());
    (0..26 * 26)
        .filter_map(|i| pairs.get(2 * i..2 * i + 2))
        .map(HeaderValue::from_static)
        .collect()
});

/// Numbers the `Geo`s built in this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Where a client is, as far as the sources know; unknown fields are `None` (or the
/// configured default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<Code>,
    pub continent: Option<Code>,
    pub subdivision: Option<Code>,
    pub asn: Option<u32>,
    pub label: Option<Label>,
}

/// A label of the CIDR table (or the default, or a condition's), with its field value made
/// once. Labels are interned for the life of the process (one copy of each distinct text
/// ever configured), so a label is a pointer: copied for free, compared by identity.
#[derive(Clone, Copy)]
pub struct Label(&'static LabelText);

/// An interned label's text and field value.
pub struct LabelText {
    text: &'static str,
    value: Option<HeaderValue>,
}

/// A short upper-case code (country, continent, subdivision), kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code {
    bytes: [u8; 3],
    len: u8,
}

/// A location looked up at most once, when first asked for.
#[derive(Debug)]
pub struct Lazy<'g> {
    geo: &'g Geo,
    ip: IpAddr,
    found: OnceCell<Location>,
}

/// Compiled location conditions: every list given must hold. Only the lists given are kept,
/// so a one-list condition costs one check.
#[derive(Debug, Default)]
pub struct Condition {
    checks: Box<[Check]>,
}

/// One list of a condition: the field's value must be in it (or, `negated`, must not be).
#[derive(Debug)]
enum Check {
    Country(Box<[Code]>, bool),
    Continent(Box<[Code]>, bool),
    Subdivision(Box<[Code]>, bool),
    Asn(Box<[u32]>, bool),
    Label(Box<[Label]>, bool),
}

impl Geo {
    /// Opens the databases (read into memory) and starts a thread that reads them again when
    /// their files change, every `reload_interval`, for as long as this `Geo` lives.
    pub fn build(s: &GeoSettings) -> Result<Geo, GeoDbError> {
        let databases = s
            .databases
            .iter()
            .map(|p| Database::open(p).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let generation = Arc::new(AtomicU64::new(0));
        if !databases.is_empty() {
            watch(
                databases.iter().map(Arc::downgrade).collect(),
                Arc::downgrade(&generation),
                s.reload_interval,
            );
        }
        let d = &s.default;
        let code = |c: &Option<String>| c.as_deref().and_then(Code::new);
        Ok(Geo {
            databases,
            table: CidrTable::new(&s.networks),
            defaults: Location {
                country: code(&d.country),
                continent: code(&d.continent),
                subdivision: code(&d.subdivision),
                asn: d.asn,
                label: d.label.as_deref().map(Label::from),
            },
            headers: s.headers.iter().map(|(n, f)| (lasting(n), *f)).collect(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation,
        })
    }

    /// Where `ip` is (see `look_up`), from this thread's kept lookups when it was asked
    /// lately.
    pub fn locate(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        let generation = self.generation.load(Ordering::Acquire);
        let slot = slot_of(ip);
        let kept = RECENT.with_borrow(|recent| match recent.get(slot) {
            Some(Some((id, g, at, loc))) if *id == self.id && *g == generation && *at == ip => {
                Some(*loc)
            }
            _ => None,
        });
        if let Some(loc) = kept {
            return loc;
        }
        let loc = self.look_up(ip);
        RECENT.with_borrow_mut(|recent| {
            if let Some(s) = recent.get_mut(slot) {
                *s = Some((self.id, generation, ip, loc));
            }
        });
        loc
    }

    /// Where `ip` is: the CIDR table's label, then each database in order for the other
    /// fields, then the defaults for whatever is still unknown. Never fails.
    fn look_up(&self, ip: IpAddr) -> Location {
        let mut loc = Location {
            label: self.table.label(ip).copied(),
            ..Location::default()
        };
        for db in &self.databases {
            db.fill(ip, &mut loc);
        }
        let d = &self.defaults;
        loc.country = loc.country.or(d.country);
        loc.continent = loc.continent.or(d.continent);
        loc.subdivision = loc.subdivision.or(d.subdivision);
        loc.asn = loc.asn.or(d.asn);
        if loc.label.is_none() {
            loc.label = d.label;
        }
        loc
    }

    /// Sets the `headers` fields of the configuration from `loc` on an upstream request; a
    /// field whose value is unknown is removed, so a client cannot supply its own.
    pub fn write_headers(&self, headers: &mut http::HeaderMap, loc: &Location) {
        for (name, value) in self.fields(loc) {
            match value {
                Some(v) => {
                    headers.insert(name.clone(), v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }

    /// The `headers` fields of the configuration with their values from `loc` (`None`: the
    /// location lacks the field).
    pub fn fields<'a>(
        &'a self,
        loc: &'a Location,
    ) -> impl Iterator<Item = (&'a HeaderName, Option<HeaderValue>)> + 'a {
        self.headers.iter().map(|(name, field)| {
            let value = match field {
                GeoField::Country => loc.country.and_then(code_value),
                GeoField::Continent => loc.continent.and_then(code_value),
                GeoField::Subdivision => loc.subdivision.and_then(code_value),
                GeoField::Asn => loc.asn.map(HeaderValue::from),
                GeoField::Label => loc.label.and_then(|l| l.0.value.clone()),
            };
            (name, value)
        })
    }

    /// A lookup of `ip` made when first needed.
    pub fn lazy(&self, ip: IpAddr) -> Lazy<'_> {
        Lazy {
            geo: self,
            ip,
            found: OnceCell::new(),
        }
    }
}

impl Lazy<'_> {
    pub fn get(&self) -> &Location {
        self.found.get_or_init(|| self.geo.locate(self.ip))
    }

    /// The location, looked up now if it was not yet.
    pub fn into_location(self) -> Location {
        self.get();
        self.found.into_inner().unwrap_or_default()
    }
}

impl Location {
    /// The text of one field, `None` when unknown.
    pub fn text(&self, field: GeoField) -> Option<FieldText<'_>> {
        match field {
            GeoField::Country => self.country.as_ref().map(|c| FieldText::Code(c.as_str())),
            GeoField::Continent => self.continent.as_ref().map(|c| FieldText::Code(c.as_str())),
            GeoField::Subdivision => self
                .subdivision
                .as_ref()
                .map(|c| FieldText::Code(c.as_str())),
            GeoField::Asn => self.asn.map(FieldText::Number),
            GeoField::Label => self.label.as_ref().map(FieldText::Label),
        }
    }
}

/// The text of `field` of an optional location; empty when either is unknown (a key part
/// that cannot be dodged, only not known).
pub fn field_or_empty(loc: Option<&Location>, field: GeoField) -> String {
    let mut text = String::new();
    if let Some(v) = loc.and_then(|l| l.text(field)) {
        v.push_to(&mut text);
    }
    text
}

/// A field's value: text, or a number written when needed.
pub enum FieldText<'a> {
    Code(&'a str),
    Number(u32),
    Label(&'a Label),
}

impl FieldText<'_> {
    /// Appends the value to `out`.
    pub fn push_to(&self, out: &mut String) {
        match self {
            FieldText::Code(s) => out.push_str(s),
            FieldText::Number(n) => out.push_str(itoa::Buffer::new().format(*n)),
            FieldText::Label(l) => out.push_str(l),
        }
    }

    pub fn to_header_value(&self) -> Option<http::HeaderValue> {
        match self {
            FieldText::Code(s) => HeaderValue::from_str(s).ok(),
            FieldText::Number(n) => Some(HeaderValue::from(*n)),
            FieldText::Label(l) => l.0.value.clone(),
        }
    }
}

impl std::fmt::Display for FieldText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldText::Code(s) => f.write_str(s),
            FieldText::Number(n) => write!(f, "{n}"),
            FieldText::Label(l) => f.write_str(l),
        }
    }
}

impl From<&str> for Label {
    /// The interned label of `text` (made on first use; configuration time only).
    fn from(text: &str) -> Label {
        type Interned = HashMap<&'static str, &'static LabelText>;
        static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(Mutex::default);
        let mut all = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = all.get(text) {
            return Label(found);
        }
        let text: &'static str = Box::leak(Box::from(text));
        let made: &'static LabelText = Box::leak(Box::new(LabelText {
            text,
            value: (HeaderValue::from_str(text).is_ok()).then(|| HeaderValue::from_static(text)),
        }));
        all.insert(text, made);
        Label(made)
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Label {}

impl std::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.text
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Code {
    /// One to three ASCII letters or digits, upper-cased; anything else is no code.
    pub fn new(s: &str) -> Option<Code> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut bytes = [0; 3];
        for (to, from) in bytes.iter_mut().zip(b) {
            *to = from.to_ascii_uppercase();
        }
        Some(Code {
            bytes,
            len: b.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        let b = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        std::str::from_utf8(b).unwrap_or("")
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Condition {
    pub fn new(m: &GeoMatch) -> Condition {
        let codes =
            |v: &[String]| -> Box<[Code]> { v.iter().filter_map(|c| Code::new(c)).collect() };
        let labels =
            |v: &[String]| -> Box<[Label]> { v.iter().map(|l| Label::from(l.as_str())).collect() };
        let checks = [
            Check::Country(codes(&m.countries), false),
            Check::Continent(codes(&m.continents), false),
            Check::Subdivision(codes(&m.subdivisions), false),
            Check::Asn(m.asns.as_slice().into(), false),
            Check::Label(labels(&m.labels), false),
            Check::Country(codes(&m.not_countries), true),
            Check::Continent(codes(&m.not_continents), true),
            Check::Subdivision(codes(&m.not_subdivisions), true),
            Check::Asn(m.not_asns.as_slice().into(), true),
            Check::Label(labels(&m.not_labels), true),
        ];
        Condition {
            checks: checks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }

    /// Whether `loc` meets every condition. An unknown field meets no positive list and
    /// every negated one.
    pub fn holds(&self, loc: &Location) -> bool {
        self.checks.iter().all(|c| c.holds(loc))
    }
}

impl Check {
    fn is_empty(&self) -> bool {
        match self {
            Check::Country(l, _) | Check::Continent(l, _) | Check::Subdivision(l, _) => {
                l.is_empty()
            }
            Check::Asn(l, _) => l.is_empty(),
            Check::Label(l, _) => l.is_empty(),
        }
    }

    // Not inlined: inlined into `Condition::holds`, every field of the location is loaded
    // before the loop, whichever the checks read.
    #[inline(never)]
    fn holds(&self, loc: &Location) -> bool {
        fn within<T: PartialEq>(list: &[T], v: Option<&T>) -> bool {
            v.is_some_and(|v| list.contains(v))
        }
        let (found, negated) = match self {
            Check::Country(l, n) => (within(l, loc.country.as_ref()), n),
            Check::Continent(l, n) => (within(l, loc.continent.as_ref()), n),
            Check::Subdivision(l, n) => (within(l, loc.subdivision.as_ref()), n),
            Check::Asn(l, n) => (within(l, loc.asn.as_ref()), n),
            Check::Label(l, n) => (within(l, loc.label.as_ref()), n),
        };
        found != *negated
    }
}

/// Request counters of one route by client country: the countries named, `other`,
/// `unknown`; a bounded set of series.
#[derive(Debug)]
pub struct CountryCounts {
    countries: Box<[(Code, prometheus_client::metrics::counter::Counter)]>,
    other: prometheus_client::metrics::counter::Counter,
    unknown: prometheus_client::metrics::counter::Counter,
}

impl CountryCounts {
    /// `counter(label)` gives the series of one label value.
    pub fn new(
        countries: &[String],
        counter: impl Fn(&str) -> prometheus_client::metrics::counter::Counter,
    ) -> CountryCounts {
        CountryCounts {
            countries: countries
                .iter()
                .filter_map(|c| Some((Code::new(c)?, counter(c))))
                .collect(),
            other: counter("other"),
            unknown: counter("unknown"),
        }
    }

    pub fn count(&self, loc: &Location) {
        let counter = match loc.country {
            None => &self.unknown,
            Some(c) => self
                .countries
                .iter()
                .find(|(code, _)| *code == c)
                .map_or(&self.other, |(_, counter)| counter),
        };
        counter.inc();
    }
}

/// Maps changed database files again, every `interval`, until every database is dropped
/// (the snapshot that held them was replaced).
/// The field value of a code: a ready one for two upper-case letters.
fn code_value(code: Code) -> Option<HeaderValue> {
    match code.bytes.get(..usize::from(code.len))? {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            let i = usize::from(a - b'A') * 26 + usize::from(b - b'A');
            TWO_LETTER.get(i).cloned()
        }
        other => HeaderValue::from_bytes(other).ok(),
    }
}

/// `name` with its text kept for the life of the process (one copy of each distinct name
/// ever configured), so that copying it for a request moves no reference count.
fn lasting(name: &HeaderName) -> HeaderName {
    static NAMES: LazyLock<Mutex<std::collections::HashSet<&'static str>>> =
        LazyLock::new(Mutex::default);
    let mut all = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let text = match all.get(name.as_str()) {
        Some(t) => *t,
        None => {
            let t: &'static str = Box::leak(Box::from(name.as_str()));
            all.insert(t);
            t
        }
    };
    HeaderName::from_static(text)
}

/// The slot of `ip` among the kept lookups.
fn slot_of(ip: IpAddr) -> usize {
    let bits = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64)
        }
    };
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % KEPT
}

fn watch(databases: Vec<Weak<Database>>, generation: Weak<AtomicU64>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("ferrogate-geo".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let mut alive = false;
            for db in databases.iter().filter_map(Weak::upgrade) {
                alive = true;
                match db.reload_if_changed() {
                    Ok(true) => {
                        if let Some(g) = generation.upgrade() {
                            g.fetch_add(1, Ordering::Release);
                        }
                        tracing::info!(path = %db.path().display(), "geo database reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "geo database changed but cannot be read; the previous one stays in use"
                    ),
                }
            }
            if !alive {
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the geo database watcher");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn loc(country: &str, label: Option<&str>) -> Location {
        Location {
            country: Code::new(country),
            label: label.map(Label::from),
            ..Location::default()
        }
    }

    #[test]
    fn positive_lists_need_a_known_value_and_negated_ones_accept_unknown() {
        let c = Condition::new(&GeoMatch {
            countries: vec!["de".into(), "FR".into()],
            not_labels: vec!["internal".into()],
            ..GeoMatch::default()
        });
        assert!(c.holds(&loc("DE", None)));
        assert!(c.holds(&loc("FR", Some("eu"))));
        assert!(!c.holds(&loc("FR", Some("internal"))));
        assert!(!c.holds(&loc("US", None)));
        assert!(!c.holds(&Location::default()));
        let negated = Condition::new(&GeoMatch {
            not_countries: vec!["US".into()],
            ..GeoMatch::default()
        });
        assert!(negated.holds(&Location::default()));
        assert!(!negated.holds(&loc("US", None)));
    }

    #[test]
    fn the_table_and_the_defaults_fill_a_location_without_databases() {
        let settings = GeoSettings {
            databases: vec![],
            networks: vec![("127.0.0.2/32".parse().unwrap(), "eu".into())],
            default: crate::config::model::GeoDefaults {
                country: Some("XX".into()),
                label: Some("other".into()),
                ..Default::default()
            },
            headers: vec![],
            reload_interval: Duration::from_secs(10),
            metrics_countries: vec![],
        };
        let geo = Geo::build(&settings).unwrap();
        let eu = geo.locate("::ffff:127.0.0.2".parse().unwrap());
        assert_eq!(eu.label.as_deref(), Some("eu"));
        assert_eq!(eu.country.unwrap().as_str(), "XX");
        let other = geo.lazy("127.0.0.1".parse().unwrap());
        assert_eq!(other.get().label.as_deref(), Some("other"));
        assert_eq!(other.into_location().country, Code::new("XX"));
    }

    #[test]
    fn codes_are_short_alphanumeric_and_upper_case() {
        assert_eq!(Code::new("de").unwrap().as_str(), "DE");
        assert_eq!(Code::new("BY").unwrap().as_str(), "BY");
        assert!(Code::new("").is_none());
        assert!(Code::new("DEUT").is_none());
        assert!(Code::new("D-").is_none());
    }
}
