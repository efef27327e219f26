//! Research groups.

use chrono::{DateTime, Utc};

use super::{Db, Page, PageRequest, StoreResult};
use crate::domain::{ExportPolicy, Id};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GroupRow {
    pub id: Id,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Users in the group.
    pub members: i64,
    #[sqlx(try_from = "String")]
    pub export_policy: ExportPolicy,
}

macro_rules! group_select {
    () => {
        "SELECT g.id, g.name, g.created_at, (SELECT COUNT(*) FROM users u WHERE u.group_id = g.id) AS members, g.export_policy \
         FROM groups g"
    };
}

impl Db {
    pub async fn insert_group(&mut self, name: &str) -> StoreResult<GroupRow> {
        let now = super::now();
        let id: Id = on_db!(self, |c| sqlx::query_scalar("INSERT INTO groups (name, created_at) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(now)
            .fetch_one(c)
            .await)?;
        Ok(GroupRow { id, name: name.to_string(), created_at: now, members: 0, export_policy: ExportPolicy::Any })
    }

    pub async fn group_by_id(&mut self, id: Id) -> StoreResult<Option<GroupRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(group_select!(), " WHERE g.id = $1")).bind(id).fetch_optional(c).await)?)
    }

    pub async fn group_by_name(&mut self, name: &str) -> StoreResult<Option<GroupRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(group_select!(), " WHERE g.name = $1")).bind(name).fetch_optional(c).await)?)
    }

    pub async fn list_groups(&mut self, page: PageRequest) -> StoreResult<Page<GroupRow>> {
        let items = on_db!(self, |c| sqlx::query_as(concat!(group_select!(), " ORDER BY g.name LIMIT $1 OFFSET $2"))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(c)
            .await)?;
        let total = on_db!(self, |c| sqlx::query_scalar("SELECT COUNT(*) FROM groups").fetch_one(c).await)?;
        Ok(Page { items, total })
    }

    pub async fn rename_group(&mut self, id: Id, name: &str) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query("UPDATE groups SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Deletes a group. Fails with a foreign-key violation while users or patients
    /// still belong to it; the service checks first to answer a clear 409.
    pub async fn delete_group(&mut self, id: Id) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn set_group_export_policy(&mut self, id: Id, policy: ExportPolicy) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query("UPDATE groups SET export_policy = $2 WHERE id = $1")
            .bind(id)
            .bind(policy.as_str())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// The group's export policy; `None` when the group does not exist.
    pub async fn group_export_policy(&mut self, id: Id) -> StoreResult<Option<ExportPolicy>> {
        let policy: Option<String> =
            on_db!(self, |c| sqlx::query_scalar("SELECT export_policy FROM groups WHERE id = $1").bind(id).fetch_optional(c).await)?;
        policy.map(|p| p.parse().map_err(|e: crate::domain::Invalid| super::StoreError::Corrupt(e.0))).transpose()
    }

    /// The group's de-identification key (hex), stored as `candidate` when the group has
    /// none yet; the first writer wins, so every node agrees. `None` when the group
    /// does not exist.
    pub async fn group_deid_key(&mut self, id: Id, candidate: &str) -> StoreResult<Option<String>> {
        on_db!(self, |c| sqlx::query("UPDATE groups SET deid_key = $2 WHERE id = $1 AND deid_key IS NULL")
            .bind(id)
            .bind(candidate)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        let key: Option<Option<String>> =
            on_db!(self, |c| sqlx::query_scalar("SELECT deid_key FROM groups WHERE id = $1").bind(id).fetch_optional(c).await)?;
        Ok(key.flatten())
    }

    /// Remembers that `patient_id` was given `pseudonym` (idempotent).
    pub async fn record_pseudonym(&mut self, pseudonym: &str, patient_id: Id, group_id: Option<Id>) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query(
            "INSERT INTO pseudonyms (pseudonym, patient_id, group_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pseudonym) DO NOTHING"
        )
        .bind(pseudonym)
        .bind(patient_id)
        .bind(group_id)
        .bind(super::now())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
