//! Writes a small GeoLite2-City-shaped database for `bench/geo.sh`: 127.0.0.0/8 in Germany
//! (DE, Bavaria, Europe), so a benchmark client on loopback has a country.
//! Usage: cargo run --example geo_db -- PATH
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../tests/support/mmdb.rs"]
mod mmdb;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: geo_db PATH");
        std::process::exit(2);
    };
    let place = mmdb::Place {
        network: "127.0.0.0/8",
        country: "DE",
        continent: "EU",
        subdivision: Some("BY"),
    };
    mmdb::write_city(std::path::Path::new(&path), &[place]);
}
