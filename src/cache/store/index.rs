//! Purge indexes of one shard: normalised URL → primary keys, surrogate key → primary keys.
//!
//! Several primary keys share a URL (method classes, route-specific extra key parts), and
//! surrogate keys tag entries across URLs; both indexes lead a purge straight to the keys it
//! removes. URLs sit in a `BTreeMap`, so a prefix purge visits the matching range only.
//! The surrogate index counts references per primary key, because several variants (and an
//! in-progress fill) of one key may carry the same surrogate key.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::Digest;

/// Normalised URL → the primary keys stored under it.
#[derive(Debug, Default)]
pub struct UrlIndex {
    urls: BTreeMap<Box<str>, Vec<Digest>>,
}

/// Surrogate key → primary key → how many variants or fills of that key carry it.
#[derive(Debug, Default)]
pub struct SurrogateIndex {
    keys: HashMap<Box<str>, HashMap<Digest, u32>>,
}

impl UrlIndex {
    pub fn add(&mut self, url: &str, digest: Digest) {
        match self.urls.get_mut(url) {
            Some(digests) => {
                if !digests.contains(&digest) {
                    digests.push(digest);
                }
            }
            None => {
                self.urls.insert(url.into(), vec![digest]);
            }
        }
    }

    pub fn remove(&mut self, url: &str, digest: &Digest) {
        if let Some(digests) = self.urls.get_mut(url) {
            digests.retain(|known| known != digest);
            if digests.is_empty() {
                self.urls.remove(url);
            }
        }
    }

    /// The primary keys stored under exactly `url`.
    pub fn exact(&self, url: &str) -> Vec<Digest> {
        self.urls.get(url).cloned().unwrap_or_default()
    }

    /// The primary keys of every URL starting with `prefix`.
    pub fn prefixed(&self, prefix: &str) -> Vec<Digest> {
        self.urls
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(url, _)| url.starts_with(prefix))
            .flat_map(|(_, digests)| digests.iter().copied())
            .collect()
    }

    pub fn clear(&mut self) {
        self.urls.clear();
    }
}

impl SurrogateIndex {
    pub fn add(&mut self, digest: Digest, keys: &[Box<str>]) {
        for key in keys {
            let digests = match self.keys.get_mut(&**key) {
                Some(digests) => digests,
                None => self.keys.entry(key.clone()).or_default(),
            };
            *digests.entry(digest).or_insert(0) += 1;
        }
    }

    pub fn remove(&mut self, digest: &Digest, keys: &[Box<str>]) {
        for key in keys {
            let Some(digests) = self.keys.get_mut(&**key) else {
                debug_assert!(false, "surrogate key {key:?} removed but never added");
                continue;
            };
            if let Some(count) = digests.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    digests.remove(digest);
                }
            }
            if digests.is_empty() {
                self.keys.remove(&**key);
            }
        }
    }

    /// The primary keys with at least one variant or fill tagged `key`.
    pub fn tagged(&self, key: &str) -> Vec<Digest> {
        self.keys
            .get(key)
            .map(|digests| digests.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn clear(&mut self) {
        self.keys.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lookup_visits_only_matching_urls() {
        let mut index = UrlIndex::default();
        index.add("http://a/x/1", [1; 32]);
        index.add("http://a/x/2", [2; 32]);
        index.add("http://a/y", [3; 32]);
        index.add("http://a/x", [4; 32]);
        let mut found = index.prefixed("http://a/x/");
        found.sort_unstable();
        assert_eq!(found, vec![[1; 32], [2; 32]]);
    }

    #[test]
    fn url_entry_goes_with_its_last_key() {
        let mut index = UrlIndex::default();
        index.add("http://a/", [1; 32]);
        index.add("http://a/", [2; 32]);
        index.remove("http://a/", &[1; 32]);
        assert_eq!(index.exact("http://a/"), vec![[2; 32]]);
        index.remove("http://a/", &[2; 32]);
        assert!(index.urls.is_empty());
    }

    #[test]
    fn surrogate_key_stays_while_one_reference_remains() {
        let mut index = SurrogateIndex::default();
        let keys: Vec<Box<str>> = vec!["product".into()];
        index.add([1; 32], &keys);
        index.add([1; 32], &keys);
        index.remove(&[1; 32], &keys);
        assert_eq!(index.tagged("product"), vec![[1; 32]]);
        index.remove(&[1; 32], &keys);
        assert!(index.tagged("product").is_empty());
        assert!(index.keys.is_empty());
    }
}
