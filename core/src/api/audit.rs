//! `/api/audit` (admins): the audit trail, newest first.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{page_request, Admin, ApiQuery};
use super::paginated;
use crate::app::SharedApp;
use crate::domain::Id;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AuditEntry, PageParams, Paginated};
use crate::services::audit::{self as service, AuditQuery};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    pub user_id: Option<Id>,
    /// An action name such as `LOGIN` or `EXPORT`.
    pub action: Option<String>,
    /// Inclusive lower bound: `YYYY-MM-DD` or an RFC 3339 date-time.
    pub from: Option<String>,
    /// Exclusive upper bound: `YYYY-MM-DD` or an RFC 3339 date-time.
    pub to: Option<String>,
}

/// Search the audit trail.
#[utoipa::path(get, path = "/", tag = "audit", params(AuditListQuery), responses(
    (status = 200, body = Paginated<AuditEntry>),
    (status = 403, description = "Not an admin", body = ErrorBody),
))]
async fn list_audit(
    State(app): State<SharedApp>,
    _: Admin,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> Result<Json<Paginated<AuditEntry>>, ApiError> {
    let page = page_request(PageParams { page: q.page, page_size: q.page_size })?;
    let query = AuditQuery { user_id: q.user_id, action: q.action, from: q.from, to: q.to };
    Ok(Json(paginated(service::list(&app, query, page).await?, page)))
}
