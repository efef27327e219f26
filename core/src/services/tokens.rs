//! Personal API tokens: creation (shown once), listing, revocation, and the
//! authentication of requests that carry one (`Authorization: Bearer coh_…`).

use chrono::Duration;
use serde_json::json;

use super::{action, Actor, ClientInfo, Outcome, Principal, TokenUse, Via};
use crate::app::App;
use crate::auth::{random_token, sha256_hex};
use crate::domain::{self, Id, TokenScope, UserStatus};
use crate::error::{ApiError, ApiResult};
use crate::model::{ApiToken, NewApiToken, User};
use crate::store::tokens::{NewToken, TokenAuth};
use crate::store::{self, Page, PageRequest};

/// Every personal API token starts with this, so a leaked one is easy to recognise
/// (and to tell from a JWT).
pub const PREFIX: &str = "coh_";
/// Random bytes in a token, after the prefix.
const TOKEN_BYTES: usize = 32;
pub const MAX_DAYS: u32 = 365;
const MAX_NAME_CHARS: usize = 100;

/// Whether a bearer credential is a personal API token rather than a JWT.
pub fn is_api_token(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// What a new token needs.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub name: String,
    pub scope: TokenScope,
    pub expires_in_days: u32,
}

fn check_request(r: &TokenRequest) -> ApiResult<String> {
    let name = domain::clean_name(&r.name).map_err(|e| ApiError::validation("name", e))?;
    let name = name.ok_or_else(|| ApiError::validation("name", "must not be empty"))?;
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation("name", format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    if !(1..=MAX_DAYS).contains(&r.expires_in_days) {
        return Err(ApiError::validation("expires_in_days", format!("must be between 1 and {MAX_DAYS}")));
    }
    Ok(name)
}

/// Creates a token for `who` after checking their current password. The secret is in
/// the answer and nowhere else.
pub async fn create_mine(app: &App, who: &Principal, req: TokenRequest, current_password: &str) -> ApiResult<NewApiToken> {
    let name = check_request(&req)?;
    let row = app.store.conn().await?.user_by_id(who.id()).await?.ok_or_else(|| ApiError::not_found("user"))?;
    super::users::check_current_password(app, who, &row, current_password).await?;
    issue(app, &who.actor(), who.id(), &name, req.scope, req.expires_in_days).await
}

/// Creates a token for the user with this email, from the server's terminal (`cohort
/// token create`): the operator is the system.
pub async fn create_for_email(app: &App, email: &str, req: TokenRequest) -> ApiResult<(User, NewApiToken)> {
    let name = check_request(&req)?;
    let email = domain::normalize_email(email).map_err(|e| ApiError::validation("email", e))?;
    let row = app.store.conn().await?.user_by_email(&email).await?.ok_or_else(|| ApiError::not_found("user"))?;
    if row.status != UserStatus::Active {
        return Err(ApiError::unprocessable("account_inactive", "this account is inactive"));
    }
    let token = issue(app, &Actor::system(), row.id, &name, req.scope, req.expires_in_days).await?;
    Ok((User::from(&row), token))
}

async fn issue(app: &App, actor: &Actor, user_id: Id, name: &str, scope: TokenScope, days: u32) -> ApiResult<NewApiToken> {
    let secret = format!("{PREFIX}{}", random_token(TOKEN_BYTES));
    let now = store::now();
    let expires_at = now + Duration::days(i64::from(days));
    let hash = sha256_hex(&secret);
    let mut tx = app.store.begin().await?;
    let id = tx.insert_token(&NewToken { user_id, name, scope, token_hash: &hash, created_at: now, expires_at }).await?;
    tx.insert_audit(&actor.audit(action::TOKEN_CREATE, Outcome::Success).on("api_token", id).details(json!({
        "user_id": user_id, "name": name, "scope": scope.as_str(), "expires_at": expires_at
    })))
    .await?;
    tx.commit().await?;
    Ok(NewApiToken { id, name: name.to_string(), scope, created_at: now, expires_at, token: secret })
}

/// The caller's live tokens, newest first.
pub async fn list_mine(app: &App, who: &Principal) -> ApiResult<Vec<ApiToken>> {
    let rows = app.store.conn().await?.live_tokens_of(who.id(), store::now()).await?;
    Ok(rows.into_iter().map(ApiToken::from).collect())
}

/// Every live token, optionally of one user (admins).
pub async fn list_all(app: &App, user_id: Option<Id>, page: PageRequest) -> ApiResult<Page<ApiToken>> {
    let rows = app.store.conn().await?.list_live_tokens(user_id, store::now(), page).await?;
    Ok(Page { items: rows.items.into_iter().map(ApiToken::from).collect(), total: rows.total })
}

/// Revokes a token: one of the caller's own, or any for an admin acting through
/// `/api/tokens` (`any_user`). Another user's token answers 404.
pub async fn revoke(app: &App, who: &Principal, id: Id, any_user: bool) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    let token = tx.token_by_id(id).await?.filter(|t| t.revoked_at.is_none() && (any_user || t.user_id == who.id()));
    let Some(token) = token else {
        return Err(ApiError::not_found("token"));
    };
    tx.revoke_token(token.id).await?;
    tx.insert_audit(
        &who.actor().audit(action::TOKEN_REVOKE, Outcome::Success).on("api_token", token.id).details(json!({"user_id": token.user_id})),
    )
    .await?;
    tx.commit().await?;
    app.tokens.forget_where(|t| t.token_id == token.id);
    Ok(())
}

fn token_invalid() -> ApiError {
    ApiError::unauthorized("invalid_token", "the token is not valid")
}

/// Turns a presented API token into the caller: it must exist, be neither revoked nor
/// expired, and belong to an active user. `last_used_at` is written at most once a
/// minute.
pub async fn authenticate(app: &App, secret: &str, client: ClientInfo) -> ApiResult<Principal> {
    // A token is `coh_` + 43 base64url characters; anything else is refused before any
    // database work.
    let body = secret.strip_prefix(PREFIX).ok_or_else(token_invalid)?;
    if body.len() != 43 || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(token_invalid());
    }
    let hash = sha256_hex(secret);
    let now = store::now();
    let auth = match app.tokens.get(&hash) {
        Some(a) => a,
        None => {
            let mut db = app.store.conn().await?;
            let mut a = db.token_auth(&hash).await?.ok_or_else(token_invalid)?;
            if a.revoked_at.is_none() && a.last_used_at.is_none_or(|at| now - at > Duration::minutes(1)) {
                // A full disk does not stop reads (see `auth::authenticate`).
                match db.touch_token(a.token_id, now).await {
                    Ok(()) => a.last_used_at = Some(now),
                    Err(e) if e.is_storage_full() => tracing::warn!(error = %e, "no room to record the token's use"),
                    Err(e) => return Err(e.into()),
                }
            }
            app.tokens.put(hash, a.clone());
            a
        }
    };
    if auth.revoked_at.is_some() {
        return Err(ApiError::unauthorized("token_revoked", "this token has been revoked"));
    }
    if auth.expires_at <= now {
        return Err(ApiError::unauthorized("token_expired", "the token has expired"));
    }
    if auth.user.status != UserStatus::Active {
        return Err(ApiError::unauthorized("account_inactive", "this account is inactive"));
    }
    Ok(principal(auth, client))
}

fn principal(a: TokenAuth, client: ClientInfo) -> Principal {
    Principal {
        user: User::from(&a.user),
        session_id: String::new(),
        via: Via::Bearer,
        csrf_hash: String::new(),
        client,
        token: Some(TokenUse { id: a.token_id, scope: a.scope }),
    }
}
