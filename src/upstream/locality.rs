//! Locality-aware choice: a group prefers targets in this instance's zone (or the client's,
//! read from its location), then the region, then any, and spills over to the next tier
//! when too few of the nearer targets are available (unhealthy, ejected, draining, or full),
//! as Envoy's zone-aware routing does. Which tier served each request is counted, so
//! spill-over shows in the metrics.

use std::borrow::Cow;

use prometheus_client::metrics::counter::Counter;

use crate::config::model::{ClientPlace, GeoField, GroupLocality, Place, Target};
use crate::geo::{FieldText, Location};

/// A balancer's choice given which targets to exclude.
pub type PickWith<'a> = &'a dyn Fn(&dyn Fn(usize) -> bool) -> Option<usize>;

/// Tiers in order of preference.
pub const TIERS: [&str; 3] = ["zone", "region", "any"];

/// The tiers of one group's targets, compiled with the group.
pub struct Locality {
    /// Per target, seen from this instance: 0 same zone, 1 same region, 2 elsewhere.
    tiers: Box<[u8]>,
    /// Targets per tier.
    sizes: [usize; 3],
    /// This instance's place and the targets' places, kept when the client's place decides
    /// (`locality.client`).
    here: Place,
    places: Box<[Place]>,
    settings: GroupLocality,
    /// `ferrogate_locality_picks_total{upstream,tier}` per tier.
    picks: [Counter; 3],
}

impl Locality {
    pub fn new(
        here: &Place,
        targets: &[Target],
        settings: GroupLocality,
        picks: [Counter; 3],
    ) -> Locality {
        let place = (here.zone.as_deref(), here.region.as_deref());
        let tiers: Box<[u8]> = targets.iter().map(|t| tier(place, &t.place)).collect();
        let mut sizes = [0; 3];
        for t in tiers.iter() {
            sizes[usize::from(*t)] += 1;
        }
        let by_client = settings.client.is_some();
        Locality {
            tiers,
            sizes,
            here: if by_client {
                here.clone()
            } else {
                Place::default()
            },
            places: (targets.iter())
                .filter(|_| by_client)
                .map(|t| t.place.clone())
                .collect(),
            settings,
            picks,
        }
    }

    /// Whether the client's location decides the tiers (the route then looks it up).
    pub fn by_client(&self) -> bool {
        self.settings.client.is_some()
    }

    /// Picks with `pick`, first among the nearest tier that has enough of its targets
    /// available and not full, widening to the next tier otherwise. `client`: the client's
    /// location, for groups that go by it. `usable(i)`: target i may take this attempt;
    /// `in_flight(i)`: its requests in flight. `None` when no tier gave a target (the caller
    /// then picks without locality).
    pub fn pick(
        &self,
        client: Option<&Location>,
        usable: &dyn Fn(usize) -> bool,
        in_flight: &dyn Fn(usize) -> u64,
        pick: PickWith<'_>,
    ) -> Option<usize> {
        let (tiers, sizes) = match (self.settings.client, client) {
            (Some(fields), Some(loc)) => self.client_tiers(fields, loc),
            _ => (Cow::Borrowed(&*self.tiers), self.sizes),
        };
        let has_room = |i: usize| self.settings.max_in_flight.is_none_or(|m| in_flight(i) < m);
        let mut ready = [0usize; 3];
        for (i, t) in tiers.iter().enumerate() {
            if usable(i) && has_room(i) {
                ready[usize::from(*t)] += 1;
            }
        }
        let min = usize::from(self.settings.min_available_percent);
        for tier in 0..3u8 {
            let t = usize::from(tier);
            // An empty tier is skipped; a tier widens when too few of its targets are ready.
            if sizes[t] == 0 || ready[t] == 0 || ready[t] * 100 < sizes[t] * min {
                continue;
            }
            let chosen =
                pick(&|i| !(tiers.get(i).is_some_and(|x| *x <= tier) && usable(i) && has_room(i)));
            if let Some(i) = chosen {
                let at = tiers.get(i).map_or(2, |x| usize::from(*x));
                self.picks[at].inc();
                return Some(i);
            }
        }
        None
    }

    /// The tiers seen from the client's place: its zone and region as its location names
    /// them, this instance's where the location lacks the field.
    fn client_tiers(&self, fields: ClientPlace, loc: &Location) -> (Cow<'_, [u8]>, [usize; 3]) {
        let text = |f: Option<GeoField>| f.and_then(|f| loc.text(f)).map(field_text);
        let zone = text(fields.zone).or_else(|| self.here.zone.as_deref().map(Cow::Borrowed));
        let region =
            (text(fields.region)).or_else(|| self.here.region.as_deref().map(Cow::Borrowed));
        let client = (zone.as_deref(), region.as_deref());
        let tiers: Vec<u8> = self.places.iter().map(|p| tier(client, p)).collect();
        let mut sizes = [0; 3];
        for t in &tiers {
            sizes[usize::from(*t)] += 1;
        }
        (Cow::Owned(tiers), sizes)
    }

    /// Counts a pick made without locality (every tier was short), as `any`.
    pub fn count_fallback(&self) {
        self.picks[2].inc();
    }
}

/// The tier of a target at `there` for a client at `(zone, region)`.
fn tier((zone, region): (Option<&str>, Option<&str>), there: &Place) -> u8 {
    let same = |a: Option<&str>, b: &Option<String>| a.is_some() && a == b.as_deref();
    if same(zone, &there.zone) {
        0
    } else if same(region, &there.region) {
        1
    } else {
        2
    }
}

fn field_text(v: FieldText<'_>) -> Cow<'_, str> {
    match v {
        FieldText::Code(s) => Cow::Borrowed(s),
        FieldText::Label(l) => Cow::Borrowed(&**l),
        FieldText::Number(n) => Cow::Owned(n.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(region: &str, zone: &str) -> Target {
        Target {
            address: ([127, 0, 0, 1], 1).into(),
            weight: 1,
            place: Place {
                region: Some(region.into()),
                zone: Some(zone.into()),
            },
        }
    }

    fn locality(min: u8, max_in_flight: Option<u64>) -> Locality {
        let here = Place {
            region: Some("eu".into()),
            zone: Some("eu-a".into()),
        };
        let targets = [
            target("eu", "eu-a"),
            target("eu", "eu-a"),
            target("eu", "eu-b"),
            target("us", "us-a"),
        ];
        let settings = GroupLocality {
            client: None,
            min_available_percent: min,
            max_in_flight,
        };
        Locality::new(&here, &targets, settings, Default::default())
    }

    /// The first target `excluded` lets through, as a balancer would.
    fn first(excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        (0..4).find(|i| !excluded(*i))
    }

    #[test]
    fn the_zone_then_the_region_then_anywhere_takes_the_traffic() {
        let l = locality(50, None);
        let none = |_| 0;
        assert_eq!(l.pick(None, &|_| true, &none, &first), Some(0));
        assert_eq!(
            l.pick(None, &|i| i != 0, &none, &first),
            Some(1),
            "half the zone is enough"
        );
        assert_eq!(l.pick(None, &|i| i >= 2, &none, &first), Some(2));
        assert_eq!(l.pick(None, &|i| i == 3, &none, &first), Some(3));
        assert_eq!(l.picks[0].get(), 2);
        assert_eq!(l.picks[1].get(), 1);
        assert_eq!(l.picks[2].get(), 1);
    }

    #[test]
    fn a_zone_short_of_its_share_or_full_spills_over() {
        let strict = locality(100, None);
        let none = |_| 0;
        // One of two zone targets down: below 100%, the region (zone included) takes it.
        let spilled = strict.pick(None, &|i| i != 0, &none, &|ex: &dyn Fn(usize) -> bool| {
            (0..4).rev().find(|i| !ex(*i))
        });
        assert_eq!(spilled, Some(2));
        let capped = locality(50, Some(2));
        let busy = |i| if i < 2 { 2 } else { 0 };
        assert_eq!(
            capped.pick(None, &|_| true, &busy, &first),
            Some(2),
            "a full zone spills"
        );
    }

    #[test]
    fn the_clients_place_decides_when_the_group_goes_by_it() {
        let mut l = locality(50, None);
        l.settings.client = Some(ClientPlace {
            zone: Some(GeoField::Label),
            region: Some(GeoField::Continent),
        });
        l.here = Place {
            region: Some("eu".into()),
            zone: Some("eu-a".into()),
        };
        l.places = ["eu-a", "eu-a", "eu-b", "us-a"]
            .iter()
            .map(|z| Place {
                region: Some(z[..2].into()),
                zone: Some((*z).into()),
            })
            .collect();
        let none = |_| 0;
        let at = |label: Option<&str>| Location {
            label: label.map(crate::geo::Label::from),
            ..Location::default()
        };
        let us = at(Some("us-a"));
        assert_eq!(l.pick(Some(&us), &|_| true, &none, &first), Some(3));
        assert_eq!(
            l.pick(Some(&at(None)), &|_| true, &none, &first),
            Some(0),
            "a location without the fields falls back to this instance's place"
        );
        assert_eq!(
            l.pick(Some(&us), &|i| i != 3, &none, &first),
            Some(0),
            "the client's zone down: this instance's region is the client's region too"
        );
    }
}
