//! The `geo` section and the location conditions of routes, as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Unknown;

/// Where client locations come from, and what every proxied request carries of them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Geo {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// MaxMind-format database files (`.mmdb`: GeoLite2/GeoIP2 Country, City, ASN, DB-IP),
    /// asked in order; each field comes from the first that has it.
    #[serde(default)]
    pub databases: Vec<String>,
    /// CIDR table: network (`10.0.0.0/8`) to label; the longest prefix wins.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// A CSV file of `network,label` lines (`#` starts a comment), added to `networks`.
    #[serde(default)]
    pub networks_file: Option<String>,
    /// Values of the fields a lookup does not find (default: none, the field is empty).
    #[serde(default)]
    pub default: Option<GeoDefault>,
    /// Request fields set on every upstream request, name to `country`, `continent`,
    /// `subdivision`, `asn` or `label` (default `{X-Geo-Country: country}`; `{}` for none).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// How often the database files are checked for a change (default 10s).
    #[serde(default)]
    pub reload_interval: Option<String>,
    /// Countries counted apart in `ferrogate_geo_requests_total{route,country}`; others
    /// count as `other`, unknown ones as `unknown` (default: no such metric).
    #[serde(default)]
    pub metrics_countries: Vec<String>,
}

/// `geo.default`: what an unknown location counts as.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GeoDefault {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Country code (such as `XX`).
    #[serde(default)]
    pub country: Option<String>,
    /// Continent code.
    #[serde(default)]
    pub continent: Option<String>,
    /// Subdivision code.
    #[serde(default)]
    pub subdivision: Option<String>,
    /// Autonomous system number.
    #[serde(default)]
    pub asn: Option<u32>,
    /// Label (as in `networks`).
    #[serde(default)]
    pub label: Option<String>,
}

/// Conditions on the client's location: every list given must hold; a list holds when any
/// of its values does, a `not_` list when none does.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GeoMatch {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// ISO 3166-1 alpha-2 country codes (`DE`).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Continent codes: `AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`.
    #[serde(default)]
    pub continents: Vec<String>,
    /// ISO 3166-2 subdivision codes without the country (`BY` for Bavaria).
    #[serde(default)]
    pub subdivisions: Vec<String>,
    /// Autonomous system numbers.
    #[serde(default)]
    pub asns: Vec<u32>,
    /// Labels of the CIDR table (`geo.networks`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Countries the client must not be in.
    #[serde(default)]
    pub not_countries: Vec<String>,
    /// Continents the client must not be in.
    #[serde(default)]
    pub not_continents: Vec<String>,
    /// Subdivisions the client must not be in.
    #[serde(default)]
    pub not_subdivisions: Vec<String>,
    /// Autonomous systems the client must not be in.
    #[serde(default)]
    pub not_asns: Vec<u32>,
    /// Labels the client must not have.
    #[serde(default)]
    pub not_labels: Vec<String>,
}

/// `geo_upstreams[]`: the group for clients of a location.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GeoUpstream {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The location.
    pub when: GeoMatch,
    /// The upstream group its clients go to.
    pub upstream: String,
}
