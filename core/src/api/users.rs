//! `/api/users`: account management (admins) and the caller's own profile.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{explicit_null, page_request, search_text, Admin, ApiJson, ApiPath, ApiQuery, SessionCaller};
use crate::app::SharedApp;
use crate::domain::{Id, Role, UserStatus};
use crate::error::{ApiError, ErrorBody};
use crate::model::{PageParams, Paginated, User};
use crate::services::users::{self as service, NewUserInput, ProfileChanges, UserChanges};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(update_profile)).routes(routes!(
        get_user,
        update_user,
        delete_user
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<u32>,
    /// Case- and accent-insensitive substring of the email or names.
    #[param(max_length = 100)]
    pub q: Option<String>,
}

/// List users.
#[utoipa::path(get, path = "/", tag = "users", params(UserListQuery), responses(
    (status = 200, body = Paginated<User>),
    (status = 403, description = "Not an admin", body = ErrorBody),
))]
async fn list_users(
    State(app): State<SharedApp>,
    _: Admin,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> Result<Json<Paginated<User>>, ApiError> {
    let page = page_request(PageParams { page: q.page, page_size: q.page_size })?;
    Ok(Json(Paginated::of(service::list(&app, search_text(q.q.as_deref())?, page).await?, page)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    pub email: String,
    /// 12 to 72 bytes.
    pub password: String,
    pub role: Role,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// Create a user.
#[utoipa::path(post, path = "/", tag = "users", request_body = CreateUserBody, responses(
    (status = 201, body = User),
    (status = 409, description = "Email taken", body = ErrorBody),
    (status = 422, description = "Invalid field", body = ErrorBody),
))]
async fn create_user(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiJson(b): ApiJson<CreateUserBody>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let input = NewUserInput {
        email: b.email,
        password: b.password,
        role: b.role,
        group_id: b.group_id,
        first_name: b.first_name,
        last_name: b.last_name,
    };
    Ok((StatusCode::CREATED, Json(service::create(&app, &who.actor(), input).await?)))
}

/// Get a user.
#[utoipa::path(get, path = "/{id}", tag = "users", params(("id" = Id, Path)), responses(
    (status = 200, body = User),
    (status = 404, body = ErrorBody),
))]
async fn get_user(State(app): State<SharedApp>, _: Admin, ApiPath(id): ApiPath<Id>) -> Result<Json<User>, ApiError> {
    Ok(Json(service::get(&app, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    pub role: Option<Role>,
    /// `inactive` revokes the user's sessions.
    pub status: Option<UserStatus>,
    /// `null` removes the user from their group.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<Id>)]
    pub group_id: Option<Option<Id>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// Change a user's role, status, group or names. The last active admin cannot be
/// demoted or deactivated.
#[utoipa::path(put, path = "/{id}", tag = "users", params(("id" = Id, Path)), request_body = UpdateUserBody, responses(
    (status = 200, body = User),
    (status = 404, body = ErrorBody),
    (status = 409, description = "Last active admin", body = ErrorBody),
))]
async fn update_user(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiPath(id): ApiPath<Id>,
    ApiJson(b): ApiJson<UpdateUserBody>,
) -> Result<Json<User>, ApiError> {
    let changes = UserChanges { role: b.role, status: b.status, group_id: b.group_id, first_name: b.first_name, last_name: b.last_name };
    Ok(Json(service::update(&app, &who, id, changes).await?))
}

/// Delete a user and their sessions; their audit rows keep the email.
#[utoipa::path(delete, path = "/{id}", tag = "users", params(("id" = Id, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 404, body = ErrorBody),
    (status = 409, description = "Last active admin", body = ErrorBody),
))]
async fn delete_user(State(app): State<SharedApp>, Admin(who): Admin, ApiPath(id): ApiPath<Id>) -> Result<StatusCode, ApiError> {
    service::delete(&app, &who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    /// 12 to 72 bytes; ends the user's other sessions.
    pub new_password: Option<String>,
    /// Required (and checked) to change the email or the password; checked whenever given.
    pub current_password: Option<String>,
    /// Refused with 422: only admins change roles.
    #[schema(value_type = Option<Object>)]
    pub role: Option<serde_json::Value>,
    /// Refused with 422: only admins change statuses.
    #[schema(value_type = Option<Object>)]
    pub status: Option<serde_json::Value>,
    /// Refused with 422: only admins change groups.
    #[schema(value_type = Option<Object>)]
    pub group_id: Option<serde_json::Value>,
}

/// Update the caller's own profile.
#[utoipa::path(put, path = "/me/profile", tag = "users", request_body = ProfileBody, responses(
    (status = 200, body = User),
    (status = 403, description = "Wrong current password", body = ErrorBody),
    (status = 409, description = "Email taken", body = ErrorBody),
    (status = 422, description = "Invalid field, missing current password, or a role/status/group change", body = ErrorBody),
))]
async fn update_profile(
    State(app): State<SharedApp>,
    SessionCaller(who): SessionCaller,
    ApiJson(b): ApiJson<ProfileBody>,
) -> Result<Json<User>, ApiError> {
    let refused: Vec<&str> = [("role", &b.role), ("status", &b.status), ("group_id", &b.group_id)]
        .into_iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null()))
        .map(|(k, _)| k)
        .collect();
    if !refused.is_empty() {
        return Err(service::refuse_profile_escalation(&app, &who, &refused).await);
    }
    let changes = ProfileChanges {
        first_name: b.first_name,
        last_name: b.last_name,
        email: b.email,
        new_password: b.new_password,
        current_password: b.current_password,
    };
    Ok(Json(service::update_profile(&app, &who, changes).await?))
}
