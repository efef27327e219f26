//! Request ids, one log line per request, `/api/health/live` and `/api/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Admin;
use crate::app::SharedApp;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template that matched, copied into the answer's extensions for the log
/// line: the router's, or the one [`super::lane`] serves.
#[derive(Clone, Debug)]
enum Route {
    Matched(MatchedPath),
    Known(&'static str),
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(m) => m.as_str(),
            Route::Known(s) => s,
        }
    }
}

/// The caller's id when it is 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(value: &[u8]) -> bool {
    (1..=64).contains(&value.len()) && value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 12] = rand::random();
    let mut id = String::with_capacity(24);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 15)]));
    }
    id
}

/// One request's id, start time and method, from the moment it arrives until its
/// answer is logged ([`RequestLog::finish`]).
pub struct RequestLog {
    id: String,
    started: Instant,
    method: axum::http::Method,
}

impl RequestLog {
    /// Settles the request id: the caller's when valid, else a new one.
    pub fn start(req: &Request) -> RequestLog {
        let started = Instant::now();
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .map(HeaderValue::as_bytes)
            .filter(|v| valid_request_id(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map_or_else(new_request_id, str::to_string);
        RequestLog { id, started, method: req.method().clone() }
    }

    /// Sets the id on the answer, logs the request once and counts it in the metrics
    /// when `count` (`RequestMetrics`).
    pub fn finish(self, resp: &mut Response, count: bool) {
        let elapsed = self.started.elapsed();
        // Taken out of the answer (nothing else reads it): no copy of the template per request.
        let matched = resp.extensions_mut().remove::<Route>();
        let route = matched.as_ref().map_or(crate::metrics::UNMATCHED, |r| r.as_str());
        let status = resp.status().as_u16();
        if count {
            crate::metrics::global().record_request(route, status, elapsed);
        }
        tracing::info!(
            request_id = %self.id,
            method = %self.method,
            route = %route,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        if let Ok(v) = HeaderValue::try_from(self.id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
    }
}

/// Remembers in the answer which route template matched, for [`RequestLog::finish`]
/// (called by the route layer, which alone sees the `MatchedPath`).
pub fn remember_route(matched: Option<MatchedPath>, resp: &mut Response) {
    if let Some(m) = matched {
        resp.extensions_mut().insert(Route::Matched(m));
    }
}

/// Names the route of an answer made past the router (its template, as the router
/// would name it), for [`RequestLog::finish`].
pub fn name_route(template: &'static str, resp: &mut Response) {
    resp.extensions_mut().insert(Route::Known(template));
}

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers. Touches no dependency (database, Orthanc).
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Live)))]
async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Figures in the Prometheus text format 0.0.4 (admins: session or API token).
#[utoipa::path(get, path = "/metrics", tag = "health", security(("cookie" = []), ("bearer" = [])), responses(
    (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
    (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
    (status = 403, description = "Not an admin", body = crate::error::ErrorBody),
))]
async fn metrics(State(app): State<SharedApp>, _: Admin) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    crate::metrics::global().render(&mut out);
    let (size, idle) = app.store.pool_use();
    crate::metrics::gauge(&mut out, "cohort_db_pool_connections", "Database connections the pool holds.", size);
    crate::metrics::gauge(&mut out, "cohort_db_pool_idle_connections", "Of those, idle ones.", idle);
    crate::metrics::gauge(
        &mut out,
        "cohort_password_hashing_queue",
        "Password hashing jobs admitted and not finished.",
        app.passwords.queued(),
    );
    crate::metrics::gauge(
        &mut out,
        "cohort_export_memory_held_bytes",
        "Bytes held by answers built in memory (MaxExportBytes).",
        app.export_memory.in_use(),
    );
    // Counted at most once per `RegistryCountSeconds` (the follower refreshes it too); a database that does
    // not answer leaves them out, the scrape still answers.
    match crate::services::registry::registry_sizes(&app).await {
        Ok((counted, sizes)) => crate::metrics::render_registry(&mut out, sizes, counted.elapsed()),
        Err(e) => tracing::warn!(error = %e, "could not count the registry for the metrics"),
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::valid_request_id;

    #[test]
    fn request_ids_are_short_safe_tokens() {
        assert!(valid_request_id(b"abc-DEF_1.2"));
        assert!(valid_request_id(&[b'a'; 64]));
        assert!(!valid_request_id(&[b'a'; 65]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a/b"));
        assert!(!valid_request_id("é".as_bytes()));
    }

    #[test]
    fn new_request_ids_are_24_lowercase_hex_digits_and_differ() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        assert!(valid_request_id(a.as_bytes()));
        assert_ne!(a, b);
    }
}
