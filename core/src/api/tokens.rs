//! Personal API tokens: `/api/users/me/tokens` (the caller's own, session only) and
//! `/api/tokens` (admins, session only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{page_request, ApiJson, ApiPath, ApiQuery, SessionAdmin, SessionCaller};
use crate::app::SharedApp;
use crate::domain::{Id, TokenScope};
use crate::error::{ApiError, ErrorBody};
use crate::model::{ApiToken, NewApiToken, PageParams, Paginated};
use crate::services::tokens::{self as service, TokenRequest};

/// Routes under `/api/users`.
pub fn me_router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_my_tokens, create_my_token)).routes(routes!(revoke_my_token))
}

/// Routes under `/api/tokens`.
pub fn admin_router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_tokens)).routes(routes!(revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// What the token is for, e.g. "nightly import"; 1 to 100 characters.
    pub name: String,
    pub scope: TokenScope,
    /// 1 to 365.
    #[schema(minimum = 1, maximum = 365)]
    pub expires_in_days: u32,
    /// The caller's password, checked before a token is made.
    pub current_password: String,
}

/// Create a personal API token. Its secret is in this answer only.
#[utoipa::path(post, path = "/me/tokens", tag = "tokens", request_body = CreateTokenBody, responses(
    (status = 201, body = NewApiToken),
    (status = 403, description = "Wrong current password, or called with an API token", body = ErrorBody),
    (status = 422, description = "Invalid field", body = ErrorBody),
))]
async fn create_my_token(
    State(app): State<SharedApp>,
    SessionCaller(who): SessionCaller,
    ApiJson(b): ApiJson<CreateTokenBody>,
) -> Result<(StatusCode, Json<NewApiToken>), ApiError> {
    let req = TokenRequest { name: b.name, scope: b.scope, expires_in_days: b.expires_in_days };
    Ok((StatusCode::CREATED, Json(service::create_mine(&app, &who, req, &b.current_password).await?)))
}

/// The caller's live API tokens, newest first.
#[utoipa::path(get, path = "/me/tokens", tag = "tokens", responses(
    (status = 200, body = Vec<ApiToken>),
    (status = 403, description = "Called with an API token", body = ErrorBody),
))]
async fn list_my_tokens(State(app): State<SharedApp>, SessionCaller(who): SessionCaller) -> Result<Json<Vec<ApiToken>>, ApiError> {
    Ok(Json(service::list_mine(&app, &who).await?))
}

/// Revoke one of the caller's API tokens.
#[utoipa::path(delete, path = "/me/tokens/{id}", tag = "tokens", params(("id" = Id, Path)), responses(
    (status = 204, description = "Revoked"),
    (status = 404, description = "No such live token of the caller", body = ErrorBody),
))]
async fn revoke_my_token(
    State(app): State<SharedApp>,
    SessionCaller(who): SessionCaller,
    ApiPath(id): ApiPath<Id>,
) -> Result<StatusCode, ApiError> {
    service::revoke(&app, &who, id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// Only this user's tokens.
    pub user_id: Option<Id>,
}

/// Every live API token (admins).
#[utoipa::path(get, path = "/", tag = "tokens", params(TokenListQuery), responses(
    (status = 200, body = Paginated<ApiToken>),
    (status = 403, description = "Not an admin, or called with an API token", body = ErrorBody),
))]
async fn list_tokens(
    State(app): State<SharedApp>,
    _: SessionAdmin,
    ApiQuery(q): ApiQuery<TokenListQuery>,
) -> Result<Json<Paginated<ApiToken>>, ApiError> {
    let page = page_request(PageParams { page: q.page, page_size: q.page_size })?;
    Ok(Json(Paginated::of(service::list_all(&app, q.user_id, page).await?, page)))
}

/// Revoke any user's API token (admins).
#[utoipa::path(delete, path = "/{id}", tag = "tokens", params(("id" = Id, Path)), responses(
    (status = 204, description = "Revoked"),
    (status = 404, description = "No such live token", body = ErrorBody),
))]
async fn revoke_token(
    State(app): State<SharedApp>,
    SessionAdmin(who): SessionAdmin,
    ApiPath(id): ApiPath<Id>,
) -> Result<StatusCode, ApiError> {
    service::revoke(&app, &who, id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}
