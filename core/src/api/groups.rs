//! `/api/groups` (admins).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{page_request, Admin, ApiJson, ApiPath, ApiQuery};
use crate::app::SharedApp;
use crate::domain::{ExportPolicy, Id};
use crate::error::{ApiError, ErrorBody};
use crate::model::{Group, PageParams, Paginated};
use crate::services::groups as service;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_groups, create_group)).routes(routes!(update_group, delete_group))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub name: String,
    /// `any` (default) or `deidentified_only`.
    pub export_policy: Option<ExportPolicy>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupBody {
    pub name: Option<String>,
    /// `deidentified_only`: the group's users get 403 `deidentified_only` on identified
    /// exports and image files.
    pub export_policy: Option<ExportPolicy>,
}

/// List research groups.
#[utoipa::path(get, path = "/", tag = "groups", params(PageParams), responses((status = 200, body = Paginated<Group>)))]
async fn list_groups(
    State(app): State<SharedApp>,
    _: Admin,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<Paginated<Group>>, ApiError> {
    let page = page_request(p)?;
    Ok(Json(Paginated::of(service::list(&app, page).await?, page)))
}

/// Create a research group.
#[utoipa::path(post, path = "/", tag = "groups", request_body = GroupBody, responses(
    (status = 201, body = Group),
    (status = 409, description = "Name taken", body = ErrorBody),
))]
async fn create_group(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiJson(b): ApiJson<GroupBody>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    Ok((StatusCode::CREATED, Json(service::create(&app, &who, &b.name, b.export_policy).await?)))
}

/// Rename a research group or change its export policy.
#[utoipa::path(put, path = "/{id}", tag = "groups", params(("id" = Id, Path)), request_body = UpdateGroupBody, responses(
    (status = 200, body = Group),
    (status = 404, body = ErrorBody),
    (status = 409, description = "Name taken", body = ErrorBody),
))]
async fn update_group(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiPath(id): ApiPath<Id>,
    ApiJson(b): ApiJson<UpdateGroupBody>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(service::update(&app, &who, id, b.name.as_deref(), b.export_policy).await?))
}

/// Delete an empty research group.
#[utoipa::path(delete, path = "/{id}", tag = "groups", params(("id" = Id, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 404, body = ErrorBody),
    (status = 409, description = "The group still has users or patients", body = ErrorBody),
))]
async fn delete_group(State(app): State<SharedApp>, Admin(who): Admin, ApiPath(id): ApiPath<Id>) -> Result<StatusCode, ApiError> {
    service::delete(&app, &who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
