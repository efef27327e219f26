//! The patient registry: patients, their studies, and the instances of those studies.

use chrono::{DateTime, NaiveDate, Utc};

use super::{Db, PageRequest, StoreResult};
use crate::domain::{fold_for_search, like_contains, Id, PatientStatus};
use crate::pacs::InstanceInfo;

#[derive(Clone, Debug)]
pub struct PatientRow {
    pub id: Id,
    pub external_id: String,
    pub orthanc_patient_id: Option<String>,
    pub dicom_study_uid: Option<String>,
    pub status: PatientStatus,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub group_id: Option<Id>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`PatientRow`], in the order of `patient_columns!()`.
const PATIENT_COLUMNS: [&str; 11] = [
    "id",
    "external_id",
    "orthanc_patient_id",
    "dicom_study_uid",
    "status",
    "first_name",
    "last_name",
    "date_of_birth",
    "group_id",
    "created_at",
    "updated_at",
];

/// A patient's status from its column's text; another text is a decoding error.
fn status_of(text: &str) -> Result<PatientStatus, sqlx::Error> {
    text.parse()
        .map_err(|e: crate::domain::Invalid| sqlx::Error::ColumnDecode { index: PATIENT_COLUMNS[4].to_string(), source: e.0.into() })
}

/// Reads the columns by name (single-patient lookups; lists read their rows with
/// [`pg_patient_rows`] or from SQLite's JSON). The status is parsed from the row's text,
/// not from a `String` allocated for it.
impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for PatientRow
where
    for<'n> &'n str: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Id: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    NaiveDate: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let status: &str = row.try_get("status")?;
        Ok(PatientRow {
            id: row.try_get("id")?,
            external_id: row.try_get("external_id")?,
            orthanc_patient_id: row.try_get("orthanc_patient_id")?,
            dicom_study_uid: row.try_get("dicom_study_uid")?,
            status: status_of(status)?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            date_of_birth: row.try_get("date_of_birth")?,
            group_id: row.try_get("group_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// The rows of one PostgreSQL result as patients, read by position with the columns'
/// names and types checked once for the whole result (its rows share one description),
/// where `try_get` checks a value's type for every value of every row, building its list
/// of accepted types each time (7 % of a list's instructions, callgrind). A result
/// whose columns are not `patient_columns!()` in order, or not of the expected types, is
/// read row by row through [`sqlx::FromRow`], which says which column is wrong. Rows
/// whose `id` is NULL (the first-page statement's row for an empty page) are skipped.
fn pg_patient_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<PatientRow>, sqlx::Error> {
    use sqlx::postgres::Postgres;
    use sqlx::{Column, FromRow, Row, Type};
    let Some(head) = rows.first() else { return Ok(Vec::new()) };
    let first = head.try_column("id")?.ordinal();
    let columns = head.columns();
    let in_order =
        columns.len() >= first + PATIENT_COLUMNS.len() && columns[first..].iter().zip(PATIENT_COLUMNS).all(|(c, name)| c.name() == name);
    let typed = in_order && {
        let ty = |k: usize| columns[first + k].type_info();
        let text = |k: usize| <String as Type<Postgres>>::compatible(ty(k));
        <Id as Type<Postgres>>::compatible(ty(0))
            && [1, 2, 3, 4, 5, 6].into_iter().all(text)
            && <NaiveDate as Type<Postgres>>::compatible(ty(7))
            && <Id as Type<Postgres>>::compatible(ty(8))
            && <DateTime<Utc> as Type<Postgres>>::compatible(ty(9))
            && <DateTime<Utc> as Type<Postgres>>::compatible(ty(10))
    };
    let mut patients = Vec::with_capacity(rows.len());
    if !typed {
        for row in rows {
            if row.try_get::<Option<Id>, _>("id")?.is_some() {
                patients.push(PatientRow::from_row(row)?);
            }
        }
        return Ok(patients);
    }
    for row in rows {
        let Some(id) = row.try_get_unchecked::<Option<Id>, _>(first)? else { continue };
        let status: &str = row.try_get_unchecked(first + 4)?;
        patients.push(PatientRow {
            id,
            external_id: row.try_get_unchecked(first + 1)?,
            orthanc_patient_id: row.try_get_unchecked(first + 2)?,
            dicom_study_uid: row.try_get_unchecked(first + 3)?,
            status: status_of(status)?,
            first_name: row.try_get_unchecked(first + 5)?,
            last_name: row.try_get_unchecked(first + 6)?,
            date_of_birth: row.try_get_unchecked(first + 7)?,
            group_id: row.try_get_unchecked(first + 8)?,
            created_at: row.try_get_unchecked(first + 9)?,
            updated_at: row.try_get_unchecked(first + 10)?,
        });
    }
    Ok(patients)
}

impl PatientRow {
    fn search_text(&self) -> String {
        let parts = [Some(self.external_id.as_str()), self.first_name.as_deref(), self.last_name.as_deref()];
        fold_for_search(&parts.iter().flatten().copied().collect::<Vec<_>>().join(" "))
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StudyRow {
    pub id: Id,
    pub patient_id: Id,
    pub study_instance_uid: String,
    pub orthanc_study_id: String,
    pub study_date: Option<NaiveDate>,
    pub description: Option<String>,
    pub modalities: String,
    pub instances_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InstanceRow {
    pub orthanc_instance_id: String,
    pub study_id: Id,
    pub patient_id: Id,
    pub orthanc_series_id: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub instance_number: Option<i64>,
    pub modality: Option<String>,
}

/// An instance with the study UID it belongs to, for listings and exports.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InstanceWithStudy {
    pub orthanc_instance_id: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub instance_number: Option<i64>,
    pub modality: Option<String>,
}

/// Which patients a caller may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Group(Id),
    /// A user without a group sees nothing.
    Nothing,
}

impl Scope {
    /// Whether a patient of `group_id` is within this scope.
    pub fn allows(self, group_id: Option<Id>) -> bool {
        match self {
            Scope::All => true,
            Scope::Group(g) => group_id == Some(g),
            Scope::Nothing => false,
        }
    }
}

/// How lists are ordered. Each order ends with a unique column, so it is total, and each
/// has an index that yields it forwards and its exact reverse backwards (migration 0008).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatientSort {
    CreatedAt { desc: bool },
    UpdatedAt { desc: bool },
    LastName { desc: bool },
    ExternalId { desc: bool },
    Status { desc: bool },
}

/// What a sort term's values are, for binding a remembered sort key back (see
/// [`Db::counts_and_page_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A timestamp: text in JSON, cast back on PostgreSQL (SQLite stores the text).
    Time,
    Int,
    Text,
    /// `last_name IS NULL`: written into the SQL, never bound.
    Flag,
}

/// One `ORDER BY` term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Term {
    expr: &'static str,
    desc: bool,
    kind: Kind,
}

impl Term {
    fn sql(&self) -> String {
        format!("{} {}", self.expr, self.direction())
    }

    fn direction(&self) -> &'static str {
        if self.desc {
            "DESC"
        } else {
            "ASC"
        }
    }
}

impl PatientSort {
    /// `ORDER BY` terms in this order, or all flipped.
    fn terms(self, reversed: bool) -> Vec<Term> {
        use Kind::*;
        let (columns, desc): (&[(&'static str, Kind)], bool) = match self {
            PatientSort::CreatedAt { desc } => (&[("created_at", Time), ("id", Int)], desc),
            PatientSort::UpdatedAt { desc } => (&[("updated_at", Time), ("id", Int)], desc),
            // A missing first name sorts as an empty one (migration 0010: never NULL, so
            // a range on it keeps every row after a key).
            PatientSort::LastName { desc } => (&[("last_name", Text), ("COALESCE(first_name, '')", Text), ("id", Int)], desc),
            PatientSort::ExternalId { desc } => (&[("external_id", Text)], desc),
            // Within a status, by last update: the index that serves the status filter
            // (status, updated_at, id) serves this order too.
            PatientSort::Status { desc } => (&[("status", Text), ("updated_at", Time), ("id", Int)], desc),
        };
        let mut terms = Vec::new();
        if matches!(self, PatientSort::LastName { .. }) {
            // Patients without a last name come last, in both directions.
            terms.push(Term { expr: "(last_name IS NULL)", desc: reversed, kind: Flag });
        }
        terms.extend(columns.iter().map(|(expr, kind)| Term { expr, desc: desc != reversed, kind: *kind }));
        terms
    }

    fn order_by(self, reversed: bool) -> String {
        self.terms(reversed).iter().map(Term::sql).collect::<Vec<_>>().join(", ")
    }

    /// The time column an order is by, for the orders whose keys a node compares itself
    /// (`search_cache::patched`); names and texts compare by the database's collation.
    pub fn time_column(self) -> Option<&'static str> {
        match self {
            PatientSort::CreatedAt { .. } => Some("created_at"),
            PatientSort::UpdatedAt { .. } => Some("updated_at"),
            PatientSort::LastName { .. } | PatientSort::ExternalId { .. } | PatientSort::Status { .. } => None,
        }
    }

    /// Whether the order is descending.
    pub fn descending(self) -> bool {
        match self {
            PatientSort::CreatedAt { desc }
            | PatientSort::UpdatedAt { desc }
            | PatientSort::LastName { desc }
            | PatientSort::ExternalId { desc }
            | PatientSort::Status { desc } => desc,
        }
    }

    /// Whether the index that serves a group or status filter also yields this order.
    fn follows_filter_index(self) -> bool {
        matches!(self, PatientSort::UpdatedAt { .. } | PatientSort::Status { .. })
    }
}

/// The sort key of one row of a list: its values of the order's terms, as the database
/// wrote them in JSON (see [`Db::list_anchors`]).
pub type SortKey = Box<[serde_json::Value]>;

/// Where the log of changed patients stood in a read snapshot (migration 0011): on
/// SQLite the last position written (one writer at a time, so positions are in commit
/// order); on PostgreSQL the snapshot itself (`pg_current_snapshot()` as text), since
/// transactions commit in any order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeMark {
    Seq(i64),
    Snapshot(String),
}

/// What [`Db::changes_since`] read in one snapshot.
#[derive(Clone, Debug)]
pub struct Changes {
    /// The scope's generation.
    pub generation: i64,
    /// Where the change log stands.
    pub mark: ChangeMark,
    /// The patients written since the old mark, sorted, each once.
    pub changed: Vec<Id>,
    /// Those of them the filter matches, in list order, and their keys.
    pub fresh: Vec<Id>,
    pub fresh_keys: Keys,
}

/// Rows' (key, id) sorted as a time order sorts them (the id breaks ties), split.
fn in_list_order<K: Ord>(mut rows: Vec<(K, Id)>, desc: bool) -> (Vec<Id>, Vec<K>) {
    rows.sort_unstable();
    if desc {
        rows.reverse();
    }
    let (keys, ids) = rows.into_iter().unzip();
    (ids, keys)
}

/// The sort keys of a time-ordered list, position by position, as its database compares
/// them: microseconds since the epoch (PostgreSQL's `timestamptz`), or the stored text
/// (SQLite, which compares it byte by byte). The id breaks ties in both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    Micros(Vec<i64>),
    /// Shared: a patch copies a list's keys, and a count is cheaper to copy than a text.
    Text(Vec<std::sync::Arc<str>>),
}

impl Keys {
    /// Memory held by the keys (a text's: its bytes, its counts and its pointer).
    pub fn bytes(&self) -> usize {
        match self {
            Keys::Micros(v) => v.len() * 8,
            Keys::Text(v) => v.iter().map(|k| k.len() + 32).sum(),
        }
    }
}

/// Filters of a patient list.
#[derive(Clone, Debug)]
pub struct PatientFilter {
    pub scope: Scope,
    /// Folded text (see `fold_for_search`) to find anywhere in the search text.
    pub search: Option<String>,
    /// A pseudonym prefix (upper case) to match as well as `search` (admins).
    pub pseudonym: Option<String>,
    pub status: Option<PatientStatus>,
    pub sort: PatientSort,
}

/// A bound argument of a query whose shape depends on the request.
enum Arg {
    Int(i64),
    Text(String),
}

impl Arg {
    /// The value as an SQL literal, where that is safe without quoting rules: an integer,
    /// or a text of lower-case letters and `_` (a status). `None` for anything else.
    fn literal(&self) -> Option<String> {
        match self {
            Arg::Int(i) => Some(i.to_string()),
            Arg::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => Some(format!("'{t}'")),
            Arg::Text(_) => None,
        }
    }
}

/// Binds `args` in order to a query built for either driver.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(t) => q.bind(t.as_str()),
            };
        }
        q
    }};
}

/// Appends `a` to `args` and returns its placeholder (`$n`), or with `inline` returns
/// it as a literal when [`Arg::literal`] can write it.
fn push_arg(args: &mut Vec<Arg>, a: Arg, inline: bool) -> String {
    if let Some(literal) = a.literal().filter(|_| inline) {
        return literal;
    }
    args.push(a);
    format!("${}", args.len())
}

/// Sorts `rows` into the order of `ids` (rows read by id come in the database's order).
fn in_order_of(rows: &mut [PatientRow], ids: &[Id]) {
    let position: std::collections::HashMap<Id, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    rows.sort_by_key(|r| position.get(&r.id).copied().unwrap_or(usize::MAX));
}

/// A page's rows from the JSON array [`Db::patient_rows`] has SQLite build: each row an
/// array of `patient_columns!()`, values as SQLite stores them (the texts sqlx writes
/// for dates and times).
fn rows_of_json(json: &str) -> StoreResult<Vec<PatientRow>> {
    type Columns =
        (Id, String, Option<String>, Option<String>, String, Option<String>, Option<String>, Option<String>, Option<Id>, String, String);
    let corrupt = |what: &str, e: &dyn std::fmt::Display| super::StoreError::Corrupt(format!("patient {what}: {e}"));
    let rows: Vec<Columns> = serde_json::from_str(json).map_err(|e| corrupt("rows", &e))?;
    rows.into_iter()
        .map(|(id, external_id, orthanc_patient_id, dicom_study_uid, status, first_name, last_name, dob, group_id, created, updated)| {
            Ok(PatientRow {
                id,
                external_id,
                orthanc_patient_id,
                dicom_study_uid,
                status: PatientStatus::try_from(status).map_err(|e| corrupt("status", &e))?,
                first_name,
                last_name,
                date_of_birth: dob
                    .map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d"))
                    .transpose()
                    .map_err(|e| corrupt("date_of_birth", &e))?,
                group_id,
                created_at: sqlite_time(&created).map_err(|e| corrupt("created_at", &e))?,
                updated_at: sqlite_time(&updated).map_err(|e| corrupt("updated_at", &e))?,
            })
        })
        .collect()
}

/// A time as sqlx writes it on SQLite (RFC 3339), or as SQLite's own functions do
/// (`YYYY-MM-DD HH:MM:SS`, in UTC).
fn sqlite_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).or_else(|e| {
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .map(|t| t.and_utc())
            .ok_or(e)
    })
}

/// Pages (8 KB) past which a counters' table mostly empty is rewritten (see
/// [`Db::vacuum_counters`]): 2 MB, a scan of about a quarter of a millisecond. The
/// dead rows of 10 s of writes at 1,500 a second stay below it.
const COUNTERS_PAGES_MAX: i64 = 256;

/// How many rows a page may walk through in sort order, skipping those a filter
/// refuses, before the query goes through the filter's own index and sorts instead.
const WALK_LIMIT: i64 = 20_000;

/// What the list query knows before it runs: how many patients match (exact), and how
/// many are in the scope and status (the rows a walk in sort order passes over).
#[derive(Clone, Copy, Debug)]
pub struct ListPlan {
    pub total: i64,
    pub universe: i64,
}

/// Patient counts of a scope per status, and the scope's generation: the sum of its
/// counters' and deltas' `gen`, which grows with every write to a patient in it (see
/// migrations 0008 and 0009).
#[derive(Clone, Debug, Default)]
pub struct PatientCounts {
    pub by_status: Vec<(String, i64)>,
    pub generation: i64,
}

impl PatientCounts {
    /// From counted rows (`status`, `n`, `gen`, as [`counted_sql`] gives them): the
    /// generation sums them all, statuses without patients are left out.
    fn of_rows(rows: Vec<(String, i64, i64)>) -> PatientCounts {
        PatientCounts {
            generation: rows.iter().map(|r| r.2).sum(),
            by_status: rows.into_iter().filter(|r| r.1 != 0).map(|r| (r.0, r.1)).collect(),
        }
    }

    /// Patients of the scope, of one status or all.
    pub fn total(&self, status: Option<PatientStatus>) -> i64 {
        self.by_status.iter().filter(|(s, _)| status.is_none_or(|st| st.as_str() == s)).map(|(_, n)| n).sum()
    }
}

/// A page in one direction or the other: `reversed` reads the exact reverse order from
/// `offset` (for pages past the middle, read backwards from the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    offset: i64,
    limit: i64,
    reversed: bool,
}

impl Window {
    /// The cheaper direction for a page of a list of `total` rows; `None` past the end.
    fn of(page: PageRequest, total: i64) -> Option<Window> {
        let (offset, limit) = (page.offset(), page.limit());
        if offset >= total {
            return None;
        }
        if offset + limit / 2 <= total / 2 {
            return Some(Window { offset, limit, reversed: false });
        }
        let end = (offset + limit).min(total);
        Some(Window { offset: total - end, limit: end - offset, reversed: true })
    }
}

/// A scope as a condition on the counters' `group_key`, written into the SQL (an
/// integer, or `TRUE`), so that a statement's plan is kept per connection; `None` for
/// a scope that sees nothing.
fn counters_condition(scope: Scope) -> Option<String> {
    match scope {
        Scope::All => Some("TRUE".to_string()),
        Scope::Group(g) => Some(format!("group_key = {g}")),
        Scope::Nothing => None,
    }
}

/// The statement reading a scope's generation ([`Db::patient_generation`]); `None` for a
/// scope that sees nothing.
fn generation_sql(scope: Scope) -> Option<String> {
    let scope = counters_condition(scope)?;
    Some(format!(
        "SELECT CAST(COALESCE(SUM(gen), 0) AS BIGINT) FROM ( \
         SELECT gen FROM patient_counts WHERE {scope} UNION ALL SELECT gen FROM patient_count_deltas WHERE {scope}) g"
    ))
}

/// Per status, the patients and the generation of the counters and deltas that
/// `condition` ([`counters_condition`]) selects: `status`, `n`, `gen`, one row a status.
/// PostgreSQL groups their union in a hash table. SQLite would sort it: there each table
/// is grouped in the order of its index by status (migration 0012; a group's counters
/// by their primary key) and the eight rows at most merged.
fn counted_sql(sqlite: bool, condition: &str) -> String {
    let rows = |table: &str| match sqlite {
        true => format!("SELECT status, SUM(n) AS n, SUM(gen) AS gen FROM {table} WHERE {condition} GROUP BY status"),
        false => format!("SELECT status, n, gen FROM {table} WHERE {condition}"),
    };
    format!(
        "SELECT status, SUM(n) AS n, SUM(gen) AS gen FROM ({} UNION ALL {}) counted GROUP BY status",
        rows("patient_counts"),
        rows("patient_count_deltas")
    )
}

/// A scalar subquery over the CTE `counted` ([`counted_sql`]): its rows as one JSON
/// text, `[[status, n, gen], …]` (`[]` for none), which [`counts_of_json`] reads back.
fn counts_json_sql(sqlite: bool) -> &'static str {
    if sqlite {
        "(SELECT json_group_array(json_array(status, n, gen)) FROM (SELECT status, n, gen FROM counted ORDER BY status))"
    } else {
        "(SELECT COALESCE(json_agg(json_build_array(status, n, gen) ORDER BY status), '[]')::text FROM counted)"
    }
}

/// The counts [`counts_json_sql`] wrote.
fn counts_of_json(json: &str) -> StoreResult<PatientCounts> {
    let rows = serde_json::from_str(json).map_err(|e| super::StoreError::Corrupt(format!("patient counts: {e}")))?;
    Ok(PatientCounts::of_rows(rows))
}

/// The expressions of an order's terms, named `s0`, `s1`, … (a sort key's columns).
fn key_columns(terms: &[Term]) -> String {
    terms.iter().enumerate().map(|(i, t)| format!("{} AS s{i}", t.expr)).collect::<Vec<_>>().join(", ")
}

/// The order of `terms` over [`key_columns`]' names.
fn key_order(terms: &[Term]) -> String {
    terms.iter().enumerate().map(|(i, t)| format!("s{i} {}", t.direction())).collect::<Vec<_>>().join(", ")
}

/// How many of `terms` lead with a flag: 1 in the name order, 0 in the others.
fn leading_flag(terms: &[Term]) -> usize {
    usize::from(terms.first().is_some_and(|t| t.kind == Kind::Flag))
}

/// [`key_order`] without a leading flag (the name order's `(last_name IS NULL)`,
/// ascending), the term after it ordered `NULLS LAST` instead: the same order, which
/// SQLite merges a compound in, where a compound ordered by the flag, an expression, had
/// each part sorted whole in a temporary tree. Without a flag, `key_order` itself.
fn merged_key_order(terms: &[Term]) -> String {
    let first = leading_flag(terms);
    debug_assert!(first == 0 || !terms[0].desc, "the flag sorts the names' NULLs last");
    let nulls = |i: usize| if first == 1 && i == first { " NULLS LAST" } else { "" };
    terms.iter().enumerate().skip(first).map(|(i, t)| format!("s{i} {}{}", t.direction(), nulls(i))).collect::<Vec<_>>().join(", ")
}

pub(super) fn scope_args(scope: Scope) -> (&'static str, Option<Id>) {
    match scope {
        Scope::All => ("all", None),
        Scope::Group(g) => ("group", Some(g)),
        Scope::Nothing => ("nothing", None),
    }
}

/// A list's columns. On PostgreSQL the default order's index and the name order's hold
/// them all (migrations 0013 and 0015, `INCLUDE`, which `Db::counts_and_page_after`
/// relies on to read a deep page from those indexes alone): a column added here goes
/// into those indexes too, by a migration, or those pages fetch every row they pass
/// over.
macro_rules! patient_columns {
    () => {
        "id, external_id, orthanc_patient_id, dicom_study_uid, status, first_name, last_name, date_of_birth, group_id, \
         created_at, updated_at"
    };
}

macro_rules! study_columns {
    () => {
        "id, patient_id, study_instance_uid, orthanc_study_id, study_date, description, modalities, instances_count, \
         created_at, updated_at"
    };
}

/// What creating a patient needs.
#[derive(Clone, Debug)]
pub struct NewPatient {
    pub external_id: String,
    pub orthanc_patient_id: Option<String>,
    pub status: PatientStatus,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub group_id: Option<Id>,
}

/// What the registry records of a study.
#[derive(Clone, Debug)]
pub struct StudyFields {
    pub study_instance_uid: String,
    pub orthanc_study_id: String,
    pub study_date: Option<NaiveDate>,
    pub description: Option<String>,
    pub modalities: String,
    pub instances_count: i64,
}

/// Counts per status, for the stats page.
#[derive(Clone, Debug, Default)]
pub struct StatusCounts(pub Vec<(String, i64)>);

impl Db {
    pub async fn insert_patient(&mut self, new: &NewPatient) -> StoreResult<PatientRow> {
        let now = super::now();
        let mut row = PatientRow {
            id: 0,
            external_id: new.external_id.clone(),
            orthanc_patient_id: new.orthanc_patient_id.clone(),
            dicom_study_uid: None,
            status: new.status,
            first_name: new.first_name.clone(),
            last_name: new.last_name.clone(),
            date_of_birth: new.date_of_birth,
            group_id: new.group_id,
            created_at: now,
            updated_at: now,
        };
        let search = row.search_text();
        row.id = on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO patients (external_id, orthanc_patient_id, status, first_name, last_name, date_of_birth, group_id, \
             search_text, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id"
        )
        .bind(&row.external_id)
        .bind(&row.orthanc_patient_id)
        .bind(row.status.as_str())
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(row.date_of_birth)
        .bind(row.group_id)
        .bind(search)
        .bind(now)
        .fetch_one(c)
        .await)?;
        Ok(row)
    }

    /// Inserts many patients as given (ids are the database's; timestamps and
    /// `dicom_study_uid` are kept), with the same derived columns as [`Db::insert_patient`]:
    /// one multi-row `INSERT` per 500 rows. For bulk loads (the bench's registry builder);
    /// the API creates patients one at a time.
    pub async fn insert_patient_rows(&mut self, rows: &[PatientRow]) -> StoreResult<u64> {
        let mut inserted = 0;
        for chunk in rows.chunks(500) {
            inserted += on_db!(self, |c| {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO patients (external_id, orthanc_patient_id, dicom_study_uid, status, first_name, last_name, \
                     date_of_birth, group_id, search_text, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, row| {
                    b.push_bind(&row.external_id)
                        .push_bind(&row.orthanc_patient_id)
                        .push_bind(&row.dicom_study_uid)
                        .push_bind(row.status.as_str())
                        .push_bind(&row.first_name)
                        .push_bind(&row.last_name)
                        .push_bind(row.date_of_birth)
                        .push_bind(row.group_id)
                        .push_bind(row.search_text())
                        .push_bind(row.created_at)
                        .push_bind(row.updated_at);
                });
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(inserted)
    }

    /// Vacuums the patients table and refreshes its planner statistics, as PostgreSQL's
    /// autovacuum does by itself some time after a bulk change; a registry loaded in
    /// bulk and measured at once (the bench) needs it now: without statistics PostgreSQL
    /// plans blind, and without the visibility map an index-only scan (a page deep in a
    /// list passing over its offset) fetches every row anyway. SQLite only analyzes (its
    /// `VACUUM` rewrites the whole file, and its index walks read no table rows).
    pub async fn vacuum_analyze_patients(&mut self) -> StoreResult<()> {
        let sql = if self.is_sqlite() { "ANALYZE patients" } else { "VACUUM (ANALYZE) patients" };
        on_db!(self, |c| sqlx::query(sql).execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// PostgreSQL: folds the deltas waiting, then vacuums the small tables every write
    /// churns (the counters and their deltas: each write appends a delta, every 256th
    /// folds and deletes them; the change log), so the sum every list reads scans a few
    /// hundred live rows, not the dead ones left since. Autovacuum does it too when it is
    /// on and keeping up; where it was off, a 1M-patient build left 163,066 dead deltas
    /// and the sum took 51 ms. The change log (`patient_changes`, migration 0011) churns as
    /// much: every write appends a row, and the same fold deletes those past the newest
    /// 32,768 by a range of its key, which reads the dead rows' index entries too until
    /// a vacuum removes them; unvacuumed, a 1M-patient build left 986,699 dead rows and
    /// each fold (every 256th write, in the writer's transaction) took 47–110 ms instead
    /// of ~1 ms. SQLite reuses the pages of deleted rows: nothing to do there.
    ///
    /// A vacuum frees dead rows but keeps the file's pages, and the sum reads every page
    /// (a scan: a table of a few hundred rows has no better plan). After a burst of
    /// writes the table stays large: the 1M build left the deltas at 1,445 pages (11.8
    /// MB) for 154 live rows, and reading them was half of PostgreSQL's work per list
    /// (1,100 lists a second instead of 2,100). A table past [`COUNTERS_PAGES_MAX`] with
    /// few live rows is rewritten (`VACUUM FULL`): its lock stops readers for the
    /// rewrite of a few hundred rows, so it is only asked for with a short lock timeout,
    /// and given up (until the next round) rather than queued behind a long transaction.
    /// Returns the tables rewritten.
    pub async fn vacuum_counters(&mut self) -> StoreResult<Vec<&'static str>> {
        let mut rewritten = Vec::new();
        if let super::Inner::Postgres(h) = &mut self.0 {
            let c = h.conn();
            // The deltas left since the last 256th write (up to 255, read by every list's
            // sum until the next writes fold them) are folded now, so an idle registry's
            // sum reads the counters alone. A fold already running elsewhere makes this
            // one return at once.
            sqlx::query("SELECT patient_counts_compact()").execute(&mut *c).await?;
            sqlx::query("VACUUM (SKIP_LOCKED) patient_count_deltas, patient_counts, patient_changes, patient_changes_pruned")
                .execute(&mut *c)
                .await?;
            for table in ["patient_count_deltas", "patient_counts"] {
                let (pages, rows): (i64, i64) =
                    sqlx::query_as(&format!("SELECT pg_relation_size('{table}') / 8192, (SELECT COUNT(*) FROM {table})"))
                        .fetch_one(&mut *c)
                        .await?;
                // About 100 of these narrow rows fit a page: a table 4 times the pages its
                // rows need, and past the limit, is rewritten.
                if pages <= COUNTERS_PAGES_MAX || pages <= 4 * (rows / 100 + 1) {
                    continue;
                }
                sqlx::query("SET lock_timeout = '100ms'").execute(&mut *c).await?;
                let done = sqlx::query(&format!("VACUUM (FULL) {table}")).execute(&mut *c).await;
                sqlx::query("RESET lock_timeout").execute(&mut *c).await?;
                match done {
                    Ok(_) => rewritten.push(table),
                    // 55P03: the lock was not had in time; next round.
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(rewritten)
    }

    /// Writes every mutable field of `row` back and stamps `updated_at`.
    pub async fn save_patient(&mut self, row: &mut PatientRow) -> StoreResult<()> {
        row.updated_at = super::now();
        let search = row.search_text();
        on_db!(self, |c| sqlx::query(
            "UPDATE patients SET orthanc_patient_id = $2, dicom_study_uid = $3, status = $4, first_name = $5, last_name = $6, \
             date_of_birth = $7, group_id = $8, search_text = $9, updated_at = $10 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&row.orthanc_patient_id)
        .bind(&row.dicom_study_uid)
        .bind(row.status.as_str())
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(row.date_of_birth)
        .bind(row.group_id)
        .bind(search)
        .bind(row.updated_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn patient_by_id(&mut self, id: Id) -> StoreResult<Option<PatientRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", patient_columns!(), " FROM patients WHERE id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    pub async fn patient_by_external_id(&mut self, external_id: &str) -> StoreResult<Option<PatientRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", patient_columns!(), " FROM patients WHERE external_id = $1"))
            .bind(external_id)
            .fetch_optional(c)
            .await)?)
    }

    pub async fn patient_by_orthanc_id(&mut self, orthanc_patient_id: &str) -> StoreResult<Option<PatientRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", patient_columns!(), " FROM patients WHERE orthanc_patient_id = $1"))
            .bind(orthanc_patient_id)
            .fetch_optional(c)
            .await)?)
    }

    /// Patient counts of a scope per status, and its generation, from the counters and
    /// the deltas the triggers append (migration 0009), read in one statement so that a
    /// fold between two reads cannot be seen half done: a few hundred rows, whatever the
    /// registry's size.
    pub async fn patient_counts(&mut self, scope: Scope) -> StoreResult<PatientCounts> {
        // The scope written in, as in `patient_generation`: planned once per connection.
        let Some(scope) = counters_condition(scope) else { return Ok(PatientCounts::default()) };
        let sql = format!(
            "SELECT status, CAST(n AS BIGINT), CAST(gen AS BIGINT) FROM ({}) c ORDER BY status",
            counted_sql(self.is_sqlite(), &scope)
        );
        let rows: Vec<(String, i64, i64)> = on_db!(self, |c| sqlx::query_as(&sql).fetch_all(c).await)?;
        Ok(PatientCounts::of_rows(rows))
    }

    /// The generation of a scope alone (as [`Db::patient_counts`] sums it): what a node
    /// checks before giving a list's answer again (`page_cache`). Its group id is written
    /// into the SQL (an integer), so each connection plans the statement once and keeps
    /// the plan; with parameters PostgreSQL planned `$1 = 'all' OR …` on every run, and
    /// that, more than the few hundred rows, was its cost.
    pub async fn patient_generation(&mut self, scope: Scope) -> StoreResult<i64> {
        let Some(sql) = generation_sql(scope) else { return Ok(0) };
        Ok(on_db!(self, |c| sqlx::query_scalar(&sql).fetch_one(c).await)?)
    }

    /// The `WHERE` of a filter and the `FROM`/`WITH` it needs. With `text_index`, a
    /// search of three characters or more goes through the trigram index (FTS5 on
    /// SQLite, pg_trgm on PostgreSQL); without, it is a `LIKE` on each row passed (for
    /// walks in sort order, where most rows match). `walk` also keeps SQLite from using
    /// the group or status index (`+column`), so it reads the sort's index instead.
    ///
    /// With `inline`, values that [`Arg::literal`] can write go into the SQL itself.
    fn filter_sql(
        &self,
        f: &PatientFilter,
        text_index: bool,
        walk: bool,
        inline: bool,
        args: &mut Vec<Arg>,
    ) -> (String, &'static str, String) {
        let sqlite = self.is_sqlite();
        let mut push = |a: Arg| push_arg(args, a, inline);
        let plus = if sqlite && walk { "+" } else { "" };
        let mut conditions: Vec<String> = Vec::new();
        match f.scope {
            Scope::All => {}
            Scope::Group(g) => conditions.push(format!("{plus}group_id = {}", push(Arg::Int(g)))),
            Scope::Nothing => conditions.push("1 = 0".into()),
        }
        if let Some(status) = f.status {
            conditions.push(format!("{plus}status = {}", push(Arg::Text(status.as_str().into()))));
        }
        let mut with = String::new();
        let mut from = "patients";
        if let (Some(search), Some(pseudonym)) = (&f.search, &f.pseudonym) {
            // Rare (an admin pasting a pseudonym): a scan of the search text, or a
            // pseudonym the patient was given.
            conditions.push(format!(
                "(search_text LIKE {} ESCAPE '\\' OR id IN (SELECT patient_id FROM pseudonyms WHERE pseudonym LIKE {} ESCAPE '\\'))",
                push(Arg::Text(like_contains(search))),
                push(Arg::Text(format!("{}%", like_contains(pseudonym).trim_matches('%'))))
            ));
        } else if let Some(search) = &f.search {
            if sqlite && text_index && search.chars().count() >= 3 {
                // Quoted: the text is one FTS5 phrase, whatever it contains.
                let phrase = format!("\"{}\"", search.replace('"', "\"\""));
                with = format!(
                    "WITH hits AS MATERIALIZED (SELECT rowid AS rid FROM patients_fts WHERE patients_fts MATCH {}) ",
                    push(Arg::Text(phrase))
                );
                from = "hits JOIN patients ON id = rid";
            } else {
                // PostgreSQL picks between the trigram index and a walk in sort order
                // from its statistics; on SQLite this is the walk.
                conditions.push(format!("search_text LIKE {} ESCAPE '\\'", push(Arg::Text(like_contains(search)))));
            }
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        (with, from, filter)
    }

    /// How many patients a filter with a search matches (a list without a search takes
    /// its total from [`Db::patient_counts`]). On SQLite, a search over the whole
    /// registry counts the FTS5 index's matches alone.
    pub async fn count_patient_matches(&mut self, f: &PatientFilter) -> StoreResult<i64> {
        let sqlite = self.is_sqlite();
        if let (true, Scope::All, None, None, Some(search)) = (sqlite, f.scope, f.status, &f.pseudonym, &f.search) {
            if search.chars().count() >= 3 {
                let phrase = format!("\"{}\"", search.replace('"', "\"\""));
                return Ok(on_db!(self, |c| sqlx::query_scalar("SELECT COUNT(*) FROM patients_fts WHERE patients_fts MATCH $1")
                    .bind(phrase)
                    .fetch_one(c)
                    .await)?);
            }
        }
        let mut args = Vec::new();
        let (with, from, filter) = self.filter_sql(f, true, false, false, &mut args);
        let sql = format!("{with}SELECT COUNT(*) FROM {from} {filter}");
        let persistent = self.keeps_plan(f);
        Ok(on_db!(self, |c| {
            let q = bind_args!(sqlx::query_scalar(&sql).persistent(persistent), &args);
            q.fetch_one(c).await
        })?)
    }

    /// The first `limit` matching patients' ids in list order, through the text index:
    /// for searches that match few enough patients to read their pages by id.
    pub async fn matching_patient_ids(&mut self, f: &PatientFilter, limit: i64) -> StoreResult<Vec<Id>> {
        let mut args = Vec::new();
        let (with, from, filter) = self.filter_sql(f, true, false, false, &mut args);
        args.push(Arg::Int(limit));
        let sql = format!("{with}SELECT id FROM {from} {filter} ORDER BY {} LIMIT ${}", f.sort.order_by(false), args.len());
        let persistent = self.keeps_plan(f);
        Ok(on_db!(self, |c| {
            let q = bind_args!(sqlx::query_scalar(&sql).persistent(persistent), &args);
            q.fetch_all(c).await
        })?)
    }

    /// Like [`Db::matching_patient_ids`], with each match's sort key, for a list a node
    /// may patch later (`search_cache::patched`): `None` unless the order is by a time
    /// ([`PatientSort::time_column`]). Run it in the snapshot of [`Db::change_mark`] (a
    /// [`super::Store::read_snapshot`]).
    pub async fn matching_patient_keys(&mut self, f: &PatientFilter, limit: i64) -> StoreResult<Option<(Vec<Id>, Keys)>> {
        let Some(column) = f.sort.time_column() else { return Ok(None) };
        let mut args = Vec::new();
        let (with, from, filter) = self.filter_sql(f, true, false, false, &mut args);
        args.push(Arg::Int(limit));
        let order = f.sort.order_by(false);
        let limit = args.len();
        let persistent = self.keeps_plan(f);
        let sql = format!("{with}SELECT id, {column} FROM {from} {filter} ORDER BY {order} LIMIT ${limit}");
        if self.is_sqlite() {
            // The text SQLite compares (BINARY), compared the same way here.
            let rows: Vec<(Id, String)> = on_db!(self, |c| {
                let q = bind_args!(sqlx::query_as(&sql).persistent(persistent), &args);
                q.fetch_all(c).await
            })?;
            let (ids, keys): (Vec<Id>, Vec<std::sync::Arc<str>>) = rows.into_iter().map(|(id, k)| (id, k.into())).unzip();
            Ok(Some((ids, Keys::Text(keys))))
        } else {
            // Microseconds since the epoch: what PostgreSQL stores and compares (decoded
            // from the timestamp itself: exact whatever the server's version).
            let rows: Vec<(Id, DateTime<Utc>)> = on_db!(self, |c| {
                let q = bind_args!(sqlx::query_as(&sql).persistent(persistent), &args);
                q.fetch_all(c).await
            })?;
            let (ids, keys) = rows.into_iter().map(|(id, t)| (id, t.timestamp_micros())).unzip();
            Ok(Some((ids, Keys::Micros(keys))))
        }
    }

    /// Where the log of changed patients stands in this snapshot (migration 0011).
    pub async fn change_mark(&mut self) -> StoreResult<ChangeMark> {
        Ok(match &mut self.0 {
            super::Inner::Sqlite(h) => ChangeMark::Seq(
                sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS INTEGER) FROM patient_changes").fetch_one(h.conn()).await?,
            ),
            super::Inner::Postgres(h) => {
                ChangeMark::Snapshot(sqlx::query_scalar("SELECT CAST(pg_current_snapshot() AS TEXT)").fetch_one(h.conn()).await?)
            }
        })
    }

    /// In one statement (one snapshot): the scope's generation, where the change log
    /// stands, the patients written (created, changed or deleted) since `mark`, and
    /// those of them that `f` matches now, with their sort keys, in list order: what
    /// `search_cache::patched` needs to bring a search read at `mark` to this snapshot.
    /// `None` when it cannot: the order is not by a time, the scope sees nothing, the
    /// log was pruned past `mark`, or it holds more than `limit` changes since.
    pub async fn changes_since(&mut self, f: &PatientFilter, mark: &ChangeMark, limit: i64) -> StoreResult<Option<Changes>> {
        let (Some(column), Some(generation)) = (f.sort.time_column(), generation_sql(f.scope)) else { return Ok(None) };
        let sqlite = self.is_sqlite();
        let mut args = Vec::new();
        // The mark is $1.
        let (log, position, pruned) = match mark {
            ChangeMark::Seq(seq) if sqlite => {
                args.push(Arg::Int(*seq));
                (
                    "SELECT patient_id FROM patient_changes WHERE seq > $1 ORDER BY seq",
                    "NULL, (SELECT COALESCE(MAX(seq), 0) FROM patient_changes), NULL",
                    "(SELECT seq > $1 FROM patient_changes_pruned)",
                )
            }
            // In the index's order with a limit: a walk of the index from the old
            // snapshot's xmin, whatever the table's statistics say (the log churns; with
            // stale ones PostgreSQL chose a parallel bitmap scan, 6 ms for 3 rows). The
            // upper bound changes no answer (a row this statement sees was written by a
            // transaction before its snapshot's xmax) but makes the condition a range:
            // with one bound alone, a plan that cannot know the mark's value (the
            // statement is kept prepared), or a log never analyzed, takes a third of the
            // log to match, and PostgreSQL read all of it and sorted (after a 1M build:
            // 6,371 pages, 7–20 ms a patch, every write making one); a range is taken
            // to match few rows, and read through the index (2 pages, 0.09 ms).
            ChangeMark::Snapshot(snapshot) if !sqlite => {
                args.push(Arg::Text(snapshot.clone()));
                (
                    "SELECT patient_id FROM patient_changes WHERE xid >= pg_snapshot_xmin(CAST($1 AS pg_snapshot)) \
                     AND xid < pg_snapshot_xmax(pg_current_snapshot()) \
                     AND NOT pg_visible_in_snapshot(xid, CAST($1 AS pg_snapshot)) ORDER BY xid",
                    "CAST(pg_current_snapshot() AS TEXT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMPTZ)",
                    "(SELECT CASE WHEN xid >= pg_snapshot_xmin(CAST($1 AS pg_snapshot)) THEN 1 ELSE 0 END FROM patient_changes_pruned)",
                )
            }
            _ => return Err(super::StoreError::Corrupt("a change mark of the other database".into())),
        };
        let (with, from, filter) = self.filter_sql(f, false, false, false, &mut args);
        debug_assert!(with.is_empty(), "no text index: the LIKE on the few rows read by id");
        let filter = if filter.is_empty() { "WHERE".to_string() } else { format!("{filter} AND") };
        // The key as text (SQLite) or as a timestamp (PostgreSQL).
        let key = if sqlite { format!("{column}, NULL, NULL") } else { format!("NULL, NULL, {column}") };
        // Rows: (0, generation, pruned, mark as text, mark as a number, -); (1, a changed
        // patient, -, -, -, -); (2, a match among them, -, its key as text, -, or as a
        // timestamp).
        let sql = format!(
            "WITH changed AS MATERIALIZED ({log} LIMIT {over}) \
             SELECT CAST(0 AS BIGINT), ({generation}), CAST({pruned} AS BIGINT), {position} \
             UNION ALL SELECT 1, patient_id, NULL, NULL, NULL, NULL FROM changed \
             UNION ALL SELECT 2, id, NULL, {key} FROM {from} {filter} id IN (SELECT patient_id FROM changed)",
            over = limit.saturating_add(1),
        );
        type Row = (i64, i64, Option<i64>, Option<String>, Option<i64>, Option<DateTime<Utc>>);
        // The text is the same for every request of a filter and limit: kept prepared.
        let rows: Vec<Row> = on_db!(self, |c| {
            let q = bind_args!(sqlx::query_as(&sql), &args);
            q.fetch_all(c).await
        })?;
        let missing = || super::StoreError::Corrupt("the change log's position is missing".into());
        let (generation, pruned, mark) = match rows.iter().find(|r| r.0 == 0) {
            Some((_, generation, pruned, Some(snapshot), _, _)) => (*generation, *pruned, ChangeMark::Snapshot(snapshot.clone())),
            Some((_, generation, pruned, None, Some(seq), _)) => (*generation, *pruned, ChangeMark::Seq(*seq)),
            _ => return Err(missing()),
        };
        let mut changed: Vec<Id> = rows.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
        if pruned != Some(0) || changed.len() as i64 > limit {
            return Ok(None);
        }
        changed.sort_unstable();
        changed.dedup();
        let desc = f.sort.descending();
        let matches = rows.into_iter().filter(|r| r.0 == 2);
        let (fresh, fresh_keys) = if sqlite {
            let (ids, keys) = in_list_order(matches.map(|r| (std::sync::Arc::<str>::from(r.3.unwrap_or_default()), r.1)).collect(), desc);
            (ids, Keys::Text(keys))
        } else {
            let (ids, keys) = in_list_order(matches.map(|r| (r.5.map_or(0, |t| t.timestamp_micros()), r.1)).collect(), desc);
            (ids, Keys::Micros(keys))
        };
        Ok(Some(Changes { generation, mark, changed, fresh, fresh_keys }))
    }

    /// The patients of `ids`, in that order (ids no longer in the registry are left out).
    pub async fn patients_by_ids(&mut self, ids: &[Id]) -> StoreResult<Vec<PatientRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
        let sql = format!(concat!("SELECT ", patient_columns!(), " FROM patients WHERE id IN ({})"), list);
        let mut rows = self.patient_rows(&sql, None, &[], true).await?;
        in_order_of(&mut rows, ids);
        Ok(rows)
    }

    /// One page of patients, given how many match (`plan`, exact: from the counters or a
    /// count). A page past the middle is read backwards from the end, so the last page
    /// costs what the first does. The SQL holds only the predicates a request needs; a
    /// page that would pass over at most [`WALK_LIMIT`] rows in sort order walks the
    /// sort's index (filters tested on each row), otherwise it goes through the filter's
    /// index (the text index for a search) and sorts what matches.
    pub async fn list_patients(&mut self, f: &PatientFilter, page: PageRequest, plan: ListPlan) -> StoreResult<Vec<PatientRow>> {
        let Some(w) = Window::of(page, plan.total) else {
            return Ok(Vec::new());
        };
        // PostgreSQL, a window at offset 0 without a search (a last page is one, read
        // backwards): its values written in, the statement is planned once per
        // connection and kept (see `counts_and_first_page`). Other offsets keep their
        // parameters: written in, each would be a statement of its own.
        let inline = !self.is_sqlite() && f.search.is_none() && f.pseudonym.is_none() && w.offset == 0;
        let mut args = Vec::new();
        let sql = self.page_sql(f, w, plan, inline, &mut args);
        let persistent = self.keeps_plan(f);
        let mut rows = self.patient_rows(&sql, Some(&f.sort.order_by(w.reversed)), &args, persistent).await?;
        if w.reversed {
            rows.reverse();
        }
        Ok(rows)
    }

    /// The statement reading window `w` of filter `f`'s list (`patient_columns!()`, in
    /// the window's order), its arguments appended to `args` (or written in, `inline`).
    fn page_sql(&self, f: &PatientFilter, w: Window, plan: ListPlan, inline: bool, args: &mut Vec<Arg>) -> String {
        // Rows passed over to collect this window, when walking in sort order.
        let walked = (w.offset + w.limit).saturating_mul(plan.universe.max(1)) / plan.total.max(1);
        let filtered = f.search.is_some() || f.status.is_some() || matches!(f.scope, Scope::Group(_));
        let walk = walked <= WALK_LIMIT && !(f.search.is_none() && f.sort.follows_filter_index());
        let text_index = f.search.is_some() && !walk;
        let (with, from, filter) = self.filter_sql(f, text_index, filtered && walk, inline, args);
        let limit = push_arg(args, Arg::Int(w.limit), inline);
        let offset = push_arg(args, Arg::Int(w.offset), inline);
        let order = f.sort.order_by(w.reversed);
        if !self.is_sqlite() && w.offset > 0 && f.search.is_none() && f.pseudonym.is_none() {
            // PostgreSQL passes over the offset's rows with the sort's index alone
            // (index-only: the ids, no table row), then reads the window's rows. Read
            // whole, each row passed over was fetched from the table: page 10,000 of a
            // million took 0.55–0.77 s, 0.09 s this way (a vacuumed table: with its
            // visibility map unset, index-only scans fetch the rows anyway, 0.38 s).
            // Without a search there is no `WITH` (only SQLite's text search has one).
            debug_assert!(with.is_empty());
            return format!(
                concat!(
                    "SELECT ",
                    patient_columns!(),
                    " FROM patients WHERE id IN (SELECT id FROM {} {} ORDER BY {} LIMIT {} OFFSET {}) ORDER BY {}"
                ),
                from, filter, order, limit, offset, order
            );
        }
        format!(
            concat!("{}SELECT ", patient_columns!(), " FROM {} {} ORDER BY {} LIMIT {} OFFSET {}"),
            with, from, filter, order, limit, offset
        )
    }

    /// PostgreSQL, a list's first page without a search: the scope's counts and the page
    /// in one statement, one round trip instead of two (and one snapshot). `None` where
    /// it does not apply (SQLite, a search, a later page, whose cheaper direction depends
    /// on the total): the caller reads the counts, then the page.
    ///
    /// The statement has no parameters: the group, the status and the page size are
    /// written into it (integers and a status name, never a caller's text), so each
    /// connection plans it once, with those values, and keeps the plan (sqlx's statement
    /// cache). With parameters, PostgreSQL planned it again on every run (it found no
    /// generic plan as cheap as a custom one for `LIMIT $n`): 0.32 ms of planning for
    /// 0.25 ms of execution, which made this statement slower than the two it replaces
    /// (docs/benchmarks.md).
    pub async fn counts_and_first_page(
        &mut self,
        f: &PatientFilter,
        page: PageRequest,
    ) -> StoreResult<Option<(PatientCounts, Vec<PatientRow>)>> {
        if self.is_sqlite() || f.search.is_some() || f.pseudonym.is_some() || page.offset() != 0 || f.scope == Scope::Nothing {
            return Ok(None);
        }
        // The first page is read forwards whatever the total (a reversed read of a list
        // shorter than a page gives the same rows); walked rows are the window's own.
        let window = Window { offset: 0, limit: page.limit(), reversed: false };
        let mut args = Vec::new();
        let page_sql = self.page_sql(f, window, ListPlan { total: 1, universe: 1 }, true, &mut args);
        if !args.is_empty() {
            // A value that could not be written in (none can, today): the two statements.
            return Ok(None);
        }
        let order = format!("ORDER BY {}", f.sort.order_by(false));
        self.counts_with_rows(f.scope, &page_sql, &order, None, &[]).await
    }

    /// PostgreSQL: the scope's counts and the patients of `ids` in one statement (a page
    /// of a search whose ordered ids this node remembers; the caller checks that the
    /// counts' generation is the one the ids were found at). The rows come in `ids`'
    /// order; ids no longer in the registry are left out. `None` on SQLite. One
    /// statement text per scope (the ids are an array parameter), so its plan is kept.
    pub async fn counts_and_patients_by_ids(&mut self, scope: Scope, ids: &[Id]) -> StoreResult<Option<(PatientCounts, Vec<PatientRow>)>> {
        if self.is_sqlite() || scope == Scope::Nothing {
            return Ok(None);
        }
        let page_sql = concat!("SELECT ", patient_columns!(), " FROM patients WHERE id = ANY($1)");
        let Some((counts, mut rows)) = self.counts_with_rows(scope, page_sql, "", Some(ids), &[]).await? else { return Ok(None) };
        in_order_of(&mut rows, ids);
        Ok(Some((counts, rows)))
    }

    /// The counts of `scope` (as [`Db::patient_counts`]) and the rows of `page_sql` (a
    /// query of `patient_columns!()`, in `order`: `ORDER BY …`) in one statement: one
    /// round trip, one snapshot. On PostgreSQL the page is left-joined to one row, so an
    /// empty page still brings the counts; on SQLite both come back as JSON texts built by
    /// SQLite (see [`Db::patient_rows`]). `ids`, when given, is the statement's only
    /// parameter (`$1`; PostgreSQL only: `None` on SQLite); otherwise `args` are bound.
    async fn counts_with_rows(
        &mut self,
        scope: Scope,
        page_sql: &str,
        order: &str,
        ids: Option<&[Id]>,
        args: &[Arg],
    ) -> StoreResult<Option<(PatientCounts, Vec<PatientRow>)>> {
        use sqlx::Row;
        let Some(scope) = counters_condition(scope) else { return Ok(None) };
        let counts_json = counts_json_sql(self.is_sqlite());
        match &mut self.0 {
            super::Inner::Postgres(h) => {
                let sql = format!(
                    "WITH counted AS ({}), \
                     page AS ({page_sql}) \
                     SELECT {counts_json} AS counts, page.* \
                     FROM (SELECT 1) AS one LEFT JOIN page ON TRUE {order}",
                    counted_sql(false, &scope)
                );
                let rows = match ids {
                    Some(ids) => sqlx::query(&sql).bind(ids).fetch_all(h.conn()).await?,
                    None => bind_args!(sqlx::query(&sql), args).fetch_all(h.conn()).await?,
                };
                let counts: &str = rows.first().map(|r| r.try_get("counts")).transpose()?.unwrap_or("[]");
                // One row with the counts and no patient when the page is empty.
                Ok(Some((counts_of_json(counts)?, pg_patient_rows(&rows)?)))
            }
            super::Inner::Sqlite(h) => {
                if ids.is_some() {
                    return Ok(None);
                }
                let sql = format!(
                    concat!(
                        "WITH counted AS ({}) SELECT {}, \
                         (SELECT json_group_array(json_array(",
                        patient_columns!(),
                        ") {}) FROM ({}))"
                    ),
                    counted_sql(true, &scope),
                    counts_json,
                    order,
                    page_sql
                );
                let (counts, rows): (String, String) = bind_args!(sqlx::query_as(&sql), args).fetch_one(h.conn()).await?;
                Ok(Some((counts_of_json(&counts)?, rows_of_json(&rows)?)))
            }
        }
    }

    /// The sort keys of the rows at positions 0, `every`, 2·`every`, … of `f`'s list
    /// (the list's anchors: where a page deep in it starts reading, see
    /// [`Db::counts_and_page_after`]) and the scope's counts, in one statement: one
    /// snapshot, so the keys belong to the counts' generation. One pass over the list in
    /// the order's index (a million patients: 0.3 s in the default order, 1.4–1.8 s by
    /// name, whose index does not cover the first name). `None` for a search (only lists
    /// without one have anchors) or a scope that sees nothing.
    pub async fn list_anchors(&mut self, f: &PatientFilter, every: i64) -> StoreResult<Option<(PatientCounts, Vec<SortKey>)>> {
        if f.search.is_some() || f.pseudonym.is_some() || every < 1 {
            return Ok(None);
        }
        let Some(scope) = counters_condition(f.scope) else { return Ok(None) };
        let sqlite = self.is_sqlite();
        let terms = f.sort.terms(false);
        let mut args = Vec::new();
        let (_, _, filter) = self.filter_sql(f, false, false, true, &mut args);
        if !args.is_empty() {
            // A value that could not be written in (none can without a search).
            return Ok(None);
        }
        let keys = key_columns(&terms);
        let names = (0..terms.len()).map(|i| format!("s{i}")).collect::<Vec<_>>().join(", ");
        let (array, agg, text) = if sqlite { ("json_array", "json_group_array", "") } else { ("json_build_array", "json_agg", "::text") };
        let sql = format!(
            "WITH counted AS ({}) SELECT {}, \
             COALESCE((SELECT {agg}({array}({names}) ORDER BY rn) FROM \
               (SELECT {keys}, row_number() OVER (ORDER BY {}) AS rn FROM patients {filter}) r WHERE rn % {every} = 1){text}, '[]')",
            counted_sql(sqlite, &scope),
            counts_json_sql(sqlite),
            f.sort.order_by(false),
        );
        let (counts, anchors): (String, String) = on_db!(self, |c| sqlx::query_as(&sql).fetch_one(c).await)?;
        let corrupt = |e: &dyn std::fmt::Display| super::StoreError::Corrupt(format!("list anchors: {e}"));
        let anchors: Vec<SortKey> = serde_json::from_str(&anchors).map_err(|e| corrupt(&e))?;
        if anchors.iter().any(|k| k.len() != terms.len()) {
            return Err(corrupt(&"a key of another length than the order's"));
        }
        Ok(Some((counts_of_json(&counts)?, anchors)))
    }

    /// The scope's counts and the `limit` rows of `f`'s list (no search) that follow the
    /// first `skip` rows from the one whose sort key is `key` (a key [`Db::list_anchors`]
    /// gave: that row and those after it), in one statement. The caller checks that the
    /// counts' generation is the one the key was read at: then the page is exactly the
    /// one at the key's position plus `skip`, whatever the list's length.
    ///
    /// "From the key onwards" is written in parts, the deepest first: the same as the key
    /// on every term but the last and at or after it on that one; the same on all but the
    /// last two and after it on the next; … ; after it on the first. Each part is an
    /// equality on a prefix of the order's index and a range on the next column, which
    /// both databases read from the index from the key onwards, up to `skip + limit` rows
    /// (a row-value comparison, `(a, b) > (x, y)`, is a range on `a` alone for SQLite,
    /// and the name order's terms go in two directions). `None` for a search or a scope
    /// that sees nothing.
    ///
    /// `skip` is below `spacing` (the anchors'). On PostgreSQL each part reads
    /// `spacing + limit - 1` rows, whatever `skip`: the statement's only values are then
    /// the key's and `skip`, and PostgreSQL keeps a generic plan for it after five runs
    /// (with the number of rows a value, no generic plan costs as little as one made with
    /// the values, and planning took as long as running: at a million patients, 1,900
    /// statements/s planned each time, 2,600–3,000/s with the plan kept).
    pub async fn counts_and_page_after(
        &mut self,
        f: &PatientFilter,
        key: &[serde_json::Value],
        (skip, spacing): (i64, i64),
        limit: i64,
    ) -> StoreResult<Option<(PatientCounts, Vec<PatientRow>)>> {
        if f.search.is_some() || f.pseudonym.is_some() || f.scope == Scope::Nothing {
            return Ok(None);
        }
        if !(0..spacing).contains(&skip) || limit < 1 {
            return Err(super::StoreError::Corrupt(format!("list anchor: {skip} rows to skip with anchors {spacing} rows apart")));
        }
        let mut args = Vec::new();
        let Some(sql) = self.page_after_sql(f, key, (skip, spacing), limit, &mut args)? else { return Ok(None) };
        let order = format!("ORDER BY {}", f.sort.order_by(false));
        self.counts_with_rows(f.scope, &sql, &order, None, &args).await
    }

    /// The statement of [`Db::counts_and_page_after`]'s page (`patient_columns!()`, in no
    /// order), its arguments appended to `args`. `None` if `f`'s filter needs arguments.
    fn page_after_sql(
        &self,
        f: &PatientFilter,
        key: &[serde_json::Value],
        (skip, spacing): (i64, i64),
        limit: i64,
        args: &mut Vec<Arg>,
    ) -> StoreResult<Option<String>> {
        use serde_json::Value;
        let sqlite = self.is_sqlite();
        let terms = f.sort.terms(false);
        let bad = |what: &str| super::StoreError::Corrupt(format!("list anchor: {what}"));
        if key.len() != terms.len() {
            return Err(bad("a key of another length than the order's"));
        }
        let (_, _, filter) = self.filter_sql(f, false, false, true, args);
        if !args.is_empty() {
            return Ok(None);
        }
        let base: Vec<String> = filter.strip_prefix("WHERE ").map(|c| vec![c.to_string()]).unwrap_or_default();
        // Per term: "the same as the key" and "after the key" (`None`: no row is, in the
        // key's region of the order), each placeholder pushed once, in the terms' order,
        // which is the order the deepest part (first in the statement) names them in.
        let flag = |expr: &str, set: bool| match (sqlite, set) {
            // PostgreSQL matches `IS TRUE` / `IS FALSE` to the index's boolean column; it
            // rewrites `= false` to `last_name IS NOT NULL`, which no index holds.
            (true, _) => format!("{expr} = {}", i32::from(set)),
            (false, true) => format!("{expr} IS TRUE"),
            (false, false) => format!("{expr} IS FALSE"),
        };
        let mut same = Vec::new();
        let mut after = Vec::new();
        // Each term's placeholder (as compared: cast where needed), if its value has one.
        let mut holders: Vec<Option<String>> = Vec::new();
        for (i, (term, value)) in terms.iter().zip(key).enumerate() {
            let last = i + 1 == terms.len();
            let op = match (term.desc, last) {
                (false, false) => ">",
                (false, true) => ">=",
                (true, false) => "<",
                (true, true) => "<=",
            };
            match (term.kind, value) {
                (Kind::Flag, v) => {
                    let set = match v {
                        Value::Bool(b) => *b,
                        Value::Number(n) => n.as_i64() == Some(1),
                        _ => return Err(bad("a flag that is not a boolean")),
                    };
                    same.push(flag(term.expr, set));
                    holders.push(None);
                    // After `false` comes `true` (ascending), after `true` nothing.
                    after.push((set == term.desc).then(|| flag(term.expr, !set)));
                }
                (_, Value::Null) => {
                    // Only a last name is ever NULL, in the region where all are.
                    same.push(format!("{} IS NULL", term.expr));
                    after.push(None);
                    holders.push(None);
                }
                (Kind::Int, Value::Number(n)) => {
                    let p = push_arg(args, Arg::Int(n.as_i64().ok_or_else(|| bad("an integer out of range"))?), false);
                    same.push(format!("{} = {p}", term.expr));
                    after.push(Some(format!("{} {op} {p}", term.expr)));
                    holders.push(Some(p));
                }
                (Kind::Text | Kind::Time, Value::String(t)) => {
                    let p = push_arg(args, Arg::Text(t.clone()), false);
                    let p = if term.kind == Kind::Time && !sqlite { format!("CAST({p} AS TIMESTAMPTZ)") } else { p };
                    same.push(format!("{} = {p}", term.expr));
                    after.push(Some(format!("{} {op} {p}", term.expr)));
                    holders.push(Some(p));
                }
                _ => return Err(bad("a value of another type than its term's")),
            }
        }
        let first = leading_flag(&terms);
        // SQLite merges the parts when the compound itself is ordered by the key: each
        // part read in its index's order, only as far as the page needs, none sorted
        // (half the time of sorting the parts' rows). PostgreSQL's parts read the rows
        // of `counts_and_page_after`, a number written in, as is the page's size
        // (integers, never a caller's text).
        let n = (!sqlite).then(|| push_arg(args, Arg::Int(spacing.saturating_add(limit - 1)), true));
        let columns = key_columns(&terms);
        // PostgreSQL: the whole registry in the default order or by name is read from
        // the order's index alone, which holds the list's columns (migrations 0013 and
        // 0015): no patient is then fetched by key. A filter walks another index, whose
        // rows the page then joins.
        let covered = !sqlite && base.is_empty() && matches!(f.sort, PatientSort::UpdatedAt { .. } | PatientSort::LastName { .. });
        // What the walk reads besides its keys and the seek returns: the page's rows, or
        // the ids the page then joins.
        let rows = if covered { patient_columns!() } else { "id" };
        // PostgreSQL reads a row-value comparison, `(a, b) >= (x, y)`, as one index range
        // when its columns follow the index in one direction: the parts from the first
        // term that is not the flag on are one, when none of their values is NULL. Its
        // statement is then half as long to plan (five times, before PostgreSQL keeps a
        // generic plan).
        let row = (!sqlite && holders[first..].iter().all(Option::is_some)).then(|| {
            let exprs = terms[first..].iter().map(|t| t.expr).collect::<Vec<_>>().join(", ");
            let values = holders[first..].iter().flatten().cloned().collect::<Vec<_>>().join(", ");
            format!("({exprs}) {} ({values})", if terms[first].desc { "<=" } else { ">=" })
        });
        // PostgreSQL's parts are ordered by every term, as their index reads them: it then
        // merges the parts in the list's order, reading each only as far as the page
        // needs, where parts ordered from the range's term on were read in full and sorted
        // (the name order's two parts: 1,098 rows sorted, 1.7 ms a page, 0.63 ms merged).
        let part_order = f.sort.order_by(false);
        let mut parts = Vec::new();
        for r in (0..terms.len()).rev() {
            let range = match &row {
                Some(_) if r > first => continue,
                Some(row) if r == first => row,
                _ => match &after[r] {
                    Some(range) => range,
                    None => continue,
                },
            };
            let conditions = base.iter().chain(&same[..r]).chain(std::iter::once(range)).cloned().collect::<Vec<_>>().join(" AND ");
            let select = format!("SELECT {rows}, {columns} FROM patients WHERE {conditions}");
            let Some(n) = &n else {
                parts.push(select);
                continue;
            };
            parts.push(format!("SELECT * FROM ({select} ORDER BY {part_order} LIMIT {n}) AS p{}", parts.len()));
        }
        let limit = push_arg(args, Arg::Int(limit), !sqlite);
        let skip = push_arg(args, Arg::Int(skip), false);
        let parts = parts.join(" UNION ALL ");
        let seek = if sqlite {
            // A page by name in the middle of 1M patients, the statement alone: 0.27 ms
            // with the parts limited and sorted together, 0.08 merged.
            format!("{parts} ORDER BY {} LIMIT {limit} OFFSET {skip}", merged_key_order(&terms))
        } else {
            // The parts' rows in the list's order: each part's rows come after all of the
            // part before's, so the order's terms alone order them. PostgreSQL then reads
            // a single part's rows in the order they come, without sorting them (a third
            // more statements per second than ordering by the part first).
            format!("SELECT {rows} FROM ({parts}) AS seek ORDER BY {} LIMIT {limit} OFFSET {skip}", key_order(&terms))
        };
        if covered {
            return Ok(Some(seek));
        }
        Ok(Some(format!(concat!("SELECT ", patient_columns!(), " FROM ({}) AS k JOIN patients USING (id)"), seek)))
    }

    /// Whether a statement of filter `f` may keep a prepared statement, whose plan
    /// PostgreSQL may make generic after five runs. Not a search: a generic plan cannot
    /// know that `LIKE '%bernard%'` is selective and walks a whole index instead of the
    /// trigram index (48 ms instead of 2 ms on 100,000 patients); an unnamed statement
    /// is planned with its values every time.
    fn keeps_plan(&self, f: &PatientFilter) -> bool {
        self.is_sqlite() || f.search.is_none()
    }

    /// The rows of `sql`, a query of `patient_columns!()` (in `order`, when given). On
    /// SQLite they come back as one JSON text built by SQLite itself: sqlx hands each
    /// row of a result from its SQLite thread to the caller's task one by one, copying
    /// every value, and that hand-over, not the query, was most of a list's time (a
    /// page of 50 rows: 50 wake-ups of the task and 550 value copies; see
    /// docs/benchmarks.md). The order is SQLite's own (`ORDER BY` inside the
    /// aggregate), not left to the subquery.
    async fn patient_rows(&mut self, sql: &str, order: Option<&str>, args: &[Arg], persistent: bool) -> StoreResult<Vec<PatientRow>> {
        match &mut self.0 {
            super::Inner::Postgres(h) => {
                let rows = bind_args!(sqlx::query(sql).persistent(persistent), args).fetch_all(h.conn()).await?;
                Ok(pg_patient_rows(&rows)?)
            }
            super::Inner::Sqlite(h) => {
                let order = order.map(|o| format!(" ORDER BY {o}")).unwrap_or_default();
                let sql = format!(concat!("SELECT json_group_array(json_array(", patient_columns!(), "){}) FROM ({})"), order, sql);
                let json: String = bind_args!(sqlx::query_scalar(&sql), args).fetch_one(h.conn()).await?;
                rows_of_json(&json)
            }
        }
    }

    pub async fn delete_patient(&mut self, id: Id) -> StoreResult<bool> {
        let n = on_db!(self, |c| sqlx::query("DELETE FROM patients WHERE id = $1").bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Patients per status within a scope (from the counters).
    pub async fn patient_status_counts(&mut self, scope: Scope) -> StoreResult<StatusCounts> {
        Ok(StatusCounts(self.patient_counts(scope).await?.by_status))
    }

    /// Rows of patients, studies and instances (three counts in one statement). A full
    /// count: callers cache it (`/api/metrics` at most once a minute).
    pub async fn registry_sizes(&mut self) -> StoreResult<(i64, i64, i64)> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies), (SELECT COUNT(*) FROM instances)"
        )
        .fetch_one(c)
        .await)?)
    }

    /// Patients still in a group (group deletion refuses while there are some).
    pub async fn count_group_patients(&mut self, group_id: Id) -> StoreResult<i64> {
        Ok(self.patient_counts(Scope::Group(group_id)).await?.total(None))
    }

    pub async fn studies_of_patient(&mut self, patient_id: Id) -> StoreResult<Vec<StudyRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT ",
            study_columns!(),
            " FROM studies WHERE patient_id = $1 ORDER BY study_date IS NULL, study_date DESC, id DESC"
        ))
        .bind(patient_id)
        .fetch_all(c)
        .await)?)
    }

    pub async fn study_by_orthanc_id(&mut self, orthanc_study_id: &str) -> StoreResult<Option<StudyRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", study_columns!(), " FROM studies WHERE orthanc_study_id = $1"))
            .bind(orthanc_study_id)
            .fetch_optional(c)
            .await)?)
    }

    /// Inserts or updates a study by its Orthanc id; returns it and whether it is new.
    pub async fn upsert_study(&mut self, patient_id: Id, s: &StudyFields) -> StoreResult<(StudyRow, bool)> {
        let now = super::now();
        if let Some(existing) = self.study_by_orthanc_id(&s.orthanc_study_id).await? {
            on_db!(self, |c| sqlx::query(
                "UPDATE studies SET patient_id = $2, study_instance_uid = $3, study_date = $4, description = $5, \
                 modalities = $6, instances_count = $7, updated_at = $8 WHERE id = $1"
            )
            .bind(existing.id)
            .bind(patient_id)
            .bind(&s.study_instance_uid)
            .bind(s.study_date)
            .bind(&s.description)
            .bind(&s.modalities)
            .bind(s.instances_count)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            let row = StudyRow {
                patient_id,
                study_instance_uid: s.study_instance_uid.clone(),
                study_date: s.study_date,
                description: s.description.clone(),
                modalities: s.modalities.clone(),
                instances_count: s.instances_count,
                updated_at: now,
                ..existing
            };
            return Ok((row, false));
        }
        let id: Id = on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO studies (patient_id, study_instance_uid, orthanc_study_id, study_date, description, modalities, \
             instances_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id"
        )
        .bind(patient_id)
        .bind(&s.study_instance_uid)
        .bind(&s.orthanc_study_id)
        .bind(s.study_date)
        .bind(&s.description)
        .bind(&s.modalities)
        .bind(s.instances_count)
        .bind(now)
        .fetch_one(c)
        .await)?;
        let row = StudyRow {
            id,
            patient_id,
            study_instance_uid: s.study_instance_uid.clone(),
            orthanc_study_id: s.orthanc_study_id.clone(),
            study_date: s.study_date,
            description: s.description.clone(),
            modalities: s.modalities.clone(),
            instances_count: s.instances_count,
            created_at: now,
            updated_at: now,
        };
        Ok((row, true))
    }

    /// Every registered study: (registry id, Orthanc id).
    pub async fn all_study_ids(&mut self) -> StoreResult<Vec<(Id, String)>> {
        Ok(on_db!(self, |c| sqlx::query_as("SELECT id, orthanc_study_id FROM studies ORDER BY id").fetch_all(c).await)?)
    }

    pub async fn delete_study(&mut self, study_id: Id) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("DELETE FROM studies WHERE id = $1").bind(study_id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Makes the registered instances of a study exactly `instances`.
    pub async fn replace_study_instances(&mut self, study_id: Id, patient_id: Id, instances: &[InstanceInfo]) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("DELETE FROM instances WHERE study_id = $1")
            .bind(study_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        for chunk in instances.chunks(200) {
            on_db!(self, |c| {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO instances (orthanc_instance_id, study_id, patient_id, orthanc_series_id, sop_instance_uid, \
                     series_instance_uid, instance_number, modality) ",
                );
                q.push_values(chunk, |mut b, i| {
                    b.push_bind(&i.orthanc_id)
                        .push_bind(study_id)
                        .push_bind(patient_id)
                        .push_bind(&i.orthanc_series_id)
                        .push_bind(&i.sop_instance_uid)
                        .push_bind(&i.series_instance_uid)
                        .push_bind(i.instance_number)
                        .push_bind(&i.modality);
                });
                // An instance moved between studies (rare re-keying) takes its new place.
                q.push(
                    " ON CONFLICT (orthanc_instance_id) DO UPDATE SET study_id = excluded.study_id, \
                     patient_id = excluded.patient_id, orthanc_series_id = excluded.orthanc_series_id",
                );
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    pub async fn instance_by_orthanc_id(&mut self, orthanc_instance_id: &str) -> StoreResult<Option<InstanceRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT orthanc_instance_id, study_id, patient_id, orthanc_series_id, sop_instance_uid, series_instance_uid, \
             instance_number, modality FROM instances WHERE orthanc_instance_id = $1"
        )
        .bind(orthanc_instance_id)
        .fetch_optional(c)
        .await)?)
    }

    /// Whose instance this is: `(patient id, patient group)`, in one query (the image
    /// proxy's access check runs on every download).
    pub async fn instance_owner(&mut self, orthanc_instance_id: &str) -> StoreResult<Option<(Id, Option<Id>)>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT p.id, p.group_id FROM instances i JOIN patients p ON p.id = i.patient_id WHERE i.orthanc_instance_id = $1"
        )
        .bind(orthanc_instance_id)
        .fetch_optional(c)
        .await)?)
    }

    /// Whose study this is: `(patient id, patient group)`.
    pub async fn study_owner(&mut self, orthanc_study_id: &str) -> StoreResult<Option<(Id, Option<Id>)>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT p.id, p.group_id FROM studies s JOIN patients p ON p.id = s.patient_id WHERE s.orthanc_study_id = $1"
        )
        .bind(orthanc_study_id)
        .fetch_optional(c)
        .await)?)
    }

    /// The studies holding instances of an Orthanc series.
    pub async fn studies_of_series(&mut self, orthanc_series_id: &str) -> StoreResult<Vec<Id>> {
        Ok(on_db!(self, |c| sqlx::query_scalar("SELECT DISTINCT study_id FROM instances WHERE orthanc_series_id = $1")
            .bind(orthanc_series_id)
            .fetch_all(c)
            .await)?)
    }

    pub async fn study_by_id(&mut self, id: Id) -> StoreResult<Option<StudyRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", study_columns!(), " FROM studies WHERE id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    /// A patient's instances in study, series and instance-number order.
    pub async fn patient_instances(&mut self, patient_id: Id) -> StoreResult<Vec<InstanceWithStudy>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT i.orthanc_instance_id, i.sop_instance_uid, i.series_instance_uid, s.study_instance_uid, i.instance_number, \
             i.modality FROM instances i JOIN studies s ON s.id = i.study_id WHERE i.patient_id = $1 \
             ORDER BY s.study_instance_uid, i.series_instance_uid, i.instance_number, i.sop_instance_uid"
        )
        .bind(patient_id)
        .fetch_all(c)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row is read by its columns' names: the patient's columns after another column
    /// (as in the first-page statement) or in another order give the same patient.
    #[tokio::test]
    async fn patient_rows_are_read_by_name_in_any_column_order() {
        use sqlx::{Connection, FromRow};
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.expect("SQLite");
        let in_order = "SELECT 'counts' AS counts, 7 AS id, 'IPP-7' AS external_id, 'o-7' AS orthanc_patient_id, NULL AS dicom_study_uid, \
                        'validated' AS status, 'Zoé' AS first_name, 'Martin' AS last_name, '1950-01-31' AS date_of_birth, 3 AS group_id, \
                        '2026-12-03T10:00:00Z' AS created_at, '2026-12-03T11:00:00.5Z' AS updated_at";
        let shuffled = "SELECT 'Martin' AS last_name, '2026-12-03T11:00:00.5Z' AS updated_at, 3 AS group_id, 'validated' AS status, \
                        7 AS id, NULL AS dicom_study_uid, '1950-01-31' AS date_of_birth, 'IPP-7' AS external_id, 'Zoé' AS first_name, \
                        'o-7' AS orthanc_patient_id, '2026-12-03T10:00:00Z' AS created_at";
        let mut read = Vec::new();
        for sql in [in_order, shuffled] {
            let row = sqlx::query(sql).fetch_one(&mut conn).await.expect("row");
            read.push(format!("{:?}", PatientRow::from_row(&row).expect("a patient")));
        }
        assert_eq!(read[0], read[1]);
        for expected in [
            "id: 7",
            "\"IPP-7\"",
            "Some(\"o-7\")",
            "dicom_study_uid: None",
            "Validated",
            "Some(\"Zoé\")",
            "Some(1950-01-31)",
            "Some(3)",
            "11:00:00.500",
        ] {
            assert!(read[0].contains(expected), "{expected} in {}", read[0]);
        }
        let bad = in_order.replace("'validated' AS status", "'lost' AS status");
        let row = sqlx::query(&bad).fetch_one(&mut conn).await.expect("row");
        assert!(PatientRow::from_row(&row).is_err(), "an unknown status is refused");
    }

    #[test]
    fn only_integers_and_status_names_are_written_into_sql() {
        assert_eq!(Arg::Int(-42).literal().as_deref(), Some("-42"));
        assert_eq!(Arg::Text("to_interpret".into()).literal().as_deref(), Some("'to_interpret'"));
        for text in ["", "O'Brien", "a' OR '1'='1", "Martin", "é", "a b", "a\\"] {
            assert_eq!(Arg::Text(text.into()).literal(), None, "{text:?}");
        }
        let mut args = Vec::new();
        assert_eq!(push_arg(&mut args, Arg::Int(7), true), "7");
        assert_eq!(push_arg(&mut args, Arg::Text("x'y".into()), true), "$1");
        assert_eq!(push_arg(&mut args, Arg::Int(7), false), "$2");
        assert_eq!(args.len(), 2);
    }

    #[test]
    fn page_rows_are_read_back_from_sqlite_json() {
        let json = r#"[[7,"IPP 7",null,"1.2.3","to_interpret","Zoé","Dupont","1959-07-08",3,"2024-12-29T00:03:42+00:00","2026-12-02T22:43:47.123456789+00:00"],
                       [8,"IPP 8","abc",null,"archived",null,null,null,null,"2024-12-29 00:03:42","2024-12-29T00:03:42.5"]]"#;
        let rows = rows_of_json(json).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id, rows[0].first_name.as_deref(), rows[0].group_id), (7, Some("Zoé"), Some(3)));
        assert_eq!(rows[0].date_of_birth, NaiveDate::from_ymd_opt(1959, 7, 8));
        assert_eq!(rows[0].updated_at.timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(rows[1].status, PatientStatus::Archived);
        assert_eq!(rows[1].created_at, rows[0].created_at);
        assert_eq!(rows[1].updated_at.timestamp_subsec_millis(), 500);
        assert!(rows_of_json("[]").expect("no rows").is_empty());
        assert!(matches!(
            rows_of_json(r#"[[1,"x",null,null,"no such status",null,null,null,null,"2024-12-29T00:03:42Z","2024-12-29T00:03:42Z"]]"#),
            Err(super::super::StoreError::Corrupt(_))
        ));
    }
}
