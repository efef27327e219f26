//! Search results a node remembers between requests, checked against the registry's
//! generation in the database before every use.
//!
//! An exact `total` for a search means counting its matches, which costs tens to
//! hundreds of milliseconds at a million patients (a common name matches 30,000). So a
//! node keeps, per scope, status, search text and sort, the total it counted and, when
//! it is at most [`IDS_MAX`], the ordered ids of the matches. Every entry carries the
//! scope's generation (`PatientCounts::generation`: the sum of the `gen` of the counters
//! and of their deltas, which the triggers of migrations 0008 and 0009 raise in the
//! transaction of every write to a patient of that group and status). A request reads the generation first (one small query) and
//! uses an entry only if it is the same: any write by any node on the same database
//! between the two makes the entry useless. Only ids and totals are kept, never rows:
//! a page's patients are read from the database at each request, and rechecked against
//! the caller's scope and status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::{Id, PatientStatus};
use crate::store::patients::{PatientSort, Scope};

/// Searches matching at most this many patients keep their ordered ids (a page is then
/// read by id); larger ones are walked in sort order, where their matches are dense.
pub const IDS_MAX: i64 = 20_000;
/// Entries kept, and ids kept over all entries: about 20 MB at most.
const ENTRIES_MAX: usize = 2_000;
const IDS_BUDGET: usize = 2_500_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SearchKey {
    pub scope: Scope,
    pub status: Option<PatientStatus>,
    /// The folded search text.
    pub search: String,
    pub sort: PatientSort,
}

/// What a search found at one generation.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub total: i64,
    /// All matching ids in the key's sort order, when there are at most [`IDS_MAX`].
    pub ids: Option<Arc<Vec<Id>>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<SearchKey, (i64, SearchResult)>,
    ids_held: usize,
}

/// Bounded: past its limits it forgets everything and starts again (cheap, and rare:
/// 2,000 distinct searches between two writes).
#[derive(Debug, Default)]
pub struct SearchCache(Mutex<Inner>);

impl SearchCache {
    /// The result of `key` if it was found at `generation`.
    pub fn get(&self, key: &SearchKey, generation: i64) -> Option<SearchResult> {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(key).filter(|(g, _)| *g == generation).map(|(_, r)| r.clone())
    }

    pub fn put(&self, key: SearchKey, generation: i64, result: SearchResult) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let added = result.ids.as_ref().map_or(0, |ids| ids.len());
        if inner.entries.len() >= ENTRIES_MAX || inner.ids_held + added > IDS_BUDGET {
            inner.entries.clear();
            inner.ids_held = 0;
        }
        if let Some((_, old)) = inner.entries.insert(key, (generation, result)) {
            inner.ids_held -= old.ids.as_ref().map_or(0, |ids| ids.len());
        }
        inner.ids_held += added;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(search: &str) -> SearchKey {
        SearchKey { scope: Scope::All, status: None, search: search.into(), sort: PatientSort::UpdatedAt { desc: true } }
    }

    #[test]
    fn an_entry_serves_only_its_generation() {
        let cache = SearchCache::default();
        cache.put(key("martin"), 7, SearchResult { total: 3, ids: Some(Arc::new(vec![1, 2, 3])) });
        assert_eq!(cache.get(&key("martin"), 7).map(|r| r.total), Some(3));
        assert!(cache.get(&key("martin"), 8).is_none(), "a write happened since");
        assert!(cache.get(&key("bernard"), 7).is_none());
        let scoped = SearchKey { scope: Scope::Group(1), ..key("martin") };
        assert!(cache.get(&scoped, 7).is_none(), "another scope");
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = SearchCache::default();
        for i in 0..(ENTRIES_MAX + 10) {
            cache.put(key(&i.to_string()), 1, SearchResult { total: 1, ids: Some(Arc::new(vec![1])) });
        }
        let inner = cache.0.lock().expect("lock");
        assert!(inner.entries.len() <= ENTRIES_MAX);
        assert_eq!(inner.ids_held, inner.entries.len());
        drop(inner);
        cache.put(key("big"), 1, SearchResult { total: 0, ids: Some(Arc::new(vec![0; IDS_BUDGET - 5])) });
        cache.put(key("big2"), 1, SearchResult { total: 0, ids: Some(Arc::new(vec![0; 10])) });
        let inner = cache.0.lock().expect("lock");
        assert!(inner.ids_held <= IDS_BUDGET);
    }
}
