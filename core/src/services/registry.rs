//! Keeping the registry in step with Orthanc: registering a study from what Orthanc
//! knows of it, and following Orthanc's change log so that DICOM arriving without
//! Cohort (C-STORE, Orthanc's own upload) is registered too.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::Notify;

use super::{action, Actor, Outcome};
use crate::app::App;
use crate::domain::{Id, PatientStatus};
use crate::error::{ApiError, ApiResult};
use crate::pacs::{Change, PacsError, StudyInfo};
use crate::store::patients::{NewPatient, PatientRow, StudyFields};
use crate::store::{Db, StoreResult};

/// What registering a study did.
#[derive(Clone, Debug)]
pub struct Synced {
    pub patient: PatientRow,
    pub patient_created: bool,
    pub study_created: bool,
}

/// `Family^Given^Middle^Prefix^Suffix` (first component group) → (first, last).
pub fn split_person_name(pn: &str) -> (Option<String>, Option<String>) {
    let alphabetic = pn.split('=').next().unwrap_or_default();
    let mut parts = alphabetic.split('^').map(str::trim);
    let family = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    let given: Vec<&str> = parts.take(2).filter(|s| !s.is_empty()).collect();
    let given = (!given.is_empty()).then(|| given.join(" "));
    (given, family)
}

/// DICOM DA (`YYYYMMDD`, or the old `YYYY.MM.DD`) → date.
pub fn parse_dicom_date(da: Option<&str>) -> Option<NaiveDate> {
    let digits: String = da?.chars().filter(char::is_ascii_digit).collect();
    NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()
}

/// The registry's external id of a study's patient: the DICOM PatientID, or Orthanc's
/// patient id when the PatientID is empty.
pub fn external_id_of(info: &StudyInfo) -> String {
    let id = info.patient.patient_id.trim();
    if id.is_empty() {
        info.orthanc_patient_id.clone()
    } else {
        id.chars().take(64).collect()
    }
}

/// The registry's patient for a study, if any: by Orthanc id, else by external id.
pub async fn find_patient(db: &mut Db, info: &StudyInfo) -> StoreResult<Option<PatientRow>> {
    if let Some(p) = db.patient_by_orthanc_id(&info.orthanc_patient_id).await? {
        return Ok(Some(p));
    }
    db.patient_by_external_id(&external_id_of(info)).await
}

/// Registers (or refreshes) a study on `db`: creates the patient when unknown, in
/// `new_patient_group` with status `to_interpret`; fills names and birth date only where
/// the registry has none (a person may have corrected them); records the study and its
/// instances; points the patient at their latest study.
pub async fn apply_study(db: &mut Db, info: &StudyInfo, new_patient_group: Option<Id>) -> StoreResult<Synced> {
    let (first, last) = info.patient.patient_name.as_deref().map(split_person_name).unwrap_or((None, None));
    let dob = parse_dicom_date(info.patient.birth_date.as_deref());
    let (mut patient, patient_created) = match find_patient(db, info).await? {
        Some(p) => (p, false),
        None => {
            let new = NewPatient {
                external_id: external_id_of(info),
                orthanc_patient_id: Some(info.orthanc_patient_id.clone()),
                status: PatientStatus::ToInterpret,
                first_name: first.clone(),
                last_name: last.clone(),
                date_of_birth: dob,
                group_id: new_patient_group,
            };
            (db.insert_patient(&new).await?, true)
        }
    };
    let fields = StudyFields {
        study_instance_uid: info.study_instance_uid.clone(),
        orthanc_study_id: info.orthanc_id.clone(),
        study_date: parse_dicom_date(info.study_date.as_deref()),
        description: info.description.clone(),
        modalities: info.modalities().join(","),
        instances_count: info.instances.len() as i64,
    };
    let (study, study_created) = db.upsert_study(patient.id, &fields).await?;
    db.replace_study_instances(study.id, patient.id, &info.instances).await?;

    patient.orthanc_patient_id.get_or_insert_with(|| info.orthanc_patient_id.clone());
    if patient.first_name.is_none() {
        patient.first_name = first;
    }
    if patient.last_name.is_none() {
        patient.last_name = last;
    }
    if patient.date_of_birth.is_none() {
        patient.date_of_birth = dob;
    }
    patient.dicom_study_uid = db.studies_of_patient(patient.id).await?.first().map(|s| s.study_instance_uid.clone());
    db.save_patient(&mut patient).await?;
    Ok(Synced { patient, patient_created, study_created })
}

/// How many times a registration transaction is run before its conflict stands.
const REGISTRATION_TRIES: u32 = 4;

/// Runs one registration transaction (`attempt` begins and commits it), again when it
/// lost a race: PostgreSQL chose it to break a deadlock (an import's closing transaction
/// and the change follower refresh the same patients and studies, in different orders),
/// or another transaction created the same patient or study first (the next try finds
/// it). Each try starts afresh; after [`REGISTRATION_TRIES`] the error stands.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < REGISTRATION_TRIES && (e.is_transaction_conflict() || e.is_unique_violation()) => {
                tracing::info!(error = %e, tries, "a registration lost a race with another; running it again");
                let jitter = rand::random::<u64>() % 50;
                tokio::time::sleep(Duration::from_millis(25 * u64::from(tries) + jitter)).await;
                tries += 1;
            }
            done => return done,
        }
    }
}

/// Removes a study Orthanc no longer has, and re-points its patient.
async fn forget_study(db: &mut Db, study_id: Id) -> StoreResult<()> {
    let Some(study) = db.study_by_id(study_id).await? else {
        return Ok(());
    };
    db.delete_study(study.id).await?;
    if let Some(mut patient) = db.patient_by_id(study.patient_id).await? {
        patient.dicom_study_uid = db.studies_of_patient(patient.id).await?.first().map(|s| s.study_instance_uid.clone());
        db.save_patient(&mut patient).await?;
    }
    Ok(())
}

/// The group of automatically registered patients (`AutoRegisterGroup`), created when
/// missing.
pub async fn auto_register_group(app: &App) -> ApiResult<Option<Id>> {
    let Some(name) = &app.config.auto_register_group else {
        return Ok(None);
    };
    let mut db = app.store.conn().await?;
    if let Some(g) = db.group_by_name(name).await? {
        return Ok(Some(g.id));
    }
    match db.insert_group(name).await {
        Ok(g) => Ok(Some(g.id)),
        // Another node created it at the same moment.
        Err(e) if e.is_unique_violation() => Ok(db.group_by_name(name).await?.map(|g| g.id)),
        Err(e) => Err(e.into()),
    }
}

const CURSOR_KEY: &str = "orthanc_changes_seq";
const PAGE: u32 = 200;
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How many times one change is tried while Orthanc and the database both answer
/// before it is given up on: skipped, and audited `REGISTRATION_FAILED`.
pub const CHANGE_ATTEMPTS: u32 = 5;
/// The wait before a failed change is tried again, doubled at each attempt (0.25 + 0.5
/// + 1 + 2 s: a change is given up on about 4 s after it first failed).
const CHANGE_RETRY: Duration = Duration::from_millis(250);
/// A dependency that does not answer the follower's probe within this delay is down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle follower looks for studies deleted in Orthanc directly: at most
/// this often when Orthanc's study count went down, at least this often anyway.
const SWEEP_WHEN_FEWER: Duration = Duration::from_secs(2);
const SWEEP_ANYWAY: Duration = Duration::from_secs(300);

/// Follows Orthanc's change log for ever, from a cursor kept in the database (so a
/// restart neither misses nor repeats work; repeats are harmless anyway, registration is
/// idempotent). `wake` lets a host signal new changes before the next poll.
///
/// Two kinds of failure are told apart. When Orthanc or the database is down, nothing
/// is skipped: the follower waits (backing off up to 15 s) and goes on from its cursor
/// once both answer. When one change fails while both answer (a study the registry
/// refuses), that change is tried [`CHANGE_ATTEMPTS`] times, then skipped with a
/// `REGISTRATION_FAILED` audit row naming the resource, and the follower moves on.
///
/// Orthanc's change log says nothing of deletions (deleting a resource even removes its
/// earlier entries), so an idle follower also sweeps: see [`sweep_deleted`].
pub async fn follow_changes(app: Arc<App>, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(500);
    let mut sweeps = Sweeps::default();
    let mut failing = Failing::default();
    loop {
        match follow_page(&app, &mut failing).await {
            Ok(Page::More) => backoff = Duration::from_millis(500),
            Ok(Page::Done) => {
                backoff = Duration::from_millis(500);
                if let Err(e) = sweeps.maybe_sweep(&app).await {
                    tracing::warn!(error = %e, "looking for studies deleted in Orthanc failed; will retry");
                }
                // Keeps the metrics' registry sizes fresh (a no-op while the count is).
                if let Err(e) = registry_sizes(&app).await {
                    tracing::debug!(error = %e, "could not count the registry");
                }
                let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            }
            Ok(Page::RetryChange(wait)) => tokio::time::sleep(wait).await,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "following Orthanc's changes failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What one call of [`follow_page`] left to do.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    /// More changes are waiting.
    More,
    /// The change log is read to its end.
    Done,
    /// A change failed while Orthanc and the database answer: try it again after this.
    RetryChange(Duration),
}

/// The change that keeps failing, and how many times it has.
#[derive(Debug, Default)]
struct Failing {
    seq: i64,
    attempts: u32,
}

/// Handles the changes after the cursor, in order, and moves the cursor past them. An
/// error means a dependency is down (or the cursor could not be saved): nothing was
/// skipped, and the cursor is after the last change handled.
async fn follow_page(app: &App, failing: &mut Failing) -> ApiResult<Page> {
    let pacs = app.pacs()?.clone();
    let cursor: i64 = {
        let mut db = app.store.conn().await?;
        db.setting(CURSOR_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let page = pacs.changes(cursor, PAGE).await?;
    let figures = &crate::metrics::global().follower;
    let orthanc_last = if page.done { page.last } else { pacs.last_change_seq().await.unwrap_or(page.last) };
    if page.changes.is_empty() {
        figures.followed(cursor, orthanc_last);
        return Ok(if page.done { Page::Done } else { Page::More });
    }
    let group = auto_register_group(app).await?;
    let mut handled = cursor;
    for change in &page.changes {
        let Err(e) = handle_change(app, change, group).await else {
            handled = handled.max(change.seq);
            continue;
        };
        // Keep what was done; then judge whether this change or a dependency failed.
        save_cursor(app, cursor, handled).await?;
        // A full disk is an outage too, whatever the probe says (SQLite may still find
        // room in its WAL for the probe's small write): the change waits for space.
        let down = if e.is_insufficient_storage() { Some("storage") } else { dependency_down(app).await };
        if let Some(down) = down {
            tracing::warn!(seq = change.seq, error = %e, "an Orthanc change failed while {down} is down; will retry it");
            return Err(e);
        }
        failing.attempts = if failing.seq == change.seq { failing.attempts + 1 } else { 1 };
        failing.seq = change.seq;
        if failing.attempts < CHANGE_ATTEMPTS {
            let wait = CHANGE_RETRY * 2u32.pow(failing.attempts - 1);
            tracing::warn!(seq = change.seq, attempt = failing.attempts, error = %e, "an Orthanc change could not be registered; will retry it");
            figures.followed(handled, orthanc_last);
            return Ok(Page::RetryChange(wait));
        }
        give_up(app, change, failing.attempts, &e).await?;
        figures.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *failing = Failing::default();
        handled = handled.max(change.seq);
    }
    save_cursor(app, cursor, handled).await?;
    figures.followed(handled, orthanc_last);
    Ok(if page.done { Page::Done } else { Page::More })
}

/// Moves the cursor to `handled` when it went forward from `was`.
async fn save_cursor(app: &App, was: i64, handled: i64) -> ApiResult<()> {
    if handled > was {
        app.store.conn().await?.set_setting(CURSOR_KEY, &handled.to_string()).await?;
    }
    Ok(())
}

/// Which dependency is down, if one is: Orthanc, or the database (a write is tried, the
/// cursor's own row rewritten: a database that answers reads but not writes is down for
/// the follower).
async fn dependency_down(app: &App) -> Option<&'static str> {
    let orthanc = async {
        match app.pacs() {
            Ok(pacs) => matches!(tokio::time::timeout(PROBE_TIMEOUT, pacs.ping()).await, Ok(Ok(()))),
            Err(_) => false,
        }
    };
    let database = async {
        let write = async {
            let mut tx = app.store.begin().await?;
            let cursor = tx.setting(CURSOR_KEY).await?.unwrap_or_else(|| "0".into());
            tx.set_setting(CURSOR_KEY, &cursor).await?;
            tx.commit().await
        };
        matches!(tokio::time::timeout(PROBE_TIMEOUT, write).await, Ok(Ok(())))
    };
    match tokio::join!(orthanc, database) {
        (false, _) => Some("Orthanc"),
        (_, false) => Some("the database"),
        _ => None,
    }
}

/// Skips a change that kept failing while everything answered: audited as
/// `REGISTRATION_FAILED` by the system, naming the resource, with the cursor moved past
/// it in the same transaction.
async fn give_up(app: &App, change: &Change, attempts: u32, error: &ApiError) -> ApiResult<()> {
    let resource_type = match change.resource_type.as_str() {
        "Patient" => "orthanc_patient",
        "Study" => "orthanc_study",
        "Series" => "orthanc_series",
        "Instance" => "orthanc_instance",
        _ => "orthanc_resource",
    };
    let cause: String = error.cause.as_deref().unwrap_or(&error.message).chars().take(500).collect();
    tracing::error!(seq = change.seq, resource = %change.resource_id, attempts, error = %cause, "gave up on an Orthanc change; skipped");
    let mut tx = app.store.begin().await?;
    tx.insert_audit(&Actor::system().audit(action::REGISTRATION_FAILED, Outcome::Failure).on(resource_type, &change.resource_id).details(
        json!({
            "source": "orthanc",
            "change_seq": change.seq,
            "change_type": change.change_type,
            "orthanc_id": change.resource_id,
            "attempts": attempts,
            "error": cause,
        }),
    ))
    .await?;
    let cursor: i64 = tx.setting(CURSOR_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
    tx.set_setting(CURSOR_KEY, &cursor.max(change.seq).to_string()).await?;
    tx.commit().await?;
    Ok(())
}

/// The registry's sizes, counted at most once per `RegistryCountSeconds` (default 60;
/// counting a million-row table on every scrape would cost more than the scrape),
/// cached in `App::registry_sizes` with when they were counted.
pub async fn registry_sizes(app: &App) -> ApiResult<(std::time::Instant, crate::metrics::RegistrySizes)> {
    if let Some(fresh) = app.registry_sizes.fresh() {
        return Ok(fresh);
    }
    let (patients, studies, instances) = app.store.conn().await?.registry_sizes().await?;
    Ok(app.registry_sizes.put(crate::metrics::RegistrySizes { patients, studies, instances }))
}

/// When the idle follower last swept, and Orthanc's study count then.
#[derive(Debug, Default)]
struct Sweeps {
    last: Option<tokio::time::Instant>,
    orthanc_studies: Option<i64>,
}

impl Sweeps {
    /// Sweeps when Orthanc holds fewer studies than at the last look (something was
    /// deleted), or when the last sweep is old (a deletion hidden by an arrival).
    async fn maybe_sweep(&mut self, app: &App) -> ApiResult<()> {
        let since = self.last.map(|t| t.elapsed());
        if since.is_some_and(|s| s < SWEEP_WHEN_FEWER) {
            return Ok(());
        }
        let studies = app.pacs()?.statistics().await?.studies;
        let fewer = self.orthanc_studies.is_some_and(|before| studies < before);
        self.orthanc_studies = Some(studies);
        if fewer || since.is_none_or(|s| s >= SWEEP_ANYWAY) {
            self.last = Some(tokio::time::Instant::now());
            let forgotten = sweep_deleted(app).await?;
            if forgotten > 0 {
                tracing::info!(studies = forgotten, "forgot studies deleted in Orthanc directly");
            }
        }
        Ok(())
    }
}

/// Forgets the registered studies Orthanc no longer has (deleted through Orthanc's own
/// API or Explorer), and the patients left without any study that came from Orthanc,
/// audited as a `DELETE` by the system. Returns how many studies were forgotten.
///
/// The registry is read before Orthanc: a study registered in between was stored in
/// Orthanc first, so it cannot look deleted. Each missing study is checked once more on
/// its own before it goes.
pub async fn sweep_deleted(app: &App) -> ApiResult<usize> {
    let registered = app.store.conn().await?.all_study_ids().await?;
    if registered.is_empty() {
        return Ok(0);
    }
    let pacs = app.pacs()?.clone();
    let in_orthanc: std::collections::HashSet<String> = pacs.study_ids().await?.into_iter().collect();
    let mut forgotten = 0;
    for (study_id, orthanc_id) in registered.into_iter().filter(|(_, o)| !in_orthanc.contains(o)) {
        match pacs.study(&orthanc_id).await {
            Err(PacsError::NotFound) => {}
            Ok(_) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut tx = app.store.begin().await?;
        let Some(study) = tx.study_by_id(study_id).await? else {
            continue;
        };
        forget_study(&mut tx, study_id).await?;
        forgotten += 1;
        let patient = tx.patient_by_id(study.patient_id).await?;
        if let Some(patient) = patient.filter(|p| p.orthanc_patient_id.is_some()) {
            if tx.studies_of_patient(patient.id).await?.is_empty() {
                tx.insert_audit(&Actor::system().audit(action::DELETE, Outcome::Success).on("patient", patient.id).details(json!({
                    "source": "orthanc",
                    "reason": "its DICOM data was deleted in Orthanc",
                    "external_id": patient.external_id,
                })))
                .await?;
                tx.delete_patient(patient.id).await?;
                app.instance_owners.forget_where(|(p, _)| *p == patient.id);
            }
        }
        tx.commit().await?;
    }
    Ok(forgotten)
}

async fn handle_change(app: &App, change: &Change, group: Option<Id>) -> ApiResult<()> {
    match (change.change_type.as_str(), change.resource_type.as_str()) {
        // Studies are registered once stable: an import running through Cohort has
        // claimed its studies (and their patients' group) long before.
        ("StableStudy", "Study") => register(app, &change.resource_id, group).await,
        ("Deleted", "Study") => {
            let mut tx = app.store.begin().await?;
            if let Some(study) = tx.study_by_orthanc_id(&change.resource_id).await? {
                forget_study(&mut tx, study.id).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        ("Deleted", "Patient") => {
            let mut tx = app.store.begin().await?;
            if let Some(patient) = tx.patient_by_orthanc_id(&change.resource_id).await? {
                for study in tx.studies_of_patient(patient.id).await? {
                    forget_study(&mut tx, study.id).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        }
        ("Deleted", "Series") => {
            let studies = app.store.conn().await?.studies_of_series(&change.resource_id).await?;
            for study_id in studies {
                resync(app, study_id).await?;
            }
            Ok(())
        }
        ("Deleted", "Instance") => {
            let instance = app.store.conn().await?.instance_by_orthanc_id(&change.resource_id).await?;
            if let Some(i) = instance {
                resync(app, i.study_id).await?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Registers a study that reached Orthanc; audited as an `IMPORT` by the system when the
/// study is new to the registry.
async fn register(app: &App, orthanc_study_id: &str, group: Option<Id>) -> ApiResult<()> {
    let info = match app.pacs()?.study(orthanc_study_id).await {
        Ok(info) => info,
        Err(PacsError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let info = &info;
    retrying(move || async move {
        let mut tx = app.store.begin().await?;
        // A study an unfinished import named gets the importer's group (see `reconcile`).
        let (group, import) = super::reconcile::journal_group(&mut tx, info, group).await?;
        let synced = apply_study(&mut tx, info, group).await?;
        if synced.study_created {
            tx.insert_audit(&Actor::system().audit(action::IMPORT, Outcome::Success).on("patient", synced.patient.id).details(json!({
                "source": "orthanc",
                "import": import,
                "external_id": synced.patient.external_id,
                "patient_created": synced.patient_created,
                "orthanc_study_id": info.orthanc_id,
                "study_instance_uid": info.study_instance_uid,
                "instances": info.instances.len(),
            })))
            .await?;
        }
        tx.commit().await
    })
    .await?;
    Ok(())
}

/// Refreshes a registered study from Orthanc, or forgets it when Orthanc lost it.
async fn resync(app: &App, study_id: Id) -> ApiResult<()> {
    let Some(study) = app.store.conn().await?.study_by_id(study_id).await? else {
        return Ok(());
    };
    let info = match app.pacs()?.study(&study.orthanc_study_id).await {
        Ok(info) => Some(info),
        Err(PacsError::NotFound) => None,
        Err(e) => return Err(ApiError::from(e)),
    };
    let info = &info;
    retrying(move || async move {
        let mut tx = app.store.begin().await?;
        match info {
            Some(info) => {
                apply_study(&mut tx, info, None).await?;
            }
            None => forget_study(&mut tx, study_id).await?,
        }
        tx.commit().await
    })
    .await?;
    Ok(())
}

/// How often the counters' tables are vacuumed (PostgreSQL; see
/// `Conn::vacuum_counters`). At 900 creations a second, 10 s leave ~10,000 dead rows.
const COUNTERS_VACUUM_EVERY: Duration = Duration::from_secs(10);

/// Runs for ever beside the reconciler (which starts and stops it): vacuums the
/// counters' tables and the change log every [`COUNTERS_VACUUM_EVERY`] on PostgreSQL,
/// whether or not autovacuum is on. A failure (the database down, a role that does not
/// own the tables) is logged once and tried again later.
pub async fn keep_counters_vacuumed(app: Arc<App>) {
    if app.store.backend() != crate::store::Backend::Postgres {
        return;
    }
    let mut warned = false;
    loop {
        let done = match app.store.conn().await {
            Ok(mut db) => db.vacuum_counters().await,
            Err(e) => Err(e),
        };
        match done {
            Ok(rewritten) => {
                warned = false;
                if !rewritten.is_empty() {
                    tracing::info!(tables = ?rewritten, "rewrote the patient counters' tables, left mostly empty by a burst of writes");
                }
            }
            Err(e) if !warned => {
                tracing::warn!(error = %e, "vacuuming the patient counters failed; will retry");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(COUNTERS_VACUUM_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_names_split_into_first_and_last() {
        assert_eq!(split_person_name("Dupré^Éloïse"), (Some("Éloïse".into()), Some("Dupré".into())));
        assert_eq!(split_person_name("DOE^JOHN^PAUL^DR"), (Some("JOHN PAUL".into()), Some("DOE".into())));
        assert_eq!(split_person_name("Anonymous"), (None, Some("Anonymous".into())));
        assert_eq!(split_person_name("Yamada^Tarou=山田^太郎"), (Some("Tarou".into()), Some("Yamada".into())));
        assert_eq!(split_person_name("^"), (None, None));
    }

    #[test]
    fn dicom_dates_parse() {
        assert_eq!(parse_dicom_date(Some("19800131")), NaiveDate::from_ymd_opt(1980, 1, 31));
        assert_eq!(parse_dicom_date(Some("1980.01.31")), NaiveDate::from_ymd_opt(1980, 1, 31));
        assert_eq!(parse_dicom_date(Some("19801341")), None);
        assert_eq!(parse_dicom_date(None), None);
    }
}
