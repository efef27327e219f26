//! One error type for the whole API: what the client is told (status, code, message) is
//! kept apart from the internal cause, which is only logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::passwords::HashError;
use crate::store::StoreError;

/// The JSON body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code that clients can branch on.
    pub code: String,
    /// A human-readable explanation; never contains internal details for 5xx answers.
    pub message: String,
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to put in `Retry-After` (429, and 503 `busy`).
    pub retry_after: Option<u64>,
    /// The internal cause, logged for 5xx answers and never sent to the client.
    pub cause: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None, cause: None }
    }

    /// 400: the request itself is malformed (unparseable JSON, empty body...).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 `validation_error`: well-formed input that breaks a rule; the message names
    /// the field first, as FastAPI users expect (`"email: not a valid address"`).
    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", format!("{field}: {message}"))
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many failed attempts; try again later");
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 503 `busy`: a bounded resource (the password-hashing queue, in-memory exports) is
    /// full; the client may retry after `retry_after_secs`.
    pub fn busy(what: &str, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("{what}; try again shortly"));
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 503: a dependency (database, Orthanc) is down. `code` names it.
    pub fn unavailable(code: &'static str, cause: impl std::fmt::Display) -> Self {
        let what = match code {
            "database_unavailable" => "the database is unavailable",
            "orthanc_unavailable" => "Orthanc is unavailable",
            _ => "a dependency is unavailable",
        };
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, what);
        e.cause = Some(cause.to_string());
        e
    }

    /// 507 `insufficient_storage`: a disk Cohort writes to (the upload spool, the SQLite
    /// file, PostgreSQL's data directory) is full. Nothing was kept of the request; the
    /// same request works again once an operator frees space.
    pub fn insufficient_storage(what: &str, cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            format!("{what} is full; nothing was saved, try again once space is freed"),
        );
        e.cause = Some(cause.to_string());
        e
    }

    pub fn is_insufficient_storage(&self) -> bool {
        self.status == StatusCode::INSUFFICIENT_STORAGE
    }

    /// An I/O error on Cohort's own temporary files (the upload spool): 507 when the
    /// disk is full, 500 otherwise.
    pub fn spool_io(e: std::io::Error) -> Self {
        if crate::store::io_storage_full(&e) {
            Self::insufficient_storage("the server's temporary storage (SpoolDir)", e)
        } else {
            Self::internal(format!("upload spool: {e}"))
        }
    }

    /// 500 with a generic message; the cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error");
        e.cause = Some(cause.to_string());
        e
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message.clone() } }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, cause = ?self.cause, "request failed");
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_storage_full() {
            ApiError::insufficient_storage("the database's storage", e)
        } else if e.is_unavailable() {
            ApiError::unavailable("database_unavailable", e)
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::busy("too many passwords are being checked at once", 1),
            HashError::Failed(_) => ApiError::internal(e),
        }
    }
}
