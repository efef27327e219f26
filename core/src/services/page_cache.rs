//! Patient lists' answers a node remembers between requests, checked against their
//! scope's generation in the database before every use.
//!
//! On PostgreSQL at a million patients, most of a list's cost is the database's own
//! (planning and running the page's statement, and writing out its 50 rows of a dozen
//! values), and it is the same for every caller asking for the same page while nothing
//! changed. So a node keeps the answer it wrote, as bytes, with the generation of the
//! scope it was read at (`PatientCounts::generation`: the sum of the `gen` of the
//! counters and of their deltas, which the triggers of migrations 0008 and 0009 raise
//! in the transaction of every insert, update or delete of a patient, in the patient's
//! old and new group). The generation is read before the page, or in the same statement
//! (one snapshot), never after: a write that lands between the two makes the entry
//! stale at once, never wrong.
//!
//! A request that finds an entry reads its scope's generation (one small statement over
//! a few hundred counter rows) and answers with the bytes only if it is the same: any
//! write to a patient of that scope, by any node on the same database, since the entry
//! was read makes the request read the page again. What a caller may see is the key's
//! scope, taken from the caller at each request (an admin's is everything, a user's is
//! their group's), so an entry never serves a caller another scope's patients; a user
//! moved to another group asks with another key. Searches by pseudonym are not kept
//! (the pseudonyms table has no generation).

use std::sync::Arc;

use super::search_cache::{GenerationCache, Held};
use crate::domain::{Id, PatientStatus};
use crate::store::patients::{PatientSort, Scope};

/// Answers kept, and their bytes over all entries: 16 MB at most (a page of 50 patients
/// is 15 to 20 KB), whatever the registry's size.
const ENTRIES_MAX: usize = 4_000;
const BUDGET_BYTES: usize = 16 << 20;

/// Everything a list's answer depends on besides the registry: who may see what, and
/// the request's filter, order and page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub scope: Scope,
    pub status: Option<PatientStatus>,
    /// The folded search text, if any.
    pub search: Option<String>,
    pub sort: PatientSort,
    pub page: u32,
    pub page_size: u32,
}

/// A list's answer as written, and, when it was written from a search's remembered ids,
/// the ids of its page among them (before the rows the caller may not see were dropped):
/// with the patients a patch of the search found written, they tell whether the answer
/// still holds at the patch's generation (`services::patients::list`).
#[derive(Clone, Debug)]
pub struct Answer {
    pub bytes: bytes::Bytes,
    pub search: Option<SearchPage>,
}

/// The total and page ids of the search result an answer was written from.
#[derive(Clone, Debug)]
pub struct SearchPage {
    pub total: i64,
    pub ids: Arc<[Id]>,
}

impl Held for Answer {
    fn bytes(&self) -> usize {
        self.bytes.len() + self.search.as_ref().map_or(0, |s| 8 * s.ids.len())
    }
}

pub type PageCache = GenerationCache<PageKey, Answer>;

impl Default for PageCache {
    fn default() -> PageCache {
        GenerationCache::with_limits(ENTRIES_MAX, BUDGET_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: Scope, page: u32) -> PageKey {
        PageKey { scope, status: None, search: None, sort: PatientSort::UpdatedAt { desc: true }, page, page_size: 50 }
    }

    #[test]
    fn an_answer_serves_only_its_key_and_generation() {
        let cache = PageCache::default();
        cache.put(key(Scope::Group(1), 1), 7, Answer { bytes: bytes::Bytes::from_static(b"group 1"), search: None });
        assert_eq!(cache.get_since(&key(Scope::Group(1), 1), 7).map(|a| a.bytes).as_deref(), Some(&b"group 1"[..]));
        assert!(cache.get_since(&key(Scope::Group(1), 1), 8).is_none(), "a write happened since");
        assert!(cache.get_since(&key(Scope::Group(2), 1), 7).is_none(), "another group");
        assert!(cache.get_since(&key(Scope::All, 1), 7).is_none(), "an admin's");
        assert!(cache.get_since(&key(Scope::Group(1), 2), 7).is_none(), "another page");
        let searched = PageKey { search: Some("martin".into()), ..key(Scope::Group(1), 1) };
        assert!(cache.get_since(&searched, 7).is_none(), "a search");
    }

    #[test]
    fn answers_stay_within_the_budget() {
        let cache = PageCache::default();
        let page =
            Answer { bytes: bytes::Bytes::from(vec![b'x'; 20_000]), search: Some(SearchPage { total: 50, ids: Arc::from(vec![1; 50]) }) };
        for i in 0..2_000 {
            cache.put(key(Scope::All, i), 1, page.clone());
            let held = cache.get_any(&key(Scope::All, i)).map(|(_, a)| a.bytes.len());
            assert_eq!(held, Some(20_000));
        }
        // Each answer holds its bytes and its 50 ids.
        let kept = (0..2_000).filter(|i| cache.get_since(&key(Scope::All, *i), 1).is_some()).count();
        assert!(kept > 0 && kept * 20_400 <= BUDGET_BYTES, "{kept} answers kept");
        let whole = Answer { bytes: bytes::Bytes::from(vec![b'x'; BUDGET_BYTES + 1]), search: None };
        cache.put(key(Scope::Group(9), 0), 1, whole);
        assert!(cache.get_any(&key(Scope::Group(9), 0)).is_none(), "larger than the whole budget");
    }
}
