//! Search results a node remembers between requests, checked against the registry's
//! generation in the database before every use.
//!
//! An exact `total` for a search means counting its matches, which costs tens to
//! hundreds of milliseconds at a million patients (a common name matches 30,000). So a
//! node keeps, per scope, status, search text and sort, the total it counted and, when
//! it is at most [`IDS_MAX`], the ordered ids of the matches. Every entry carries the
//! scope's generation (`PatientCounts::generation`: the sum of the `gen` of the counters
//! and of their deltas, which the triggers of migrations 0008 and 0009 raise in the
//! transaction of every write to a patient of that group and status). A request reads
//! the generation first (one small query) and uses an entry only if it is the same: any
//! write by any node on the same database between the two makes the entry useless.
//! Only ids and totals are kept here: a page's patients are read by id and rechecked
//! against the caller's scope and status (the answer written from them may then be kept
//! by `page_cache`, under the same rule). [`GenerationCache`] is the bounded map both
//! use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::domain::{Id, PatientStatus};
use crate::store::patients::{ChangeMark, Keys, PatientSort, Scope};
use crate::store::{Db, Store, StoreResult};

/// Searches matching at most this many patients keep their ordered ids (a page is then
/// read by id); larger ones are walked in sort order, where their matches are dense.
/// 10% of a million-patient registry: a common family name (3%) is read by id.
pub const IDS_MAX: i64 = 100_000;
/// Entries kept, and bytes of ids kept over all entries (4 bytes an id below 2^32):
/// 16 MB at most, whatever the registry's size.
const ENTRIES_MAX: usize = 2_000;
const IDS_BUDGET_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SearchKey {
    pub scope: Scope,
    pub status: Option<PatientStatus>,
    /// The folded search text.
    pub search: String,
    pub sort: PatientSort,
}

/// Ordered patient ids, in 4 bytes each while every id fits (a registry's ids start at
/// 1 and grow by one), else in 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ids {
    Narrow(Vec<u32>),
    Wide(Vec<Id>),
}

impl Ids {
    pub fn new(ids: Vec<Id>) -> Ids {
        match ids.iter().map(|id| u32::try_from(*id)).collect::<Result<Vec<u32>, _>>() {
            Ok(narrow) => Ids::Narrow(narrow),
            Err(_) => Ids::Wide(ids),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ids::Narrow(v) => v.len(),
            Ids::Wide(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory held by the ids.
    pub fn bytes(&self) -> usize {
        match self {
            Ids::Narrow(v) => v.len() * 4,
            Ids::Wide(v) => v.len() * 8,
        }
    }

    /// The id at position `i` (< `len()`).
    pub fn get(&self, i: usize) -> Id {
        match self {
            Ids::Narrow(v) => Id::from(v[i]),
            Ids::Wide(v) => v[i],
        }
    }

    /// The ids at positions `start..end` (clamped to the list).
    pub fn slice(&self, start: usize, end: usize) -> Vec<Id> {
        let end = end.min(self.len());
        let start = start.min(end);
        match self {
            Ids::Narrow(v) => v[start..end].iter().map(|id| Id::from(*id)).collect(),
            Ids::Wide(v) => v[start..end].to_vec(),
        }
    }
}

/// What a search found at one generation.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub total: i64,
    /// All matching ids in the key's sort order, when there are at most [`IDS_MAX`].
    pub ids: Option<Arc<Ids>>,
    /// For `ids` in a time order: their sort keys and where the log of changed patients
    /// stood in the snapshot they were read in, so that a later generation's matches can
    /// be found by reading only the patients changed since ([`patched`]).
    pub since: Option<Arc<Since>>,
    /// Taken just before the statements that found it were sent (see [`Turns`]).
    pub at: Instant,
}

/// One search of a key at a time. At a million patients a common name's ids take
/// 100–200 ms to read, and every write in the scope retires them: 32 clients asking
/// for the same search while patients were created all read them at once, each slowing
/// the others (32 answers a second, p99 1.8 s). A request that finds no entry for its
/// generation takes the key's turn; once it has it, what the search before it found
/// serves it if those statements started after this request read its counts (their
/// snapshot is then at least as new as the generation it will be kept under), and it
/// searches itself otherwise. So the requests that arrive during one search are all
/// served by the next, and searches of one key never run side by side.
#[derive(Debug)]
pub struct Turns<K = SearchKey>(Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>);

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Turns(Mutex::new(HashMap::new()))
    }
}

/// A key's turn, held until dropped; the key leaves the map with its last waiter (a
/// request given up while waiting included).
pub struct Turn<'a, K: Eq + Hash + Clone = SearchKey> {
    turns: &'a Turns<K>,
    key: K,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Turns<K> {
    pub async fn take(&self, key: &K) -> Turn<'_, K> {
        let mut turn = self.waiter(key);
        turn.guard = Some(turn.lock.clone().lock_owned().await);
        turn
    }

    /// The key's turn if nobody holds it.
    pub fn try_take(&self, key: &K) -> Option<Turn<'_, K>> {
        let mut turn = self.waiter(key);
        turn.guard = Some(turn.lock.clone().try_lock_owned().ok()?);
        Some(turn)
    }

    /// The key's turn for a request holding connection `db`, given back with it (or
    /// another in its place), and whether the request waited. One that waits gives its
    /// connection back to the pool first (others need it, and the work before its turn
    /// may take a while) and takes one again once its turn comes.
    pub async fn take_with(&self, key: &K, db: Db, store: &Store) -> StoreResult<(Db, Turn<'_, K>, bool)> {
        if let Some(turn) = self.try_take(key) {
            return Ok((db, turn, false));
        }
        drop(db);
        let turn = self.take(key).await;
        Ok((store.conn().await?, turn, true))
    }

    /// A place in the key's queue, not yet the turn: dropped (given up), it leaves the
    /// map as a turn does.
    fn waiter(&self, key: &K) -> Turn<'_, K> {
        let lock = self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        Turn { turns: self, key: key.clone(), lock, guard: None }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        let mut keys = self.turns.0.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Only the map's and this turn's: nobody else holds or waits for this key (a
        // waiter clones the lock under the map's mutex, held here).
        if Arc::strong_count(&self.lock) == 2 {
            keys.remove(&self.key);
        }
    }
}

/// The memory an entry's value holds, for a cache's byte budget.
pub trait Held {
    fn bytes(&self) -> usize;
}

impl Held for SearchResult {
    fn bytes(&self) -> usize {
        self.ids.as_ref().map_or(0, |ids| ids.bytes()) + self.since.as_ref().map_or(0, |s| s.keys.bytes() + s.written.bytes())
    }
}

/// The sort keys of a search's ids (position by position) and the change log's position
/// in the snapshot both were read in, with the patients its last patches found written.
#[derive(Clone, Debug)]
pub struct Since {
    pub keys: Keys,
    pub mark: ChangeMark,
    pub written: Written,
}

/// Patches kept in a [`Written`], and the patients they name, at most: an answer a
/// node remembers is checked against them when the next request for it comes, a few
/// writes later at most while it is asked for.
const WRITTEN_PATCHES_MAX: usize = 64;
const WRITTEN_IDS_MAX: usize = 4_096;

/// The patients written between the generations of a remembered search's last patches,
/// oldest patch first, each starting at the generation the one before it ended at (the
/// last at the search's own): what tells whether a page answered at an earlier
/// generation still holds (`services::patients`). Bounded: the oldest patches go first.
#[derive(Clone, Debug, Default)]
pub struct Written(Vec<Arc<Patch>>);

/// The patients written (created, changed or deleted) after generation `after` of a
/// scope and up to `upto`, in the later snapshot: sorted, each once.
#[derive(Debug)]
struct Patch {
    after: i64,
    upto: i64,
    ids: Box<[Id]>,
}

impl Written {
    /// These patches and one more, from generation `after` (the last one's end) to
    /// `upto`, naming `written` (sorted, each once, as `Changes::changed` is); a patch
    /// that does not follow the last one starts the history again.
    pub fn then(&self, after: i64, upto: i64, written: &[Id]) -> Written {
        debug_assert!(written.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        let follows = self.0.last().is_some_and(|last| last.upto == after);
        let mut patches: Vec<Arc<Patch>> = if follows { self.0.clone() } else { Vec::new() };
        patches.push(Arc::new(Patch { after, upto, ids: written.into() }));
        let mut held: usize = patches.iter().map(|p| p.ids.len()).sum();
        let mut first = 0;
        while patches.len() - first > 1 && (patches.len() - first > WRITTEN_PATCHES_MAX || held > WRITTEN_IDS_MAX) {
            held -= patches[first].ids.len();
            first += 1;
        }
        patches.drain(..first);
        Written(patches)
    }

    /// Whether none of `ids` was written after generation `since` up to the last patch's
    /// end: `false` when the patches kept do not reach back to `since`. The scope's
    /// writes a snapshot at `since` had not seen are all in the patches that end after
    /// it (a later snapshot holds every write an earlier one did, and each write raises
    /// the generation).
    pub fn untouched(&self, since: i64, ids: &[Id]) -> bool {
        match self.0.first() {
            Some(first) if first.after <= since => {
                self.0.iter().filter(|p| p.upto > since).all(|p| ids.iter().all(|id| p.ids.binary_search(id).is_err()))
            }
            _ => false,
        }
    }

    fn bytes(&self) -> usize {
        self.0.iter().map(|p| 24 + 8 * p.ids.len()).sum()
    }
}

/// A search's matches at a later snapshot, from its matches at an earlier one (`ids`,
/// `keys`), the patients written in between (`changed`: created, changed or deleted;
/// read from the change log in the later snapshot; sorted, each once) and those of them that match in the
/// later snapshot, with their keys, in the list's order (`fresh`, `fresh_keys`). Every
/// changed patient leaves its old place and the matching ones are merged in at theirs,
/// by (key, id) in the order's direction: what the database would answer in the later
/// snapshot, since a patient not written in between matches as it did and keeps its
/// key. `None` if the keys are not of one kind (a remembered list from another
/// database: never, in practice).
pub fn patched(ids: &Ids, keys: &Keys, changed: &[Id], fresh: &[Id], fresh_keys: &Keys, desc: bool) -> Option<(Ids, Keys)> {
    // Searched by halves: a patch names a few patients, and hashing each of a common
    // name's 27k ids to look it up in a set was 3–6 % of a node's CPU while patients were
    // created.
    debug_assert!(changed.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    let kept = (0..ids.len()).filter(|&i| changed.binary_search(&ids.get(i)).is_err());
    match (keys, fresh_keys) {
        (Keys::Micros(old), Keys::Micros(new)) => {
            let (ids, keys) =
                merge(kept.map(|i| (old[i], ids.get(i))), fresh.iter().copied().zip(new.iter().copied()).map(|(id, k)| (k, id)), desc);
            Some((Ids::new(ids), Keys::Micros(keys)))
        }
        (Keys::Text(old), Keys::Text(new)) => {
            let (ids, keys) = merge(
                kept.map(|i| (old[i].clone(), ids.get(i))),
                fresh.iter().copied().zip(new.iter().cloned()).map(|(id, k)| (k, id)),
                desc,
            );
            Some((Ids::new(ids), Keys::Text(keys)))
        }
        _ => None,
    }
}

/// Two lists sorted by (key, id) in one direction, as one.
fn merge<K: Ord>(a: impl Iterator<Item = (K, Id)>, b: impl Iterator<Item = (K, Id)>, desc: bool) -> (Vec<Id>, Vec<K>) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let (mut ids, mut keys) = (Vec::new(), Vec::new());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (x <= y) != desc,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (k, id) = if take_a { a.next() } else { b.next() }.expect("peeked");
        ids.push(id);
        keys.push(k);
    }
    (ids, keys)
}

#[derive(Debug)]
struct Inner<K, V> {
    entries: HashMap<K, (i64, V)>,
    bytes_held: usize,
}

/// Values remembered with the generation they were read at. Bounded: past its limits it
/// forgets everything and starts again (cheap, and rare: thousands of distinct keys, or
/// its byte budget, between two writes).
#[derive(Debug)]
pub struct GenerationCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    entries_max: usize,
    bytes_max: usize,
}

/// Search totals and small id lists.
pub type SearchCache = GenerationCache<SearchKey, SearchResult>;

impl Default for SearchCache {
    fn default() -> SearchCache {
        GenerationCache::with_limits(ENTRIES_MAX, IDS_BUDGET_BYTES)
    }
}

impl<K: Eq + Hash, V: Held + Clone> GenerationCache<K, V> {
    pub fn with_limits(entries_max: usize, bytes_max: usize) -> Self {
        GenerationCache { inner: Mutex::new(Inner { entries: HashMap::new(), bytes_held: 0 }), entries_max, bytes_max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key` if it was read at `generation` or a later one: a scope's
    /// generation only grows, and a later snapshot holds every write an earlier one did,
    /// so a value read at as large a generation saw every write of the scope that a
    /// reader of `generation` saw.
    pub fn get_since(&self, key: &K, generation: i64) -> Option<V> {
        self.lock().entries.get(key).filter(|(g, _)| *g >= generation).map(|(_, v)| v.clone())
    }

    /// The entry of `key` whatever its generation, with that generation: for a caller
    /// that reads the current generation afterwards (or in the same statement as the
    /// page), and uses the value only if the two are equal.
    pub fn get_any(&self, key: &K) -> Option<(i64, V)> {
        self.lock().entries.get(key).map(|(g, v)| (*g, v.clone()))
    }

    /// Remembers `value`, read at `generation` (read before the value, or in the same
    /// statement). A value larger than the whole budget is not kept.
    pub fn put(&self, key: K, generation: i64, value: V) {
        self.put_if(key, generation, value, |_| true)
    }

    /// As [`GenerationCache::put`], unless the key's value is of a later generation (a
    /// scope's generation only grows: a later one was read in a later snapshot), as when
    /// requests bring one remembered search up to date side by side.
    pub fn put_newer(&self, key: K, generation: i64, value: V) {
        self.put_if(key, generation, value, |present| present <= generation)
    }

    fn put_if(&self, key: K, generation: i64, value: V, replaces: impl Fn(i64) -> bool) {
        let added = value.bytes();
        if added > self.bytes_max {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.get(&key).is_some_and(|(present, _)| !replaces(*present)) {
            return;
        }
        if inner.entries.len() >= self.entries_max || inner.bytes_held + added > self.bytes_max {
            inner.entries.clear();
            inner.bytes_held = 0;
        }
        if let Some((_, old)) = inner.entries.insert(key, (generation, value)) {
            inner.bytes_held -= old.bytes();
        }
        inner.bytes_held += added;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(search: &str) -> SearchKey {
        SearchKey { scope: Scope::All, status: None, search: search.into(), sort: PatientSort::UpdatedAt { desc: true } }
    }

    fn ids(v: Vec<Id>) -> Option<Arc<Ids>> {
        Some(Arc::new(Ids::new(v)))
    }

    #[test]
    fn an_entry_serves_only_its_generation() {
        let cache = SearchCache::default();
        cache.put(key("martin"), 7, SearchResult { total: 3, ids: ids(vec![1, 2, 3]), since: None, at: Instant::now() });
        assert_eq!(cache.get_since(&key("martin"), 7).map(|r| r.total), Some(3));
        assert_eq!(cache.get_since(&key("martin"), 6).map(|r| r.total), Some(3), "read after that generation");
        assert!(cache.get_since(&key("martin"), 8).is_none(), "a write happened since");
        // A value of an earlier generation does not replace a later one.
        cache.put_newer(key("martin"), 6, SearchResult { total: 9, ids: None, since: None, at: Instant::now() });
        assert_eq!(cache.get_any(&key("martin")).map(|(g, r)| (g, r.total)), Some((7, 3)));
        cache.put_newer(key("martin"), 8, SearchResult { total: 4, ids: None, since: None, at: Instant::now() });
        assert_eq!(cache.get_any(&key("martin")).map(|(g, r)| (g, r.total)), Some((8, 4)));
        assert!(cache.get_since(&key("bernard"), 7).is_none());
        let scoped = SearchKey { scope: Scope::Group(1), ..key("martin") };
        assert!(cache.get_since(&scoped, 7).is_none(), "another scope");
    }

    /// The list a database would answer: `rows` (id, key, matches) sorted by (key, id).
    fn answer(rows: &[(Id, i64, bool)], desc: bool) -> (Vec<Id>, Vec<i64>) {
        let mut m: Vec<(i64, Id)> = rows.iter().filter(|r| r.2).map(|r| (r.1, r.0)).collect();
        m.sort();
        if desc {
            m.reverse();
        }
        (m.iter().map(|r| r.1).collect(), m.iter().map(|r| r.0).collect())
    }

    #[test]
    fn a_patch_gives_what_a_new_search_would() {
        for desc in [false, true] {
            // Before: ids 1..=40, keys with ties; every third matches.
            let mut rows: Vec<(Id, i64, bool)> = (1..=40).map(|id| (id, (id * 7) % 13, id % 3 == 0)).collect();
            let (ids, keys) = answer(&rows, desc);
            let (ids, keys) = (Ids::new(ids), Keys::Micros(keys));
            // Written since: a match deleted, a match that stops matching, one that
            // starts, a match whose key moves (to a tie and past the ends), new patients
            // (matching or not), and a patient written twice.
            rows.retain(|r| r.0 != 3);
            rows[5].2 = false;
            rows[6].2 = true;
            rows[10].1 = 99;
            rows[11].1 = -5;
            rows[12].1 = rows[1].1;
            rows.extend([(41, 0, true), (42, 4, false), (43, 12, true), (44, 12, true)]);
            let mut changed = vec![3, rows[5].0, rows[6].0, rows[10].0, rows[11].0, rows[12].0, 41, 42, 43, 44, 41];
            // As the store gives them (`Changes::changed`): sorted, each once.
            changed.sort_unstable();
            changed.dedup();
            let set: std::collections::HashSet<Id> = changed.iter().copied().collect();
            let fresh_rows: Vec<_> = rows.iter().filter(|r| set.contains(&r.0)).copied().collect();
            let (fresh, fresh_keys) = answer(&fresh_rows, desc);
            let (got_ids, got_keys) = patched(&ids, &keys, &changed, &fresh, &Keys::Micros(fresh_keys), desc).expect("one kind");
            let (want_ids, want_keys) = answer(&rows, desc);
            assert_eq!(got_ids.slice(0, usize::MAX), want_ids, "desc {desc}");
            assert_eq!(got_keys, Keys::Micros(want_keys));
        }
        // Texts compare byte by byte, as SQLite does, and the id breaks ties.
        let keys = Keys::Text(vec!["2026-01-02".into(), "2026-01-01".into()]);
        let (ids, keys) =
            patched(&Ids::new(vec![5, 6]), &keys, &[7], &[7], &Keys::Text(vec!["2026-01-01".into()]), true).expect("one kind");
        assert_eq!(ids.slice(0, 9), vec![5, 7, 6]);
        assert_eq!(keys, Keys::Text(vec!["2026-01-02".into(), "2026-01-01".into(), "2026-01-01".into()]));
        assert!(patched(&Ids::new(vec![1]), &Keys::Micros(vec![1]), &[], &[], &Keys::Text(vec![]), false).is_none());
    }

    #[test]
    fn a_page_is_untouched_only_if_the_patches_reach_back_and_name_none_of_it() {
        let none = Written::default();
        assert!(!none.untouched(5, &[1]), "no patch: nothing known");
        assert!(!none.untouched(5, &[]), "no patch: nothing known, even of no patient");
        let w = none.then(10, 12, &[3, 7]).then(12, 15, &[9]);
        assert!(w.untouched(10, &[1, 2, 4]));
        assert!(!w.untouched(10, &[1, 3]), "written in the first patch");
        assert!(!w.untouched(11, &[3]), "written in a patch that ends after the answer");
        assert!(w.untouched(12, &[3, 7]), "written before the answer's generation");
        assert!(!w.untouched(13, &[9]));
        assert!(w.untouched(15, &[9]));
        assert!(!w.untouched(9, &[1]), "before the first patch");
        // A patch that does not follow the last one starts the history again.
        let gap = w.then(16, 17, &[4]);
        assert!(!gap.untouched(12, &[1]) && gap.untouched(16, &[1]) && !gap.untouched(16, &[4]));
        // Bounded: the oldest patches go first, by number and by patients named.
        let mut long = Written::default();
        for g in 0..(WRITTEN_PATCHES_MAX as i64 + 10) {
            long = long.then(g, g + 1, &[g]);
        }
        assert_eq!(long.0.len(), WRITTEN_PATCHES_MAX);
        assert!(!long.untouched(0, &[]) && long.untouched(10, &[5, 9]) && !long.untouched(10, &[10]));
        let big: Vec<Id> = (0..WRITTEN_IDS_MAX as Id).collect();
        let wide = long.then(long.0.last().expect("patches").upto, 1_000, &big);
        assert_eq!(wide.0.len(), 1, "one patch over the budget is kept alone");
        let two = wide.then(1_000, 1_001, &[1]);
        assert_eq!((two.0.len(), two.untouched(1_000, &[2])), (1, true));
    }

    #[test]
    fn ids_are_kept_in_four_bytes_while_they_fit() {
        let narrow = Ids::new(vec![5, 1, i64::from(u32::MAX), 3]);
        assert!(matches!(narrow, Ids::Narrow(_)));
        assert_eq!((narrow.bytes(), narrow.slice(1, 3)), (16, vec![1, i64::from(u32::MAX)]));
        let wide = Ids::new(vec![5, i64::from(u32::MAX) + 1, 3]);
        assert!(matches!(wide, Ids::Wide(_)));
        assert_eq!((wide.bytes(), wide.slice(1, 9)), (24, vec![i64::from(u32::MAX) + 1, 3]));
        assert_eq!(wide.slice(7, 9), Vec::<Id>::new());
        assert!(matches!(Ids::new(vec![-1]), Ids::Wide(_)));
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = SearchCache::default();
        for i in 0..(ENTRIES_MAX + 10) {
            cache.put(key(&i.to_string()), 1, SearchResult { total: 1, ids: ids(vec![1]), since: None, at: Instant::now() });
        }
        let inner = cache.lock();
        assert!(inner.entries.len() <= ENTRIES_MAX);
        assert_eq!(inner.bytes_held, inner.entries.len() * 4);
        drop(inner);
        // The largest entries: at most IDS_BUDGET_BYTES of them, wide or narrow.
        let big = (1..=IDS_MAX).collect::<Vec<Id>>();
        for i in 0..30 {
            cache.put(key(&format!("big{i}")), 1, SearchResult { total: IDS_MAX, ids: ids(big.clone()), since: None, at: Instant::now() });
            let wide = big.iter().map(|id| id + i64::from(u32::MAX)).collect();
            cache.put(key(&format!("wide{i}")), 1, SearchResult { total: IDS_MAX, ids: ids(wide), since: None, at: Instant::now() });
            let inner = cache.lock();
            assert!(inner.bytes_held <= IDS_BUDGET_BYTES);
            assert_eq!(inner.bytes_held, inner.entries.values().map(|(_, r)| Held::bytes(r)).sum::<usize>());
        }
    }

    #[tokio::test]
    async fn one_search_of_a_key_at_a_time() {
        use futures_util::FutureExt;
        let turns = Turns::default();
        let martin = key("martin");
        let first = turns.take(&martin).await;
        // Another key does not wait.
        drop(turns.take(&key("bernard")).await);
        assert!(turns.try_take(&martin).is_none(), "the key is taken");
        let mut second = Box::pin(turns.take(&martin));
        assert!(second.as_mut().now_or_never().is_none(), "the key is taken");
        drop(first);
        let second = second.await;
        assert_eq!(turns.waiting(), 1);
        // A waiter given up leaves nothing behind.
        let mut third = Box::pin(turns.take(&martin));
        assert!(third.as_mut().now_or_never().is_none());
        drop(third);
        drop(second);
        assert_eq!(turns.waiting(), 0);
        let free = turns.try_take(&martin).expect("the key is free");
        assert_eq!(turns.waiting(), 1);
        drop(free);
        assert_eq!(turns.waiting(), 0);
    }
}
