//! The append-only audit trail.

use chrono::{DateTime, Utc};

use super::{Db, Page, PageRequest, StoreResult};
use crate::domain::Id;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Id,
    pub at: DateTime<Utc>,
    pub user_id: Option<Id>,
    pub actor_email: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub outcome: String,
    pub ip: Option<String>,
    pub details: String,
}

/// A row to append.
#[derive(Clone, Debug, Default)]
pub struct NewAudit {
    pub user_id: Option<Id>,
    pub actor_email: Option<String>,
    pub action: &'static str,
    pub resource_type: Option<&'static str>,
    pub resource_id: Option<String>,
    pub outcome: &'static str,
    pub ip: Option<String>,
    pub details: serde_json::Value,
    /// The personal API token the actor used; added to `details` as `token_id`.
    pub token_id: Option<Id>,
}

/// Filters of `GET /api/audit`.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub user_id: Option<Id>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Activity counts since a date, for the stats page.
#[derive(Clone, Copy, Debug, Default, sqlx::FromRow)]
pub struct ActivityCounts {
    pub logins: i64,
    pub imports: i64,
    pub exports: i64,
}

impl super::Store {
    /// Appends one audit row on its own (a refusal or a failure, with no action to
    /// commit it with).
    pub async fn audit(&self, row: &NewAudit) -> StoreResult<()> {
        self.conn().await?.insert_audit(row).await
    }
}

impl Db {
    pub async fn insert_audit(&mut self, a: &NewAudit) -> StoreResult<()> {
        let mut details = if a.details.is_null() { serde_json::json!({}) } else { a.details.clone() };
        if let (Some(id), Some(map)) = (a.token_id, details.as_object_mut()) {
            map.insert("token_id".into(), id.into());
        }
        let details = details.to_string();
        on_db!(self, |c| sqlx::query(
            "INSERT INTO audit_logs (at, user_id, actor_email, action, resource_type, resource_id, outcome, ip, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(super::now())
        .bind(a.user_id)
        .bind(&a.actor_email)
        .bind(a.action)
        .bind(a.resource_type)
        .bind(&a.resource_id)
        .bind(a.outcome)
        .bind(&a.ip)
        .bind(details)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Newest first. Every filter is optional; a `NULL` parameter disables its clause.
    pub async fn list_audit(&mut self, f: &AuditFilter, page: PageRequest) -> StoreResult<Page<AuditRow>> {
        const WHERE: &str = "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2) \
                             AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4)";
        let list = format!(
            "SELECT id, at, user_id, actor_email, action, resource_type, resource_id, outcome, ip, details \
             FROM audit_logs {WHERE} ORDER BY at DESC, id DESC LIMIT $5 OFFSET $6"
        );
        let count = format!("SELECT COUNT(*) FROM audit_logs {WHERE}");
        let items = on_db!(self, |c| sqlx::query_as(&list)
            .bind(f.user_id)
            .bind(&f.action)
            .bind(f.from)
            .bind(f.to)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(c)
            .await)?;
        let total =
            on_db!(self, |c| sqlx::query_scalar(&count).bind(f.user_id).bind(&f.action).bind(f.from).bind(f.to).fetch_one(c).await)?;
        Ok(Page { items, total })
    }

    /// Up to `limit` rows after `after_id`, oldest first (by id, which is insertion
    /// order): one page of a streamed export, read without OFFSET.
    pub async fn audit_batch(&mut self, f: &AuditFilter, after_id: Id, limit: i64) -> StoreResult<Vec<AuditRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT id, at, user_id, actor_email, action, resource_type, resource_id, outcome, ip, details \
             FROM audit_logs WHERE id > $5 AND ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2) \
             AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4) ORDER BY id LIMIT $6"
        )
        .bind(f.user_id)
        .bind(&f.action)
        .bind(f.from)
        .bind(f.to)
        .bind(after_id)
        .bind(limit)
        .fetch_all(c)
        .await)?)
    }

    pub async fn activity_since(&mut self, since: DateTime<Utc>) -> StoreResult<ActivityCounts> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN action = 'LOGIN' THEN 1 ELSE 0 END), 0) AS logins, \
             COALESCE(SUM(CASE WHEN action = 'IMPORT' THEN 1 ELSE 0 END), 0) AS imports, \
             COALESCE(SUM(CASE WHEN action = 'EXPORT' THEN 1 ELSE 0 END), 0) AS exports \
             FROM audit_logs WHERE at >= $1 AND outcome = 'success' AND action IN ('LOGIN', 'IMPORT', 'EXPORT')"
        )
        .bind(since)
        .fetch_one(c)
        .await)?)
    }
}
