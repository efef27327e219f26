//! The import journal: what an import in progress has promised to register, written
//! before anything is stored in Orthanc (see `services::reconcile`).

use chrono::{DateTime, Utc};

use super::patients::{scope_args, Scope};
use super::{Db, StoreResult};
use crate::domain::Id;

/// One import that has not finished (running, or dead).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JournalRow {
    pub id: Id,
    pub user_id: Option<Id>,
    pub actor_email: Option<String>,
    pub ip: Option<String>,
    pub token_id: Option<Id>,
    scope: String,
    scope_group_id: Option<Id>,
    /// The group the import's new patients get.
    pub group_id: Option<Id>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

impl JournalRow {
    /// Which existing patients the importer could add to.
    pub fn scope(&self) -> Scope {
        match (self.scope.as_str(), self.scope_group_id) {
            ("all", _) => Scope::All,
            ("group", Some(g)) => Scope::Group(g),
            // A group deleted since: nobody's patients.
            _ => Scope::Nothing,
        }
    }
}

/// An import about to store its first instance.
#[derive(Clone, Debug)]
pub struct NewJournal {
    pub user_id: Option<Id>,
    pub actor_email: Option<String>,
    pub ip: Option<String>,
    pub token_id: Option<Id>,
    pub scope: Scope,
    pub group_id: Option<Id>,
    pub at: DateTime<Utc>,
}

/// A study an import named in the journal: the DICOM PatientID and StudyInstanceUID read
/// from its file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, sqlx::FromRow)]
pub struct JournalStudy {
    pub patient_key: String,
    pub study_instance_uid: String,
}

macro_rules! journal_columns {
    () => {
        "id, user_id, actor_email, ip, token_id, scope, scope_group_id, group_id, started_at, heartbeat_at"
    };
}

impl Db {
    pub async fn open_import_journal(&mut self, j: &NewJournal) -> StoreResult<Id> {
        let (scope, scope_group) = scope_args(j.scope);
        Ok(on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO import_journal (user_id, actor_email, ip, token_id, scope, scope_group_id, group_id, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id"
        )
        .bind(j.user_id)
        .bind(j.actor_email.as_deref())
        .bind(j.ip.as_deref())
        .bind(j.token_id)
        .bind(scope)
        .bind(scope_group)
        .bind(j.group_id)
        .bind(j.at)
        .fetch_one(c)
        .await)?)
    }

    /// Names a study of an import (idempotent).
    pub async fn journal_study(&mut self, import_id: Id, study: &JournalStudy) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query(
            "INSERT INTO import_journal_studies (import_id, patient_key, study_instance_uid) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING"
        )
        .bind(import_id)
        .bind(&study.patient_key)
        .bind(&study.study_instance_uid)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// A running import's sign of life. False when its row is gone (closed, or
    /// reconciled by another node that believed it dead).
    pub async fn touch_import_journal(&mut self, import_id: Id, at: DateTime<Utc>) -> StoreResult<bool> {
        let n = on_db!(self, |c| sqlx::query("UPDATE import_journal SET heartbeat_at = $2 WHERE id = $1")
            .bind(import_id)
            .bind(at)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Deletes an import's journal (and its studies). False when it was gone already:
    /// on a transaction, the row stays locked until commit, so of two nodes closing the
    /// same journal only one gets true.
    pub async fn close_import_journal(&mut self, import_id: Id) -> StoreResult<bool> {
        let n = on_db!(self, |c| sqlx::query("DELETE FROM import_journal WHERE id = $1")
            .bind(import_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Every unfinished import, oldest first.
    pub async fn open_import_journals(&mut self) -> StoreResult<Vec<JournalRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", journal_columns!(), " FROM import_journal ORDER BY id")).fetch_all(c).await)?)
    }

    pub async fn import_journal(&mut self, import_id: Id) -> StoreResult<Option<JournalRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", journal_columns!(), " FROM import_journal WHERE id = $1"))
            .bind(import_id)
            .fetch_optional(c)
            .await)?)
    }

    pub async fn journal_studies(&mut self, import_id: Id) -> StoreResult<Vec<JournalStudy>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT patient_key, study_instance_uid FROM import_journal_studies WHERE import_id = $1 \
             ORDER BY study_instance_uid, patient_key"
        )
        .bind(import_id)
        .fetch_all(c)
        .await)?)
    }

    /// The unfinished imports that named a study with this StudyInstanceUID, with the
    /// PatientID each read.
    pub async fn journals_naming(&mut self, study_instance_uid: &str) -> StoreResult<Vec<(Id, String)>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT import_id, patient_key FROM import_journal_studies WHERE study_instance_uid = $1 ORDER BY import_id"
        )
        .bind(study_instance_uid)
        .fetch_all(c)
        .await)?)
    }
}
