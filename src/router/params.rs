//! Template parameters of a match, kept as byte ranges of the request path so that a lookup
//! neither copies nor allocates for the usual handful of parameters.

/// Parameters stored inline; more spill to the heap.
const INLINE: usize = 4;

/// Template parameters captured by a match.
///
/// Values are ranges of the request path given to [`Router::find`](super::Router::find);
/// read them back with that same path.
#[derive(Debug, Clone, Default)]
pub struct Params<'r> {
    inline: [Slot<'r>; INLINE],
    len: usize,
    spill: Vec<Slot<'r>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot<'r> {
    name: &'r str,
    start: usize,
    end: usize,
}

impl<'r> Params<'r> {
    /// Records matchit's parameters, which borrow from `path`, as ranges of `path`.
    pub(super) fn from_matchit(found: &matchit::Params<'r, '_>, path: &str) -> Self {
        let mut params = Params::default();
        let base = path.as_ptr() as usize;
        for (name, value) in found.iter() {
            // matchit slices its values out of the path it was given.
            let start = (value.as_ptr() as usize).wrapping_sub(base);
            let end = start.wrapping_add(value.len());
            debug_assert!(
                start <= end && end <= path.len(),
                "parameter {name} is not a slice of the path"
            );
            params.push(Slot { name, start, end });
        }
        params
    }

    fn push(&mut self, slot: Slot<'r>) {
        match self.inline.get_mut(self.len) {
            Some(free) => *free = slot,
            None => self.spill.push(slot),
        }
        self.len += 1;
    }

    fn slots(&self) -> impl Iterator<Item = &Slot<'r>> {
        self.inline.iter().take(self.len).chain(self.spill.iter())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of parameter `name` (`rest` for `{*rest}`) in `path`, the matched path.
    pub fn get<'p>(&self, name: &str, path: &'p str) -> Option<&'p str> {
        self.slots()
            .find(|s| s.name == name)
            .and_then(|s| path.get(s.start..s.end))
    }

    /// Names and values in template order; `path` is the matched path.
    pub fn iter<'a, 'p: 'a>(
        &'a self,
        path: &'p str,
    ) -> impl Iterator<Item = (&'r str, &'p str)> + 'a {
        self.slots()
            .filter_map(move |s| path.get(s.start..s.end).map(|v| (s.name, v)))
    }
}
