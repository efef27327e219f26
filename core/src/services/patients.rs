//! The patient registry: visibility, listing, manual records, status workflow and
//! deletion. Every route that touches a patient goes through [`visible_patient`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use chrono::NaiveDate;
use serde_json::json;

use super::page_cache::{Answer, PageKey, SearchPage};
use super::search_cache::{patched, Ids, SearchKey, SearchResult, Since, Written, IDS_MAX};
use super::{action, Outcome, Principal};
use crate::app::App;
use crate::domain::{self, fold_for_search, Id, PatientStatus};
use crate::error::{ApiError, ApiResult};
use crate::model::{Paginated, Patient, PatientDetail, PatientInstance, StatusLabel, Study, WriteJson};
use crate::store::patients::{ListPlan, NewPatient, PatientFilter, PatientRow, PatientSort, Scope};
use crate::store::{Db, Page, PageRequest};

/// Which patients a caller may see: admins all; users their group's; a user without a
/// group none. Ungrouped patients are for admins to triage.
pub fn scope_of(who: &Principal) -> Scope {
    if who.is_admin() {
        Scope::All
    } else {
        match who.user.group_id {
            Some(g) => Scope::Group(g),
            None => Scope::Nothing,
        }
    }
}

pub fn can_see(scope: Scope, patient: &PatientRow) -> bool {
    scope.allows(patient.group_id)
}

fn not_found() -> ApiError {
    ApiError::not_found("patient")
}

/// Loads a patient the caller may see; another group's patient is a 404, as if it did
/// not exist, and the attempt is audited (on another connection: never call this with a
/// write transaction open, see [`update`]).
pub async fn visible_patient(app: &App, db: &mut Db, who: &Principal, id: Id) -> ApiResult<PatientRow> {
    let row = db.patient_by_id(id).await?.ok_or_else(not_found)?;
    if can_see(scope_of(who), &row) {
        return Ok(row);
    }
    audit_hidden(app, who, id).await;
    Err(not_found())
}

/// Records that a caller asked for a patient they may not see.
pub async fn audit_hidden(app: &App, who: &Principal, patient_id: Id) {
    let row = who.actor().audit(action::ACCESS_DENIED, Outcome::Denied).on("patient", patient_id).details(json!({
        "reason": "patient_not_visible"
    }));
    if let Err(e) = app.store.audit(&row).await {
        tracing::warn!(error = %e, "could not audit a hidden-patient access");
    }
}

pub fn statuses() -> Vec<StatusLabel> {
    PatientStatus::ALL.iter().map(|s| StatusLabel { code: *s, label: s.label() }).collect()
}

/// `?sort=` values: a field, `-` in front for descending.
pub fn parse_sort(raw: Option<&str>) -> ApiResult<PatientSort> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("-updated_at");
    let (desc, field) = match raw.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, raw),
    };
    Ok(match field {
        "created_at" => PatientSort::CreatedAt { desc },
        "updated_at" => PatientSort::UpdatedAt { desc },
        "last_name" => PatientSort::LastName { desc },
        "external_id" => PatientSort::ExternalId { desc },
        "status" => PatientSort::Status { desc },
        _ => {
            return Err(ApiError::validation(
                "sort",
                "must be one of created_at, updated_at, last_name, external_id, status (prefix - for descending)",
            ))
        }
    })
}

/// The answer to a list request: a page of the patients the caller may see, with the
/// exact total, written as JSON (`Paginated<Patient>`). An answer this node wrote for
/// the same scope, filter, order and page is given again if the scope's generation in
/// the database is still the one it was read at (see `page_cache`); otherwise the page
/// is read (`read_page`) and the answer remembered.
pub async fn list(
    app: &App,
    who: &Principal,
    q: Option<&str>,
    status: Option<PatientStatus>,
    sort: PatientSort,
    page: PageRequest,
) -> ApiResult<Bytes> {
    let search = q.map(fold_for_search).map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    // Admins may look a pseudonym up (one that came back from a de-identified export).
    let pseudonym = q.filter(|q| who.is_admin() && crate::deidentify::looks_like_pseudonym(q)).map(|q| q.trim().to_ascii_uppercase());
    let filter = PatientFilter { scope: scope_of(who), search, pseudonym, status, sort };
    if filter.scope == Scope::Nothing {
        return Ok(written(Page { items: Vec::new(), total: 0 }, page));
    }
    // Not a pseudonym's search: that table has no generation.
    let key = filter.pseudonym.is_none().then(|| PageKey {
        scope: filter.scope,
        status,
        search: filter.search.clone(),
        sort,
        page: page.page,
        page_size: page.page_size,
    });
    let mut db = app.store.conn().await?;
    let mut known = None;
    if let Some((then, answer)) = key.as_ref().and_then(|k| app.pages.get_any(k)) {
        let now = db.patient_generation(filter.scope).await?;
        if now == then {
            return Ok(answer.bytes);
        }
        known = Some(Known { now, then, answer });
    }
    let (answer, generation) = read_page(app, db, &filter, page, known).await?;
    let bytes = answer.bytes.clone();
    if let Some(key) = key {
        app.pages.put(key, generation, answer);
    }
    Ok(bytes)
}

/// The answer this node remembers for a request, read at generation `then`, and the
/// scope's generation just read, `now`, a later one.
struct Known {
    now: i64,
    then: i64,
    answer: Answer,
}

/// A list's answer as the API writes it (a patient is 250 to 400 bytes of JSON).
fn written(found: Page<Patient>, page: PageRequest) -> Bytes {
    let value = Paginated::of(found, page);
    let mut buf = Vec::with_capacity(64 + 400 * value.items.len());
    value.write_json(&mut buf);
    Bytes::from(buf)
}

/// The answer to a page of the patients `filter` selects, with the exact total, and the
/// generation of the scope read before the page or with it. Totals come from the
/// counters (no search), or from a count remembered by this node while the scope's
/// generation stays the same (a search; see `search_cache`); a search matching few
/// patients also remembers their ordered ids and reads a page by id. `known`: this
/// node's answer of an earlier generation, and the scope's generation just read.
async fn read_page(app: &App, mut db: Db, filter: &PatientFilter, page: PageRequest, known: Option<Known>) -> ApiResult<(Answer, i64)> {
    let status = filter.status;
    let sort = filter.sort;
    let done = |rows: Vec<PatientRow>, total: i64, generation: i64, ids: Option<Vec<Id>>| {
        let bytes = written(Page { items: rows.into_iter().map(Patient::from).collect(), total }, page);
        Ok((Answer { bytes, search: ids.map(|ids| SearchPage { total, ids: Arc::from(ids) }) }, generation))
    };
    if let Some((counts, rows)) = db.counts_and_first_page(filter, page).await? {
        return done(rows, counts.total(status), counts.generation, None);
    }
    // A search this node may remember (not a pseudonym's: that table has no generation).
    let key = match (&filter.search, &filter.pseudonym) {
        (Some(search), None) => Some(SearchKey { scope: filter.scope, status, search: search.clone(), sort }),
        _ => None,
    };
    // A search, the scope's generation just read (a remembered answer found of an
    // earlier one, as when patients are being created): its matches at least as new,
    // and the page, without reading the counts again. The answer remembered still
    // holds if the page's ids and the total are the same and none of the page's
    // patients was written since it was read (the search's patches name every patient
    // written): a patient created elsewhere in the list, or another patient changed.
    if let (Some(key), Some(known)) = (&key, known) {
        let (db, found) = search_result(app, db, filter, key.clone(), known.now, Instant::now()).await?;
        if let (Some(was), Some(ids), Some(since)) = (&known.answer.search, &found.ids, &found.since) {
            let ids = ids_of_page(ids, page);
            if was.total == found.total && *was.ids == ids[..] && since.written.untouched(known.then, &ids) {
                db.commit().await?;
                crate::metrics::global().search_pages_kept.fetch_add(1, Ordering::Relaxed);
                return Ok((known.answer, known.now));
            }
        }
        let (rows, ids) = page_of_search(db, filter, page, &found, None).await?;
        return done(rows, found.total, known.now, ids);
    }
    // A search whose ordered ids this node remembers: the counts and the page's rows in
    // one statement (PostgreSQL), kept only if the generation read with them is the one
    // the ids were found at; otherwise the way below, which goes on with those counts.
    let mut read = None;
    if let Some((generation, SearchResult { total, ids: Some(ids), .. })) = key.as_ref().and_then(|k| app.searches.get_any(k)) {
        let ids = ids_of_page(&ids, page);
        if let Some((counts, mut rows)) = db.counts_and_patients_by_ids(filter.scope, &ids).await? {
            if counts.generation == generation {
                keep_visible(&mut rows, filter.scope, status);
                return done(rows, total, generation, Some(ids));
            }
            read = Some(counts);
        }
    }
    // A page deep in a list without a search, from the anchors this node knows: the
    // statement reads the counts too, which the way below goes on with if the anchors'
    // generation has passed.
    let counts = match read {
        Some(counts) => counts,
        None => match super::anchors::known_deep_page(app, &mut db, filter, page).await? {
            Some((counts, Some(rows))) => return done(rows, counts.total(status), counts.generation, None),
            Some((counts, None)) => counts,
            None => db.patient_counts(filter.scope).await?,
        },
    };
    let universe = counts.total(status);
    // A page deep in a list without a search: from the nearest anchor before it.
    let (back, found) = super::anchors::deep_page(app, db, filter, page, &counts).await?;
    db = back;
    if let Some((counts, rows)) = found {
        return done(rows, counts.total(status), counts.generation, None);
    }
    let (total, (rows, ids)) = match (&filter.search, key) {
        (None, _) => (universe, (db.list_patients(filter, page, ListPlan { total: universe, universe }).await?, None)),
        // The pseudonyms table has no generation: counted every time (rare).
        (Some(_), None) => {
            let total = db.count_patient_matches(filter).await?;
            (total, (db.list_patients(filter, page, ListPlan { total, universe }).await?, None))
        }
        (Some(_), Some(key)) => {
            // After the counts came back: a search sent later sees at least their snapshot.
            let counted_at = Instant::now();
            let (db, found) = search_result(app, db, filter, key, counts.generation, counted_at).await?;
            (found.total, page_of_search(db, filter, page, &found, Some(universe)).await?)
        }
    };
    done(rows, total, counts.generation, ids)
}

/// A page of a search's matches: read by id from its remembered ids (and rechecked),
/// with those ids, or in sort order from the database (given the scope's and status's
/// patients, when known). Ends `db`'s read snapshot, if it is one.
async fn page_of_search(
    mut db: Db,
    filter: &PatientFilter,
    page: PageRequest,
    found: &SearchResult,
    universe: Option<i64>,
) -> ApiResult<(Vec<PatientRow>, Option<Vec<Id>>)> {
    let read = match &found.ids {
        Some(ids) => {
            let ids = ids_of_page(ids, page);
            let mut rows = db.patients_by_ids(&ids).await?;
            keep_visible(&mut rows, filter.scope, filter.status);
            (rows, Some(ids))
        }
        None => {
            let universe = match universe {
                Some(n) => n,
                None => db.patient_counts(filter.scope).await?.total(filter.status),
            };
            (db.list_patients(filter, page, ListPlan { total: found.total, universe }).await?, None)
        }
    };
    db.commit().await?;
    Ok(read)
}

/// What a search matches, at least as new as the scope's counts read (at `generation`)
/// just before `counted_at`, with the connection to go on with. A result remembered at
/// that generation or a later one serves (a scope's generation only grows, and a
/// snapshot sees every write an earlier one saw: one with as large a generation saw all
/// of the scope's writes the counts did). Otherwise one request at a time brings the
/// key's result up to date (`Turns`): from the patients written since, in a time order
/// (`patch_search`), else by reading the search in full. The requests that waited for
/// it are served by what it found if its generation is at least theirs, or if it was
/// read after their counts; each of the others brings it up to date in turn.
async fn search_result(
    app: &App,
    db: Db,
    filter: &PatientFilter,
    key: SearchKey,
    generation: i64,
    counted_at: Instant,
) -> ApiResult<(Db, SearchResult)> {
    if let Some(found) = app.searches.get_since(&key, generation) {
        return Ok((db, found));
    }
    // Not waiting with a connection: others need it, and the read before this one may
    // take a while. A request served by it gives the turn back before taking a
    // connection again: the requests that waited together pass the turn on one after
    // the other, and each waiting for a connection while holding it made them wait for
    // each other's.
    let (kept, turn) = match app.search_turns.try_take(&key) {
        Some(turn) => (Some(db), turn),
        None => {
            drop(db);
            (None, app.search_turns.take(&key).await)
        }
    };
    let before = app.searches.get_any(&key);
    let serves = |(g, found): &(i64, SearchResult)| *g >= generation || found.at >= counted_at;
    if let Some((_, found)) = before.clone().filter(serves) {
        drop(turn);
        let db = match kept {
            Some(db) => db,
            None => app.store.conn().await?,
        };
        return Ok((db, found));
    }
    let mut db = match kept {
        Some(db) => db,
        None => app.store.conn().await?,
    };
    if let Some((then, before)) = before {
        if let Some((generation, found)) = patch_search(&mut db, filter, then, &before, Instant::now()).await? {
            app.searches.put_newer(key, generation, found.clone());
            drop(turn);
            return Ok((db, found));
        }
    }
    // In one snapshot: the generation the result is kept under, the change log's
    // position and the matches, so that the result is exactly that generation's and the
    // next patch starts where this one ended.
    drop(db);
    let at = Instant::now();
    let mut db = app.store.read_snapshot().await?;
    let generation = db.patient_generation(filter.scope).await?;
    let found = read_search(&mut db, filter, at).await?;
    app.searches.put_newer(key, generation, found.clone());
    drop(turn);
    Ok((db, found))
}

/// Patients written since a remembered search's snapshot, past which its matches are read
/// in full rather than patched: reading this many by id costs about what reading a
/// common name's matches does.
const CHANGES_MAX: i64 = 5_000;

/// All of a search's matches, in `db`'s snapshot: their ordered ids and sort keys with
/// the change log's position (a time order, at most [`IDS_MAX`] matches), their ids
/// alone (another order), or only their number (more).
async fn read_search(db: &mut Db, filter: &PatientFilter, at: Instant) -> ApiResult<SearchResult> {
    crate::metrics::global().searches_read.fetch_add(1, Ordering::Relaxed);
    // The ordered ids first (their number is the total), up to one more than are kept:
    // only a search matching more is counted.
    let keyed = match filter.sort.time_column() {
        Some(_) => {
            let mark = db.change_mark().await?;
            db.matching_patient_keys(filter, IDS_MAX + 1)
                .await?
                .map(|(ids, keys)| (ids, Some(Arc::new(Since { keys, mark, written: Written::default() }))))
        }
        None => None,
    };
    let (ids, since) = match keyed {
        Some(keyed) => keyed,
        None => (db.matching_patient_ids(filter, IDS_MAX + 1).await?, None),
    };
    Ok(if ids.len() as i64 <= IDS_MAX {
        SearchResult { total: ids.len() as i64, ids: Some(Arc::new(Ids::new(ids))), since, at }
    } else {
        drop(ids);
        SearchResult { total: db.count_patient_matches(filter).await?, ids: None, since: None, at }
    })
}

/// A remembered search's matches (of generation `then`) brought up to date by reading
/// only the patients written since its snapshot (`search_cache::patched`), with the
/// generation they are of; `None` when they cannot be (no keys remembered, the change
/// log pruned past its snapshot, more than [`CHANGES_MAX`] changes since, or more than
/// [`IDS_MAX`] matches after). The patients written are added to the search's history.
async fn patch_search(
    db: &mut Db,
    filter: &PatientFilter,
    then: i64,
    before: &SearchResult,
    at: Instant,
) -> ApiResult<Option<(i64, SearchResult)>> {
    let (Some(ids), Some(since)) = (&before.ids, &before.since) else { return Ok(None) };
    let Some(changes) = db.changes_since(filter, &since.mark, CHANGES_MAX).await? else { return Ok(None) };
    let desc = filter.sort.descending();
    let Some((ids, keys)) = patched(ids, &since.keys, &changes.changed, &changes.fresh, &changes.fresh_keys, desc) else {
        return Ok(None);
    };
    if ids.len() as i64 > IDS_MAX {
        return Ok(None);
    }
    crate::metrics::global().searches_patched.fetch_add(1, Ordering::Relaxed);
    let written = since.written.then(then, changes.generation, &changes.changed);
    let since = Some(Arc::new(Since { keys, mark: changes.mark, written }));
    Ok(Some((changes.generation, SearchResult { total: ids.len() as i64, ids: Some(Arc::new(ids)), since, at })))
}

/// The ids of `page` among a search's remembered ordered ids.
fn ids_of_page(ids: &Ids, page: PageRequest) -> Vec<Id> {
    let start = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    ids.slice(start, start.saturating_add(page.page_size as usize))
}

/// Drops the rows of a page read by id that the caller may not see, or not of the
/// status asked for. Read now, so checked now: never a patient the caller may not see.
fn keep_visible(rows: &mut Vec<PatientRow>, scope: Scope, status: Option<PatientStatus>) {
    rows.retain(|r| can_see(scope, r) && status.is_none_or(|s| r.status == s));
}

pub async fn get(app: &App, who: &Principal, id: Id) -> ApiResult<PatientDetail> {
    let mut db = app.store.conn().await?;
    let row = visible_patient(app, &mut db, who, id).await?;
    let studies = db.studies_of_patient(row.id).await?.into_iter().map(Study::from).collect();
    let pseudonym = if who.is_admin() {
        match super::pseudonyms::pseudonym_of(&mut db, &row).await {
            Ok((_, pseudonym)) => Some(pseudonym),
            // A read must not fail for lack of disk space: without room to record the
            // pseudonym (every one given is recorded), it is left out of this answer.
            Err(e) if e.is_insufficient_storage() => {
                tracing::warn!(patient = row.id, "no room to record the patient's pseudonym; answering without it");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(PatientDetail { patient: row.into(), studies, pseudonym })
}

pub async fn instances(app: &App, who: &Principal, id: Id) -> ApiResult<Vec<PatientInstance>> {
    let mut db = app.store.conn().await?;
    let row = visible_patient(app, &mut db, who, id).await?;
    Ok(db.patient_instances(row.id).await?.into_iter().map(PatientInstance::from).collect())
}

/// Fields of a manual patient record.
#[derive(Clone, Debug, Default)]
pub struct PatientInput {
    pub external_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub status: Option<PatientStatus>,
    pub group_id: Option<Id>,
}

/// Changes to a patient; `Some(None)` clears a nullable field.
#[derive(Clone, Debug, Default)]
pub struct PatientChanges {
    pub status: Option<PatientStatus>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub date_of_birth: Option<Option<NaiveDate>>,
    pub group_id: Option<Option<Id>>,
}

/// A DICOM LO value: 1 to 64 characters, no backslash or control characters.
pub fn check_external_id(raw: &str) -> ApiResult<String> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > 64 || s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(ApiError::validation("external_id", "must be 1 to 64 characters, without backslashes"));
    }
    Ok(s.to_string())
}

fn name(field: &str, raw: Option<&str>) -> ApiResult<Option<String>> {
    raw.map(domain::clean_name).transpose().map_err(|e| ApiError::validation(field, e)).map(Option::flatten)
}

fn check_birth_date(d: Option<NaiveDate>) -> ApiResult<()> {
    match d {
        Some(d) if d > chrono::Utc::now().date_naive() => Err(ApiError::validation("date_of_birth", "is in the future")),
        _ => Ok(()),
    }
}

/// The group a non-admin acts in; `no_group` when they have none.
pub fn own_group(who: &Principal) -> ApiResult<Option<Id>> {
    match (who.is_admin(), who.user.group_id) {
        (true, g) => Ok(g),
        (false, Some(g)) => Ok(Some(g)),
        (false, None) => Err(ApiError::forbidden("no_group", "you belong to no research group; ask an admin")),
    }
}

pub async fn create(app: &App, who: &Principal, input: PatientInput) -> ApiResult<Patient> {
    let external_id = check_external_id(&input.external_id)?;
    let first_name = name("first_name", input.first_name.as_deref())?;
    let last_name = name("last_name", input.last_name.as_deref())?;
    check_birth_date(input.date_of_birth)?;
    let group_id = if who.is_admin() {
        input.group_id.or(who.user.group_id)
    } else {
        let own = own_group(who)?;
        if input.group_id.is_some() && input.group_id != own {
            return Err(ApiError::forbidden("forbidden", "you can only create patients in your own group"));
        }
        own
    };
    let taken = || ApiError::conflict("external_id_taken", "a patient with this external_id already exists");
    let mut tx = app.store.begin().await?;
    super::groups::check_exists(&mut tx, group_id).await?;
    if tx.patient_by_external_id(&external_id).await?.is_some() {
        return Err(taken());
    }
    let new = NewPatient {
        external_id,
        orthanc_patient_id: None,
        status: input.status.unwrap_or(PatientStatus::ToInterpret),
        first_name,
        last_name,
        date_of_birth: input.date_of_birth,
        group_id,
    };
    let row = tx.insert_patient(&new).await.map_err(|e| if e.is_unique_violation() { taken() } else { e.into() })?;
    tx.insert_audit(&who.actor().audit(action::CREATE, Outcome::Success).on("patient", row.id).details(json!({
        "external_id": row.external_id, "group_id": row.group_id, "status": row.status
    })))
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn update(app: &App, who: &Principal, id: Id, changes: PatientChanges) -> ApiResult<Patient> {
    let first_name = changes.first_name.map(|n| name("first_name", n.as_deref())).transpose()?;
    let last_name = changes.last_name.map(|n| name("last_name", n.as_deref())).transpose()?;
    check_birth_date(changes.date_of_birth.flatten())?;
    let mut tx = app.store.begin().await?;
    let mut row = tx.patient_by_id(id).await?.ok_or_else(not_found)?;
    if !can_see(scope_of(who), &row) {
        // The refusal is audited on another connection: give up the write transaction
        // first (on SQLite it holds the write lock, and the audit row would wait for it
        // until the busy timeout and be lost).
        tx.rollback().await?;
        audit_hidden(app, who, id).await;
        return Err(not_found());
    }
    if let Some(group_id) = changes.group_id {
        if group_id != row.group_id && !who.is_admin() {
            return Err(ApiError::forbidden("forbidden", "only admins move patients between groups"));
        }
        super::groups::check_exists(&mut tx, group_id).await?;
    }
    let before = Patient::from(row.clone());
    if let Some(status) = changes.status {
        row.status = status;
    }
    if let Some(first_name) = first_name {
        row.first_name = first_name;
    }
    if let Some(last_name) = last_name {
        row.last_name = last_name;
    }
    if let Some(dob) = changes.date_of_birth {
        row.date_of_birth = dob;
    }
    if let Some(group_id) = changes.group_id {
        row.group_id = group_id;
    }
    tx.save_patient(&mut row).await?;
    let after = Patient::from(row);
    let mut changed = serde_json::Map::new();
    let (b, a) = (json!(before), json!(after));
    for key in ["status", "first_name", "last_name", "date_of_birth", "group_id"] {
        if b[key] != a[key] {
            changed.insert(key.to_string(), json!([b[key], a[key]]));
        }
    }
    tx.insert_audit(&who.actor().audit(action::UPDATE, Outcome::Success).on("patient", id).details(json!({"changes": changed}))).await?;
    tx.commit().await?;
    if changed.contains_key("group_id") {
        // Who may fetch this patient's images changed.
        app.instance_owners.forget_where(|(patient, _)| *patient == id);
    }
    Ok(after)
}

/// Deletes a patient record (admins); with `purge_dicom`, their DICOM data in Orthanc
/// too. Orthanc is asked first, inside the transaction: if it fails, nothing changes.
pub async fn delete(app: &App, who: &Principal, id: Id, purge_dicom: bool) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    let row = tx.patient_by_id(id).await?.ok_or_else(not_found)?;
    tx.insert_audit(&who.actor().audit(action::DELETE, Outcome::Success).on("patient", id).details(json!({
        "external_id": row.external_id, "purge_dicom": purge_dicom
    })))
    .await?;
    tx.delete_patient(id).await?;
    if purge_dicom {
        if let Some(orthanc_id) = &row.orthanc_patient_id {
            let pacs = app.pacs()?;
            match pacs.delete_patient(orthanc_id).await {
                Ok(()) | Err(crate::pacs::PacsError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    tx.commit().await?;
    app.instance_owners.forget_where(|(patient, _)| *patient == id);
    Ok(())
}
