//! What the plugin's HTTP filter decides, as a pure function of what Orthanc shows it of
//! a request (method, path, headers, GET arguments; never the body, which Orthanc has not
//! read yet). Authentication is the one input that needs the database: the caller passes
//! it as a function, called only when a rule needs to know who is asking.
//!
//! The rules (DESIGN §6):
//! - **Body size before reading.** Orthanc 1.10.1 allocates a declared body whole before
//!   any callback runs, so an `/api` request declaring more than 1 MiB, or sent without a
//!   length (`Transfer-Encoding`), is denied here, except `POST /api/patients/import`
//!   from an authenticated caller within `MaxUploadBytes`. The filter cannot answer 413:
//!   Orthanc answers its own empty 403.
//! - **Method faking** (`_method`, `X-HTTP-Method-Override` and its cousins), which Orthanc
//!   honours before the filter sees the request: native routes are denied (403); `/api`
//!   requests go on to Cohort's callback, which answers 400 `method_override_refused`.
//! - **The web console** (`/`, `/ui`, `/ui/...`, served by Cohort's router from the
//!   binary) is public for GET: the page gets everything it shows from `/api`.
//! - **Native routes** need a Cohort admin (cookie or Bearer). A cookie-authenticated
//!   request other than GET/HEAD must also come from Orthanc's own origin or an
//!   `AllowedOrigins` one (`Origin`, else `Referer`); without either it is denied.

use cohort_core::api::extract::{access_token, csrf_header};
use cohort_core::api::request_rules::{fakes_method, is_import, DeclaredBody, MAX_BODY_BYTES};
use cohort_core::services::Via;
use http::{header, HeaderMap, Method};

/// What the filter sees of a request.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The method Orthanc will dispatch (after its own method faking; HEAD is GET).
    pub method: &'a Method,
    /// The path, decoded, without the query string.
    pub uri: &'a str,
    pub headers: &'a HeaderMap,
    /// GET arguments (Orthanc passes them for GET requests only).
    pub query: &'a [(String, String)],
}

/// The configuration the rules depend on.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// `ProtectOrthancApi`: whether native routes need an admin.
    pub protect_native: bool,
    /// `MaxUploadBytes`.
    pub max_upload_bytes: u64,
    /// `AllowedOrigins`.
    pub allowed_origins: &'a [String],
}

/// Who an access token belongs to, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    pub admin: bool,
    /// The request's `X-CSRF-Token` matches the session's (cookie callers).
    pub csrf_ok: bool,
    /// The credentials allow the request's method (a `read` API token: GET and HEAD only).
    pub method_allowed: bool,
}

/// The filter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Let an `/api` request through to Cohort's callback, which answers this refusal
    /// with its proper status and JSON body.
    Refuse(Refusal),
    /// Orthanc answers 403 with an empty body.
    Deny(DenyReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MethodOverride,
}

/// Why a request was denied, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// An `/api` body over its limit, of unknown length, or with a malformed length.
    BodyTooLarge,
    MethodOverride,
    NoCredentials,
    /// A cookie-authenticated write without a trusted `Origin`/`Referer`.
    UntrustedOrigin,
    NotAuthenticated,
    NotAdmin,
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DenyReason::BodyTooLarge => "the declared body is too large, or its length is unknown",
            DenyReason::MethodOverride => "method overrides are refused",
            DenyReason::NoCredentials => "no Cohort session or token",
            DenyReason::UntrustedOrigin => "a cookie-authenticated write without a trusted Origin or Referer",
            DenyReason::NotAuthenticated => "the session or token is not valid",
            DenyReason::NotAdmin => "Orthanc's own routes need a Cohort admin (and a `write` token for writes)",
        })
    }
}

/// Whether Cohort's `/api(/.*)?` callback, rather than Orthanc, handles this path:
/// Orthanc matches plugin routes first, on the path's components.
pub fn is_api(uri: &str) -> bool {
    uri.strip_prefix('/').and_then(|rest| rest.split('/').next()) == Some("api")
}

/// Whether a request reads the web console's files, which Cohort's `/ui(/.*)?` and `/`
/// routes serve without a session. No `.` or `..` component, no empty one: those never
/// name a console file, and the rule must not be a way around the native-route one.
pub fn is_console_read(method: &Method, uri: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    let console = uri == "/" || uri == "/ui" || uri.starts_with("/ui/");
    let clean = !uri.contains("//") && !uri.split('/').any(|c| c == "." || c == "..");
    read && console && clean
}

/// Decides one request. `authenticate(token, via, csrf_header)` is called at most once,
/// and only when a rule needs the caller.
pub fn decide(facts: &Facts<'_>, policy: &Policy<'_>, authenticate: impl FnOnce(&str, Via, Option<&str>) -> Option<Who>) -> Decision {
    let headers = facts.headers;
    let query: Vec<String> = facts.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let faked = fakes_method(headers.keys().map(|k| k.as_str()), &query.join("&"));
    if is_api(facts.uri) {
        let declared = DeclaredBody::of(headers);
        if !declared.within(MAX_BODY_BYTES) {
            let upload = is_import(facts.method, facts.uri) && declared.within(policy.max_upload_bytes);
            if !upload || !may_upload(headers, policy, authenticate) {
                return Decision::Deny(DenyReason::BodyTooLarge);
            }
        }
        return if faked { Decision::Refuse(Refusal::MethodOverride) } else { Decision::Allow };
    }
    if faked {
        return Decision::Deny(DenyReason::MethodOverride);
    }
    if is_console_read(facts.method, facts.uri) {
        return Decision::Allow;
    }
    if !policy.protect_native {
        return Decision::Allow;
    }
    let Some((token, via)) = access_token(headers) else {
        return Decision::Deny(DenyReason::NoCredentials);
    };
    if via == Via::Cookie && facts.method != Method::GET {
        // No CSRF header exists for Orthanc Explorer: the origin does the work, and a
        // request that names none is refused.
        let trusted = request_origin(headers).is_some_and(|o| origin_trusted(&o, headers, policy.allowed_origins));
        if !trusted {
            return Decision::Deny(DenyReason::UntrustedOrigin);
        }
    }
    match authenticate(token, via, csrf_header(headers)) {
        None => Decision::Deny(DenyReason::NotAuthenticated),
        Some(who) if !who.admin || !who.method_allowed => Decision::Deny(DenyReason::NotAdmin),
        Some(_) => Decision::Allow,
    }
}

/// Whether the caller of an import may send its large body: a Bearer token, or a
/// session cookie with its CSRF token and, when an `Origin` is sent, a trusted one.
fn may_upload(headers: &HeaderMap, policy: &Policy<'_>, authenticate: impl FnOnce(&str, Via, Option<&str>) -> Option<Who>) -> bool {
    let Some((token, via)) = access_token(headers) else { return false };
    if via == Via::Cookie {
        let origin_ok = match headers.get(header::ORIGIN) {
            None => true,
            Some(v) => v.to_str().ok().and_then(origin_of).is_some_and(|o| origin_trusted(&o, headers, policy.allowed_origins)),
        };
        if !origin_ok {
            return false;
        }
    }
    match authenticate(token, via, csrf_header(headers)) {
        Some(who) => who.method_allowed && (via == Via::Bearer || who.csrf_ok),
        None => false,
    }
}

/// The origin a browser says a request comes from: `Origin`, or the origin of the
/// `Referer` when there is no `Origin`.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    match headers.get(header::ORIGIN) {
        Some(origin) => origin.to_str().ok().and_then(origin_of),
        None => headers.get(header::REFERER)?.to_str().ok().and_then(origin_of),
    }
}

/// `scheme://authority` of a URL or origin, lower-cased; `None` for `null` and for
/// anything that is not an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Whether `origin` is Orthanc's own (the host the request was sent to) or listed in
/// `AllowedOrigins`.
fn origin_trusted(origin: &str, headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| origin_of(a).as_deref() == Some(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let authority = origin.split_once("://").map(|(_, a)| a);
    matches!((host, authority), (Some(h), Some(a)) if !h.is_empty() && h == a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const MAX_UPLOAD: u64 = 100 << 20;
    const ALLOWED: &[String] = &[];

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("pacs.example:8042"));
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn policy() -> Policy<'static> {
        Policy { protect_native: true, max_upload_bytes: MAX_UPLOAD, allowed_origins: ALLOWED }
    }

    /// Decides with a fixed caller; panics if authentication is asked for when `who`
    /// says it must not be.
    fn run(method: Method, uri: &str, h: &[(&str, &str)], query: &[(&str, &str)], who: Option<Option<Who>>) -> Decision {
        let headers = headers(h);
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let facts = Facts { method: &method, uri, headers: &headers, query: &query };
        decide(&facts, &policy(), |_, _, _| who.expect("authentication was not expected"))
    }

    const ADMIN: Option<Option<Who>> = Some(Some(Who { admin: true, csrf_ok: false, method_allowed: true }));
    const USER: Option<Option<Who>> = Some(Some(Who { admin: false, csrf_ok: true, method_allowed: true }));
    const ADMIN_READ_TOKEN: Option<Option<Who>> = Some(Some(Who { admin: true, csrf_ok: false, method_allowed: false }));
    const NOBODY: Option<Option<Who>> = Some(None);
    const NO_AUTH: Option<Option<Who>> = None;
    const COOKIE: (&str, &str) = ("cookie", "access_token=t");
    const OWN: (&str, &str) = ("origin", "http://pacs.example:8042");

    #[test]
    fn api_paths_are_those_cohort_answers() {
        for uri in ["/api", "/api/", "/api/patients", "/api/../patients"] {
            assert!(is_api(uri), "{uri}");
        }
        for uri in ["/", "/apix", "/API/patients", "/app/api", "/patients", ""] {
            assert!(!is_api(uri), "{uri}");
        }
    }

    #[test]
    fn console_files_are_public_reads_and_nothing_more() {
        for uri in ["/", "/ui", "/ui/", "/ui/js/app.js", "/ui/app.css"] {
            assert_eq!(run(Method::GET, uri, &[], &[], NO_AUTH), Decision::Allow, "{uri}");
        }
        // Writes, faked methods and path tricks fall to the native-route rules.
        assert_eq!(run(Method::POST, "/ui/", &[], &[], NO_AUTH), Decision::Deny(DenyReason::NoCredentials));
        assert_eq!(run(Method::DELETE, "/", &[], &[], NO_AUTH), Decision::Deny(DenyReason::NoCredentials));
        assert_eq!(run(Method::GET, "/ui/", &[], &[("_method", "DELETE")], NO_AUTH), Decision::Deny(DenyReason::MethodOverride));
        for uri in ["/ui/../app/explorer.html", "/ui/./x", "/ui//app", "/uix", "/app/explorer.html", "/ui.."] {
            assert_eq!(run(Method::GET, uri, &[], &[], NO_AUTH), Decision::Deny(DenyReason::NoCredentials), "{uri}");
        }
    }

    #[test]
    fn api_bodies_over_a_mebibyte_are_denied_before_anyone_is_asked() {
        let big = (MAX_BODY_BYTES + 1).to_string();
        let d = run(Method::POST, "/api/auth/login", &[("content-length", &big)], &[], NO_AUTH);
        assert_eq!(d, Decision::Deny(DenyReason::BodyTooLarge));
        let d = run(Method::POST, "/api/auth/login", &[("transfer-encoding", "chunked")], &[], NO_AUTH);
        assert_eq!(d, Decision::Deny(DenyReason::BodyTooLarge));
        let d = run(Method::PUT, "/api/users/me/profile", &[("content-length", "1e9")], &[], NO_AUTH);
        assert_eq!(d, Decision::Deny(DenyReason::BodyTooLarge));
        // Small bodies pass without authentication: the route decides.
        assert_eq!(run(Method::POST, "/api/auth/login", &[("content-length", "60")], &[], NO_AUTH), Decision::Allow);
        assert_eq!(run(Method::GET, "/api/health", &[], &[], NO_AUTH), Decision::Allow);
    }

    #[test]
    fn imports_may_be_large_for_authenticated_callers_within_the_upload_limit() {
        let big = (50u64 << 20).to_string();
        let import = |h: &[(&str, &str)], who| run(Method::POST, "/api/patients/import", h, &[], who);
        assert_eq!(import(&[("content-length", &big), ("authorization", "Bearer t")], USER), Decision::Allow);
        assert_eq!(import(&[("content-length", &big), COOKIE, ("x-csrf-token", "c")], USER), Decision::Allow);
        assert_eq!(import(&[("content-length", &big), COOKIE, ("x-csrf-token", "c"), OWN], USER), Decision::Allow);
        let denied = Decision::Deny(DenyReason::BodyTooLarge);
        // A cookie without its CSRF token, a foreign origin, a bad token, nobody.
        assert_eq!(
            import(&[("content-length", &big), COOKIE], Some(Some(Who { admin: true, csrf_ok: false, method_allowed: true }))),
            denied
        );
        assert_eq!(import(&[("content-length", &big), COOKIE, ("origin", "https://evil.example")], NO_AUTH), denied);
        assert_eq!(import(&[("content-length", &big), ("authorization", "Bearer forged")], NOBODY), denied);
        assert_eq!(import(&[("content-length", &big), ("authorization", "Bearer coh_read")], ADMIN_READ_TOKEN), denied);
        assert_eq!(import(&[("content-length", &big)], NO_AUTH), denied);
        // Over MaxUploadBytes or of unknown length: nobody may.
        let huge = (MAX_UPLOAD + 1).to_string();
        assert_eq!(import(&[("content-length", &huge), ("authorization", "Bearer t")], NO_AUTH), denied);
        assert_eq!(import(&[("transfer-encoding", "chunked"), ("authorization", "Bearer t")], NO_AUTH), denied);
        // Only POST to the import route.
        assert_eq!(
            run(Method::PUT, "/api/patients/import", &[("content-length", &big), ("authorization", "Bearer t")], &[], NO_AUTH),
            denied
        );
    }

    #[test]
    fn method_faking_is_refused_by_cohort_on_api_and_denied_on_native_routes() {
        let refused = Decision::Refuse(Refusal::MethodOverride);
        assert_eq!(run(Method::DELETE, "/api/patients/1", &[], &[("_method", "delete")], NO_AUTH), refused);
        assert_eq!(run(Method::DELETE, "/api/patients/1", &[("x-http-method-override", "DELETE")], &[], NO_AUTH), refused);
        let denied = Decision::Deny(DenyReason::MethodOverride);
        for h in ["x-http-method-override", "x-http-method", "x-method-override"] {
            assert_eq!(run(Method::DELETE, "/patients/x", &[(h, "DELETE"), COOKIE, OWN], &[], NO_AUTH), denied, "{h}");
        }
        assert_eq!(run(Method::DELETE, "/patients/x", &[COOKIE, OWN], &[("_method", "DELETE")], NO_AUTH), denied);
        assert_eq!(run(Method::GET, "/patients/x", &[("authorization", "Bearer t")], &[("%5fmethod", "x")], NO_AUTH), denied);
    }

    #[test]
    fn native_routes_need_an_admin() {
        assert_eq!(run(Method::GET, "/patients", &[], &[], NO_AUTH), Decision::Deny(DenyReason::NoCredentials));
        assert_eq!(run(Method::GET, "/patients", &[COOKIE], &[], NOBODY), Decision::Deny(DenyReason::NotAuthenticated));
        assert_eq!(run(Method::GET, "/patients", &[COOKIE], &[], USER), Decision::Deny(DenyReason::NotAdmin));
        assert_eq!(run(Method::GET, "/patients", &[COOKIE], &[], ADMIN), Decision::Allow);
        assert_eq!(run(Method::DELETE, "/patients/x", &[("authorization", "Bearer t")], &[], ADMIN), Decision::Allow);
        assert_eq!(
            run(Method::DELETE, "/patients/x", &[("authorization", "Bearer coh_t")], &[], ADMIN_READ_TOKEN),
            Decision::Deny(DenyReason::NotAdmin)
        );
        let open = Policy { protect_native: false, ..policy() };
        let h = headers(&[]);
        let facts = Facts { method: &Method::DELETE, uri: "/patients/x", headers: &h, query: &[] };
        assert_eq!(decide(&facts, &open, |_, _, _| unreachable!()), Decision::Allow);
    }

    #[test]
    fn cookie_writes_on_native_routes_need_a_trusted_origin() {
        let untrusted = Decision::Deny(DenyReason::UntrustedOrigin);
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            assert_eq!(run(method.clone(), "/patients/x", &[COOKIE, OWN], &[], ADMIN), Decision::Allow);
            assert_eq!(
                run(method.clone(), "/patients/x", &[COOKIE, ("referer", "http://PACS.example:8042/app/explorer.html")], &[], ADMIN),
                Decision::Allow
            );
            assert_eq!(run(method.clone(), "/patients/x", &[COOKIE], &[], NO_AUTH), untrusted);
            for origin in ["https://evil.example", "null", "http://pacs.example:8042.evil.example", "http://pacs.example", "file://x"] {
                assert_eq!(run(method.clone(), "/patients/x", &[COOKIE, ("origin", origin)], &[], NO_AUTH), untrusted, "{origin}");
            }
            // Origin wins over a Referer.
            let h = [COOKIE, ("origin", "https://evil.example"), ("referer", "http://pacs.example:8042/")];
            assert_eq!(run(method.clone(), "/patients/x", &h, &[], NO_AUTH), untrusted);
            // Bearer callers are not browsers.
            assert_eq!(
                run(method.clone(), "/patients/x", &[("authorization", "Bearer t"), ("origin", "https://evil.example")], &[], ADMIN),
                Decision::Allow
            );
        }
        let allowed = ["https://console.example".to_string()];
        let policy = Policy { allowed_origins: &allowed, ..policy() };
        let h = headers(&[COOKIE, ("origin", "https://console.example")]);
        let facts = Facts { method: &Method::DELETE, uri: "/patients/x", headers: &h, query: &[] };
        assert_eq!(decide(&facts, &policy, |_, _, _| Some(Who { admin: true, csrf_ok: false, method_allowed: true })), Decision::Allow);
    }

    #[test]
    fn tossed_cookies_are_no_credentials() {
        let h = [("cookie", "access_token=evil; access_token=mine")];
        assert_eq!(run(Method::GET, "/patients", &h, &[], NO_AUTH), Decision::Deny(DenyReason::NoCredentials));
    }
}
