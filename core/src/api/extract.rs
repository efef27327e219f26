//! Request guards and extractors. Handlers state what they need in their signature
//! (`Caller`, `Admin`, `ApiJson<T>`...) and every rejection is an [`ApiError`] with the
//! JSON error shape.

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::app::{ClientAddr, SharedApp};
use crate::auth::cookies;
use crate::auth::token_matches_hash;
use crate::error::ApiError;
use crate::model::PageParams;
use crate::services::{action, auth as auth_service, ClientInfo, Outcome, Principal, Via};
use crate::store::PageRequest;

/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub const MAX_PAGE_SIZE: u32 = 200;
/// `?q=` is at most this many characters (checked before any query runs).
pub const MAX_SEARCH_CHARS: usize = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// The client's address and user agent.
pub fn client_info(parts: &Parts) -> ClientInfo {
    ClientInfo {
        ip: parts.extensions.get::<ClientAddr>().map(|a| a.0.to_string()),
        user_agent: parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
    }
}

/// All `Cookie` header values.
fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok())
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookies::find(cookie_headers(headers), name)
}

/// The `Authorization: Bearer` token, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The access token of a request and how it came: `Authorization: Bearer` wins over
/// the cookie.
pub fn access_token(headers: &HeaderMap) -> Option<(&str, Via)> {
    bearer(headers).map(|t| (t, Via::Bearer)).or_else(|| cookie(headers, cookies::ACCESS).map(|t| (t, Via::Cookie)))
}

pub fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a present `Origin` may act on this server: listed in `AllowedOrigins`, or
/// the same host the request was sent to.
pub fn origin_allowed(app: &SharedApp, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if app.config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The path as the client sent it (nested routers see only their suffix).
pub fn request_path(parts: &Parts) -> String {
    parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path().to_string(), |u| u.0.path().to_string())
}

/// Records a refused request in the audit trail; a failure to write is logged, and the
/// refusal stands.
pub async fn audit_denied(app: &SharedApp, who: &Principal, reason: &str, parts: &Parts) {
    let row = who.actor().audit(action::ACCESS_DENIED, Outcome::Denied).details(serde_json::json!({
        "reason": reason, "method": parts.method.as_str(), "route": request_path(parts)
    }));
    if let Err(e) = app.store.audit(&row).await {
        tracing::warn!(error = %e, "could not audit a denied request");
    }
}

/// An authenticated caller. For cookie-authenticated writes it also checks the
/// `Origin` and the `X-CSRF-Token` header.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<SharedApp> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, ApiError> {
        let (token, via) =
            access_token(&parts.headers).ok_or_else(|| ApiError::unauthorized("not_authenticated", "authentication required"))?;
        let who = auth_service::authenticate(app, token, via, client_info(parts)).await?;
        if !who.may_use(&parts.method) {
            audit_denied(app, &who, "insufficient_scope", parts).await;
            return Err(ApiError::forbidden("insufficient_scope", "this token's scope is read: it allows GET and HEAD only"));
        }
        if via == Via::Cookie && is_mutating(&parts.method) {
            if !origin_allowed(app, &parts.headers) {
                audit_denied(app, &who, "origin_not_allowed", parts).await;
                return Err(ApiError::forbidden("origin_not_allowed", "requests from this origin are not allowed"));
            }
            let ok = csrf_header(&parts.headers).is_some_and(|h| token_matches_hash(h, &who.csrf_hash));
            if !ok {
                audit_denied(app, &who, "csrf_failed", parts).await;
                return Err(auth_service::csrf_failed());
            }
        }
        Ok(Caller(who))
    }
}

/// A caller signed in with a session (cookie or access JWT): personal API tokens may
/// not manage tokens, sessions or the profile (403 `session_required`, audited).
#[derive(Clone, Debug)]
pub struct SessionCaller(pub Principal);

impl FromRequestParts<SharedApp> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, ApiError> {
        let Caller(who) = Caller::from_request_parts(parts, app).await?;
        require_session(app, who, parts).await.map(SessionCaller)
    }
}

/// An admin signed in with a session (managing other users' API tokens).
#[derive(Clone, Debug)]
pub struct SessionAdmin(pub Principal);

impl FromRequestParts<SharedApp> for SessionAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, ApiError> {
        let Admin(who) = Admin::from_request_parts(parts, app).await?;
        require_session(app, who, parts).await.map(SessionAdmin)
    }
}

async fn require_session(app: &SharedApp, who: Principal, parts: &Parts) -> Result<Principal, ApiError> {
    if who.token.is_some() {
        audit_denied(app, &who, "session_required", parts).await;
        return Err(ApiError::forbidden("session_required", "API tokens cannot manage tokens, sessions or the profile; sign in"));
    }
    Ok(who)
}

/// A caller with the admin role; others get 403 (audited).
#[derive(Clone, Debug)]
pub struct Admin(pub Principal);

impl FromRequestParts<SharedApp> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, ApiError> {
        let Caller(who) = Caller::from_request_parts(parts, app).await?;
        if !who.is_admin() {
            audit_denied(app, &who, "admin_required", parts).await;
            return Err(ApiError::forbidden("forbidden", "this action requires the admin role"));
        }
        Ok(Admin(who))
    }
}

/// The client's address and user agent, for routes that do not authenticate.
#[derive(Clone, Debug)]
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(client_info(parts)))
    }
}

/// A JSON body: 415 without a JSON content type, 400 when empty or unparseable, 422
/// naming the field when well-formed but wrong.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Bodies of JSON routes stay small; imports use their own streaming path.
const MAX_JSON_BYTES: usize = 1 << 20;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let json_type =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let body = axum::body::to_bytes(req.into_body(), MAX_JSON_BYTES)
            .await
            .map_err(|_| ApiError::too_large(format!("JSON bodies are limited to {MAX_JSON_BYTES} bytes")))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("empty_body", "the request body is empty; a JSON object is expected"));
        }
        if json_type != Some(true) {
            return Err(ApiError::unsupported_media_type("expected Content-Type: application/json"));
        }
        parse_json(&body).map(ApiJson)
    }
}

/// Parses a JSON body: 400 when it is not JSON (or nests deeper than serde_json's
/// recursion limit), 422 naming the field when a string holds a NUL character or a field
/// is missing, unknown or of the wrong type.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {}", strip_position(&e.to_string()))))?;
    if let Some(field) = nul_in_json(&value, "") {
        return Err(ApiError::validation(if field.is_empty() { "body" } else { &field }, "must not contain a NUL character"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = strip_position(&e.into_inner().to_string());
        if path.is_empty() || path == "." {
            // "missing field `email`", "unknown field `password`" name the field themselves.
            let field = msg.split('`').nth(1).unwrap_or("body").to_string();
            ApiError::validation(&field, msg)
        } else {
            ApiError::validation(&path, msg)
        }
    })
}

/// The path of the first string (or key) of `value` holding a NUL character.
fn nul_in_json(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0').then(|| at.to_string()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_in_json(v, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_in_json(v, &here)
            }
        }),
        _ => None,
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Query parameters; a value of the wrong type is a 422 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // `_` is the browsers' cache buster: never a parameter of ours.
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()).filter(|(k, _)| k != "_"))
            .finish();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let field = if path.is_empty() || path == "." { msg.split('`').nth(1).unwrap_or("query").to_string() } else { path };
            ApiError::validation(&field, msg)
        })
    }
}

/// A path parameter; a malformed id answers 404, as an id that does not exist would.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| ApiPath(p.0)).map_err(|_| ApiError::not_found("resource"))
    }
}

/// For optional JSON fields that may also be cleared: distinguishes an absent field
/// (`None`) from an explicit `null` (`Some(None)`). Use with `#[serde(default,
/// deserialize_with = "explicit_null")]`.
pub fn explicit_null<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Validated `?page=&page_size=`.
pub fn page_request(p: PageParams) -> Result<PageRequest, ApiError> {
    let page = p.page.unwrap_or(1);
    let page_size = p.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page == 0 {
        return Err(ApiError::validation("page", "must be 1 or more"));
    }
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(ApiError::validation("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    Ok(PageRequest { page, page_size })
}

/// A `?q=` search, refused with 422 beyond [`MAX_SEARCH_CHARS`] characters.
pub fn search_text(q: Option<&str>) -> Result<Option<&str>, ApiError> {
    match q {
        Some(q) if q.chars().count() > MAX_SEARCH_CHARS => {
            Err(ApiError::validation("q", format!("must be at most {MAX_SEARCH_CHARS} characters")))
        }
        other => Ok(other),
    }
}
