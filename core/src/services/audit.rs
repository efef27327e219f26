//! Reading the audit trail (admins). Writing happens in every other service, in the
//! same transaction as the action.

use chrono::{DateTime, NaiveDate, Utc};

use futures_util::StreamExt;

use super::{action, Outcome, Principal};
use crate::app::App;
use crate::domain::Id;
use crate::error::{ApiError, ApiResult};
use crate::model::AuditEntry;
use crate::pacs::PacsError;
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

fn filter_of(q: AuditQuery) -> ApiResult<AuditFilter> {
    Ok(AuditFilter {
        user_id: q.user_id,
        action: q.action.map(|a| a.trim().to_uppercase()).filter(|a| !a.is_empty()),
        from: q.from.as_deref().map(|s| instant("from", s)).transpose()?,
        to: q.to.as_deref().map(|s| instant("to", s)).transpose()?,
    })
}

pub async fn list(app: &App, q: AuditQuery, page: PageRequest) -> ApiResult<Page<AuditEntry>> {
    let filter = filter_of(q)?;
    let mut db = app.store.conn().await?;
    let rows = db.list_audit(&filter, page).await?;
    Ok(Page { items: rows.items.into_iter().map(AuditEntry::from).collect(), total: rows.total })
}

/// The formats of `GET /api/audit/export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

/// Rows read from the database per step of an export.
const EXPORT_BATCH: i64 = 500;
const CSV_HEADER: &str = "id,at,user_id,actor_email,action,resource_type,resource_id,outcome,ip,details\r\n";

/// An audit export on its way out: streamed (sidecar) or built within
/// `MaxExportBytes` (plugin).
pub struct AuditExport {
    pub filename: String,
    pub format: ExportFormat,
    pub body: crate::services::export::ExportBody,
}

impl std::fmt::Debug for AuditExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditExport").field("filename", &self.filename).finish_non_exhaustive()
    }
}

/// One CSV field: quoted when it holds a separator, a quote or a line break, and
/// defused when a spreadsheet would read it as a formula (an attacker chooses the
/// email of a failed login).
fn csv_field(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn render(format: ExportFormat, rows: Vec<crate::store::audit::AuditRow>) -> bytes::Bytes {
    let mut out = String::new();
    for row in rows {
        let entry = AuditEntry::from(row);
        match format {
            ExportFormat::Jsonl => {
                out.push_str(&serde_json::to_string(&entry).unwrap_or_default());
                out.push('\n');
            }
            ExportFormat::Csv => {
                let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                let fields = [
                    entry.id.to_string(),
                    entry.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    entry.user_id.map(|u| u.to_string()).unwrap_or_default(),
                    opt(&entry.actor_email),
                    entry.action.clone(),
                    opt(&entry.resource_type),
                    opt(&entry.resource_id),
                    entry.outcome.clone(),
                    opt(&entry.ip),
                    entry.details.to_string(),
                ];
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    csv_field(&mut out, f);
                }
                out.push_str("\r\n");
            }
        }
    }
    bytes::Bytes::from(out)
}

/// The rows matching the list's filters, oldest first, as CSV or JSON Lines. The
/// export itself is audited (`EXPORT` on `audit`) before the first row is read, so it
/// appears in its own output.
pub async fn export(app: &App, who: &Principal, q: AuditQuery, format: ExportFormat) -> ApiResult<AuditExport> {
    let filter = filter_of(q)?;
    let row = who.actor().audit(action::EXPORT, Outcome::Success).on("audit", format.extension()).details(serde_json::json!({
        "format": format.extension(),
        "filters": {"user_id": filter.user_id, "action": filter.action, "from": filter.from, "to": filter.to},
    }));
    let filename = format!("cohort-audit-{}.{}", Utc::now().format("%Y%m%d-%H%M%S"), format.extension());
    if app.streams_answers() {
        app.store.audit(&row).await?;
        let store = app.store.clone();
        let header = (format == ExportFormat::Csv).then(|| bytes::Bytes::from_static(CSV_HEADER.as_bytes()));
        let first = futures_util::stream::iter(header.map(Ok));
        let rows = futures_util::stream::try_unfold(Some(0), move |after| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                let Some(after) = after else { return Ok(None) };
                let mut db = store.conn().await.map_err(|e| PacsError::Unavailable(e.to_string()))?;
                let batch = db.audit_batch(&filter, after, EXPORT_BATCH).await.map_err(|e| PacsError::Unavailable(e.to_string()))?;
                let next = (batch.len() as i64 == EXPORT_BATCH).then(|| batch.last().map_or(after, |r| r.id));
                if batch.is_empty() {
                    return Ok(None);
                }
                Ok(Some((render(format, batch), next)))
            }
        });
        let body = first.chain(rows).boxed();
        Ok(AuditExport { filename, format, body: crate::services::export::ExportBody::Stream(body) })
    } else {
        let limit = app.config.max_export_bytes;
        let mut buf = bytes::BytesMut::new();
        let mut held = app.export_memory.reserve();
        if format == ExportFormat::Csv {
            if !held.grow(CSV_HEADER.len() as u64) {
                return Err(crate::services::export::export_memory_busy());
            }
            buf.extend_from_slice(CSV_HEADER.as_bytes());
        }
        app.store.audit(&row).await?;
        let mut db = app.store.conn().await?;
        let mut after = 0;
        loop {
            let batch = db.audit_batch(&filter, after, EXPORT_BATCH).await?;
            let full = batch.len() as i64 == EXPORT_BATCH;
            after = batch.last().map_or(after, |r| r.id);
            let rendered = render(format, batch);
            if buf.len() as u64 + rendered.len() as u64 <= limit && !held.grow(rendered.len() as u64) {
                return Err(crate::services::export::export_memory_busy());
            }
            buf.extend_from_slice(&rendered);
            if buf.len() as u64 > limit {
                return Err(ApiError::too_large(format!(
                    "the export exceeds MaxExportBytes ({limit} bytes); narrow it with from, to, action or user_id"
                )));
            }
            if !full {
                break;
            }
        }
        Ok(AuditExport { filename, format, body: crate::services::export::ExportBody::Buffered(buf.freeze(), held) })
    }
}
