//! `/api/auth`: login, refresh, logout, the caller and their sessions.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{access_token, cookie, csrf_header, origin_allowed, ApiJson, ApiPath, Caller, Client, SessionCaller};
use crate::app::SharedApp;
use crate::auth::cookies;
use crate::auth::token_matches_hash;
use crate::domain::{MAX_EMAIL_BYTES, PASSWORD_MAX_BYTES};
use crate::error::{ApiError, ErrorBody};
use crate::metrics::LoginOutcome;
use crate::model::{Session, User};
use crate::services::auth::{self as service, SessionGrant};
use crate::services::Via;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(sessions))
        .routes(routes!(revoke_session))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// At most 254 bytes.
    #[schema(max_length = 254)]
    pub email: String,
    /// At most 72 bytes.
    #[schema(max_length = 72)]
    pub password: String,
}

/// The body of a login or refresh answer; the tokens travel in cookies.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    pub user: User,
    /// Send it back in `X-CSRF-Token` on every cookie-authenticated write.
    pub csrf_token: String,
}

fn grant_response(grant: SessionGrant) -> Response {
    let [a, r, c] = grant.cookies;
    let headers = AppendHeaders([(header::SET_COOKIE, a), (header::SET_COOKIE, r), (header::SET_COOKIE, c)]);
    (headers, Json(SessionBody { user: grant.user, csrf_token: grant.csrf_token })).into_response()
}

/// Log in with email and password; sets the `access_token`, `refresh_token` and
/// `csrf_token` cookies.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginBody, responses(
    (status = 200, description = "Logged in", body = SessionBody),
    (status = 401, description = "Wrong email or password (same answer for both)", body = ErrorBody),
    (status = 403, description = "Account inactive", body = ErrorBody),
    (status = 429, description = "Too many failures; see Retry-After", body = ErrorBody),
))]
async fn login(
    State(app): State<SharedApp>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&app, &headers) {
        return Err(ApiError::forbidden("origin_not_allowed", "requests from this origin are not allowed"));
    }
    // Bounded before any work: an oversized email is neither hashed nor audited.
    if body.email.trim().len() > MAX_EMAIL_BYTES {
        return Err(ApiError::validation("email", format!("must be at most {MAX_EMAIL_BYTES} bytes")));
    }
    if body.password.len() > PASSWORD_MAX_BYTES {
        return Err(ApiError::validation("password", format!("must be at most {PASSWORD_MAX_BYTES} bytes")));
    }
    let outcome = service::login(&app, &body.email, &body.password, &client).await;
    let counted = match &outcome {
        Ok(_) => Some(LoginOutcome::Succeeded),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => Some(LoginOutcome::Throttled),
        Err(e) if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN => Some(LoginOutcome::Failed),
        Err(_) => None,
    };
    if let Some(o) = counted {
        crate::metrics::global().record_login(o);
    }
    Ok(grant_response(outcome?))
}

/// Spend the refresh cookie for new tokens (`X-CSRF-Token` required). A refresh token
/// presented twice revokes its whole session.
#[utoipa::path(post, path = "/refresh", tag = "auth", responses(
    (status = 200, description = "New tokens set", body = SessionBody),
    (status = 401, description = "Missing, invalid, expired or reused refresh token", body = ErrorBody),
    (status = 403, description = "CSRF check failed", body = ErrorBody),
))]
async fn refresh(State(app): State<SharedApp>, Client(client): Client, headers: HeaderMap) -> Result<Response, ApiError> {
    if !origin_allowed(&app, &headers) {
        return Err(ApiError::forbidden("origin_not_allowed", "requests from this origin are not allowed"));
    }
    let grant = service::refresh(&app, cookie(&headers, cookies::REFRESH), csrf_header(&headers), &client).await?;
    Ok(grant_response(grant))
}

/// End the current session and clear the cookies.
#[utoipa::path(post, path = "/logout", tag = "auth", responses(
    (status = 204, description = "Logged out"),
    (status = 403, description = "CSRF check failed", body = ErrorBody),
))]
async fn logout(State(app): State<SharedApp>, Client(client): Client, headers: HeaderMap) -> Result<Response, ApiError> {
    service::logout(&app, access_token(&headers), cookie(&headers, cookies::REFRESH), csrf_header(&headers), &client).await?;
    let [a, r, c] = app.cookies.cleared();
    let headers = AppendHeaders([(header::SET_COOKIE, a), (header::SET_COOKIE, r), (header::SET_COOKIE, c)]);
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The signed-in user, and for cookie callers the session's CSRF token.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeBody {
    #[serde(flatten)]
    pub user: User,
    /// The session's CSRF token (cookie-authenticated callers only), so a front end can
    /// recover it after a reload and send it in `X-CSRF-Token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// The signed-in user. Cookie callers also get the session's `csrf_token`: the one in
/// their `csrf_token` cookie, echoed only when it is the session's.
#[utoipa::path(get, path = "/me", tag = "auth", responses(
    (status = 200, body = MeBody),
    (status = 401, body = ErrorBody),
))]
async fn me(Caller(who): Caller, headers: HeaderMap) -> Json<MeBody> {
    let csrf_token = (who.via == Via::Cookie)
        .then(|| cookie(&headers, cookies::CSRF))
        .flatten()
        .filter(|t| token_matches_hash(t, &who.csrf_hash))
        .map(str::to_string);
    Json(MeBody { user: who.user, csrf_token })
}

/// The caller's active sessions (one per device), the current one flagged.
#[utoipa::path(get, path = "/sessions", tag = "auth", responses(
    (status = 200, body = Vec<Session>),
    (status = 401, body = ErrorBody),
))]
async fn sessions(State(app): State<SharedApp>, SessionCaller(who): SessionCaller) -> Result<Json<Vec<Session>>, ApiError> {
    Ok(Json(service::list_sessions(&app, &who).await?))
}

/// Revoke one of the caller's sessions; its tokens stop working.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "auth", params(("id" = String, Path, description = "Session id")), responses(
    (status = 204, description = "Revoked"),
    (status = 404, description = "No such session of the caller", body = ErrorBody),
))]
async fn revoke_session(
    State(app): State<SharedApp>,
    SessionCaller(who): SessionCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    service::revoke_session(&app, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
