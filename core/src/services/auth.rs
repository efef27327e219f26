//! Login, refresh with rotation and reuse detection, logout, session listing and
//! revocation, and the authentication of every other request.

use chrono::{DateTime, Duration, Utc};

use super::{action, Actor, ClientInfo, Outcome, Principal, Via};
use crate::app::App;
use crate::auth::jwt::{TokenError, TokenType};
use crate::auth::{random_token, sha256_hex, token_matches_hash};
use crate::domain::UserStatus;
use crate::error::{ApiError, ApiResult};
use crate::model::{Session, User};
use crate::store::sessions::{SessionAuth, SessionRow};
use crate::store::{self, Db};

/// What a successful login or refresh gives the client.
#[derive(Debug)]
pub struct SessionGrant {
    pub user: User,
    pub csrf_token: String,
    /// `Set-Cookie` values: access, refresh, CSRF.
    pub cookies: [String; 3],
}

/// Sessions live this long in total; refreshing does not extend them.
fn session_lifetime(app: &App) -> Duration {
    Duration::days(i64::from(app.config.refresh_token_days))
}

fn access_expiry(app: &App, now: DateTime<Utc>, session_expires: DateTime<Utc>) -> DateTime<Utc> {
    (now + Duration::minutes(i64::from(app.config.access_token_minutes))).min(session_expires)
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "invalid email or password")
}

/// The key a client IP is throttled under: the address itself, or its /64 for IPv6
/// (one customer's allocation: a client cannot dodge the limit by changing addresses
/// inside it).
pub fn throttle_ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| ip.to_string(), |v4| v4.to_string()),
        _ => ip.to_string(),
    }
}

/// Checks the email and password, opens a session (one per device) and returns its
/// tokens. Unknown emails cost one bcrypt verification too, and answer exactly like a
/// wrong password.
///
/// Under concurrency: a place in the hashing queue is taken first (503 `busy` when it
/// is full, nothing counted or audited); then, under a lock on the account and IP keys,
/// the attempt is counted against the limits and recorded as a failure *before* the
/// password is checked, so N concurrent wrong passwords get at most the allowed number
/// of checks. A right password forgets the failures again.
pub async fn login(app: &App, email: &str, password: &str, client: &ClientInfo) -> ApiResult<SessionGrant> {
    let key = email.trim().to_lowercase();
    let now = store::now();
    let window = Duration::minutes(i64::from(app.config.login_failure_window_minutes));
    let ip_key = client.ip.as_deref().map(throttle_ip_key);
    let ip = ip_key.as_deref();
    let attempt = Actor { user_id: None, email: Some(key.clone()), ip: client.ip.clone(), token_id: None };
    let admission = app.passwords.admit()?;

    let mut tx = app.store.begin().await?;
    let account_lock = format!("account:{key}");
    let ip_lock = ip.map(|ip| format!("ip:{ip}"));
    let locks: Vec<&str> = std::iter::once(account_lock.as_str()).chain(ip_lock.as_deref()).collect();
    tx.lock_login_keys(&locks).await?;
    let counts = tx.login_failures_since(&key, ip, now - window).await?;
    let account_full = counts.account >= i64::from(app.config.login_max_failures_per_account);
    let ip_full = counts.ip >= i64::from(app.config.login_max_failures_per_ip);
    if account_full || ip_full {
        let reopen = |oldest: Option<DateTime<Utc>>| oldest.map_or(1, |o| (o + window - now).num_seconds().max(1));
        let retry = match (account_full, ip_full) {
            (true, true) => reopen(counts.account_oldest).max(reopen(counts.ip_oldest)),
            (true, false) => reopen(counts.account_oldest),
            _ => reopen(counts.ip_oldest),
        };
        let (scope, scope_key) = if account_full { ("account", account_lock.as_str()) } else { ("ip", ip_lock.as_deref().unwrap_or("ip")) };
        // Audited once per window and scope, not once per request.
        if tx.note_throttled(scope_key, now, now + window).await? {
            tx.insert_audit(
                &attempt
                    .audit(action::LOGIN_FAILED, Outcome::Denied)
                    .details(serde_json::json!({"reason": "throttled", "scope": scope, "once_per_minutes": window.num_minutes()})),
            )
            .await?;
        }
        tx.commit().await?;
        return Err(ApiError::too_many_requests(u64::try_from(retry).unwrap_or(1)));
    }
    let attempt_id = tx.insert_login_failure(&key, ip).await?;
    let user = tx.user_by_email(&key).await?;
    // Do not hold a transaction (or a pooled connection) across the slow hash.
    tx.commit().await?;

    let matches = admission.verify(password, user.as_ref().map(|u| u.hashed_password.as_str())).await?;
    drop(admission);
    let user = match (matches, user) {
        (true, Some(user)) => user,
        (_, user) => {
            let mut tx = app.store.begin().await?;
            let mut row =
                attempt.audit(action::LOGIN_FAILED, Outcome::Failure).details(serde_json::json!({"reason": "invalid_credentials"}));
            if let Some(user) = &user {
                let trips = counts.account + 1 >= i64::from(app.config.login_max_failures_per_account);
                let locked_until = trips.then(|| counts.account_oldest.unwrap_or(now) + window);
                tx.note_user_login_failure(user.id, locked_until).await?;
                row.user_id = Some(user.id);
            }
            tx.insert_audit(&row).await?;
            tx.commit().await?;
            prune_failures_now_and_then(app, now - window).await;
            return Err(invalid_credentials());
        }
    };
    if user.status != UserStatus::Active {
        // The password was right: not a failure.
        let mut tx = app.store.begin().await?;
        tx.delete_login_failure(attempt_id).await?;
        let mut row = attempt.audit(action::LOGIN_FAILED, Outcome::Denied).details(serde_json::json!({"reason": "account_inactive"}));
        row.user_id = Some(user.id);
        tx.insert_audit(&row).await?;
        tx.commit().await?;
        return Err(ApiError::forbidden("account_inactive", "this account is inactive"));
    }

    let session_id = random_token(24);
    let csrf_token = random_token(32);
    let expires_at = now + session_lifetime(app);
    let (refresh_token, refresh_jti) = app.jwt.issue(user.id, &session_id, TokenType::Refresh, expires_at);
    let access_expires = access_expiry(app, now, expires_at);
    let (access_token, _) = app.jwt.issue(user.id, &session_id, TokenType::Access, access_expires);

    let mut tx = app.store.begin().await?;
    tx.insert_session(&SessionRow {
        id: session_id.clone(),
        user_id: user.id,
        created_at: now,
        last_seen_at: now,
        expires_at,
        revoked_at: None,
        ip: client.ip.clone(),
        user_agent: client.user_agent.as_deref().map(|ua| ua.chars().take(500).collect()),
        refresh_jti,
        csrf_hash: sha256_hex(&csrf_token),
    })
    .await?;
    tx.clear_login_failures(&key).await?;
    tx.reset_user_login_failures(user.id).await?;
    let actor = Actor { user_id: Some(user.id), email: Some(user.email.clone()), ip: client.ip.clone(), token_id: None };
    tx.insert_audit(&actor.audit(action::LOGIN, Outcome::Success).on("session", &session_id)).await?;
    tx.commit().await?;

    let cookies = app.cookies.session(&access_token, access_expires, &refresh_token, expires_at, &csrf_token);
    Ok(SessionGrant { user: User::from(&user), csrf_token, cookies })
}

/// About one login in a hundred also deletes failures older than the window, so the
/// table stays small without a background job.
async fn prune_failures_now_and_then(app: &App, before: DateTime<Utc>) {
    if rand::random::<u8>() < 3 {
        if let Ok(mut db) = app.store.conn().await {
            if let Err(e) = db.prune_login_failures(before).await {
                tracing::warn!(error = %e, "could not prune old login failures");
            }
        }
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::unauthorized("token_expired", "the token has expired"),
        TokenError::WrongType | TokenError::Invalid(_) => ApiError::unauthorized("invalid_token", "the token is not valid"),
    }
}

fn session_gone() -> ApiError {
    ApiError::unauthorized("session_revoked", "the session has ended; log in again")
}

/// Spends a refresh token for a new access and refresh pair. A refresh token that was
/// already spent means it was copied: the whole session is revoked.
pub async fn refresh(app: &App, refresh_token: Option<&str>, csrf_header: Option<&str>, client: &ClientInfo) -> ApiResult<SessionGrant> {
    let token = refresh_token.ok_or_else(|| ApiError::unauthorized("not_authenticated", "no refresh token"))?;
    let claims = app.jwt.verify(token, TokenType::Refresh).map_err(token_error)?;
    let now = store::now();

    let mut tx = app.store.begin().await?;
    let session = tx.session_by_id(&claims.sid).await?.ok_or_else(session_gone)?;
    if session.user_id.to_string() != claims.sub || session.revoked_at.is_some() || session.expires_at <= now {
        return Err(session_gone());
    }
    let user = tx.user_by_id(session.user_id).await?.ok_or_else(session_gone)?;
    let actor = Actor { user_id: Some(user.id), email: Some(user.email.clone()), ip: client.ip.clone(), token_id: None };
    if claims.jti != session.refresh_jti {
        return Err(refresh_reused(app, tx, &actor, &session.id).await);
    }
    let csrf = csrf_header.ok_or_else(csrf_failed)?;
    if !token_matches_hash(csrf, &session.csrf_hash) {
        tx.insert_audit(
            &actor
                .audit(action::ACCESS_DENIED, Outcome::Denied)
                .on("session", &session.id)
                .details(serde_json::json!({"reason": "csrf_failed", "route": "/api/auth/refresh"})),
        )
        .await?;
        tx.commit().await?;
        return Err(csrf_failed());
    }
    if user.status != UserStatus::Active {
        return Err(ApiError::unauthorized("account_inactive", "this account is inactive"));
    }
    let (refresh_token, refresh_jti) = app.jwt.issue(user.id, &session.id, TokenType::Refresh, session.expires_at);
    if !tx.rotate_refresh(&session.id, &claims.jti, &refresh_jti, now).await? {
        // Another request spent the same token between our read and our write.
        return Err(refresh_reused(app, tx, &actor, &session.id).await);
    }
    tx.insert_audit(&actor.audit(action::REFRESH, Outcome::Success).on("session", &session.id)).await?;
    tx.commit().await?;

    let access_expires = access_expiry(app, now, session.expires_at);
    let (access_token, _) = app.jwt.issue(user.id, &session.id, TokenType::Access, access_expires);
    // The CSRF token stays the session's: the client just proved it holds it.
    let cookies = app.cookies.session(&access_token, access_expires, &refresh_token, session.expires_at, csrf);
    Ok(SessionGrant { user: User::from(&user), csrf_token: csrf.to_string(), cookies })
}

async fn refresh_reused(app: &App, mut tx: Db, actor: &Actor, session_id: &str) -> ApiError {
    let result = async {
        tx.revoke_session(session_id, "refresh_reuse").await?;
        tx.insert_audit(&actor.audit(action::REFRESH_REUSE, Outcome::Failure).on("session", session_id).details(serde_json::json!({
            "reason": "a spent refresh token was presented; the session is revoked"
        })))
        .await?;
        tx.commit().await
    }
    .await;
    app.sessions.forget(session_id);
    match result {
        Ok(()) => ApiError::unauthorized("refresh_reused", "this refresh token was already used; the session is revoked"),
        Err(e) => e.into(),
    }
}

pub fn csrf_failed() -> ApiError {
    ApiError::forbidden("csrf_failed", "missing or invalid X-CSRF-Token header")
}

/// Ends the session the request belongs to (found from the access token, or from the
/// refresh token when the access token has expired). Always clears the cookies.
pub async fn logout(
    app: &App,
    access: Option<(&str, Via)>,
    refresh_token: Option<&str>,
    csrf_header: Option<&str>,
    client: &ClientInfo,
) -> ApiResult<()> {
    let from_access = access.and_then(|(t, via)| app.jwt.verify(t, TokenType::Access).ok().map(|c| (c, via)));
    let found = from_access.or_else(|| refresh_token.and_then(|t| app.jwt.verify(t, TokenType::Refresh).ok()).map(|c| (c, Via::Cookie)));
    let Some((claims, via)) = found else {
        return Ok(());
    };
    let mut tx = app.store.begin().await?;
    let Some(session) = tx.session_by_id(&claims.sid).await? else {
        return Ok(());
    };
    if session.revoked_at.is_some() || session.user_id.to_string() != claims.sub {
        return Ok(());
    }
    if via == Via::Cookie && !csrf_header.is_some_and(|h| token_matches_hash(h, &session.csrf_hash)) {
        return Err(csrf_failed());
    }
    let email = tx.user_by_id(session.user_id).await?.map(|u| u.email);
    let actor = Actor { user_id: Some(session.user_id), email, ip: client.ip.clone(), token_id: None };
    tx.revoke_session(&session.id, "logout").await?;
    tx.insert_audit(&actor.audit(action::LOGOUT, Outcome::Success).on("session", &session.id)).await?;
    tx.commit().await?;
    app.sessions.forget(&session.id);
    Ok(())
}

/// Turns a credential into the caller: a personal API token (`coh_…`, Bearer only) or
/// an access JWT, checking the session is live on the way.
pub async fn authenticate(app: &App, token: &str, via: Via, client: ClientInfo) -> ApiResult<Principal> {
    if via == Via::Bearer && super::tokens::is_api_token(token) {
        return super::tokens::authenticate(app, token, client).await;
    }
    let claims = app.jwt.verify(token, TokenType::Access).map_err(token_error)?;
    let now = store::now();
    let session = match app.sessions.get(&claims.sid) {
        Some(s) => s,
        None => {
            let mut db = app.store.conn().await?;
            let mut s = db.session_auth(&claims.sid).await?.ok_or_else(session_gone)?;
            // Record activity at most once a minute per session.
            // A full disk does not stop reads: the activity is recorded once space is back.
            if s.revoked_at.is_none() && now - s.last_seen_at > Duration::minutes(1) {
                match db.touch_session(&s.session_id, now).await {
                    Ok(()) => s.last_seen_at = now,
                    Err(e) if e.is_storage_full() => tracing::warn!(error = %e, "no room to record the session's activity"),
                    Err(e) => return Err(e.into()),
                }
            }
            let s = std::sync::Arc::new(s);
            app.sessions.put(s.session_id.clone(), s.clone());
            s
        }
    };
    if session.revoked_at.is_some() || session.expires_at <= now || session.user.id.to_string() != claims.sub {
        return Err(session_gone());
    }
    if session.user.status != UserStatus::Active {
        return Err(ApiError::unauthorized("account_inactive", "this account is inactive"));
    }
    Ok(principal(&session, via, client))
}

fn principal(s: &SessionAuth, via: Via, client: ClientInfo) -> Principal {
    Principal { user: User::from(&s.user), session_id: s.session_id.clone(), via, csrf_hash: s.csrf_hash.clone(), client, token: None }
}

/// The caller's live sessions, newest first, the current one flagged.
pub async fn list_sessions(app: &App, who: &Principal) -> ApiResult<Vec<Session>> {
    let mut db = app.store.conn().await?;
    let rows = db.active_sessions(who.id(), store::now()).await?;
    Ok(rows.into_iter().map(|r| Session::from_row(r, &who.session_id)).collect())
}

/// Revokes one of the caller's own sessions (another user's answers 404).
pub async fn revoke_session(app: &App, who: &Principal, session_id: &str) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    let session = tx.session_by_id(session_id).await?.filter(|s| s.user_id == who.id() && s.revoked_at.is_none());
    let Some(session) = session else {
        return Err(ApiError::not_found("session"));
    };
    tx.revoke_session(&session.id, "revoked_by_user").await?;
    tx.insert_audit(&who.actor().audit(action::SESSION_REVOKE, Outcome::Success).on("session", &session.id)).await?;
    tx.commit().await?;
    app.sessions.forget(&session.id);
    Ok(())
}
