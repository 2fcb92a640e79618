//! Validation of where targets and this instance run (`region`, `zone`, `locality`).

use super::file;
use super::model::{GroupLocality, Place};
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

/// A group's `locality` block.
pub(super) fn group(errs: &mut Errors, at: &str, l: &file::GroupLocality) -> GroupLocality {
    errs.unknown_in(at, &l);
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
        min_available_percent: min_available_percent.min(100),
        max_in_flight: l.max_in_flight,
    }
}

/// The top-level `locality`: where this instance runs. Groups with `locality` need it.
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
        if u.locality.is_some() && f.locality.is_none() {
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
