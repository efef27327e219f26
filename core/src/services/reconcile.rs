//! Nothing of an import is lost when its process dies: the import journal and the
//! reconciliation that reads it.
//!
//! An import registers each study when Orthanc has stored the study's first instance
//! (`Importer::claim_study`) and audits itself when it ends. A process killed in between
//! (`kill -9`, a lost machine, Orthanc dying with the plugin) leaves studies in Orthanc
//! that the registry lacks or knows only in part, and no audit row. So before anything is
//! stored, the import writes down who imports and into which group (one
//! `import_journal` row, opened before its first instance is sent) and, before each
//! study's first instance is sent, the study's PatientID and StudyInstanceUID read from
//! the file ([`crate::dicom_keys`]). The row lives as long as the import does, its
//! heartbeat refreshed every [`HEARTBEAT`], and is deleted in the transaction that writes
//! the import's `IMPORT` audit row.
//!
//! A journal whose heartbeat is older than [`LEASE`] belongs to an import that died.
//! [`reconcile`] (at start-up of both hosts, then every minute and when a lease runs out;
//! and on demand, `cohort reconcile`) then registers what Orthanc holds of each study it
//! names, exactly as the import would have (new patients in the importer's group;
//! another group's patient refused), refreshes the studies the import had registered in
//! part, and in one transaction deletes the journal and audits a `RECONCILE` row by the
//! system naming the import, its importer, and what was registered, refused or never
//! reached Orthanc. Only what Orthanc answers for is registered.
//!
//! The change follower asks the same journal ([`journal_group`]) when it registers a
//! study that is new to the registry, so whichever of the two comes first gives the
//! patient the importer's group, and the other finds the study registered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{action, registry, Actor, Outcome};
use crate::app::App;
use crate::dicom_keys;
use crate::domain::Id;
use crate::error::ApiResult;
use crate::pacs::{PacsError, StudyInfo};
use crate::store::journal::{JournalRow, JournalStudy, NewJournal};
use crate::store::patients::Scope;
use crate::store::{self, Db, Store, StoreResult};

/// How often a running import says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long after its last heartbeat an import counts as dead. Several heartbeats, so
/// that a slow database does not make a live import look dead; if it ever does, the
/// harm is small: reconciliation registers what the import itself would have, and the
/// import goes on registering the rest.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a node looks for dead imports when none is running.
const IDLE_CHECK: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(5);

/// A running import's journal. Nothing is written until [`Journal::before_store`] is
/// first called; the heartbeat stops when the journal is dropped.
pub struct Journal {
    store: Store,
    new: NewJournal,
    id: tokio::sync::OnceCell<Id>,
    named: Mutex<HashSet<JournalStudy>>,
    heartbeat: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("id", &self.id.get()).finish_non_exhaustive()
    }
}

impl Journal {
    pub fn new(store: Store, actor: &Actor, scope: Scope, group_id: Option<Id>) -> Arc<Journal> {
        Arc::new(Journal {
            store,
            new: NewJournal {
                user_id: actor.user_id,
                actor_email: actor.email.clone(),
                ip: actor.ip.clone(),
                token_id: actor.token_id,
                scope,
                group_id,
                at: store::now(),
            },
            id: tokio::sync::OnceCell::new(),
            named: Mutex::new(HashSet::new()),
            heartbeat: Mutex::new(None),
        })
    }

    /// To call before a DICOM file (or its first bytes: `head`) goes to Orthanc: opens
    /// the journal the first time, and names the file's study the first time it is
    /// seen, durably, before returning. A file whose keys cannot be read goes unnamed:
    /// if the import then dies before registering its study, the change follower
    /// registers that study as it does DICOM that reaches Orthanc without Cohort.
    pub async fn before_store(&self, head: &[u8]) -> ApiResult<()> {
        let id = self.open().await?;
        let Some(key) = dicom_keys::study_key(head) else {
            tracing::debug!(import = id, "no PatientID/StudyInstanceUID readable before sending; the study goes unnamed");
            return Ok(());
        };
        let study = JournalStudy { patient_key: key.patient_id, study_instance_uid: key.study_instance_uid };
        if self.lock_named().contains(&study) {
            return Ok(());
        }
        self.store.conn().await?.journal_study(id, &study).await?;
        self.lock_named().insert(study);
        Ok(())
    }

    /// The journal's id, once something was written.
    pub fn opened(&self) -> Option<Id> {
        self.id.get().copied()
    }

    fn lock_named(&self) -> std::sync::MutexGuard<'_, HashSet<JournalStudy>> {
        self.named.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn open(&self) -> ApiResult<Id> {
        let id = *self
            .id
            .get_or_try_init(|| async {
                let id = self.store.conn().await?.open_import_journal(&self.new).await?;
                let store = self.store.clone();
                let beat = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(HEARTBEAT).await;
                        match store.conn().await {
                            Ok(mut db) => match db.touch_import_journal(id, store::now()).await {
                                Ok(true) => {}
                                Ok(false) => break,
                                Err(e) => tracing::warn!(import = id, error = %e, "could not refresh the import's heartbeat"),
                            },
                            Err(e) => tracing::warn!(import = id, error = %e, "could not refresh the import's heartbeat"),
                        }
                    }
                });
                *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(beat.abort_handle());
                Ok::<Id, crate::error::ApiError>(id)
            })
            .await?;
        Ok(id)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(beat) = self.heartbeat.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            beat.abort();
        }
    }
}

/// Whether the PatientID an import read from a file is the one Orthanc keeps. Orthanc
/// decodes the value with the file's character set; the import compares raw text, so a
/// non-ASCII key is matched on the StudyInstanceUID alone.
fn same_patient(journal_key: &str, orthanc_patient_id: &str) -> bool {
    !journal_key.is_ascii() || journal_key == orthanc_patient_id.trim_matches(|c: char| c == ' ' || c == '\0')
}

/// The group a study new to the registry gets when an unfinished import named it (the
/// importer's group), else `default`; with the journal that named it. The change
/// follower calls this on its registration transaction.
pub async fn journal_group(db: &mut Db, info: &StudyInfo, default: Option<Id>) -> StoreResult<(Option<Id>, Option<Id>)> {
    for (import_id, key) in db.journals_naming(&info.study_instance_uid).await? {
        if same_patient(&key, &info.patient.patient_id) {
            if let Some(journal) = db.import_journal(import_id).await? {
                return Ok((journal.group_id, Some(import_id)));
            }
        }
    }
    Ok((default, None))
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ReconcileOutcome {
    /// The dead imports reconciled now.
    pub reconciled: Vec<ReconciledImport>,
    /// Unfinished imports still showing signs of life, left alone.
    pub running: usize,
    /// When the first of those would count as dead.
    #[serde(skip)]
    #[schema(ignore)]
    pub next_check: Option<Duration>,
}

/// A dead import, completed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReconciledImport {
    pub import_id: Id,
    pub importer: Option<String>,
    /// Studies registered now (the import died before registering them).
    pub registered: usize,
    /// Studies the import had registered, refreshed with every instance Orthanc holds.
    pub refreshed: usize,
    /// Studies whose patient belongs to a group the importer may not add to: left alone.
    pub refused: usize,
    /// Studies named but never stored (the import died before reaching them).
    pub not_in_orthanc: usize,
    /// Instances registered for this import's studies, all told.
    pub instances: usize,
}

/// One pass: every unfinished import whose heartbeat is older than [`LEASE`] is
/// completed and its journal closed.
pub async fn reconcile(app: &App) -> ApiResult<ReconcileOutcome> {
    let journals = app.store.conn().await?.open_import_journals().await?;
    let mut outcome = ReconcileOutcome::default();
    for journal in journals {
        let age = (store::now() - journal.heartbeat_at).to_std().unwrap_or_default();
        if age < LEASE {
            outcome.running += 1;
            let left = LEASE - age;
            outcome.next_check = Some(outcome.next_check.map_or(left, |n| n.min(left)));
            continue;
        }
        if let Some(done) = reconcile_import(app, &journal).await? {
            tracing::info!(
                import = done.import_id,
                importer = done.importer.as_deref().unwrap_or("system"),
                registered = done.registered,
                refreshed = done.refreshed,
                refused = done.refused,
                not_in_orthanc = done.not_in_orthanc,
                instances = done.instances,
                "reconciled an import that stopped before it finished"
            );
            outcome.reconciled.push(done);
        }
    }
    Ok(outcome)
}

/// Reconciles now and, for imports that still look alive, again when their lease runs
/// out, up to one lease from now: what `cohort reconcile` runs. An import whose
/// heartbeat goes on is alive (another process) and stays counted in `running`.
pub async fn reconcile_settled(app: &App) -> ApiResult<ReconcileOutcome> {
    let deadline = tokio::time::Instant::now() + LEASE + HEARTBEAT;
    let mut all = reconcile(app).await?;
    while let Some(wait) = all.next_check {
        let at = tokio::time::Instant::now() + wait + Duration::from_millis(100);
        if at > deadline {
            break;
        }
        tokio::time::sleep_until(at).await;
        let again = reconcile(app).await?;
        all.reconciled.extend(again.reconciled);
        all.running = again.running;
        all.next_check = again.next_check;
    }
    Ok(all)
}

/// Runs for ever on a host: a pass at start-up, then when a running import's lease would
/// run out, and every minute anyway (an import may die on another node). The registry's
/// upkeep (`registry::keep_counters_vacuumed`) runs beside it, stopped with it.
pub async fn keep_reconciled(app: Arc<App>) {
    let _upkeep = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(super::registry::keep_counters_vacuumed(app.clone())));
    loop {
        let wait = match reconcile(&app).await {
            Ok(outcome) => outcome.next_check.map_or(IDLE_CHECK, |n| (n + Duration::from_millis(100)).min(IDLE_CHECK)),
            Err(e) => {
                tracing::warn!(error = %e, "looking for interrupted imports failed; will retry");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A study the import named, and what Orthanc holds of it.
enum Found {
    Stored(JournalStudy, Box<StudyInfo>),
    Missing(JournalStudy),
}

/// Completes one dead import; `None` when another node did it first.
async fn reconcile_import(app: &App, journal: &JournalRow) -> ApiResult<Option<ReconciledImport>> {
    let named = app.store.conn().await?.journal_studies(journal.id).await?;
    let pacs = app.pacs()?.clone();
    // Orthanc first, outside the transaction: only what it answers for is registered.
    let mut found = Vec::new();
    for study in named {
        let mut stored = Vec::new();
        for orthanc_id in pacs.studies_with_uid(&study.study_instance_uid).await? {
            match pacs.study(&orthanc_id).await {
                Ok(info) if same_patient(&study.patient_key, &info.patient.patient_id) => stored.push(info),
                Ok(_) | Err(PacsError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if stored.is_empty() {
            found.push(Found::Missing(study));
        } else {
            found.extend(stored.into_iter().map(|info| Found::Stored(study.clone(), Box::new(info))));
        }
    }
    // Run again when PostgreSQL breaks a deadlock with this transaction (see
    // `registry::retrying`): each try starts from the journal.
    let found = &found;
    Ok(registry::retrying(move || async move {
        let mut tx = app.store.begin().await?;
        // Deleting the journal first takes its row: a second node doing the same waits, then
        // finds nothing to delete and leaves.
        if !tx.close_import_journal(journal.id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let scope = journal.scope();
        let mut done = ReconciledImport {
            import_id: journal.id,
            importer: journal.actor_email.clone(),
            registered: 0,
            refreshed: 0,
            refused: 0,
            not_in_orthanc: 0,
            instances: 0,
        };
        let mut studies = Vec::new();
        for item in found {
            let (study, info) = match item {
                Found::Missing(study) => {
                    done.not_in_orthanc += 1;
                    studies.push(
                        json!({"study_instance_uid": study.study_instance_uid, "patient_key": study.patient_key, "result": "not_in_orthanc"}),
                    );
                    continue;
                }
                Found::Stored(study, info) => (study, info),
            };
            if let Some(existing) = registry::find_patient(&mut tx, info).await? {
                if !scope.allows(existing.group_id) {
                    done.refused += 1;
                    studies.push(json!({
                        "study_instance_uid": study.study_instance_uid, "orthanc_study_id": info.orthanc_id,
                        "result": "refused", "reason": "patient_of_another_group", "patient": existing.id,
                    }));
                    continue;
                }
            }
            let synced = registry::apply_study(&mut tx, info, journal.group_id).await?;
            let result = if synced.study_created {
                done.registered += 1;
                "registered"
            } else {
                done.refreshed += 1;
                "refreshed"
            };
            done.instances += info.instances.len();
            studies.push(json!({
                "study_instance_uid": study.study_instance_uid, "orthanc_study_id": info.orthanc_id, "result": result,
                "patient": synced.patient.id, "external_id": synced.patient.external_id,
                "patient_created": synced.patient_created, "instances": info.instances.len(),
            }));
        }
        let row = Actor::system().audit(action::RECONCILE, Outcome::Success).on("import", journal.id).details(json!({
            "reason": "the import stopped before it finished (its process ended); what Orthanc holds of its studies is registered as the import would have",
            "import": {
                "id": journal.id, "user_id": journal.user_id, "actor_email": journal.actor_email, "ip": journal.ip,
                "token_id": journal.token_id, "group_id": journal.group_id,
                "started_at": journal.started_at, "last_heartbeat_at": journal.heartbeat_at,
            },
            "registered": done.registered, "refreshed": done.refreshed, "refused": done.refused,
            "not_in_orthanc": done.not_in_orthanc, "instances": done.instances,
            "studies": studies,
        }));
        tx.insert_audit(&row).await?;
        tx.commit().await?;
        Ok(Some(done))
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_keys_match_as_orthanc_keeps_them() {
        assert!(same_patient("IPP-1", "IPP-1"));
        assert!(same_patient("IPP-1", "IPP-1 "));
        assert!(!same_patient("IPP-1", "IPP-2"));
        assert!(same_patient("", ""));
        // Non-ASCII: matched on the StudyInstanceUID alone.
        assert!(same_patient("Jérôme", "Jerome"));
    }
}
