//! Users: accounts, roles, status and the admin count the last-admin rule needs.

use chrono::{DateTime, Utc};

use super::{Db, Page, PageRequest, StoreResult};
use crate::domain::{fold_for_search, Id, Role, UserStatus};

/// The advisory-lock id that serialises changes to the set of active admins (PostgreSQL).
const ADMIN_SET_LOCK: i64 = 0x636f_686f_7274_4164; // "cohortAd"

/// A `users` row. The hash never leaves the services layer.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Id,
    pub email: String,
    pub hashed_password: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
    pub failed_logins: i64,
    pub locked_until: Option<DateTime<Utc>>,
}

impl UserRow {
    /// The folded text `?q=` searches: email and names.
    fn search_text(&self) -> String {
        let parts = [Some(self.email.as_str()), self.first_name.as_deref(), self.last_name.as_deref()];
        fold_for_search(&parts.iter().flatten().copied().collect::<Vec<_>>().join(" "))
    }
}

/// The user an authenticated request acts as, as the session and token joins read it
/// (`auth_user_columns!`): embedded with `#[sqlx(flatten)]` in `SessionAuth` and
/// `TokenAuth`, so the columns are declared once.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuthUser {
    #[sqlx(rename = "user_id")]
    pub id: Id,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What creating a user needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: String,
    pub hashed_password: String,
    pub role: Role,
    pub status: UserStatus,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

macro_rules! user_columns {
    () => {
        "id, email, hashed_password, role, status, group_id, first_name, last_name, created_at, updated_at, \
         password_changed_at, failed_logins, locked_until"
    };
}

/// Counts of the stats page.
#[derive(Clone, Copy, Debug, Default, sqlx::FromRow)]
pub struct UserCounts {
    pub total: i64,
    pub active: i64,
    pub admins: i64,
}

impl Db {
    pub async fn insert_user(&mut self, new: &NewUser) -> StoreResult<UserRow> {
        let now = super::now();
        let mut row = UserRow {
            id: 0,
            email: new.email.clone(),
            hashed_password: new.hashed_password.clone(),
            role: new.role,
            status: new.status,
            group_id: new.group_id,
            first_name: new.first_name.clone(),
            last_name: new.last_name.clone(),
            created_at: now,
            updated_at: now,
            password_changed_at: now,
            failed_logins: 0,
            locked_until: None,
        };
        let search = row.search_text();
        let id: Id = on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO users (email, hashed_password, role, status, group_id, first_name, last_name, search_text, \
             created_at, updated_at, password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) RETURNING id"
        )
        .bind(&row.email)
        .bind(&row.hashed_password)
        .bind(row.role.as_str())
        .bind(row.status.as_str())
        .bind(row.group_id)
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(search)
        .bind(now)
        .fetch_one(c)
        .await)?;
        row.id = id;
        Ok(row)
    }

    pub async fn user_by_id(&mut self, id: Id) -> StoreResult<Option<UserRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    /// The user's row, locked until the transaction ends (PostgreSQL `FOR UPDATE`; on
    /// SQLite `BEGIN IMMEDIATE` already holds the write lock), so what a service writes
    /// back is based on what is there now, not on an earlier read.
    pub async fn user_by_id_for_update(&mut self, id: Id) -> StoreResult<Option<UserRow>> {
        Ok(match &mut self.0 {
            super::Inner::Postgres(h) => {
                sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1 FOR UPDATE"))
                    .bind(id)
                    .fetch_optional(h.conn())
                    .await?
            }
            super::Inner::Sqlite(h) => {
                sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1")).bind(id).fetch_optional(h.conn()).await?
            }
        })
    }

    /// Writes the fields a user may change on their own profile (email, names, password)
    /// and nothing else: a concurrent admin change of role, status or group stands.
    pub async fn save_profile(&mut self, row: &mut UserRow) -> StoreResult<()> {
        row.updated_at = super::now();
        let search = row.search_text();
        on_db!(self, |c| sqlx::query(
            "UPDATE users SET email = $2, hashed_password = $3, first_name = $4, last_name = $5, search_text = $6, \
             updated_at = $7, password_changed_at = $8 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&row.email)
        .bind(&row.hashed_password)
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(search)
        .bind(row.updated_at)
        .bind(row.password_changed_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn user_by_email(&mut self, email: &str) -> StoreResult<Option<UserRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"))
            .bind(email)
            .fetch_optional(c)
            .await)?)
    }

    /// Users ordered by id; `like` is a `LIKE` pattern over the folded search text.
    pub async fn list_users(&mut self, like: Option<&str>, page: PageRequest) -> StoreResult<Page<UserRow>> {
        let pattern = like.unwrap_or("%");
        let items = on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE search_text LIKE $1 ESCAPE '\\' ORDER BY id LIMIT $2 OFFSET $3"
        ))
        .bind(pattern)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(c)
        .await)?;
        let total: i64 = on_db!(self, |c| sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE search_text LIKE $1 ESCAPE '\\'")
            .bind(pattern)
            .fetch_one(c)
            .await)?;
        Ok(Page { items, total })
    }

    /// Writes every mutable field of `row` back and stamps `updated_at`.
    pub async fn save_user(&mut self, row: &mut UserRow) -> StoreResult<()> {
        row.updated_at = super::now();
        let search = row.search_text();
        on_db!(self, |c| sqlx::query(
            "UPDATE users SET email = $2, hashed_password = $3, role = $4, status = $5, group_id = $6, first_name = $7, \
             last_name = $8, search_text = $9, updated_at = $10, password_changed_at = $11 WHERE id = $1"
        )
        .bind(row.id)
        .bind(&row.email)
        .bind(&row.hashed_password)
        .bind(row.role.as_str())
        .bind(row.status.as_str())
        .bind(row.group_id)
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(search)
        .bind(row.updated_at)
        .bind(row.password_changed_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Deletes a user; their sessions go with them and their audit rows lose `user_id`.
    pub async fn delete_user(&mut self, id: Id) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Active admins, for the rule that the last one cannot be removed or demoted.
    pub async fn count_active_admins(&mut self) -> StoreResult<i64> {
        Ok(on_db!(self, |c| sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND status = 'active'")
            .fetch_one(c)
            .await)?)
    }

    /// Serialises changes to the set of active admins until the transaction ends, so two
    /// admins demoting each other at once cannot both pass the last-admin check. On
    /// PostgreSQL a transaction-scoped advisory lock, taken *before* any user row is
    /// locked: locking the admins' rows instead deadlocked (each demotion held its target's
    /// row and waited for the other's), which PostgreSQL broke with a 500. SQLite needs
    /// nothing: `BEGIN IMMEDIATE` already serialises writers.
    pub async fn lock_active_admins(&mut self) -> StoreResult<()> {
        if let super::Inner::Postgres(h) = &mut self.0 {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ADMIN_SET_LOCK).execute(h.conn()).await?;
        }
        Ok(())
    }

    pub async fn user_counts(&mut self) -> StoreResult<UserCounts> {
        Ok(on_db!(self, |c| sqlx::query_as(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0) AS active, \
             COALESCE(SUM(CASE WHEN role = 'admin' THEN 1 ELSE 0 END), 0) AS admins FROM users"
        )
        .fetch_one(c)
        .await)?)
    }

    /// Records a failed login on the account (informational: throttling decisions use
    /// the `login_failures` table, which also covers unknown emails).
    pub async fn note_user_login_failure(&mut self, id: Id, locked_until: Option<DateTime<Utc>>) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1, locked_until = COALESCE($2, locked_until) WHERE id = $1"
        )
        .bind(id)
        .bind(locked_until)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn reset_user_login_failures(&mut self, id: Id) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1 AND failed_logins <> 0")
            .bind(id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
