//! Where a page deep in a long list starts reading: the sort keys of every
//! `ListAnchorRows`-th patient of the list (its anchors), remembered by a node with the
//! generation of the scope they were read at.
//!
//! With `OFFSET`, a page's cost grows with its depth: page 10,000 of a million patients
//! passes over 500,000 rows first (0.09 s on PostgreSQL with an index-only scan, 0.1–0.5
//! s on SQLite), and a front end paging through the middle of a list asks for a
//! different page each time, so no remembered answer helps. With anchors, page `p` is
//! read from the anchor at or before its first row, skipping fewer than
//! `ListAnchorRows` rows (500 by default) from there (`Db::counts_and_page_after`): a
//! few hundred index entries, whatever the page's depth.
//!
//! The anchors of a (scope, status, order) are read in one statement with the scope's
//! counts (`Db::list_anchors`: one pass over the list in its index, 0.3 s to 1.8 s at a
//! million patients), so they belong to that generation. A page read from an anchor
//! comes in one statement with the counts as well, and is used only if their generation
//! is the anchors': then the anchor is still the row at its position, and the page is
//! exactly the one `OFFSET` would read. A node that knows a list's anchors reads a deep
//! page from them before it reads the counts ([`known_deep_page`]): one statement per
//! page, whose counts the usual way goes on with if their generation has moved on.
//! Any write to a patient of the scope, by any node, changes the generation; the page
//! is then read the usual way, and the anchors read again, but not more than a fifth of
//! the time a key's reads take
//! ([`REREAD_AFTER`]): while patients are written all the time, deep pages are read with
//! `OFFSET`, as before. The rows of a page are read at each request, through the
//! caller's scope: an anchor is a position, never a patient shown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::search_cache::{GenerationCache, Held, Turns};
use crate::app::App;
use crate::domain::PatientStatus;
use crate::error::ApiResult;
use crate::store::patients::{PatientCounts, PatientFilter, PatientRow, PatientSort, Scope, SortKey};
use crate::store::{Db, PageRequest};

/// Anchor sets kept, and their bytes over all sets: 16 MB at most (a million patients'
/// list in the default order is 2,000 anchors, about 200 KB), whatever the registry's
/// size.
const ENTRIES_MAX: usize = 512;
const BUDGET_BYTES: usize = 16 << 20;

/// A key's anchors are read again no sooner than this many times what their last read
/// took after it: at most a fifth of the time goes to reading anchors that writes keep
/// retiring.
const REREAD_AFTER: u32 = 4;

/// The list anchors belong to: the patients a caller may see, of one status or all, in
/// one order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListKey {
    pub scope: Scope,
    pub status: Option<PatientStatus>,
    pub sort: PatientSort,
}

impl ListKey {
    /// The list `filter` reads, if it may have anchors: not a search, and a scope that
    /// sees something.
    fn of(filter: &PatientFilter) -> Option<ListKey> {
        let list = filter.search.is_none() && filter.pseudonym.is_none() && filter.scope != Scope::Nothing;
        list.then_some(ListKey { scope: filter.scope, status: filter.status, sort: filter.sort })
    }
}

/// A list's anchors: the sort keys of its rows at positions 0, `every`, 2·`every`, …
#[derive(Debug)]
pub struct Anchors {
    every: i64,
    keys: Vec<SortKey>,
    /// The list's length at the anchors' generation.
    total: i64,
    /// When they were read, and what that took (see [`REREAD_AFTER`]).
    read_at: Instant,
    took: Duration,
    bytes: usize,
}

impl Anchors {
    fn new(every: i64, keys: Vec<SortKey>, total: i64, read_at: Instant, took: Duration) -> Anchors {
        // Values as serde_json holds them: 32 bytes each, and a text's own bytes.
        let value = |v: &serde_json::Value| 32 + v.as_str().map_or(0, str::len);
        let bytes = keys.iter().map(|k| 16 + k.iter().map(value).sum::<usize>()).sum::<usize>() + 64;
        Anchors { every, keys, total, read_at, took, bytes }
    }

    /// The anchor to read the page at `offset` (of `limit` rows) from and how many rows
    /// to skip after it; `None` for a page that is not [`deep`] in the list they saw.
    fn seek(&self, offset: i64, limit: i64) -> Option<(&SortKey, i64)> {
        if !deep(offset, limit, self.total, self.every) {
            return None;
        }
        let at = offset / self.every;
        let key = self.keys.get(usize::try_from(at).ok()?)?;
        Some((key, offset - at * self.every))
    }

    /// Whether the anchors may be read again now (see [`REREAD_AFTER`]).
    fn may_reread(&self) -> bool {
        self.read_at.elapsed() >= self.took * REREAD_AFTER
    }
}

/// Whether the page at `offset` (of `limit` rows) of a list of `total` is deep enough to
/// be read from anchors `every` rows apart: at least `every` rows from either end, which
/// the usual read reaches as cheaply (backwards from the end for the last pages).
fn deep(offset: i64, limit: i64, total: i64, every: i64) -> bool {
    every >= 1 && offset >= every && total - (offset + limit) >= every
}

impl Held for Arc<Anchors> {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Anchors of lists, per scope's generation.
pub type AnchorCache = GenerationCache<ListKey, Arc<Anchors>>;

impl Default for AnchorCache {
    fn default() -> AnchorCache {
        GenerationCache::with_limits(ENTRIES_MAX, BUDGET_BYTES)
    }
}

/// One read of a key's anchors at a time on this node.
pub type AnchorTurns = Turns<ListKey>;

/// A page of `filter`'s list (no search) read from an anchor, with the counts read in
/// the same statement, when the page is deep in the list (`counts`: the scope's, read
/// just before) and the anchors of its generation are known or may be read now; `None`
/// otherwise (the caller reads it the usual way). The connection is given back, or
/// another in its place: one is not held while waiting for another request's read of
/// the same anchors.
pub async fn deep_page(
    app: &App,
    mut db: Db,
    filter: &PatientFilter,
    page: PageRequest,
    counts: &PatientCounts,
) -> ApiResult<(Db, Option<(PatientCounts, Vec<PatientRow>)>)> {
    let Some(key) = ListKey::of(filter) else { return Ok((db, None)) };
    let every = i64::from(app.config.list_anchor_rows);
    if !deep(page.offset(), page.limit(), counts.total(filter.status), every) {
        return Ok((db, None));
    }
    let known = app.anchors.get_any(&key);
    if let Some((generation, anchors)) = &known {
        if *generation == counts.generation {
            let found = from_anchor(&mut db, filter, page, *generation, anchors).await?;
            return Ok((db, found.and_then(page_of)));
        }
        if !anchors.may_reread() {
            return Ok((db, None));
        }
    }
    let (back, _turn, waited) = app.anchor_turns.take_with(&key, db, &app.store).await?;
    db = back;
    if waited {
        // Another request was reading these anchors: read from them if no write came
        // since (the page's statement checks).
        if let Some((generation, anchors)) = app.anchors.get_any(&key) {
            if known.as_ref().is_none_or(|(g, _)| *g != generation) {
                let found = from_anchor(&mut db, filter, page, generation, &anchors).await?;
                return Ok((db, found.and_then(page_of)));
            }
        }
    }
    let read_at = Instant::now();
    let Some((read, keys)) = db.list_anchors(filter, every).await? else { return Ok((db, None)) };
    crate::metrics::global().list_anchor_reads.fetch_add(1, Ordering::Relaxed);
    let anchors = Arc::new(Anchors::new(every, keys, read.total(filter.status), read_at, read_at.elapsed()));
    app.anchors.put(key, read.generation, anchors.clone());
    let found = from_anchor(&mut db, filter, page, read.generation, &anchors).await?;
    Ok((db, found.and_then(page_of)))
}

/// Before the scope's counts are read: a page deep in `filter`'s list (no search) read
/// from the anchors this node knows for it, whatever their generation, in the statement
/// that reads the counts as well. The rows come only if the counts are of the anchors'
/// generation; otherwise the counts alone, for the caller to go on with (through
/// [`deep_page`]). A page in the middle of a list then costs one statement, not two.
/// `None` (nothing read) if no anchors are known or the page is not deep in the list
/// the anchors saw.
pub async fn known_deep_page(
    app: &App,
    db: &mut Db,
    filter: &PatientFilter,
    page: PageRequest,
) -> ApiResult<Option<(PatientCounts, Option<Vec<PatientRow>>)>> {
    let Some((generation, anchors)) = ListKey::of(filter).and_then(|key| app.anchors.get_any(&key)) else { return Ok(None) };
    from_anchor(db, filter, page, generation, &anchors).await
}

/// The counts and, if they are still of `generation` (the anchors'), the page read
/// from `anchors`; `None` for a page not deep in the list the anchors saw.
async fn from_anchor(
    db: &mut Db,
    filter: &PatientFilter,
    page: PageRequest,
    generation: i64,
    anchors: &Anchors,
) -> ApiResult<Option<(PatientCounts, Option<Vec<PatientRow>>)>> {
    let Some((key, skip)) = anchors.seek(page.offset(), page.limit()) else { return Ok(None) };
    match db.counts_and_page_after(filter, key, (skip, anchors.every), page.limit()).await? {
        Some((counts, rows)) if counts.generation == generation => {
            crate::metrics::global().list_pages_from_anchors.fetch_add(1, Ordering::Relaxed);
            Ok(Some((counts, Some(rows))))
        }
        Some((counts, _)) => Ok(Some((counts, None))),
        None => Ok(None),
    }
}

/// The page of [`from_anchor`]'s answer, if it has one.
fn page_of((counts, rows): (PatientCounts, Option<Vec<PatientRow>>)) -> Option<(PatientCounts, Vec<PatientRow>)> {
    rows.map(|rows| (counts, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchors(every: i64, total: i64) -> Anchors {
        let keys = (0..total).step_by(every as usize).map(|i| vec![serde_json::json!(i)].into_boxed_slice()).collect();
        Anchors::new(every, keys, total, Instant::now(), Duration::from_millis(50))
    }

    #[test]
    fn a_deep_page_starts_from_the_anchor_at_or_before_it() {
        let a = anchors(500, 1_000_000);
        // Page 10,001 of 50: offset 500,000, the anchor of position 500,000 itself.
        assert_eq!(a.seek(500_000, 50).map(|(k, skip)| (k[0].clone(), skip)), Some((serde_json::json!(500_000), 0)));
        assert_eq!(a.seek(500_450, 50).map(|(k, skip)| (k[0].clone(), skip)), Some((serde_json::json!(500_000), 450)));
        assert_eq!(a.seek(500_499, 50).map(|(k, skip)| (k[0].clone(), skip)), Some((serde_json::json!(500_000), 499)));
        // Within `every` rows of either end: the usual read.
        assert!(a.seek(450, 50).is_none());
        assert!(a.seek(1_000_000 - 50 - 499, 50).is_none());
        assert!(a.seek(1_000_000 - 50 - 500, 50).is_some());
        assert!(a.seek(2_000_000, 50).is_none(), "past the end");
    }

    #[test]
    fn anchors_are_read_again_only_after_a_while() {
        let mut a = anchors(500, 10_000);
        assert!(!a.may_reread(), "just read, in 50 ms");
        a.read_at = Instant::now() - Duration::from_millis(50 * REREAD_AFTER as u64);
        assert!(a.may_reread());
        assert!(Held::bytes(&Arc::new(a)) > 20 * 32, "a key's values are counted");
    }
}
