//! Validation of where targets and this instance run (`region`, `zone`, `locality`).

use super::file;
use super::model::{ClientPlace, GroupLocality, Place};
use super::validate::Errors;

/// The region and zone of a target.
pub(super) fn target_place(errs: &mut Errors, at: &str, t: &file::Target) -> Place {
    label(errs, &format!("{at}.region"), &t.region);
    label(errs, &format!("{at}.zone"), &t.zone);
    Place {
        region: t.region.clone(),
        zone: t.zone.clone(),
    }
}

/// A group's `locality` block; `geo`: the configuration has a `geo` section.
pub(super) fn group(
    errs: &mut Errors,
    at: &str,
    l: &file::GroupLocality,
    geo: bool,
) -> GroupLocality {
    errs.unknown_in(at, &l);
    let client = l
        .client
        .as_ref()
        .map(|c| client(errs, &format!("{at}.client"), c, geo));
    let min_available_percent = l.min_available_percent.unwrap_or(50);
    if min_available_percent > 100 {
        errs.push(
            format!("{at}.min_available_percent"),
            "a percentage: 0 to 100",
        );
    }
    if l.max_in_flight == Some(0) {
        errs.push(format!("{at}.max_in_flight"), "must be at least 1");
    }
    GroupLocality {
        client,
        min_available_percent: min_available_percent.min(100),
        max_in_flight: l.max_in_flight,
    }
}

/// `locality.client`: the location fields naming the client's zone and region.
fn client(errs: &mut Errors, at: &str, c: &file::ClientPlace, geo: bool) -> ClientPlace {
    errs.unknown_in(at, &c);
    if !geo {
        errs.push(at, "needs the top-level `geo` (where clients are)");
    }
    if c.zone.is_none() && c.region.is_none() {
        errs.push(
            at,
            "give zone, region or both (location fields such as label)",
        );
    }
    let field = |errs: &mut Errors, key: &str, v: &Option<String>| {
        (v.as_deref()).and_then(|name| super::geo::field(errs, &format!("{at}.{key}"), name))
    };
    ClientPlace {
        zone: field(errs, "zone", &c.zone),
        region: field(errs, "region", &c.region),
    }
}

/// The top-level `locality`: where this instance runs. Groups with `locality` need it,
/// unless they go by the client's place.
pub(super) fn instance(errs: &mut Errors, f: &file::File) -> Place {
    let place = match &f.locality {
        Some(l) => {
            errs.unknown_in("locality", &l);
            label(errs, "locality.region", &l.region);
            label(errs, "locality.zone", &l.zone);
            if l.region.is_none() && l.zone.is_none() {
                errs.push("locality", "give region, zone or both");
            }
            Place {
                region: l.region.clone(),
                zone: l.zone.clone(),
            }
        }
        None => Place::default(),
    };
    for (name, u) in &f.upstreams {
        let by_instance = u.locality.as_ref().is_some_and(|l| l.client.is_none());
        if by_instance && f.locality.is_none() {
            errs.push(
                format!("upstreams.{name}.locality"),
                "needs the top-level `locality` (this instance's region and zone)",
            );
        }
    }
    place
}

fn label(errs: &mut Errors, at: &str, v: &Option<String>) {
    if v.as_deref().is_some_and(str::is_empty) {
        errs.push(at, "empty");
    }
}
