//! `/api/audit` (admins): the audit trail, newest first, and its export (CSV or JSON
//! Lines, oldest first, streamed by the sidecar).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{page_request, Admin, ApiQuery};
use crate::app::SharedApp;
use crate::domain::Id;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AuditEntry, PageParams, Paginated};
use crate::services::audit::{self as service, AuditQuery, ExportFormat};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_audit)).routes(routes!(export_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<u32>,
    pub user_id: Option<Id>,
    /// An action name such as `LOGIN` or `EXPORT`.
    #[param(max_length = 64)]
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
    if q.action.as_ref().is_some_and(|a| a.chars().count() > 64) {
        return Err(ApiError::validation("action", "must be at most 64 characters"));
    }
    let query = AuditQuery { user_id: q.user_id, action: q.action, from: q.from, to: q.to };
    Ok(Json(Paginated::of(service::list(&app, query, page).await?, page)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// `csv` (default) or `jsonl`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
    pub user_id: Option<Id>,
    /// An action name such as `LOGIN` or `EXPORT`.
    pub action: Option<String>,
    /// Inclusive lower bound: `YYYY-MM-DD` or an RFC 3339 date-time.
    pub from: Option<String>,
    /// Exclusive upper bound: `YYYY-MM-DD` or an RFC 3339 date-time.
    pub to: Option<String>,
}

/// Download the audit rows matching the filters, oldest first, as CSV or JSON Lines.
/// The export is itself audited.
#[utoipa::path(get, path = "/export", tag = "audit", params(AuditExportQuery), responses(
    (status = 200, description = "CSV (`text/csv`, a header line, CRLF) or JSON Lines (`application/x-ndjson`, one AuditEntry per line)", content((String = "text/csv"), (String = "application/x-ndjson"))),
    (status = 403, description = "Not an admin", body = ErrorBody),
    (status = 413, description = "Larger than MaxExportBytes (plugin)", body = ErrorBody),
    (status = 422, description = "Invalid filter or format", body = ErrorBody),
))]
async fn export_audit(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiQuery(q): ApiQuery<AuditExportQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or(ExportFormat::Csv);
    let query = AuditQuery { user_id: q.user_id, action: q.action, from: q.from, to: q.to };
    let export = service::export(&app, &who, query, format).await?;
    let mut resp = super::export_body(export.body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
