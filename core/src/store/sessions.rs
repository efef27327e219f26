//! Login sessions: one row per login (device), holding the current refresh token id and
//! the hash of the session's CSRF token.

use chrono::{DateTime, Utc};

use super::users::AuthUser;
use super::{Db, StoreResult};
use crate::domain::Id;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: Id,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub refresh_jti: String,
    pub csrf_hash: String,
}

/// A session joined with the user it belongs to: what authenticating a request needs,
/// in one query.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionAuth {
    pub session_id: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_seen_at: DateTime<Utc>,
    pub refresh_jti: String,
    pub csrf_hash: String,
    #[sqlx(flatten)]
    pub user: AuthUser,
}

macro_rules! session_columns {
    () => {
        "id, user_id, created_at, last_seen_at, expires_at, revoked_at, ip, user_agent, refresh_jti, csrf_hash"
    };
}

impl Db {
    pub async fn insert_session(&mut self, s: &SessionRow) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query(concat!(
            "INSERT INTO user_sessions (",
            session_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&s.id)
        .bind(s.user_id)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.revoked_at)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(&s.refresh_jti)
        .bind(&s.csrf_hash)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn session_by_id(&mut self, id: &str) -> StoreResult<Option<SessionRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", session_columns!(), " FROM user_sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    pub async fn session_auth(&mut self, id: &str) -> StoreResult<Option<SessionAuth>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT s.id AS session_id, s.expires_at, s.revoked_at, s.last_seen_at, s.refresh_jti, s.csrf_hash, ",
            auth_user_columns!(),
            " FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await)?)
    }

    /// The user's sessions that are neither revoked nor expired, newest first.
    pub async fn active_sessions(&mut self, user_id: Id, now: DateTime<Utc>) -> StoreResult<Vec<SessionRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM user_sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC, id"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(c)
        .await)?)
    }

    /// Spends refresh token `old_jti` and makes `new_jti` current, atomically: returns
    /// false when `old_jti` is no longer the current one (already spent) or the session
    /// is revoked or expired.
    pub async fn rotate_refresh(&mut self, id: &str, old_jti: &str, new_jti: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query(
            "UPDATE user_sessions SET refresh_jti = $3, last_seen_at = $4 \
             WHERE id = $1 AND refresh_jti = $2 AND revoked_at IS NULL AND expires_at > $4"
        )
        .bind(id)
        .bind(old_jti)
        .bind(new_jti)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn touch_session(&mut self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("UPDATE user_sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Revokes one session; returns false when it was already revoked or does not exist.
    pub async fn revoke_session(&mut self, id: &str, reason: &str) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query(
            "UPDATE user_sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL"
        )
        .bind(id)
        .bind(super::now())
        .bind(reason)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Revokes every live session of a user except `keep`; returns the ids revoked.
    pub async fn revoke_user_sessions(&mut self, user_id: Id, keep: Option<&str>, reason: &str) -> StoreResult<Vec<String>> {
        Ok(on_db!(self, |c| sqlx::query_scalar(
            "UPDATE user_sessions SET revoked_at = $2, revoke_reason = $3 \
             WHERE user_id = $1 AND revoked_at IS NULL AND id <> $4 RETURNING id"
        )
        .bind(user_id)
        .bind(super::now())
        .bind(reason)
        .bind(keep.unwrap_or(""))
        .fetch_all(c)
        .await)?)
    }
}
