//! Reading the audit trail (admins). Writing happens in every other service, in the
//! same transaction as the action.

use chrono::{DateTime, NaiveDate, Utc};

use crate::app::App;
use crate::domain::Id;
use crate::error::{ApiError, ApiResult};
use crate::model::AuditEntry;
use crate::store::audit::AuditFilter;
use crate::store::{Page, PageRequest};

/// Raw query filters, validated here.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub user_id: Option<Id>,
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Accepts an RFC 3339 instant or a plain date (midnight UTC).
fn instant(field: &str, raw: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| ApiError::validation(field, "must be a date (YYYY-MM-DD) or an RFC 3339 date-time"))
}

pub async fn list(app: &App, q: AuditQuery, page: PageRequest) -> ApiResult<Page<AuditEntry>> {
    let filter = AuditFilter {
        user_id: q.user_id,
        action: q.action.map(|a| a.trim().to_uppercase()).filter(|a| !a.is_empty()),
        from: q.from.as_deref().map(|s| instant("from", s)).transpose()?,
        to: q.to.as_deref().map(|s| instant("to", s)).transpose()?,
    };
    let mut db = app.store.conn().await?;
    let rows = db.list_audit(&filter, page).await?;
    Ok(Page { items: rows.items.into_iter().map(AuditEntry::from).collect(), total: rows.total })
}
