//! The whole `/api` surface as one axum router. Both hosts serve it through [`Api`]:
//! the sidecar from hyper, the plugin per request on Orthanc's HTTP threads. [`Api`]
//! gives one route, the raw image, its own lane past the router (see [`lane`]).

pub mod audit;
pub mod auth;
pub mod docs;
pub mod extract;
pub mod groups;
pub mod health;
pub mod lane;
pub mod multipart_limits;
pub mod observe;
pub mod patients;
pub mod reconcile;
pub mod request_rules;
pub mod tokens;
pub mod users;

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, ClientAddr, SharedApp};
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cohort API",
        description = "Research-imaging backend for Orthanc: accounts, groups, sessions, patients, DICOM import/export, audit.",
        license(name = "GPL-3.0-or-later")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Login, refresh, logout and sessions"),
        (name = "users", description = "Accounts and profiles"),
        (name = "groups", description = "Research groups"),
        (name = "tokens", description = "Personal API tokens for scripts"),
        (name = "audit", description = "Audit trail"),
        (name = "patients", description = "Patient registry, DICOM import/export, images, statistics"),
        (name = "health", description = "Service health"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("access_token"))));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT access token, or a personal API token coh_…").build(),
            ),
        );
        components.add_security_scheme("csrf", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-CSRF-Token"))));
    }
}

/// Every route with its documentation, before state is attached.
fn documented_routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/auth", auth::router())
        .nest("/api/users", users::router().merge(tokens::me_router()))
        .nest("/api/tokens", tokens::admin_router())
        .nest("/api/groups", groups::router())
        .nest("/api/audit", audit::router())
        .nest("/api/patients", patients::router().merge(reconcile::router()))
        .nest("/api", health::router().merge(observe::router()).merge(patients::stats_router()))
        .routes(routes!(openapi_json))
        .routes(routes!(docs::docs))
}

/// The OpenAPI document, generated from the route annotations.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = documented_routes().split_for_parts().1;
        document_common_errors(&mut doc);
        doc
    })
}

/// Routes that answer without a session.
const PUBLIC_ROUTES: &[&str] =
    &["/api/auth/login", "/api/auth/refresh", "/api/auth/logout", "/api/health", "/api/health/live", "/api/openapi.json"];

/// Adds the error answers every operation can give to the document, so it lists every
/// status a client may see: 422 (unknown query parameter, NUL), 503 (a dependency down);
/// with a session 401 and 403; with a body 400, 413 and 415. Answers a route documents
/// itself are kept.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC_ROUTES.contains(&path.as_str());
        for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
            let mut add = |status: &str, description: &str| {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| error(description).into());
            };
            add("422", "Invalid input: a field or query parameter that is unknown, too long, malformed, or holds a NUL");
            add("503", "A dependency (database, Orthanc) is unavailable, or the server is busy (see Retry-After)");
            if !public {
                add("401", "Not authenticated, or the session has ended");
                add("403", "Forbidden: role, CSRF token or Origin");
            }
            if op.request_body.is_some() || path.as_str() == "/api/patients/import" {
                add("400", "Malformed body (not JSON, empty)");
                add("413", "Body too large");
                add("415", "Unsupported Content-Type");
            }
        }
    }
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// The `/api` router with its state, CORS and fallbacks, and the web console (`/ui/`,
/// and `/` redirecting to it).
pub fn router(app: SharedApp) -> Router {
    let (routes, _) = documented_routes().split_for_parts();
    // Two layers in all (each `from_fn` layer clones the service below it and boxes a
    // future per request): one around the matched route, one around everything.
    routes
        .merge(crate::console::router())
        .route_layer(middleware::from_fn(route_rules))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), edge))
        .with_state(app)
}

/// The `/api` as both hosts serve it: a request [`lane`] takes, there; every other one
/// through the router.
#[derive(Clone)]
pub struct Api {
    app: SharedApp,
    router: Router,
}

impl Api {
    /// `router` is [`router`]`(app)`, possibly with routes added (the plugin's test library).
    pub fn new(app: SharedApp, router: Router) -> Api {
        Api { app, router }
    }

    /// Serves one request to its answer.
    pub async fn call(self, req: Request) -> Response {
        match lane::image_id(&req) {
            Some(id) => lane::image(self.app, req, id).await,
            None => match tower::ServiceExt::oneshot(self.router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
        }
    }
}

/// The route layer: refuses undeclared query parameters, and remembers the matched
/// template for the log line and the metrics.
async fn route_rules(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    if let Err(e) = declared_query_only(&req, matched.as_ref()) {
        return e.into_response();
    }
    let mut resp = next.run(req).await;
    observe::remember_route(matched, &mut resp);
    resp
}

/// The outer layer, around every request (routes, fallbacks, preflights): the request
/// id and the log line ([`observe::RequestLog`]), the client address behind trusted
/// proxies, CORS for the configured origins only (never `*`) with preflight answers, the
/// input rules (NUL bytes, [`request_rules::check`]) and the headers every answer carries.
async fn edge(State(app): State<SharedApp>, mut req: Request, next: Next) -> Response {
    let edge = Edge::enter(&app, &mut req);
    let preflight = req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if edge.origin.is_some() {
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        r
    } else if let Err(e) = refuse_nul(&req).and_then(|()| request_rules::check(&req)) {
        e.into_response()
    } else {
        next.run(req).await
    };
    edge.finish(&app, &mut resp);
    resp
}

/// What the outer layer ([`edge`], and [`lane`] for its route) keeps of a request
/// while it is served: its log line, and the `Origin` it may answer.
struct Edge {
    log: observe::RequestLog,
    origin: Option<HeaderValue>,
}

impl Edge {
    /// Starts the log line (request id), settles the client address and the origin.
    fn enter(app: &App, req: &mut Request) -> Edge {
        let log = observe::RequestLog::start(req);
        // The host gave the TCP peer; behind a trusted proxy the client is who it names.
        if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() {
            let client = crate::net::client_address(peer, req.headers(), &app.config.trusted_proxies);
            req.extensions_mut().insert(ClientAddr(client));
        }
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| app.config.allowed_origins.iter().any(|a| a == o))
            .and_then(|o| HeaderValue::from_str(o).ok());
        Edge { log, origin }
    }

    /// The headers every answer carries (CORS for an allowed origin), and the log line.
    fn finish(self, app: &App, resp: &mut Response) {
        let h = resp.headers_mut();
        if let Some(origin) = self.origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
        }
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        self.log.finish(resp, app.config.request_metrics);
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed on this route")
}

const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";
const ALLOWED_HEADERS: &str = "Content-Type, X-CSRF-Token, Authorization";
/// Answer headers a cross-origin front end may read.
const EXPOSED_HEADERS: &str = "Content-Disposition, Retry-After, X-Request-Id";

/// The query parameters each operation declares in the OpenAPI document, by method and
/// path template (`GET /api/users`).
fn declared_query_parameters() -> &'static HashMap<(String, String), HashSet<String>> {
    static TABLE: OnceLock<HashMap<(String, String), HashSet<String>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for (path, item) in &openapi().paths.paths {
            let shared = item.parameters.iter().flatten();
            let operations = [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("DELETE", &item.delete)];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let names = shared
                    .clone()
                    .chain(op.parameters.iter().flatten())
                    .filter(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
                    .map(|p| p.name.clone())
                    .collect();
                table.insert((method.to_string(), path.trim_end_matches('/').to_string()), names);
            }
        }
        table
    })
}

/// Refuses query parameters the route does not declare (422 naming the first), so a
/// misspelt `?purge_dicom` is never silently ignored. `_`, which browsers add to bust
/// caches, is always allowed. The OpenAPI document is the one list of parameters; routes
/// it does not hold (the console's files) are not checked.
fn declared_query_only(req: &Request, matched: Option<&MatchedPath>) -> Result<(), ApiError> {
    if let (Some(query), Some(matched)) = (req.uri().query(), matched) {
        let key = (req.method().as_str().to_string(), matched.as_str().trim_end_matches('/').to_string());
        if let Some(declared) = declared_query_parameters().get(&key) {
            let unknown = form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k).find(|k| k != "_" && !declared.contains(k.as_ref()));
            if let Some(name) = unknown {
                return Err(ApiError::validation(&name, "unknown query parameter"));
            }
        }
    }
    Ok(())
}

/// A NUL byte in the path or the query (percent-encoded, or `+`/`%` forms the decoder
/// turns into one) is refused before any route sees it: 422, never a database error.
fn refuse_nul(req: &Request) -> Result<(), ApiError> {
    let path = req.uri().path();
    // A URI cannot hold a raw NUL: one can only come from an escape.
    if path.contains('%') && percent_decoded(path).contains(&0) {
        return Err(ApiError::validation("path", "must not contain a NUL character"));
    }
    if let Some(query) = req.uri().query() {
        if let Some((k, _)) = form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(ApiError::validation(&k.replace('\0', ""), "must not contain a NUL character"));
        }
    }
    Ok(())
}

fn percent_decoded(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The answer for an archive or export: streamed, or built in memory, in which case its
/// share of `MaxExportBytes` stays held (in the answer's extensions) until it is sent.
pub fn export_body(body: crate::services::export::ExportBody) -> Response {
    use crate::services::export::ExportBody;
    match body {
        ExportBody::Stream(stream) => axum::body::Body::from_stream(stream).into_response(),
        ExportBody::Buffered(bytes, held) => {
            let mut resp = axum::body::Body::from(bytes).into_response();
            resp.extensions_mut().insert(crate::budget::Held(std::sync::Arc::new(held)));
            resp
        }
    }
}

/// A JSON answer already written (`application/json`, like axum's `Json`): a patient
/// list's, which its service writes with `WriteJson` and may give again from
/// `page_cache`.
pub struct JsonBytes(pub bytes::Bytes);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}
