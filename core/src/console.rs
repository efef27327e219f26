//! The web console at `/ui/`: hand-written HTML, CSS and ES modules from the repository's
//! `ui/` directory, embedded at build time (`build.rs`), so both hosts serve it from the
//! binary with no network and no JavaScript toolchain. Everything the page shows comes
//! from `/api`; the assets themselves need no session.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style, no
//! other origin), an `ETag` and `Cache-Control: no-cache`, so a browser revalidates and an
//! upgrade is seen at once.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::app::SharedApp;
use crate::error::ApiError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// The policy of every console answer (and of `/api/docs`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the console lives.
pub const PREFIX: &str = "/ui/";

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn assets() -> &'static HashMap<&'static str, Asset> {
    static ASSETS: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        embedded::ASSETS
            .iter()
            .map(|&(name, body)| {
                let digest = Sha256::digest(body);
                let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
                let etag = HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
                (name, Asset { body, content_type: content_type(name), etag })
            })
            .collect()
    })
}

/// The names of the embedded files (for tests and diagnostics).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    embedded::ASSETS.iter().map(|(name, _)| *name)
}

/// `/` (a redirect to the console), `/ui`, `/ui/` (the page) and `/ui/{file}`.
pub fn router() -> Router<SharedApp> {
    Router::new().route("/", get(root)).route("/ui", get(index)).route("/ui/", get(index)).route("/ui/{*path}", get(file))
}

async fn root() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, HeaderValue::from_static(PREFIX))]).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Security headers of every HTML answer the hosts serve.
pub fn add_page_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// One embedded file, or 304 when the browser's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = assets().get(name) else {
        return ApiError::not_found("console file").into_response();
    };
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim().trim_start_matches("W/") == asset.etag.to_str().unwrap_or_default()));
    let mut resp = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(asset.body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    add_page_headers(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded_with_their_types() {
        let names: Vec<_> = asset_names().collect();
        for needed in ["index.html", "app.css", "js/app.js", "js/api.js", "js/i18n.js"] {
            assert!(names.contains(&needed), "{needed} is not embedded: {names:?}");
        }
        assert_eq!(content_type("js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        // The policy forbids them; the page would silently break.
        let html = std::str::from_utf8(assets()["index.html"].body).expect("UTF-8");
        assert!(!html.contains("<script>") && !html.contains("style="), "inline script or style in index.html");
        assert!(!html.contains("http://") && !html.contains("https://"), "index.html refers to another origin");
    }

    #[test]
    fn a_matching_etag_answers_304() {
        let etag = assets()["index.html"].etag.clone();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("index.html", &req).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("index.html", &HeaderMap::new()).status(), StatusCode::OK);
        assert_eq!(serve("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }
}
