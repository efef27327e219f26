//! Personal API tokens: one row per token, holding the SHA-256 of the secret, never the
//! secret itself.

use chrono::{DateTime, Utc};

use super::users::AuthUser;
use super::{Db, Page, PageRequest, StoreResult};
use crate::domain::{Id, TokenScope};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Id,
    pub user_id: Id,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub scope: TokenScope,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token joined with its user: what authenticating a request needs, in one query.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenAuth {
    pub token_id: Id,
    #[sqlx(try_from = "String")]
    pub scope: TokenScope,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    pub user: AuthUser,
}

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub user_id: Id,
    pub name: &'a str,
    pub scope: TokenScope,
    pub token_hash: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

macro_rules! token_columns {
    () => {
        "id, user_id, name, scope, created_at, expires_at, revoked_at, last_used_at"
    };
}

impl Db {
    pub async fn insert_token(&mut self, t: &NewToken<'_>) -> StoreResult<Id> {
        Ok(on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, scope, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
        )
        .bind(t.user_id)
        .bind(t.name)
        .bind(t.scope.as_str())
        .bind(t.token_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .fetch_one(c)
        .await)?)
    }

    pub async fn token_by_id(&mut self, id: Id) -> StoreResult<Option<TokenRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM api_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await)?)
    }

    /// A user's tokens that are neither revoked nor expired, newest first.
    pub async fn live_tokens_of(&mut self, user_id: Id, now: DateTime<Utc>) -> StoreResult<Vec<TokenRow>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(c)
        .await)?)
    }

    /// Every live token (optionally one user's), newest first, for admins.
    pub async fn list_live_tokens(&mut self, user_id: Option<Id>, now: DateTime<Utc>, page: PageRequest) -> StoreResult<Page<TokenRow>> {
        const WHERE: &str = "WHERE revoked_at IS NULL AND expires_at > $1 AND ($2 IS NULL OR user_id = $2)";
        let list = format!("SELECT {} FROM api_tokens {WHERE} ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4", token_columns!());
        let count = format!("SELECT COUNT(*) FROM api_tokens {WHERE}");
        let items =
            on_db!(self, |c| sqlx::query_as(&list).bind(now).bind(user_id).bind(page.limit()).bind(page.offset()).fetch_all(c).await)?;
        let total = on_db!(self, |c| sqlx::query_scalar(&count).bind(now).bind(user_id).fetch_one(c).await)?;
        Ok(Page { items, total })
    }

    pub async fn token_auth(&mut self, token_hash: &str) -> StoreResult<Option<TokenAuth>> {
        Ok(on_db!(self, |c| sqlx::query_as(concat!(
            "SELECT t.id AS token_id, t.scope, t.expires_at, t.revoked_at, t.last_used_at, ",
            auth_user_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(c)
        .await)?)
    }

    pub async fn touch_token(&mut self, id: Id, now: DateTime<Utc>) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Revokes one token; false when it was already revoked or does not exist.
    pub async fn revoke_token(&mut self, id: Id) -> StoreResult<bool> {
        let done = on_db!(self, |c| sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(super::now())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Revokes every live token of a user (deactivation); returns how many.
    pub async fn revoke_user_tokens(&mut self, user_id: Id) -> StoreResult<u64> {
        Ok(on_db!(self, |c| sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(super::now())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?)
    }
}
