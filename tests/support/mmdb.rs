//! Small MaxMind-format databases (`.mmdb`) written by the tests and the geo benchmark, with
//! known networks, in the record layout of GeoLite2 City and GeoLite2 ASN.

use std::path::Path;

use mmdb_writer::{ipnet::IpNet, Value, Writer};

/// One network of a City database: country, continent and (optionally) first subdivision.
pub struct Place {
    pub network: &'static str,
    pub country: &'static str,
    pub continent: &'static str,
    pub subdivision: Option<&'static str>,
}

/// Writes a City database to `path` (through a temporary file renamed over it, as
/// `geoipupdate` replaces a database).
pub fn write_city(path: &Path, places: &[Place]) {
    let mut w = Writer::new("GeoLite2-City");
    for p in places {
        let mut record = vec![
            (
                "country",
                Value::map([
                    ("iso_code", Value::from(p.country)),
                    ("geoname_id", Value::from(1_u32)),
                ]),
            ),
            ("continent", Value::map([("code", p.continent)])),
        ];
        if let Some(s) = p.subdivision {
            record.push((
                "subdivisions",
                Value::array([
                    Value::map([("iso_code", s)]),
                    Value::map([("iso_code", "ZZ")]),
                ]),
            ));
        }
        w.insert_value(net(p.network), Value::map(record)).unwrap();
    }
    replace(path, &w.to_bytes().unwrap());
}

/// Writes an ASN database to `path`.
pub fn write_asn(path: &Path, entries: &[(&str, u32)]) {
    let mut w = Writer::new("GeoLite2-ASN");
    for (network, asn) in entries {
        let record = Value::map([
            ("autonomous_system_number", Value::from(*asn)),
            ("autonomous_system_organization", Value::from("Example")),
        ]);
        w.insert_value(net(network), record).unwrap();
    }
    replace(path, &w.to_bytes().unwrap());
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", fastrand::u32(..)));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
